//! Placement cost per series: hashing a series key and ranking the nodes,
//! what insert pays for every series of every request.
//!
//! `cargo bench -p strata-storage --bench placement`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_storage::Tenant;
use strata_storage::cluster::{Placement, series_key};

/// Labels of `n` node-exporter-like series (5 labels, about 120 bytes).
fn series(n: usize) -> Vec<Vec<(String, String)>> {
    (0..n)
        .map(|i| {
            vec![
                ("__name__".into(), "node_cpu_seconds_total".into()),
                ("cpu".into(), format!("{}", i % 16)),
                (
                    "instance".into(),
                    format!("10.1.{}.{}:9100", i / 4096, i / 16 % 256),
                ),
                ("job".into(), "node-exporter".into()),
                ("mode".into(), "user".into()),
            ]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let all = series(10_000);
    let mut group = c.benchmark_group("placement");
    group.throughput(Throughput::Elements(all.len() as u64));
    group.bench_function("series_key", |b| {
        let mut scratch = Vec::new();
        b.iter(|| {
            for labels in &all {
                let pairs = labels.iter().map(|(n, v)| (n.as_str(), v.as_str()));
                black_box(series_key(Tenant::new(1, 0), pairs, &mut scratch));
            }
        })
    });
    for (nodes, rf) in [(3, 1), (10, 2), (30, 3)] {
        let placement = Placement::over(
            (0..nodes)
                .map(|i| format!("storage-{i}.storage:8400"))
                .collect(),
            rf,
        );
        let keys: Vec<u64> = all
            .iter()
            .map(|labels| {
                let pairs = labels.iter().map(|(n, v)| (n.as_str(), v.as_str()));
                series_key(Tenant::new(1, 0), pairs, &mut Vec::new())
            })
            .collect();
        group.bench_function(format!("owners/{nodes}_nodes_rf{rf}"), |b| {
            let mut owners = Vec::new();
            b.iter(|| {
                for key in &keys {
                    placement.owners(*key, &mut owners);
                    black_box(&owners);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
