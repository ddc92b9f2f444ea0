//! `loadgen query`: the same data in `strata single` and VictoriaMetrics,
//! then the same dashboard queries against both.
//!
//! Both servers run side by side. The fleet is pushed at full speed to one
//! and then the other, placed at the same instant of simulated time so both
//! hold identical samples; both are then flushed (Strata
//! `POST /internal/flush`, VictoriaMetrics `/internal/force_flush`) so that
//! queries read parts on disk. Each query of [`suite`] is sent once to each
//! server to warm caches (not measured), then `repetitions` times,
//! alternating between the servers so that load from other processes falls
//! on both alike. Latency is the whole HTTP exchange, answer read to its
//! end, from this process. The size of each answer (series, or values of a
//! label lookup) is compared between the servers as a sanity check.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::compare::{CompareError, Kind, Peer};

use super::{Config, LoadgenError, run_at};

/// How long a server may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum QueryLoadError {
    #[error(transparent)]
    Server(#[from] CompareError),
    #[error(transparent)]
    Load(#[from] LoadgenError),
    #[error("query needs --points (the data and the queries are placed in time by it)")]
    Points,
    #[error("{server} answered {path} with something that is not a Prometheus API answer: {body}")]
    Answer {
        server: &'static str,
        path: String,
        body: String,
    },
}

/// The servers and how to start them.
#[derive(Clone, Debug)]
pub struct QueryServers {
    pub strata_bin: PathBuf,
    pub vm_bin: PathBuf,
    /// Extra flags for `strata single`.
    pub strata_args: Vec<String>,
    /// Extra flags for `victoria-metrics`.
    pub vm_args: Vec<String>,
    /// Parent of both data directories.
    pub work_dir: PathBuf,
    /// Measured requests per query and server.
    pub repetitions: usize,
    /// Only the queries whose name contains this (all when empty).
    pub filter: String,
}

/// What a query asks for.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// `/api/v1/query` at the end of the data.
    Instant,
    /// `/api/v1/query_range` over this much time before the end of the
    /// data, at this step.
    Range { span: Duration, step: Duration },
    /// A GET of this API path with these query parameters (label lookups);
    /// `{start}` and `{end}` are replaced by the last hour of the data.
    Get,
}

/// One query of the suite.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub name: &'static str,
    pub shape: Shape,
    /// PromQL, or for [`Shape::Get`] the path and query string.
    pub text: &'static str,
}

const DAY_AT_1M: Shape = Shape::Range {
    span: Duration::from_secs(24 * 3600),
    step: Duration::from_secs(60),
};
const HOUR_AT_15S: Shape = Shape::Range {
    span: Duration::from_secs(3600),
    step: Duration::from_secs(15),
};

/// Queries modelled on the node_exporter dashboards: fleet overviews
/// (instant), per-host and fleet graphs (ranges), and the label lookups
/// that fill their variable pickers.
pub fn suite() -> Vec<Query> {
    use Shape::{Get, Instant};
    vec![
        Query {
            name: "rate cpu",
            shape: Instant,
            text: r#"rate(node_cpu_seconds_total{mode!="idle"}[5m])"#,
        },
        Query {
            name: "sum by instance rate cpu",
            shape: Instant,
            text: r#"sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))"#,
        },
        Query {
            name: "topk network",
            shape: Instant,
            text: "topk(10, sum by (instance) (rate(node_network_receive_bytes_total[5m])))",
        },
        Query {
            name: "avg_over_time load1 1h",
            shape: Instant,
            text: "avg_over_time(node_load1[1h])",
        },
        Query {
            name: "count by job",
            shape: Instant,
            text: "count by (job) (node_uname_info)",
        },
        Query {
            name: "range 24h/1m cpu busy per host",
            shape: DAY_AT_1M,
            text: r#"1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))"#,
        },
        Query {
            name: "range 24h/1m memory ratio",
            shape: DAY_AT_1M,
            text: "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
        },
        Query {
            name: "range 24h/1m one host network",
            shape: DAY_AT_1M,
            text: r#"rate(node_network_receive_bytes_total{instance="host-0001:9100"}[5m])"#,
        },
        Query {
            name: "range 1h/15s sum by mode",
            shape: HOUR_AT_15S,
            text: "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
        },
        Query {
            name: "label values instance",
            shape: Get,
            text: "/api/v1/label/instance/values?start={start}&end={end}",
        },
        Query {
            name: "label values device of a host",
            shape: Get,
            text: "/api/v1/label/device/values?match[]=node_network_info%7Binstance%3D%22host-0001%3A9100%22%7D&start={start}&end={end}",
        },
        Query {
            name: "series of a host",
            shape: Get,
            text: "/api/v1/series?match[]=%7Binstance%3D%22host-0001%3A9100%22%7D&start={start}&end={end}",
        },
        Query {
            name: "labels",
            shape: Get,
            text: "/api/v1/labels?start={start}&end={end}",
        },
    ]
}

/// Latency figures of one query on one server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub median_ms: f64,
    pub p99_ms: f64,
    /// Series (or values) in the answer.
    pub size: usize,
}

impl Figures {
    pub(crate) fn of(mut took: Vec<Duration>, size: usize) -> Figures {
        took.sort_unstable();
        let at = |q: f64| {
            let i = ((took.len() as f64 - 1.0) * q).round() as usize;
            took.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        Figures {
            median_ms: at(0.5),
            p99_ms: at(0.99),
            size,
        }
    }
}

/// The figures of one query on both servers.
#[derive(Clone, Debug)]
pub struct Measured {
    pub query: Query,
    pub strata: Figures,
    pub vm: Figures,
}

impl Measured {
    /// Strata's median latency over VictoriaMetrics'.
    pub fn ratio(&self) -> f64 {
        self.strata.median_ms / self.vm.median_ms
    }
}

/// Loads `load` into both servers and runs the suite against both.
pub fn run_queries(
    runtime: &tokio::runtime::Runtime,
    load: &Config,
    servers: &QueryServers,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Measured>, QueryLoadError> {
    if load.points == 0 {
        return Err(QueryLoadError::Points);
    }
    let now = crate::now_ms();
    let interval_ms = load.interval.as_millis() as i64;
    let mut peers = Vec::new();
    for kind in [Kind::Strata, Kind::Victoria] {
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
        peers.push(Peer::start(kind, bin, &args, &servers.work_dir)?);
    }
    let result = measure(runtime, load, servers, &peers, now, interval_ms, progress);
    for peer in &mut peers {
        peer.stop(STOP_TIMEOUT);
    }
    result
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    load: &Config,
    servers: &QueryServers,
    peers: &[Peer],
    now: i64,
    interval_ms: i64,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Measured>, QueryLoadError> {
    for peer in peers {
        let mut config = load.clone();
        config.url = peer.url("/api/v1/write");
        config.rate = 0;
        progress(&format!("pushing to {}", peer.kind.name()));
        let report = runtime.block_on(run_at(&config, now, progress))?;
        progress(&format!("{}:\n{report}", peer.kind.name()));
        let started = Instant::now();
        match peer.kind {
            Kind::Strata => peer.call("POST", "/internal/flush")?,
            Kind::Victoria => peer.call("GET", "/internal/force_flush")?,
        };
        progress(&format!(
            "{} flushed in {:.1}s",
            peer.kind.name(),
            started.elapsed().as_secs_f64()
        ));
    }
    // The last scrape of the fleet (hosts add a phase of less than one
    // interval, so the end is one interval later).
    let start_ago_ms = if load.start_ago.is_zero() {
        load.points as i64 * interval_ms
    } else {
        load.start_ago.as_millis() as i64
    };
    let end_ms = now - start_ago_ms + load.points as i64 * interval_ms;
    let mut measured = Vec::new();
    for query in suite() {
        if !query.name.contains(&servers.filter) {
            continue;
        }
        let path = request_path(&query, end_ms);
        let mut took = [Vec::new(), Vec::new()];
        let mut sizes = [0, 0];
        for (i, peer) in peers.iter().enumerate() {
            sizes[i] = answer_size(peer, &path)?;
        }
        for _ in 0..servers.repetitions.max(1) {
            for (i, peer) in peers.iter().enumerate() {
                let started = Instant::now();
                peer.call("GET", &path)?;
                took[i].push(started.elapsed());
            }
        }
        let [strata, vm] = took;
        let m = Measured {
            query,
            strata: Figures::of(strata, sizes[0]),
            vm: Figures::of(vm, sizes[1]),
        };
        progress(&format!(
            "{}: strata {:.1} ms, vm {:.1} ms (median), {} / {} series",
            query.name, m.strata.median_ms, m.vm.median_ms, m.strata.size, m.vm.size
        ));
        measured.push(m);
    }
    Ok(measured)
}

/// The API path and query string of `query` with the data ending at `end_ms`.
pub(crate) fn request_path(query: &Query, end_ms: i64) -> String {
    let seconds = |ms: i64| format!("{:.3}", ms as f64 / 1e3);
    match query.shape {
        Shape::Instant => format!(
            "/api/v1/query?query={}&time={}",
            encode(query.text),
            seconds(end_ms)
        ),
        Shape::Range { span, step } => format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            encode(query.text),
            seconds(end_ms - span.as_millis() as i64),
            seconds(end_ms),
            step.as_secs()
        ),
        Shape::Get => query
            .text
            .replace("{start}", &seconds(end_ms - 3_600_000))
            .replace("{end}", &seconds(end_ms)),
    }
}

/// `text` as a query string value: unreserved bytes as they are, the rest
/// percent-encoded.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Series (query answers) or entries (label lookups) in the answer to `path`.
fn answer_size(peer: &Peer, path: &str) -> Result<usize, QueryLoadError> {
    let body = peer.call("GET", path)?;
    let bad = || QueryLoadError::Answer {
        server: peer.kind.name(),
        path: path.to_string(),
        body: body.chars().take(300).collect(),
    };
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|_| bad())?;
    let data = &json["data"];
    let list = data
        .get("result")
        .unwrap_or(data)
        .as_array()
        .ok_or_else(bad)?;
    Ok(list.len())
}

/// The figures as a Markdown table.
pub fn markdown(measured: &[Measured]) -> String {
    let mut out = String::from(
        "| query | Strata median ms | Strata p99 ms | VM median ms | VM p99 ms | Strata/VM | series Strata / VM |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in measured {
        let same = if m.strata.size == m.vm.size {
            ""
        } else {
            " (differ)"
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {} / {}{} |",
            m.query.name,
            m.strata.median_ms,
            m.strata.p99_ms,
            m.vm.median_ms,
            m.vm.p99_ms,
            m.ratio(),
            m.strata.size,
            m.vm.size,
            same
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_take_the_median_and_p99() {
        let check = |ms: &[u64], want: (f64, f64)| {
            let f = Figures::of(ms.iter().map(|&m| Duration::from_millis(m)).collect(), 0);
            assert_eq!((f.median_ms, f.p99_ms), want, "{ms:?}");
        };
        check(&[5], (5.0, 5.0));
        check(&[3, 1, 2], (2.0, 3.0));
        check(&(1..=100).collect::<Vec<_>>(), (51.0, 99.0));
    }

    #[test]
    fn request_paths_place_the_query_at_the_end_of_the_data() {
        let end = 1_800_000_000_000;
        let check = |query: Query, want: &str| assert_eq!(request_path(&query, end), want);
        check(
            Query {
                name: "",
                shape: Shape::Instant,
                text: "rate(x[5m])",
            },
            "/api/v1/query?query=rate%28x%5B5m%5D%29&time=1800000000.000",
        );
        check(
            Query {
                name: "",
                shape: DAY_AT_1M,
                text: "x",
            },
            "/api/v1/query_range?query=x&start=1799913600.000&end=1800000000.000&step=60",
        );
        check(
            Query {
                name: "",
                shape: Shape::Get,
                text: "/api/v1/labels?start={start}&end={end}",
            },
            "/api/v1/labels?start=1799996400.000&end=1800000000.000",
        );
    }
}
