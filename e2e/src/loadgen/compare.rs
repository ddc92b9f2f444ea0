//! `loadgen compare`: the same remote write load against `strata single`
//! and VictoriaMetrics single-node, one after the other on one machine.
//!
//! Each server starts alone with a fresh data directory and the same
//! retention (31d) and is left idle for `IDLE`. Then it receives the
//! warm-up scrapes, which create every series (measured on their own: new
//! series cost far more than samples of known ones), and then the load
//! proper, the same fleet `warmup_points` scrapes later. Its CPU time (`/proc/<pid>/stat` utime + stime) is read before,
//! right after, and `SETTLE` after the load (both keep recent rows in memory
//! for a few seconds and write them in the background). The generator runs
//! in this process, so its own CPU is reported too, and so is what other
//! processes took meanwhile (the machine is shared).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

use crate::compare::{CompareError, Kind, MachineCpu, Peer, SETTLE};

use super::stats::Report;
use super::{Config, LoadgenError, run};

/// Idle time after a server is ready, before the load starts.
const IDLE: Duration = Duration::from_secs(2);
/// How long a server may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum IngestCompareError {
    #[error(transparent)]
    Server(#[from] CompareError),
    #[error(transparent)]
    Load(#[from] LoadgenError),
    #[error("compare needs --points (the warm-up and the load are placed in time by it)")]
    Points,
}

/// The servers and how to start them.
#[derive(Clone, Debug)]
pub struct Servers {
    pub strata_bin: PathBuf,
    pub vm_bin: PathBuf,
    /// Extra flags for `strata single`.
    pub strata_args: Vec<String>,
    /// Extra flags for `victoria-metrics`.
    pub vm_args: Vec<String>,
    /// Parent of both data directories.
    pub work_dir: PathBuf,
    /// Which servers, in order.
    pub order: Vec<Kind>,
    /// Scrapes sent before the measured load, to create the series; 0
    /// measures series creation and samples together.
    pub warmup_points: u64,
}

/// A warm-up: its report and the server CPU it took.
#[derive(Clone, Debug)]
pub struct Warmup {
    pub report: Report,
    pub cpu_seconds: f64,
}

/// What one server did under the load.
#[derive(Clone, Debug)]
pub struct Side {
    pub kind: Kind,
    pub warmup: Option<Warmup>,
    /// The measured load, after the warm-up.
    pub report: Report,
    /// Server CPU during the load.
    pub cpu_seconds: f64,
    /// Server CPU from the start of the load to `SETTLE` after its end.
    pub settled_cpu_seconds: f64,
    /// The generator's CPU during the load, in cores.
    pub generator_cores: f64,
    /// Other processes' CPU during the load, in cores.
    pub other_cores: f64,
    pub rss_after_mib: f64,
    /// The server's own count of stored samples, from its `/metrics`.
    pub rows_stored: Option<f64>,
    /// Series the server reports (`/api/v1/series/count`), if it answers.
    pub series: Option<u64>,
}

impl Side {
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.report.samples_accepted.max(1) as f64
    }

    pub fn settled_cpu_per_million(&self) -> f64 {
        self.settled_cpu_seconds * 1e6 / self.report.samples_accepted.max(1) as f64
    }
}

/// Runs `load` against each server of `servers.order` in turn.
pub fn run_compare(
    runtime: &tokio::runtime::Runtime,
    load: &Config,
    servers: &Servers,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Side>, IngestCompareError> {
    if load.points == 0 {
        return Err(IngestCompareError::Points);
    }
    let interval = load.interval;
    let mut measured = load.clone();
    let scrapes = |n: u64| Duration::from_millis((interval.as_millis() as u64).saturating_mul(n));
    measured.start_ago = scrapes(load.points);
    let warmup = (servers.warmup_points > 0).then(|| {
        let mut warmup = load.clone();
        warmup.points = servers.warmup_points;
        // The same fleet, the scrapes just before the measured ones.
        warmup.start_ago = scrapes(load.points + servers.warmup_points);
        warmup.duration = Duration::ZERO;
        warmup
    });
    let mut sides = Vec::new();
    for &kind in &servers.order {
        let (bin, mut args) = match kind {
            Kind::Strata => (
                &servers.strata_bin,
                vec!["--retention".to_string(), "31d".to_string()],
            ),
            Kind::Victoria => (&servers.vm_bin, vec!["-retentionPeriod=31d".to_string()]),
        };
        args.extend(match kind {
            Kind::Strata => servers.strata_args.iter().cloned(),
            Kind::Victoria => servers.vm_args.iter().cloned(),
        });
        progress(&format!("starting {}", kind.name()));
        let mut peer = Peer::start(kind, bin, &args, &servers.work_dir)?;
        sleep(IDLE);
        let url = peer.url("/api/v1/write");
        let warmup = match &warmup {
            Some(config) => {
                let mut config = config.clone();
                config.url = url.clone();
                progress("warm-up: creating the series");
                let before = peer.stats()?;
                let report = runtime.block_on(run(&config, progress))?;
                let cpu_seconds = peer.stats()?.cpu_seconds - before.cpu_seconds;
                progress(&format!("warm-up:\n{report}"));
                sleep(SETTLE);
                Some(Warmup {
                    report,
                    cpu_seconds,
                })
            }
            None => None,
        };
        let mut config = measured.clone();
        config.url = url;
        progress("measured load");
        let before = peer.stats()?;
        let machine_before = MachineCpu::now();
        let report = runtime.block_on(run(&config, progress))?;
        let after = peer.stats()?;
        let machine_after = MachineCpu::now();
        sleep(SETTLE);
        let settled = peer.stats()?;
        let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
        let (generator_cores, other_cores) = match (machine_before, machine_after) {
            (Some(b), Some(a)) => {
                let own = a.own_seconds - b.own_seconds;
                let busy = a.busy_seconds - b.busy_seconds;
                let wall = report.seconds.max(1e-9);
                (own / wall, ((busy - own - cpu_seconds) / wall).max(0.0))
            }
            _ => (f64::NAN, f64::NAN),
        };
        let rows_stored = peer.rows_stored().ok();
        let series = series_count(&peer);
        peer.stop(STOP_TIMEOUT);
        let side = Side {
            kind,
            warmup,
            report,
            cpu_seconds,
            settled_cpu_seconds: settled.cpu_seconds - before.cpu_seconds,
            generator_cores,
            other_cores,
            rss_after_mib: settled.rss_bytes as f64 / 1_048_576.0,
            rows_stored,
            series,
        };
        progress(&format!("{}:\n{}", kind.name(), side.report));
        sides.push(side);
    }
    Ok(sides)
}

/// Series the server reports: `/api/v1/series/count` (`{"data":[N]}`,
/// VictoriaMetrics, after making recent rows searchable), else
/// `/api/v1/status/tsdb` (`headStats.numSeries`); None if neither answers.
fn series_count(peer: &Peer) -> Option<u64> {
    if peer.kind == Kind::Victoria {
        peer.call("GET", "/internal/force_flush").ok()?;
    }
    let json = |path: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&peer.call("GET", path).ok()?).ok()
    };
    json("/api/v1/series/count")
        .and_then(|v| v["data"][0].as_u64())
        .or_else(|| {
            json("/api/v1/status/tsdb").and_then(|v| v["data"]["headStats"]["numSeries"].as_u64())
        })
}

/// A Markdown table of the sides, with the ratio of the first two.
pub fn markdown(sides: &[Side]) -> String {
    let mut out = String::new();
    let names: Vec<&str> = sides.iter().map(|s| s.kind.name()).collect();
    let _ = write!(out, "| Figure | {} |", names.join(" | "));
    let ratio = sides.len() == 2;
    if ratio {
        let _ = write!(out, " {} / {} |", names[0], names[1]);
    }
    out.push('\n');
    out.push_str("| --- |");
    for _ in sides {
        out.push_str(" ---: |");
    }
    if ratio {
        out.push_str(" ---: |");
    }
    out.push('\n');
    let mut row = |name: &str, values: Vec<f64>, format: fn(f64) -> String| {
        let _ = write!(out, "| {name} |");
        for v in &values {
            let _ = write!(out, " {} |", format(*v));
        }
        if ratio {
            let r = values[0] / values[1];
            let _ = write!(
                out,
                " {} |",
                if r.is_finite() {
                    format!("{r:.3}")
                } else {
                    "-".into()
                }
            );
        }
        out.push('\n');
    };
    let get = |f: fn(&Side) -> f64| sides.iter().map(f).collect::<Vec<f64>>();
    if sides.iter().all(|s| s.warmup.is_some()) {
        row(
            "warm-up (new series): accepted samples/s",
            get(|s| warm(s, |w| w.report.samples_per_second)),
            count,
        );
        row(
            "warm-up (new series): server CPU s per 1M samples",
            get(|s| {
                warm(s, |w| {
                    w.cpu_seconds * 1e6 / w.report.samples_accepted.max(1) as f64
                })
            }),
            three,
        );
        row(
            "warm-up (new series): samples accepted",
            get(|s| warm(s, |w| w.report.samples_accepted as f64)),
            count,
        );
    }
    row(
        "load: accepted samples/s",
        get(|s| s.report.samples_per_second),
        count,
    );
    row(
        "load: server CPU s per 1M samples",
        get(Side::cpu_per_million),
        three,
    );
    row(
        "load: server CPU s per 1M samples, until 6 s after",
        get(Side::settled_cpu_per_million),
        three,
    );
    row("load: wall seconds", get(|s| s.report.seconds), one);
    row(
        "load: samples accepted",
        get(|s| s.report.samples_accepted as f64),
        count,
    );
    row(
        "load: samples sent",
        get(|s| s.report.samples_sent as f64),
        count,
    );
    row("load: requests", get(|s| s.report.requests as f64), count);
    row(
        "load: requests rejected or failed",
        get(|s| (s.report.requests - s.report.requests_ok) as f64),
        count,
    );
    row(
        "load: latency p50 (ms)",
        get(|s| s.report.latency.p50_ms),
        two,
    );
    row(
        "load: latency p90 (ms)",
        get(|s| s.report.latency.p90_ms),
        two,
    );
    row(
        "load: latency p99 (ms)",
        get(|s| s.report.latency.p99_ms),
        two,
    );
    row(
        "load: latency max (ms)",
        get(|s| s.report.latency.max_ms),
        two,
    );
    row(
        "load: bytes sent",
        get(|s| s.report.bytes_sent as f64),
        count,
    );
    row(
        "RSS 6 s after the load (MiB)",
        get(|s| s.rss_after_mib),
        one,
    );
    row(
        "series reported by the server",
        get(|s| s.series.map_or(f64::NAN, |n| n as f64)),
        count,
    );
    row(
        "server's own count of stored samples (warm-up + load)",
        get(|s| s.rows_stored.unwrap_or(f64::NAN)),
        count,
    );
    row(
        "load: load generator CPU (cores)",
        get(|s| s.generator_cores),
        three,
    );
    row(
        "load: other processes' CPU (cores)",
        get(|s| s.other_cores),
        three,
    );
    out
}

/// A figure of the warm-up, NaN without one.
fn warm(side: &Side, figure: fn(&Warmup) -> f64) -> f64 {
    side.warmup.as_ref().map_or(f64::NAN, figure)
}

fn count(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", v.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn one(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

fn two(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".into()
    }
}

fn three(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        let check = |v: f64, want: &str| assert_eq!(count(v), want);
        check(0.0, "0");
        check(999.0, "999");
        check(1000.0, "1,000");
        check(1_234_567.4, "1,234,567");
        check(f64::NAN, "-");
    }
}
