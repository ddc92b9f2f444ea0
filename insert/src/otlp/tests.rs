use std::path::PathBuf;

use prost::Message as _;

use super::proto::*;
use super::*;

const T: u64 = 1_700_000_000_123_456_789;
const T_MS: i64 = 1_700_000_000_123;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_string()))
}

fn metric(name: &str, unit: &str, data: Data) -> proto::Metric {
    proto::Metric {
        name: name.to_string(),
        unit: unit.to_string(),
        data: Some(data),
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<proto::Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics,
            }],
        }],
    }
}

fn number(attributes: Vec<KeyValue>, value: NumberValue) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: T - 10_000_000_000,
        time_unix_nano: T,
        value: Some(value),
        flags: 0,
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> proto::Metric {
    metric(
        name,
        "",
        Data::Gauge(Gauge {
            data_points: points,
        }),
    )
}

/// Every series as `name{a="1"} value@ms`, in order.
fn lines(translated: &Translated) -> Vec<String> {
    translated
        .parsed
        .series
        .iter()
        .map(|series| {
            assert_eq!(series.samples.len(), 1);
            assert!(
                series.labels.is_sorted_by(|a, b| a.name < b.name),
                "labels sorted and unique: {:?}",
                series.labels
            );
            let sample = series.samples[0];
            let value = if strata_storage::is_stale_nan(sample.value) {
                "stale".to_string()
            } else {
                format!("{}", sample.value)
            };
            format!(
                "{} {value}@{}",
                crate::ingest::format_series(&series.labels),
                sample.timestamp
            )
        })
        .collect()
}

fn check(request: ExportMetricsServiceRequest, want: &[&str]) {
    let got = translate(request, DEFAULT_MAX_SERIES_BYTES).expect("within budget");
    assert_eq!(lines(&got), want);
    assert_eq!(got.parsed.rows, want.len() as u64);
    assert_eq!(got.skipped, Skipped::default());
}

#[test]
fn resource_and_scope_become_labels() {
    let mut req = request(
        vec![
            s("service.name", "checkout"),
            s("service.namespace", "shop"),
            s("service.instance.id", "pod-1"),
            s("host.name", "node-a"),
            s("region", "eu"),
        ],
        vec![gauge(
            "queue.depth",
            vec![number(
                vec![s("queue", "orders"), s("region", "us")],
                NumberValue::AsInt(7),
            )],
        )],
    );
    req.resource_metrics[0].scope_metrics[0].scope = Some(InstrumentationScope {
        name: "shop.queue".into(),
        version: "1.2".into(),
    });
    check(
        req,
        &[&format!(
            r#"queue_depth{{host_name="node-a",instance="pod-1",job="shop/checkout",otel_scope_name="shop.queue",otel_scope_version="1.2",queue="orders",region="us"}} 7@{T_MS}"#
        )],
    );
    // Without a namespace `job` is the service name; an empty scope adds nothing.
    let mut req = request(
        vec![s("service.name", "checkout")],
        vec![gauge(
            "up",
            vec![number(vec![], NumberValue::AsDouble(1.0))],
        )],
    );
    req.resource_metrics[0].scope_metrics[0].scope = Some(InstrumentationScope::default());
    check(req, &[&format!(r#"up{{job="checkout"}} 1@{T_MS}"#)]);
}

#[test]
fn sums_are_counters_when_monotonic() {
    let sum = |name: &str, unit: &str, monotonic: bool, temporality: i32| {
        metric(
            name,
            unit,
            Data::Sum(proto::Sum {
                data_points: vec![number(vec![s("code", "200")], NumberValue::AsDouble(2.5))],
                aggregation_temporality: temporality,
                is_monotonic: monotonic,
            }),
        )
    };
    check(
        request(
            vec![],
            vec![
                sum("http.requests", "{request}", true, TEMPORALITY_CUMULATIVE),
                sum(
                    "active.requests",
                    "{request}",
                    false,
                    TEMPORALITY_CUMULATIVE,
                ),
                sum("bytes.sent", "By", true, TEMPORALITY_DELTA),
                sum("pool.usage", "1", false, TEMPORALITY_CUMULATIVE),
            ],
        ),
        &[
            &format!(r#"http_requests_total{{code="200"}} 2.5@{T_MS}"#),
            &format!(r#"active_requests{{code="200"}} 2.5@{T_MS}"#),
            &format!(r#"bytes_sent_total{{code="200"}} 2.5@{T_MS}"#),
            &format!(r#"pool_usage_ratio{{code="200"}} 2.5@{T_MS}"#),
        ],
    );
}

fn histogram_point(counts: Vec<u64>, bounds: Vec<f64>, sum: Option<f64>) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: vec![s("route", "/a")],
        start_time_unix_nano: T - 1,
        time_unix_nano: T,
        count: counts.iter().sum(),
        sum,
        bucket_counts: counts,
        explicit_bounds: bounds,
        flags: 0,
    }
}

fn histogram(name: &str, unit: &str, points: Vec<HistogramDataPoint>) -> proto::Metric {
    metric(
        name,
        unit,
        Data::Histogram(proto::Histogram {
            data_points: points,
            aggregation_temporality: TEMPORALITY_CUMULATIVE,
        }),
    )
}

#[test]
fn histograms_have_cumulative_buckets() {
    check(
        request(
            vec![],
            vec![histogram(
                "http.server.duration",
                "ms",
                vec![
                    histogram_point(vec![1, 0, 3, 2], vec![0.5, 10.0, 1e6], Some(123.25)),
                    histogram_point(vec![], vec![], Some(4.0)),
                    histogram_point(vec![5], vec![], None),
                ],
            )],
        ),
        &[
            &format!(r#"http_server_duration_milliseconds_bucket{{le="0.5",route="/a"}} 1@{T_MS}"#),
            &format!(r#"http_server_duration_milliseconds_bucket{{le="10",route="/a"}} 1@{T_MS}"#),
            &format!(
                r#"http_server_duration_milliseconds_bucket{{le="1000000",route="/a"}} 4@{T_MS}"#
            ),
            &format!(
                r#"http_server_duration_milliseconds_bucket{{le="+Inf",route="/a"}} 6@{T_MS}"#
            ),
            &format!(r#"http_server_duration_milliseconds_sum{{route="/a"}} 123.25@{T_MS}"#),
            &format!(r#"http_server_duration_milliseconds_count{{route="/a"}} 6@{T_MS}"#),
            // No buckets: sum and count only.
            &format!(r#"http_server_duration_milliseconds_sum{{route="/a"}} 4@{T_MS}"#),
            &format!(r#"http_server_duration_milliseconds_count{{route="/a"}} 0@{T_MS}"#),
            // One bucket, no sum.
            &format!(
                r#"http_server_duration_milliseconds_bucket{{le="+Inf",route="/a"}} 5@{T_MS}"#
            ),
            &format!(r#"http_server_duration_milliseconds_count{{route="/a"}} 5@{T_MS}"#),
        ],
    );
}

#[test]
fn summaries_have_quantiles_sum_and_count() {
    let point = SummaryDataPoint {
        attributes: vec![s("quantile", "spoofed")],
        start_time_unix_nano: 0,
        time_unix_nano: T,
        count: 10,
        sum: 4.5,
        quantile_values: vec![
            ValueAtQuantile {
                quantile: 0.5,
                value: 0.25,
            },
            ValueAtQuantile {
                quantile: 0.99,
                value: 1.5,
            },
        ],
        flags: 0,
    };
    check(
        request(
            vec![],
            vec![metric(
                "rpc.latency",
                "s",
                Data::Summary(proto::Summary {
                    data_points: vec![point],
                }),
            )],
        ),
        &[
            &format!(r#"rpc_latency_seconds{{quantile="0.5"}} 0.25@{T_MS}"#),
            &format!(r#"rpc_latency_seconds{{quantile="0.99"}} 1.5@{T_MS}"#),
            &format!(r#"rpc_latency_seconds_sum{{quantile="spoofed"}} 4.5@{T_MS}"#),
            &format!(r#"rpc_latency_seconds_count{{quantile="spoofed"}} 10@{T_MS}"#),
        ],
    );
}

#[test]
fn no_recorded_value_is_a_stale_marker() {
    let mut point = number(vec![], NumberValue::AsDouble(3.0));
    point.flags = FLAG_NO_RECORDED_VALUE;
    let mut no_value = number(vec![], NumberValue::AsDouble(0.0));
    no_value.value = None;
    no_value.flags = FLAG_NO_RECORDED_VALUE;
    let mut h = histogram_point(vec![1, 2], vec![1.0], Some(2.0));
    h.flags = FLAG_NO_RECORDED_VALUE;
    check(
        request(
            vec![],
            vec![
                gauge("g", vec![point, no_value]),
                histogram("h", "", vec![h]),
            ],
        ),
        &[
            &format!("g{{}} stale@{T_MS}"),
            &format!("g{{}} stale@{T_MS}"),
            &format!(r#"h_bucket{{le="1",route="/a"}} stale@{T_MS}"#),
            &format!(r#"h_bucket{{le="+Inf",route="/a"}} stale@{T_MS}"#),
            &format!(r#"h_sum{{route="/a"}} stale@{T_MS}"#),
            &format!(r#"h_count{{route="/a"}} stale@{T_MS}"#),
        ],
    );
}

#[test]
fn bad_points_are_skipped_with_a_reason() {
    let check_skip = |metric: proto::Metric, reason: &str, first: &str| {
        let got = translate(
            request(
                vec![],
                vec![
                    metric,
                    gauge("ok", vec![number(vec![], NumberValue::AsInt(1))]),
                ],
            ),
            DEFAULT_MAX_SERIES_BYTES,
        )
        .expect("within budget");
        assert_eq!(lines(&got), [format!("ok{{}} 1@{T_MS}")], "{reason}");
        assert_eq!(got.skipped.points, 1, "{reason}");
        assert_eq!(got.skipped.by_reason.get(reason), Some(&1), "{reason}");
        let message = got.skipped.first.expect("first skipped point");
        assert!(message.contains(first), "{reason}: {message}");
    };
    let mut no_time = number(vec![], NumberValue::AsInt(1));
    no_time.time_unix_nano = 0;
    check_skip(gauge("a", vec![no_time]), "missing_timestamp", "\"a\"");
    let mut no_value = number(vec![], NumberValue::AsInt(1));
    no_value.value = None;
    check_skip(gauge("b", vec![no_value]), "missing_value", "no value");
    check_skip(
        histogram("c", "", vec![histogram_point(vec![1, 2], vec![], None)]),
        "invalid_histogram",
        "2 bucket counts for 0 bounds",
    );
    check_skip(
        histogram(
            "d",
            "",
            vec![histogram_point(vec![1, 2, 3], vec![2.0, 1.0], None)],
        ),
        "invalid_histogram",
        "do not increase",
    );
    check_skip(
        gauge("", vec![number(vec![], NumberValue::AsInt(1))]),
        "missing_metric_name",
        "empty name",
    );
    check_skip(
        metric(
            "e",
            "",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: vec![],
                    time_unix_nano: T,
                    count: 3,
                    scale: 2,
                }],
                aggregation_temporality: TEMPORALITY_CUMULATIVE,
            }),
        ),
        "exponential_histogram",
        "exponential histograms are not supported",
    );
}

#[test]
fn attributes_are_sanitized_rendered_and_merged() {
    let attributes = vec![
        s("http.method", "GET"),
        s("http_method", "get"),
        s("__name__", "spoof"),
        s("9lives", "cat"),
        s("", "dropped"),
        kv("ok", Value::BoolValue(true)),
        kv("n", Value::IntValue(-3)),
        kv("ratio", Value::DoubleValue(0.1)),
        kv("raw", Value::BytesValue(b"hi!?".to_vec())),
        kv(
            "list",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::StringValue("a\"b".into())),
                    },
                    AnyValue {
                        value: Some(Value::IntValue(2)),
                    },
                    AnyValue { value: None },
                ],
            }),
        ),
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![s("k", "v")],
            }),
        ),
        KeyValue {
            key: "empty".into(),
            value: None,
        },
    ];
    check(
        request(
            vec![s("host", "resource"), s("ok", "resource")],
            vec![gauge("m", vec![number(attributes, NumberValue::AsInt(1))])],
        ),
        &[&format!(
            r#"m{{host="resource",http_method="GET;get",key_9lives="cat",key__name__="spoof",list="[\"a\\\"b\",2,null]",map="{{\"k\":\"v\"}}",n="-3",ok="true",ratio="0.1",raw="aGkhPw=="}} 1@{T_MS}"#
        )],
    );
}

#[test]
fn expansion_is_bounded() {
    // One point, 1000 buckets: 1001 series repeating a 1 KiB resource label.
    let point = histogram_point(vec![1; 1001], (0..1000).map(f64::from).collect(), None);
    let req = request(
        vec![s("big", &"x".repeat(1024))],
        vec![histogram("h", "", vec![point])],
    );
    let body = req.encode_to_vec();
    assert!(body.len() < 20_000, "{} bytes", body.len());
    let err = parse_limited(&body, 1 << 20).expect_err("over 1 MiB of labels");
    assert_eq!(err, ParseError::TooLarge { limit: 1 << 20 });
    assert_eq!(err.reason(), "too_large_expanded");
    assert!(err.to_string().contains("split it"), "{err}");
    let fits = parse_limited(&body, 2 << 20).expect("under 2 MiB of labels");
    assert_eq!(fits.parsed.rows, 1002);
}

#[test]
fn base64_matches_the_standard_alphabet() {
    let check = |input: &[u8], want: &str| {
        let mut out = String::new();
        base64(input, &mut out);
        assert_eq!(out, want, "{input:?}");
    };
    check(b"", "");
    check(b"f", "Zg==");
    check(b"fo", "Zm8=");
    check(b"foo", "Zm9v");
    check(b"foob", "Zm9vYg==");
    check(&[0xff, 0xfe, 0xfd], "//79");
}

#[test]
fn malformed_bodies_fail_cleanly() {
    let valid = seed_requests()
        .into_iter()
        .find(|(name, _)| *name == "gauge")
        .expect("gauge seed")
        .1
        .encode_to_vec();
    let check = |body: &[u8], want: &str| {
        let err = parse(body).expect_err(want);
        assert!(err.to_string().contains(want), "{err}");
        assert_eq!(err.reason(), "invalid_protobuf");
    };
    check(b"\xff\xff\xff", "cannot decode OTLP");
    check(&valid[..valid.len() - 3], "cannot decode OTLP");
    check(b"{\"resourceMetrics\":[]}", "cannot decode OTLP");
    // resource_metrics (1) as a varint: wrong wire type.
    check(&[0x08, 0x01], "cannot decode OTLP");
    // A metric name that is not UTF-8.
    let bad_utf8 = ExportMetricsServiceRequest::default().encode_to_vec();
    assert!(bad_utf8.is_empty());
    let mut body = request(vec![], vec![gauge("abc", vec![])]).encode_to_vec();
    let at = body
        .windows(3)
        .position(|w| w == b"abc")
        .expect("name in body");
    body[at] = 0xff;
    check(&body, "cannot decode OTLP");
    // Recursion past the decoder's limit.
    let mut deep = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 0..200 {
        deep = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values: vec![deep] })),
        };
    }
    let deep = request(
        vec![KeyValue {
            key: "deep".into(),
            value: Some(deep),
        }],
        vec![],
    )
    .encode_to_vec();
    check(&deep, "cannot decode OTLP");
    // An empty body is an empty request.
    assert_eq!(parse(b"").expect("empty"), Translated::default());
}

/// One request per metric type, with every field this module reads set:
/// the fuzz seeds (`fuzz/corpus/otlp/<name>.pb`).
fn seed_requests() -> Vec<(&'static str, ExportMetricsServiceRequest)> {
    let resource = || {
        vec![
            s("service.name", "seed"),
            s("service.instance.id", "i-1"),
            kv("pid", Value::IntValue(42)),
        ]
    };
    let mut stale = number(vec![s("a", "b")], NumberValue::AsDouble(1.0));
    stale.flags = FLAG_NO_RECORDED_VALUE;
    let summary = SummaryDataPoint {
        attributes: vec![s("op", "get")],
        start_time_unix_nano: T - 1,
        time_unix_nano: T,
        count: 3,
        sum: 1.5,
        quantile_values: vec![ValueAtQuantile {
            quantile: 0.5,
            value: 0.4,
        }],
        flags: 0,
    };
    vec![
        (
            "gauge",
            request(
                resource(),
                vec![gauge(
                    "temperature",
                    vec![
                        number(vec![s("room", "a")], NumberValue::AsDouble(21.5)),
                        number(vec![s("room", "b")], NumberValue::AsInt(19)),
                        stale,
                    ],
                )],
            ),
        ),
        (
            "sum",
            request(
                resource(),
                vec![
                    metric(
                        "http.requests",
                        "{request}",
                        Data::Sum(proto::Sum {
                            data_points: vec![number(
                                vec![s("code", "200")],
                                NumberValue::AsInt(10),
                            )],
                            aggregation_temporality: TEMPORALITY_CUMULATIVE,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "queue.items",
                        "1",
                        Data::Sum(proto::Sum {
                            data_points: vec![number(vec![], NumberValue::AsInt(-2))],
                            aggregation_temporality: TEMPORALITY_DELTA,
                            is_monotonic: false,
                        }),
                    ),
                ],
            ),
        ),
        (
            "histogram",
            request(
                resource(),
                vec![histogram(
                    "http.server.duration",
                    "ms",
                    vec![histogram_point(vec![1, 2, 3], vec![5.0, 10.0], Some(40.0))],
                )],
            ),
        ),
        (
            "summary",
            request(
                resource(),
                vec![metric(
                    "rpc.latency",
                    "s",
                    Data::Summary(proto::Summary {
                        data_points: vec![summary],
                    }),
                )],
            ),
        ),
        (
            "exponential_histogram",
            request(
                resource(),
                vec![metric(
                    "latency",
                    "s",
                    Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![ExponentialHistogramDataPoint {
                            attributes: vec![s("x", "y")],
                            time_unix_nano: T,
                            count: 4,
                            scale: 3,
                        }],
                        aggregation_temporality: TEMPORALITY_CUMULATIVE,
                    }),
                )],
            ),
        ),
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/otlp")
}

/// The checked-in seeds are what `seed_requests` encodes; rewrite them with
/// `STRATA_WRITE_SEEDS=1`.
#[test]
fn seed_corpus_is_current() {
    let dir = corpus_dir();
    for (name, request) in seed_requests() {
        let path = dir.join(format!("{name}.pb"));
        let bytes = request.encode_to_vec();
        if std::env::var_os("STRATA_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).expect("create corpus dir");
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with STRATA_WRITE_SEEDS=1 to write it",
                path.display()
            )
        });
        assert_eq!(
            stored,
            bytes,
            "{} is stale; run with STRATA_WRITE_SEEDS=1",
            path.display()
        );
    }
}

/// Every file of the fuzz corpus goes through the parser: the seeds
/// translate, anything else the fuzzer saved fails cleanly.
#[test]
fn every_corpus_file_parses_or_fails_cleanly() {
    let mut seen = 0;
    let entries = std::fs::read_dir(corpus_dir()).expect("fuzz/corpus/otlp exists");
    for entry in entries {
        let path = entry.expect("dir entry").path();
        let body = std::fs::read(&path).expect("read corpus file");
        let result = parse(&body);
        if path.extension().is_some_and(|e| e == "pb") {
            let translated = result.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                translated.parsed.rows + translated.skipped.points > 0,
                "{}: no samples",
                path.display()
            );
        }
        seen += 1;
    }
    assert!(seen >= seed_requests().len(), "only {seen} corpus files");
}
