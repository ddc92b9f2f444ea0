//! OTLP decode + translation throughput (`strata_insert::otlp::parse`), one
//! core: a request shaped like an SDK's periodic export (one resource with
//! service and host attributes, one scope, gauges, counters and histograms
//! with a few attributes per point).
//!
//! `cargo bench -p strata-insert --bench parse_otlp`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use strata_insert::otlp::{self, proto::*};

fn s(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
    }
}

const T: u64 = 1_700_000_000_000_000_000;

fn attributes(i: usize) -> Vec<KeyValue> {
    vec![
        s("http.route", &format!("/api/v1/items/{}", i % 20)),
        s(
            "http.method",
            if i.is_multiple_of(2) { "GET" } else { "POST" },
        ),
        s("http.status_code", &format!("{}", 200 + (i % 5))),
    ]
}

/// 100 metrics x 20 points: 40 gauges, 40 counters, 20 histograms of 10 bounds.
fn request() -> (ExportMetricsServiceRequest, u64) {
    let mut metrics = Vec::new();
    let mut points = 0u64;
    for m in 0..100 {
        let numbers = |n: usize| {
            (0..n)
                .map(|i| NumberDataPoint {
                    attributes: attributes(i),
                    start_time_unix_nano: T - 60_000_000_000,
                    time_unix_nano: T,
                    value: Some(NumberValue::AsDouble(i as f64 * 1.5)),
                    flags: 0,
                })
                .collect::<Vec<_>>()
        };
        let data = match m % 5 {
            0 | 1 => Data::Gauge(Gauge {
                data_points: numbers(20),
            }),
            2 | 3 => Data::Sum(Sum {
                data_points: numbers(20),
                aggregation_temporality: TEMPORALITY_CUMULATIVE,
                is_monotonic: true,
            }),
            _ => Data::Histogram(Histogram {
                data_points: (0..20)
                    .map(|i| HistogramDataPoint {
                        attributes: attributes(i),
                        start_time_unix_nano: T - 60_000_000_000,
                        time_unix_nano: T,
                        count: 55,
                        sum: Some(123.0),
                        bucket_counts: (0..11).collect(),
                        explicit_bounds: vec![
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        ],
                        flags: 0,
                    })
                    .collect(),
                aggregation_temporality: TEMPORALITY_CUMULATIVE,
            }),
        };
        points += 20;
        metrics.push(Metric {
            name: format!("app.component{m}.operation.duration"),
            unit: if m % 5 == 4 { "s" } else { "{request}" }.to_string(),
            data: Some(data),
        });
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "checkout"),
                    s("service.namespace", "shop"),
                    s("service.instance.id", "6f1c2a4e-pod-7"),
                    s("host.name", "node-17.eu-west"),
                    s("telemetry.sdk.language", "python"),
                    s("telemetry.sdk.name", "opentelemetry"),
                    s("telemetry.sdk.version", "1.45.2"),
                ],
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "shop.http".into(),
                    version: "2.0".into(),
                }),
                metrics,
            }],
        }],
    };
    (request, points)
}

fn parse(c: &mut Criterion) {
    let (request, points) = request();
    let body = request.encode_to_vec();
    let samples = otlp::parse(&body).expect("parses").parsed.rows;
    let mut group = c.benchmark_group("parse_otlp");
    group.throughput(Throughput::Elements(points));
    group.bench_function(
        format!("points ({samples} samples, {} bytes)", body.len()),
        |b| b.iter(|| otlp::parse(std::hint::black_box(&body)).expect("parses")),
    );
    // The two halves of `parse`: protobuf decoding, then translation.
    group.bench_function("decode only", |b| {
        b.iter(|| ExportMetricsServiceRequest::decode(std::hint::black_box(&body[..])))
    });
    group.bench_function("translate only", |b| {
        b.iter_batched(
            || request.clone(),
            |r| otlp::translate(r, otlp::DEFAULT_MAX_SERIES_BYTES),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
