//! PromQL evaluation over the real storage engine: 100 counters scraped
//! every 15s for 6h (144,000 samples), flushed to parts; instant and range
//! queries (6h at a 60s step: 361 steps) through `Engine`.
//!
//! `cargo bench -p strata-select --bench promql`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::registry::Registry;
use strata_select::promql::{Engine, EngineOptions, QueryOptions};
use strata_select::source::StorageSource;
use strata_storage::config::SyncSetting;
use strata_storage::wal::SyncMode;
use strata_storage::{Config, Label, Sample, SeriesSamples, Storage, Tenant};

const SERIES: usize = 100;
const POINTS: usize = 6 * 240;
const INTERVAL: i64 = 15_000;

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

fn load(storage: &Storage, start: i64) {
    let batch: Vec<SeriesSamples> = (0..SERIES)
        .map(|i| SeriesSamples {
            labels: vec![
                Label::new("__name__", "requests_total"),
                Label::new("group", format!("g{}", i % 10)),
                Label::new("instance", format!("host-{i}")),
            ],
            samples: (0..POINTS)
                .map(|p| Sample::new(start + p as i64 * INTERVAL, (p * (i % 7 + 1)) as f64))
                .collect(),
        })
        .collect();
    storage.add(Tenant::DEFAULT, &batch).expect("add");
    storage.flush().expect("flush");
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let start: i64 = 1_795_219_200_000;
    let end = start + (POINTS as i64 - 1) * INTERVAL;
    let storage = open(dir.path(), end);
    load(&storage, start);
    let source = StorageSource::new(storage.clone(), Tenant::DEFAULT);
    let engine = Engine::new(EngineOptions::default());
    let options = QueryOptions::default();

    let mut group = c.benchmark_group("promql");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for query in [
        "sum by (group) (rate(requests_total[5m]))",
        "requests_total",
    ] {
        group.bench_function(format!("instant {query}"), |b| {
            b.iter(|| {
                engine
                    .instant(&source, query, end, &options)
                    .expect("query")
            })
        });
    }
    for query in [
        "sum by (group) (rate(requests_total[5m]))",
        "requests_total * 2 > 100",
        "requests_total / on(instance) group_left sum by (instance) (requests_total)",
        "max_over_time(rate(requests_total[5m])[30m:1m])",
    ] {
        group.bench_function(format!("range 6h/60s {query}"), |b| {
            b.iter(|| {
                engine
                    .range(&source, query, start, end, 60_000, &options)
                    .expect("query")
            })
        });
    }
    group.finish();
    storage.close().expect("close");
}

criterion_group!(benches, bench);
criterion_main!(benches);
