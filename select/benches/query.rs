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

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::registry::Registry;
use strata_select::promql::{Engine, EngineOptions, QueryOptions};
use strata_select::source::{Source, StorageSource};
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

fn load(storage: &Storage, end: i64) {
    let hour_start = end - HOUR;
    let mut batch = Vec::new();
    let push = |batch: &mut Vec<SeriesSamples>, series: SeriesSamples| {
        batch.push(series);
        if batch.len() >= 500 {
            storage.add(Tenant::DEFAULT, batch).expect("add");
            batch.clear();
        }
    };
    for i in 0..1000u64 {
        let instance = format!("10.0.{}.{}:8080", i / 250, i % 250);
        let job = format!("api-{}", i % 5);
        for (c, (code, method)) in CODES.iter().enumerate() {
            let seed = i * 16 + c as u64;
            push(
                &mut batch,
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
                &mut batch,
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
                &mut batch,
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
    storage.add(Tenant::DEFAULT, &batch).expect("add");
    storage.flush().expect("flush");
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    // 12:00 UTC: the 24h range spans two days, as most dashboards' do.
    let end: i64 = 1_795_219_200_000 + 12 * HOUR;
    let storage = open(dir.path(), end + 1);
    load(&storage, end);
    let source = StorageSource::new(storage.clone(), Tenant::DEFAULT);
    let engine = Engine::new(EngineOptions::default());
    let options = QueryOptions::default();

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
        b.iter(|| source.series(&matchers, last_hour, 0).expect("series"))
    });
    group.bench_function("series 10k through select", |b| {
        b.iter(|| {
            let selected = source.select(&matchers, last_hour).expect("select");
            selected
                .series
                .map(|s| s.expect("series").labels)
                .collect::<Vec<_>>()
        })
    });
    group.finish();
    storage.close().expect("close");
}

criterion_group!(benches, bench);
criterion_main!(benches);
