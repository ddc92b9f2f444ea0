//! Parse throughput per ingestion protocol, in samples per second on one
//! core. One function per protocol builds a realistic request and registers
//! its group; add a protocol by adding a function to `criterion_group!`.
//!
//! `cargo bench -p strata-insert --bench parse`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use strata_insert::decode::decode_snappy;
use strata_insert::remotewrite::{inplace, parse_v1, parse_v2, proto};
use strata_storage::encoding::synthetic::NodeExporter;

/// Samples per request: what a Prometheus queue shard sends at
/// `max_samples_per_send: 10000`.
const REQUEST_SAMPLES: usize = 10_000;

/// Labels, timestamp and value of one scraped series.
type ScrapedSeries = (Vec<(String, String)>, i64, f64);

/// One scrape of enough node_exporter hosts for [`REQUEST_SAMPLES`] series
/// of one sample each, as a live Prometheus streams them.
fn scrape_series() -> Vec<ScrapedSeries> {
    let fleet = NodeExporter {
        hosts: 1000,
        points: 1,
        ..NodeExporter::default()
    };
    fleet
        .series()
        .take(REQUEST_SAMPLES)
        .map(|s| (s.labels, s.timestamps[0], s.values[0]))
        .collect()
}

fn remote_write_v1(c: &mut Criterion) {
    let request = proto::WriteRequest {
        timeseries: scrape_series()
            .into_iter()
            .map(|(labels, timestamp, value)| proto::TimeSeries {
                labels: labels
                    .into_iter()
                    .map(|(name, value)| proto::Label { name, value })
                    .collect(),
                samples: vec![proto::Sample { value, timestamp }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    let body = request.encode_to_vec();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&body)
        .expect("snappy");
    let mut group = c.benchmark_group("remote_write_v1");
    group.throughput(Throughput::Elements(REQUEST_SAMPLES as u64));
    group.bench_function("parse", |b| {
        b.iter(|| parse_v1(black_box(&body)).expect("parse"))
    });
    group.bench_function("snappy_and_parse", |b| {
        b.iter(|| {
            let body = decode_snappy(black_box(&compressed), 64 << 20).expect("snappy");
            parse_v1(&body).expect("parse")
        })
    });
    // The path the endpoint takes for requests without metadata, exemplars
    // or histograms: labels borrowed from the body.
    group.bench_function("parse_in_place", |b| {
        b.iter(|| inplace::parse(black_box(&body)).expect("parse"))
    });
    group.finish();
}

fn remote_write_v2(c: &mut Criterion) {
    let mut symbols: Vec<String> = vec![String::new()];
    let mut index = std::collections::HashMap::new();
    let mut intern = |s: String| -> u32 {
        *index.entry(s.clone()).or_insert_with(|| {
            symbols.push(s);
            (symbols.len() - 1) as u32
        })
    };
    let timeseries = scrape_series()
        .into_iter()
        .map(|(labels, timestamp, value)| proto::v2::TimeSeries {
            labels_refs: labels
                .into_iter()
                .flat_map(|(n, v)| [intern(n), intern(v)])
                .collect(),
            samples: vec![proto::Sample { value, timestamp }],
            ..Default::default()
        })
        .collect();
    let body = proto::v2::Request {
        symbols,
        timeseries,
    }
    .encode_to_vec();
    let mut group = c.benchmark_group("remote_write_v2");
    group.throughput(Throughput::Elements(REQUEST_SAMPLES as u64));
    group.bench_function("parse", |b| {
        b.iter(|| parse_v2(black_box(&body)).expect("parse"))
    });
    group.finish();
}

criterion_group!(benches, remote_write_v1, remote_write_v2);
criterion_main!(benches);
