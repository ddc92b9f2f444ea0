//! Query latency over the real storage engine at dashboard sizes, every
//! sample flushed to parts so reads take the on-disk path:
//!
//! - `http_requests_total`: 10,000 counters (1,000 instances x 10 code/method
//!   pairs, 5 jobs) scraped every 15s for 1h;
//! - `http_request_duration_seconds_bucket`: classic histograms, 1,000
//!   instances x 10 buckets, 15s for 1h;
//! - `cpu_seconds_total`: 1,000 counters (125 instances x 8 modes) scraped
//!   every 30s for 24h.
//!
//! Instant queries at the end of the data; the range queries span 24h at a
//! 1m step (1,441 steps), and 1h at 15s for the histogram. `series` reads
//! label sets only.
//!
//! `cargo bench -p strata-select --bench query`

use std::cell::OnceCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::registry::Registry;
use strata_select::cluster::{Cluster, ClusterMetrics, ClusterOptions, ClusterSource, Connect};
use strata_select::promql::{Engine, EngineOptions, QueryOptions};
use strata_select::source::{Source, StorageSource};
use strata_storage::cluster::{LocalNode, Node, Topology};
use strata_storage::config::SyncSetting;
use strata_storage::wal::SyncMode;
use strata_storage::{Config, Label, Matcher, Sample, SeriesSamples, Storage, Tenant, TimeRange};

const HOUR: i64 = 3_600_000;
const CODES: [(&str, &str); 10] = [
    ("200", "GET"),
    ("200", "POST"),
    ("201", "POST"),
    ("204", "DELETE"),
    ("301", "GET"),
    ("400", "POST"),
    ("404", "GET"),
    ("429", "GET"),
    ("500", "GET"),
    ("503", "POST"),
];
const BUCKETS: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
];
const MODES: [&str; 8] = [
    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
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

/// A counter growing by about `per_scrape` (varied by `seed`) from `start`
/// every `interval` until `end`.
fn counter(start: i64, end: i64, interval: i64, per_scrape: f64, seed: u64) -> Vec<Sample> {
    let mut value = 0.0;
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..)
        .map(|i| start + i * interval)
        .take_while(|&t| t <= end)
        .map(|t| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            value += per_scrape * (0.5 + (state % 1000) as f64 / 1000.0);
            Sample::new(t, value.round())
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
}

/// Writes the data set; each series to `copies` of `storages` (consecutive,
/// starting at a hash of its labels), as a cluster with that replication
/// factor holds it.
fn load(storages: &[Arc<Storage>], copies: usize, end: i64) {
    let hour_start = end - HOUR;
    let mut pending: Vec<Vec<SeriesSamples>> = vec![Vec::new(); storages.len()];
    let push = |pending: &mut Vec<Vec<SeriesSamples>>, series: SeriesSamples| {
        let first = series
            .labels
            .iter()
            .flat_map(|l| l.name.bytes().chain(l.value.bytes()))
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        for copy in 0..copies {
            let node = (first as usize + copy) % storages.len();
            let batch = &mut pending[node];
            batch.push(series.clone());
            if batch.len() >= 500 {
                storages[node].add(Tenant::DEFAULT, batch).expect("add");
                batch.clear();
            }
        }
    };
    for i in 0..1000u64 {
        let instance = format!("10.0.{}.{}:8080", i / 250, i % 250);
        let job = format!("api-{}", i % 5);
        for (c, (code, method)) in CODES.iter().enumerate() {
            let seed = i * 16 + c as u64;
            push(
                &mut pending,
                SeriesSamples {
                    labels: labels(&[
                        ("__name__", "http_requests_total"),
                        ("code", code),
                        ("instance", &instance),
                        ("job", &job),
                        ("method", method),
                    ]),
                    samples: counter(hour_start, end, 15_000, 100.0 / (c + 1) as f64, seed),
                },
            );
        }
        // Buckets share one stream of observations so they stay monotonic in `le`.
        let observed = counter(hour_start, end, 15_000, 50.0, i);
        for (b, le) in BUCKETS.iter().enumerate() {
            let share = (b + 1) as f64 / BUCKETS.len() as f64;
            push(
                &mut pending,
                SeriesSamples {
                    labels: labels(&[
                        ("__name__", "http_request_duration_seconds_bucket"),
                        ("instance", &instance),
                        ("job", &job),
                        ("le", le),
                    ]),
                    samples: observed
                        .iter()
                        .map(|s| Sample::new(s.timestamp, (s.value * share).floor()))
                        .collect(),
                },
            );
        }
    }
    for i in 0..125u64 {
        let instance = format!("node-{i:03}:9100");
        for (m, mode) in MODES.iter().enumerate() {
            push(
                &mut pending,
                SeriesSamples {
                    labels: labels(&[
                        ("__name__", "cpu_seconds_total"),
                        ("instance", &instance),
                        ("job", "node"),
                        ("mode", mode),
                    ]),
                    samples: counter(end - 24 * HOUR, end, 30_000, 3.0, i * 8 + m as u64),
                },
            );
        }
    }
    for (storage, batch) in storages.iter().zip(&pending) {
        storage.add(Tenant::DEFAULT, batch).expect("add");
        storage.flush().expect("flush");
    }
}

/// Three storage nodes in this process holding the data set with RF=2,
/// read through the cluster's fan-out and merge.
struct LocalCluster {
    _runtime: tokio::runtime::Runtime,
    storages: Vec<Arc<Storage>>,
    source: ClusterSource,
}

impl LocalCluster {
    fn load(dir: &std::path::Path, end: i64) -> LocalCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let storages: Vec<Arc<Storage>> = (0..3)
            .map(|i| open(&dir.join(format!("node-{i}")), end + 1))
            .collect();
        load(&storages, 2, end);
        let nodes: Vec<LocalNode> = storages
            .iter()
            .enumerate()
            .map(|(i, s)| LocalNode::new(format!("node-{i}:8400"), s.clone()))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        let connect: Connect = Arc::new(move |addr: &str| {
            let node = nodes.iter().find(|n| n.addr() == addr).expect("known node");
            Ok(Arc::new(node.clone()) as Arc<dyn Node>)
        });
        let (_tx, topology) =
            tokio::sync::watch::channel(Arc::new(Topology::from_addrs(&addrs).expect("topology")));
        let options = ClusterOptions::new(2);
        let cluster = Cluster::new(
            topology,
            connect,
            options,
            ClusterMetrics::default(),
            runtime.handle().clone(),
        );
        LocalCluster {
            _runtime: runtime,
            storages,
            source: ClusterSource::new(cluster, Tenant::DEFAULT),
        }
    }
}

/// A deadline no bench run reaches.
fn far_deadline() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    // 12:00 UTC: the 24h range spans two days, as most dashboards' do.
    let end: i64 = 1_795_219_200_000 + 12 * HOUR;
    let storage = open(dir.path(), end + 1);
    load(std::slice::from_ref(&storage), 1, end);
    let source = StorageSource::new(storage.clone(), Tenant::DEFAULT);
    let engine = Engine::new(EngineOptions::default());
    let options = QueryOptions::default();
    // Loaded on first use, so that a filter without `cluster` skips it.
    let cluster_cell: OnceCell<LocalCluster> = OnceCell::new();
    let cluster_dir = tempfile::tempdir().expect("tempdir");
    let cluster = || {
        &cluster_cell
            .get_or_init(|| LocalCluster::load(cluster_dir.path(), end))
            .source
    };

    let mut group = c.benchmark_group("query");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, query) in [
        ("rate 10k", "rate(http_requests_total[5m])"),
        (
            "sum by rate 10k",
            "sum by (job, code) (rate(http_requests_total[5m]))",
        ),
        (
            "histogram_quantile 1k x 10 buckets",
            "histogram_quantile(0.9, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))",
        ),
    ] {
        group.bench_function(format!("instant {name}"), |b| {
            b.iter(|| {
                engine
                    .instant(&source, query, end, &options)
                    .expect("query")
            })
        });
        group.bench_function(format!("cluster instant {name}"), |b| {
            let source = cluster();
            b.iter(|| engine.instant(source, query, end, &options).expect("query"))
        });
    }
    for (name, query) in [
        ("rate 1k", "rate(cpu_seconds_total[5m])"),
        (
            "sum by rate 1k",
            "sum by (mode) (rate(cpu_seconds_total[5m]))",
        ),
    ] {
        group.bench_function(format!("range 24h/1m {name}"), |b| {
            b.iter(|| {
                engine
                    .range(&source, query, end - 24 * HOUR, end, 60_000, &options)
                    .expect("query")
            })
        });
        group.bench_function(format!("cluster range 24h/1m {name}"), |b| {
            let source = cluster();
            b.iter(|| {
                engine
                    .range(source, query, end - 24 * HOUR, end, 60_000, &options)
                    .expect("query")
            })
        });
    }
    for (name, query) in [
        (
            "histogram_quantile by job",
            "histogram_quantile(0.9, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))",
        ),
        (
            "histogram_quantile per instance",
            "histogram_quantile(0.9, rate(http_request_duration_seconds_bucket[5m]))",
        ),
    ] {
        group.bench_function(format!("range 1h/15s {name} 1k x 10 buckets"), |b| {
            b.iter(|| {
                engine
                    .range(&source, query, end - HOUR, end, 15_000, &options)
                    .expect("query")
            })
        });
    }
    let matchers = [Matcher::eq("__name__", "http_requests_total")];
    let last_hour = TimeRange::new(end - HOUR, end);
    group.bench_function("series 10k labels only", |b| {
        b.iter(|| {
            source
                .series(&matchers, last_hour, 0, far_deadline())
                .expect("series")
        })
    });
    group.bench_function("series 10k through select", |b| {
        b.iter(|| {
            let selected = source
                .select(&matchers, last_hour, far_deadline())
                .expect("select");
            selected
                .series
                .map(|s| s.expect("series").labels)
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("cluster series 10k labels only", |b| {
        let source = cluster();
        b.iter(|| {
            source
                .series(&matchers, last_hour, 0, far_deadline())
                .expect("series")
        })
    });
    group.finish();
    storage.close().expect("close");
    if let Some(cluster) = cluster_cell.get() {
        for storage in &cluster.storages {
            storage.close().expect("close");
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
