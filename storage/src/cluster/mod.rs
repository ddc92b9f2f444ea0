//! What the cluster roles share: the [`Node`] trait through which insert and
//! select talk to a storage node, the in-process [`LocalNode`], and the
//! [`topology`] (which nodes exist and in which state) and the
//! [`placement`] of series on nodes.
//!
//! insert and select are written against [`Node`] only, so their routing,
//! replication, hand-off and fan-out logic is tested against in-process
//! nodes, and the same code runs over the RPC client in a cluster.

pub mod free_disk;
pub mod placement;
pub mod topology;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

pub use crate::KeyedSeries;
use crate::{
    AddOutcome, Cardinality, Label, Matcher, SeriesData, SeriesIter, SeriesSamples, Storage,
    StorageError, Tenant, TimeRange,
};

pub use free_disk::FreeDisk;
pub use placement::{Placement, series_key};
pub use topology::{NodeState, Topology, TopologyError, TopologyNode};

/// A boxed, sendable future: what [`Node`] methods return so that the trait
/// can be used as `dyn Node`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Series found by a search, in batches as the node streams them. The
/// stream ends after the last batch; an `Err` item ends it early.
pub type SeriesBatches = tokio::sync::mpsc::Receiver<Result<Vec<SeriesData>, NodeError>>;

/// Series of an ordered search, in batches, ascending by key (ties, hash
/// collisions, by label set). Ends as [`SeriesBatches`] does.
pub type KeyedBatches = tokio::sync::mpsc::Receiver<Result<Vec<KeyedSeries>, NodeError>>;

/// Which series a read is about: one tenant, every matcher, a time range.
#[derive(Clone, Debug)]
pub struct SeriesQuery {
    pub tenant: Tenant,
    /// Series matching all of these; empty means every series of the tenant
    /// (only allowed for label names and values).
    pub matchers: Vec<Matcher>,
    pub range: TimeRange,
    /// Most results to return; 0: no limit.
    pub limit: usize,
}

/// What a node says about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeStatus {
    /// The node refuses writes (e.g. low on disk); reads still work.
    pub read_only: bool,
    /// Why the node is read-only; empty when it is not.
    pub read_only_reason: String,
    /// Live series on the node, all tenants.
    pub series: u64,
    /// Free bytes on the node's data volume.
    pub free_disk_bytes: u64,
    /// The node's software version.
    pub version: String,
}

/// Why a call to a node failed. `addr` names the node in every message.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node cannot be reached or the connection broke: the call may be
    /// retried, and writes go to hand-off.
    #[error("storage node {addr} is unavailable: {detail}")]
    Unavailable { addr: String, detail: String },
    /// The deadline passed before the node answered.
    #[error("storage node {addr} did not answer before the deadline")]
    DeadlineExceeded { addr: String },
    /// The node refuses writes; reads still work.
    #[error("storage node {addr} is read-only: {reason}")]
    ReadOnly { addr: String, reason: String },
    /// The node answered with an error of its own (bad matcher, corrupted
    /// data): retrying elsewhere does not help.
    #[error("storage node {addr}: {message}")]
    Remote { addr: String, message: String },
    /// The two sides do not speak the same protocol (version, bad frame).
    #[error("storage node {addr} protocol error: {detail}")]
    Protocol { addr: String, detail: String },
}

impl NodeError {
    /// Whether a write that failed this way should be queued for hand-off
    /// and replayed later (the node may take it then).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            NodeError::Unavailable { .. }
                | NodeError::DeadlineExceeded { .. }
                | NodeError::ReadOnly { .. }
        )
    }

    /// Metric label for this kind of failure.
    pub fn reason(&self) -> &'static str {
        match self {
            NodeError::Unavailable { .. } => "unavailable",
            NodeError::DeadlineExceeded { .. } => "deadline",
            NodeError::ReadOnly { .. } => "read_only",
            NodeError::Remote { .. } => "remote",
            NodeError::Protocol { .. } => "protocol",
        }
    }
}

/// One storage node as insert and select see it. Every call carries a
/// deadline; a call that cannot finish by then answers
/// [`NodeError::DeadlineExceeded`].
pub trait Node: Send + Sync + 'static {
    /// The node's address as written in the topology (for logs and metrics).
    fn addr(&self) -> &str;

    /// Stores `rows`; answers once they are durable on the node (in its
    /// write-ahead log, synced per the node's `--sync`).
    fn write(
        &self,
        tenant: Tenant,
        rows: Vec<SeriesSamples>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<AddOutcome, NodeError>>;

    /// Series matching `query` with their samples in `query.range`, stale
    /// markers included, streamed in batches. `limit` bounds the series.
    fn search(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SeriesBatches, NodeError>>;

    /// [`Node::search`] in key order (see [`KeyedBatches`]): every node
    /// answers in the same order, so select merges their streams as they
    /// come instead of gathering them.
    ///
    /// The default gathers [`Node::search`] and sorts it, holding every
    /// series at once; nodes over a storage engine stream instead.
    fn search_ordered(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<KeyedBatches, NodeError>> {
        Box::pin(async move {
            let mut batches = self.search(query, deadline).await?;
            let mut all = Vec::new();
            let mut failed = None;
            while let Some(batch) = batches.recv().await {
                match batch {
                    Ok(batch) => all.extend(batch.into_iter().map(|s| {
                        let key = crate::labels_key(&s.labels);
                        KeyedSeries::new(key, s.labels, s.timestamps, s.values)
                    })),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            all.sort_unstable_by(|a, b| {
                a.key()
                    .cmp(&b.key())
                    .then_with(|| a.labels().cmp(b.labels()))
            });
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            // Room for both: nothing waits on the reader here.
            if !all.is_empty() {
                let _ = tx.try_send(Ok(all));
            }
            if let Some(e) = failed {
                let _ = tx.try_send(Err(e));
            }
            Ok(rx)
        })
    }

    /// Label sets of series matching `query`, sorted, without samples.
    fn series(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Vec<Label>>, NodeError>>;

    /// Label names over series matching `query`, sorted.
    fn label_names(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>>;

    /// Values of label `name` over series matching `query`, sorted.
    fn label_values(
        &self,
        name: String,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>>;

    /// Cardinality of the tenant over the days of `range`, top `limit` each.
    fn cardinality(
        &self,
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Cardinality, NodeError>>;

    /// Deletes the series matching `matchers`; answers how many.
    fn delete_series(
        &self,
        tenant: Tenant,
        matchers: Vec<Matcher>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<u64, NodeError>>;

    /// Tenants with series in `range`, sorted.
    fn tenants(
        &self,
        range: TimeRange,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Tenant>, NodeError>>;

    /// Health and capacity of the node.
    fn status(&self, deadline: Instant) -> BoxFuture<'_, Result<NodeStatus, NodeError>>;
}

/// Series per batch of a local search: large enough to amortize the channel,
/// small enough to keep a slow consumer's backlog bounded.
const LOCAL_SEARCH_BATCH: usize = 256;

/// A [`Node`] over a storage engine in this process: what tests of insert
/// and select use, and what the RPC server calls into.
#[derive(Clone)]
pub struct LocalNode {
    addr: String,
    storage: Arc<Storage>,
    free_disk: Option<Arc<FreeDisk>>,
}

impl LocalNode {
    pub fn new(addr: impl Into<String>, storage: Arc<Storage>) -> LocalNode {
        LocalNode {
            addr: addr.into(),
            storage,
            free_disk: None,
        }
    }

    /// Refuses writes with [`NodeError::ReadOnly`] while `free_disk` says
    /// the data volume is too full; reads go on.
    pub fn with_free_disk(mut self, free_disk: Arc<FreeDisk>) -> LocalNode {
        self.free_disk = Some(free_disk);
        self
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    fn remote(&self, e: StorageError) -> NodeError {
        // An engine error that may pass (closed while stopping, i/o) is the
        // node being unavailable for now: insert queues and retries rather
        // than answering the client that its data is bad.
        if e.is_transient() {
            return NodeError::Unavailable {
                addr: self.addr.clone(),
                detail: e.to_string(),
            };
        }
        NodeError::Remote {
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }

    /// Streams the series of a search (in key order when `ordered`) in
    /// batches of what `next` takes from the engine's iterator.
    async fn stream_search<T: Send + 'static>(
        &self,
        query: SeriesQuery,
        deadline: Instant,
        ordered: bool,
        next: fn(&mut SeriesIter) -> Option<Result<T, String>>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Vec<T>, NodeError>>, NodeError> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let addr = self.addr.clone();
        let limit = query.limit;
        let mut iter = self
            .blocking(deadline, move |s| {
                if ordered {
                    s.search_ordered(query.tenant, &query.matchers, query.range)
                } else {
                    s.search(query.tenant, &query.matchers, query.range)
                }
            })
            .await?;
        tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(LOCAL_SEARCH_BATCH);
            let mut left = if limit == 0 { usize::MAX } else { limit };
            while left > 0 {
                let Some(series) = next(&mut iter) else {
                    break;
                };
                left -= 1;
                match series {
                    Ok(series) => batch.push(series),
                    Err(message) => {
                        let _ = tx.blocking_send(Err(NodeError::Remote { addr, message }));
                        return;
                    }
                }
                if batch.len() == LOCAL_SEARCH_BATCH {
                    let full =
                        std::mem::replace(&mut batch, Vec::with_capacity(LOCAL_SEARCH_BATCH));
                    if tx.blocking_send(Ok(full)).is_err() {
                        return; // the reader went away
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.blocking_send(Ok(batch));
            }
        });
        Ok(rx)
    }

    /// Runs blocking engine work off the async threads, bounded by `deadline`.
    async fn blocking<T: Send + 'static>(
        &self,
        deadline: Instant,
        work: impl FnOnce(&Storage) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let storage = self.storage.clone();
        let task = tokio::task::spawn_blocking(move || work(&storage));
        match tokio::time::timeout_at(deadline.into(), task).await {
            Err(_) => Err(NodeError::DeadlineExceeded {
                addr: self.addr.clone(),
            }),
            Ok(Err(join)) => Err(NodeError::Unavailable {
                addr: self.addr.clone(),
                detail: format!("engine task failed: {join}"),
            }),
            Ok(Ok(result)) => result.map_err(|e| self.remote(e)),
        }
    }
}

impl Node for LocalNode {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn write(
        &self,
        tenant: Tenant,
        rows: Vec<SeriesSamples>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<AddOutcome, NodeError>> {
        let read_only = self.free_disk.as_ref().and_then(|f| f.read_only_reason());
        Box::pin(async move {
            if let Some(reason) = read_only {
                return Err(NodeError::ReadOnly {
                    addr: self.addr.clone(),
                    reason,
                });
            }
            self.blocking(deadline, move |s| s.add(tenant, &rows)).await
        })
    }

    fn search(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SeriesBatches, NodeError>> {
        Box::pin(self.stream_search(query, deadline, false, |iter| {
            iter.next().map(|r| r.map_err(|e| e.to_string()))
        }))
    }

    fn search_ordered(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<KeyedBatches, NodeError>> {
        Box::pin(self.stream_search(query, deadline, true, |iter| {
            iter.next_keyed().map(|r| r.map_err(|e| e.to_string()))
        }))
    }

    fn series(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Vec<Label>>, NodeError>> {
        Box::pin(self.blocking(deadline, move |s| {
            s.series(query.tenant, &query.matchers, query.range, query.limit)
        }))
    }

    fn label_names(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        Box::pin(self.blocking(deadline, move |s| {
            s.label_names(query.tenant, &query.matchers, query.range, query.limit)
        }))
    }

    fn label_values(
        &self,
        name: String,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        Box::pin(self.blocking(deadline, move |s| {
            s.label_values(
                query.tenant,
                &name,
                &query.matchers,
                query.range,
                query.limit,
            )
        }))
    }

    fn cardinality(
        &self,
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Cardinality, NodeError>> {
        Box::pin(self.blocking(deadline, move |s| s.cardinality(tenant, range, limit)))
    }

    fn delete_series(
        &self,
        tenant: Tenant,
        matchers: Vec<Matcher>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<u64, NodeError>> {
        Box::pin(self.blocking(deadline, move |s| s.delete_series(tenant, &matchers)))
    }

    fn tenants(
        &self,
        range: TimeRange,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Tenant>, NodeError>> {
        Box::pin(self.blocking(deadline, move |s| s.tenants(range)))
    }

    fn status(&self, deadline: Instant) -> BoxFuture<'_, Result<NodeStatus, NodeError>> {
        let free_disk = self.free_disk.clone();
        Box::pin(self.blocking(deadline, move |s| {
            let (reason, free) = match &free_disk {
                Some(f) => (f.read_only_reason(), f.free_bytes()),
                // Nothing watches the volume: read it now.
                None => (None, free_disk::free_bytes(s.data_dir()).unwrap_or(0)),
            };
            Ok(NodeStatus {
                read_only: reason.is_some(),
                read_only_reason: reason.unwrap_or_default(),
                series: s.series_count() as u64,
                free_disk_bytes: free,
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
        }))
    }
}
