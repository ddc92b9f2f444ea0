//! Merging what storage nodes answer, per input sample: 3 nodes, every
//! series on 2 of them (RF=2), 10,000 series of 240 samples (1h at 15s).
//!
//! - `identical replicas`: both copies hold every sample (the common case:
//!   the merger compares timestamps once and values pairwise);
//! - `replica with gaps`: one copy lacks every 10th sample (the general
//!   union by timestamp);
//! - `one copy`: RF=1, each series from one node (hashing and moving only).
//!
//! Throughput counts input samples (both copies).
//!
//! `cargo bench -p strata-select --bench cluster_merge`

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use strata_select::cluster::merge::SeriesMerger;
use strata_storage::{Label, SeriesData};

const SERIES: usize = 10_000;
const SAMPLES: i64 = 240;

fn series(i: usize, keep: impl Fn(i64) -> bool) -> SeriesData {
    let timestamps: Vec<i64> = (0..SAMPLES)
        .filter(|k| keep(*k))
        .map(|k| 1_700_000_000_000 + k * 15_000)
        .collect();
    let values = timestamps
        .iter()
        .map(|t| (t / 1000 % 977) as f64 * 1.5)
        .collect();
    SeriesData {
        labels: vec![
            Label::new("__name__", "http_requests_total"),
            Label::new("code", ["200", "404", "500"][i % 3]),
            Label::new("instance", format!("10.0.{}.{}:8080", i / 250, i % 250)),
            Label::new("job", format!("api-{}", i % 5)),
        ],
        timestamps,
        values,
    }
}

/// What three nodes send, in the order a merger could see it: node
/// answers interleaved batch by batch.
fn node_answers(copies: usize, gaps: bool) -> Vec<SeriesData> {
    let mut nodes: Vec<Vec<SeriesData>> = vec![Vec::new(); 3];
    for i in 0..SERIES {
        for copy in 0..copies {
            let data = if gaps && copy == 1 {
                series(i, |k| k % 10 != 3)
            } else {
                series(i, |_| true)
            };
            nodes[(i + copy) % 3].push(data);
        }
    }
    let mut out = Vec::with_capacity(SERIES * copies);
    let mut iters: Vec<_> = nodes.into_iter().map(Vec::into_iter).collect();
    loop {
        let mut any = false;
        for it in &mut iters {
            for s in it.by_ref().take(256) {
                out.push(s);
                any = true;
            }
        }
        if !any {
            return out;
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cluster merge");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, copies, gaps) in [
        ("identical replicas", 2, false),
        ("replica with gaps", 2, true),
        ("one copy", 1, false),
    ] {
        let input = node_answers(copies, gaps);
        let samples: usize = input.iter().map(|s| s.timestamps.len()).sum();
        group.throughput(Throughput::Elements(samples as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || input.clone(),
                |input| {
                    let mut merger = SeriesMerger::new(0, 0);
                    for s in input {
                        merger.add(s);
                    }
                    merger.finish()
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
