//! PromQL against the real thing: Prometheus scrapes itself and a
//! node-exporter and remote-writes everything to `strata single`; every query
//! of `select/testdata/differential/queries.txt` then runs against both at
//! the same times (instant, and range at several steps) and the answers must
//! agree (see `strata_e2e::promapi`).
//!
//! Needs `prometheus` and `prometheus-node-exporter` (installed by
//! `scripts/fetch-peers prometheus`, which the test command runs).
//! `STRATA_DIFFERENTIAL_SECONDS` sets how long Prometheus scrapes first
//! (default 90).

use std::time::{Duration, Instant};

use strata_e2e::peers::{self, Peer};
use strata_e2e::promapi::{Answer, first_difference, parse_answer};
use strata_e2e::{Single, encode_params, now_ms};

const QUERIES: &str = include_str!("../select/testdata/differential/queries.txt");
const SCRAPE_INTERVAL_SECONDS: u64 = 2;
/// Steps of the range queries, in seconds, over the last `RANGE_SECONDS`.
const RANGE_STEPS: [u64; 3] = [5, 17, 60];
const RANGE_SECONDS: i64 = 120;
const TOLERANCE: f64 = 1e-6;

fn queries() -> Vec<&'static str> {
    QUERIES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// `{addr}` is left for `Peer` to fill in with Prometheus' own address.
fn prometheus_config(node_exporter: &Peer, strata: &Single) -> String {
    format!(
        r#"global:
  scrape_interval: {SCRAPE_INTERVAL_SECONDS}s
  scrape_timeout: {SCRAPE_INTERVAL_SECONDS}s
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ["{{addr}}"]}}]
  - job_name: node
    static_configs: [{{targets: ["{node}"]}}]
remote_write:
  - url: {strata}/api/v1/write
    queue_config:
      min_shards: 1
      max_shards: 1
      batch_send_deadline: 500ms
      max_samples_per_send: 5000
"#,
        node = node_exporter.addr(),
        strata = strata.base_url(),
    )
}

/// Seconds with millisecond precision, as the API takes them.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Waits until Prometheus has sent every sample up to `t_ms` (plus one
/// scrape interval, for scrapes that append out of timestamp order).
fn wait_until_sent(prometheus: &Peer, t_ms: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = (t_ms as f64) / 1000.0 + SCRAPE_INTERVAL_SECONDS as f64 + 0.5;
    loop {
        let (_, body) = prometheus.get("/metrics");
        let sent = body
            .lines()
            .filter(|l| {
                l.starts_with("prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        if sent >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has not sent samples up to {want} (highest sent {sent}) within a minute"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn query(base_url: &str, path: &str, params: &[(&str, &str)]) -> (Answer, String) {
    let url = format!("{base_url}{path}?{}", encode_params(params));
    let (_, body) = peers::http_get(&url);
    (parse_answer(&body), body)
}

#[test]
fn promql_answers_equal_prometheus() {
    let seconds_to_scrape: u64 = std::env::var("STRATA_DIFFERENTIAL_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let strata = Single::start(env!("CARGO_BIN_EXE_strata"));
    let node_exporter = peers::node_exporter();
    let prometheus = peers::prometheus(
        &prometheus_config(&node_exporter, &strata),
        &["--enable-feature=promql-negative-offset"],
    );
    let prom_url = prometheus.base_url();
    std::thread::sleep(Duration::from_secs(seconds_to_scrape));

    let t = now_ms() - 1_000;
    wait_until_sent(&prometheus, t);
    let queries = queries();
    assert!(
        queries.len() >= 150,
        "the corpus has {} queries",
        queries.len()
    );

    let mut mismatches = Vec::new();
    let mut compared = 0;
    let time = seconds(t);
    let start = seconds(t - RANGE_SECONDS * 1000);
    for q in &queries {
        let mut requests: Vec<(&str, Vec<(&str, String)>)> = vec![(
            "/api/v1/query",
            vec![("query", q.to_string()), ("time", time.clone())],
        )];
        for step in RANGE_STEPS {
            requests.push((
                "/api/v1/query_range",
                vec![
                    ("query", q.to_string()),
                    ("start", start.clone()),
                    ("end", time.clone()),
                    ("step", step.to_string()),
                ],
            ));
        }
        for (path, params) in &requests {
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (want, want_body) = query(&prom_url, path, &params);
            let (got, got_body) = query(&strata.base_url(), path, &params);
            compared += 1;
            if let Some(difference) = first_difference(&want, &got, TOLERANCE) {
                mismatches.push(format!(
                    "{path} {params:?}\n  difference: {difference}\n  prometheus: {}\n  strata:     {}",
                    clip(&want_body),
                    clip(&got_body)
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} answers differ from Prometheus {}:\n\n{}",
        mismatches.len(),
        prometheus_version(&prom_url),
        mismatches.join("\n\n")
    );
    eprintln!(
        "{compared} answers equal Prometheus' over {} queries",
        queries.len()
    );
    drop(prometheus);
}

fn prometheus_version(url: &str) -> String {
    let (_, body) = peers::http_get(&format!("{url}/api/v1/status/buildinfo"));
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "(unknown version)".to_string())
}

fn clip(s: &str) -> &str {
    let max = 1500;
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
