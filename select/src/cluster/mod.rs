//! Reading a cluster: [`ClusterSource`] answers every [`Source`] call by
//! asking all readable storage nodes of the newest topology (`active` and
//! `draining`) in parallel and merging their answers (see [`merge`]: series
//! by label set, replicas deduplicated, samples a replica lacks filled from
//! another).
//!
//! Deadlines: every node call carries the request's deadline minus a
//! reserve (a quarter of the time left, at most [`MAX_RESERVE`]) kept for
//! merging, evaluating and answering, so a slow node costs the query at
//! most its deadline and the query still answers, without that node. A
//! node that missed a query's node deadline is not waited for again by the
//! query's later reads (one per selector), which would leave evaluation
//! less and less time: a query is told apart by its deadline, the one
//! instant the engine passes to all of its reads.
//!
//! Missing nodes: a node that fails or misses the deadline is missing from
//! the answer. With replication factor R (`--replication-factor`) every
//! series lives on R distinct nodes, so up to R-1 missing nodes still give
//! a complete answer: no warning, only the node error metrics and a log
//! line when a node starts or stops failing. With R or more missing, the
//! answer is partial: `partial` is set and there is one warning per missing
//! node, naming it and why; the API answers `"isPartial":true` or refuses
//! when partial responses are denied. When no node answers at all, the read
//! fails ([`StorageError::NodesUnavailable`], 503 `unavailable`).
//!
//! Streaming: a search asks every node for its series in key order
//! (`Node::search_ordered`, the same order on every node) and merges the
//! streams k-way as they come ([`merge::KeyMerge`]), so the engine takes
//! each series as soon as every node has streamed past its key, and memory
//! is bounded by the batches in flight (a few per node), as over one
//! engine; the engine applies its own limits. Batches are read straight
//! from each node's stream, none waited for past the node deadline (which
//! now bounds the evaluation that runs while nodes stream, too). Failures
//! a search meets
//! before its first series (a node down, refusing, or late) are in the
//! answer of `select`; a node that fails midway is judged when the stream
//! ends ([`crate::source::LateNotes`]): its series merged so far stay (they
//! are real data), and with the others' copies the answer is complete or
//! partial by the same rule.
//!
//! Nodes are connected through [`Connect`] when a topology first lists
//! them; clients of nodes a newer topology drops are dropped.

pub mod export;
pub mod merge;
pub mod metrics;

#[cfg(test)]
mod fault;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_storage::cluster::{BoxFuture, KeyedBatches, Node, NodeError, SeriesQuery, Topology};
use strata_storage::{Cardinality, Matcher, SeriesData, StorageError, Tenant, TimeRange};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use crate::source::{Found, LabelSets, LateNotes, Selected, Source};

pub use metrics::ClusterMetrics;

/// Longest time kept back from node calls for merging, evaluation and the
/// answer.
pub const MAX_RESERVE: Duration = Duration::from_secs(1);

/// Opens a client of the storage node at `addr` (as the topology writes
/// it). Called on the read path the first time a topology lists a node (and
/// again after a failure), so it must not block: clients connect lazily.
pub type Connect = Arc<dyn Fn(&str) -> Result<Arc<dyn Node>, NodeError> + Send + Sync>;

/// How a cluster is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Distinct nodes holding each series (`--replication-factor`): up to
    /// this many minus one nodes may be missing from a complete answer.
    /// Values below 1 count as 1.
    pub replication_factor: usize,
}

impl ClusterOptions {
    pub fn new(replication_factor: usize) -> ClusterOptions {
        ClusterOptions {
            replication_factor: replication_factor.max(1),
        }
    }
}

/// The storage nodes select reads, shared by the sources of every tenant.
pub struct Cluster {
    topology: watch::Receiver<Arc<Topology>>,
    connect: Connect,
    clients: Mutex<Clients>,
    /// Nodes that missed the node deadline of a query still running, by
    /// the query's deadline.
    late: Mutex<HashMap<Instant, HashSet<String>>>,
    options: ClusterOptions,
    metrics: ClusterMetrics,
    runtime: Handle,
}

/// Clients of the readable nodes of one topology.
#[derive(Default)]
struct Clients {
    /// The topology `nodes` follows.
    topology: Option<Arc<Topology>>,
    /// Readable nodes in topology order, with their client once connected.
    nodes: Vec<(String, Option<Arc<dyn Node>>)>,
    /// Nodes whose last call failed: a node going down or coming back is
    /// logged once, not at every read.
    failing: HashSet<String>,
}

/// A node to ask, or why it cannot be asked.
struct Target {
    addr: String,
    node: Result<Arc<dyn Node>, NodeError>,
}

/// What a fan-out made of the nodes' failures.
struct Verdict {
    partial: bool,
    warnings: Vec<String>,
}

/// A node's ordered search as the merger reads it: being opened (by a
/// task, so that every node is asked at once), then its batches, read by
/// the merger itself (one wake-up per batch, no task in between).
enum Reading {
    Opening(oneshot::Receiver<Result<KeyedBatches, NodeError>>),
    Open(KeyedBatches),
}

/// One node's stream of a search, as the merger reads it.
struct Streamed {
    addr: String,
    /// None once the node ended (dropping it stops the node's stream).
    reading: Option<Reading>,
    /// How the node's stream ended; None while it streams.
    end: Option<Result<(), NodeError>>,
}

/// The merged series of one search, streamed as the nodes answer them
/// (see the module doc). Dropping it stops the node streams.
pub struct MergedStream {
    cluster: Arc<Cluster>,
    /// The query's deadline, which tells its reads apart.
    deadline: Instant,
    /// The node deadline: no node stream is waited for past it.
    until: Instant,
    started: Instant,
    nodes: Vec<Streamed>,
    merge: merge::KeyMerge,
    /// The first series, read before the stream was handed out.
    peeked: Option<SeriesData>,
    /// Known before the first series: failures at the start.
    warnings: Vec<String>,
    partial: bool,
    /// Nodes whose failure `warnings` already names.
    reported: HashSet<String>,
    late: LateNotes,
    /// The end was judged (or the stream failed).
    finished: bool,
}

/// The time node calls may take: `deadline` minus the reserve.
fn node_deadline(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline
        .checked_sub((left / 4).min(MAX_RESERVE))
        .unwrap_or(deadline)
}

impl Cluster {
    /// Reads the nodes of the newest topology `topology` holds, connecting
    /// through `connect`, running node calls on `runtime`.
    pub fn new(
        topology: watch::Receiver<Arc<Topology>>,
        connect: Connect,
        options: ClusterOptions,
        metrics: ClusterMetrics,
        runtime: Handle,
    ) -> Arc<Cluster> {
        Arc::new(Cluster {
            topology,
            connect,
            clients: Mutex::new(Clients::default()),
            late: Mutex::new(HashMap::new()),
            options,
            metrics,
            runtime,
        })
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The readable nodes of the newest topology, connected where possible.
    fn targets(&self) -> Result<Vec<Target>, StorageError> {
        let topology = self.topology.borrow().clone();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let current = clients
            .topology
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &topology));
        if !current {
            let mut old = std::mem::take(&mut clients.nodes);
            clients.nodes = topology
                .readable()
                .map(|n| {
                    let kept = old
                        .iter_mut()
                        .find(|(addr, _)| *addr == n.addr)
                        .and_then(|(_, node)| node.take());
                    (n.addr.clone(), kept)
                })
                .collect();
            let readable: HashSet<&str> = topology.readable().map(|n| n.addr.as_str()).collect();
            clients
                .failing
                .retain(|addr| readable.contains(addr.as_str()));
            clients.topology = Some(topology.clone());
        }
        if clients.nodes.is_empty() {
            return Err(StorageError::NodesUnavailable(format!(
                "topology version {} lists no readable storage node",
                topology.version
            )));
        }
        let mut targets = Vec::with_capacity(clients.nodes.len());
        for (addr, client) in &mut clients.nodes {
            let node = match client {
                Some(node) => Ok(node.clone()),
                None => (self.connect)(addr).inspect(|node| *client = Some(node.clone())),
            };
            targets.push(Target {
                addr: addr.clone(),
                node,
            });
        }
        Ok(targets)
    }

    /// The nodes to ask for a read of the query with `deadline`, and until
    /// when: nodes that already missed this query's node deadline answer
    /// `DeadlineExceeded` without being asked.
    fn plan(&self, deadline: Instant) -> Result<(Vec<Target>, Instant), StorageError> {
        let mut targets = self.targets()?;
        let now = Instant::now();
        let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
        // Queries past their deadline read no more.
        late.retain(|d, _| *d > now);
        if let Some(late) = late.get(&deadline) {
            for target in &mut targets {
                if late.contains(&target.addr) {
                    target.node = Err(NodeError::DeadlineExceeded {
                        addr: target.addr.clone(),
                    });
                }
            }
        }
        Ok((targets, node_deadline(deadline)))
    }

    /// Remembers the nodes that missed the node deadline of the query
    /// with `deadline`.
    fn note_late(&self, deadline: Instant, failures: &[(String, NodeError)]) {
        for (addr, e) in failures {
            self.note_late_node(deadline, addr, e);
        }
    }

    fn note_late_node(&self, deadline: Instant, addr: &str, e: &NodeError) {
        if matches!(e, NodeError::DeadlineExceeded { .. }) {
            let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
            late.entry(deadline).or_default().insert(addr.to_string());
        }
    }

    /// Asks every readable node with `ask` in parallel, each by the node
    /// deadline; answers what the nodes answered and the verdict.
    fn ask_all<T: Send + 'static>(
        &self,
        call: &'static str,
        deadline: Instant,
        ask: impl Fn(Arc<dyn Node>, Instant) -> BoxFuture<'static, Result<T, NodeError>>,
    ) -> Result<(Vec<T>, Verdict), StorageError> {
        let (targets, until) = self.plan(deadline)?;
        let mut tasks = Vec::with_capacity(targets.len());
        for target in targets {
            let addr = target.addr;
            let call_node = target.node.map(|node| ask(node, until));
            let metrics = self.metrics.clone();
            let task_addr = addr.clone();
            let task = self.runtime.spawn(async move {
                let started = Instant::now();
                let result = match call_node {
                    Err(e) => Err(e),
                    Ok(call_node) => match tokio::time::timeout_at(until.into(), call_node).await {
                        Ok(result) => result,
                        Err(_) => Err(NodeError::DeadlineExceeded {
                            addr: task_addr.clone(),
                        }),
                    },
                };
                metrics.node_call(&task_addr, call, started.elapsed().as_secs_f64());
                result
            });
            tasks.push((addr, task));
        }
        let results = self.runtime.block_on(async {
            let mut results = Vec::with_capacity(tasks.len());
            for (addr, task) in tasks {
                let result = task.await.unwrap_or_else(|join| {
                    Err(NodeError::Unavailable {
                        addr: addr.clone(),
                        detail: format!("node call task failed: {join}"),
                    })
                });
                results.push((addr, result));
            }
            results
        });
        let mut answers = Vec::with_capacity(results.len());
        let mut failures = Vec::new();
        for (addr, result) in results {
            match result {
                Ok(answer) => {
                    self.note_ok(&addr);
                    answers.push(answer);
                }
                Err(e) => failures.push((addr, e)),
            }
        }
        self.note_late(deadline, &failures);
        let verdict = self.judge(answers.len(), failures)?;
        Ok((answers, verdict))
    }

    /// Series matching `matchers` in `range` from every readable node,
    /// merged as they stream (see the module doc). Answers once every node
    /// has sent its first series or ended, so that failures at the start
    /// are in [`MergedStream::notes`]; fails when no node answers at all.
    pub fn stream(
        self: &Arc<Self>,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
        deadline: Instant,
    ) -> Result<MergedStream, StorageError> {
        let (targets, until) = self.plan(deadline)?;
        let query = SeriesQuery {
            tenant,
            matchers: matchers.to_vec(),
            range,
            // The reader stops the streams when it has enough.
            limit: 0,
        };
        let started = Instant::now();
        let mut nodes = Vec::with_capacity(targets.len());
        for target in targets {
            let (tx, rx) = oneshot::channel();
            let query = query.clone();
            let addr = target.addr.clone();
            self.runtime.spawn(async move {
                let opened = match target.node {
                    Err(e) => Err(e),
                    Ok(node) => {
                        tokio::time::timeout_at(until.into(), node.search_ordered(query, until))
                            .await
                            .unwrap_or_else(|_| {
                                Err(NodeError::DeadlineExceeded {
                                    addr: target.addr.clone(),
                                })
                            })
                    }
                };
                // A merger that went away drops the stream, which stops it.
                let _ = tx.send(opened);
            });
            nodes.push(Streamed {
                addr,
                reading: Some(Reading::Opening(rx)),
                end: None,
            });
        }
        let mut stream = MergedStream {
            cluster: self.clone(),
            deadline,
            until,
            started,
            merge: merge::KeyMerge::new(nodes.len()),
            nodes,
            peeked: None,
            warnings: Vec::new(),
            partial: false,
            reported: HashSet::new(),
            late: LateNotes::default(),
            finished: false,
        };
        stream.peeked = stream.pull();
        if stream.peeked.is_none() {
            // Every node ended already: judge it all now.
            stream.finish()?;
            (stream.warnings, stream.partial) = stream.late.take();
            return Ok(stream);
        }
        let failed: Vec<(&str, &NodeError)> = stream
            .nodes
            .iter()
            .filter_map(|n| match &n.end {
                Some(Err(e)) => Some((n.addr.as_str(), e)),
                _ => None,
            })
            .collect();
        if failed.len() >= self.options.replication_factor {
            stream.partial = true;
            stream.warnings = failed.iter().map(|(_, e)| partial_warning(e)).collect();
            stream.reported = failed.iter().map(|(addr, _)| addr.to_string()).collect();
        }
        Ok(stream)
    }

    /// Counts and logs the failures, then decides: complete (none, or fewer
    /// than the replication factor), partial (warnings name the nodes), or
    /// an error when no node answered.
    fn judge(
        &self,
        answered: usize,
        failures: Vec<(String, NodeError)>,
    ) -> Result<Verdict, StorageError> {
        if failures.is_empty() {
            return Ok(Verdict {
                partial: false,
                warnings: Vec::new(),
            });
        }
        for (addr, e) in &failures {
            self.metrics.node_error(addr, e.reason());
            self.note_failure(addr, e);
        }
        if answered == 0 {
            self.metrics.missing_read("failed");
            let causes: Vec<String> = failures.iter().map(|(_, e)| e.to_string()).collect();
            return Err(StorageError::NodesUnavailable(format!(
                "no storage node answered: {}",
                causes.join("; ")
            )));
        }
        if failures.len() < self.options.replication_factor {
            self.metrics.missing_read("complete");
            return Ok(Verdict {
                partial: false,
                warnings: Vec::new(),
            });
        }
        self.metrics.missing_read("partial");
        Ok(Verdict {
            partial: true,
            warnings: failures.iter().map(|(_, e)| partial_warning(e)).collect(),
        })
    }

    fn note_failure(&self, addr: &str, e: &NodeError) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.failing.insert(addr.to_string()) {
            tracing::warn!(node = addr, reason = e.reason(), error = %e,
                "Storage node does not answer reads; answering without it.");
        }
    }

    fn note_ok(&self, addr: &str) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.failing.remove(addr) {
            tracing::info!(node = addr, "Storage node answers reads again.");
        }
    }
}

/// The warning naming a node missing from a partial answer.
fn partial_warning(e: &NodeError) -> String {
    format!("partial response: {e}")
}

impl MergedStream {
    /// Warnings about nodes that failed before the first series, and
    /// whether the answer is partial for it; later failures go to
    /// [`MergedStream::late`]. Taken once.
    pub fn notes(&mut self) -> (Vec<String>, bool) {
        (std::mem::take(&mut self.warnings), self.partial)
    }

    /// What the stream learns after it was handed out, complete once it
    /// ended.
    pub fn late(&self) -> LateNotes {
        self.late.clone()
    }

    /// The next merged series; None when every node ended.
    fn pull(&mut self) -> Option<SeriesData> {
        loop {
            match self.merge.step() {
                merge::Step::Series(series) => return Some(series),
                merge::Step::Done => return None,
                merge::Step::Feed(node) => self.receive(node),
            }
        }
    }

    /// Waits for node `node`'s next batch or end, at most until the node
    /// deadline.
    fn receive(&mut self, node: usize) {
        let addr = self.nodes[node].addr.clone();
        let received = match self.nodes[node].reading.take() {
            None => return self.merge.end(node),
            Some(Reading::Opening(opening)) => match opening.blocking_recv() {
                Ok(Ok(batches)) => {
                    self.nodes[node].reading = Some(Reading::Open(batches));
                    return;
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(NodeError::Unavailable {
                    addr,
                    detail: "the search task ended without an answer".to_string(),
                }),
            },
            Some(Reading::Open(mut batches)) => {
                let until = self.until;
                let next = self.cluster.runtime.block_on(async {
                    tokio::time::timeout_at(until.into(), batches.recv()).await
                });
                match next {
                    Err(_) => Err(NodeError::DeadlineExceeded { addr }),
                    Ok(None) => Ok(None),
                    Ok(Some(Err(e))) => Err(e),
                    Ok(Some(Ok(batch))) => {
                        self.nodes[node].reading = Some(Reading::Open(batches));
                        Ok(Some(batch))
                    }
                }
            }
        };
        match received {
            Ok(Some(batch)) => {
                if let Err(e) = self.merge.feed(node, batch) {
                    let addr = self.nodes[node].addr.clone();
                    let detail = e.to_string();
                    self.fail(node, NodeError::Protocol { addr, detail });
                }
            }
            Ok(None) => {
                self.observe(node);
                self.nodes[node].reading = None;
                self.nodes[node].end = Some(Ok(()));
                self.merge.end(node);
            }
            Err(e) => self.fail(node, e),
        }
    }

    fn fail(&mut self, node: usize, e: NodeError) {
        self.observe(node);
        let streamed = &mut self.nodes[node];
        self.cluster
            .note_late_node(self.deadline, &streamed.addr, &e);
        streamed.reading = None;
        streamed.end = Some(Err(e));
        self.merge.end(node);
    }

    /// Counts how long node `node`'s stream took, now that it ended.
    fn observe(&self, node: usize) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.cluster
            .metrics
            .node_call(&self.nodes[node].addr, "search", seconds);
    }

    /// Judges the ended stream once: counts, logs, and tells partiality or
    /// that no node answered.
    fn finish(&mut self) -> Result<(), StorageError> {
        self.finished = true;
        self.cluster.metrics.merged(self.merge.stats());
        let mut answered = 0;
        let mut failures = Vec::new();
        for node in &mut self.nodes {
            match node.end.take() {
                Some(Ok(())) => {
                    self.cluster.note_ok(&node.addr);
                    answered += 1;
                }
                Some(Err(e)) => failures.push((node.addr.clone(), e)),
                None => {
                    let e = NodeError::Unavailable {
                        addr: node.addr.clone(),
                        detail: "the search ended before the node's stream".to_string(),
                    };
                    failures.push((node.addr.clone(), e));
                }
            }
        }
        let unreported: Vec<bool> = failures
            .iter()
            .map(|(addr, _)| !self.reported.contains(addr))
            .collect();
        let verdict = self.cluster.judge(answered, failures)?;
        if verdict.partial {
            let warnings = verdict
                .warnings
                .into_iter()
                .zip(unreported)
                .filter_map(|(w, new)| new.then_some(w))
                .collect();
            self.late.add(warnings, true);
        }
        Ok(())
    }
}

impl Iterator for MergedStream {
    type Item = Result<SeriesData, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(series) = self.peeked.take() {
            return Some(Ok(series));
        }
        if self.finished {
            return None;
        }
        match self.pull() {
            Some(series) => Some(Ok(series)),
            None => self.finish().err().map(Err),
        }
    }
}

impl Drop for MergedStream {
    /// A stream given up early (the query failed) still counts the node
    /// failures it saw and what it merged; whether the answer would have
    /// been partial no longer matters.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.cluster.metrics.merged(self.merge.stats());
        for node in &self.nodes {
            if let Some(Err(e)) = &node.end {
                self.cluster.metrics.node_error(&node.addr, e.reason());
                self.cluster.note_failure(&node.addr, e);
            }
        }
    }
}

/// A [`Source`] reading one tenant from a [`Cluster`].
#[derive(Clone)]
pub struct ClusterSource {
    cluster: Arc<Cluster>,
    tenant: Tenant,
}

impl ClusterSource {
    pub fn new(cluster: Arc<Cluster>, tenant: Tenant) -> ClusterSource {
        ClusterSource { cluster, tenant }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn tenant(&self) -> Tenant {
        self.tenant
    }

    fn query(&self, matchers: &[Matcher], range: TimeRange, limit: usize) -> SeriesQuery {
        SeriesQuery {
            tenant: self.tenant,
            matchers: matchers.to_vec(),
            range,
            limit,
        }
    }

    /// Sorted union of every node's sorted list, cut to `limit`.
    fn lookup(
        &self,
        call: &'static str,
        deadline: Instant,
        limit: usize,
        ask: impl Fn(Arc<dyn Node>, Instant) -> BoxFuture<'static, Result<Vec<String>, NodeError>>,
    ) -> Result<Found<Vec<String>>, StorageError> {
        let (lists, verdict) = self.cluster.ask_all(call, deadline, ask)?;
        Ok(Found {
            found: merge::union_sorted(lists, limit),
            warnings: verdict.warnings,
            partial: verdict.partial,
        })
    }
}

impl Source for ClusterSource {
    fn select(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        deadline: Instant,
    ) -> Result<Selected, StorageError> {
        let mut stream = self
            .cluster
            .stream(self.tenant, matchers, range, deadline)?;
        let (warnings, partial) = stream.notes();
        Ok(Selected {
            late: stream.late(),
            series: Box::new(stream),
            warnings,
            partial,
        })
    }

    fn series(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<LabelSets, StorageError> {
        let query = self.query(matchers, range, limit);
        let (lists, verdict) = self.cluster.ask_all("series", deadline, |node, until| {
            let query = query.clone();
            Box::pin(async move { node.series(query, until).await })
        })?;
        Ok(LabelSets {
            labels: merge::union_sorted(lists, limit),
            warnings: verdict.warnings,
            partial: verdict.partial,
        })
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Found<Vec<String>>, StorageError> {
        let query = self.query(matchers, range, limit);
        self.lookup("label_names", deadline, limit, |node, until| {
            let query = query.clone();
            Box::pin(async move { node.label_names(query, until).await })
        })
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Found<Vec<String>>, StorageError> {
        let query = self.query(matchers, range, limit);
        self.lookup("label_values", deadline, limit, |node, until| {
            let (query, name) = (query.clone(), name.to_string());
            Box::pin(async move { node.label_values(name, query, until).await })
        })
    }

    fn cardinality(
        &self,
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Found<Cardinality>, StorageError> {
        let tenant = self.tenant;
        let (per_node, verdict) =
            self.cluster
                .ask_all("cardinality", deadline, move |node, until| {
                    Box::pin(async move { node.cardinality(tenant, range, limit, until).await })
                })?;
        Ok(Found {
            found: merge::cardinality(&per_node, self.cluster.options.replication_factor, limit),
            warnings: verdict.warnings,
            partial: verdict.partial,
        })
    }
}
