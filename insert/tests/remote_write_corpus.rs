//! The remote write fuzz seeds: generated here from the message structs,
//! checked in under `fuzz/corpus/remote_write_v{1,2}/` (snappy-compressed,
//! as on the wire), and checked for drift. Every file of those directories,
//! seeds and whatever fuzzing added, goes through the parsers without a
//! panic. Regenerate with `STRATA_REGENERATE_SEEDS=1 cargo test -p
//! strata-insert --test remote_write_corpus`.

use std::path::PathBuf;

use prost::Message;
use strata_insert::decode::decode_snappy;
use strata_insert::remotewrite::proto::{self, v2};
use strata_insert::remotewrite::{parse_v1, parse_v2};

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name)
}

fn label(name: &str, value: &str) -> proto::Label {
    proto::Label {
        name: name.into(),
        value: value.into(),
    }
}

fn sample(timestamp: i64, value: f64) -> proto::Sample {
    proto::Sample { value, timestamp }
}

fn histogram() -> proto::Histogram {
    proto::Histogram {
        count: Some(proto::histogram::Count::CountInt(5)),
        sum: 12.5,
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: Some(proto::histogram::ZeroCount::ZeroCountInt(1)),
        negative_spans: vec![proto::BucketSpan {
            offset: -2,
            length: 1,
        }],
        negative_deltas: vec![1],
        positive_spans: vec![proto::BucketSpan {
            offset: 0,
            length: 2,
        }],
        positive_deltas: vec![2, -1],
        reset_hint: proto::histogram::ResetHint::No as i32,
        timestamp: 1_700_000_000_000,
        ..Default::default()
    }
}

/// What a scraping Prometheus sends: one sample per series, the node
/// exporter's label shapes, a stale marker, an exemplar, a histogram.
fn v1_scrape() -> proto::WriteRequest {
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let mut timeseries = Vec::new();
    for (i, (mode, value)) in [("idle", 1234.5), ("user", 56.25), ("system", stale)]
        .into_iter()
        .enumerate()
    {
        timeseries.push(proto::TimeSeries {
            labels: vec![
                label("__name__", "node_cpu_seconds_total"),
                label("cpu", &i.to_string()),
                label("instance", "localhost:9100"),
                label("job", "node"),
                label("mode", mode),
            ],
            samples: vec![sample(1_700_000_000_000 + i as i64, value)],
            ..Default::default()
        });
    }
    timeseries.push(proto::TimeSeries {
        labels: vec![label("__name__", "up"), label("job", "node")],
        samples: vec![
            sample(1_700_000_000_000, 1.0),
            sample(1_700_000_015_000, 0.0),
        ],
        exemplars: vec![proto::Exemplar {
            labels: vec![label("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
            value: 1.0,
            timestamp: 1_700_000_000_000,
        }],
        ..Default::default()
    });
    timeseries.push(proto::TimeSeries {
        labels: vec![label("__name__", "rpc_latency_seconds")],
        histograms: vec![histogram()],
        ..Default::default()
    });
    proto::WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

fn v1_metadata() -> proto::WriteRequest {
    proto::WriteRequest {
        timeseries: vec![],
        metadata: vec![proto::MetricMetadata {
            r#type: proto::MetricType::Counter as i32,
            metric_family_name: "node_cpu_seconds_total".into(),
            help: "Seconds the CPUs spent in each mode.".into(),
            unit: "seconds".into(),
        }],
    }
}

fn v2_request() -> v2::Request {
    let symbols = [
        "",
        "__name__",
        "node_cpu_seconds_total",
        "cpu",
        "0",
        "mode",
        "idle",
        "Seconds the CPUs spent in each mode.",
        "seconds",
        "trace_id",
        "abc",
        "rpc_latency_seconds",
    ];
    v2::Request {
        symbols: symbols.map(String::from).to_vec(),
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4, 5, 6],
                samples: vec![sample(1_700_000_000_000, 1234.5)],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![9, 10],
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
                metadata: Some(v2::Metadata {
                    r#type: proto::MetricType::Counter as i32,
                    help_ref: 7,
                    unit_ref: 8,
                }),
                created_timestamp: 1_699_999_000_000,
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 11],
                histograms: vec![histogram()],
                metadata: Some(v2::Metadata {
                    r#type: proto::MetricType::Histogram as i32,
                    help_ref: 0,
                    unit_ref: 8,
                }),
                ..Default::default()
            },
        ],
    }
}

fn snappy(body: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(body)
        .expect("snappy compress")
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        (
            "remote_write_v1",
            "scrape.snappy",
            snappy(&v1_scrape().encode_to_vec()),
        ),
        (
            "remote_write_v1",
            "metadata.snappy",
            snappy(&v1_metadata().encode_to_vec()),
        ),
        (
            "remote_write_v2",
            "request.snappy",
            snappy(&v2_request().encode_to_vec()),
        ),
    ]
}

#[test]
fn seeds_are_checked_in_and_parse() {
    let regenerate = std::env::var_os("STRATA_REGENERATE_SEEDS").is_some();
    for (dir, name, bytes) in seeds() {
        let path = corpus(dir).join(name);
        if regenerate {
            std::fs::create_dir_all(corpus(dir)).expect("create corpus dir");
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with STRATA_REGENERATE_SEEDS=1",
                path.display()
            )
        });
        assert!(
            on_disk == bytes,
            "{} differs from the generated seed; regenerate with STRATA_REGENERATE_SEEDS=1",
            path.display()
        );
        let body = decode_snappy(&bytes, 1 << 20).expect("seed decompresses");
        let parsed = if dir == "remote_write_v1" {
            parse_v1(&body)
        } else {
            parse_v2(&body)
        };
        parsed.unwrap_or_else(|f| panic!("{name}: {}", f.message));
    }
    let v1 = parse_v1(&v1_scrape().encode_to_vec()).expect("v1");
    assert_eq!(v1.parsed.rows, 5);
    assert_eq!((v1.skipped.histograms, v1.skipped.exemplars), (1, 1));
    let v2 = parse_v2(&v2_request().encode_to_vec()).expect("v2");
    assert_eq!(v2.parsed.rows, 1);
    assert_eq!(
        (
            v2.skipped.histograms,
            v2.skipped.exemplars,
            v2.skipped.metadata
        ),
        (1, 1, 2)
    );
}

/// Every corpus file, raw and snappy-decoded, through both parsers.
#[test]
fn every_corpus_file_parses_without_panic() {
    let mut files = 0;
    for dir in ["remote_write_v1", "remote_write_v2"] {
        let entries = std::fs::read_dir(corpus(dir)).expect("corpus directory");
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("read corpus file");
            for parse in [parse_v1, parse_v2] {
                let _ = parse(&data);
                if let Ok(body) = decode_snappy(&data, 1 << 20) {
                    let _ = parse(&body);
                }
            }
            files += 1;
        }
    }
    assert!(files >= 3, "only {files} corpus files");
}
