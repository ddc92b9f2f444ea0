//! The text ingestion protocols through a `strata single` process, driven by
//! real clients: the Python `influxdb-client` (from `scripts/fetch-peers
//! python`) writes line protocol, and a real `prometheus-node-exporter`
//! (from `scripts/fetch-peers prometheus`) is scraped and its body imported.
//! A missing peer fails the test; `STRATA_SKIP_PEER_TESTS=1` skips those
//! tests instead, saying so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_e2e::{ExportedSeries, Single, free_port, labels, now_ms, parse_export};
use strata_insert::promtext::{self, Format};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// `true` when peer tests are to be skipped; prints why.
fn skip_peers(test: &str) -> bool {
    let skip = std::env::var("STRATA_SKIP_PEER_TESTS").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{test}: skipped, STRATA_SKIP_PEER_TESTS=1");
    }
    skip
}

fn export_all(single: &Single, selector: &str) -> Vec<ExportedSeries> {
    let response = single.export(&[("match[]", selector)]);
    assert_eq!(response.status, 200, "export {selector}: {}", response.body);
    parse_export(&response.body)
}

/// Exported samples as label set -> (timestamp, value bits) pairs.
fn by_labels(series: &[ExportedSeries]) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, u64)>> {
    series
        .iter()
        .map(|s| {
            let samples = s
                .timestamps
                .iter()
                .zip(&s.values)
                .map(|(t, v)| (*t, v.to_bits()))
                .collect();
            (s.labels.clone(), samples)
        })
        .collect()
}

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peers/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/fetch-peers python (or set STRATA_SKIP_PEER_TESTS=1)",
        python.display()
    );
    python
}

#[test]
fn influxdb_python_client_writes_come_back_exactly() {
    if skip_peers("influxdb_python_client_writes_come_back_exactly") {
        return;
    }
    let python = python();
    let single = Single::start(BIN);
    // Whole seconds an hour ago, so that every precision can express it.
    let t0_s = now_ms() / 1000 - 3600;
    let script = format!(
        r#"
import sys
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

t0 = {t0_s}
with InfluxDBClient(url=sys.argv[1], token="any", org="acme") as client:
    assert client.ping(), "ping failed"
    write = client.write_api(write_options=SYNCHRONOUS)
    write.write(bucket="metrics", record=[
        Point("e2e_cpu").tag("host", "a b,c=d").tag("region", "eu")
            .field("usage", 0.1).field("cores", 8).field("online", True)
            .field("note", "a string, skipped").time(t0 * 10**9 + 123456789, WritePrecision.NS),
        Point("e2e_cpu").tag("host", "x").field("usage", -2.5e-7).field("online", False)
            .time((t0 + 1) * 10**6 + 250000, WritePrecision.US),
        Point("e2e_cpu").tag("host", "x").field("usage", 1e300)
            .time((t0 + 2) * 1000 + 7, WritePrecision.MS),
        Point("e2e.disk-io").tag("host-name", "y").field("reads", 123456789012)
            .time(t0 + 3, WritePrecision.S),
    ])
    # Line protocol as written by hand, with a comment and the v2 precision names.
    write.write(bucket="metrics", record="e2e_raw,k=v value=42u,flag=T " + str(t0 + 4), write_precision=WritePrecision.S)
# A gzip-compressed body.
with InfluxDBClient(url=sys.argv[1], token="any", org="acme", enable_gzip=True) as client:
    write = client.write_api(write_options=SYNCHRONOUS)
    write.write(bucket="zipped", record=Point("e2e_gz").field("n", 5).time(t0 + 5, WritePrecision.S))
"#
    );
    let output = Command::new(&python)
        .arg("-c")
        .arg(&script)
        .arg(single.base_url())
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let got = by_labels(&export_all(&single, r#"{__name__=~"e2e_.*"}"#));
    let t0 = t0_s * 1000;
    let sample = |ts: i64, v: f64| vec![(ts, v.to_bits())];
    let want = BTreeMap::from([
        (
            labels(&[
                ("__name__", "e2e_cpu_usage"),
                ("db", "metrics"),
                ("host", "a b,c=d"),
                ("region", "eu"),
            ]),
            sample(t0 + 123, 0.1),
        ),
        (
            labels(&[
                ("__name__", "e2e_cpu_cores"),
                ("db", "metrics"),
                ("host", "a b,c=d"),
                ("region", "eu"),
            ]),
            sample(t0 + 123, 8.0),
        ),
        (
            labels(&[
                ("__name__", "e2e_cpu_online"),
                ("db", "metrics"),
                ("host", "a b,c=d"),
                ("region", "eu"),
            ]),
            sample(t0 + 123, 1.0),
        ),
        (
            labels(&[
                ("__name__", "e2e_cpu_usage"),
                ("db", "metrics"),
                ("host", "x"),
            ]),
            vec![
                (t0 + 1250, (-2.5e-7f64).to_bits()),
                (t0 + 2007, 1e300f64.to_bits()),
            ],
        ),
        (
            labels(&[
                ("__name__", "e2e_cpu_online"),
                ("db", "metrics"),
                ("host", "x"),
            ]),
            sample(t0 + 1250, 0.0),
        ),
        (
            labels(&[
                ("__name__", "e2e_disk_io_reads"),
                ("db", "metrics"),
                ("host_name", "y"),
            ]),
            sample(t0 + 3000, 123456789012.0),
        ),
        (
            labels(&[("__name__", "e2e_raw_value"), ("db", "metrics"), ("k", "v")]),
            sample(t0 + 4000, 42.0),
        ),
        (
            labels(&[("__name__", "e2e_raw_flag"), ("db", "metrics"), ("k", "v")]),
            sample(t0 + 4000, 1.0),
        ),
        (
            labels(&[("__name__", "e2e_gz_n"), ("db", "zipped")]),
            sample(t0 + 5000, 5.0),
        ),
    ]);
    assert_eq!(got, want);
    let metrics = single.metrics();
    assert!(
        metrics.contains(
            r#"strata_insert_rows_rejected_total{protocol="influx",reason="string_field"} 1"#
        ),
        "string field not counted:\n{metrics}"
    );
}

/// A running node exporter on a free port, killed on drop.
struct NodeExporter {
    child: Child,
    url: String,
}

impl NodeExporter {
    fn start() -> NodeExporter {
        assert!(
            std::path::Path::new(NODE_EXPORTER).exists(),
            "{NODE_EXPORTER} is missing: run scripts/fetch-peers prometheus \
             (or set STRATA_SKIP_PEER_TESTS=1)"
        );
        let addr = free_port();
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node exporter");
        NodeExporter {
            child,
            url: format!("http://{addr}/metrics"),
        }
    }

    /// One scrape, retried until the exporter listens.
    fn scrape(&self) -> Vec<u8> {
        let client = reqwest::blocking::Client::new();
        let started = Instant::now();
        loop {
            match client.get(&self.url).send() {
                Ok(response) if response.status().is_success() => {
                    return response.bytes().expect("scrape body").to_vec();
                }
                result if started.elapsed() > Duration::from_secs(20) => {
                    panic!("node exporter at {} did not answer: {result:?}", self.url)
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn node_exporter_scrape_round_trips() {
    if skip_peers("node_exporter_scrape_round_trips") {
        return;
    }
    let exporter = NodeExporter::start();
    let body = exporter.scrape();
    drop(exporter);
    let single = Single::start(BIN);
    let ts_ms = now_ms() - 60_000;
    let got = import_and_compare(&single, &body, "text/plain; version=0.0.4", ts_ms);
    assert!(got > 100, "a real scrape has many samples: {got}");
}

/// Imports `body` with the default timestamp `ts_ms` and checks that every
/// sample comes back through the export exactly as the parser reads it, and
/// nothing else. Returns the number of series.
fn import_and_compare(single: &Single, body: &[u8], content_type: &str, ts_ms: i64) -> usize {
    let path = format!("/api/v1/import/prometheus?timestamp={ts_ms}");
    let response = single.post(&path, body.to_vec(), &[("Content-Type", content_type)]);
    assert_eq!(response.status, 204, "import: {}", response.body);

    let format = Format::detect(Some(content_type), body);
    let parsed = promtext::parse(body, ts_ms, format).expect("body parses");
    let mut want: BTreeMap<BTreeMap<String, String>, Vec<(i64, u64)>> = BTreeMap::new();
    for series in &parsed.series {
        let labels: BTreeMap<String, String> = series
            .labels
            .iter()
            .filter(|l| !l.value.is_empty())
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        let samples = want.entry(labels).or_default();
        for s in &series.samples {
            samples.push((s.timestamp, s.value.to_bits()));
        }
    }
    let got = by_labels(&export_all(single, r#"{__name__=~".+"}"#));
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    for (labels, samples) in &want {
        let got_samples = &got[labels];
        // NaN payloads may differ; compare NaN as NaN.
        let same = got_samples.len() == samples.len()
            && got_samples.iter().zip(samples).all(|(g, w)| {
                g.0 == w.0
                    && (g.1 == w.1
                        || (f64::from_bits(g.1).is_nan() && f64::from_bits(w.1).is_nan()))
            });
        assert!(same, "{labels:?}: got {got_samples:?}, want {samples:?}");
    }
    // Only this body was written: the export holds nothing else.
    assert_eq!(got.len(), want.len(), "extra series exported");
    got.len()
}

/// OpenMetrics as the Python `prometheus_client` writes it: `_created`
/// series, an exemplar, a unit, info and stateset, escapes, `# EOF`.
#[test]
fn python_prometheus_client_openmetrics_round_trips() {
    if skip_peers("python_prometheus_client_openmetrics_round_trips") {
        return;
    }
    let script = r#"
import sys
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.openmetrics.exposition import generate_latest
r = CollectorRegistry()
Counter("om_requests", "Requests.", ["path"], registry=r).labels('/a "b"\\c\nd').inc(3)
h = Histogram("om_latency_seconds", "Latency.", buckets=[0.1, 1], registry=r)
h.observe(0.05, exemplar={"trace_id": "abc"})
h.observe(2)
Summary("om_size_bytes", "Size.", registry=r).observe(10)
Gauge("om_temp_celsius", "Temp.", unit="celsius", registry=r).set(-3.5)
Info("om_build", "Build.", registry=r).info({"version": "1.2"})
Enum("om_state", "State.", states=["on", "off"], registry=r).state("off")
sys.stdout.write(generate_latest(r).decode())
"#;
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body = output.stdout;
    assert!(body.ends_with(b"# EOF\n"), "not OpenMetrics: {body:?}");
    let single = Single::start(BIN);
    let ts_ms = now_ms() - 60_000;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let series = import_and_compare(&single, &body, content_type, ts_ms);
    assert_eq!(series, 15, "{}", String::from_utf8_lossy(&body));

    let got = by_labels(&export_all(
        &single,
        r#"{__name__=~"om_(requests_total|latency_seconds_bucket|state)"}"#,
    ));
    let sample = |v: f64| vec![(ts_ms, v.to_bits())];
    let want = BTreeMap::from([
        (
            labels(&[
                ("__name__", "om_requests_total"),
                ("path", "/a \"b\"\\c\nd"),
            ]),
            sample(3.0),
        ),
        (
            labels(&[("__name__", "om_latency_seconds_bucket"), ("le", "0.1")]),
            sample(1.0),
        ),
        (
            labels(&[("__name__", "om_latency_seconds_bucket"), ("le", "1.0")]),
            sample(1.0),
        ),
        (
            labels(&[("__name__", "om_latency_seconds_bucket"), ("le", "+Inf")]),
            sample(2.0),
        ),
        (
            labels(&[("__name__", "om_state"), ("om_state", "on")]),
            sample(0.0),
        ),
        (
            labels(&[("__name__", "om_state"), ("om_state", "off")]),
            sample(1.0),
        ),
    ]);
    assert_eq!(got, want);
}

#[test]
fn text_protocol_status_codes_and_formats() {
    let single = Single::start(BIN);
    let t = now_ms() - 600_000;
    let check = |path: &str, body: &str, headers: &[(&str, &str)], status: u16, contains: &str| {
        let response = single.post(path, body.as_bytes().to_vec(), headers);
        assert_eq!(
            response.status, status,
            "{path} {body:?}: {}",
            response.body
        );
        assert!(
            response.body.contains(contains),
            "{path} {body:?}: {:?} lacks {contains:?}",
            response.body
        );
    };
    assert_eq!(single.get("/ping").status, 204);
    assert_eq!(single.get("/influx/ping").status, 204);
    assert_eq!(single.get("/query?q=SHOW+DATABASES").status, 200);
    let ms = t.to_string();
    check(
        "/write?db=v1&precision=ms",
        &format!("t_one v=1 {ms}\n"),
        &[],
        204,
        "",
    );
    check(
        "/influx/write?precision=ms",
        &format!("t_two v=2 {ms}"),
        &[],
        204,
        "",
    );
    check("/write", "t_str s=\"only a string\"", &[], 204, "");
    check(
        "/write?precision=d",
        "t v=1",
        &[],
        400,
        "invalid precision \"d\"",
    );
    check(
        "/write",
        "t v=1\nt v=oops\n",
        &[],
        400,
        "line 2 column 5: invalid value of field \"v\"",
    );
    check(
        "/write",
        "t,a=1,a=2 v=1",
        &[],
        400,
        "duplicate label name \"a\"",
    );

    let seconds = format!("{}.{:03}", t / 1000, t % 1000);
    check(
        "/api/v1/import/prometheus",
        &format!(
            "# TYPE t_om counter\nt_om_total{{a=\"b\"}} 3 {seconds} # {{id=\"x\"}} 1\n# EOF\n"
        ),
        &[],
        204,
        "",
    );
    check(
        "/prometheus/api/v1/import/prometheus",
        &format!("t_text{{a=\"b\"}} 4 {ms}\n"),
        &[],
        204,
        "",
    );
    check(
        "/api/v1/import/prometheus",
        &format!("t_ct 5 {seconds}\n"),
        &[(
            "Content-Type",
            "application/openmetrics-text; version=1.0.0",
        )],
        204,
        "",
    );
    check(
        "/api/v1/import/prometheus",
        "ok 1\nt{a=\"1\",a=\"2\"} 1\n",
        &[],
        400,
        "line 2 column 9: duplicate label name \"a\"",
    );
    check(
        "/api/v1/import/prometheus?timestamp=soon",
        "t 1\n",
        &[],
        400,
        "invalid timestamp parameter \"soon\"",
    );

    let got = by_labels(&export_all(&single, r#"{__name__=~"t_.*"}"#));
    let want = BTreeMap::from([
        (
            labels(&[("__name__", "t_one_v"), ("db", "v1")]),
            vec![(t, 1f64.to_bits())],
        ),
        (
            labels(&[("__name__", "t_two_v")]),
            vec![(t, 2f64.to_bits())],
        ),
        (
            labels(&[("__name__", "t_om_total"), ("a", "b")]),
            vec![(t, 3f64.to_bits())],
        ),
        (
            labels(&[("__name__", "t_text"), ("a", "b")]),
            vec![(t, 4f64.to_bits())],
        ),
        (labels(&[("__name__", "t_ct")]), vec![(t, 5f64.to_bits())]),
    ]);
    assert_eq!(got, want);
}
