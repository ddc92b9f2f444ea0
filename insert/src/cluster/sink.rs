//! [`ClusterSink`]: placement, replicated writes, the ack rule, node health
//! and the background work per node (probing, replay, re-routing). The
//! parent module's doc states the rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use strata_storage::cluster::{Node, NodeError, NodeState, Placement, Topology, series_key};
use strata_storage::{AddOutcome, RejectReason, SeriesRef, SeriesSamples, Tenant};
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::ClusterConfig;
use super::handoff::{Appended, Backlog, Batch, Handoff, HandoffError, Queue};
use super::metrics::ClusterMetrics;
use crate::ingest::{RowSink, SinkError};

/// Makes the client of a storage node from its topology address. A client
/// connects lazily: an unreachable node is not an error here, its calls
/// fail (and the node is marked down) instead.
pub type Connect = Arc<dyn Fn(&str) -> Result<Arc<dyn Node>, NodeError> + Send + Sync>;

/// Most bytes of queued records (compressed) read in one replay round.
const REPLAY_BATCH_BYTES: u64 = 1 << 20;
/// Most samples sent in one replay write, so that a call stays well within
/// the write timeout and the frame limits of the transport.
const REPLAY_WRITE_ROWS: usize = 100_000;
/// How long `stop` waits for the background tasks before cutting them.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--insert.min-replicas-acked={min} is greater than --replication-factor={rf}")]
    MinReplicas { min: usize, rf: usize },
    #[error("cannot open the hand-off queues: {0}")]
    Handoff(#[from] HandoffError),
    #[error("cannot make a client for storage node {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: NodeError,
    },
}

/// A node's place in the newest topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Membership {
    Active = 0,
    Draining = 1,
    /// `removed`, or no longer listed.
    Gone = 2,
}

/// A storage node insert writes to or holds a queue for.
struct NodeHandle {
    addr: String,
    client: RwLock<Option<Arc<dyn Node>>>,
    queue: Arc<Queue>,
    /// Known down: rows go to the queue without a try.
    down: AtomicBool,
    membership: AtomicU8,
    /// Wakes the node's task: it was marked down, or its membership changed.
    wake: Notify,
}

impl NodeHandle {
    fn membership(&self) -> Membership {
        match self.membership.load(Ordering::SeqCst) {
            0 => Membership::Active,
            1 => Membership::Draining,
            _ => Membership::Gone,
        }
    }

    fn client(&self) -> Option<Arc<dyn Node>> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The client when the node is not known down.
    fn client_if_up(&self) -> Option<Arc<dyn Node>> {
        if self.down.load(Ordering::SeqCst) {
            return None;
        }
        self.client()
    }

    fn mark_down(&self, metrics: &ClusterMetrics, why: &NodeError) {
        if !self.down.swap(true, Ordering::SeqCst) {
            metrics.up(&self.addr, false);
            tracing::warn!(node = %self.addr, error = %why,
                "Storage node marked down; its rows are queued for hand-off until it answers again.");
        }
    }

    fn mark_up(&self, metrics: &ClusterMetrics) {
        if self.down.swap(false, Ordering::SeqCst) {
            metrics.up(&self.addr, true);
            tracing::info!(node = %self.addr, backlog_rows = self.queue.backlog().rows,
                "Storage node is back; replaying its hand-off queue.");
        }
    }
}

/// What placement sees: the active nodes of one topology version.
struct Route {
    version: u64,
    placement: Placement,
    /// Aligned with `placement.nodes()`.
    nodes: Vec<Arc<NodeHandle>>,
}

/// What happened to one node's share of a batch.
enum Fate {
    Acked(AddOutcome),
    /// Durably queued; `why` the node did not take it.
    Queued {
        why: String,
    },
    /// Dropped for this node: its queue is full.
    Dropped {
        why: String,
    },
    Failed {
        why: String,
        kind: FailKind,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FailKind {
    /// Retry later: the node or the queue may recover.
    Transient,
    /// The node refused the rows as invalid.
    Refused,
    /// Anything else a retry may not fix.
    Other,
}

struct Shared {
    config: ClusterConfig,
    runtime: Handle,
    connect: Connect,
    metrics: ClusterMetrics,
    handoff: Handoff,
    route: RwLock<Arc<Route>>,
    /// Every node with a client or a queue, by address.
    nodes: Mutex<BTreeMap<String, Arc<NodeHandle>>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The [`RowSink`] of `strata insert`: see the module doc.
pub struct ClusterSink {
    shared: Arc<Shared>,
}

impl ClusterSink {
    /// Opens the hand-off queues under `config.handoff_dir`, makes a client
    /// per node of the current topology with `connect`, and starts the
    /// background tasks on `runtime`: one following `topology`, one per
    /// node (health checks, replay, re-routing). Blocks on disk reads:
    /// call it at start-up or from a blocking task.
    pub fn new(
        config: ClusterConfig,
        topology: watch::Receiver<Arc<Topology>>,
        connect: Connect,
        metrics: ClusterMetrics,
        runtime: Handle,
    ) -> Result<ClusterSink, ClusterError> {
        if config.min_replicas_acked > config.replication_factor {
            return Err(ClusterError::MinReplicas {
                min: config.min_replicas_acked,
                rf: config.replication_factor,
            });
        }
        let handoff = Handoff::open(
            &config.handoff_dir,
            config.handoff_max_bytes,
            metrics.clone(),
        )?;
        let current = topology.borrow().clone();
        let shared = Arc::new(Shared {
            route: RwLock::new(Arc::new(Route {
                version: current.version,
                placement: Placement::over(Vec::new(), config.replication_factor),
                nodes: Vec::new(),
            })),
            config,
            runtime,
            connect,
            metrics,
            handoff,
            nodes: Mutex::new(BTreeMap::new()),
            stop: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        });
        shared.apply(&current, true)?;
        // Queues left from before for nodes no longer listed: re-route them.
        {
            let mut nodes = lock(&shared.nodes);
            for addr in shared.handoff.nodes() {
                if !nodes.contains_key(&addr)
                    && let Err(e) = shared.add_node(&mut nodes, &addr, Membership::Gone, false)
                {
                    tracing::error!(node = %addr, error = %e, "Cannot reopen a hand-off queue; its rows stay on disk.");
                }
            }
        }
        let watcher = shared
            .runtime
            .spawn(watch_topology(shared.clone(), topology));
        lock(&shared.tasks).push(watcher);
        Ok(ClusterSink { shared })
    }

    /// Stops the background tasks (queues stay on disk, replayed after the
    /// next start). Writes after this still work, without replay.
    pub async fn stop(&self) {
        let _ = self.shared.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.shared.tasks));
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// What each node's hand-off queue holds, by address.
    pub fn backlog(&self) -> BTreeMap<String, Backlog> {
        lock(&self.shared.nodes)
            .iter()
            .map(|(addr, node)| (addr.clone(), node.queue.backlog()))
            .collect()
    }

    /// Whether `addr` takes writes (`None`: not a node insert knows).
    pub fn node_up(&self, addr: &str) -> Option<bool> {
        lock(&self.shared.nodes)
            .get(addr)
            .map(|n| !n.down.load(Ordering::SeqCst))
    }

    /// The version of the topology placement uses.
    pub fn topology_version(&self) -> u64 {
        self.shared.route().version
    }
}

impl RowSink for ClusterSink {
    /// Blocks until the ack rule is decided: call from a blocking task,
    /// never from an async context.
    fn write(&self, tenant: Tenant, batch: &[SeriesSamples]) -> Result<AddOutcome, SinkError> {
        self.shared.write(tenant, batch)
    }

    /// [`RowSink::write`] of borrowed series: each node's share is copied
    /// once, straight from the request buffer.
    fn write_refs(&self, tenant: Tenant, batch: &[SeriesRef<'_>]) -> Result<AddOutcome, SinkError> {
        self.shared.write(tenant, batch)
    }
}

/// A batch of series, owned or borrowed from a request body.
trait Rows {
    fn count(&self) -> usize;
    /// Placement key of series `i` (labels in any order).
    fn key(&self, i: usize, tenant: Tenant, scratch: &mut Vec<u8>) -> u64;
    fn samples(&self, i: usize) -> usize;
    fn to_owned(&self, i: usize) -> SeriesSamples;
    /// Series `i` for messages: `name{label="value",...}`.
    fn describe(&self, i: usize) -> String;
}

/// [`series_key`] of labels in any order: ingestion sorts them, other
/// writers may not, and the key must not depend on the order.
fn key_of<'a>(
    tenant: Tenant,
    labels: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    scratch: &mut Vec<u8>,
) -> u64 {
    if labels.clone().is_sorted_by(|a, b| a.0 <= b.0) {
        return series_key(tenant, labels, scratch);
    }
    let mut sorted: Vec<(&str, &str)> = labels.collect();
    sorted.sort_unstable();
    series_key(tenant, sorted, scratch)
}

impl Rows for [SeriesSamples] {
    fn count(&self) -> usize {
        self.len()
    }

    fn key(&self, i: usize, tenant: Tenant, scratch: &mut Vec<u8>) -> u64 {
        let labels = self[i]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()));
        key_of(tenant, labels, scratch)
    }

    fn samples(&self, i: usize) -> usize {
        self[i].samples.len()
    }

    fn to_owned(&self, i: usize) -> SeriesSamples {
        self[i].clone()
    }

    fn describe(&self, i: usize) -> String {
        crate::ingest::format_series(&self[i].labels)
    }
}

impl Rows for [SeriesRef<'_>] {
    fn count(&self) -> usize {
        self.len()
    }

    fn key(&self, i: usize, tenant: Tenant, scratch: &mut Vec<u8>) -> u64 {
        key_of(
            tenant,
            self[i].labels.iter().map(|l| (l.name, l.value)),
            scratch,
        )
    }

    fn samples(&self, i: usize) -> usize {
        self[i].samples.len()
    }

    fn to_owned(&self, i: usize) -> SeriesSamples {
        SeriesSamples {
            labels: self[i].labels.iter().map(|l| l.to_label()).collect(),
            samples: self[i].samples.to_vec(),
        }
    }

    fn describe(&self, i: usize) -> String {
        crate::ingest::format_series_of(self[i].labels)
    }
}

impl Drop for ClusterSink {
    fn drop(&mut self) {
        let _ = self.shared.stop.send(true);
    }
}

impl Shared {
    fn route(&self) -> Arc<Route> {
        self.route.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds a handle (queue, client, task) for `addr`. With `strict`, a
    /// client that cannot be made is an error; otherwise the node starts
    /// down and its task tries again.
    fn add_node(
        self: &Arc<Self>,
        nodes: &mut BTreeMap<String, Arc<NodeHandle>>,
        addr: &str,
        membership: Membership,
        strict: bool,
    ) -> Result<Arc<NodeHandle>, ClusterError> {
        let queue = self.handoff.queue(addr)?;
        let client = match (self.connect)(addr) {
            Ok(client) => Some(client),
            Err(source) if strict => {
                return Err(ClusterError::Connect {
                    addr: addr.to_string(),
                    source,
                });
            }
            Err(e) => {
                tracing::warn!(node = addr, error = %e, "Cannot make a client for a storage node; trying again at each health check.");
                None
            }
        };
        let node = Arc::new(NodeHandle {
            addr: addr.to_string(),
            down: AtomicBool::new(client.is_none()),
            client: RwLock::new(client),
            queue,
            membership: AtomicU8::new(membership as u8),
            wake: Notify::new(),
        });
        self.metrics.up(addr, !node.down.load(Ordering::SeqCst));
        self.metrics.backlog(addr, node.queue.backlog());
        nodes.insert(addr.to_string(), node.clone());
        let task = self.runtime.spawn(run_node(self.clone(), node.clone()));
        lock(&self.tasks).push(task);
        Ok(node)
    }

    /// Makes `topology` the one placement uses. The node map stays locked
    /// throughout, so that a node retiring cannot race with its return.
    fn apply(self: &Arc<Self>, topology: &Topology, strict: bool) -> Result<(), ClusterError> {
        let listed: BTreeMap<&str, NodeState> = topology
            .nodes
            .iter()
            .map(|n| (n.addr.as_str(), n.state))
            .collect();
        let mut known = lock(&self.nodes);
        for (addr, state) in &listed {
            let membership = match state {
                NodeState::Active => Membership::Active,
                NodeState::Draining => Membership::Draining,
                NodeState::Removed => Membership::Gone,
            };
            match known.get(*addr) {
                Some(node) => {
                    let before = node.membership.swap(membership as u8, Ordering::SeqCst);
                    if before != membership as u8 {
                        node.wake.notify_one();
                    }
                }
                // A removed node insert holds nothing for needs nothing.
                None if membership == Membership::Gone => {}
                None => {
                    self.add_node(&mut known, addr, membership, strict)?;
                }
            }
        }
        for (addr, node) in known.iter() {
            if !listed.contains_key(addr.as_str())
                && node
                    .membership
                    .swap(Membership::Gone as u8, Ordering::SeqCst)
                    != Membership::Gone as u8
            {
                node.wake.notify_one();
            }
        }
        let placement = Placement::new(topology, self.config.replication_factor);
        // Every active node has a handle: `add_node` succeeded for each.
        let nodes: Vec<Arc<NodeHandle>> = placement
            .nodes()
            .iter()
            .filter_map(|addr| known.get(addr).cloned())
            .collect();
        drop(known);
        *self.route.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Route {
            version: topology.version,
            placement,
            nodes,
        });
        tracing::info!(
            version = topology.version,
            active = listed.values().filter(|s| **s == NodeState::Active).count(),
            replication_factor = self.config.replication_factor,
            "Placement follows the topology."
        );
        Ok(())
    }

    /// The write of one batch: see the module doc for the rule.
    fn write<R: Rows + ?Sized>(&self, tenant: Tenant, batch: &R) -> Result<AddOutcome, SinkError> {
        if batch.count() == 0 {
            return Ok(AddOutcome::default());
        }
        let route = self.route();
        let per = route.placement.owners_per_series();
        if per == 0 {
            return Err(SinkError::Unavailable(format!(
                "no active storage node in topology version {}",
                route.version
            )));
        }
        let need = self.config.min_replicas_acked.min(per);

        // Owners of every series, and every node's series.
        let mut owners: Vec<usize> = Vec::with_capacity(batch.count() * per);
        let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); route.nodes.len()];
        let mut scratch = Vec::new();
        let mut one = Vec::with_capacity(per);
        for i in 0..batch.count() {
            route
                .placement
                .owners(batch.key(i, tenant, &mut scratch), &mut one);
            for &n in &one {
                per_node[n].push(i);
            }
            owners.extend_from_slice(&one);
        }

        // A series none of whose owners can take it fails the batch: fail
        // before writing anything.
        // One look at health per batch: a node marked down meanwhile is
        // still written to (and queued for if that fails).
        let clients: Vec<Option<Arc<dyn Node>>> =
            route.nodes.iter().map(|n| n.client_if_up()).collect();
        let up: Vec<bool> = clients.iter().map(Option::is_some).collect();
        if let Some(i) = (0..batch.count()).find(|i| {
            owners[i * per..(i + 1) * per]
                .iter()
                .filter(|n| up[**n])
                .count()
                < need
        }) {
            let down: Vec<&str> = owners[i * per..(i + 1) * per]
                .iter()
                .filter(|n| !up[**n])
                .map(|n| route.nodes[*n].addr.as_str())
                .collect();
            return Err(SinkError::Unavailable(format!(
                "storage nodes {} are down and series {} needs {need} of its {per} replicas \
                 (--insert.min-replicas-acked) to take it; nothing was written",
                down.join(", "),
                batch.describe(i),
            )));
        }

        // Write to every owner that is up, all at once; queue the rows of
        // owners known down while the calls run.
        let deadline = Instant::now() + self.config.write_timeout;
        let mut calls = Vec::new();
        let mut fates: Vec<Option<Fate>> = (0..route.nodes.len()).map(|_| None).collect();
        for (n, series) in per_node.iter().enumerate() {
            if series.is_empty() {
                continue;
            }
            if let Some(client) = clients[n].clone() {
                let rows: Vec<SeriesSamples> = series.iter().map(|i| batch.to_owned(*i)).collect();
                let metrics = self.metrics.clone();
                calls.push((
                    n,
                    self.runtime.spawn(async move {
                        let started = Instant::now();
                        let result = client.write(tenant, rows, deadline).await;
                        let error = result.as_ref().err().map(NodeError::reason);
                        metrics.write(client.addr(), started.elapsed().as_secs_f64(), error);
                        result
                    }),
                ));
            }
        }
        for (n, series) in per_node.iter().enumerate() {
            if !series.is_empty() && !up[n] {
                fates[n] = Some(self.queue_rows(
                    &route.nodes[n],
                    tenant,
                    batch,
                    series,
                    "known down".to_string(),
                ));
            }
        }
        let results = self.runtime.block_on(async move {
            let mut results = Vec::with_capacity(calls.len());
            for (n, call) in calls {
                results.push((n, call.await));
            }
            results
        });
        for (n, result) in results {
            let node = &route.nodes[n];
            fates[n] = Some(match result {
                Ok(Ok(outcome)) => Fate::Acked(outcome),
                Ok(Err(e)) if e.is_transient() => {
                    node.mark_down(&self.metrics, &e);
                    self.queue_rows(node, tenant, batch, &per_node[n], e.to_string())
                }
                Ok(Err(e)) => Fate::Failed {
                    kind: match e {
                        NodeError::Remote { .. } => FailKind::Refused,
                        _ => FailKind::Other,
                    },
                    why: e.to_string(),
                },
                // The call was cut (runtime shutting down) or panicked: the
                // rows may not be on the node.
                Err(join) => self.queue_rows(
                    node,
                    tenant,
                    batch,
                    &per_node[n],
                    format!("write task failed: {join}"),
                ),
            });
        }

        // The ack rule, series by series.
        let mut acked_per_series = vec![0u32; batch.count()];
        let mut failed_series = 0usize;
        let mut failing_nodes = BTreeSet::new();
        for (i, acked) in acked_per_series.iter_mut().enumerate() {
            let series_owners = &owners[i * per..(i + 1) * per];
            let mut failed = false;
            for n in series_owners {
                match &fates[*n] {
                    Some(Fate::Acked(_)) => *acked += 1,
                    Some(Fate::Queued { .. } | Fate::Dropped { .. }) => {}
                    Some(Fate::Failed { .. }) | None => failed = true,
                }
            }
            if failed || (*acked as usize) < need {
                failed_series += 1;
                failing_nodes.extend(
                    series_owners
                        .iter()
                        .filter(|n| !matches!(fates[**n], Some(Fate::Acked(_)))),
                );
            }
        }
        if failed_series > 0 {
            return Err(self.failure(
                &route,
                &fates,
                &failing_nodes,
                failed_series,
                batch.count(),
                need,
            ));
        }
        Ok(merge_outcomes(batch, &per_node, &fates, &acked_per_series))
    }

    /// Queues the rows of `series` (indexes into `batch`) for `node`.
    fn queue_rows<R: Rows + ?Sized>(
        &self,
        node: &NodeHandle,
        tenant: Tenant,
        batch: &R,
        series: &[usize],
        why: String,
    ) -> Fate {
        let owned: Vec<SeriesSamples> = series.iter().map(|i| batch.to_owned(*i)).collect();
        let rows: Vec<&SeriesSamples> = owned.iter().collect();
        match node.queue.append(tenant, &rows) {
            Ok(Appended::Queued) => Fate::Queued { why },
            Ok(Appended::Full) => Fate::Dropped {
                why: format!("{why}; hand-off queue full"),
            },
            Err(e) => {
                tracing::warn!(node = %node.addr, error = %e, "Cannot queue rows for hand-off.");
                Fate::Failed {
                    why: format!("{why}; cannot queue for hand-off: {e}"),
                    kind: FailKind::Transient,
                }
            }
        }
    }

    fn failure(
        &self,
        route: &Route,
        fates: &[Option<Fate>],
        failing: &BTreeSet<usize>,
        failed_series: usize,
        total: usize,
        need: usize,
    ) -> SinkError {
        let mut kind = FailKind::Other;
        let mut detail = String::new();
        for n in failing {
            let (why, this) = match &fates[*n] {
                Some(Fate::Queued { why }) => {
                    (format!("{why} (queued for hand-off)"), FailKind::Transient)
                }
                Some(Fate::Dropped { why }) => (why.clone(), FailKind::Transient),
                Some(Fate::Failed { why, kind }) => (why.clone(), *kind),
                Some(Fate::Acked(_)) | None => continue,
            };
            // Transient beats refused beats other: a retry may then succeed.
            kind = match (kind, this) {
                (FailKind::Transient, _) | (_, FailKind::Transient) => FailKind::Transient,
                (FailKind::Refused, _) | (_, FailKind::Refused) => FailKind::Refused,
                _ => FailKind::Other,
            };
            let _ = write!(detail, "; {}: {why}", route.nodes[*n].addr);
        }
        let message = format!(
            "{failed_series} of {total} series were not stored on {need} storage node(s) with \
             their other replicas queued (--insert.min-replicas-acked){detail}; what was stored \
             or queued stays, a retry's duplicates collapse"
        );
        match kind {
            FailKind::Transient => SinkError::Unavailable(message),
            FailKind::Refused => SinkError::Refused(message),
            FailKind::Other => SinkError::Failed(message),
        }
    }

    /// Replays what `node`'s queue holds to it, in order, until the queue
    /// is empty or the node fails. Returns whether the queue is empty.
    async fn replay(self: &Arc<Self>, node: &Arc<NodeHandle>, client: Arc<dyn Node>) -> bool {
        loop {
            if *self.stop.borrow() {
                return false;
            }
            let Some(batch) = read_queue(&node.queue).await else {
                return false;
            };
            if batch.records.is_empty() {
                commit(&node.queue, batch.end, batch.end_rows).await;
                return true;
            }
            let mut taken = None;
            let mut failed = false;
            for group in tenant_groups(&batch) {
                let (tenant, rows, last) = group;
                let count: u64 = rows.iter().map(|s| s.samples.len() as u64).sum();
                let started = Instant::now();
                let deadline = started + self.config.write_timeout;
                let result = client.write(tenant, rows, deadline).await;
                let error = result.as_ref().err().map(NodeError::reason);
                self.metrics
                    .write(&node.addr, started.elapsed().as_secs_f64(), error);
                match result {
                    Ok(_) => self.metrics.replayed(&node.addr, count),
                    Err(e @ NodeError::Remote { .. }) => {
                        // Replaying it again would fail the same way and
                        // hold up everything queued after it.
                        self.metrics.dropped(&node.addr, "refused", count);
                        tracing::warn!(node = %node.addr, rows = count, error = %e,
                            "Storage node refused queued rows; dropped.");
                    }
                    Err(e) => {
                        node.mark_down(&self.metrics, &e);
                        failed = true;
                        break;
                    }
                }
                taken = Some(last);
            }
            if failed {
                if let Some(last) = taken {
                    let t = &batch.records[last];
                    commit(&node.queue, t.end, t.rows_through).await;
                }
                return false;
            }
            commit(&node.queue, batch.end, batch.end_rows).await;
        }
    }

    /// Writes what the queue of `node` (no longer active) holds to the
    /// series' current owners, in order, until empty or a write fails.
    /// Returns whether the queue is empty.
    async fn reroute(self: &Arc<Self>, node: &Arc<NodeHandle>) -> bool {
        loop {
            if *self.stop.borrow() {
                return false;
            }
            let Some(batch) = read_queue(&node.queue).await else {
                return false;
            };
            if batch.records.is_empty() {
                commit(&node.queue, batch.end, batch.end_rows).await;
                return true;
            }
            let mut taken: Option<usize> = None;
            let mut failed = false;
            for (r, t) in batch.records.iter().enumerate() {
                let shared = self.clone();
                let record = t.record.clone();
                let rows = record.rows();
                let written = tokio::task::spawn_blocking(move || {
                    shared.write(record.tenant, record.series.as_slice())
                })
                .await;
                match written {
                    Ok(Ok(_)) => self.metrics.rerouted(&node.addr, rows),
                    Ok(Err(SinkError::Refused(e))) => {
                        self.metrics.dropped(&node.addr, "refused", rows);
                        tracing::warn!(node = %node.addr, rows, error = %e,
                            "Owners refused re-routed rows; dropped.");
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(node = %node.addr, error = %e, "Re-routing queued rows failed; trying again later.");
                        failed = true;
                    }
                    Err(e) => {
                        tracing::warn!(node = %node.addr, error = %e, "Re-routing task failed.");
                        failed = true;
                    }
                }
                if failed {
                    break;
                }
                taken = Some(r);
            }
            if failed {
                if let Some(last) = taken {
                    let t = &batch.records[last];
                    commit(&node.queue, t.end, t.rows_through).await;
                }
                return false;
            }
            commit(&node.queue, batch.end, batch.end_rows).await;
        }
    }

    /// Asks a down node whether it is back; makes its client first if it
    /// has none. True when it is up.
    async fn probe(&self, node: &NodeHandle) -> bool {
        let client = match node.client() {
            Some(client) => client,
            None => match (self.connect)(&node.addr) {
                Ok(client) => {
                    *node.client.write().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
                    client
                }
                Err(e) => {
                    tracing::debug!(node = %node.addr, error = %e, "Still cannot make a client.");
                    return false;
                }
            },
        };
        let deadline = Instant::now() + self.config.write_timeout;
        match client.status(deadline).await {
            Ok(status) if !status.read_only => {
                node.mark_up(&self.metrics);
                true
            }
            Ok(status) => {
                tracing::debug!(node = %node.addr, reason = %status.read_only_reason, "Storage node is still read-only.");
                false
            }
            Err(e) => {
                tracing::debug!(node = %node.addr, error = %e, "Storage node still down.");
                false
            }
        }
    }

    /// Forgets a node that left the topology once its queue is empty.
    /// True when it is gone.
    fn retire(&self, node: &NodeHandle) -> bool {
        let mut nodes = lock(&self.nodes);
        if node.membership() != Membership::Gone {
            return false;
        }
        match self.handoff.remove_if_empty(&node.addr) {
            Ok(true) => {
                nodes.remove(&node.addr);
                self.metrics.forget(&node.addr);
                tracing::info!(node = %node.addr, "Storage node left the topology and its hand-off queue is empty; forgotten.");
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(node = %node.addr, error = %e, "Cannot delete an empty hand-off queue.");
                false
            }
        }
    }
}

/// Per node: health checks while down, replay while up, re-routing once it
/// is no longer active.
async fn run_node(shared: Arc<Shared>, node: Arc<NodeHandle>) {
    let mut stop = shared.stop.subscribe();
    let interval = shared.config.health_check_interval;
    loop {
        if *stop.borrow() {
            return;
        }
        let has_backlog = node.queue.backlog() != Backlog::default();
        match node.membership() {
            Membership::Gone | Membership::Draining => {
                if has_backlog
                    && shared.reroute(&node).await
                    && node.membership() == Membership::Gone
                    && shared.retire(&node)
                {
                    return;
                }
                if !has_backlog && node.membership() == Membership::Gone && shared.retire(&node) {
                    return;
                }
            }
            Membership::Active => {
                let up = !node.down.load(Ordering::SeqCst) || shared.probe(&node).await;
                if up
                    && has_backlog
                    && let Some(client) = node.client()
                {
                    shared.replay(&node, client).await;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = node.wake.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn watch_topology(shared: Arc<Shared>, mut topology: watch::Receiver<Arc<Topology>>) {
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = topology.changed() => if changed.is_err() { return },
        }
        let next = topology.borrow_and_update().clone();
        let applying = shared.clone();
        // Making clients and queue directories may block briefly.
        let applied = tokio::task::spawn_blocking(move || applying.apply(&next, false)).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Cannot follow the new topology; placement stays on the previous one.")
            }
            Err(e) => tracing::error!(error = %e, "Topology task failed."),
        }
    }
}

async fn read_queue(queue: &Arc<Queue>) -> Option<Batch> {
    let q = queue.clone();
    match tokio::task::spawn_blocking(move || q.read(REPLAY_BATCH_BYTES)).await {
        Ok(Ok(batch)) => Some(batch),
        Ok(Err(e)) => {
            tracing::warn!(node = %queue.addr(), error = %e, "Cannot read the hand-off queue.");
            None
        }
        Err(e) => {
            tracing::warn!(node = %queue.addr(), error = %e, "Hand-off read task failed.");
            None
        }
    }
}

async fn commit(queue: &Arc<Queue>, to: super::handoff::Position, rows: u64) {
    let q = queue.clone();
    match tokio::task::spawn_blocking(move || q.commit(to, rows)).await {
        Ok(Ok(())) => {}
        // The rows are replayed again later: duplicates are harmless.
        Ok(Err(e)) => {
            tracing::warn!(node = %queue.addr(), error = %e, "Cannot move the hand-off cursor.")
        }
        Err(e) => tracing::warn!(node = %queue.addr(), error = %e, "Hand-off commit task failed."),
    }
}

/// Consecutive records of one tenant merged into one write of at most
/// about [`REPLAY_WRITE_ROWS`] samples: (tenant, rows, index of the
/// group's last record).
fn tenant_groups(batch: &Batch) -> Vec<(Tenant, Vec<SeriesSamples>, usize)> {
    let mut groups: Vec<(Tenant, Vec<SeriesSamples>, usize, usize)> = Vec::new();
    for (i, t) in batch.records.iter().enumerate() {
        let samples = t.record.rows() as usize;
        match groups.last_mut() {
            Some((tenant, rows, last, count))
                if *tenant == t.record.tenant && *count + samples <= REPLAY_WRITE_ROWS =>
            {
                rows.extend(t.record.series.iter().cloned());
                *last = i;
                *count += samples;
            }
            _ => groups.push((t.record.tenant, t.record.series.clone(), i, samples)),
        }
    }
    groups
        .into_iter()
        .map(|(tenant, rows, last, _)| (tenant, rows, last))
        .collect()
}

/// One outcome for the batch from the nodes' outcomes. A series acked by
/// `a` replicas is counted `a` times over the nodes, so each node's
/// rejections are weighed by its series' `1/a`: exact when every series of
/// a node has the same number of acks (the usual case), close otherwise.
fn merge_outcomes<R: Rows + ?Sized>(
    batch: &R,
    per_node: &[Vec<usize>],
    fates: &[Option<Fate>],
    acked_per_series: &[u32],
) -> AddOutcome {
    let total: u64 = (0..batch.count()).map(|i| batch.samples(i) as u64).sum();
    let mut rejected = 0f64;
    let mut by_reason: Vec<(RejectReason, f64)> = Vec::new();
    let mut first_rejection = None;
    for (n, fate) in fates.iter().enumerate() {
        let Some(Fate::Acked(outcome)) = fate else {
            continue;
        };
        if outcome.rejected == 0 {
            continue;
        }
        let (mut sent, mut weighed) = (0f64, 0f64);
        for i in &per_node[n] {
            let rows = batch.samples(*i) as f64;
            sent += rows;
            weighed += rows / f64::from(acked_per_series[*i].max(1));
        }
        let scale = if sent > 0.0 { weighed / sent } else { 0.0 };
        rejected += outcome.rejected as f64 * scale;
        for (reason, rows) in &outcome.rejected_by_reason {
            match by_reason.iter_mut().find(|(r, _)| r == reason) {
                Some((_, sum)) => *sum += *rows as f64 * scale,
                None => by_reason.push((*reason, *rows as f64 * scale)),
            }
        }
        if first_rejection.is_none() {
            first_rejection = outcome.first_rejection.clone();
        }
    }
    let rejected = (rejected.round() as u64).min(total);
    AddOutcome {
        accepted: total - rejected,
        rejected,
        rejected_by_reason: by_reason
            .into_iter()
            .map(|(r, rows)| (r, rows.round() as u64))
            .filter(|(_, rows)| *rows > 0)
            .collect(),
        first_rejection,
    }
}

#[cfg(test)]
mod tests {
    use strata_storage::{Label, Rejection, Sample};

    use super::super::handoff::{Position, Record, Taken};
    use super::*;

    fn series(samples: usize) -> SeriesSamples {
        SeriesSamples {
            labels: vec![Label::new("__name__", "x")],
            samples: (0..samples).map(|i| Sample::new(i as i64, 0.0)).collect(),
        }
    }

    #[test]
    fn replay_merges_records_of_a_tenant_up_to_a_size() {
        let check = |records: &[(u32, usize)], want: &[(u32, usize, usize)]| {
            let batch = Batch {
                records: records
                    .iter()
                    .map(|(account, samples)| Taken {
                        record: Record {
                            tenant: Tenant::new(*account, 0),
                            series: vec![series(*samples)],
                        },
                        end: Position::default(),
                        rows_through: 0,
                    })
                    .collect(),
                ..Batch::default()
            };
            let got: Vec<(u32, usize, usize)> = tenant_groups(&batch)
                .into_iter()
                .map(|(t, rows, last)| (t.account_id, rows.len(), last))
                .collect();
            assert_eq!(got, want, "{records:?}");
        };
        check(&[], &[]);
        check(
            &[(1, 10), (1, 10), (2, 5), (1, 1)],
            &[(1, 2, 1), (2, 1, 2), (1, 1, 3)],
        );
        check(
            &[(1, REPLAY_WRITE_ROWS - 1), (1, 1), (1, 1)],
            &[(1, 2, 1), (1, 1, 2)],
        );
        check(
            &[(1, REPLAY_WRITE_ROWS * 2), (1, 1)],
            &[(1, 1, 0), (1, 1, 1)],
        );
    }

    fn outcome(rejected: u64) -> Fate {
        Fate::Acked(AddOutcome {
            accepted: 0,
            rejected,
            rejected_by_reason: vec![(RejectReason::TooOld, rejected)],
            first_rejection: (rejected > 0).then(|| Rejection {
                series: "x{}".to_string(),
                timestamp: 1,
                reason: RejectReason::TooOld,
            }),
        })
    }

    #[test]
    fn outcomes_count_each_series_once() {
        // Series 0 and 1 on nodes 0 and 1; series 2 on node 1 only (its
        // other replica queued). Each series has 2 samples, 1 rejected.
        let batch = vec![series(2), series(2), series(2)];
        let per_node = vec![vec![0, 1], vec![0, 1, 2]];
        let fates = vec![Some(outcome(2)), Some(outcome(3))];
        let got = merge_outcomes(batch.as_slice(), &per_node, &fates, &[2, 2, 1]);
        assert_eq!(got.rejected, 3);
        assert_eq!(got.accepted, 3);
        assert_eq!(got.rejected_by_reason, [(RejectReason::TooOld, 3)]);
        assert!(got.first_rejection.is_some());

        let clean = vec![
            Some(Fate::Acked(AddOutcome::default())),
            Some(Fate::Queued { why: String::new() }),
        ];
        let got = merge_outcomes(batch.as_slice(), &per_node, &clean, &[1, 1, 1]);
        assert_eq!((got.accepted, got.rejected), (6, 0));
        assert!(got.rejected_by_reason.is_empty());
    }
}
