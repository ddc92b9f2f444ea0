//! The cluster as real processes (3 × `strata storage`, `strata insert`,
//! `strata select`, replication factor 2), each scenario one body run
//! against `strata single` and against the cluster (`strata_e2e::Target`).
//! On `single` the storage-node faults are no-ops: the body then checks
//! that the same load and the same checks hold without them.
//!
//! Acknowledged samples are known exactly: the load generator shows every
//! accepted body to `Acked`, and exports are compared with it sample by
//! sample (present, once, same value).

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use strata_e2e::acked::{Acked, Labels, export_differences};
use strata_e2e::loadgen::fleet::FleetShape;
use strata_e2e::loadgen::stats::Report;
use strata_e2e::loadgen::{self, Config};
use strata_e2e::{Target, encode_params, now_ms};
use strata_storage::Tenant;

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const EVERYTHING: &str = r#"{__name__=~".+"}"#;

/// Runs the load generator on a thread of its own.
fn start_load(config: Config, acked: &Acked) -> thread::JoinHandle<Report> {
    let observer = acked.observer();
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime
            .block_on(loadgen::run_observed(
                &config,
                now_ms(),
                &mut |line| eprintln!("loadgen: {line}"),
                Some(observer),
            ))
            .expect("load generator")
    })
}

fn load(target: &Target, tenant: &str) -> Config {
    Config {
        url: target.write_url(tenant),
        senders: 2,
        report_every: Duration::from_secs(2),
        timeout: Duration::from_secs(30),
        ..Config::default()
    }
}

/// The export of every series of `tenant` equals what was acknowledged.
fn assert_exported_exactly_once(
    target: &Target,
    tenant: &str,
    want: &BTreeMap<Labels, Vec<(i64, f64)>>,
) {
    let query = encode_params(&[("match[]", EVERYTHING)]);
    let response = target.select(tenant, &format!("/api/v1/export?{query}"));
    assert_eq!(response.status, 200, "{}", response.body);
    let problems = export_differences(want, &response.body, 20);
    assert!(
        problems.is_empty(),
        "{}: the export differs from the {} acknowledged series:\n{}",
        target.name(),
        want.len(),
        problems.join("\n")
    );
}

/// An instant query of a range selector over every series: the raw
/// samples of the last hour, which must be every acknowledged sample once.
fn assert_queried_exactly_once(
    target: &Target,
    tenant: &str,
    want: &BTreeMap<Labels, Vec<(i64, f64)>>,
) {
    let query = encode_params(&[("query", r#"{__name__=~".+"}[1h]"#)]);
    let response = target.select(tenant, &format!("/api/v1/query?{query}"));
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        !response.body.contains("isPartial"),
        "{}: a partial answer: {}",
        target.name(),
        &response.body[..response.body.len().min(500)]
    );
    let v: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    let result = v["data"]["result"].as_array().expect("a matrix");
    let mut got: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for series in result {
        let labels: Labels = series["metric"]
            .as_object()
            .expect("metric")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
            .collect();
        let samples = series["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|pair| {
                let t = pair[0].as_f64().expect("time");
                let v = pair[1]
                    .as_str()
                    .expect("value")
                    .parse::<f64>()
                    .expect("f64");
                ((t * 1000.0).round() as i64, v)
            })
            .collect();
        assert!(
            got.insert(labels.clone(), samples).is_none(),
            "{labels:?} answered twice"
        );
    }
    assert!(
        &got == want,
        "{}: the query answers {} series, {} samples; {} series, {} samples were acknowledged",
        target.name(),
        got.len(),
        got.values().map(Vec::len).sum::<usize>(),
        want.len(),
        want.values().map(Vec::len).sum::<usize>(),
    );
}

/// Every series of `tenant` is on `replication_factor` nodes (cluster only).
fn assert_fully_replicated(target: &Target, tenant: Tenant, series: usize) {
    let Some(cluster) = target.cluster_ref() else {
        return;
    };
    let replicas = cluster.replicas(tenant);
    assert_eq!(replicas.len(), series, "series over the nodes");
    let under: Vec<_> = replicas
        .iter()
        .filter(|(_, n)| **n != cluster.replication_factor())
        .take(5)
        .collect();
    assert!(under.is_empty(), "series without 2 replicas: {under:?}");
}

fn assert_no_failed_writes(target: &Target, report: &Report) {
    assert_eq!(
        report.requests,
        report.requests_ok,
        "{}: failed writes\n{report}",
        target.name()
    );
    assert_eq!(report.samples_accepted, report.samples_sent, "{report}");
}

// ---------------------------------------------------------------------------

/// Remote write under load while a storage node dies of SIGKILL; queries
/// with the node down; the node back, its hand-off drained, RF restored.
fn storage_node_killed_during_ingest(mut target: Target) {
    const TENANT: &str = "3";
    let (hosts, points) = (6, 24);
    let config = Config {
        hosts,
        points,
        rate: 8_000,
        batch: 1_000,
        ..load(&target, TENANT)
    };
    let acked = Acked::new();
    let running = start_load(config, &acked);
    thread::sleep(Duration::from_secs(2));
    if let Some(cluster) = target.cluster_mut() {
        eprintln!("kill -9 storage node 1 ({})", cluster.storage[1].rpc_addr());
        cluster.storage[1].kill9();
    }
    let report = running.join().expect("load thread");
    eprintln!("{report}");
    assert_no_failed_writes(&target, &report);
    let series = hosts as u64 * FleetShape::series_per_host();
    assert_eq!(report.samples_accepted, series * points, "{report}");

    // With a node still down: complete answers, every sample once.
    let want = acked.samples();
    assert_eq!(want.len() as u64, series);
    assert_queried_exactly_once(&target, TENANT, &want);
    assert_exported_exactly_once(&target, TENANT, &want);

    if let Some(cluster) = target.cluster_mut() {
        assert!(
            cluster.handoff_backlog() > 0.0,
            "writes for the dead node wait in insert's hand-off queue"
        );
        cluster.storage[1].restart();
    }
    target.wait_handoff_drained(Duration::from_secs(60));
    assert_fully_replicated(&target, Tenant::new(3, 0), series as usize);
    assert_exported_exactly_once(&target, TENANT, &want);
}

#[test]
fn storage_node_killed_during_ingest_single() {
    storage_node_killed_during_ingest(Target::single(BIN));
}

#[test]
fn storage_node_killed_during_ingest_cluster() {
    storage_node_killed_during_ingest(Target::cluster(BIN));
}

// ---------------------------------------------------------------------------

/// Every storage node restarted in turn (SIGTERM, exit, start, ready) under
/// a fixed rate: no failed write, no missing sample, and the accepted rate
/// of every second at least 80% of the steady state.
fn rolling_restart_under_load(mut target: Target) {
    const TENANT: &str = "5";
    const RATE: u64 = 6_000;
    let nodes = target.storage_nodes();
    // Steady seconds before the first restart and after the last one.
    let (lead, gap) = (Duration::from_secs(4), Duration::from_secs(2));
    let duration = lead + gap * (nodes as u32 + 1) + Duration::from_secs(2 * nodes as u64 + 2);
    // One host's scrape (459 samples) per request, 13 requests a second,
    // over 8 senders: a slow answer does not hold the rest back.
    let config = Config {
        hosts: 8,
        senders: 8,
        points: 0,
        duration,
        rate: RATE,
        batch: 300,
        ..load(&target, TENANT)
    };
    let acked = Acked::new();
    let started = Instant::now();
    let running = start_load(config, &acked);
    thread::sleep(lead);
    for i in 0..nodes {
        let cluster = target.cluster_mut().expect("nodes only in a cluster");
        let stopping = Instant::now();
        let status = cluster.stop_storage(i);
        let stopped = stopping.elapsed();
        cluster.start_storage(i);
        eprintln!(
            "storage node {i}: stopped in {stopped:?} ({status}), ready {:?} after SIGTERM",
            stopping.elapsed()
        );
        assert!(status.success(), "storage node {i} exited with {status}");
        thread::sleep(gap);
    }
    assert!(
        started.elapsed() + Duration::from_secs(1) < duration,
        "the restarts took {:?}, longer than the load ({duration:?}): the check would not cover them",
        started.elapsed()
    );
    let report = running.join().expect("load thread");
    eprintln!("{report}");
    assert_no_failed_writes(&target, &report);
    // A stopping node must not hold writes: no answer waited anywhere near
    // insert's write timeout (5s).
    assert!(
        report.latency.max_ms < 2_500.0,
        "{}: a write waited {} ms",
        target.name(),
        report.latency.max_ms
    );

    // The first second ramps up and the last is cut short.
    let seconds = &report.accepted_per_second;
    assert!(seconds.len() > 4, "{seconds:?}");
    let full = &seconds[1..seconds.len() - 1];
    let mut sorted = full.to_vec();
    sorted.sort_unstable();
    let steady = sorted[sorted.len() / 2] as f64;
    let min_ratio = full
        .iter()
        .map(|&n| n as f64 / steady)
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "{}: accepted samples per second {full:?}; steady state {steady} (median); \
         minimum ratio {min_ratio:.2}",
        target.name()
    );
    assert!(
        steady >= RATE as f64 * 0.8,
        "the steady state {steady}/s is below the rate asked ({RATE}/s)"
    );
    assert!(
        min_ratio >= 0.8,
        "{}: a second at {min_ratio:.2} of the steady state: {full:?}",
        target.name()
    );

    let want = acked.samples();
    assert_exported_exactly_once(&target, TENANT, &want);
    target.wait_handoff_drained(Duration::from_secs(60));
    assert_fully_replicated(&target, Tenant::new(5, 0), want.len());
}

#[test]
fn rolling_restart_under_load_single() {
    rolling_restart_under_load(Target::single(BIN));
}

#[test]
fn rolling_restart_under_load_cluster() {
    rolling_restart_under_load(Target::cluster(BIN));
}

// ---------------------------------------------------------------------------

/// What tenant 1:0 writes is seen only by 1:0, on every read endpoint, and
/// the other way round.
fn tenants_are_isolated(target: Target) {
    // Whole seconds: the instant query below is at `t`.
    let t = (now_ms() / 1000 - 60) * 1000;
    let write = |tenant: &str, body: String| {
        let response = target.insert(tenant, "/api/v1/import/prometheus", &body);
        assert_eq!(response.status, 204, "{tenant}: {}", response.body);
    };
    write(
        "1:0",
        format!(
            "only_one{{owner=\"one_label\"}} 1 {t}\nshared_name{{owner=\"one_label\"}} 11 {t}\n"
        ),
    );
    write(
        "2:7",
        format!(
            "only_two{{owner=\"two_label\"}} 2 {t}\nshared_name{{owner=\"two_label\"}} 22 {t}\n"
        ),
    );
    let (start, end) = ((t - 60_000) / 1000, (t + 60_000) / 1000);
    let (start, end) = (start.to_string(), end.to_string());
    let endpoints: Vec<String> = vec![
        format!(
            "/api/v1/query?{}",
            encode_params(&[("query", EVERYTHING), ("time", &(t / 1000).to_string())])
        ),
        format!(
            "/api/v1/query_range?{}",
            encode_params(&[
                ("query", EVERYTHING),
                ("start", &start),
                ("end", &end),
                ("step", "15")
            ])
        ),
        format!(
            "/api/v1/series?{}",
            encode_params(&[("match[]", EVERYTHING), ("start", &start), ("end", &end)])
        ),
        format!(
            "/api/v1/labels?{}",
            encode_params(&[("start", &start), ("end", &end)])
        ),
        format!(
            "/api/v1/label/owner/values?{}",
            encode_params(&[("start", &start), ("end", &end)])
        ),
        format!(
            "/api/v1/label/__name__/values?{}",
            encode_params(&[("start", &start), ("end", &end)])
        ),
        format!(
            "/api/v1/export?{}",
            encode_params(&[("match[]", EVERYTHING)])
        ),
    ];
    // What each tenant wrote shows as a label value (`owner`) in queries,
    // series, label values of `owner` and exports, as a metric name in the
    // values of `__name__`, and as the label name `owner` in `labels`.
    let marks = |endpoint: &str, writer: usize| -> &'static str {
        let (name, value) = [("only_one", "one_label"), ("only_two", "two_label")][writer];
        if endpoint.starts_with("/api/v1/labels") {
            "owner"
        } else if endpoint.starts_with("/api/v1/label/__name__") {
            name
        } else {
            value
        }
    };
    // Tenants and the writers (0: 1:0, 1: 2:7) whose data they see.
    let cases: [(&str, &[usize]); 5] = [
        ("1:0", &[0]),
        ("1", &[0]),
        ("2:7", &[1]),
        ("2:0", &[]),
        ("0:0", &[]),
    ];
    for (tenant, sees) in cases {
        for endpoint in &endpoints {
            let response = target.select(tenant, endpoint);
            assert_eq!(
                response.status, 200,
                "{tenant} {endpoint}: {}",
                response.body
            );
            let body = &response.body;
            for writer in 0..2 {
                let mark = marks(endpoint, writer);
                let shown = body.contains(mark);
                if sees.contains(&writer) {
                    assert!(
                        shown,
                        "{}: {tenant} {endpoint} lacks {mark}: {body}",
                        target.name()
                    );
                } else if mark != "owner" || sees.is_empty() {
                    // `owner` is both writers' label name: only a tenant
                    // that sees neither must lack it.
                    assert!(
                        !shown,
                        "{}: {tenant} {endpoint} shows {mark}: {body}",
                        target.name()
                    );
                }
            }
        }
    }
    if let Target::Single(single) = &target {
        // `single`'s plain paths are tenant 0:0.
        for endpoint in &endpoints {
            let response = single.get(endpoint);
            assert_eq!(response.status, 200, "{endpoint}: {}", response.body);
            for mark in ["one_label", "two_label", "only_one", "only_two", "owner"] {
                assert!(
                    !response.body.contains(mark),
                    "{endpoint} shows {mark}: {}",
                    response.body
                );
            }
        }
    }
}

#[test]
fn tenants_are_isolated_single() {
    tenants_are_isolated(Target::single(BIN));
}

#[test]
fn tenants_are_isolated_cluster() {
    tenants_are_isolated(Target::cluster(BIN));
}

// ---------------------------------------------------------------------------

/// Writes while a storage node is stopped wait in insert's hand-off queue;
/// insert restarts with the queue full, then the node returns: the queue
/// drains and every sample is there once, on 2 nodes.
fn insert_restart_keeps_handoff_queue(mut target: Target) {
    const TENANT: &str = "4:2";
    let mut want: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    let t0 = now_ms() - 600_000;
    let mut write = |target: &Target, round: i64| {
        let mut body = String::new();
        for series in 0..60 {
            let labels: Labels = [
                ("__name__".to_string(), "handoff_probe".to_string()),
                ("series".to_string(), series.to_string()),
            ]
            .into_iter()
            .collect();
            for k in 0..5 {
                let (ts, value) = (
                    t0 + (round * 5 + k) * 10_000,
                    (series * 100 + round * 5 + k) as f64,
                );
                body.push_str(&format!(
                    "handoff_probe{{series=\"{series}\"}} {value} {ts}\n"
                ));
                want.entry(labels.clone()).or_default().push((ts, value));
            }
        }
        let response = target.insert(TENANT, "/api/v1/import/prometheus", &body);
        assert_eq!(response.status, 204, "{}", response.body);
    };

    if let Some(cluster) = target.cluster_mut() {
        cluster.stop_storage(0);
    }
    write(&target, 0);
    let queued = target.cluster_ref().map(|c| c.handoff_backlog());
    if let Some(queued) = queued {
        assert!(queued > 0.0, "no rows queued for the stopped node");
    }
    target.restart_insert();
    if let Some(cluster) = target.cluster_ref() {
        assert_eq!(
            Some(cluster.handoff_backlog()),
            queued,
            "the restarted insert reads its queue back"
        );
    }
    write(&target, 1);
    if let Some(cluster) = target.cluster_mut() {
        cluster.start_storage(0);
    }
    target.wait_handoff_drained(Duration::from_secs(60));
    assert_exported_exactly_once(&target, TENANT, &want);
    assert_fully_replicated(&target, Tenant::new(4, 2), want.len());
}

#[test]
fn insert_restart_keeps_handoff_queue_single() {
    insert_restart_keeps_handoff_queue(Target::single(BIN));
}

#[test]
fn insert_restart_keeps_handoff_queue_cluster() {
    insert_restart_keeps_handoff_queue(Target::cluster(BIN));
}
