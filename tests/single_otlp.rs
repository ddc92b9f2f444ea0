//! OTLP/HTTP metrics into a `strata single` process, sent by the real
//! OpenTelemetry Python SDK and exporter (`.peers/venv`, installed by
//! `scripts/fetch-peers python`), read back through `/api/v1/export`.
//!
//! Without the venv the test fails, unless `STRATA_SKIP_PYTHON_PEERS=1`
//! says to skip it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message as _;
use strata_e2e::{Single, now_ms, parse_export};
use strata_insert::otlp::proto;

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const OTLP_PATH: &str = "/opentelemetry/v1/metrics";
const OTLP_PROMETHEUS_PATH: &str = "/api/v1/otlp/v1/metrics";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, or `None` when the peer may be skipped.
fn python() -> Option<PathBuf> {
    let python = root().join(".peers/venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var_os("STRATA_SKIP_PYTHON_PEERS").is_some() {
        eprintln!(
            "skipped: {} is absent and STRATA_SKIP_PYTHON_PEERS is set",
            python.display()
        );
        return None;
    }
    panic!(
        "{} is absent: run scripts/fetch-peers python (or set STRATA_SKIP_PYTHON_PEERS=1 to skip)",
        python.display()
    );
}

/// Runs the sender against `path`; returns the resource attributes it used.
fn send(python: &Path, single: &Single, path: &str, compression: &str) -> BTreeMap<String, String> {
    let output = Command::new(python)
        .env("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", compression)
        .arg(root().join("tests/python/otlp_sender.py"))
        .arg(single.base_url())
        .arg(path)
        .output()
        .expect("run otlp_sender.py");
    assert!(
        output.status.success(),
        "otlp_sender.py failed ({}): {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        single.log()
    );
    let sent: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("sender prints JSON");
    sent["resource"]
        .as_object()
        .expect("resource object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
        .collect()
}

/// Series name plus labels -> (values, timestamps) of everything `e2e_*`.
type Stored = BTreeMap<BTreeMap<String, String>, (Vec<f64>, Vec<i64>)>;

fn stored(single: &Single) -> Stored {
    let response = single.export(&[("match[]", r#"{__name__=~"e2e_.*"}"#)]);
    assert_eq!(response.status, 200, "export: {}", response.body);
    parse_export(&response.body)
        .into_iter()
        .map(|s| (s.labels, (s.values, s.timestamps)))
        .collect()
}

#[test]
fn python_sdk_metrics_come_back_exactly() {
    let Some(python) = python() else {
        return;
    };
    let single = Single::start(BIN);
    let before = now_ms();
    let resource = send(&python, &single, OTLP_PATH, "none");
    let after = now_ms();

    // Resource attributes become labels (dots to underscores), except the
    // service attributes, which become job and instance.
    let mut base: BTreeMap<String, String> = resource
        .iter()
        .filter(|(k, _)| !k.starts_with("service."))
        .map(|(k, v)| (k.replace('.', "_"), v.clone()))
        .collect();
    assert!(
        base.contains_key("telemetry_sdk_version"),
        "SDK resource: {resource:?}"
    );
    for (k, v) in [
        ("job", "strata/e2e-otlp"),
        ("instance", "i-1"),
        ("otel_scope_name", "e2e.sender"),
        ("otel_scope_version", "0.1"),
    ] {
        base.insert(k.to_string(), v.to_string());
    }
    let series = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = base.clone();
        labels.insert("__name__".to_string(), name.to_string());
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        labels
    };
    let want: Vec<(BTreeMap<String, String>, f64)> = vec![
        (
            series("e2e_temperature_celsius", &[("room", "lab")]),
            0.1 + 0.2,
        ),
        (series("e2e_requests_total", &[("code", "200")]), 7.0),
        (series("e2e_requests_total", &[("code", "500")]), 1.0),
        (series("e2e_queue_items", &[]), 3.0),
        (
            series(
                "e2e_latency_milliseconds_bucket",
                &[("route", "/api"), ("le", "1")],
            ),
            1.0,
        ),
        (
            series(
                "e2e_latency_milliseconds_bucket",
                &[("route", "/api"), ("le", "5")],
            ),
            3.0,
        ),
        (
            series(
                "e2e_latency_milliseconds_bucket",
                &[("route", "/api"), ("le", "10")],
            ),
            4.0,
        ),
        (
            series(
                "e2e_latency_milliseconds_bucket",
                &[("route", "/api"), ("le", "+Inf")],
            ),
            5.0,
        ),
        (
            series("e2e_latency_milliseconds_sum", &[("route", "/api")]),
            33.5,
        ),
        (
            series("e2e_latency_milliseconds_count", &[("route", "/api")]),
            5.0,
        ),
    ];

    let got = stored(&single);
    let got_names: Vec<_> = got.keys().collect();
    let want_names: Vec<_> = {
        let mut w: Vec<_> = want.iter().map(|(l, _)| l).collect();
        w.sort();
        w
    };
    assert_eq!(got_names, want_names, "stored series");
    let mut timestamps = Vec::new();
    for (labels, value) in &want {
        let (values, ts) = &got[labels];
        assert_eq!(values.len(), 1, "{labels:?}: {values:?}");
        assert_eq!(values[0].to_bits(), value.to_bits(), "{labels:?}");
        assert!(
            (before..=after).contains(&ts[0]),
            "{labels:?}: timestamp {} outside [{before}, {after}]",
            ts[0]
        );
        timestamps.push(ts[0]);
    }
    timestamps.dedup();
    assert_eq!(timestamps.len(), 1, "one collection, one timestamp");

    // The Prometheus-style path takes the same requests, gzip-compressed
    // this time: a second sender process starts its cumulative counters anew.
    send(&python, &single, OTLP_PROMETHEUS_PATH, "gzip");
    let got = stored(&single);
    let (values, ts) = &got[&series("e2e_requests_total", &[("code", "200")])];
    assert_eq!(values, &[7.0, 7.0]);
    assert!(ts[1] > ts[0], "{ts:?}");
}

fn exponential_histogram_request() -> Vec<u8> {
    let point = proto::NumberDataPoint {
        attributes: vec![],
        start_time_unix_nano: 0,
        time_unix_nano: u64::try_from(now_ms()).expect("positive") * 1_000_000,
        value: Some(proto::NumberValue::AsDouble(1.0)),
        flags: 0,
    };
    let request = proto::ExportMetricsServiceRequest {
        resource_metrics: vec![proto::ResourceMetrics {
            resource: None,
            scope_metrics: vec![proto::ScopeMetrics {
                scope: None,
                metrics: vec![
                    proto::Metric {
                        name: "e2e.ok".into(),
                        unit: String::new(),
                        data: Some(proto::Data::Gauge(proto::Gauge {
                            data_points: vec![point.clone()],
                        })),
                    },
                    proto::Metric {
                        name: "e2e.exp".into(),
                        unit: String::new(),
                        data: Some(proto::Data::ExponentialHistogram(
                            proto::ExponentialHistogram {
                                data_points: vec![proto::ExponentialHistogramDataPoint {
                                    attributes: vec![],
                                    time_unix_nano: point.time_unix_nano,
                                    count: 1,
                                    scale: 0,
                                }],
                                aggregation_temporality: proto::TEMPORALITY_CUMULATIVE,
                            },
                        )),
                    },
                ],
            }],
        }],
    };
    request.encode_to_vec()
}

#[test]
fn otlp_answers_in_protocol_shapes() {
    let single = Single::start(BIN);
    let protobuf = [("content-type", "application/x-protobuf")];

    let response = single.post(OTLP_PATH, b"\xff\xff not protobuf".to_vec(), &protobuf);
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/x-protobuf")
    );
    assert!(
        response.body.contains("cannot decode OTLP"),
        "{}",
        response.body
    );

    let response = single.post(
        OTLP_PATH,
        b"{}".to_vec(),
        &[("content-type", "application/json")],
    );
    assert_eq!(response.status, 415, "{}", response.body);
    assert!(
        response.body.contains("OTLP/JSON is not supported"),
        "{}",
        response.body
    );

    // gzip, and a partial success: the gauge is stored, the exponential
    // histogram is not.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&exponential_histogram_request())
        .expect("gzip");
    let body = gz.finish().expect("gzip");
    let response = single.post(
        OTLP_PATH,
        body,
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response.body.contains("skipped 1 data points")
            && response
                .body
                .contains("exponential histograms are not supported"),
        "{}",
        response.body
    );
    let got = stored(&single);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        single
            .metrics()
            .contains(r#"strata_insert_rows_rejected_total{protocol="opentelemetry",reason="exponential_histogram"} 1"#),
        "rejected points are counted"
    );
}
