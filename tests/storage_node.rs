//! `strata storage` as a real process, called over the storage RPC with
//! the same client insert and select use.

use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use strata_e2e::{StorageNode, now_ms};
use strata_storage::cluster::{Node, NodeError, SeriesQuery};
use strata_storage::rpc::{ClientConfig, ClientMetrics, RpcClient};
use strata_storage::{Label, MatchOp, Matcher, Sample, SeriesSamples, Tenant, TimeRange};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const TENANT: Tenant = Tenant {
    account_id: 7,
    project_id: 1,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn within(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn rows(t: i64) -> Vec<SeriesSamples> {
    (0..50)
        .map(|i| SeriesSamples {
            labels: vec![
                Label::new("__name__", "node_load1"),
                Label::new("instance", format!("host-{i}:9100")),
            ],
            samples: (0..10)
                .map(|k| Sample::new(t + k * 15_000, f64::from(i) + k as f64 / 10.0))
                .collect(),
        })
        .collect()
}

fn everything() -> SeriesQuery {
    SeriesQuery {
        tenant: TENANT,
        matchers: vec![Matcher::new(MatchOp::RegexMatch, "__name__", ".+").expect("regex")],
        range: TimeRange::ALL,
        limit: 0,
    }
}

async fn samples(client: &RpcClient) -> Result<usize, NodeError> {
    let mut rx = client.search(everything(), within(10_000)).await?;
    let mut n = 0;
    while let Some(batch) = rx.recv().await {
        n += batch?.iter().map(|s| s.timestamps.len()).sum::<usize>();
    }
    Ok(n)
}

/// Calls `status` until it succeeds; every failure on the way must be transient.
async fn until_up(client: &RpcClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.status(within(1000)).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline && e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("node did not come back: {e}"),
        }
    }
}

#[test]
fn storage_node_serves_rpc_and_survives_kill_stop_and_restart() {
    let mut node = StorageNode::start(BIN);
    let rt = runtime();
    let mut registry = Registry::default();
    let client = RpcClient::new(
        node.rpc_addr(),
        &ClientConfig::default(),
        ClientMetrics::register(&mut registry),
    );
    let t = now_ms() - 600_000;
    rt.block_on(async {
        let outcome = client
            .write(TENANT, rows(t), within(10_000))
            .await
            .expect("write");
        assert_eq!((outcome.accepted, outcome.rejected), (500, 0));
        assert_eq!(samples(&client).await.expect("search"), 500);
        let status = client.status(within(5000)).await.expect("status");
        assert_eq!(status.series, 50);
        assert!(
            !status.read_only && status.free_disk_bytes > 0,
            "{status:?}"
        );
        assert_eq!(
            client
                .tenants(TimeRange::ALL, within(5000))
                .await
                .expect("tenants"),
            vec![TENANT]
        );
    });
    let metrics = node.metrics();
    for want in [
        r#"strata_rpc_server_calls_total{method="write",outcome="ok"} 1"#,
        r#"strata_rpc_server_calls_total{method="search",outcome="ok"} 1"#,
        "strata_rpc_server_connections 1",
        "strata_storage_read_only 0",
        "strata_storage_rows_added_total",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }

    // Killed: calls fail at once, acknowledged writes survive, and the
    // client finds the node again on the same port.
    node.kill9();
    rt.block_on(async {
        for _ in 0..3 {
            let started = Instant::now();
            let err = client.status(within(5000)).await.expect_err("node is down");
            assert!(matches!(err, NodeError::Unavailable { .. }), "{err}");
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?}",
                started.elapsed()
            );
        }
    });
    node.restart();
    rt.block_on(async {
        until_up(&client).await;
        assert_eq!(samples(&client).await.expect("search after restart"), 500);
    });

    // Hung (SIGSTOP): the kernel still accepts, nothing answers; every
    // call ends at its deadline.
    node.signal("STOP");
    rt.block_on(async {
        for _ in 0..3 {
            let started = Instant::now();
            let err = client.status(within(300)).await.expect_err("node is hung");
            assert!(matches!(err, NodeError::DeadlineExceeded { .. }), "{err}");
            let took = started.elapsed();
            assert!(took < Duration::from_millis(900), "{took:?}");
        }
    });
    node.signal("CONT");
    rt.block_on(until_up(&client));

    let asked = Instant::now();
    node.signal("TERM");
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let log = node.log();
    for want in [
        "RPC server stopped",
        "HTTP server stopped",
        "Storage closed",
        "Strata storage stopped",
    ] {
        assert!(log.contains(want), "log lacks {want:?}:\n{log}");
    }
    let client_metrics = {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        out
    };
    let addr = node.rpc_addr();
    for want in [
        format!(r#"strata_rpc_client_errors_total{{node="{addr}",reason="unavailable"}}"#),
        format!(r#"strata_rpc_client_errors_total{{node="{addr}",reason="deadline"}}"#),
        format!(
            r#"strata_rpc_client_call_duration_seconds_count{{node="{addr}",method="write"}} 1"#
        ),
    ] {
        assert!(
            client_metrics.contains(&want),
            "missing {want} in\n{client_metrics}"
        );
    }
}

#[test]
fn low_disk_makes_the_node_read_only() {
    // A threshold above any volume's free space.
    let node = StorageNode::start_with_args(
        BIN,
        &["--storage.min-free-disk-bytes", &u64::MAX.to_string()],
    );
    assert_eq!(node.get("/ready").status, 200, "read-only is still ready");
    let rt = runtime();
    let client = RpcClient::new(
        node.rpc_addr(),
        &ClientConfig::default(),
        ClientMetrics::unregistered(),
    );
    rt.block_on(async {
        let err = client
            .write(TENANT, rows(now_ms() - 60_000), within(5000))
            .await
            .expect_err("read-only");
        assert!(matches!(err, NodeError::ReadOnly { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("below --storage.min-free-disk-bytes"),
            "{err}"
        );
        assert_eq!(samples(&client).await.expect("reads are served"), 0);
        let status = client.status(within(5000)).await.expect("status");
        assert!(
            status.read_only && status.read_only_reason.contains("free space"),
            "{status:?}"
        );
    });
    let metrics = node.metrics();
    assert!(metrics.contains("strata_storage_read_only 1"), "{metrics}");
    assert!(
        metrics.contains(r#"strata_rpc_server_calls_total{method="write",outcome="read_only"} 1"#),
        "{metrics}"
    );
}
