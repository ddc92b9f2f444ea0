//! `ClusterSink` over real storage engines in this process (`LocalNode`),
//! each behind a fault injector that can make it refuse connections, answer
//! slowly or refuse data, as a dead, overloaded or unhappy node would.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_insert::RowSink;
use strata_insert::cluster::{ClusterConfig, ClusterMetrics, ClusterSink, Connect};
use strata_insert::http::IngestError;
use strata_insert::ingest::SinkError;
use strata_storage::cluster::{
    BoxFuture, LocalNode, Node, NodeError, NodeState, NodeStatus, Placement, SeriesBatches,
    SeriesQuery, Topology, TopologyNode, series_key,
};
use strata_storage::{
    AddOutcome, Cardinality, Label, LabelRef, Matcher, Sample, SeriesRef, SeriesSamples, Storage,
    Tenant, TimeRange,
};
use tempfile::TempDir;
use tokio::sync::watch;

const TENANT: Tenant = Tenant {
    account_id: 3,
    project_id: 1,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Up = 0,
    /// Every call fails at once, as a refused connection does.
    Down = 1,
    /// Every call waits `SLOW` before going through (so it misses a
    /// shorter deadline).
    Slow = 2,
    /// Writes are refused as invalid data; other calls go through.
    Refuse = 3,
}

const SLOW: Duration = Duration::from_secs(3);

/// A real engine behind a switch: a fault injector, not a model of a node.
struct FaultyNode {
    inner: LocalNode,
    mode: AtomicU8,
    writes: AtomicU64,
}

impl FaultyNode {
    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Up,
            1 => Mode::Down,
            2 => Mode::Slow,
            _ => Mode::Refuse,
        }
    }

    fn storage(&self) -> &Arc<Storage> {
        self.inner.storage()
    }

    fn unavailable(&self) -> NodeError {
        NodeError::Unavailable {
            addr: self.inner.addr().to_string(),
            detail: "connection refused".to_string(),
        }
    }

    /// Runs `call` as the mode says.
    fn faulty<'a, T: Send + 'a>(
        &'a self,
        deadline: Instant,
        refusable: bool,
        call: BoxFuture<'a, Result<T, NodeError>>,
    ) -> BoxFuture<'a, Result<T, NodeError>> {
        Box::pin(async move {
            match self.mode() {
                Mode::Up => call.await,
                Mode::Down => Err(self.unavailable()),
                Mode::Refuse if refusable => Err(NodeError::Remote {
                    addr: self.inner.addr().to_string(),
                    message: "invalid series".to_string(),
                }),
                Mode::Refuse => call.await,
                Mode::Slow => {
                    let slow = async {
                        tokio::time::sleep(SLOW).await;
                        call.await
                    };
                    match tokio::time::timeout_at(deadline.into(), slow).await {
                        Ok(result) => result,
                        Err(_) => Err(NodeError::DeadlineExceeded {
                            addr: self.inner.addr().to_string(),
                        }),
                    }
                }
            }
        })
    }
}

impl Node for FaultyNode {
    fn addr(&self) -> &str {
        self.inner.addr()
    }

    fn write(
        &self,
        tenant: Tenant,
        rows: Vec<SeriesSamples>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<AddOutcome, NodeError>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.faulty(deadline, true, self.inner.write(tenant, rows, deadline))
    }

    fn search(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SeriesBatches, NodeError>> {
        self.faulty(deadline, false, self.inner.search(query, deadline))
    }

    fn series(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Vec<Label>>, NodeError>> {
        self.faulty(deadline, false, self.inner.series(query, deadline))
    }

    fn label_names(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        self.faulty(deadline, false, self.inner.label_names(query, deadline))
    }

    fn label_values(
        &self,
        name: String,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        self.faulty(
            deadline,
            false,
            self.inner.label_values(name, query, deadline),
        )
    }

    fn cardinality(
        &self,
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Cardinality, NodeError>> {
        self.faulty(
            deadline,
            false,
            self.inner.cardinality(tenant, range, limit, deadline),
        )
    }

    fn delete_series(
        &self,
        tenant: Tenant,
        matchers: Vec<Matcher>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<u64, NodeError>> {
        self.faulty(
            deadline,
            false,
            self.inner.delete_series(tenant, matchers, deadline),
        )
    }

    fn tenants(
        &self,
        range: TimeRange,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Tenant>, NodeError>> {
        self.faulty(deadline, false, self.inner.tenants(range, deadline))
    }

    fn status(&self, deadline: Instant) -> BoxFuture<'_, Result<NodeStatus, NodeError>> {
        self.faulty(deadline, false, self.inner.status(deadline))
    }
}

fn addr(i: usize) -> String {
    format!("storage-{i}.test:8400")
}

/// Storage nodes in temporary directories, a topology to change, and what a
/// sink over them needs.
struct Cluster {
    dirs: Vec<TempDir>,
    nodes: Arc<Mutex<HashMap<String, Arc<FaultyNode>>>>,
    topology: watch::Sender<Arc<Topology>>,
    handoff: TempDir,
    config: ClusterConfig,
    metrics: ClusterMetrics,
}

impl Cluster {
    fn new(nodes: usize, rf: usize) -> Cluster {
        let handoff = tempfile::tempdir().expect("tempdir");
        let config = ClusterConfig {
            replication_factor: rf,
            write_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_millis(50),
            handoff_dir: handoff.path().to_path_buf(),
            ..ClusterConfig::default()
        };
        let addrs: Vec<String> = (0..nodes).map(addr).collect();
        let mut cluster = Cluster {
            dirs: Vec::new(),
            nodes: Arc::default(),
            topology: watch::channel(Arc::new(Topology::from_addrs(&addrs).expect("topology"))).0,
            handoff,
            config,
            metrics: ClusterMetrics::default(),
        };
        for a in &addrs {
            cluster.add_storage(a);
        }
        cluster
    }

    fn add_storage(&mut self, addr: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = strata_storage::Config {
            data_dir: dir.path().to_path_buf(),
            ..strata_storage::Config::default()
        };
        let storage = Storage::open(
            config,
            &mut prometheus_client::registry::Registry::default(),
        )
        .expect("open storage");
        let node = Arc::new(FaultyNode {
            inner: LocalNode::new(addr, storage),
            mode: AtomicU8::new(Mode::Up as u8),
            writes: AtomicU64::new(0),
        });
        self.nodes
            .lock()
            .expect("lock")
            .insert(addr.to_string(), node);
        self.dirs.push(dir);
    }

    fn node(&self, i: usize) -> Arc<FaultyNode> {
        self.nodes
            .lock()
            .expect("lock")
            .get(&addr(i))
            .cloned()
            .expect("node")
    }

    fn connect(&self) -> Connect {
        let nodes = self.nodes.clone();
        Arc::new(move |a: &str| {
            let node = nodes.lock().expect("lock").get(a).cloned();
            match node {
                Some(node) => Ok(node as Arc<dyn Node>),
                None => Err(NodeError::Unavailable {
                    addr: a.to_string(),
                    detail: "no such test node".to_string(),
                }),
            }
        })
    }

    fn sink(&self) -> Arc<ClusterSink> {
        Arc::new(
            ClusterSink::new(
                self.config.clone(),
                self.topology.subscribe(),
                self.connect(),
                self.metrics.clone(),
                tokio::runtime::Handle::current(),
            )
            .expect("sink"),
        )
    }

    fn set_topology(&self, version: u64, nodes: &[(usize, NodeState)]) {
        let topology = Topology {
            version,
            nodes: nodes
                .iter()
                .map(|(i, state)| TopologyNode {
                    addr: addr(*i),
                    state: *state,
                })
                .collect(),
        };
        self.topology.send_replace(Arc::new(topology));
    }

    /// Which of `batch`'s series each active node owns under the current
    /// topology.
    fn owned(&self, batch: &[SeriesSamples]) -> BTreeMap<String, Vec<SeriesSamples>> {
        let placement = Placement::new(&self.topology.borrow(), self.config.replication_factor);
        let mut out: BTreeMap<String, Vec<SeriesSamples>> = BTreeMap::new();
        for s in batch {
            let key = series_key(
                TENANT,
                s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                &mut Vec::new(),
            );
            for a in placement.owner_addrs(key) {
                out.entry(a.to_string()).or_default().push(s.clone());
            }
        }
        out
    }
}

/// `count` series named `name` (instance 0..count), `samples` samples each
/// in the last hour.
fn batch(name: &str, count: usize, samples: usize) -> Vec<SeriesSamples> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    (0..count)
        .map(|i| SeriesSamples {
            labels: vec![
                Label::new("__name__", name),
                Label::new("instance", format!("host-{i}")),
                Label::new("job", "test"),
            ],
            samples: (0..samples)
                .map(|j| Sample::new(now - 60_000 + j as i64 * 1_000, (i * 100 + j) as f64))
                .collect(),
        })
        .collect()
}

/// Series and samples on a node as (labels, samples), sorted.
type Stored = BTreeMap<String, Vec<(i64, u64)>>;

fn key_of(labels: &[Label]) -> String {
    labels
        .iter()
        .map(|l| format!("{}={}", l.name, l.value))
        .collect::<Vec<_>>()
        .join(",")
}

fn stored(node: &FaultyNode) -> Stored {
    let iter = node
        .storage()
        .search(TENANT, &[Matcher::eq("job", "test")], TimeRange::ALL)
        .expect("search");
    let mut out = Stored::new();
    for series in iter {
        let series = series.expect("series");
        let samples = series
            .timestamps
            .iter()
            .zip(&series.values)
            .map(|(t, v)| (*t, v.to_bits()))
            .collect();
        out.insert(key_of(&series.labels), samples);
    }
    out
}

fn expected(batches: &[&[SeriesSamples]]) -> Stored {
    let mut out = Stored::new();
    for batch in batches {
        for s in *batch {
            let samples = out.entry(key_of(&s.labels)).or_default();
            samples.extend(s.samples.iter().map(|x| (x.timestamp, x.value.to_bits())));
            samples.sort_unstable();
            samples.dedup();
        }
    }
    out
}

async fn write(sink: &Arc<ClusterSink>, batch: &[SeriesSamples]) -> Result<AddOutcome, SinkError> {
    let (sink, batch) = (sink.clone(), batch.to_vec());
    tokio::task::spawn_blocking(move || sink.write(TENANT, &batch))
        .await
        .expect("write task")
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rows(batch: &[SeriesSamples]) -> u64 {
    batch.iter().map(|s| s.samples.len() as u64).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_lands_on_exactly_its_owners() {
    let cluster = Cluster::new(3, 2);
    let sink = cluster.sink();
    let batch = batch("up", 300, 3);
    let outcome = write(&sink, &batch).await.expect("write");
    assert_eq!(outcome.accepted, 900);
    assert_eq!(outcome.rejected, 0);
    let owned = cluster.owned(&batch);
    let mut total = 0;
    for i in 0..3 {
        let want = expected(&[&owned[&addr(i)]]);
        assert_eq!(stored(&cluster.node(i)), want, "node {i}");
        total += want.len();
    }
    assert_eq!(total, 600, "every series twice");
    assert!(sink.backlog().values().all(|b| b.rows == 0));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_order_does_not_change_placement() {
    let cluster = Cluster::new(3, 1);
    let sink = cluster.sink();
    let sorted = batch("up", 100, 1);
    let mut reversed = sorted.clone();
    for s in &mut reversed {
        s.labels.reverse();
    }
    write(&sink, &reversed).await.expect("write");
    let owned = cluster.owned(&sorted);
    for i in 0..3 {
        assert_eq!(
            stored(&cluster.node(i)),
            expected(&[&owned[&addr(i)]]),
            "node {i}"
        );
    }
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_counted_once_per_series_not_per_replica() {
    let cluster = Cluster::new(3, 2);
    let sink = cluster.sink();
    let mut batch = batch("up", 50, 2);
    for s in &mut batch {
        // Far before the retention: storage rejects it on every replica.
        s.samples.push(Sample::new(1_000, 1.0));
    }
    let outcome = write(&sink, &batch).await.expect("write");
    assert_eq!(outcome.accepted, 100);
    assert_eq!(outcome.rejected, 50);
    assert_eq!(
        outcome.rejected_by_reason,
        [(strata_storage::RejectReason::TooOld, 50)]
    );
    assert!(outcome.first_rejection.is_some());
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_node_catches_up_from_hand_off() {
    let cluster = Cluster::new(3, 2);
    let sink = cluster.sink();
    let down = cluster.node(1);
    down.set(Mode::Down);

    let first = batch("first", 200, 2);
    write(&sink, &first)
        .await
        .expect("acked with a replica down");
    assert_eq!(sink.node_up(&addr(1)), Some(false));
    let calls = down.writes.load(Ordering::SeqCst);
    let second = batch("second", 200, 2);
    write(&sink, &second)
        .await
        .expect("acked with a replica down");
    assert_eq!(
        down.writes.load(Ordering::SeqCst),
        calls,
        "a node known down is not tried inline"
    );

    let (owned1, owned2) = (cluster.owned(&first), cluster.owned(&second));
    let missed = rows(&owned1[&addr(1)]) + rows(&owned2[&addr(1)]);
    assert_eq!(sink.backlog()[&addr(1)].rows, missed);
    assert!(stored(&down).is_empty());
    for i in [0, 2] {
        assert_eq!(
            stored(&cluster.node(i)),
            expected(&[&owned1[&addr(i)], &owned2[&addr(i)]])
        );
    }

    down.set(Mode::Up);
    eventually("the backlog drains", || {
        sink.backlog()[&addr(1)] == Default::default()
    })
    .await;
    assert_eq!(sink.node_up(&addr(1)), Some(true));
    assert_eq!(
        stored(&down),
        expected(&[&owned1[&addr(1)], &owned2[&addr(1)]]),
        "exactly the rows it missed"
    );
    assert_eq!(cluster.metrics.replayed_rows(&addr(1)), missed);

    // Writes go to it inline again.
    let third = batch("third", 50, 1);
    write(&sink, &third).await.expect("write");
    let owned3 = cluster.owned(&third);
    assert_eq!(
        stored(&down),
        expected(&[&owned1[&addr(1)], &owned2[&addr(1)], &owned3[&addr(1)]])
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_down_is_503_and_nothing_is_acked() {
    let cluster = Cluster::new(3, 2);
    let sink = cluster.sink();
    for i in 0..3 {
        cluster.node(i).set(Mode::Down);
    }
    let batch = batch("up", 30, 1);
    for attempt in 0..2 {
        let err = write(&sink, &batch).await.expect_err("no replica took it");
        assert!(matches!(err, SinkError::Unavailable(_)), "{err}");
        let message = err.to_string();
        assert!(
            (0..3).any(|i| message.contains(&addr(i))),
            "names the nodes: {message}"
        );
        let status = IngestError::Storage(err).status();
        assert_eq!(status, 503, "attempt {attempt}");
    }
    // The second attempt knew every node was down: it queued nothing more.
    let queued: u64 = sink.backlog().values().map(|b| b.rows).sum();
    assert_eq!(queued, 30 * 2, "the first attempt's rows, once per replica");
    for i in 0..3 {
        assert!(stored(&cluster.node(i)).is_empty());
    }
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_off_survives_a_restart_without_loss_or_duplicates() {
    let cluster = Cluster::new(3, 2);
    let down = cluster.node(2);
    down.set(Mode::Down);
    let first = batch("first", 100, 3);
    let second = batch("second", 100, 3);
    let backlog = {
        let sink = cluster.sink();
        write(&sink, &first).await.expect("write");
        write(&sink, &second).await.expect("write");
        let backlog = sink.backlog()[&addr(2)];
        sink.stop().await;
        backlog
    };
    assert!(backlog.rows > 0);

    // A new process over the same hand-off directory.
    let sink = cluster.sink();
    assert_eq!(sink.backlog()[&addr(2)], backlog);
    down.set(Mode::Up);
    eventually("the backlog drains", || {
        sink.backlog()[&addr(2)] == Default::default()
    })
    .await;
    let (owned1, owned2) = (cluster.owned(&first), cluster.owned(&second));
    assert_eq!(
        stored(&down),
        expected(&[&owned1[&addr(2)], &owned2[&addr(2)]])
    );
    sink.stop().await;
    drop(sink);

    // Nothing is replayed twice after another restart.
    let writes = down.writes.load(Ordering::SeqCst);
    let sink = cluster.sink();
    assert_eq!(sink.backlog()[&addr(2)], Default::default());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(down.writes.load(Ordering::SeqCst), writes);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_with_a_count_and_the_client_is_acked() {
    let mut cluster = Cluster::new(3, 2);
    cluster.config.handoff_max_bytes = 600;
    let sink = cluster.sink();
    cluster.node(0).set(Mode::Down);
    let mut dropped = 0;
    for round in 0..5 {
        let batch = batch(&format!("m{round}"), 40, 5);
        write(&sink, &batch)
            .await
            .expect("acked by the other replicas");
        dropped += rows(&cluster.owned(&batch)[&addr(0)]);
    }
    let counted = cluster.metrics.dropped_rows(&addr(0), "queue_full");
    assert!(counted > 0, "some rows were dropped");
    assert_eq!(counted + sink.backlog()[&addr(0)].rows, dropped);
    sink.stop().await;
}

/// Offsets of the records in a segment file, by the layout in the hand-off
/// module doc.
fn record_offsets(path: &Path) -> Vec<usize> {
    let b = std::fs::read(path).expect("segment");
    let mut at = 8;
    let mut out = Vec::new();
    while at + 20 <= b.len() {
        out.push(at);
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        at += 20 + len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_skipped_and_the_rest_replayed() {
    let cluster = Cluster::new(3, 2);
    let down = cluster.node(0);
    down.set(Mode::Down);
    let batches: Vec<Vec<SeriesSamples>> = (0..3).map(|i| batch(&format!("m{i}"), 60, 2)).collect();
    {
        let sink = cluster.sink();
        for b in &batches {
            write(&sink, b).await.expect("write");
        }
        sink.stop().await;
    }
    let segment = cluster
        .handoff
        .path()
        .join("storage-0.test_3a8400")
        .join("00000000000000000001.seg");
    let offsets = record_offsets(&segment);
    assert_eq!(offsets.len(), 3, "one record per batch");
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[offsets[1] + 30] ^= 0xff;
    std::fs::write(&segment, bytes).expect("write");

    let sink = cluster.sink();
    down.set(Mode::Up);
    eventually("the backlog drains", || {
        sink.backlog()[&addr(0)] == Default::default()
    })
    .await;
    let owned: Vec<_> = batches.iter().map(|b| cluster.owned(b)).collect();
    assert_eq!(
        stored(&down),
        expected(&[&owned[0][&addr(0)], &owned[2][&addr(0)]]),
        "the records around the damaged one"
    );
    assert_eq!(cluster.metrics.corrupted_records(&addr(0)), 1);
    assert_eq!(
        cluster.metrics.dropped_rows(&addr(0), "corrupted"),
        rows(&owned[1][&addr(0)])
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_costs_one_timeout_then_is_queued() {
    let mut cluster = Cluster::new(3, 2);
    cluster.config.write_timeout = Duration::from_millis(300);
    let sink = cluster.sink();
    let slow = cluster.node(1);
    slow.set(Mode::Slow);
    let started = Instant::now();
    let first = batch("first", 100, 1);
    write(&sink, &first).await.expect("acked by the others");
    assert!(
        started.elapsed() < SLOW,
        "the client did not wait for the slow node"
    );
    assert_eq!(sink.node_up(&addr(1)), Some(false));
    let missed = rows(&cluster.owned(&first)[&addr(1)]);
    assert_eq!(sink.backlog()[&addr(1)].rows, missed);

    slow.set(Mode::Up);
    eventually("the backlog drains", || {
        sink.backlog()[&addr(1)] == Default::default()
    })
    .await;
    assert_eq!(stored(&slow), expected(&[&cluster.owned(&first)[&addr(1)]]));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_data_is_400_and_not_queued() {
    let cluster = Cluster::new(3, 2);
    let sink = cluster.sink();
    cluster.node(0).set(Mode::Refuse);
    let err = write(&sink, &batch("up", 50, 1))
        .await
        .expect_err("refused");
    assert!(matches!(err, SinkError::Refused(_)), "{err}");
    assert!(err.to_string().contains("invalid series"), "{err}");
    assert_eq!(IngestError::Storage(err).status(), 400);
    assert_eq!(sink.backlog()[&addr(0)].rows, 0);
    assert_eq!(sink.node_up(&addr(0)), Some(true));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_acks_wanted_and_one_replica_down_is_503_naming_it() {
    let mut cluster = Cluster::new(3, 2);
    cluster.config.min_replicas_acked = 2;
    let sink = cluster.sink();
    cluster.node(2).set(Mode::Down);
    let err = write(&sink, &batch("up", 50, 1))
        .await
        .expect_err("one replica is not enough");
    assert!(matches!(err, SinkError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains(&addr(2)), "{err}");
    assert!(!err.to_string().contains(&addr(0)), "{err}");
    sink.stop().await;

    let mut cluster = Cluster::new(3, 2);
    cluster.config.min_replicas_acked = 3;
    let err = ClusterSink::new(
        cluster.config.clone(),
        cluster.topology.subscribe(),
        cluster.connect(),
        ClusterMetrics::default(),
        tokio::runtime::Handle::current(),
    )
    .err()
    .expect("more acks than replicas");
    assert!(
        err.to_string().contains("--insert.min-replicas-acked=3"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_follows_topology_changes() {
    let mut cluster = Cluster::new(3, 1);
    let sink = cluster.sink();

    // A fourth node joins: it takes its share of new series.
    cluster.add_storage(&addr(3));
    cluster.set_topology(
        1,
        &[
            (0, NodeState::Active),
            (1, NodeState::Active),
            (2, NodeState::Active),
            (3, NodeState::Active),
        ],
    );
    eventually("the sink follows", || sink.topology_version() == 1).await;
    let joined = batch("joined", 200, 1);
    write(&sink, &joined).await.expect("write");
    let owned = cluster.owned(&joined);
    assert!(!owned[&addr(3)].is_empty());
    for i in 0..4 {
        assert_eq!(
            stored(&cluster.node(i)),
            expected(&[&owned[&addr(i)]]),
            "node {i}"
        );
    }

    // Node 0 drains: no new series on it.
    cluster.set_topology(
        2,
        &[
            (0, NodeState::Draining),
            (1, NodeState::Active),
            (2, NodeState::Active),
            (3, NodeState::Active),
        ],
    );
    eventually("the sink follows", || sink.topology_version() == 2).await;
    let before = stored(&cluster.node(0));
    let drained = batch("drained", 200, 1);
    write(&sink, &drained).await.expect("write");
    assert_eq!(stored(&cluster.node(0)), before);
    assert!(!cluster.owned(&drained).contains_key(&addr(0)));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_of_a_removed_node_goes_to_the_current_owners() {
    let cluster = Cluster::new(3, 1);
    let sink = cluster.sink();
    let gone = cluster.node(2);
    gone.set(Mode::Down);
    // RF 1: the series of node 2 fail, but its rows are queued; with a
    // second write, node 2 is known down and nothing is queued again.
    let batch = batch("up", 200, 2);
    let owned_before = cluster.owned(&batch);
    assert!(
        write(&sink, &batch).await.is_err(),
        "RF 1 with its owner down"
    );
    assert_eq!(sink.backlog()[&addr(2)].rows, rows(&owned_before[&addr(2)]));

    cluster.set_topology(
        1,
        &[
            (0, NodeState::Active),
            (1, NodeState::Active),
            (2, NodeState::Removed),
        ],
    );
    eventually("the removed node's queue is re-routed and deleted", || {
        !sink.backlog().contains_key(&addr(2))
    })
    .await;
    let owned_after = cluster.owned(&owned_before[&addr(2)]);
    for i in [0, 1] {
        let mut want = expected(&[&owned_before[&addr(i)]]);
        if let Some(moved) = owned_after.get(&addr(i)) {
            want.extend(expected(&[moved]));
        }
        assert_eq!(stored(&cluster.node(i)), want, "node {i}");
    }
    assert!(stored(&gone).is_empty());
    assert!(
        !cluster
            .handoff
            .path()
            .join("storage-2.test_3a8400")
            .exists(),
        "queue directory deleted"
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_engine_stopped_is_down_not_refusing() {
    let cluster = Cluster::new(3, 2);
    let sink = cluster.sink();
    cluster.node(1).storage().close().expect("close");
    let batch = batch("up", 60, 1);
    write(&sink, &batch)
        .await
        .expect("the other replicas take it");
    assert_eq!(sink.node_up(&addr(1)), Some(false));
    assert_eq!(
        sink.backlog()[&addr(1)].rows,
        rows(&cluster.owned(&batch)[&addr(1)])
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrowed_series_are_placed_and_queued_like_owned_ones() {
    let cluster = Cluster::new(3, 2);
    let sink = cluster.sink();
    let down = cluster.node(2);
    down.set(Mode::Down);
    let batch = batch("up", 120, 2);
    let written = {
        let (sink, batch) = (sink.clone(), batch.clone());
        tokio::task::spawn_blocking(move || {
            let labels: Vec<Vec<LabelRef<'_>>> = batch
                .iter()
                .map(|s| s.labels.iter().map(LabelRef::from).collect())
                .collect();
            let refs: Vec<SeriesRef<'_>> = batch
                .iter()
                .zip(&labels)
                .map(|(s, l)| SeriesRef {
                    labels: l,
                    samples: &s.samples,
                })
                .collect();
            sink.write_refs(TENANT, &refs)
        })
        .await
        .expect("task")
    };
    assert_eq!(written.expect("write").accepted, 240);
    let owned = cluster.owned(&batch);
    for i in [0, 1] {
        assert_eq!(stored(&cluster.node(i)), expected(&[&owned[&addr(i)]]));
    }
    down.set(Mode::Up);
    eventually("the backlog drains", || {
        sink.backlog()[&addr(2)] == Default::default()
    })
    .await;
    assert_eq!(stored(&down), expected(&[&owned[&addr(2)]]));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_rows_a_node_refuses_are_dropped_and_counted() {
    let cluster = Cluster::new(3, 2);
    let sink = cluster.sink();
    let node = cluster.node(0);
    node.set(Mode::Down);
    let batch = batch("up", 80, 2);
    write(&sink, &batch).await.expect("write");
    let queued = sink.backlog()[&addr(0)].rows;
    assert!(queued > 0);
    node.set(Mode::Refuse);
    eventually("the refused rows leave the queue", || {
        sink.backlog()[&addr(0)] == Default::default()
    })
    .await;
    assert_eq!(cluster.metrics.dropped_rows(&addr(0), "refused"), queued);
    assert_eq!(cluster.metrics.replayed_rows(&addr(0)), 0);
    assert!(stored(&node).is_empty());
    sink.stop().await;
}
