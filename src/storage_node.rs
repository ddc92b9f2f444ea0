//! `strata storage`: a cluster storage node. Serves the storage RPC that
//! insert and select call (`--rpc.listen`), and HTTP for health, readiness,
//! metrics and maintenance (`--listen`).
//!
//! Start order: bind both listeners (a port conflict fails at once), serve
//! `/health`, `/ready` (503) and `/metrics` while storage opens, open
//! storage, start the free-disk watch, start serving RPC, turn ready.
//!
//! Stop order, the reverse: `/ready` turns 503, wait
//! `--http.shutdown-delay`, stop the RPC server (no new connections, open
//! calls finish up to `--rpc.shutdown-timeout`), stop HTTP, stop the
//! free-disk watch, close storage (flushes and closes the log). Each step
//! logs how long it took.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::middleware;
use prometheus_client::registry::Registry;
use strata_storage::cluster::{FreeDisk, LocalNode};
use strata_storage::config::parse_duration;
use strata_storage::rpc::{RpcServer, ServerConfig, ServerMetrics};
use strata_storage::{Storage, StorageError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::http::{self, HttpMetrics, HttpServer, Phase, ProcessState, Readiness, Registries};

/// How often free disk space is checked against `--storage.min-free-disk-bytes`.
const FREE_DISK_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Flags of `strata storage` (docs/cluster.md names the ones the operator
/// relies on). Every field states its default.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "storage-node")]
pub struct Config {
    /// Address to serve HTTP on: /health, /ready, /metrics and the
    /// maintenance endpoints under /internal/. Default: 0.0.0.0:8482.
    #[arg(long = "listen", env = "STRATA_LISTEN", default_value = "0.0.0.0:8482")]
    pub listen: String,

    /// Address to serve the storage RPC on (insert and select connect
    /// here). Default: 0.0.0.0:8400.
    #[arg(
        long = "rpc.listen",
        env = "STRATA_RPC_LISTEN",
        default_value = "0.0.0.0:8400"
    )]
    pub rpc_listen: String,

    /// Below this much free space on the data volume the node turns
    /// read-only: writes are refused with a reason (insert queues them for
    /// hand-off), reads are served, /ready stays 200. Checked every 5s.
    /// 0 never turns read-only. Default: 104857600 (100 MiB).
    #[arg(
        long = "storage.min-free-disk-bytes",
        env = "STRATA_STORAGE_MIN_FREE_DISK_BYTES",
        default_value_t = 100 << 20
    )]
    pub min_free_disk_bytes: u64,

    /// Time between `/ready` turning 503 and the RPC and HTTP servers
    /// refusing new connections. 0 stops at once. Default: 0s.
    #[arg(long = "http.shutdown-delay", env = "STRATA_HTTP_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub http_shutdown_delay: Duration,

    /// Longest wait for open HTTP requests at shutdown; requests still open
    /// then are cut. Default: 3s.
    #[arg(long = "http.shutdown-timeout", env = "STRATA_HTTP_SHUTDOWN_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub http_shutdown_timeout: Duration,

    #[command(flatten)]
    pub storage: strata_storage::Config,

    #[command(flatten)]
    pub rpc: ServerConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageNodeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open storage in {dir}: {source}")]
    OpenStorage {
        dir: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("cannot close storage: {0}")]
    CloseStorage(#[source] StorageError),
    #[error("storage task failed: {0}")]
    StorageTask(#[source] tokio::task::JoinError),
    #[error("HTTP server stopped unexpectedly: {0}")]
    Serve(String),
}

async fn bind(addr: &str) -> Result<TcpListener, StorageNodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StorageNodeError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// Runs until `shutdown` completes, then stops gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StorageNodeError> {
    let started = Instant::now();
    let mut process_registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut process_registry);
    let rpc_metrics = ServerMetrics::register(&mut process_registry);
    let state = ProcessState::new(
        Readiness::default(),
        Arc::new(Registries {
            process: process_registry,
            storage: OnceLock::new(),
        }),
        "storage is starting\n",
    );

    let http_listener = bind(&config.listen).await?;
    let rpc_listener = bind(&config.rpc_listen).await?;
    let http_addr = local_addr(&http_listener, &config.listen);
    let rpc_addr = local_addr(&rpc_listener, &config.rpc_listen);
    let mut http_server = HttpServer::start(
        http_listener,
        http::process_router(state.clone(), http_metrics),
    );
    tracing::info!(addr = %http_addr, "Serving HTTP.");

    tokio::pin!(shutdown);
    let dir = config.storage.data_dir.clone();
    tracing::info!(data_dir = %dir.display(), "Opening storage.");
    let opening = Instant::now();
    let storage_config = config.storage.clone();
    let min_free = config.min_free_disk_bytes;
    let mut open = tokio::task::spawn_blocking(move || {
        let mut registry = Registry::default();
        let opened = Storage::open(storage_config, &mut registry).map(|storage| {
            // The free-disk metrics live with the storage ones.
            let free_disk = FreeDisk::new(storage.data_dir(), min_free, &mut registry);
            (storage, free_disk)
        });
        (opened, registry)
    });
    let opened = tokio::select! {
        opened = &mut open => opened,
        () = &mut shutdown => {
            tracing::info!("Stop requested while storage opens; waiting for it to open, then closing it.");
            state.readiness.set(Phase::Stopping);
            stop_http(&mut http_server, &config).await;
            return match open.await {
                Ok((Ok((storage, _)), _)) => close_storage(storage).await,
                Ok((Err(source), _)) => Err(StorageNodeError::OpenStorage { dir, source }),
                Err(e) => Err(StorageNodeError::StorageTask(e)),
            };
        }
    };
    let (storage, free_disk) = match opened {
        Ok((Ok(opened), registry)) => {
            let _ = state.registries.storage.set(registry);
            opened
        }
        Ok((Err(source), _)) => {
            stop_http(&mut http_server, &config).await;
            return Err(StorageNodeError::OpenStorage { dir, source });
        }
        Err(e) => {
            stop_http(&mut http_server, &config).await;
            return Err(StorageNodeError::StorageTask(e));
        }
    };
    tracing::info!(
        elapsed_ms = opening.elapsed().as_millis() as u64,
        "Storage opened."
    );

    let (stop_watch, watch_stopped) = oneshot::channel::<()>();
    let watch = tokio::spawn(
        free_disk
            .clone()
            .watch(FREE_DISK_CHECK_INTERVAL, async move {
                let _ = watch_stopped.await;
            }),
    );
    let node = LocalNode::new(rpc_addr.clone(), storage.clone()).with_free_disk(free_disk);
    let rpc = RpcServer::start(rpc_listener, node, &config.rpc, rpc_metrics);
    tracing::info!(addr = %rpc_addr, "Serving the storage RPC.");
    let admin =
        http::admin_router(storage.clone()).route_layer(middleware::from_fn(http::tag_route));
    let _ = state.routes.set(admin);
    state.readiness.set(Phase::Ready);
    tracing::info!(
        http = %http_addr,
        rpc = %rpc_addr,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Strata storage is ready."
    );

    let failure = tokio::select! {
        () = &mut shutdown => None,
        result = &mut http_server.task => Some(match result {
            Ok(Ok(())) => "server ended".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        }),
    };
    let stopping = Instant::now();
    state.readiness.set(Phase::Stopping);
    if !config.http_shutdown_delay.is_zero() {
        tracing::info!(
            delay_ms = config.http_shutdown_delay.as_millis() as u64,
            "Not ready; waiting before closing the listeners."
        );
        tokio::time::sleep(config.http_shutdown_delay).await;
    }
    rpc.shutdown().await;
    if failure.is_none() {
        http_server
            .stop(Duration::ZERO, config.http_shutdown_timeout)
            .await;
    }
    let _ = stop_watch.send(());
    let _ = watch.await;
    close_storage(storage).await?;
    tracing::info!(
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "Strata storage stopped."
    );
    match failure {
        None => Ok(()),
        Some(why) => Err(StorageNodeError::Serve(why)),
    }
}

async fn stop_http(server: &mut HttpServer, config: &Config) {
    server
        .stop(config.http_shutdown_delay, config.http_shutdown_timeout)
        .await;
}

fn local_addr(listener: &TcpListener, configured: &str) -> String {
    listener
        .local_addr()
        .map_or_else(|_| configured.to_string(), |a| a.to_string())
}

async fn close_storage(storage: Arc<Storage>) -> Result<(), StorageNodeError> {
    let closing = Instant::now();
    let closed = tokio::task::spawn_blocking(move || storage.close()).await;
    let elapsed_ms = closing.elapsed().as_millis() as u64;
    match closed {
        Ok(Ok(())) => {
            tracing::info!(elapsed_ms, "Storage closed.");
            Ok(())
        }
        Ok(Err(e)) => Err(StorageNodeError::CloseStorage(e)),
        Err(e) => Err(StorageNodeError::StorageTask(e)),
    }
}
