//! `strata insert`: the cluster's ingestion role. Serves every ingestion
//! protocol on `/insert/<account>[:<project>]/...` and writes the rows to
//! the storage nodes that own them (`strata_insert::cluster`), plus
//! `/health`, `/ready` and `/metrics`.
//!
//! Start order: bind the listener (a port conflict fails fast), serve
//! `/health`, `/ready` (503) and `/metrics`, read the topology, open the
//! hand-off queues and make the node clients, then route ingestion and turn
//! ready. Stop order, the reverse: `/ready` turns 503, wait
//! `--http.shutdown-delay`, stop accepting and wait for open requests up to
//! `--http.shutdown-timeout`, then stop the background work of the sink
//! (queued rows stay on disk and are replayed after the next start).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::middleware;
use prometheus_client::registry::Registry;
use strata_insert::cluster::{ClusterConfig, ClusterError, ClusterMetrics, ClusterSink, Connect};
use strata_storage::cluster::topology::TopologySource;
use strata_storage::cluster::{Node, TopologyError};
use strata_storage::config::parse_duration;
use strata_storage::rpc::{ClientConfig, ClientMetrics, RpcClient};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{self, HttpMetrics, Phase, ProcessState, Readiness, Registries};
use crate::tenant_routes::{MakeRouter, tenant_routes};

/// How often a `--topology-file` is checked for changes.
const TOPOLOGY_POLL: Duration = Duration::from_secs(1);

/// Flags of `strata insert`. Every field states its default.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "insert_node")]
pub struct Config {
    /// Address to serve HTTP on (ingestion on `/insert/<tenant>/...`,
    /// health and metrics). Default: 0.0.0.0:8480.
    #[arg(long = "listen", env = "STRATA_LISTEN", default_value = "0.0.0.0:8480")]
    pub listen: String,

    /// RPC address (`host:port`) of a storage node, every one `active`;
    /// repeat the flag or separate with commas. Excludes --topology-file.
    /// Default: none.
    #[arg(
        long = "storage-node",
        env = "STRATA_STORAGE_NODE",
        value_delimiter = ','
    )]
    pub storage_nodes: Vec<String>,

    /// YAML file listing the storage nodes and their states, re-read when
    /// it changes (see docs/cluster.md). Excludes --storage-node.
    /// Default: none.
    #[arg(long = "topology-file", env = "STRATA_TOPOLOGY_FILE")]
    pub topology_file: Option<PathBuf>,

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
    pub cluster: ClusterConfig,

    #[command(flatten)]
    pub rpc: ClientConfig,

    #[command(flatten)]
    pub insert: strata_insert::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertNodeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("start-up task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
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

/// Runs until `shutdown` completes, then stops gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), InsertNodeError> {
    let started = Instant::now();
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    let insert_metrics = strata_insert::Metrics::register(&mut registry);
    let cluster_metrics = ClusterMetrics::register(&mut registry);
    let connect = rpc_connect(&config.rpc, ClientMetrics::register(&mut registry));
    let state = ProcessState::new(
        Readiness::default(),
        Arc::new(Registries {
            process: registry,
            storage: OnceLock::new(),
        }),
        "insert is starting\n",
    );
    let source =
        TopologySource::from_flags(&config.storage_nodes, config.topology_file.as_deref())?;

    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| InsertNodeError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.listen.clone(), |a| a.to_string());
    let mut server = Server::start(listener, http::process_router(state.clone(), http_metrics));
    tracing::info!(%addr, "Serving HTTP.");

    let sink = match open_sink(&config, source, connect, cluster_metrics).await {
        Ok(sink) => sink,
        Err(e) => {
            server.stop(&config).await;
            return Err(e);
        }
    };
    let _ = state.routes.set(
        insert_routes(sink.clone(), &config.insert, insert_metrics)
            .route_layer(middleware::from_fn(http::tag_route)),
    );
    state.readiness.set(Phase::Ready);
    tracing::info!(
        %addr,
        elapsed_ms = started.elapsed().as_millis() as u64,
        topology_version = sink.topology_version(),
        "Strata insert is ready."
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
        server.stop(&config).await;
    }
    let sink_stopping = Instant::now();
    sink.stop().await;
    tracing::info!(
        elapsed_ms = sink_stopping.elapsed().as_millis() as u64,
        "Replication stopped; hand-off queues stay on disk."
    );
    tracing::info!(
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "Strata insert stopped."
    );
    match failure {
        None => Ok(()),
        Some(why) => Err(InsertNodeError::Serve(why)),
    }
}

/// Reads the topology and opens the sink (hand-off queues are read from
/// disk: off the async workers).
async fn open_sink(
    config: &Config,
    source: TopologySource,
    connect: Connect,
    metrics: ClusterMetrics,
) -> Result<Arc<ClusterSink>, InsertNodeError> {
    let topology = source.watch(TOPOLOGY_POLL)?;
    {
        let t = topology.borrow();
        tracing::info!(version = t.version, nodes = t.nodes.len(),
            active = t.active().count(), handoff_dir = %config.cluster.handoff_dir.display(),
            "Opening hand-off queues and storage node clients.");
    }
    let cluster = config.cluster.clone();
    let runtime = tokio::runtime::Handle::current();
    let sink = tokio::task::spawn_blocking(move || {
        ClusterSink::new(cluster, topology, connect, metrics, runtime)
    })
    .await
    .map_err(InsertNodeError::Task)??;
    Ok(Arc::new(sink))
}

/// Ingestion for every tenant on `/insert/<tenant>/...` behind one
/// admission gate.
fn insert_routes(
    sink: Arc<ClusterSink>,
    config: &strata_insert::Config,
    metrics: strata_insert::Metrics,
) -> Router {
    let sink = sink as Arc<dyn strata_insert::RowSink>;
    let tenant_config = config.clone();
    let make: MakeRouter = Arc::new(move |tenant| {
        strata_insert::http::routes(sink.clone(), tenant, &tenant_config, metrics.clone())
    });
    strata_insert::http::with_admission(tenant_routes("/insert", "/prometheus", make), config)
}

/// The running HTTP server and the switch that starts its graceful stop.
struct Server {
    task: JoinHandle<std::io::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    fn start(listener: TcpListener, router: Router) -> Server {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Server {
            task,
            stop: Some(stop),
        }
    }

    /// Stops accepting connections and waits for open requests, at most
    /// `--http.shutdown-timeout`.
    async fn stop(&mut self, config: &Config) {
        if !config.http_shutdown_delay.is_zero() {
            tracing::info!(
                delay_ms = config.http_shutdown_delay.as_millis() as u64,
                "Not ready; waiting before closing the HTTP listener."
            );
            tokio::time::sleep(config.http_shutdown_delay).await;
        }
        let stopping = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let elapsed_ms = || stopping.elapsed().as_millis() as u64;
        match tokio::time::timeout(config.http_shutdown_timeout, &mut self.task).await {
            Ok(Ok(Ok(()))) => tracing::info!(elapsed_ms = elapsed_ms(), "HTTP server stopped."),
            Ok(Ok(Err(e))) => {
                tracing::warn!(elapsed_ms = elapsed_ms(), error = %e, "HTTP server stopped with an error.")
            }
            Ok(Err(e)) => {
                tracing::warn!(elapsed_ms = elapsed_ms(), error = %e, "HTTP server task failed.")
            }
            Err(_) => {
                self.task.abort();
                tracing::warn!(
                    elapsed_ms = elapsed_ms(),
                    "HTTP requests still open after --http.shutdown-timeout were cut."
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::StatusCode;
    use strata_storage::cluster::{LocalNode, NodeError};
    use strata_storage::{Matcher, Storage, Tenant, TimeRange};
    use tower::ServiceExt;

    use super::*;

    async fn fetch(router: &Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_string()))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    /// The process router over two in-process storage nodes with RF 2, as
    /// `serve` assembles it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingests_per_tenant_onto_the_storage_nodes() {
        let handoff = tempfile::tempdir().expect("tempdir");
        let dirs: Vec<_> = (0..2)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let mut nodes = HashMap::new();
        for (i, dir) in dirs.iter().enumerate() {
            let storage = Storage::open(
                strata_storage::Config {
                    data_dir: dir.path().to_path_buf(),
                    ..strata_storage::Config::default()
                },
                &mut Registry::default(),
            )
            .expect("storage");
            nodes.insert(
                format!("s{i}:8400"),
                LocalNode::new(format!("s{i}:8400"), storage),
            );
        }
        let addrs: Vec<String> = nodes.keys().cloned().collect();
        let clients = nodes.clone();
        let connect: Connect = Arc::new(move |addr: &str| {
            clients
                .get(addr)
                .cloned()
                .map(|n| Arc::new(n) as Arc<dyn Node>)
                .ok_or_else(|| NodeError::Unavailable {
                    addr: addr.to_string(),
                    detail: "unknown".to_string(),
                })
        });
        let config = Config {
            listen: "127.0.0.1:0".into(),
            storage_nodes: addrs,
            topology_file: None,
            http_shutdown_delay: Duration::ZERO,
            http_shutdown_timeout: Duration::from_secs(1),
            cluster: ClusterConfig {
                replication_factor: 2,
                handoff_dir: handoff.path().to_path_buf(),
                ..ClusterConfig::default()
            },
            rpc: ClientConfig::default(),
            insert: strata_insert::Config::default(),
        };
        let mut registry = Registry::default();
        let http_metrics = HttpMetrics::register(&mut registry);
        let insert_metrics = strata_insert::Metrics::register(&mut registry);
        let cluster_metrics = ClusterMetrics::register(&mut registry);
        let state = ProcessState::new(
            Readiness::default(),
            Arc::new(Registries {
                process: registry,
                storage: OnceLock::new(),
            }),
            "insert is starting\n",
        );
        let app = http::process_router(state.clone(), http_metrics);
        let path = "/insert/5:6/prometheus/api/v1/import/prometheus";
        assert_eq!(
            fetch(&app, "POST", path, "").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        let source = TopologySource::from_flags(&config.storage_nodes, None).expect("source");
        let sink = open_sink(&config, source, connect, cluster_metrics)
            .await
            .expect("sink");
        let _ = state.routes.set(
            insert_routes(sink.clone(), &config.insert, insert_metrics)
                .route_layer(middleware::from_fn(http::tag_route)),
        );
        state.readiness.set(Phase::Ready);
        assert_eq!(fetch(&app, "GET", "/ready", "").await.0, StatusCode::OK);

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        let body = format!("up{{job=\"a\"}} 1 {now}\nup{{job=\"b\"}} 0 {now}\n");
        let (status, text) = fetch(&app, "POST", path, &body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
        for node in nodes.values() {
            let found = node
                .storage()
                .search(
                    Tenant::new(5, 6),
                    &[Matcher::eq("__name__", "up")],
                    TimeRange::ALL,
                )
                .expect("search")
                .count();
            assert_eq!(
                found,
                2,
                "RF 2 over 2 nodes: every series on {}",
                node.addr()
            );
        }
        let (status, _) = fetch(&app, "POST", "/insert/x/api/v1/import/prometheus", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a tenant must be numbers");

        let (_, metrics) = fetch(&app, "GET", "/metrics", "").await;
        for want in [
            "strata_insert_node_write_duration_seconds_count{node=\"s0:8400\"}",
            "strata_insert_node_up{node=\"s1:8400\"} 1",
            "strata_insert_handoff_backlog_rows{node=\"s0:8400\"} 0",
            "strata_insert_handoff_backlog_bytes{node=\"s1:8400\"} 0",
            "strata_insert_rows_total{protocol=\"promtext\"} 2",
        ] {
            assert!(metrics.contains(want), "missing {want} in\n{metrics}");
        }
        sink.stop().await;
    }
}
