//! `loadgen cluster`: the same remote write load and the same dashboard
//! queries against a Strata cluster (storage nodes, insert and select
//! started here as processes on 127.0.0.1), `strata single` and
//! VictoriaMetrics single-node, on one machine.
//!
//! Every side runs from the start, side by side. Each is loaded in turn:
//! warm-up scrapes that create the series (not measured), then the
//! measured scrapes of the same fleet at full speed. CPU is the sum of
//! utime + stime of every process of the side (`/proc/<pid>/stat`: for the
//! cluster every storage node, insert and select) over the measured push.
//! Then every side is flushed (its recent rows written to parts) and each
//! query of the suite (`query::suite`) is sent once to every side to warm
//! it, then `repetitions` times, alternating between the sides so that load
//! from other processes falls on all alike. The cluster is queried through
//! select on tenant 0 (`/select/0/prometheus/...`), and written through
//! insert (`/insert/0/prometheus/api/v1/write`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

use super::query::{Figures, Query, request_path, suite};
use super::stats::Report;
use super::{Config, LoadgenError, run_at};
use crate::cluster::{Cluster, ClusterConfig};
use crate::compare::{CompareError, Kind, MachineCpu, Peer, process_cpu_seconds};

/// How long a server may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle time between a push and the next step: background writes of the
/// side just loaded settle before anything else is measured.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClusterBenchError {
    #[error(transparent)]
    Server(#[from] CompareError),
    #[error(transparent)]
    Load(#[from] LoadgenError),
    #[error("cluster needs --points (the data and the queries are placed in time by it)")]
    Points,
    #[error("cannot read the CPU time of process {0} in /proc")]
    Cpu(u32),
    #[error("{side}: {url}: {detail}")]
    Http {
        side: &'static str,
        url: String,
        detail: String,
    },
}

/// Which servers, how to start them, how much to query.
#[derive(Clone, Debug)]
pub struct Sides {
    pub strata_bin: PathBuf,
    /// VictoriaMetrics' binary; `None` leaves it out.
    pub vm_bin: Option<PathBuf>,
    /// Leave `strata single` out.
    pub no_single: bool,
    pub storage_nodes: usize,
    pub replication_factor: usize,
    /// Parent of single's and VictoriaMetrics' data directories.
    pub work_dir: PathBuf,
    /// Scrapes that create the series before the measured ones.
    pub warmup_points: u64,
    /// Measured requests per query and side.
    pub repetitions: usize,
}

/// A running side.
enum Running {
    Cluster(Box<Cluster>),
    Peer(Peer),
}

impl Running {
    fn name(&self) -> &'static str {
        match self {
            Running::Cluster(_) => "Strata cluster",
            Running::Peer(p) if p.kind == Kind::Strata => "Strata single",
            Running::Peer(_) => "VictoriaMetrics",
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Running::Cluster(c) => c
                .storage
                .iter()
                .map(|n| n.pid())
                .chain([c.insert.pid(), c.select.pid()])
                .collect(),
            Running::Peer(p) => p.pid().into_iter().collect(),
        }
    }

    /// The role of each process of [`Running::pids`], in that order.
    fn roles(&self) -> Vec<String> {
        match self {
            Running::Cluster(c) => (0..c.storage.len())
                .map(|i| format!("storage-{i}"))
                .chain(["insert".to_string(), "select".to_string()])
                .collect(),
            Running::Peer(_) => vec!["server".to_string()],
        }
    }

    /// CPU seconds so far of each process of [`Running::pids`].
    fn cpu_seconds(&self) -> Result<Vec<f64>, ClusterBenchError> {
        self.pids()
            .into_iter()
            .map(|pid| process_cpu_seconds(pid).ok_or(ClusterBenchError::Cpu(pid)))
            .collect()
    }

    fn write_url(&self) -> String {
        match self {
            Running::Cluster(c) => format!("{}/insert/0/prometheus/api/v1/write", c.insert_url()),
            Running::Peer(p) => p.url("/api/v1/write"),
        }
    }

    fn query_url(&self, path_and_query: &str) -> String {
        match self {
            Running::Cluster(c) => {
                format!("{}/select/0/prometheus{path_and_query}", c.select_url())
            }
            Running::Peer(p) => p.url(path_and_query),
        }
    }

    fn flush(&self, client: &Client) -> Result<(), ClusterBenchError> {
        match self {
            Running::Cluster(c) => {
                for node in &c.storage {
                    let url = format!("{}/internal/flush", node.base_url());
                    call(self.name(), client.post(&url), &url)?;
                }
            }
            Running::Peer(p) if p.kind == Kind::Strata => {
                p.call("POST", "/internal/flush")?;
            }
            Running::Peer(p) => {
                p.call("GET", "/internal/force_flush")?;
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        match self {
            Running::Cluster(c) => {
                let _ = c.select.stop();
                let _ = c.insert.stop();
                for i in 0..c.storage.len() {
                    let _ = c.stop_storage(i);
                }
            }
            Running::Peer(p) => p.stop(STOP_TIMEOUT),
        }
    }
}

fn call(
    side: &'static str,
    request: reqwest::blocking::RequestBuilder,
    url: &str,
) -> Result<String, ClusterBenchError> {
    let failed = |detail: String| ClusterBenchError::Http {
        side,
        url: url.to_string(),
        detail,
    };
    let response = request.send().map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response.text().map_err(|e| failed(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(failed(format!(
            "status {status}: {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    Ok(body)
}

/// What one side did under the measured push.
#[derive(Clone, Debug)]
pub struct Ingest {
    pub side: &'static str,
    pub processes: usize,
    pub report: Report,
    /// CPU of the side's processes during the push.
    pub cpu_seconds: f64,
    /// The same by process role (`storage-0`, ..., `insert`, `select`).
    pub cpu_by_role: Vec<(String, f64)>,
    /// The generator's CPU during the push, in cores.
    pub generator_cores: f64,
    /// Other processes' CPU during the push, in cores (the machine is shared).
    pub other_cores: f64,
}

impl Ingest {
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.report.samples_accepted.max(1) as f64
    }
}

/// Latency of one query on every side, in side order.
#[derive(Clone, Debug)]
pub struct QueryFigures {
    pub query: Query,
    pub sides: Vec<Figures>,
}

/// Everything measured.
#[derive(Clone, Debug)]
pub struct Bench {
    pub ingest: Vec<Ingest>,
    pub queries: Vec<QueryFigures>,
}

/// Starts the sides, loads each, then queries all.
pub fn run_cluster_bench(
    runtime: &tokio::runtime::Runtime,
    load: &Config,
    sides: &Sides,
    progress: &mut dyn FnMut(&str),
) -> Result<Bench, ClusterBenchError> {
    if load.points == 0 {
        return Err(ClusterBenchError::Points);
    }
    let mut running = Vec::new();
    progress(&format!(
        "starting a cluster: {} storage nodes, replication factor {}",
        sides.storage_nodes, sides.replication_factor
    ));
    running.push(Running::Cluster(Box::new(Cluster::start(
        &sides.strata_bin,
        &ClusterConfig {
            storage_nodes: sides.storage_nodes,
            replication_factor: sides.replication_factor,
            ..ClusterConfig::default()
        },
    ))));
    if !sides.no_single {
        progress("starting strata single");
        running.push(Running::Peer(Peer::start(
            Kind::Strata,
            &sides.strata_bin,
            &["--retention".into(), "31d".into()],
            &sides.work_dir,
        )?));
    }
    if let Some(vm_bin) = &sides.vm_bin {
        progress("starting VictoriaMetrics");
        running.push(Running::Peer(Peer::start(
            Kind::Victoria,
            vm_bin,
            &["-retentionPeriod=31d".into()],
            &sides.work_dir,
        )?));
    }
    let result = measure(runtime, load, sides, &running, progress);
    for side in &mut running {
        side.stop();
    }
    result
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    load: &Config,
    sides: &Sides,
    running: &[Running],
    progress: &mut dyn FnMut(&str),
) -> Result<Bench, ClusterBenchError> {
    let now = crate::now_ms();
    let interval = load.interval;
    let scrapes = |n: u64| Duration::from_millis((interval.as_millis() as u64).saturating_mul(n));
    let client = Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| ClusterBenchError::Load(LoadgenError::Client(e)))?;
    let mut ingest = Vec::new();
    for side in running {
        if sides.warmup_points > 0 {
            let mut warmup = load.clone();
            warmup.url = side.write_url();
            warmup.points = sides.warmup_points;
            warmup.start_ago = scrapes(load.points + sides.warmup_points);
            warmup.duration = Duration::ZERO;
            warmup.rate = 0;
            progress(&format!("{}: warm-up (creating the series)", side.name()));
            let report = runtime.block_on(run_at(&warmup, now, progress))?;
            progress(&format!("{} warm-up:\n{report}", side.name()));
            std::thread::sleep(SETTLE);
        }
        let mut config = load.clone();
        config.url = side.write_url();
        config.start_ago = scrapes(load.points);
        config.rate = 0;
        progress(&format!("{}: measured push", side.name()));
        let before = side.cpu_seconds()?;
        let machine_before = MachineCpu::now();
        let report = runtime.block_on(run_at(&config, now, progress))?;
        let after = side.cpu_seconds()?;
        let cpu_by_role: Vec<(String, f64)> = side
            .roles()
            .into_iter()
            .zip(after.iter().zip(&before).map(|(a, b)| a - b))
            .collect();
        let cpu_seconds = cpu_by_role.iter().map(|(_, s)| s).sum::<f64>();
        let (generator_cores, other_cores) = match (machine_before, MachineCpu::now()) {
            (Some(b), Some(a)) => {
                let own = a.own_seconds - b.own_seconds;
                let busy = a.busy_seconds - b.busy_seconds;
                let wall = report.seconds.max(1e-9);
                (own / wall, ((busy - own - cpu_seconds) / wall).max(0.0))
            }
            _ => (f64::NAN, f64::NAN),
        };
        progress(&format!(
            "{}:\n{report}\nCPU s by process: {}",
            side.name(),
            cpu_by_role
                .iter()
                .map(|(role, s)| format!("{role} {s:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        ingest.push(Ingest {
            side: side.name(),
            processes: side.pids().len(),
            report,
            cpu_seconds,
            cpu_by_role,
            generator_cores,
            other_cores,
        });
        std::thread::sleep(SETTLE);
    }
    for side in running {
        side.flush(&client)?;
    }

    let end_ms = now;
    let mut queries = Vec::new();
    for query in suite() {
        let path = request_path(&query, end_ms);
        let mut sizes = Vec::new();
        for side in running {
            let url = side.query_url(&path);
            let body = call(side.name(), client.get(&url), &url)?;
            sizes.push(answer_size(&body));
        }
        let mut took = vec![Vec::new(); running.len()];
        for _ in 0..sides.repetitions.max(1) {
            for (i, side) in running.iter().enumerate() {
                let url = side.query_url(&path);
                let started = Instant::now();
                call(side.name(), client.get(&url), &url)?;
                took[i].push(started.elapsed());
            }
        }
        let figures: Vec<Figures> = took
            .into_iter()
            .zip(&sizes)
            .map(|(t, &size)| Figures::of(t, size))
            .collect();
        progress(&format!(
            "{}: {}",
            query.name,
            running
                .iter()
                .zip(&figures)
                .map(|(s, f)| format!("{} {:.1} ms ({} series)", s.name(), f.median_ms, f.size))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        queries.push(QueryFigures {
            query,
            sides: figures,
        });
    }
    Ok(Bench { ingest, queries })
}

/// Series (query answers) or entries (label lookups) in an API answer; 0
/// when it is not one.
fn answer_size(body: &str) -> usize {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return 0;
    };
    let data = &json["data"];
    data.get("result")
        .unwrap_or(data)
        .as_array()
        .map_or(0, Vec::len)
}

/// The figures as two Markdown tables: ingestion, then query latency with
/// the cluster's median over single's (the fan-out overhead).
pub fn markdown(bench: &Bench) -> String {
    let mut out = String::new();
    let names: Vec<&str> = bench.ingest.iter().map(|i| i.side).collect();
    let _ = writeln!(out, "| Ingestion | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(names.len()));
    let mut row = |name: &str, cell: &dyn Fn(&Ingest) -> String| {
        let cells: Vec<String> = bench.ingest.iter().map(cell).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    row("processes", &|i| i.processes.to_string());
    row("accepted samples/s", &|i| {
        format!("{:.0}", i.report.samples_per_second)
    });
    row("CPU s per 1M samples (all processes)", &|i| {
        format!("{:.2}", i.cpu_per_million())
    });
    row("of which storage / insert / select", &|i| {
        let sum = |prefix: &str| -> f64 {
            i.cpu_by_role
                .iter()
                .filter(|(role, _)| role.starts_with(prefix))
                .map(|(_, s)| s)
                .sum::<f64>()
                * 1e6
                / i.report.samples_accepted.max(1) as f64
        };
        if i.cpu_by_role.len() > 1 {
            format!(
                "{:.2} / {:.2} / {:.2}",
                sum("storage"),
                sum("insert"),
                sum("select")
            )
        } else {
            "-".to_string()
        }
    });
    row("write latency p50 / p99 ms", &|i| {
        format!(
            "{:.1} / {:.1}",
            i.report.latency.p50_ms, i.report.latency.p99_ms
        )
    });
    row("failed or rejected requests", &|i| {
        (i.report.requests - i.report.requests_ok).to_string()
    });
    row("generator / other processes, cores", &|i| {
        format!("{:.2} / {:.2}", i.generator_cores, i.other_cores)
    });
    out.push('\n');

    let _ = write!(out, "| Query median ms (p99) |");
    for name in &names {
        let _ = write!(out, " {name} |");
    }
    let single = names.iter().position(|n| *n == "Strata single");
    if single.is_some() {
        out.push_str(" cluster / single |");
    }
    let _ = writeln!(
        out,
        "\n|---|{}{}",
        "---:|".repeat(names.len()),
        if single.is_some() { "---:|" } else { "" }
    );
    for q in &bench.queries {
        let _ = write!(out, "| {} |", q.query.name);
        for f in &q.sides {
            let _ = write!(out, " {:.1} ({:.1}) |", f.median_ms, f.p99_ms);
        }
        if let Some(s) = single {
            let _ = write!(out, " {:.2} |", q.sides[0].median_ms / q.sides[s].median_ms);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_sizes_count_results_or_values() {
        let check = |body: &str, want: usize| assert_eq!(answer_size(body), want, "{body}");
        check(
            r#"{"status":"success","data":{"resultType":"vector","result":[{},{}]}}"#,
            2,
        );
        check(r#"{"status":"success","data":["a","b","c"]}"#, 3);
        check("not json", 0);
    }
}
