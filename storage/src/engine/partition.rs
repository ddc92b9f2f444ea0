//! One monthly partition: its inverted index, its data parts, and the
//! in-memory sets that say which series are already registered in it.
//!
//! ```text
//! partitions/YYYY_MM/
//!   index/            mergeset table (items: see `keys`)
//!   parts/p-<seq>/    published data parts
//!   parts/tmp-<seq>/  a part being written (deleted on open)
//!   parts.json        manifest: the published parts, replaced atomically
//!   quarantine/       parts that failed to open, kept for inspection
//! ```
//!
//! A part is visible only once the manifest lists it, so a crash while writing
//! or merging leaves the previous, consistent list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use roaring::RoaringTreemap;
use tracing::{error, warn};

use super::StorageError;
use super::fsutil::{create_dir_all, io_err, sync_dir, write_atomically};
use super::head::Row;
use super::keys::{self, Month};
use super::resolve::LabelSetCache;
use crate::dedup::sort_and_dedup;
use crate::mergeset::{IndexCache, Table, TableOptions};
use crate::part::{PageCache, Part, PartWriter, merge_parts};
use crate::types::{Label, SeriesId, Tenant, TimeRange};

const MANIFEST: &str = "parts.json";

/// Merge when a partition has at least this many parts.
const MIN_PARTS_TO_MERGE: usize = 4;
/// Upper bound of parts merged in one step, to bound the merge's open files and time.
const MAX_PARTS_PER_MERGE: usize = 16;

/// The read caches every partition of a storage instance shares.
#[derive(Clone)]
pub struct Caches {
    pub index: Arc<IndexCache>,
    pub labels: Arc<LabelSetCache>,
    pub pages: Arc<PageCache>,
}

impl Caches {
    /// Splits `bytes`: a quarter for index blocks, a quarter for block
    /// headers (one covers hundreds of blocks, and every read needs one),
    /// an eighth for label sets (32 MiB of the default hold those of about
    /// 100k series), the rest for data pages.
    pub fn with_budget(bytes: usize) -> Caches {
        Caches {
            index: IndexCache::new(bytes / 4),
            labels: Arc::new(LabelSetCache::new(bytes / 8)),
            pages: PageCache::new(bytes / 4, bytes - bytes / 4 * 2 - bytes / 8),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    parts: Vec<String>,
}

pub struct Partition {
    pub month: Month,
    dir: PathBuf,
    pub index: Table,
    parts: RwLock<Arc<Vec<Arc<Part>>>>,
    manifest_lock: Mutex<()>,
    merge_lock: Mutex<()>,
    next_seq: AtomicU64,
    /// Series with a `series` item in this partition's index.
    registered: RwLock<RoaringTreemap>,
    /// Per day, series with `day` and `posting` items; loaded on first use.
    days: RwLock<HashMap<i64, RoaringTreemap>>,
    /// Serializes registrations so that items and log records are written once.
    pub registration: Mutex<()>,
    /// Shared by the parts of every partition.
    cache: Arc<PageCache>,
}

/// What a data part write or merge did.
#[derive(Debug, Default)]
pub struct PartStats {
    pub rows: u64,
}

impl Partition {
    /// Opens or creates the partition, reading through `caches`.
    pub fn open(dir: &Path, month: Month, caches: &Caches) -> Result<Partition, StorageError> {
        let parts_dir = dir.join("parts");
        create_dir_all(&parts_dir)?;
        let index = Table::open_with(
            &dir.join("index"),
            TableOptions {
                cache: Some(Arc::clone(&caches.index)),
                ..TableOptions::default()
            },
        )?;
        let cache = Arc::clone(&caches.pages);
        let listed = read_manifest(&dir.join(MANIFEST))?;
        let mut parts = Vec::new();
        let mut kept = Vec::new();
        let mut max_seq = 0;
        for name in &listed {
            max_seq = max_seq.max(part_seq(name).unwrap_or(0));
            let path = parts_dir.join(name);
            match Part::open_with_cache(&path, Arc::clone(&cache)) {
                Ok(part) => {
                    parts.push(Arc::new(part));
                    kept.push(name.clone());
                }
                Err(e) => {
                    error!(part = %path.display(), error = %e, "Part cannot be opened; moved to quarantine, its data is not readable.");
                    let quarantine = dir.join("quarantine");
                    create_dir_all(&quarantine)?;
                    std::fs::rename(&path, quarantine.join(name)).map_err(|e| io_err(&path, e))?;
                }
            }
        }
        if kept.len() != listed.len() {
            write_manifest(&dir.join(MANIFEST), &kept)?;
        }
        remove_unlisted(&parts_dir, &kept)?;

        let registered = load_series_ids(&index);

        Ok(Partition {
            month,
            dir: dir.to_path_buf(),
            index,
            parts: RwLock::new(Arc::new(parts)),
            manifest_lock: Mutex::new(()),
            merge_lock: Mutex::new(()),
            next_seq: AtomicU64::new(max_seq + 1),
            registered: RwLock::new(registered),
            days: RwLock::new(HashMap::new()),
            registration: Mutex::new(()),
            cache,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn parts(&self) -> Arc<Vec<Arc<Part>>> {
        self.parts.read().clone()
    }

    pub fn time_range(&self) -> TimeRange {
        TimeRange::new(self.month.start_ms(), self.month.end_ms() - 1)
    }

    /// Fast check without locks held for long: is the series registered on `day`?
    pub fn is_registered_on(&self, id: SeriesId, day: i64) -> bool {
        self.days.read().get(&day).is_some_and(|s| s.contains(id))
    }

    /// Index items needed to register `id` on `day`; empty when it already is.
    /// Must be called with `registration` held; `commit_registration` records it.
    pub fn registration_items(
        &self,
        id: SeriesId,
        tenant: Tenant,
        labels: &[Label],
        day: i64,
        new_in_partition: &mut bool,
        out: &mut Vec<Vec<u8>>,
    ) {
        self.load_day(day);
        if self.is_registered_on(id, day) {
            *new_in_partition = false;
            return;
        }
        *new_in_partition = !self.registered.read().contains(id);
        if *new_in_partition {
            out.push(keys::series_item(id, tenant, labels));
        }
        keys::posting_items(tenant, day, labels, id, out);
        out.push(keys::day_item(tenant, day, id));
    }

    /// Marks registrations whose items were added to the index.
    pub fn commit_registration(&self, id: SeriesId, day: i64) {
        self.registered.write().insert(id);
        self.days.write().entry(day).or_default().insert(id);
    }

    /// Loads the set of series registered on `day` from the index, once.
    fn load_day(&self, day: i64) {
        if self.days.read().contains_key(&day) {
            return;
        }
        let mut set = RoaringTreemap::new();
        let mut search = self.index.search();
        let mut tenant_seek = vec![keys::KIND_DAY];
        loop {
            search.seek(&tenant_seek);
            let tenant = match search.next_item() {
                Some(Ok(item)) => match keys::day_item_tenant(item) {
                    Some(t) => t,
                    None => break,
                },
                Some(Err(e)) => {
                    error!(error = %e, "Index block unreadable while loading a day.");
                    break;
                }
                None => break,
            };
            let prefix = keys::day_prefix(tenant, day);
            search.seek(&prefix);
            while let Some(item) = search.next_item() {
                match item {
                    Ok(item) if item.starts_with(&prefix) => {
                        if let Some(id) = keys::trailing_id(item) {
                            set.insert(id);
                        }
                    }
                    Ok(_) => break,
                    Err(e) => error!(error = %e, "Index block unreadable while loading a day."),
                }
            }
            // Next tenant: the smallest key after every key of this tenant.
            match keys::prefix_end(&prefix[..9]) {
                Some(next) => tenant_seek = next,
                None => break,
            }
        }
        self.days.write().entry(day).or_insert(set);
    }

    /// Series registered on `day` (loaded from the index on first use).
    pub fn day_set(&self, day: i64) -> RoaringTreemap {
        self.load_day(day);
        self.days.read().get(&day).cloned().unwrap_or_default()
    }

    /// Largest series id registered in the partition.
    pub fn max_series_id(&self) -> Option<SeriesId> {
        self.registered.read().max()
    }

    /// Calls `f` with every series registered in the partition.
    pub fn for_each_series(&self, f: &mut dyn FnMut(SeriesId, Tenant, Vec<Label>)) {
        load_series(&self.index, self.month, f);
    }

    /// Forgets loaded day sets older than `day` (they are reloaded on demand).
    pub fn evict_days_before(&self, day: i64) {
        self.days.write().retain(|d, _| *d >= day);
    }

    fn new_part_dirs(&self) -> (String, PathBuf, PathBuf) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("p-{seq:016x}");
        let parts_dir = self.dir.join("parts");
        (
            name.clone(),
            parts_dir.join(format!("tmp-{seq:016x}")),
            parts_dir.join(name),
        )
    }

    /// Writes rows grouped by ascending series id (timestamps of a series in
    /// any order) as a new part and publishes it.
    pub fn write_rows(
        &self,
        rows: &[Row],
        dedup_interval_ms: i64,
        drop_series: &dyn Fn(SeriesId) -> bool,
    ) -> Result<PartStats, StorageError> {
        let (name, tmp, final_dir) = self.new_part_dirs();
        let mut writer = PartWriter::create(&tmp)?;
        let mut stats = PartStats::default();
        let mut ts = Vec::new();
        let mut vs = Vec::new();
        for run in rows.chunk_by(|a, b| a.id == b.id) {
            let id = run[0].id;
            if drop_series(id) {
                continue;
            }
            ts.clear();
            vs.clear();
            ts.extend(run.iter().map(|r| r.ts));
            vs.extend(run.iter().map(|r| r.value));
            sort_and_dedup(&mut ts, &mut vs, dedup_interval_ms);
            writer.add(id, &ts, &vs)?;
            stats.rows += ts.len() as u64;
        }
        let meta = writer.finish()?;
        if meta.rows == 0 {
            // Every row belonged to deleted series; an empty part helps nobody.
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(stats);
        }
        self.publish(Some((&tmp, &final_dir, &name)), &[])?;
        Ok(stats)
    }

    /// Runs one merge if the policy wants one; returns whether it merged.
    pub fn merge_step(
        &self,
        dedup_interval_ms: i64,
        keep: TimeRange,
        drop_series: &dyn Fn(SeriesId) -> bool,
        force: bool,
    ) -> Result<bool, StorageError> {
        let _one_merge = self.merge_lock.lock();
        let parts = self.parts();
        let chosen = if force {
            if parts.len() < 2 {
                return Ok(false);
            }
            parts.iter().cloned().collect()
        } else {
            match pick_merge(&parts) {
                Some(chosen) => chosen,
                None => return Ok(false),
            }
        };
        let inputs: Vec<&Part> = chosen.iter().map(|p| p.as_ref()).collect();
        let (name, tmp, final_dir) = self.new_part_dirs();
        let meta = match merge_parts(&inputs, &tmp, dedup_interval_ms, keep, drop_series) {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
        };
        let removed: Vec<PathBuf> = chosen.iter().map(|p| p.path().to_path_buf()).collect();
        if meta.rows == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
            self.publish(None, &removed)?;
        } else {
            self.publish(Some((&tmp, &final_dir, &name)), &removed)?;
        }
        for path in removed {
            // Readers holding the part keep their mmaps; unlinking is safe.
            if let Err(e) = std::fs::remove_dir_all(&path) {
                warn!(part = %path.display(), error = %e, "Cannot remove merged part; it is no longer listed.");
            }
        }
        Ok(true)
    }

    /// Renames a finished part (tmp dir, final dir, name) into place, drops
    /// `removed` from the list, and swaps the manifest.
    fn publish(
        &self,
        added: Option<(&Path, &Path, &str)>,
        removed: &[PathBuf],
    ) -> Result<(), StorageError> {
        let _m = self.manifest_lock.lock();
        let mut next: Vec<Arc<Part>> = self
            .parts()
            .iter()
            .filter(|p| !removed.iter().any(|r| r == p.path()))
            .cloned()
            .collect();
        if let Some((tmp, final_dir, name)) = added {
            std::fs::rename(tmp, final_dir).map_err(|e| io_err(final_dir, e))?;
            sync_dir(&self.dir.join("parts"))?;
            let part = Arc::new(Part::open_with_cache(final_dir, Arc::clone(&self.cache))?);
            debug_assert_eq!(part_name(part.path()), name);
            next.push(part);
        }
        let names: Vec<String> = next.iter().map(|p| part_name(p.path())).collect();
        write_manifest(&self.dir.join(MANIFEST), &names)?;
        *self.parts.write() = Arc::new(next);
        Ok(())
    }

    /// Bytes of data parts on disk, and index bytes.
    pub fn disk_usage(&self) -> (u64, u64) {
        let data = self.parts().iter().map(|p| p.meta().size_bytes).sum();
        (data, self.index.disk_usage().1)
    }
}

/// Ids of every `series` item of the index (labels are not decoded).
fn load_series_ids(index: &Table) -> RoaringTreemap {
    let mut ids = RoaringTreemap::new();
    let mut search = index.search();
    search.seek(&[keys::KIND_SERIES]);
    while let Some(item) = search.next_item() {
        match item {
            Ok(item) if item.first() == Some(&keys::KIND_SERIES) => {
                if let Some(id) = item
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                {
                    ids.insert(id);
                }
            }
            Ok(_) => break,
            Err(e) => error!(error = %e, "Index block unreadable while loading series ids."),
        }
    }
    ids
}

/// Calls `f` with every `series` item of the index.
fn load_series(index: &Table, month: Month, f: &mut dyn FnMut(SeriesId, Tenant, Vec<Label>)) {
    let mut search = index.search();
    search.seek(&[keys::KIND_SERIES]);
    while let Some(item) = search.next_item() {
        match item {
            Ok(item) if item.first() == Some(&keys::KIND_SERIES) => {
                match keys::parse_series_item(item) {
                    Some((id, tenant, labels)) => f(id, tenant, labels),
                    None => {
                        warn!(partition = %month.dir_name(), "Skipping malformed series item in the index.")
                    }
                }
            }
            Ok(_) => break,
            Err(e) => {
                error!(error = %e, "Index block unreadable while loading series; those series are not found by label.")
            }
        }
    }
}

/// Picks the smallest parts whose merge makes real progress: the largest
/// chosen part is at most half of the output, which bounds write amplification.
fn pick_merge(parts: &[Arc<Part>]) -> Option<Vec<Arc<Part>>> {
    if parts.len() < MIN_PARTS_TO_MERGE {
        return None;
    }
    let mut sorted: Vec<Arc<Part>> = parts.to_vec();
    sorted.sort_by_key(|p| p.meta().size_bytes);
    for k in (2..=sorted.len().min(MAX_PARTS_PER_MERGE)).rev() {
        let chosen = &sorted[..k];
        let total: u64 = chosen.iter().map(|p| p.meta().size_bytes).sum();
        let largest = chosen[k - 1].meta().size_bytes;
        if largest.saturating_mul(2) <= total {
            return Some(chosen.to_vec());
        }
    }
    None
}

fn part_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn part_seq(name: &str) -> Option<u64> {
    u64::from_str_radix(name.strip_prefix("p-")?, 16).ok()
}

fn read_manifest(path: &Path) -> Result<Vec<String>, StorageError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice::<Manifest>(&data)
            .map(|m| m.parts)
            .map_err(|e| StorageError::Corrupted {
                path: path.to_path_buf(),
                offset: e.column() as u64,
                what: format!("cannot parse manifest: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(path, e)),
    }
}

fn write_manifest(path: &Path, parts: &[String]) -> Result<(), StorageError> {
    let data = serde_json::to_vec(&Manifest {
        parts: parts.to_vec(),
    })
    .unwrap_or_default();
    write_atomically(path, &data)
}

/// Deletes part directories a crash left behind: temporary ones and published
/// ones that never made it into the manifest.
fn remove_unlisted(parts_dir: &Path, listed: &[String]) -> Result<(), StorageError> {
    let entries = std::fs::read_dir(parts_dir).map_err(|e| io_err(parts_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(parts_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !listed.contains(&name) {
            warn!(part = %entry.path().display(), "Removing a part left over by an interrupted write or merge.");
            std::fs::remove_dir_all(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
        }
    }
    Ok(())
}
