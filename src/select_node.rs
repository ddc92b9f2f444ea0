//! `strata select`: the cluster's query role. Serves the Prometheus API of
//! every tenant on `/select/<account>[:<project>]/prometheus/api/v1/...`
//! (every endpoint `single` serves, export included) by fanning out to the
//! storage nodes of the topology (`strata_select::cluster`), plus
//! `/health`, `/ready` and `/metrics`. It keeps no state of its own.
//!
//! Start order: bind the listener (a port conflict fails fast), read the
//! topology (flags or the watched file), then serve and turn ready. Stop
//! order, the reverse: `/ready` turns 503, wait `--http.shutdown-delay`,
//! stop accepting and wait for open requests up to
//! `--http.shutdown-timeout`, then stop watching the topology.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use prometheus_client::registry::Registry;
use strata_select::cluster::{Cluster, ClusterMetrics, ClusterOptions, ClusterSource, Connect};
use strata_storage::cluster::topology::TopologySource;
use strata_storage::cluster::{Node, TopologyError};
use strata_storage::config::parse_duration;
use strata_storage::rpc::{ClientConfig, ClientMetrics, RpcClient};
use tokio::net::TcpListener;

use crate::http::{self, HttpMetrics, Phase, Readiness, Registries};
use crate::single::Server;
use crate::tenant_routes::{MakeRouter, tenant_routes};

/// How often the topology file is checked for changes.
const TOPOLOGY_POLL: Duration = Duration::from_secs(5);

/// Flags of `strata select` (docs/cluster.md fixes their names). Every
/// field states its default.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "select_node")]
pub struct Config {
    /// Address to serve HTTP on (`/select/<tenant>/prometheus/...`,
    /// health and metrics). Default: 0.0.0.0:8481.
    #[arg(long = "listen", env = "STRATA_LISTEN", default_value = "0.0.0.0:8481")]
    pub listen: String,

    /// A storage node's RPC address, `host:port`; repeat the flag (or
    /// separate with commas) for every node, all `active`. Exactly one of
    /// this and `--topology-file`. Default: none.
    #[arg(
        long = "storage-node",
        env = "STRATA_STORAGE_NODE",
        value_delimiter = ','
    )]
    pub storage_node: Vec<String>,

    /// The topology file (versioned node list with states, watched for
    /// changes; docs/cluster.md). Exactly one of this and
    /// `--storage-node`. Default: none.
    #[arg(long = "topology-file", env = "STRATA_TOPOLOGY_FILE")]
    pub topology_file: Option<PathBuf>,

    /// Distinct storage nodes holding each series, as insert writes them:
    /// a read missing fewer nodes than this is still complete. Default: 1.
    #[arg(
        long = "replication-factor",
        env = "STRATA_REPLICATION_FACTOR",
        default_value_t = 1,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub replication_factor: usize,

    /// Fail reads (503 `unavailable`, naming the missing nodes) instead of
    /// answering partial results with `isPartial`; the
    /// `deny_partial_response` request parameter overrides it per request.
    /// Default: false.
    #[arg(long = "deny-partial-response", env = "STRATA_DENY_PARTIAL_RESPONSE")]
    pub deny_partial_response: bool,

    /// Time between `/ready` turning 503 and the HTTP server refusing new
    /// connections, so that load balancers stop sending first. 0 stops at
    /// once. Default: 0s.
    #[arg(long = "http.shutdown-delay", env = "STRATA_HTTP_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub http_shutdown_delay: Duration,

    /// Longest wait for open HTTP requests at shutdown; requests still open
    /// then are cut. Default: 3s.
    #[arg(long = "http.shutdown-timeout", env = "STRATA_HTTP_SHUTDOWN_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub http_shutdown_timeout: Duration,

    #[command(flatten)]
    pub rpc: ClientConfig,

    #[command(flatten)]
    pub select: strata_select::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("HTTP server stopped unexpectedly: {0}")]
    Serve(String),
}

/// The node clients of the process: one [`RpcClient`] per storage node
/// address, sharing the per-node `strata_rpc_client_*` metrics. A client
/// connects on its first call, so an unreachable node is not an error here.
fn rpc_connect(config: &ClientConfig, metrics: ClientMetrics) -> Connect {
    let config = config.clone();
    Arc::new(move |addr: &str| {
        Ok(Arc::new(RpcClient::new(addr, &config, metrics.clone())) as Arc<dyn Node>)
    })
}

/// What the process-level handlers share.
#[derive(Clone)]
struct AppState {
    readiness: Readiness,
    registries: Arc<Registries>,
}

/// The metrics of the process, registered once.
struct ProcessMetrics {
    registries: Arc<Registries>,
    http: HttpMetrics,
    select: strata_select::Metrics,
    cluster: ClusterMetrics,
    rpc: ClientMetrics,
}

impl ProcessMetrics {
    fn register() -> ProcessMetrics {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let select = strata_select::Metrics::register(&mut registry);
        let cluster = ClusterMetrics::register(&mut registry);
        let rpc = ClientMetrics::register(&mut registry);
        ProcessMetrics {
            registries: Arc::new(Registries {
                process: registry,
                storage: std::sync::OnceLock::new(),
            }),
            http,
            select,
            cluster,
            rpc,
        }
    }
}

/// Runs until `shutdown` completes, then stops gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), SelectError> {
    let started = Instant::now();
    let metrics = ProcessMetrics::register();
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| SelectError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.listen.clone(), |a| a.to_string());

    let topology =
        TopologySource::from_flags(&config.storage_node, config.topology_file.as_deref())?
            .watch(TOPOLOGY_POLL)?;
    {
        let current = topology.borrow();
        tracing::info!(
            version = current.version,
            nodes = current.nodes.len(),
            readable = current.readable().count(),
            replication_factor = config.replication_factor,
            "Topology read."
        );
    }
    let cluster = Cluster::new(
        topology,
        rpc_connect(&config.rpc, metrics.rpc.clone()),
        ClusterOptions::new(config.replication_factor),
        metrics.cluster.clone(),
        tokio::runtime::Handle::current(),
    );
    let state = AppState {
        readiness: Readiness::default(),
        registries: metrics.registries.clone(),
    };
    let app = router(state.clone(), &config, cluster, &metrics);
    let mut server = Server::start(listener, app);
    state.readiness.set(Phase::Ready);
    tracing::info!(
        %addr,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Strata select is ready."
    );

    tokio::pin!(shutdown);
    let failure = tokio::select! {
        () = &mut shutdown => None,
        result = &mut server.task => Some(match result {
            Ok(Ok(())) => "server ended".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        }),
    };
    let stopping = Instant::now();
    state.readiness.set(Phase::Stopping);
    if failure.is_none() {
        server
            .stop_after(config.http_shutdown_delay, config.http_shutdown_timeout)
            .await;
    }
    tracing::info!(
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "Strata select stopped."
    );
    match failure {
        None => Ok(()),
        Some(why) => Err(SelectError::Serve(why)),
    }
}

/// Health, readiness, metrics, and the API of every tenant over `cluster`.
fn router(
    state: AppState,
    config: &Config,
    cluster: Arc<Cluster>,
    metrics: &ProcessMetrics,
) -> Router {
    // One set of query slots for every tenant of the process.
    let gate = strata_select::api::limits::Gate::new(&config.select);
    let (select_config, deny) = (config.select.clone(), config.deny_partial_response);
    let select_metrics = metrics.select.clone();
    let make: MakeRouter = Arc::new(move |tenant| {
        let source = ClusterSource::new(cluster.clone(), tenant);
        strata_select::api::router_with_policy(
            Arc::new(source.clone()),
            &select_config,
            select_metrics.clone(),
            gate.clone(),
            deny,
        )
        .merge(strata_select::cluster::export::router(
            source,
            select_config.timeout,
            select_metrics.clone(),
        ))
        .route_layer(middleware::from_fn(http::tag_route))
    });
    Router::new()
        .route("/health", get(http::health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_page))
        .route_layer(middleware::from_fn(http::tag_route))
        .with_state(state)
        .merge(tenant_routes("/select", "/prometheus", make))
        .layer(middleware::from_fn_with_state(
            metrics.http.clone(),
            http::count_requests,
        ))
}

async fn ready(State(state): State<AppState>) -> Response {
    http::ready_response(&state.readiness)
}

async fn metrics_page(State(state): State<AppState>) -> Response {
    http::metrics_response(&state.registries)
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::StatusCode;
    use strata_storage::cluster::{LocalNode, NodeError, Topology};
    use strata_storage::{Label, Sample, SeriesSamples, Storage, Tenant};
    use tower::ServiceExt;

    use super::*;

    async fn fetch(router: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    fn config(args: &[&str]) -> Config {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let mut argv = vec!["select"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags").config
    }

    #[test]
    fn flags_follow_the_operator_contract() {
        let c = config(&["--storage-node", "a:8400"]);
        assert_eq!(c.listen, "0.0.0.0:8481");
        assert_eq!(c.replication_factor, 1);
        assert!(!c.deny_partial_response);
        let c = config(&[
            "--storage-node",
            "a:8400",
            "--storage-node",
            "b:8400,c:8400",
            "--replication-factor",
            "2",
            "--deny-partial-response",
            "--query.timeout",
            "30s",
        ]);
        assert_eq!(c.storage_node, ["a:8400", "b:8400", "c:8400"]);
        assert_eq!(c.replication_factor, 2);
        assert!(c.deny_partial_response);
        assert_eq!(c.select.timeout, Duration::from_secs(30));
        let c = config(&["--topology-file", "/etc/strata/topology.yaml"]);
        assert_eq!(
            c.topology_file.as_deref(),
            Some(std::path::Path::new("/etc/strata/topology.yaml"))
        );
    }

    /// Three in-process nodes, each series on two of them, behind the
    /// process router.
    fn local_cluster(
        dir: &std::path::Path,
        metrics: ClusterMetrics,
    ) -> (Vec<Arc<Storage>>, Arc<Cluster>) {
        let storages: Vec<Arc<Storage>> = (0..3)
            .map(|i| {
                let config = strata_storage::Config {
                    data_dir: dir.join(format!("node-{i}")),
                    ..strata_storage::Config::default()
                };
                Storage::open(config, &mut Registry::default()).expect("open")
            })
            .collect();
        let addrs: Vec<String> = (0..3).map(|i| format!("node-{i}:8400")).collect();
        let nodes: Vec<LocalNode> = addrs
            .iter()
            .zip(&storages)
            .map(|(addr, s)| LocalNode::new(addr.clone(), s.clone()))
            .collect();
        let connect: Connect = Arc::new(move |addr: &str| {
            nodes
                .iter()
                .find(|n| n.addr() == addr)
                .map(|n| Arc::new(n.clone()) as Arc<dyn Node>)
                .ok_or_else(|| NodeError::Unavailable {
                    addr: addr.to_string(),
                    detail: "unknown".to_string(),
                })
        });
        let topology = Topology::from_addrs(&addrs).expect("topology");
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(topology));
        let cluster = Cluster::new(
            rx,
            connect,
            ClusterOptions::new(2),
            metrics,
            tokio::runtime::Handle::current(),
        );
        (storages, cluster)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenant_paths_read_the_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = ProcessMetrics::register();
        let (storages, cluster) = local_cluster(dir.path(), metrics.cluster.clone());
        let now = strata_select::api::query::now_ms();
        let row = |name: &str, v: f64| SeriesSamples {
            labels: vec![Label::new("__name__", name), Label::new("job", "x")],
            samples: vec![Sample::new(now - 10_000, v)],
        };
        for (tenant, name, nodes) in [
            (Tenant::new(1, 2), "mine", [0, 1]),
            (Tenant::new(3, 0), "theirs", [1, 2]),
        ] {
            for node in nodes {
                storages[node].add(tenant, &[row(name, 7.0)]).expect("add");
            }
        }
        let state = AppState {
            readiness: Readiness::default(),
            registries: metrics.registries.clone(),
        };
        let app = router(
            state.clone(),
            &config(&["--storage-node", "unused:1"]),
            cluster,
            &metrics,
        );
        assert_eq!(
            fetch(&app, "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.readiness.set(Phase::Ready);
        assert_eq!(fetch(&app, "/ready").await.0, StatusCode::OK);
        assert_eq!(fetch(&app, "/health").await, (StatusCode::OK, "OK".into()));

        let (status, body) = fetch(
            &app,
            "/select/1:2/prometheus/api/v1/query?query=mine%20or%20theirs",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains(r#""__name__":"mine""#) && !body.contains("theirs"),
            "{body}"
        );
        assert!(body.contains(r#""7"]"#), "{body}");
        let (status, body) = fetch(&app, "/select/3/prometheus/api/v1/label/__name__/values").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"status":"success","data":["theirs"]}"#)
        );
        let (status, body) = fetch(&app, "/select/1:2/prometheus/api/v1/export?match[]=mine").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body.lines().count(),
            1,
            "one series once, though on two nodes: {body}"
        );
        for path in [
            "/select/1:2/prometheus/api/v1/query_range?query=mine&start=0&end=1&step=1",
            "/select/1:2/prometheus/api/v1/series?match[]=mine",
            "/select/1:2/prometheus/api/v1/labels",
            "/select/1:2/prometheus/api/v1/status/tsdb",
            "/select/1:2/prometheus/api/v1/status/buildinfo",
            "/select/1:2/prometheus/api/v1/metadata",
            "/select/1:2/prometheus/api/v1/format_query?query=up",
        ] {
            let (status, body) = fetch(&app, path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }

        let (_, text) = fetch(&app, "/metrics").await;
        for want in [
            "strata_select_cluster_node_request_duration_seconds_count{node=\"node-0:8400\",call=\"search\"}",
            "strata_select_api_requests_total{endpoint=\"query\",result=\"ok\"} 1",
            "strata_http_requests_total{path=\"/api/v1/query\",status=\"200\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        for storage in storages {
            storage.close().expect("close");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_nodes_fail_reads_naming_them() {
        // Ports that were free a moment ago: connecting is refused.
        let closed: Vec<String> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .expect("bind")
                    .local_addr()
                    .expect("addr")
                    .to_string()
            })
            .collect();
        let nodes = closed.join(",");
        let config = config(&["--listen", "127.0.0.1:0", "--storage-node", &nodes]);
        // The router `run` builds, with the RPC clients.
        let metrics = ProcessMetrics::register();
        let topology = TopologySource::from_flags(&config.storage_node, None)
            .expect("flags")
            .watch(TOPOLOGY_POLL)
            .expect("watch");
        let cluster = Cluster::new(
            topology,
            rpc_connect(&config.rpc, metrics.rpc.clone()),
            ClusterOptions::new(1),
            metrics.cluster.clone(),
            tokio::runtime::Handle::current(),
        );
        let state = AppState {
            readiness: Readiness::default(),
            registries: metrics.registries.clone(),
        };
        let app = router(state, &config, cluster, &metrics);
        let (status, body) = fetch(&app, "/select/0/prometheus/api/v1/query?query=up").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains(r#""errorType":"unavailable""#), "{body}");
        for node in &closed {
            assert!(body.contains(node.as_str()), "{body}");
        }
        let (_, text) = fetch(&app, "/metrics").await;
        for node in &closed {
            let want = format!(
                "strata_rpc_client_errors_total{{node=\"{node}\",reason=\"unavailable\"}} 1"
            );
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_serves_until_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let topology = dir.path().join("topology.yaml");
        std::fs::write(
            &topology,
            "version: 1\nnodes:\n  - {addr: a:8400, state: active}\n",
        )
        .expect("write");
        // Find a free port, then let `run` bind it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let config = config(&[
            "--listen",
            &listen,
            "--topology-file",
            topology.to_str().expect("utf-8 path"),
        ]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(run(config, async move {
            let _ = stopped.await;
        }));
        let url = format!("http://{listen}/ready");
        let ready = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(r) = reqwest::blocking::get(&url)
                    && r.status() == reqwest::StatusCode::OK
                {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .expect("join");
        assert!(ready, "select never turned ready on {listen}");
        stop.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("stops in time")
            .expect("join")
            .expect("clean stop");

        let missing = config_error(&["--listen", "127.0.0.1:0"]).await;
        assert!(
            missing.contains("--storage-node or --topology-file"),
            "{missing}"
        );
    }

    async fn config_error(args: &[&str]) -> String {
        let result = run(config(args), async {}).await;
        result.expect_err("invalid flags").to_string()
    }
}
