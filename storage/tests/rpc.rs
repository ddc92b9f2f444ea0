//! The storage-node RPC over real TCP on 127.0.0.1: every call answers as
//! the engine does in-process, and the failure modes (version mismatch,
//! oversized frames, deadlines, a killed server, a read-only node) end in
//! the right `NodeError` within bounded time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use strata_storage::cluster::{
    BoxFuture, FreeDisk, LocalNode, Node, NodeError, NodeStatus, SeriesBatches, SeriesQuery,
};
use strata_storage::rpc::wire;
use strata_storage::rpc::{
    ClientConfig, ClientMetrics, Hello, OLDEST_CLIENT_VERSION, PROTOCOL_VERSION, RpcClient,
    RpcServer, ServerConfig, ServerMetrics,
};
use strata_storage::{
    AddOutcome, Cardinality, Label, MatchOp, Matcher, Sample, SeriesData, SeriesSamples, Storage,
    Tenant, TimeRange,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T1: Tenant = Tenant {
    account_id: 1,
    project_id: 0,
};
const T2: Tenant = Tenant {
    account_id: 2,
    project_id: 5,
};

/// A storage engine served over RPC on a loopback port.
struct Served {
    server: Option<RpcServer>,
    node: LocalNode,
    registry: Registry,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(config: ServerConfig) -> Served {
        Served::start_with(config, |node| node).await
    }

    async fn start_with(config: ServerConfig, wrap: impl FnOnce(LocalNode) -> LocalNode) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(&config_for(dir.path()), &TestClock::new(NOW));
        let node = wrap(LocalNode::new("local", storage));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut registry = Registry::default();
        let metrics = ServerMetrics::register(&mut registry);
        let server = RpcServer::start(listener, node.clone(), &config, metrics);
        Served {
            server: Some(server),
            node,
            registry,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        self.server
            .as_ref()
            .expect("running")
            .local_addr()
            .to_string()
    }

    fn client(&self) -> RpcClient {
        RpcClient::new(
            self.addr(),
            &ClientConfig::default(),
            ClientMetrics::unregistered(),
        )
    }

    fn storage(&self) -> &Arc<Storage> {
        self.node.storage()
    }
}

fn config_for(dir: &std::path::Path) -> strata_storage::Config {
    config(dir)
}

fn within(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn metric_text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("encode metrics");
    out
}

fn query(tenant: Tenant, matchers: Vec<Matcher>) -> SeriesQuery {
    SeriesQuery {
        tenant,
        matchers,
        range: TimeRange::ALL,
        limit: 0,
    }
}

fn any_name() -> Vec<Matcher> {
    vec![Matcher::new(MatchOp::RegexMatch, "__name__", ".+").expect("regex")]
}

/// node_exporter-shaped rows: `hosts` instances of a few metric families,
/// `points` samples each, plus one sample too old to keep and one series
/// without labels (both rejected).
fn rows(hosts: usize, points: usize) -> Vec<SeriesSamples> {
    let mut out = Vec::new();
    for h in 0..hosts {
        for (name, modes) in [("node_cpu_seconds_total", 4), ("node_load1", 1), ("up", 1)] {
            for m in 0..modes {
                let mut labels = vec![
                    Label::new("__name__", name),
                    Label::new("instance", format!("host-{h:04}:9100")),
                    Label::new("job", "node"),
                ];
                if modes > 1 {
                    labels.push(Label::new("mode", ["idle", "user", "system", "iowait"][m]));
                }
                let samples = (0..points)
                    .map(|i| {
                        let t = NOW - 3_600_000 + i as i64 * 15_000;
                        Sample::new(t, (h * 100 + m) as f64 + i as f64 * 0.25)
                    })
                    .collect();
                out.push(SeriesSamples { labels, samples });
            }
        }
    }
    out.push(SeriesSamples {
        labels: vec![Label::new("__name__", "old")],
        samples: vec![Sample::new(NOW - 40 * DAY, 1.0)],
    });
    out.push(SeriesSamples {
        labels: vec![Label::new("empty", "")],
        samples: vec![Sample::new(NOW, 1.0)],
    });
    out
}

type Flat = Vec<(Vec<Label>, Vec<i64>, Vec<u64>)>;

async fn collect(node: &dyn Node, q: SeriesQuery) -> Result<Flat, NodeError> {
    let mut rx = node.search(q, within(10_000)).await?;
    let mut out = Vec::new();
    while let Some(batch) = rx.recv().await {
        for s in batch? {
            out.push(flat(s));
        }
    }
    out.sort();
    Ok(out)
}

/// An ordered search's series as answered (not sorted here), with keys.
async fn collect_ordered(
    node: &dyn Node,
    q: SeriesQuery,
) -> Result<Vec<(u128, (Vec<Label>, Vec<i64>, Vec<u64>))>, NodeError> {
    let mut rx = node.search_ordered(q, within(10_000)).await?;
    let mut out = Vec::new();
    while let Some(batch) = rx.recv().await {
        for s in batch? {
            out.push((s.key(), flat(s.into_series())));
        }
    }
    Ok(out)
}

/// A node that leaves [`Node::search_ordered`] to the trait's default, as
/// a node implemented before ordered searches existed does.
struct Unordered(LocalNode);

impl Node for Unordered {
    fn addr(&self) -> &str {
        self.0.addr()
    }
    fn write(
        &self,
        tenant: Tenant,
        rows: Vec<SeriesSamples>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<AddOutcome, NodeError>> {
        self.0.write(tenant, rows, deadline)
    }
    fn search(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SeriesBatches, NodeError>> {
        self.0.search(query, deadline)
    }
    fn series(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Vec<Label>>, NodeError>> {
        self.0.series(query, deadline)
    }
    fn label_names(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        self.0.label_names(query, deadline)
    }
    fn label_values(
        &self,
        name: String,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        self.0.label_values(name, query, deadline)
    }
    fn cardinality(
        &self,
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Cardinality, NodeError>> {
        self.0.cardinality(tenant, range, limit, deadline)
    }
    fn delete_series(
        &self,
        tenant: Tenant,
        matchers: Vec<Matcher>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<u64, NodeError>> {
        self.0.delete_series(tenant, matchers, deadline)
    }
    fn tenants(
        &self,
        range: TimeRange,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Tenant>, NodeError>> {
        self.0.tenants(range, deadline)
    }
    fn status(&self, deadline: Instant) -> BoxFuture<'_, Result<NodeStatus, NodeError>> {
        self.0.status(deadline)
    }
}

fn flat(s: SeriesData) -> (Vec<Label>, Vec<i64>, Vec<u64>) {
    let bits = s.values.iter().map(|v| v.to_bits()).collect();
    (s.labels, s.timestamps, bits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_answers_like_the_engine() {
    let served = Served::start(ServerConfig::default()).await;
    let remote = served.client();
    // The same calls on a second engine in-process.
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalNode::new("twin", open(&config(dir.path()), &TestClock::new(NOW)));

    let data = rows(120, 60);
    for tenant in [T1, T2] {
        let got = remote
            .write(tenant, data.clone(), within(10_000))
            .await
            .expect("remote write");
        let want = local
            .write(tenant, data.clone(), within(10_000))
            .await
            .expect("local write");
        assert_eq!(got, want);
        assert_eq!((got.accepted, got.rejected), (120 * 6 * 60, 2));
    }
    // Acknowledged means in the engine: read it there directly.
    assert_eq!(served.storage().series_count(), 2 * 120 * 6);

    let queries = [
        query(T1, any_name()),
        query(
            T2,
            vec![
                Matcher::eq("__name__", "node_cpu_seconds_total"),
                Matcher::eq("mode", "idle"),
            ],
        ),
        query(
            T1,
            vec![Matcher::new(MatchOp::RegexMatch, "instance", "host-00[0-4].*").expect("regex")],
        ),
        SeriesQuery {
            range: TimeRange::new(NOW - 1_800_000, NOW - 1_700_000),
            ..query(T1, vec![Matcher::eq("job", "node")])
        },
        SeriesQuery {
            limit: 7,
            ..query(T2, vec![Matcher::eq("__name__", "up")])
        },
        query(Tenant::new(9, 9), any_name()),
    ];
    for q in &queries {
        let got = collect(&remote, q.clone()).await.expect("remote search");
        let want = collect(&local, q.clone()).await.expect("local search");
        assert_eq!(got.len(), want.len(), "{q:?}");
        assert_eq!(got, want, "{q:?}");
        // Ordered: the same series, in the same order everywhere.
        let ordered = collect_ordered(&remote, q.clone())
            .await
            .expect("remote ordered search");
        assert_eq!(
            ordered,
            collect_ordered(&local, q.clone())
                .await
                .expect("local ordered search"),
            "{q:?}"
        );
        assert!(ordered.windows(2).all(|w| w[0].0 < w[1].0), "{q:?}");
        for (key, (labels, _, _)) in &ordered {
            assert_eq!(*key, strata_storage::labels_key(labels));
        }
        if q.limit == 0 {
            let mut sorted: Flat = ordered.iter().map(|(_, s)| s.clone()).collect();
            sorted.sort();
            assert_eq!(sorted, want, "{q:?}");
            let unordered = Unordered(local.clone());
            assert_eq!(
                collect_ordered(&unordered, q.clone())
                    .await
                    .expect("default ordered search"),
                ordered,
                "{q:?}"
            );
        } else {
            assert_eq!(ordered.len(), q.limit.min(want.len()), "{q:?}");
        }
        let d = within(5000);
        assert_eq!(
            remote.series(q.clone(), d).await.expect("series"),
            local.series(q.clone(), d).await.expect("series")
        );
        assert_eq!(
            remote.label_names(q.clone(), d).await.expect("names"),
            local.label_names(q.clone(), d).await.expect("names")
        );
        assert_eq!(
            remote
                .label_values("mode".into(), q.clone(), d)
                .await
                .expect("values"),
            local
                .label_values("mode".into(), q.clone(), d)
                .await
                .expect("values")
        );
    }
    // Label names and values of a whole tenant (no matchers).
    let d = within(5000);
    let all = query(T1, vec![]);
    assert_eq!(
        remote
            .label_values("instance".into(), all.clone(), d)
            .await
            .expect("values")
            .len(),
        120
    );
    assert_eq!(
        remote.label_names(all.clone(), d).await.expect("names"),
        local.label_names(all, d).await.expect("names")
    );
    assert_eq!(
        remote
            .cardinality(T1, TimeRange::new(NOW, NOW), 3, d)
            .await
            .expect("cardinality"),
        local
            .cardinality(T1, TimeRange::new(NOW, NOW), 3, d)
            .await
            .expect("cardinality")
    );
    assert_eq!(
        remote.tenants(TimeRange::ALL, d).await.expect("tenants"),
        vec![T1, T2]
    );
    assert_eq!(
        remote.tenants(TimeRange::ALL, d).await.expect("tenants"),
        local.tenants(TimeRange::ALL, d).await.expect("tenants")
    );
    let status = remote.status(d).await.expect("status");
    let local_status = local.status(d).await.expect("status");
    assert_eq!(
        (status.series, &status.version),
        (local_status.series, &local_status.version)
    );
    assert!(
        !status.read_only && status.free_disk_bytes > 0,
        "{status:?}"
    );

    let doomed = vec![Matcher::eq("mode", "iowait")];
    assert_eq!(
        remote
            .delete_series(T1, doomed.clone(), d)
            .await
            .expect("delete"),
        local.delete_series(T1, doomed, d).await.expect("delete")
    );
    assert_eq!(
        collect(&remote, query(T1, any_name()))
            .await
            .expect("search"),
        collect(&local, query(T1, any_name()))
            .await
            .expect("search")
    );

    // A bad regex is the query's error, reported as the node's.
    let bad = remote
        .search(query(T1, vec![Matcher::eq("__name__", "x")]), d)
        .await
        .map(|_| ());
    assert!(bad.is_ok());
    let metrics = metric_text(&served.registry);
    for want in [
        r#"strata_rpc_server_calls_total{method="write",outcome="ok"} 2"#,
        r#"strata_rpc_server_calls_total{method="search",outcome="ok"} 8"#,
        r#"strata_rpc_server_calls_total{method="delete_series",outcome="ok"} 1"#,
        "strata_rpc_server_calls_in_flight 0",
        "strata_rpc_server_connections 1",
        r#"strata_rpc_server_call_duration_seconds_count{method="status"} 1"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_bounded_cancellable_and_share_a_connection() {
    let config = ServerConfig {
        max_in_flight_per_connection: 4,
        max_concurrent_calls: 2,
        ..ServerConfig::default()
    };
    let served = Served::start(config).await;
    let client = RpcClient::new(
        served.addr(),
        &ClientConfig {
            max_connections_per_node: 1,
            ..ClientConfig::default()
        },
        ClientMetrics::unregistered(),
    );
    client
        .write(T1, rows(1500, 30), within(20_000))
        .await
        .expect("write");

    // A slow reader of a large result: the stream waits for it.
    let mut rx = client
        .search(query(T1, any_name()), within(20_000))
        .await
        .expect("search");
    let mut series = 0;
    let mut batches = 0;
    while let Some(batch) = rx.recv().await {
        series += batch.expect("batch").len();
        batches += 1;
        if batches < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(series, 1500 * 6);
    assert!(batches > 4, "{batches} batches");

    // A caller too slow for the deadline gets the error as the last item,
    // never a stream that merely ends early.
    // (The deadline leaves room for a slow debug build to find the series.)
    let deadline = within(3000);
    let mut rx = client
        .search(query(T1, any_name()), deadline)
        .await
        .expect("search");
    rx.recv().await.expect("a first batch").expect("batch");
    tokio::time::sleep_until((deadline + Duration::from_millis(200)).into()).await;
    let mut last = None;
    while let Some(item) = rx.recv().await {
        last = Some(item.map(|b| b.len()));
    }
    assert!(
        matches!(last, Some(Err(NodeError::DeadlineExceeded { .. }))),
        "{last:?}"
    );

    // A caller that stops reading cancels the stream; the connection goes on.
    let mut rx = client
        .search(query(T1, any_name()), within(20_000))
        .await
        .expect("search");
    rx.recv().await.expect("a first batch").expect("batch");
    drop(rx);

    // More calls at once than the server allows on one connection: they
    // wait for slots and all succeed.
    let calls = (0..40).map(|i| {
        let client = client.clone();
        async move {
            if i % 2 == 0 {
                client.status(within(20_000)).await.map(|_| ())
            } else {
                collect(
                    &client,
                    query(T1, vec![Matcher::eq("instance", "host-0001:9100")]),
                )
                .await
                .map(|s| assert_eq!(s.len(), 6))
            }
        }
    });
    for result in futures_join_all(calls).await {
        result.expect("call");
    }
    let metrics = metric_text(&served.registry);
    assert!(
        metrics.contains("strata_rpc_server_connections 1"),
        "{metrics}"
    );
}

/// Runs futures concurrently on the runtime and returns their results in order.
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_is_refused_naming_both_versions() {
    // A client of another version at a real server: the server answers with
    // its own hello, then closes.
    let served = Served::start(ServerConfig::default()).await;
    let mut stream = TcpStream::connect(served.addr()).await.expect("connect");
    let old = Hello {
        version: PROTOCOL_VERSION + 1,
        max_frame_bytes: 1 << 20,
        max_in_flight: 0,
    };
    stream.write_all(&old.encode()).await.expect("hello");
    let mut theirs = [0u8; 12];
    stream.read_exact(&mut theirs).await.expect("server hello");
    assert_eq!(
        Hello::decode(&theirs).expect("magic").version,
        PROTOCOL_VERSION
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(n, 0, "server closes after a version mismatch");

    // An older client is answered in its version, and served.
    let mut stream = TcpStream::connect(served.addr()).await.expect("connect");
    let old = Hello {
        version: OLDEST_CLIENT_VERSION,
        max_frame_bytes: 1 << 20,
        max_in_flight: 0,
    };
    stream.write_all(&old.encode()).await.expect("hello");
    let mut theirs = [0u8; 12];
    stream.read_exact(&mut theirs).await.expect("server hello");
    assert_eq!(
        Hello::decode(&theirs).expect("magic").version,
        OLDEST_CLIENT_VERSION
    );
    let status = wire::encode_frame(
        wire::Kind::Request(wire::Method::Status),
        1,
        &1000u32.to_be_bytes(),
        1 << 20,
    )
    .expect("frame");
    stream.write_all(&status).await.expect("request");
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        wire::read_frame(&mut stream, 1 << 20),
    )
    .await
    .expect("answered in time")
    .expect("frame")
    .expect("not closed");
    assert_eq!((reply.kind, reply.id), (wire::Kind::Reply, 1));
    let metrics = metric_text(&served.registry);
    assert!(
        metrics.contains(r#"strata_rpc_server_refused_connections_total{reason="version"} 1"#),
        "{metrics}"
    );

    // A real client at a node of another version.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut hello = [0u8; 12];
            let _ = s.read_exact(&mut hello).await;
            let newer = Hello {
                version: 7,
                max_frame_bytes: 1 << 20,
                max_in_flight: 8,
            };
            let _ = s.write_all(&newer.encode()).await;
        }
    });
    let client = RpcClient::new(
        addr,
        &ClientConfig::default(),
        ClientMetrics::unregistered(),
    );
    let err = client.status(within(5000)).await.expect_err("mismatch");
    assert!(matches!(err, NodeError::Protocol { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "protocol version mismatch: this client speaks version {PROTOCOL_VERSION}, the node speaks version 7"
        )),
        "{err}"
    );
    // Not a strata node at all (an HTTP server on the RPC port).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let client = RpcClient::new(
        addr,
        &ClientConfig::default(),
        ClientMetrics::unregistered(),
    );
    let err = client.status(within(5000)).await.expect_err("not ours");
    assert!(
        err.to_string()
            .contains("does not speak the strata RPC protocol"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused_on_both_sides() {
    let served = Served::start(ServerConfig {
        max_frame_bytes: 4096,
        ..ServerConfig::default()
    })
    .await;
    let client = served.client();
    // Many small series: the client splits the write to fit the node's frames.
    let data = rows(100, 4);
    let outcome = client
        .write(T1, data, within(10_000))
        .await
        .expect("split write");
    assert_eq!(outcome.accepted, 100 * 6 * 4);
    assert_eq!(served.storage().series_count(), 600);
    // One series larger than a frame cannot be split.
    let huge = SeriesSamples {
        labels: vec![Label::new("__name__", "huge")],
        samples: (0..5000)
            .map(|i| Sample::new(NOW - i * 1000, i as f64 * 1.1))
            .collect(),
    };
    let err = client
        .write(T1, vec![huge], within(10_000))
        .await
        .expect_err("too large");
    assert!(matches!(err, NodeError::Protocol { .. }), "{err}");
    assert!(
        err.to_string().contains("over the node's maximum frame"),
        "{err}"
    );

    // A peer that sends a frame over the limit gets an error frame naming
    // both sizes, then the connection closes.
    let mut stream = TcpStream::connect(served.addr()).await.expect("connect");
    let hello = Hello {
        version: PROTOCOL_VERSION,
        max_frame_bytes: 1 << 20,
        max_in_flight: 0,
    };
    stream.write_all(&hello.encode()).await.expect("hello");
    let mut theirs = [0u8; 12];
    stream.read_exact(&mut theirs).await.expect("server hello");
    let mut header = Vec::new();
    header.extend_from_slice(&(1u32 << 20).to_be_bytes());
    header.extend_from_slice(&[0x09, 0x00, 0, 0, 0, 42]);
    stream.write_all(&header).await.expect("header");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(
        reply[4..10],
        [0x42, 0x00, 0, 0, 0, 42],
        "an error frame for call 42"
    );
    assert_eq!(reply[10], 5, "a protocol error");
    let text = String::from_utf8_lossy(&reply[12..]);
    assert_eq!(
        text,
        "frame of 1048576 bytes exceeds the maximum of 4096 bytes"
    );

    // A reply over the client's limit is refused by the server with a reason.
    let small = RpcClient::new(
        served.addr(),
        &ClientConfig {
            max_frame_bytes: 1024,
            ..ClientConfig::default()
        },
        ClientMetrics::unregistered(),
    );
    let err = small
        .label_values("instance".into(), query(T1, vec![]), within(5000))
        .await
        .expect_err("reply too large");
    assert!(matches!(err, NodeError::Remote { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("over the client's maximum frame of 1024 bytes"),
        "{err}"
    );
    // The connection survives a refused reply.
    small
        .status(within(5000))
        .await
        .expect("status after a refused reply");
}

/// A node that accepted and then stopped answering (a hung process): it
/// says hello when `hello`, then reads and never replies.
async fn stalled_node(hello: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if hello {
                    let _ = s.read_exact(&mut buf[..12]).await;
                    let h = Hello {
                        version: PROTOCOL_VERSION,
                        max_frame_bytes: 1 << 20,
                        max_in_flight: 8,
                    };
                    let _ = s.write_all(&h.encode()).await;
                }
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_bound_calls_to_a_stalled_node() {
    let addr = stalled_node(true).await;
    let mut registry = Registry::default();
    let client = RpcClient::new(
        addr.clone(),
        &ClientConfig::default(),
        ClientMetrics::register(&mut registry),
    );
    for _ in 0..2 {
        let started = Instant::now();
        let err = client.status(within(300)).await.expect_err("no answer");
        let took = started.elapsed();
        assert!(matches!(err, NodeError::DeadlineExceeded { .. }), "{err}");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(900),
            "{took:?}"
        );
    }
    let started = Instant::now();
    let err = client
        .search(query(T1, any_name()), within(200))
        .await
        .map(|_| ())
        .expect_err("no answer");
    assert!(matches!(err, NodeError::DeadlineExceeded { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(800));
    // An expired deadline fails without sending anything.
    let err = client.status(Instant::now()).await.expect_err("expired");
    assert!(matches!(err, NodeError::DeadlineExceeded { .. }), "{err}");
    let metrics = metric_text(&registry);
    let want = format!(r#"strata_rpc_client_errors_total{{node="{addr}",reason="deadline"}} 4"#);
    assert!(metrics.contains(&want), "missing {want} in\n{metrics}");

    // No hello at all: bounded by the connect timeout when the deadline is later.
    let silent = stalled_node(false).await;
    let client = RpcClient::new(
        silent,
        &ClientConfig {
            connect_timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        },
        ClientMetrics::unregistered(),
    );
    let started = Instant::now();
    let err = client.status(within(5000)).await.expect_err("no hello");
    assert!(matches!(err, NodeError::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_abandons_calls_past_their_deadline() {
    let served = Served::start(ServerConfig::default()).await;
    let mut stream = TcpStream::connect(served.addr()).await.expect("connect");
    let hello = Hello {
        version: PROTOCOL_VERSION,
        max_frame_bytes: 1 << 20,
        max_in_flight: 0,
    };
    stream.write_all(&hello.encode()).await.expect("hello");
    let mut theirs = [0u8; 12];
    stream.read_exact(&mut theirs).await.expect("server hello");
    // status with a timeout of 0 ms: already past when read.
    let frame = [0, 0, 0, 10, 0x09, 0x00, 0, 0, 0, 3, 0, 0, 0, 0];
    stream.write_all(&frame).await.expect("request");
    let mut reply = [0u8; 12];
    stream.read_exact(&mut reply).await.expect("reply");
    assert_eq!(
        reply,
        [0, 0, 0, 8, 0x42, 0, 0, 0, 0, 3, 2, 0],
        "a deadline error for call 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_fast_and_a_new_one_on_the_port_is_used() {
    let mut served = Served::start(ServerConfig::default()).await;
    let addr = served.addr();
    let mut registry = Registry::default();
    let client = RpcClient::new(
        addr.clone(),
        &ClientConfig::default(),
        ClientMetrics::register(&mut registry),
    );
    client
        .write(T1, rows(2, 2), within(5000))
        .await
        .expect("write");
    assert!(metric_text(&registry).contains(&format!(
        r#"strata_rpc_client_connections{{node="{addr}"}} 1"#
    )));

    served.server.take().expect("running").abort();
    // The open connection breaks, then connects are refused: both at once.
    for _ in 0..3 {
        let started = Instant::now();
        let err = client
            .status(within(5000))
            .await
            .expect_err("server is gone");
        assert!(matches!(err, NodeError::Unavailable { .. }), "{err}");
        assert!(err.is_transient());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    let metrics = metric_text(&registry);
    assert!(
        metrics.contains(&format!(
            r#"strata_rpc_client_connections{{node="{addr}"}} 0"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"strata_rpc_client_errors_total{{node="{addr}",reason="unavailable"}} 3"#
        )),
        "{metrics}"
    );

    // A new server on the same port: the client finds it.
    let listener = TcpListener::bind(&addr).await.expect("rebind the port");
    let server = RpcServer::start(
        listener,
        served.node.clone(),
        &ServerConfig::default(),
        ServerMetrics::unregistered(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        match client.status(within(1000)).await {
            Ok(status) => break status,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, NodeError::Unavailable { .. }), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    assert_eq!(status.series, 12);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_open_streams_and_refuses_new_calls() {
    let mut served = Served::start(ServerConfig::default()).await;
    let client = served.client();
    client
        .write(T1, rows(1500, 20), within(20_000))
        .await
        .expect("write");
    let mut rx = client
        .search(query(T1, any_name()), within(20_000))
        .await
        .expect("search");
    let first = rx.recv().await.expect("batch").expect("batch").len();
    let server = served.server.take().expect("running");
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New calls go nowhere: the listener is closed and the open connection
    // is draining.
    let err = client.status(within(2000)).await.expect_err("stopping");
    assert!(matches!(err, NodeError::Unavailable { .. }), "{err}");
    // The open stream completes.
    let (mut series, mut batches) = (first, 1);
    while let Some(batch) = rx.recv().await {
        series += batch.expect("batch").len();
        batches += 1;
    }
    assert_eq!(series, 1500 * 6);
    // More than the credit the client granted before the stop began: the
    // server went on streaming after it.
    assert!(batches > 5, "{batches} batches");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("stops once the stream ended")
        .expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_node_refuses_writes_and_serves_reads() {
    let served = Served::start(ServerConfig::default()).await;
    served
        .client()
        .write(T1, rows(3, 2), within(5000))
        .await
        .expect("write while writable");
    let dir = served.storage().data_dir().to_path_buf();
    let mut registry = Registry::default();
    // A threshold above any volume's free space.
    let free_disk = FreeDisk::new(&dir, u64::MAX, &mut registry);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let node = served.node.clone().with_free_disk(free_disk);
    let server = RpcServer::start(
        listener,
        node,
        &ServerConfig::default(),
        ServerMetrics::unregistered(),
    );
    let client = RpcClient::new(
        server.local_addr().to_string(),
        &ClientConfig::default(),
        ClientMetrics::unregistered(),
    );

    let err = client
        .write(T1, rows(1, 1), within(5000))
        .await
        .expect_err("read-only");
    assert!(matches!(err, NodeError::ReadOnly { .. }), "{err}");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains("is read-only: free space on")
            && text.contains("below --storage.min-free-disk-bytes=18446744073709551615"),
        "{text}"
    );
    assert_eq!(
        collect(&client, query(T1, any_name()))
            .await
            .expect("reads work")
            .len(),
        18
    );
    let status = client.status(within(5000)).await.expect("status");
    assert!(status.read_only, "{status:?}");
    assert!(status.read_only_reason.contains("below"), "{status:?}");
    assert!(status.free_disk_bytes > 0);
    assert!(metric_text(&registry).contains("strata_storage_read_only 1"));
    server.shutdown().await;
}
