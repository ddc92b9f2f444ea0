//! Remote write into `strata single` from real senders: a Prometheus
//! scraping itself and a node exporter, `promtool push metrics`, and 2.0
//! requests encoded with the crate's message structs (the installed
//! Prometheus predates remote write 2.0).
//!
//! The peers come from `scripts/fetch-peers prometheus promtool-newer`. A
//! missing peer fails the test; `STRATA_SKIP_PEER_TESTS=1` skips instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use prost::Message;
use strata_e2e::{ExportedSeries, Single, encode_params, free_port, labels, now_ms, parse_export};
use strata_insert::remotewrite::proto::{self, v2};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// The path of a peer binary, or `None` (with the reason printed) when peer
/// tests are switched off; panics when the peer is missing.
fn peer(path: &str) -> Option<PathBuf> {
    if std::env::var_os("STRATA_SKIP_PEER_TESTS").is_some() {
        eprintln!("skipped: STRATA_SKIP_PEER_TESTS is set");
        return None;
    }
    let candidate = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let found = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        candidate
    };
    assert!(
        found.exists(),
        "{} is missing: run scripts/fetch-peers prometheus promtool-newer \
         (or set STRATA_SKIP_PEER_TESTS=1 to skip peer tests)",
        found.display()
    );
    Some(found)
}

/// A child process killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        sleep(Duration::from_millis(200));
    }
}

/// Sum of every series of `name` in a text exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn export(single: &Single, selector: &str) -> Vec<ExportedSeries> {
    let response = single.export(&[("match[]", selector)]);
    assert_eq!(response.status, 200, "export: {}", response.body);
    parse_export(&response.body)
}

fn same_value(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Every raw sample Prometheus holds (staleness markers aside), by series.
fn prometheus_samples(base: &str) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> {
    let response = client()
        .get(format!(
            "{base}/api/v1/query?{}",
            encode_params(&[("query", r#"{__name__=~".+"}[10m]"#)])
        ))
        .send()
        .and_then(|r| r.text())
        .expect("query Prometheus");
    let body: serde_json::Value = serde_json::from_str(&response).expect("Prometheus JSON");
    assert_eq!(body["status"], "success", "{body}");
    let mut out = BTreeMap::new();
    for series in body["data"]["result"].as_array().expect("result") {
        let labels: BTreeMap<String, String> = series["metric"]
            .as_object()
            .expect("metric")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("label").to_string()))
            .collect();
        let samples = series["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|pair| {
                let seconds = pair[0].as_f64().expect("timestamp");
                let value = pair[1].as_str().expect("value");
                let value: f64 = value.parse().expect("float value");
                ((seconds * 1000.0).round() as i64, value)
            })
            .collect();
        out.insert(labels, samples);
    }
    out
}

fn scrape_config(prometheus: &str, node: &str, strata: &str, scrape: bool) -> String {
    let scrape_configs = if scrape {
        format!(
            "scrape_configs:\n\
             \x20 - job_name: prometheus\n\
             \x20   static_configs: [{{targets: ['{prometheus}']}}]\n\
             \x20 - job_name: node\n\
             \x20   static_configs: [{{targets: ['{node}']}}]\n"
        )
    } else {
        "scrape_configs: []\n".to_string()
    };
    format!(
        "global:\n\
         \x20 scrape_interval: 1s\n\
         \x20 scrape_timeout: 1s\n\
         {scrape_configs}\
         remote_write:\n\
         \x20 - url: http://{strata}/api/v1/write\n\
         \x20   queue_config: {{batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 1s}}\n\
         \x20   metadata_config: {{send_interval: 5s}}\n"
    )
}

/// Prometheus scrapes itself and a node exporter every second and remote
/// writes to Strata; afterwards Strata holds exactly the samples Prometheus
/// holds and counted as sent.
#[test]
fn prometheus_remote_write_stores_every_sample() {
    let (Some(prometheus_bin), Some(node_bin)) = (
        peer("/usr/bin/prometheus"),
        peer("/usr/bin/prometheus-node-exporter"),
    ) else {
        return;
    };
    let version = Command::new(&prometheus_bin)
        .arg("--version")
        .output()
        .expect("prometheus --version");
    let version = String::from_utf8_lossy(&version.stdout);
    eprintln!("{}", version.lines().next().unwrap_or_default());

    let single = Single::start(BIN);
    let strata = single.base_url().trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let node_addr = free_port().to_string();
    let prometheus_addr = free_port().to_string();
    let _node = Peer(
        Command::new(&node_bin)
            .arg(format!("--web.listen-address={node_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node exporter"),
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        scrape_config(&prometheus_addr, &node_addr, &strata, true),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let _prometheus = Peer(
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prometheus_addr}"))
            .arg("--web.enable-lifecycle")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let base = format!("http://{prometheus_addr}");
    let http = client();
    wait_until("Prometheus ready", Duration::from_secs(30), || {
        http.get(format!("{base}/-/ready"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    sleep(Duration::from_secs(20));

    // Stop scraping (targets end with staleness markers), then wait until
    // the queue is drained and nothing more is sent.
    std::fs::write(
        &config,
        scrape_config(&prometheus_addr, &node_addr, &strata, false),
    )
    .expect("write config");
    let reload = http
        .post(format!("{base}/-/reload"))
        .send()
        .expect("reload");
    assert!(reload.status().is_success(), "reload: {}", reload.status());
    let reloaded = Instant::now();
    let metrics = || {
        http.get(format!("{base}/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("Prometheus metrics")
    };
    let mut last = -1.0;
    let mut stable_since = Instant::now();
    wait_until(
        "the remote write queue to drain",
        Duration::from_secs(60),
        || {
            let text = metrics();
            let sent = metric_sum(&text, "prometheus_remote_storage_samples_total");
            let pending = metric_sum(&text, "prometheus_remote_storage_samples_pending");
            if sent != last || pending != 0.0 {
                last = sent;
                stable_since = Instant::now();
            }
            reloaded.elapsed() > Duration::from_secs(5)
                && stable_since.elapsed() > Duration::from_secs(3)
        },
    );
    let text = metrics();
    let sent = metric_sum(&text, "prometheus_remote_storage_samples_total");
    let failed = metric_sum(&text, "prometheus_remote_storage_samples_failed_total");
    let retried = metric_sum(&text, "prometheus_remote_storage_samples_retried_total");
    let dropped = metric_sum(&text, "prometheus_remote_storage_samples_dropped_total");
    let held = prometheus_samples(&base);

    let exported = export(&single, r#"{__name__=~".+"}"#);
    let exported_samples: usize = exported.iter().map(|s| s.values.len()).sum();
    let stale = metric_sum(
        &single.metrics(),
        "strata_select_export_stale_markers_skipped_total",
    );
    eprintln!(
        "Prometheus sent {sent} samples (failed {failed}, retried {retried}, dropped {dropped}), \
         holds {} series; Strata exported {} series, {exported_samples} samples + {stale} \
         staleness markers",
        held.len(),
        exported.len()
    );
    assert!(sent > 1000.0, "too few samples sent: {sent}");
    assert_eq!((failed, retried, dropped), (0.0, 0.0, 0.0));
    assert_eq!(exported_samples as f64 + stale, sent);

    // Every series and every sample, bit for bit.
    let got: BTreeMap<_, Vec<(i64, f64)>> = exported
        .into_iter()
        .map(|s| (s.labels, s.timestamps.into_iter().zip(s.values).collect()))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        held.keys().collect::<Vec<_>>(),
        "series differ"
    );
    for (series, want) in &held {
        let have = &got[series];
        assert_eq!(have.len(), want.len(), "{series:?}");
        for (h, w) in have.iter().zip(want) {
            assert!(
                h.0 == w.0 && same_value(h.1, w.1),
                "{series:?}: {h:?} != {w:?}"
            );
        }
    }
}

/// `promtool push metrics` remote-writes a text exposition file.
#[test]
fn promtool_push_metrics_stores_every_value() {
    let Some(promtool) = peer(".peers/promtool-newer/usr/bin/promtool") else {
        return;
    };
    let single = Single::start(BIN);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("metrics.prom");
    std::fs::write(
        &file,
        "# HELP e2e_push_requests_total Requests.\n\
         # TYPE e2e_push_requests_total counter\n\
         e2e_push_requests_total{path=\"/a\"} 1\n\
         e2e_push_requests_total{path=\"/b b\"} 2.5\n\
         # TYPE e2e_push_temperature gauge\n\
         e2e_push_temperature -3.25e-10\n\
         e2e_push_temperature_max +Inf\n\
         # TYPE e2e_push_latency_seconds histogram\n\
         e2e_push_latency_seconds_bucket{le=\"0.1\"} 3\n\
         e2e_push_latency_seconds_bucket{le=\"+Inf\"} 4\n\
         e2e_push_latency_seconds_sum 0.75\n\
         e2e_push_latency_seconds_count 4\n",
    )
    .expect("write metrics file");
    let before = now_ms();
    let output = Command::new(&promtool)
        .args(["push", "metrics", "--label=job=promtool"])
        .arg(format!("{}/api/v1/write", single.base_url()))
        .arg(&file)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let got: BTreeMap<_, _> = export(&single, r#"{job="promtool"}"#)
        .into_iter()
        .map(|s| {
            assert_eq!(s.values.len(), 1, "{s:?}");
            assert!(s.timestamps[0] >= before - 1000, "{s:?}");
            (s.labels, s.values[0])
        })
        .collect();
    let job = ("job", "promtool");
    let want = [
        (
            labels(&[("__name__", "e2e_push_requests_total"), ("path", "/a"), job]),
            1.0,
        ),
        (
            labels(&[
                ("__name__", "e2e_push_requests_total"),
                ("path", "/b b"),
                job,
            ]),
            2.5,
        ),
        (
            labels(&[("__name__", "e2e_push_temperature"), job]),
            -3.25e-10,
        ),
        (
            labels(&[("__name__", "e2e_push_temperature_max"), job]),
            f64::INFINITY,
        ),
        (
            labels(&[
                ("__name__", "e2e_push_latency_seconds_bucket"),
                ("le", "0.1"),
                job,
            ]),
            3.0,
        ),
        (
            labels(&[
                ("__name__", "e2e_push_latency_seconds_bucket"),
                ("le", "+Inf"),
                job,
            ]),
            4.0,
        ),
        (
            labels(&[("__name__", "e2e_push_latency_seconds_sum"), job]),
            0.75,
        ),
        (
            labels(&[("__name__", "e2e_push_latency_seconds_count"), job]),
            4.0,
        ),
    ];
    assert_eq!(got, want.into_iter().collect::<BTreeMap<_, _>>());
}

fn snappy(body: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(body)
        .expect("snappy")
}

const V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

fn written(response: &strata_e2e::Response) -> (String, String, String) {
    let h = |name| response.header(name).unwrap_or("missing").to_string();
    (
        h("x-prometheus-remote-write-samples-written"),
        h("x-prometheus-remote-write-histograms-written"),
        h("x-prometheus-remote-write-exemplars-written"),
    )
}

/// Remote write 2.0 requests encoded with the crate's structs, and the
/// status codes of both versions.
#[test]
fn remote_write_v2_and_status_codes() {
    let single = Single::start_with_args(BIN, &["--insert.max-body-bytes=1000000"]);
    let t = now_ms() - 60_000;
    let symbols = ["", "__name__", "e2e_rw2", "job", "a", "b", "help", "h"];
    let request = |timeseries: Vec<v2::TimeSeries>| v2::Request {
        symbols: symbols.map(String::from).to_vec(),
        timeseries,
    };
    let sample = |timestamp, value| proto::Sample { value, timestamp };
    let floats = v2::TimeSeries {
        labels_refs: vec![1, 2, 3, 4],
        samples: vec![
            sample(t, 1.5),
            sample(t + 1000, -0.0),
            sample(t + 2000, 7e100),
        ],
        exemplars: vec![v2::Exemplar {
            labels_refs: vec![6, 7],
            value: 1.0,
            timestamp: t,
        }],
        metadata: Some(v2::Metadata {
            r#type: proto::MetricType::Gauge as i32,
            help_ref: 6,
            unit_ref: 0,
        }),
        ..Default::default()
    };
    let post =
        |path: &str, body: Vec<u8>, headers: &[(&str, &str)]| single.post(path, body, headers);

    let ok = post(
        "/api/v1/write",
        snappy(&request(vec![floats.clone()]).encode_to_vec()),
        &[("Content-Type", V2), ("Content-Encoding", "snappy")],
    );
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert_eq!(written(&ok), ("3".into(), "0".into(), "0".into()));

    // A histogram: the float series is stored, the histogram rejected.
    let histogram = v2::TimeSeries {
        labels_refs: vec![1, 2, 3, 5],
        histograms: vec![proto::Histogram {
            count: Some(proto::histogram::Count::CountInt(1)),
            timestamp: t,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut second = floats.clone();
    second.samples = vec![sample(t + 3000, 2.0)];
    let partial = post(
        "/prometheus/api/v1/write",
        zstd::encode_all(&request(vec![second, histogram]).encode_to_vec()[..], 1).expect("zstd"),
        &[("Content-Type", V2), ("Content-Encoding", "zstd")],
    );
    assert_eq!(partial.status, 400, "{}", partial.body);
    assert_eq!(written(&partial), ("1".into(), "0".into(), "0".into()));
    assert!(
        partial.body.contains("stored 1 of 2 samples")
            && partial
                .body
                .contains(r#"e2e_rw2{job="b"}: native histogram samples are not supported"#),
        "{}",
        partial.body
    );

    let got = export(&single, "e2e_rw2");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].labels,
        labels(&[("__name__", "e2e_rw2"), ("job", "a")])
    );
    assert_eq!(got[0].timestamps, vec![t, t + 1000, t + 2000, t + 3000]);
    // proto3 leaves out a double equal to 0.0, -0.0 included: it arrives as
    // 0.0 (the same from any sender).
    let want = [1.5, 0.0, 7e100, 2.0];
    assert!(
        got[0]
            .values
            .iter()
            .zip(want)
            .all(|(a, b)| same_value(*a, b)),
        "{:?}",
        got[0].values
    );

    // A bad symbol reference rejects the request and names it.
    let mut bad = floats.clone();
    bad.labels_refs = vec![1, 2, 3, 17];
    let rejected = post(
        "/api/v1/write",
        snappy(&request(vec![floats.clone(), bad]).encode_to_vec()),
        &[("Content-Type", V2), ("Content-Encoding", "snappy")],
    );
    assert_eq!(rejected.status, 400);
    assert_eq!(
        rejected.body.trim(),
        "timeseries[1]: label ref 17 out of range of 8 symbols"
    );
    assert_eq!(written(&rejected), ("0".into(), "0".into(), "0".into()));

    // 1.0 without Content-Encoding (snappy by the specification).
    let v1 = proto::WriteRequest {
        timeseries: vec![proto::TimeSeries {
            labels: vec![proto::Label {
                name: "__name__".into(),
                value: "e2e_rw1".into(),
            }],
            samples: vec![sample(t, 42.0)],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let ok = post("/api/v1/write", snappy(&v1.encode_to_vec()), &[]);
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert!(
        ok.header("x-prometheus-remote-write-samples-written")
            .is_none()
    );
    assert_eq!(export(&single, "e2e_rw1")[0].values, vec![42.0]);

    let check = |body: Vec<u8>, headers: &[(&str, &str)], status: u16, message: &str| {
        let response = post("/api/v1/write", body, headers);
        assert_eq!(response.status, status, "{headers:?}: {}", response.body);
        assert!(response.body.contains(message), "{}", response.body);
    };
    let body = snappy(&v1.encode_to_vec());
    check(
        body.clone(),
        &[(
            "Content-Type",
            "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        )],
        415,
        "unsupported content type",
    );
    check(
        body.clone(),
        &[("Content-Type", "application/json")],
        415,
        "unsupported content type",
    );
    check(
        body.clone(),
        &[("Content-Encoding", "br")],
        415,
        "unsupported content-encoding",
    );
    check(
        b"\xff\xff\xff\xff\x0f\x00".to_vec(),
        &[("Content-Encoding", "snappy")],
        413,
        "exceeds the limit of 1000000 bytes after decompression",
    );
    check(
        b"\x0a\x00garbage".to_vec(),
        &[],
        400,
        "cannot decompress snappy request body",
    );
    check(
        snappy(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        &[],
        400,
        "cannot decode remote write request: ",
    );
}
