//! Cluster ingestion: writing validated rows to the storage nodes that own
//! them, with replication and hinted hand-off.
//!
//! [`ClusterSink`] is the [`crate::RowSink`] of `strata insert`. For each
//! batch it places every series on its owners (rendezvous hashing of the
//! tenant and labels over the topology's active nodes,
//! `strata_storage::cluster::placement`), groups the rows by owner node and
//! writes to every owner at once, each call bounded by
//! `--rpc.write-timeout`.
//!
//! # Ack rule
//!
//! A batch succeeds when, for every series, at least
//! `--insert.min-replicas-acked` owners (at most the number of owners) took
//! it on the node, and each other owner either took it too or has it
//! durably queued for hand-off (fsynced on insert's disk). A replica whose
//! queue is full (`--handoff.max-bytes`) does not fail the batch: its rows
//! are dropped for that node and counted
//! (`strata_insert_handoff_dropped_rows_total{reason="queue_full"}`), since
//! enough replicas have them. Otherwise the batch fails:
//! - 503 (retryable, `SinkError::Unavailable`) when a replica was
//!   unreachable, timed out, read-only, or its queue could not be written;
//!   the message names the nodes and why;
//! - 400 (`SinkError::Refused`) when a node refused the rows as invalid;
//! - 500 (`SinkError::Failed`) for a protocol mismatch with a node.
//!
//! A failed batch is not rolled back: rows a node took or a queue holds
//! stay, and are written again when the client retries. Storage collapses
//! exact duplicates (same series, timestamp and value), so a retry costs
//! only the repeated work. When some series has fewer owners that are not
//! known down than the rule needs, the batch fails at once without writing
//! or queueing anything.
//!
//! # Node health
//!
//! A node whose write fails with a transient error
//! (`NodeError::is_transient`) is marked down: later batches queue its
//! rows without trying it, so that no client waits on a dead node beyond
//! one timeout. A background task per node asks a down node for its
//! `status()` every `--rpc.health-check-interval`; once it answers and is
//! not read-only it is up again and its queue is replayed in order, records
//! leaving the queue only after the node acked them (see [`handoff`]).
//! Queued rows a node refuses as invalid on replay are dropped and counted
//! (`reason="refused"`) rather than holding up everything behind them.
//!
//! # Topology changes
//!
//! Placement follows the newest topology from the watch: new nodes get a
//! client, `draining` and `removed` nodes take no new series. The queue of
//! a node that is no longer `active` is not replayed to it: its records are
//! written to the series' current owners instead (the node's own series
//! move to those owners anyway), then the queue is deleted once empty and
//! the node is `removed` or gone from the topology.

pub mod handoff;
pub mod metrics;
mod sink;

use std::path::PathBuf;
use std::time::Duration;

use strata_storage::config::parse_duration;

pub use handoff::{Appended, Backlog, Handoff, HandoffError, Queue};
pub use metrics::ClusterMetrics;
pub use sink::{ClusterError, ClusterSink, Connect};

/// Default for [`ClusterConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`ClusterConfig::health_check_interval`].
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Default for [`ClusterConfig::handoff_max_bytes`]: 1 GiB.
pub const DEFAULT_HANDOFF_MAX_BYTES: u64 = 1 << 30;

/// How insert replicates to storage nodes. Every field states its default.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[group(id = "cluster")]
pub struct ClusterConfig {
    /// Distinct storage nodes each series is written to (fewer when fewer
    /// nodes are active). Must be at least 1. Default: 1.
    #[arg(
        long = "replication-factor",
        env = "STRATA_REPLICATION_FACTOR",
        default_value_t = 1,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub replication_factor: usize,

    /// Replicas that must take a series on the node (the others durably
    /// queued for hand-off) before a write is acknowledged; at most the
    /// replication factor. Must be at least 1. Default: 1.
    #[arg(
        long = "insert.min-replicas-acked",
        env = "STRATA_INSERT_MIN_REPLICAS_ACKED",
        default_value_t = 1,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub min_replicas_acked: usize,

    /// Deadline of one write call to a storage node. A node that does not
    /// answer by then is marked down and its rows are queued for hand-off.
    /// Default: 5s.
    #[arg(
        long = "rpc.write-timeout",
        env = "STRATA_RPC_WRITE_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration
    )]
    #[serde(with = "strata_storage::config::humantime_serde_compat")]
    pub write_timeout: Duration,

    /// How often a storage node marked down is asked whether it is back.
    /// Default: 1s.
    #[arg(
        long = "rpc.health-check-interval",
        env = "STRATA_RPC_HEALTH_CHECK_INTERVAL",
        default_value = "1s",
        value_parser = parse_duration
    )]
    #[serde(with = "strata_storage::config::humantime_serde_compat")]
    pub health_check_interval: Duration,

    /// Directory of the hand-off queues (rows for replicas that did not
    /// take them, replayed when they are back). Default: `./strata-handoff`.
    #[arg(
        long = "handoff.dir",
        env = "STRATA_HANDOFF_DIR",
        default_value = "./strata-handoff"
    )]
    pub handoff_dir: PathBuf,

    /// Most bytes queued on disk per storage node; rows beyond it are
    /// dropped for that node and counted (`reason="queue_full"`). Must be
    /// greater than 0. Default: 1073741824 (1 GiB).
    #[arg(
        long = "handoff.max-bytes",
        env = "STRATA_HANDOFF_MAX_BYTES",
        default_value_t = DEFAULT_HANDOFF_MAX_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub handoff_max_bytes: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replication_factor: 1,
            min_replicas_acked: 1,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
            handoff_dir: PathBuf::from("./strata-handoff"),
            handoff_max_bytes: DEFAULT_HANDOFF_MAX_BYTES,
        }
    }
}
