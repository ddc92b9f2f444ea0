//! The PromQL queries of `loadgen query` (e2e/src/loadgen/query.rs, the
//! node_exporter dashboard suite compared against VictoriaMetrics) run
//! in process, without HTTP, over the same synthetic fleet: `hosts`
//! node_exporter hosts (459 series each) scraped every 15s for 2h, flushed
//! and merged into one part. Instant queries at the last scrape; ranges of 24h at 1m and 1h
//! at 15s ending there.
//!
//! ```text
//! cargo bench -p strata-select --bench dashboard              # criterion
//! STRATA_BENCH_HOSTS=30 cargo bench -p strata-select --bench dashboard
//! STRATA_BENCH_CPU=20 cargo bench -p strata-select --bench dashboard
//! ```
//!
//! `STRATA_BENCH_CPU=<runs>` skips criterion and prints the process's CPU
//! time and the wall time per query (means over `runs`): on a shared
//! machine CPU time moves much less with other processes' load than wall
//! time does. `STRATA_BENCH_READ_AHEAD=0` turns the engine's read-ahead
//! thread off.
//! `STRATA_BENCH_FILTER` keeps only queries whose name contains it. Under
//! `valgrind --tool=callgrind --dump-after='*Engine::instant*'
//! --dump-after='*Engine::range*'` with `STRATA_BENCH_CPU=2`, the dump
//! after each query's second run holds that run alone: instruction counts
//! per query, free of the machine's load.

use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use prometheus_client::registry::Registry;
use strata_select::promql::{Engine, EngineOptions, QueryOptions};
use strata_select::source::StorageSource;
use strata_storage::config::SyncSetting;
use strata_storage::encoding::synthetic::NodeExporter;
use strata_storage::wal::SyncMode;
use strata_storage::{Config, Label, Sample, SeriesSamples, Storage, Tenant};

const HOUR: i64 = 3_600_000;
const INTERVAL: i64 = 15_000;
const POINTS: usize = 480;

/// What a query asks for.
#[derive(Clone, Copy)]
enum Shape {
    Instant,
    /// A range of this many ms before the end, at this step.
    Range(i64, i64),
}

const DAY_AT_1M: Shape = Shape::Range(24 * HOUR, 60_000);
const HOUR_AT_15S: Shape = Shape::Range(HOUR, 15_000);

/// The PromQL part of `loadgen query`'s suite, same names.
const SUITE: [(&str, Shape, &str); 9] = [
    (
        "rate cpu",
        Shape::Instant,
        r#"rate(node_cpu_seconds_total{mode!="idle"}[5m])"#,
    ),
    (
        "sum by instance rate cpu",
        Shape::Instant,
        r#"sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5m]))"#,
    ),
    (
        "topk network",
        Shape::Instant,
        "topk(10, sum by (instance) (rate(node_network_receive_bytes_total[5m])))",
    ),
    (
        "avg_over_time load1 1h",
        Shape::Instant,
        "avg_over_time(node_load1[1h])",
    ),
    (
        "count by job",
        Shape::Instant,
        "count by (job) (node_uname_info)",
    ),
    (
        "range 24h/1m cpu busy per host",
        DAY_AT_1M,
        r#"1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))"#,
    ),
    (
        "range 24h/1m memory ratio",
        DAY_AT_1M,
        "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
    ),
    (
        "range 24h/1m one host network",
        DAY_AT_1M,
        r#"rate(node_network_receive_bytes_total{instance="host-0001:9100"}[5m])"#,
    ),
    (
        "range 1h/15s sum by mode",
        HOUR_AT_15S,
        "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
    ),
];

fn open(dir: &std::path::Path, now: i64) -> Arc<Storage> {
    let config = Config {
        data_dir: dir.to_path_buf(),
        sync: SyncSetting(SyncMode::None),
        flush_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    Storage::open_with_clock(config, &mut Registry::default(), Arc::new(move || now))
        .expect("open storage")
}

/// Loads the fleet, host by host; the last scrape of host 0 is at `end`.
fn load(storage: &Storage, hosts: u32, end: i64) {
    let fleet = NodeExporter {
        hosts,
        points: POINTS,
        interval_ms: INTERVAL,
        start_ms: end - (POINTS as i64 - 1) * INTERVAL,
        seed: 1,
    };
    for host in 0..hosts {
        let batch: Vec<SeriesSamples> = fleet
            .host(host)
            .into_iter()
            .map(|s| SeriesSamples {
                labels: s
                    .labels
                    .iter()
                    .map(|(n, v)| Label::new(n.as_str(), v.as_str()))
                    .collect(),
                samples: s
                    .timestamps
                    .iter()
                    .zip(&s.values)
                    .map(|(t, v)| Sample::new(*t, *v))
                    .collect(),
            })
            .collect();
        storage.add(Tenant::DEFAULT, &batch).expect("add");
    }
    storage.flush().expect("flush");
    // One part, whatever background merges had time to do: the same reads
    // from run to run, so instruction counts compare across builds.
    storage.force_merge().expect("merge");
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// CPU time (user + system) of the process: the evaluating thread, the one
/// that reads ahead for it, and storage's (idle once the data is merged).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read process stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

fn main() {
    let hosts = env_number("STRATA_BENCH_HOSTS").unwrap_or(150) as u32;
    let filter = std::env::var("STRATA_BENCH_FILTER").unwrap_or_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let end: i64 = 1_795_219_200_000 + 12 * HOUR;
    let storage = open(dir.path(), end + INTERVAL);
    load(&storage, hosts, end);
    let source = StorageSource::new(storage.clone(), Tenant::DEFAULT);
    let engine = Engine::new(EngineOptions {
        read_ahead: env_number("STRATA_BENCH_READ_AHEAD") != Some(0),
        ..EngineOptions::default()
    });
    let options = QueryOptions::default();
    let run = |shape: Shape, query: &str| match shape {
        Shape::Instant => engine.instant(&source, query, end, &options),
        Shape::Range(span, step) => engine.range(&source, query, end - span, end, step, &options),
    };
    let suite = SUITE.iter().filter(|(name, _, _)| name.contains(&filter));

    if let Some(runs) = env_number("STRATA_BENCH_CPU") {
        let runs = runs.max(1) as u32;
        println!("{hosts} hosts; CPU ms and wall ms per query, means of {runs}");
        for &(name, shape, query) in suite {
            let (cpu, wall) = (process_cpu(), std::time::Instant::now());
            for _ in 0..runs {
                run(shape, query).expect("query");
            }
            let (cpu, wall) = ((process_cpu() - cpu) / runs, wall.elapsed() / runs);
            println!(
                "{name:<32} {:>9.2} {:>9.2}",
                cpu.as_secs_f64() * 1000.0,
                wall.as_secs_f64() * 1000.0
            );
        }
    } else {
        let mut c = Criterion::default().configure_from_args();
        let mut group = c.benchmark_group("dashboard");
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(5));
        for &(name, shape, query) in suite {
            group.bench_function(name, |b| b.iter(|| run(shape, query).expect("query")));
        }
        group.finish();
        c.final_summary();
    }
    storage.close().expect("close");
}
