//! Merging what storage nodes answer, per input sample: 3 nodes, every
//! series on 2 of them (RF=2), 10,000 series of 240 samples (1h at 15s),
//! each node's share in key order as an ordered search streams it.
//!
//! - `identical replicas`: both copies hold every sample (the common case:
//!   the merger compares timestamps once and values pairwise);
//! - `replica with gaps`: one copy lacks every 10th sample (the general
//!   union by timestamp);
//! - `one copy`: RF=1, each series from one node (key comparisons and
//!   moving only).
//!
//! Throughput counts input samples (both copies).
//!
//! `cargo bench -p strata-select --bench cluster_merge`

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use strata_select::cluster::merge::{KeyMerge, Step};
use strata_storage::cluster::KeyedSeries;
use strata_storage::{Label, SeriesData, labels_key};

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

/// What three nodes send: each its share of the series ascending by key,
/// as an ordered search answers.
fn node_answers(copies: usize, gaps: bool) -> Vec<Vec<KeyedSeries>> {
    let mut nodes: Vec<Vec<KeyedSeries>> = vec![Vec::new(); 3];
    for i in 0..SERIES {
        for copy in 0..copies {
            let series = if gaps && copy == 1 {
                series(i, |k| k % 10 != 3)
            } else {
                series(i, |_| true)
            };
            let key = labels_key(&series.labels);
            let keyed = KeyedSeries::new(key, series.labels, series.timestamps, series.values);
            nodes[(i + copy) % 3].push(keyed);
        }
    }
    for node in &mut nodes {
        node.sort_by_key(KeyedSeries::key);
    }
    nodes
}

/// Merges the nodes' answers, fed in batches of 256 series as the merge
/// asks for them; answers the merged series.
fn merge(nodes: Vec<Vec<KeyedSeries>>) -> usize {
    let mut batches: Vec<_> = nodes
        .into_iter()
        .map(|node| {
            let mut node = node.into_iter();
            std::iter::from_fn(move || {
                let batch: Vec<KeyedSeries> = node.by_ref().take(256).collect();
                (!batch.is_empty()).then_some(batch)
            })
        })
        .collect();
    let mut merge = KeyMerge::new(batches.len());
    let mut merged = 0;
    loop {
        match merge.step() {
            Step::Series(s) => merged += usize::from(!s.timestamps.is_empty()),
            Step::Feed(node) => match batches[node].next() {
                Some(batch) => merge.feed(node, batch).expect("in order"),
                None => merge.end(node),
            },
            Step::Done => return merged,
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
        let samples: usize = input.iter().flatten().map(|s| s.timestamps.len()).sum();
        group.throughput(Throughput::Elements(samples as u64));
        group.bench_function(name, |b| {
            b.iter_batched(|| input.clone(), merge, BatchSize::LargeInput)
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
