//! The storage engine: ties the log, the head, partitions, parts and the
//! index together behind one API.
//!
//! Write path: labels -> series id (in-memory map of label-set hashes); the
//! first sample of a series on a day registers it in that day's index (and,
//! the first time in a month, logs its labels); rows are appended to the log
//! and the head under a shared "barrier" lock; the call returns after the log
//! is durable. A flush takes the barrier exclusively for a moment to rotate
//! the log and take the head, writes the rows as parts, flushes the indexes,
//! then deletes the log segments it covered. So every acknowledged row is in
//! the log or in a published part, at every instant.
//!
//! Read path: matchers -> ids per day through the index; samples from the head,
//! the rows being flushed, and the parts; duplicates collapse by the dedup rule.

mod fsutil;
mod head;
mod keys;
mod partition;
mod resolve;
mod series_iter;
mod tombstones;
mod walrec;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use prometheus_client::registry::Registry;
use roaring::RoaringTreemap;
use tracing::{error, info, warn};

use self::fsutil::{create_dir_all, io_err};
use self::head::{Gathered, Head, IdSet, Row};
pub use self::keys::labels_key;
use self::keys::{MS_PER_DAY, Month, day_of};
use self::partition::{Caches, Partition};
use self::resolve::IndexErrors;
pub use self::series_iter::SeriesIter;
use self::tombstones::Tombstones;
use crate::config::Config;
use crate::metrics::StorageMetrics;
use crate::part::{Part, ReadCache};
use crate::types::{
    Label, LabelRef, METRIC_NAME_LABEL, Matcher, Sample, SeriesId, Tenant, TimeRange,
};
use crate::wal::{SyncMode, Wal};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    #[error(transparent)]
    Index(#[from] crate::mergeset::MergesetError),
    #[error(transparent)]
    Part(#[from] crate::part::PartError),
    #[error("storage i/o on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupted at offset {offset}: {what}")]
    Corrupted {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("data directory {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("storage is closed")]
    Closed,
    /// A cluster's storage nodes could not answer a read (select's fan-out:
    /// too few nodes answered for a complete answer, or none at all).
    #[error("{0}")]
    NodesUnavailable(String),
    /// A read would hold more than the query limits allow (select's fan-out
    /// merges replicas in memory, so it enforces them while reading).
    #[error("{0}")]
    LimitExceeded(String),
}

impl StorageError {
    /// Errors that may go away by themselves (disk, shutdown): a client should retry.
    pub fn is_transient(&self) -> bool {
        use crate::{mergeset::MergesetError, part::PartError, wal::WalError};
        matches!(
            self,
            StorageError::Closed
                | StorageError::NodesUnavailable(_)
                | StorageError::Io { .. }
                | StorageError::Wal(WalError::Io { .. } | WalError::Closed)
                | StorageError::Index(MergesetError::Io { .. })
                | StorageError::Part(PartError::Io { .. })
        )
    }
}

/// Samples of one series to add, labels in any order (they are sorted).
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Vec<Label>,
    pub samples: Vec<Sample>,
}

/// [`SeriesSamples`] with borrowed labels and samples, for writers that
/// parse into a buffer of their own: a known series costs no allocation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesRef<'a> {
    pub labels: &'a [LabelRef<'a>],
    pub samples: &'a [Sample],
}

/// Why a sample was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooOld,
    TooNew,
    /// No label with a non-empty value.
    EmptyLabels,
}

impl RejectReason {
    /// The `reason` label of the rejected-rows counter.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooOld => "too_old",
            RejectReason::TooNew => "too_new",
            RejectReason::EmptyLabels => "empty_labels",
        }
    }
}

/// The first rejected sample of a batch, for error messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// The series in Prometheus text notation, e.g. `up{job="x"}`.
    pub series: String,
    pub timestamp: i64,
}

/// Result of `Storage::add`: accepted samples are durable when it returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddOutcome {
    pub accepted: u64,
    pub rejected: u64,
    /// Rejected samples per reason, each reason once.
    pub rejected_by_reason: Vec<(RejectReason, u64)>,
    pub first_rejection: Option<Rejection>,
}

/// One series found by a search with its samples in the searched range.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesData {
    pub labels: Vec<Label>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// A series of an ordered search: its label set with its [`labels_key`],
/// shared (with the label set cache of the engine that found it), so that
/// series nobody hands on (a cluster's replicas of a series another node
/// answered too) cost no copy of their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyedSeries {
    /// The set's key, here too: a merge compares keys without touching
    /// the shared set.
    key: u128,
    set: Arc<(u128, Vec<Label>)>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

impl KeyedSeries {
    /// `labels` (sorted by name) under `key`, which must be their
    /// [`labels_key`] for ordered merges to find replicas.
    pub fn new(
        key: u128,
        labels: Vec<Label>,
        timestamps: Vec<i64>,
        values: Vec<f64>,
    ) -> KeyedSeries {
        KeyedSeries {
            key,
            set: Arc::new((key, labels)),
            timestamps,
            values,
        }
    }

    fn shared(
        key: u128,
        set: &Arc<(u128, Vec<Label>)>,
        timestamps: Vec<i64>,
        values: Vec<f64>,
    ) -> KeyedSeries {
        KeyedSeries {
            key,
            set: Arc::clone(set),
            timestamps,
            values,
        }
    }

    pub fn key(&self) -> u128 {
        self.key
    }

    pub fn labels(&self) -> &[Label] {
        &self.set.1
    }

    /// The series with labels of its own (copied when they are shared).
    pub fn into_series(self) -> SeriesData {
        let labels = match Arc::try_unwrap(self.set) {
            Ok((_, labels)) => labels,
            Err(shared) => shared.1.clone(),
        };
        SeriesData {
            labels,
            timestamps: self.timestamps,
            values: self.values,
        }
    }
}

/// Cardinality of one tenant over the days of a time range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cardinality {
    pub total_series: u64,
    /// (metric name, series count), largest first.
    pub series_by_metric_name: Vec<(String, u64)>,
    /// (label name, distinct values), largest first.
    pub values_by_label_name: Vec<(String, u64)>,
    /// (`name=value`, series count), largest first.
    pub series_by_label_pair: Vec<(String, u64)>,
}

/// Milliseconds since the epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

/// Hash maps keyed by a label-set hash need no second hashing.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// 128-bit hash of (tenant, labels) as two words: 8-byte alignment keeps a
/// map entry at 24 bytes, which matters with millions of series.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SeriesKey(u64, u64);

impl std::hash::Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

type SeriesMapShard = HashMap<SeriesKey, SeriesId, BuildHasherDefault<PassThroughHasher>>;
const SERIES_MAP_SHARDS: usize = 16;

/// Label-set hash -> series id, for every live series. 128-bit hashes make a
/// collision between two label sets practically impossible, so labels need not
/// be kept in memory.
struct SeriesMap {
    shards: Vec<RwLock<SeriesMapShard>>,
    next_id: AtomicU64,
}

impl SeriesMap {
    fn new() -> SeriesMap {
        SeriesMap {
            shards: (0..SERIES_MAP_SHARDS)
                .map(|_| RwLock::new(SeriesMapShard::default()))
                .collect(),
            next_id: AtomicU64::new(1),
        }
    }

    fn shard(&self, key: SeriesKey) -> &RwLock<SeriesMapShard> {
        &self.shards[key.1 as usize % SERIES_MAP_SHARDS]
    }

    fn get(&self, key: SeriesKey) -> Option<SeriesId> {
        self.shard(key).read().get(&key).copied()
    }

    /// Returns the id and whether it was created now.
    fn get_or_create(&self, key: SeriesKey) -> (SeriesId, bool) {
        let mut shard = self.shard(key).write();
        if let Some(id) = shard.get(&key) {
            return (*id, false);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        shard.insert(key, id);
        (id, true)
    }

    fn insert(&self, key: SeriesKey, id: SeriesId) {
        self.shard(key).write().insert(key, id);
        self.next_id.fetch_max(id + 1, Ordering::Relaxed);
    }

    fn remove(&self, key: SeriesKey, id: SeriesId) {
        let mut shard = self.shard(key).write();
        if shard.get(&key) == Some(&id) {
            shard.remove(&key);
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Keeps only the entries whose id is in `live`.
    fn retain(&self, live: &RoaringTreemap) {
        for shard in &self.shards {
            let mut shard = shard.write();
            shard.retain(|_, id| live.contains(*id));
            shard.shrink_to_fit();
        }
    }
}

thread_local! {
    static HASH_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hash of (tenant, labels): one pass over a reused buffer, which is faster
/// than feeding a streaming hasher field by field.
fn series_hash(tenant: Tenant, labels: &[Label]) -> SeriesKey {
    series_hash_of(
        tenant,
        labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
    )
}

/// [`series_hash`] of borrowed labels; the same value for the same labels.
fn series_hash_refs(tenant: Tenant, labels: &[LabelRef<'_>]) -> SeriesKey {
    series_hash_of(tenant, labels.iter().map(|l| (l.name, l.value)))
}

fn series_hash_of<'a>(
    tenant: Tenant,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) -> SeriesKey {
    HASH_BUF.with_borrow_mut(|buf| {
        buf.clear();
        buf.extend_from_slice(&tenant.account_id.to_le_bytes());
        buf.extend_from_slice(&tenant.project_id.to_le_bytes());
        for (name, value) in labels {
            buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            buf.extend_from_slice(value.as_bytes());
        }
        let h = xxhash_rust::xxh3::xxh3_128(buf);
        SeriesKey(h as u64, (h >> 64) as u64)
    })
}

/// Sorted by name, unique names, no empty values; borrowed when already so.
fn normalize_labels<'a>(labels: &'a [LabelRef<'a>]) -> Cow<'a, [LabelRef<'a>]> {
    let clean = labels.windows(2).all(|w| w[0].name < w[1].name)
        && labels.iter().all(|l| !l.value.is_empty());
    if clean {
        return Cow::Borrowed(labels);
    }
    let mut out: Vec<LabelRef<'a>> = labels
        .iter()
        .filter(|l| !l.value.is_empty())
        .copied()
        .collect();
    out.sort_by(|a, b| a.name.cmp(b.name));
    out.dedup_by(|b, a| a.name == b.name);
    Cow::Owned(out)
}

/// `name{a="b",...}` for messages.
pub fn format_series(labels: &[Label]) -> String {
    let name = labels
        .iter()
        .find(|l| l.name == METRIC_NAME_LABEL)
        .map_or("", |l| l.value.as_str());
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.name != METRIC_NAME_LABEL)
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

fn tenant_label(tenant: Tenant) -> Vec<(&'static str, String)> {
    vec![("tenant", tenant.to_string())]
}

struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sleeps up to `d`; returns true when stopping.
    fn sleep(&self, d: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            self.wake.wait_for(&mut stopped, d);
        }
        *stopped
    }
}

pub struct Storage {
    config: Config,
    clock: Clock,
    wal: OnceLock<Wal>,
    head: Head,
    /// Rows taken by the running flush, readable until their parts are published.
    flushing: RwLock<Option<Arc<Vec<Row>>>>,
    /// Shared by writers around log append + head insert; exclusive for log rotation.
    barrier: RwLock<()>,
    partitions: RwLock<BTreeMap<Month, Arc<Partition>>>,
    series: SeriesMap,
    /// Day of the last `evict_inactive_series`.
    evicted_on: AtomicI64,
    tombstones: Tombstones,
    metrics: StorageMetrics,
    flush_lock: Mutex<()>,
    flushed: (Mutex<u64>, Condvar),
    closed: AtomicBool,
    stop: Arc<Stop>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Held while open so that two processes never share a directory.
    dir_lock: Mutex<Option<std::fs::File>>,
    /// Decoded index blocks and part pages (`--storage.cache-mib`).
    caches: Caches,
}

/// A series of a batch: id, normalized labels, samples.
type Resolved<'a> = (SeriesId, Cow<'a, [LabelRef<'a>]>, &'a [Sample]);

/// A series id with its labels, pending registration on a day.
struct Registration<'a> {
    id: SeriesId,
    labels: Cow<'a, [Label]>,
    day: i64,
}

impl Storage {
    /// Opens the data directory, replaying the log.
    pub fn open(config: Config, registry: &mut Registry) -> Result<Arc<Storage>, StorageError> {
        Storage::open_with_clock(config, registry, system_clock())
    }

    /// `open` with a custom clock, for tests of retention and time limits.
    pub fn open_with_clock(
        config: Config,
        registry: &mut Registry,
        clock: Clock,
    ) -> Result<Arc<Storage>, StorageError> {
        let started = Instant::now();
        let dir = config.data_dir.clone();
        create_dir_all(&dir)?;
        let lock_path = dir.join("lock");
        let dir_lock = std::fs::File::create(&lock_path).map_err(|e| io_err(&lock_path, e))?;
        if dir_lock.try_lock().is_err() {
            return Err(StorageError::Locked { path: dir.clone() });
        }
        let tombstones = Tombstones::open(&dir.join("deleted"))?;
        let metrics = StorageMetrics::new(registry);
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
        let caches = Caches::with_budget(config.cache_mib.saturating_mul(1 << 20));
        let storage = Arc::new(Storage {
            config,
            clock,
            wal: OnceLock::new(),
            head: Head::new(shards),
            flushing: RwLock::new(None),
            barrier: RwLock::new(()),
            partitions: RwLock::new(BTreeMap::new()),
            series: SeriesMap::new(),
            evicted_on: AtomicI64::new(i64::MIN),
            tombstones,
            metrics,
            flush_lock: Mutex::new(()),
            flushed: (Mutex::new(0), Condvar::new()),
            closed: AtomicBool::new(false),
            stop: Arc::new(Stop {
                stopped: Mutex::new(false),
                wake: Condvar::new(),
            }),
            threads: Mutex::new(Vec::new()),
            dir_lock: Mutex::new(Some(dir_lock)),
            caches,
        });
        storage.open_partitions()?;
        let loaded = Instant::now();

        let mut replay = Replay::default();
        let (wal, stats) = Wal::open(&dir.join("wal"), storage.config.sync.0, &mut |payload| {
            storage.replay_record(payload, &mut replay);
            Ok(())
        })?;
        if let Some(max) = storage.tombstones.max() {
            storage.series.next_id.fetch_max(max + 1, Ordering::Relaxed);
        }
        let _ = storage.wal.set(wal);
        storage.metrics.wal_replayed_rows.inc_by(replay.rows);
        storage.metrics.replay_lost_rows.inc_by(replay.lost);
        let replay_secs = loaded.elapsed().as_secs_f64();
        info!(
            dir = %dir.display(),
            series = storage.series.len(),
            partitions = storage.partitions.read().len(),
            wal_records = stats.records,
            wal_rows = replay.rows,
            wal_truncated_bytes = stats.truncated_bytes,
            replay_rows_per_second = (replay.rows as f64 / replay_secs.max(1e-9)) as u64,
            took = ?started.elapsed(),
            "Storage opened."
        );
        if replay.lost > 0 {
            error!(
                rows = replay.lost,
                "Log rows of unknown series were dropped at replay."
            );
        }
        storage.update_gauges();
        storage.start_background();
        Ok(storage)
    }

    fn open_partitions(&self) -> Result<(), StorageError> {
        let root = self.config.data_dir.join("partitions");
        create_dir_all(&root)?;
        let cutoff = self.retention_cutoff();
        let mut months = Vec::new();
        for entry in std::fs::read_dir(&root).map_err(|e| io_err(&root, e))? {
            let entry = entry.map_err(|e| io_err(&root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match Month::parse_dir_name(&name) {
                Some(month) if month.end_ms() <= cutoff => {
                    info!(partition = %name, "Dropping partition past retention.");
                    std::fs::remove_dir_all(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
                    self.metrics.partitions_dropped.inc();
                }
                Some(month) => months.push((month, entry.path())),
                None => {
                    warn!(path = %entry.path().display(), "Ignoring an unknown entry in the partitions directory.")
                }
            }
        }
        let mut map = self.partitions.write();
        for (month, path) in months {
            let partition = Partition::open(&path, month, &self.caches)?;
            if let Some(max) = partition.max_series_id() {
                self.series.next_id.fetch_max(max + 1, Ordering::Relaxed);
            }
            map.insert(month, Arc::new(partition));
        }
        drop(map);
        self.load_active_series();
        Ok(())
    }

    /// Days whose series are kept in the in-memory map: today and yesterday.
    fn active_days(&self) -> [i64; 2] {
        let today = day_of(self.now());
        [today - 1, today]
    }

    /// Ids of series with samples on the active days.
    fn active_ids(&self) -> RoaringTreemap {
        let mut live = RoaringTreemap::new();
        for day in self.active_days() {
            if let Some(p) = self
                .partitions
                .read()
                .get(&Month::of_timestamp(day * MS_PER_DAY))
                .cloned()
            {
                live |= p.day_set(day);
            }
        }
        live
    }

    /// Fills the label-hash map with the active series, so that memory follows
    /// the active series, not every series retention keeps.
    fn load_active_series(&self) {
        let live = self.active_ids();
        let months: BTreeSet<Month> = self
            .active_days()
            .iter()
            .map(|d| Month::of_timestamp(d * MS_PER_DAY))
            .collect();
        for month in months {
            let Some(p) = self.partitions.read().get(&month).cloned() else {
                continue;
            };
            p.for_each_series(&mut |id, tenant, labels| {
                if live.contains(id) && !self.tombstones.contains(id) {
                    self.series.insert(series_hash(tenant, &labels), id);
                }
            });
        }
        self.evicted_on.store(day_of(self.now()), Ordering::Relaxed);
    }

    /// Once a day, forgets series without samples on the active days. A
    /// forgotten series that comes back gets a new id; reads merge ids with
    /// equal labels, so this only costs a few index items.
    fn evict_inactive_series(&self) {
        let today = day_of(self.now());
        if self.evicted_on.swap(today, Ordering::Relaxed) == today {
            return;
        }
        let live = self.active_ids();
        let before = self.series.len();
        self.series.retain(&live);
        info!(
            series_before = before,
            series_after = self.series.len(),
            "Forgot series inactive since yesterday."
        );
    }

    fn replay_record(&self, payload: &[u8], replay: &mut Replay) {
        match walrec::decode(payload) {
            Some(walrec::Record::Series(defs)) => {
                for (id, tenant, labels) in defs {
                    self.series.next_id.fetch_max(id + 1, Ordering::Relaxed);
                    if self.tombstones.contains(id) {
                        continue;
                    }
                    self.series.insert(series_hash(tenant, &labels), id);
                    replay.labels.insert(id, (tenant, labels));
                }
            }
            Some(walrec::Record::Rows(rows)) => {
                let cutoff = self.retained_from();
                let mut head_rows = Vec::with_capacity(rows.len());
                for (id, ts, value) in rows {
                    if self.tombstones.contains(id) || ts < cutoff {
                        continue;
                    }
                    let (tenant, labels) = match replay.labels.entry(id) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            match self.replay_lookup(&mut replay.searches, id) {
                                Some(found) => e.insert(found),
                                None => {
                                    replay.lost += 1;
                                    continue;
                                }
                            }
                        }
                    };
                    let day = day_of(ts);
                    let partition = match &replay.partition {
                        Some(p) if p.time_range().contains(ts) => Ok(p.clone()),
                        _ => self.partition_for(Month::of_timestamp(ts)),
                    };
                    let registered = partition.and_then(|p| {
                        let result = if p.is_registered_on(id, day) {
                            Ok(())
                        } else {
                            self.register(
                                &p,
                                *tenant,
                                &[Registration {
                                    id,
                                    labels: Cow::Borrowed(labels.as_slice()),
                                    day,
                                }],
                                false,
                            )
                        };
                        replay.partition = Some(p);
                        result
                    });
                    if let Err(e) = registered {
                        error!(error = %e, "Cannot register a replayed series in the index; its rows are kept but may not be found by label until the series is written again.");
                    }
                    head_rows.push(Row { id, ts, value });
                }
                replay.rows += head_rows.len() as u64;
                self.head.push(&head_rows);
            }
            None => {
                warn!(bytes = payload.len(), "Skipping an unreadable log record.");
            }
        }
    }

    /// Labels of a series whose log record was trimmed: from the indexes,
    /// newest partition first. The searches are kept across calls so that
    /// lookups of neighbouring ids hit cached blocks.
    fn replay_lookup(
        &self,
        searches: &mut Option<Vec<crate::mergeset::Search>>,
        id: SeriesId,
    ) -> Option<(Tenant, Vec<Label>)> {
        let searches = searches.get_or_insert_with(|| {
            self.partitions
                .read()
                .values()
                .rev()
                .map(|p| p.index.search())
                .collect()
        });
        let mut errs = IndexErrors::default();
        searches
            .iter_mut()
            .find_map(|s| resolve::lookup_series(s, id, &mut errs))
    }

    fn wal(&self) -> &Wal {
        // Set in `open` before the storage is handed out.
        self.wal.get().expect("wal is set during open")
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn retention_cutoff(&self) -> i64 {
        self.now()
            .saturating_sub(self.config.retention.as_millis() as i64)
    }

    /// Start of the oldest month retention keeps: everything before it is
    /// gone, even while its partition waits for the next retention pass or its
    /// rows wait in memory for the next flush.
    fn retained_from(&self) -> i64 {
        Month::of_timestamp(self.retention_cutoff()).start_ms()
    }

    /// `range` without the part retention has dropped.
    fn clip(&self, range: TimeRange) -> TimeRange {
        TimeRange::new(range.start.max(self.retained_from()), range.end)
    }

    fn dedup_interval_ms(&self) -> i64 {
        self.config.dedup_min_scrape_interval.as_millis() as i64
    }

    fn check_open(&self) -> Result<(), StorageError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }

    fn partition_for(&self, month: Month) -> Result<Arc<Partition>, StorageError> {
        if let Some(p) = self.partitions.read().get(&month) {
            return Ok(p.clone());
        }
        let mut map = self.partitions.write();
        if let Some(p) = map.get(&month) {
            return Ok(p.clone());
        }
        let dir = self
            .config
            .data_dir
            .join("partitions")
            .join(month.dir_name());
        let p = Arc::new(Partition::open(&dir, month, &self.caches)?);
        map.insert(month, p.clone());
        self.metrics.partitions.set(map.len() as i64);
        Ok(p)
    }

    /// Registers series on days of one partition; logs labels of series new to
    /// the partition when `log` (not during replay).
    fn register(
        &self,
        partition: &Partition,
        tenant: Tenant,
        regs: &[Registration<'_>],
        log: bool,
    ) -> Result<(), StorageError> {
        let _one_at_a_time = partition.registration.lock();
        let mut items = Vec::new();
        let mut defs: Vec<(SeriesId, Tenant, &[Label])> = Vec::new();
        let mut done = Vec::with_capacity(regs.len());
        let mut logged: std::collections::HashSet<SeriesId> = Default::default();
        for r in regs {
            let before = items.len();
            let mut new_in_partition = false;
            partition.registration_items(
                r.id,
                tenant,
                &r.labels,
                r.day,
                &mut new_in_partition,
                &mut items,
            );
            if items.len() > before {
                done.push((r.id, r.day));
                // A series new to the partition on two days of one batch is logged once.
                if new_in_partition && logged.insert(r.id) {
                    defs.push((r.id, tenant, &r.labels));
                }
            }
        }
        if done.is_empty() {
            return Ok(());
        }
        if log && !defs.is_empty() {
            // Before any row that refers to these series (see walrec).
            self.wal()
                .append(&walrec::encode_series(defs.iter().copied()))?;
        }
        partition
            .index
            .add_items(items.iter().map(|i| i.as_slice()));
        for (id, day) in done {
            partition.commit_registration(id, day);
        }
        Ok(())
    }

    /// Adds samples; returns when every accepted sample is durable per the sync mode.
    pub fn add(&self, tenant: Tenant, batch: &[SeriesSamples]) -> Result<AddOutcome, StorageError> {
        let labels: Vec<LabelRef<'_>> = batch
            .iter()
            .flat_map(|s| s.labels.iter().map(LabelRef::from))
            .collect();
        let mut refs = Vec::with_capacity(batch.len());
        let mut at = 0;
        for s in batch {
            refs.push(SeriesRef {
                labels: &labels[at..at + s.labels.len()],
                samples: &s.samples,
            });
            at += s.labels.len();
        }
        self.add_refs(tenant, &refs)
    }

    /// [`Storage::add`] of borrowed series: labels are copied only for a
    /// series registered now (new, or new on a day) or rejected.
    pub fn add_refs(
        &self,
        tenant: Tenant,
        batch: &[SeriesRef<'_>],
    ) -> Result<AddOutcome, StorageError> {
        self.check_open()?;
        self.wait_for_head_room();
        let now = self.now();
        let min_ts = now.saturating_sub(self.config.retention.as_millis() as i64);
        let max_ts = now.saturating_add(self.config.max_future.as_millis() as i64);
        let mut outcome = AddOutcome::default();
        let mut rejected: HashMap<RejectReason, u64> = HashMap::new();
        let mut reject = |outcome: &mut AddOutcome, reason, labels: &[LabelRef<'_>], ts, n: u64| {
            *rejected.entry(reason).or_default() += n;
            outcome.rejected += n;
            if outcome.first_rejection.is_none() {
                let labels: Vec<Label> = labels.iter().map(|l| l.to_label()).collect();
                outcome.first_rejection = Some(Rejection {
                    reason,
                    series: format_series(&labels),
                    timestamp: ts,
                });
            }
        };

        // Resolve ids first; this needs no coordination with flushes.
        let mut resolved: Vec<Resolved<'_>> = Vec::with_capacity(batch.len());
        let mut created = 0u64;
        for s in batch {
            if s.samples.is_empty() {
                continue;
            }
            let in_window = |x: &Sample| (min_ts..=max_ts).contains(&x.timestamp);
            if !s.samples.iter().any(in_window) {
                // No id is created for a series with nothing to store.
                for x in s.samples {
                    let reason = if x.timestamp < min_ts {
                        RejectReason::TooOld
                    } else {
                        RejectReason::TooNew
                    };
                    reject(&mut outcome, reason, s.labels, x.timestamp, 1);
                }
                continue;
            }
            let labels = normalize_labels(s.labels);
            if labels.is_empty() {
                let n = s.samples.len() as u64;
                reject(
                    &mut outcome,
                    RejectReason::EmptyLabels,
                    s.labels,
                    s.samples[0].timestamp,
                    n,
                );
                continue;
            }
            let hash = series_hash_refs(tenant, &labels);
            let id = match self.series.get(hash) {
                Some(id) => id,
                None => {
                    let (id, new) = self.series.get_or_create(hash);
                    created += u64::from(new);
                    id
                }
            };
            resolved.push((id, labels, s.samples));
        }

        let delay = self
            .metrics
            .ingestion_delay_seconds
            .get_or_create(&tenant_label(tenant))
            .clone();
        let total: usize = resolved.iter().map(|r| r.2.len()).sum();
        let mut wal_rows = walrec::begin_rows(total);
        let mut head_rows = Vec::with_capacity(total);
        let lsn = {
            let _shared = self.barrier.read();
            let mut regs: BTreeMap<Month, Vec<Registration<'_>>> = BTreeMap::new();
            let mut batch_newest = i64::MIN;
            let mut pending: std::collections::HashSet<(SeriesId, i64)> = Default::default();
            let mut partition: Option<Arc<Partition>> = None;
            for (id, labels, samples) in &resolved {
                let mut last_day = i64::MIN;
                for sample in samples.iter() {
                    let ts = sample.timestamp;
                    if ts < min_ts || ts > max_ts {
                        let reason = if ts < min_ts {
                            RejectReason::TooOld
                        } else {
                            RejectReason::TooNew
                        };
                        reject(&mut outcome, reason, labels, ts, 1);
                        continue;
                    }
                    batch_newest = batch_newest.max(ts);
                    let day = day_of(ts);
                    if day != last_day {
                        last_day = day;
                        let p = match &partition {
                            Some(p) if p.time_range().contains(ts) => p.clone(),
                            _ => {
                                let p = self.partition_for(Month::of_timestamp(ts))?;
                                partition = Some(p.clone());
                                p
                            }
                        };
                        if !p.is_registered_on(*id, day) && pending.insert((*id, day)) {
                            regs.entry(p.month).or_default().push(Registration {
                                id: *id,
                                labels: labels.iter().map(|l| l.to_label()).collect(),
                                day,
                            });
                        }
                    }
                    walrec::push_row(&mut wal_rows, *id, ts, sample.value);
                    head_rows.push(Row {
                        id: *id,
                        ts,
                        value: sample.value,
                    });
                }
            }
            for (month, list) in &regs {
                let p = self.partition_for(*month)?;
                self.register(&p, tenant, list, true)?;
            }
            // Once per batch, not per series: senders batch consecutive
            // samples, so the newest one tells how far behind they are.
            if batch_newest > i64::MIN {
                delay.observe(((now - batch_newest) as f64 / 1000.0).max(0.0));
            }
            if head_rows.is_empty() {
                None
            } else {
                walrec::set_row_count(&mut wal_rows, head_rows.len());
                let lsn = self.wal().append(&wal_rows)?;
                self.head.push(&head_rows);
                Some(lsn)
            }
        };
        if let Some(lsn) = lsn {
            self.wal().sync_to(lsn)?;
        }
        outcome.accepted = head_rows.len() as u64;
        let tl = tenant_label(tenant);
        self.metrics
            .rows_added
            .get_or_create(&tl)
            .inc_by(outcome.accepted);
        if created > 0 {
            self.metrics.new_series.get_or_create(&tl).inc_by(created);
        }
        outcome.rejected_by_reason = rejected.iter().map(|(r, n)| (*r, *n)).collect();
        outcome.rejected_by_reason.sort_by_key(|(r, _)| r.as_str());
        for (reason, n) in rejected {
            self.metrics
                .rows_rejected
                .get_or_create(&vec![("reason", reason.as_str().to_string())])
                .inc_by(n);
        }
        self.metrics.head_rows.set(self.head.len() as i64);
        Ok(outcome)
    }

    /// Backpressure: when flushing falls behind, writers wait instead of
    /// growing memory without bound.
    fn wait_for_head_room(&self) {
        let limit = self.config.max_head_rows.max(1);
        if self.head.len() < limit {
            return;
        }
        self.stop.wake.notify_all();
        if self.head.len() < limit.saturating_mul(2) {
            return;
        }
        let (lock, cv) = &self.flushed;
        let mut guard = lock.lock();
        while self.head.len() >= limit.saturating_mul(2) && !self.closed.load(Ordering::Acquire) {
            self.stop.wake.notify_all();
            cv.wait_for(&mut guard, Duration::from_millis(100));
        }
    }

    /// Partitions overlapping `range`, oldest first.
    fn partitions_in(&self, range: TimeRange) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .values()
            .filter(|p| {
                let r = p.time_range();
                range.overlaps(r.start, r.end)
            })
            .cloned()
            .collect()
    }

    /// Live series matching `matchers` in `range`, grouped by label set.
    fn find_series(
        &self,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
        errs: &mut IndexErrors,
    ) -> (Found, Vec<Arc<Partition>>) {
        let deleted = self.tombstones.snapshot();
        let range = self.clip(range);
        let partitions = self.partitions_in(range);
        let mut ids_seen = RoaringTreemap::new();
        let mut series = Vec::new();
        for p in &partitions {
            let mut s = p.index.search();
            let mut ids = RoaringTreemap::new();
            for day in days_of(range, p.time_range()) {
                ids |= resolve::resolve(&mut s, tenant, day, matchers, errs);
            }
            ids -= &*deleted;
            ids -= &ids_seen;
            let wanted: Vec<SeriesId> = ids.iter().collect();
            series.extend(resolve::lookup_all(
                &p.index,
                &self.caches.labels,
                &wanted,
                errs,
            ));
            ids_seen |= ids;
        }
        if partitions.len() > 1 {
            series.sort_unstable_by_key(|s| s.0);
        }
        (Found::group(series), partitions)
    }

    /// Series matching every matcher with samples in `range`, each label
    /// set once with its labels sorted by name, in storage order (the order
    /// that reads fastest; callers that need label order sort).
    pub fn search(
        &self,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<SeriesIter, StorageError> {
        self.search_in(tenant, matchers, range, false)
    }

    /// [`Storage::search`] in the order of [`labels_key`] (ties, which are
    /// hash collisions, by label set), the same order on every node: what
    /// lets a cluster merge its nodes' answers as they stream. Take the
    /// keys with [`SeriesIter::next_keyed`]. Reads cost a little more than
    /// in storage order (see `SeriesIter`).
    pub fn search_ordered(
        &self,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<SeriesIter, StorageError> {
        self.search_in(tenant, matchers, range, true)
    }

    fn search_in(
        &self,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
        ordered: bool,
    ) -> Result<SeriesIter, StorageError> {
        self.check_open()?;
        let range = self.clip(range);
        let mut errs = IndexErrors::default();
        let (found, partitions) = self.find_series(tenant, matchers, range, &mut errs);
        self.count_index_errors(&errs);
        let mut gathered = Gathered::new();
        let wanted = IdSet::new(&found.ids);
        let (flushing, parts) = {
            let _shared = self.barrier.read();
            self.head.gather(&wanted, range, &mut gathered);
            // Rows being flushed before parts: a flush publishes parts first and
            // then drops its rows, so this order never misses a row.
            let flushing = self.flushing.read().clone();
            let parts: Vec<Arc<Part>> = partitions
                .iter()
                .flat_map(|p| p.parts().iter().cloned().collect::<Vec<_>>())
                .collect();
            (flushing, parts)
        };
        if let Some(rows) = flushing {
            head::gather_rows(&rows, &wanted, range, &mut gathered);
        }
        let parts: Vec<Arc<Part>> = parts
            .into_iter()
            .filter(|p| {
                let m = p.meta();
                range.overlaps(m.min_timestamp, m.max_timestamp)
            })
            .collect();
        let iter = SeriesIter::new(
            found.groups,
            gathered,
            parts,
            range,
            self.dedup_interval_ms(),
            self.metrics.clone(),
            errs.first.into_iter().collect(),
        );
        Ok(if ordered { iter.in_key_order() } else { iter })
    }

    fn count_index_errors(&self, errs: &IndexErrors) {
        if errs.count > 0 {
            self.metrics
                .corrupted_blocks
                .get_or_create(&vec![("kind", "index".to_string())])
                .inc_by(errs.count);
        }
    }

    /// Label names of series matching `matchers` (all series when empty), sorted,
    /// at most `limit` (0: no limit).
    pub fn label_names(
        &self,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.check_open()?;
        let mut errs = IndexErrors::default();
        let mut names = BTreeSet::new();
        let range = self.clip(range);
        if matchers.is_empty() {
            let deleted = self.tombstones.snapshot();
            for p in self.partitions_in(range) {
                let mut s = p.index.search();
                for day in days_of(range, p.time_range()) {
                    resolve::label_names(&mut s, tenant, day, &deleted, &mut errs, &mut names);
                }
            }
        } else {
            let (found, _) = self.find_series(tenant, matchers, range, &mut errs);
            for g in &found.groups {
                names.extend(g.labels().iter().map(|l| l.name.clone()));
            }
        }
        self.count_index_errors(&errs);
        Ok(truncate(names, limit))
    }

    /// Values of label `name` of series matching `matchers`, sorted, at most
    /// `limit` (0: no limit).
    pub fn label_values(
        &self,
        tenant: Tenant,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.check_open()?;
        let mut errs = IndexErrors::default();
        let mut values = BTreeSet::new();
        let range = self.clip(range);
        if matchers.is_empty() {
            let deleted = self.tombstones.snapshot();
            for p in self.partitions_in(range) {
                let mut s = p.index.search();
                for day in days_of(range, p.time_range()) {
                    resolve::label_values(
                        &mut s,
                        tenant,
                        day,
                        name,
                        &deleted,
                        &mut errs,
                        &mut values,
                    );
                }
            }
        } else {
            let (found, _) = self.find_series(tenant, matchers, range, &mut errs);
            for g in &found.groups {
                values.extend(
                    g.labels()
                        .iter()
                        .filter(|l| l.name == name)
                        .map(|l| l.value.clone()),
                );
            }
        }
        self.count_index_errors(&errs);
        Ok(truncate(values, limit))
    }

    /// Label sets of the series matching `matchers` with a sample in
    /// `range`, sorted, each once, at most `limit` (0: no limit). Reads the
    /// index and block headers; only blocks straddling an end of `range` are
    /// decompressed.
    pub fn series(
        &self,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<Vec<Label>>, StorageError> {
        self.check_open()?;
        let mut errs = IndexErrors::default();
        let range = self.clip(range);
        let (found, partitions) = self.find_series(tenant, matchers, range, &mut errs);
        self.count_index_errors(&errs);
        // The index knows days, not samples: keep the series with a sample
        // in `range`, settled by block headers where possible.
        let mut in_head = Gathered::new();
        let wanted = IdSet::new(&found.ids);
        let parts: Vec<Arc<Part>> = {
            let _shared = self.barrier.read();
            self.head.gather(&wanted, range, &mut in_head);
            if let Some(rows) = self.flushing.read().clone() {
                head::gather_rows(&rows, &wanted, range, &mut in_head);
            }
            partitions
                .iter()
                .flat_map(|p| p.parts().iter().cloned().collect::<Vec<_>>())
                .filter(|p| {
                    let m = p.meta();
                    range.overlaps(m.min_timestamp, m.max_timestamp)
                })
                .collect()
        };
        let mut caches: Vec<ReadCache> = parts.iter().map(|_| ReadCache::default()).collect();
        let mut out: Vec<Vec<Label>> = Vec::new();
        for group in found.groups {
            let mut present = false;
            for id in group.ids() {
                present = in_head.contains_key(&id);
                for (part, cache) in parts.iter().zip(&mut caches) {
                    if present {
                        break;
                    }
                    let m = part.meta();
                    if id < m.min_series_id || id > m.max_series_id {
                        continue;
                    }
                    match part.has_samples(cache, id, range) {
                        Ok(has) => present = has,
                        Err(e) => {
                            error!(error = %e, series = %format_series(group.labels()), "Skipping a corrupted block.");
                            self.metrics
                                .corrupted_blocks
                                .get_or_create(&vec![("kind", "data".to_string())])
                                .inc();
                        }
                    }
                }
                if present {
                    break;
                }
            }
            if present {
                out.push(group.labels().to_vec());
            }
        }
        out.sort_unstable();
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Cardinality statistics of the day that contains `range.end` (like a
    /// daily report: churned series of other days do not inflate it), top
    /// `limit` entries of each list (0: all).
    pub fn cardinality(
        &self,
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
    ) -> Result<Cardinality, StorageError> {
        self.check_open()?;
        let end = range.end.min(self.now());
        let day = day_of(end);
        let mut errs = IndexErrors::default();
        let day_range = TimeRange::new(day * MS_PER_DAY, day * MS_PER_DAY + MS_PER_DAY - 1);
        let Some(p) = self.partitions_in(day_range).into_iter().next() else {
            return Ok(Cardinality::default());
        };
        let deleted = self.tombstones.snapshot();
        let mut s = p.index.search();
        let stats = resolve::day_cardinality(&mut s, tenant, day, &mut errs, &deleted);
        self.count_index_errors(&errs);
        let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_metric = Vec::new();
        let mut by_pair = Vec::new();
        for ((name, value), n) in &stats.series_by_pair {
            *by_name.entry(name.as_str()).or_default() += 1;
            if name == METRIC_NAME_LABEL {
                by_metric.push((value.clone(), *n));
            }
            by_pair.push((format!("{name}={value}"), *n));
        }
        let by_name = by_name
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok(Cardinality {
            total_series: stats.total_series,
            series_by_metric_name: top(by_metric, limit),
            values_by_label_name: top(by_name, limit),
            series_by_label_pair: top(by_pair, limit),
        })
    }

    /// Tenants with a live series on a day of `range`, sorted. Reads the
    /// per-day index items, which start with the tenant.
    pub fn tenants(&self, range: TimeRange) -> Result<Vec<Tenant>, StorageError> {
        self.check_open()?;
        let range = self.clip(range);
        let deleted = self.tombstones.snapshot();
        let mut errs = IndexErrors::default();
        let mut found = BTreeSet::new();
        for p in self.partitions_in(range) {
            let mut s = p.index.search();
            resolve::tenants_on_days(
                &mut s,
                days_of(range, p.time_range()),
                &deleted,
                &mut errs,
                &mut found,
            );
        }
        self.count_index_errors(&errs);
        Ok(found.into_iter().collect())
    }

    /// Deletes every series matching `matchers` (all of their samples); returns
    /// how many series were deleted. Later writes with the same labels start a new series.
    pub fn delete_series(&self, tenant: Tenant, matchers: &[Matcher]) -> Result<u64, StorageError> {
        self.check_open()?;
        let mut errs = IndexErrors::default();
        let (found, _) = self.find_series(tenant, matchers, TimeRange::ALL, &mut errs);
        self.count_index_errors(&errs);
        if found.groups.is_empty() {
            return Ok(0);
        }
        self.tombstones.add(&found.ids)?;
        for g in &found.groups {
            let key = series_hash(tenant, g.labels());
            for id in g.ids() {
                self.series.remove(key, id);
            }
        }
        let deleted = found.groups.len() as u64;
        self.metrics.deleted_series.inc_by(deleted);
        info!(tenant = %tenant, series = deleted, "Series deleted.");
        Ok(deleted)
    }

    /// Writes in-memory rows and index items to disk and trims the log.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.check_open()?;
        self.flush_inner()
    }

    fn flush_inner(&self) -> Result<(), StorageError> {
        let _one_flush = self.flush_lock.lock();
        let started = Instant::now();
        let (segment, rows) = {
            let _exclusive = self.barrier.write();
            let segment = self.wal().rotate()?;
            let rows = Arc::new(self.head.take_all());
            *self.flushing.write() = Some(rows.clone());
            (segment, rows)
        };
        let result = self.write_flushed_rows(&rows);
        if let Err(e) = result {
            // Keep the rows readable and retry with the next flush; the log
            // segments stay until a flush succeeds.
            self.head.push(&rows);
            *self.flushing.write() = None;
            return Err(e);
        }
        self.wal().remove_segments_before(segment)?;
        *self.flushing.write() = None;
        self.metrics.flushes.inc();
        self.metrics
            .flush_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        let (lock, cv) = &self.flushed;
        *lock.lock() += 1;
        cv.notify_all();
        self.update_gauges();
        Ok(())
    }

    fn write_flushed_rows(&self, rows: &[Row]) -> Result<(), StorageError> {
        let mut by_month: BTreeMap<Month, Vec<Row>> = BTreeMap::new();
        let mut current: Option<(TimeRange, Month)> = None;
        let retained_from = self.retained_from();
        for r in rows.iter().filter(|r| r.ts >= retained_from) {
            let month = match current {
                Some((range, m)) if range.contains(r.ts) => m,
                _ => {
                    let m = Month::of_timestamp(r.ts);
                    current = Some((TimeRange::new(m.start_ms(), m.end_ms() - 1), m));
                    m
                }
            };
            by_month.entry(month).or_default().push(*r);
        }
        let deleted = self.tombstones.snapshot();
        for (month, mut rows) in by_month {
            // By id only, stable: rows arrive in per-batch runs of ascending
            // ids, which a run-adaptive sort merges cheaply, and within a
            // series they are mostly in time order already, which
            // `sort_and_dedup` checks before sorting.
            rows.sort_by_key(|r| r.id);
            let p = self.partition_for(month)?;
            p.write_rows(&rows, self.dedup_interval_ms(), &|id| deleted.contains(id))?;
        }
        let partitions: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        for p in partitions {
            p.index.flush()?;
        }
        Ok(())
    }

    /// Merges every partition into as few parts as possible.
    pub fn force_merge(&self) -> Result<(), StorageError> {
        self.check_open()?;
        self.flush_inner()?;
        let partitions: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        let deleted = self.tombstones.snapshot();
        for p in partitions {
            p.merge_step(
                self.dedup_interval_ms(),
                TimeRange::ALL,
                &|id| deleted.contains(id),
                true,
            )?;
            p.index.force_merge()?;
        }
        self.update_gauges();
        Ok(())
    }

    /// Runs merges the policy wants; returns whether anything was merged.
    fn merge_some(&self) -> bool {
        let partitions: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        let deleted = self.tombstones.snapshot();
        let mut merged = false;
        for p in partitions {
            let data = p.merge_step(
                self.dedup_interval_ms(),
                TimeRange::ALL,
                &|id| deleted.contains(id),
                false,
            );
            merged |= self.count_merge(&p, "data", data);
            let index = p.index.merge_step().map_err(StorageError::from);
            merged |= self.count_merge(&p, "index", index);
        }
        if merged {
            self.update_gauges();
        }
        merged
    }

    /// Counts a merge outcome by kind (data, index); true when it merged.
    fn count_merge(&self, p: &Partition, kind: &str, outcome: Result<bool, StorageError>) -> bool {
        let labels = vec![("kind", kind.to_string())];
        match outcome {
            Ok(merged) => {
                if merged {
                    self.metrics.merges.get_or_create(&labels).inc();
                }
                merged
            }
            Err(e) => {
                self.metrics.merge_errors.get_or_create(&labels).inc();
                error!(partition = %p.month.dir_name(), kind, error = %e, "Merge failed; the inputs stay as they are.");
                false
            }
        }
    }

    /// Drops partitions that ended before the retention cutoff.
    pub fn enforce_retention(&self) -> Result<u64, StorageError> {
        let cutoff = self.retained_from();
        let expired: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write();
            let months: Vec<Month> = map
                .keys()
                .filter(|m| m.end_ms() <= cutoff)
                .copied()
                .collect();
            months.iter().filter_map(|m| map.remove(m)).collect()
        };
        for p in &expired {
            info!(partition = %p.month.dir_name(), "Dropping partition past retention.");
            std::fs::remove_dir_all(p.dir()).map_err(|e| io_err(p.dir(), e))?;
            self.metrics.partitions_dropped.inc();
        }
        self.evict_inactive_series();
        // Day sets of the past are rarely written again; reload them if they are.
        let recent = day_of(self.now()) - 2;
        for p in self.partitions.read().values() {
            p.evict_days_before(recent);
        }
        if !expired.is_empty() {
            self.update_gauges();
        }
        Ok(expired.len() as u64)
    }

    fn update_gauges(&self) {
        let partitions: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        let (mut parts, mut data, mut index) = (0, 0, 0);
        for p in &partitions {
            parts += p.parts().len();
            let (d, i) = p.disk_usage();
            data += d;
            index += i;
        }
        self.metrics.partitions.set(partitions.len() as i64);
        self.metrics.parts.set(parts as i64);
        self.metrics.data_bytes.set(data as i64);
        self.metrics.index_bytes.set(index as i64);
        if let Some(wal) = self.wal.get() {
            self.metrics.wal_bytes.set(wal.size_bytes() as i64);
        }
        self.metrics.head_rows.set(self.head.len() as i64);
        let (headers, pages) = self.caches.pages.take_counts();
        let index = self.caches.index.take_counts();
        let labels = self.caches.labels.take_counts();
        for (cache, counts) in [
            ("index", index),
            ("labels", labels),
            ("headers", headers),
            ("pages", pages),
        ] {
            for (result, n) in [("hit", counts.hits), ("miss", counts.misses)] {
                self.metrics
                    .cache_requests
                    .get_or_create(&vec![
                        ("cache", cache.to_string()),
                        ("result", result.to_string()),
                    ])
                    .inc_by(n);
            }
            self.metrics
                .cache_bytes
                .get_or_create(&vec![("cache", cache.to_string())])
                .set(counts.bytes as i64);
        }
    }

    /// Bytes on disk: (data parts, index parts, log).
    pub fn disk_usage(&self) -> (u64, u64, u64) {
        let partitions: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        let (data, index) = partitions
            .iter()
            .map(|p| p.disk_usage())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (data, index, self.wal.get().map_or(0, |w| w.size_bytes()))
    }

    /// Number of live series known to the engine.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    fn start_background(self: &Arc<Self>) {
        let mut threads = self.threads.lock();
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        let interval = self.config.flush_interval.max(Duration::from_millis(10));
        threads.push(spawn("strata-flush", weak.clone(), stop.clone(), interval, |s| {
            if let Err(e) = s.flush_inner() {
                error!(error = %e, "Flush failed; rows stay in memory and in the log, retrying.");
            }
            if let Err(e) = s.enforce_retention() {
                error!(error = %e, "Retention enforcement failed.");
            }
        }));
        threads.push(spawn(
            "strata-merge",
            weak,
            stop,
            Duration::from_secs(1),
            |s| {
                while s.merge_some() && !*s.stop.stopped.lock() {}
            },
        ));
    }

    /// Flushes, stops background work and closes the log. Later calls fail with `Closed`.
    pub fn close(&self) -> Result<(), StorageError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(StorageError::Closed);
        }
        let started = Instant::now();
        *self.stop.stopped.lock() = true;
        self.stop.wake.notify_all();
        self.flushed.1.notify_all();
        let threads: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        let current = std::thread::current().id();
        for t in threads {
            if t.thread().id() != current {
                let _ = t.join();
            }
        }
        let result = self.flush_inner();
        let closed = self.wal().close();
        self.dir_lock.lock().take();
        info!(took = ?started.elapsed(), "Storage closed.");
        result?;
        closed?;
        Ok(())
    }

    /// The sync mode in force.
    pub fn sync_mode(&self) -> SyncMode {
        self.config.sync.0
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            *self.stop.stopped.lock() = true;
            self.stop.wake.notify_all();
            if self.wal.get().is_some()
                && let Err(e) = self.close()
            {
                warn!(error = %e, "Storage dropped without close; final flush failed, the log keeps the rows.");
            }
        }
    }
}

fn spawn(
    name: &str,
    storage: Weak<Storage>,
    stop: Arc<Stop>,
    interval: Duration,
    work: fn(&Storage),
) -> JoinHandle<()> {
    let run = move || {
        while !stop.sleep(interval) {
            match storage.upgrade() {
                Some(s) => work(&s),
                None => return,
            }
        }
    };
    // Spawning fails only when the OS is out of threads; nothing works then.
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(run)
        .expect("spawn storage thread")
}

#[derive(Default)]
struct Replay {
    labels: HashMap<SeriesId, (Tenant, Vec<Label>)>,
    partition: Option<Arc<Partition>>,
    searches: Option<Vec<crate::mergeset::Search>>,
    rows: u64,
    lost: u64,
}

/// Series found through the index: each label set once with every id it
/// had, in order of their first ids. A series forgotten by the in-memory
/// map and seen again has two ids with the same labels (see
/// `evict_inactive_series`), and reads show it as one series.
struct Found {
    groups: Vec<SeriesGroup>,
    /// Every id of `groups`.
    ids: RoaringTreemap,
}

/// One label set and its ids, ascending.
struct SeriesGroup {
    /// `keys::labels_key` of the labels, and the labels (shared with the
    /// label set cache: copied only when handed out).
    set: resolve::KeyedLabels,
    /// `set`'s key, kept here too: sorting by it touches no other memory.
    key: u128,
    first: SeriesId,
    /// Empty unless the label set had several ids.
    more: Vec<SeriesId>,
}

impl SeriesGroup {
    fn labels(&self) -> &[Label] {
        &self.set.1
    }

    fn key(&self) -> u128 {
        self.key
    }

    fn ids(&self) -> impl Iterator<Item = SeriesId> + '_ {
        std::iter::once(self.first).chain(self.more.iter().copied())
    }
}

impl Found {
    /// Groups (id, hash of the encoded labels, labels), given in id order.
    /// Equal hashes are confirmed by comparing the labels.
    fn group(series: Vec<(SeriesId, resolve::KeyedLabels)>) -> Found {
        let mut groups: Vec<SeriesGroup> = Vec::with_capacity(series.len());
        let mut ids = RoaringTreemap::new();
        let mut by_key: HashMap<u128, usize, BuildHasherDefault<PassThroughHasher>> =
            HashMap::with_capacity_and_hasher(series.len(), Default::default());
        for (id, set) in series {
            ids.insert(id);
            let key = set.0;
            let same = match by_key.get(&key) {
                Some(&g) if groups[g].labels() == set.1.as_slice() => Some(g),
                // A hash collision of two label sets: look for an equal one.
                Some(_) => groups.iter().position(|g| g.labels() == set.1.as_slice()),
                None => None,
            };
            match same {
                Some(g) => groups[g].more.push(id),
                None => {
                    by_key.entry(key).or_insert(groups.len());
                    groups.push(SeriesGroup {
                        set,
                        key,
                        first: id,
                        more: Vec::new(),
                    });
                }
            }
        }
        Found { groups, ids }
    }
}

/// Days of `range` inside `partition_range`.
fn days_of(range: TimeRange, partition_range: TimeRange) -> std::ops::RangeInclusive<i64> {
    let start = range.start.max(partition_range.start);
    let end = range.end.min(partition_range.end);
    if start > end {
        #[allow(clippy::reversed_empty_ranges)]
        return 1..=0;
    }
    day_of(start)..=day_of(end)
}

fn truncate(set: BTreeSet<String>, limit: usize) -> Vec<String> {
    let take = if limit == 0 { usize::MAX } else { limit };
    set.into_iter().take(take).collect()
}

fn top(mut v: Vec<(String, u64)>, limit: usize) -> Vec<(String, u64)> {
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if limit > 0 {
        v.truncate(limit);
    }
    v
}
