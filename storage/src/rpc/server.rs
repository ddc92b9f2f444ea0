//! [`RpcServer`]: accepts connections and serves a [`LocalNode`] on them
//! until a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::metrics::ServerMetrics;
use super::serve_conn::serve_connection;
use crate::cluster::LocalNode;
use crate::config::{humantime_serde_compat, parse_duration};

/// Limits of the RPC server. Every field states its default.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Largest frame accepted from a client (its length field, and its
    /// body once decompressed); a larger one closes the connection. Replies
    /// are bounded by the client's own limit. Default: 67108864 (64 MiB).
    #[arg(
        long = "rpc.max-frame-bytes",
        env = "STRATA_RPC_MAX_FRAME_BYTES",
        default_value_t = 64 << 20,
        value_parser = clap::value_parser!(u32).range(1024..)
    )]
    pub max_frame_bytes: u32,

    /// Calls one connection may have open at once; the client waits for a
    /// slot beyond it. Default: 64.
    #[arg(
        long = "rpc.max-in-flight-per-connection",
        env = "STRATA_RPC_MAX_IN_FLIGHT_PER_CONNECTION",
        default_value_t = 64,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_in_flight_per_connection: u16,

    /// Calls worked on at once over all connections; while all are busy no
    /// further request is read, so clients wait. 0: four per CPU core.
    /// Default: 0.
    #[arg(
        long = "rpc.max-concurrent-calls",
        env = "STRATA_RPC_MAX_CONCURRENT_CALLS",
        default_value_t = 0
    )]
    pub max_concurrent_calls: usize,

    /// Longest wait at shutdown for open calls to finish; calls still open
    /// then are cut. Default: 5s.
    #[arg(long = "rpc.shutdown-timeout", env = "STRATA_RPC_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_bytes: 64 << 20,
            max_in_flight_per_connection: 64,
            max_concurrent_calls: 0,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl ServerConfig {
    fn workers(&self) -> usize {
        match self.max_concurrent_calls {
            0 => std::thread::available_parallelism().map_or(4, |n| n.get()) * 4,
            n => n,
        }
    }
}

/// What every connection of a server shares.
pub(super) struct Shared {
    pub node: LocalNode,
    pub max_frame_bytes: u32,
    pub max_in_flight: u16,
    /// Permits to work on a call; held while working, not while waiting on
    /// the client (so a slow reader never blocks other clients).
    pub workers: Arc<Semaphore>,
    pub metrics: ServerMetrics,
}

/// A running RPC server.
pub struct RpcServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RpcServer {
    /// Serves `node` on connections accepted from `listener` (bound by the
    /// caller, so that a port conflict fails before anything starts).
    pub fn start(
        listener: TcpListener,
        node: LocalNode,
        config: &ServerConfig,
        metrics: ServerMetrics,
    ) -> RpcServer {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let shared = Arc::new(Shared {
            node,
            max_frame_bytes: config.max_frame_bytes,
            max_in_flight: config.max_in_flight_per_connection.max(1),
            workers: Arc::new(Semaphore::new(config.workers())),
            metrics,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            shared,
            stopped,
            config.shutdown_timeout,
        ));
        RpcServer { addr, stop, task }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, tells clients to go away, lets open calls finish up
    /// to the configured shutdown timeout, then cuts the rest.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "RPC server task failed.");
        }
    }

    /// Drops every connection at once, as a crash would (tests).
    pub fn abort(self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    shutdown_timeout: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "RPC connection accepted.");
                    connections.spawn(serve_connection(stream, peer, shared.clone(), stopped.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    warn!(error = %e, "Cannot accept an RPC connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let stopping = Instant::now();
    let open = connections.len();
    let drained = tokio::time::timeout(shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    let elapsed_ms = stopping.elapsed().as_millis() as u64;
    match drained {
        Ok(()) => info!(connections = open, elapsed_ms, "RPC server stopped."),
        Err(_) => {
            connections.shutdown().await;
            warn!(
                connections = open,
                elapsed_ms, "RPC calls still open after --rpc.shutdown-timeout were cut."
            );
        }
    }
}
