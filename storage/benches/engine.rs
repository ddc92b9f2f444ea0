//! Engine throughput on node_exporter-shaped data:
//! - append: rows/s into existing series through `Storage::add`;
//! - register: new series/s (every row of a batch starts a series);
//! - scan: samples/s decoded by `Storage::search` over merged parts.
//!
//! `cargo bench -p strata-storage --bench engine`

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::registry::Registry;
use strata_storage::config::SyncSetting;
use strata_storage::encoding::synthetic::NodeExporter;
use strata_storage::wal::SyncMode;
use strata_storage::{Config, Label, Matcher, Sample, SeriesSamples, Storage, Tenant, TimeRange};

const NOW: i64 = 1_795_219_200_000;
const HOSTS: u32 = 25;

fn open(dir: &std::path::Path, sync: SyncMode, clock: Arc<AtomicI64>) -> Arc<Storage> {
    let cfg = Config {
        data_dir: dir.to_path_buf(),
        sync: SyncSetting(sync),
        flush_interval: Duration::from_secs(5),
        ..Config::default()
    };
    Storage::open_with_clock(
        cfg,
        &mut Registry::default(),
        Arc::new(move || clock.load(Ordering::Relaxed)),
    )
    .expect("open storage")
}

fn fleet(points: usize) -> Vec<SeriesSamples> {
    let fleet_shape = NodeExporter {
        hosts: HOSTS,
        points,
        interval_ms: 15_000,
        start_ms: NOW - 3_600_000,
        seed: 7,
    };
    fleet_shape
        .series()
        .map(|s| SeriesSamples {
            labels: s
                .labels
                .into_iter()
                .map(|(n, v)| Label::new(n, v))
                .collect(),
            samples: s
                .timestamps
                .iter()
                .zip(&s.values)
                .map(|(t, v)| Sample::new(*t, *v))
                .collect(),
        })
        .collect()
}

/// One scrape of the fleet at `ts`, as remote write delivers it: one sample per series.
fn scrape(fleet: &[SeriesSamples], ts: i64) -> Vec<SeriesSamples> {
    fleet
        .iter()
        .map(|s| SeriesSamples {
            labels: s.labels.clone(),
            samples: vec![Sample::new(ts, s.samples[0].value)],
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let base = fleet(1);
    let mut group = c.benchmark_group("append_existing_series");
    group.throughput(Throughput::Elements(base.len() as u64));
    for (name, sync) in [
        ("sync_batch", SyncMode::Batch),
        ("sync_none", SyncMode::None),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(AtomicI64::new(NOW));
        let storage = open(dir.path(), sync, clock.clone());
        storage.add(Tenant::DEFAULT, &base).expect("register");
        let mut ts = NOW - 3_000_000;
        let batches: Vec<Vec<SeriesSamples>> = (0..8).map(|i| scrape(&base, i)).collect();
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    ts += 15_000;
                    i += 1;
                    let mut batch = batches[i % batches.len()].clone();
                    for s in &mut batch {
                        s.samples[0].timestamp = ts;
                    }
                    batch
                },
                |batch| storage.add(Tenant::DEFAULT, &batch).expect("add"),
                BatchSize::LargeInput,
            )
        });
        storage.close().expect("close");
    }
    group.finish();
}

fn register(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(AtomicI64::new(NOW));
    let storage = open(dir.path(), SyncMode::Batch, clock);
    let base = fleet(1);
    let mut generation = 0u64;
    let mut group = c.benchmark_group("register_new_series");
    group.throughput(Throughput::Elements(base.len() as u64));
    group.bench_function("churn_pod_label", |b| {
        b.iter_batched(
            || {
                generation += 1;
                let pod = format!("pod-{generation}");
                base.iter()
                    .map(|s| {
                        let mut labels = s.labels.clone();
                        labels.push(Label::new("pod", pod.clone()));
                        SeriesSamples {
                            labels,
                            samples: vec![Sample::new(NOW - 60_000, 1.0)],
                        }
                    })
                    .collect::<Vec<_>>()
            },
            |batch| storage.add(Tenant::DEFAULT, &batch).expect("add"),
            BatchSize::LargeInput,
        )
    });
    group.finish();
    storage.close().expect("close");
}

fn scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(AtomicI64::new(NOW));
    let storage = open(dir.path(), SyncMode::None, clock);
    let data = fleet(240);
    let samples: u64 = data.iter().map(|s| s.samples.len() as u64).sum();
    for chunk in data.chunks(1000) {
        storage.add(Tenant::DEFAULT, chunk).expect("add");
    }
    storage.force_merge().expect("merge");
    let all = [Matcher::eq("job", "node")];
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(samples));
    group.sample_size(10);
    group.bench_function("all_series_one_hour", |b| {
        b.iter(|| {
            let n: usize = storage
                .search(Tenant::DEFAULT, &all, TimeRange::new(NOW - 3_600_000, NOW))
                .expect("search")
                .map(|s| s.expect("series").timestamps.len())
                .sum();
            assert_eq!(n as u64, samples);
        })
    });
    group.finish();
    storage.close().expect("close");
}

criterion_group!(benches, append, register, scan);
criterion_main!(benches);
