//! A persistent sorted set of byte strings ("items"), the structure the
//! inverted index is built on.
//!
//! Items added are visible to searches as soon as `add_items` returns. They
//! live in memory until `flush` writes them as an immutable part; merges
//! combine parts. Every on-disk block carries a checksum.
//!
//! # Memory
//!
//! Each `add_items` call sorts its batch into an immutable in-memory run
//! (`Arc`) and appends it to a list under a short write lock. When more than
//! `max_mem_runs` runs pile up, the adding thread that wins a `try_lock`
//! merges the smallest runs of similar size into one (every input is at most
//! half of the output, so each item is copied O(log n) times); other adders
//! do not wait unless the list grows past four times the limit.
//!
//! A [`Search`] snapshots the `Arc`s of the runs and parts under a read lock
//! and then never touches a table lock again: a k-way merge (binary heap)
//! over the sources yields each distinct item once.
//!
//! # Directory layout
//!
//! ```text
//! <dir>/
//!   manifest.json            {"format":1,"parts":[3,9],"broken":[]}  the live parts
//!   manifest.json.tmp        the next manifest while it is being written
//!   0000000000000003/        a live part, named by its id in 16 hex digits
//!     blocks.bin
//!     index.bin
//!   000000000000000a.tmp/    a part being written
//! ```
//!
//! A part is written into `<id>.tmp/`, both files fsynced, the dir fsynced,
//! renamed to `<id>/`, the table dir fsynced; only then does a new manifest
//! (temp file, fsync, rename, fsync dir) list it. `open` deletes every part
//! dir, temp dir and temp manifest the manifest does not list: leftovers of a
//! crash. No manifest means an empty table; a manifest that does not parse
//! fails `open` (guessing would delete live parts).
//!
//! # `blocks.bin`
//!
//! ```text
//! "STMSBLK1"                      8-byte magic
//! block 0 | block 1 | ...         back to back from offset 8, no gaps
//! block = codec u8 | payload      codec 0: payload is the raw encoding
//!                                 codec 1: payload is one zstd frame of it
//! ```
//!
//! Raw encoding of a block of `n` sorted items (varint = unsigned LEB128).
//! Item 0 is not stored: it is the block's first item in `index.bin`.
//!
//! ```text
//! varint n | varint ctrl_len | varint lens_len | varint deltas_len
//! ctrl     ctrl_len bytes: one varint c for each item 1..n
//!            c = 0   same length as the previous item; its last t = min(8, len)
//!                    bytes, read as a big-endian integer, grow by the next
//!                    `deltas` varint (> 0); the bytes before them are unchanged
//!            c >= 1  the previous item's first c-1 bytes, then a suffix whose
//!                    length is the next `lens` varint, from `suffixes`
//! lens     lens_len bytes: one varint per c >= 1 item
//! deltas   deltas_len bytes: one varint per c = 0 item
//! suffixes the rest: the suffix of each c >= 1 item
//! ```
//!
//! Items are cut into blocks of `block_bytes` (64 KiB) raw item bytes. The
//! delta mode turns runs of keys that end in ascending big-endian ids (the
//! index's `... | series id`) into one small varint per key, which zstd then
//! squeezes further; the streams are kept apart so each compresses on its own
//! statistics. The encoder picks, per item, whichever mode is shorter.
//!
//! # `index.bin`
//!
//! ```text
//! "STMSIDX1" | items u64 LE | blocks u32 LE | entries_len u32 LE | codec u8
//! entries    codec 0: entries_len bytes as is; codec 1: one zstd frame of them
//! crc32c u32 LE of every byte before it
//!
//! entries = per block:  varint disk_len | varint raw_len | varint items
//!                       | crc32c u32 LE (of the block's disk bytes) | first item
//!           then:       max item (the part's last item)
//! first/max item = varint shared | varint suffix_len | suffix, where `shared`
//!                  bytes come from the previous block's first item (none for block 0)
//! ```
//!
//! Block offsets are implied: block 0 starts at 8, each next one where the
//! previous ends. The index is read into memory at open; a seek binary
//! searches the first items, then the decoded block.
//!
//! Invariants: items ascend strictly within a part, across blocks too (a
//! block's first item is greater than every item of the block before); blocks
//! are contiguous from offset 8; every part holds at least one item; a part
//! directory is complete and durable before any manifest names it.
//!
//! # Errors and corruption
//!
//! A block whose checksum (or decoding) fails makes `Search::next_item`
//! return `Err(Corrupted { path: <part>/blocks.bin, offset: <block offset> })`
//! once; the next call continues with the following block, so every other
//! item stays readable. A part whose `index.bin` (or block-file framing) is
//! damaged or missing is skipped by `open` with an `error!` log naming the
//! path and offset; it stays on disk, is listed as `broken` in the manifest
//! (so no open deletes it), is retried at every open, and is not counted by
//! `disk_usage`. A merge that meets a corrupted block fails with that error
//! and quarantines the part until the process restarts: merges leave it out
//! so its good blocks stay readable, and `force_merge` may then leave more
//! than one part.
//!
//! # Driving it
//!
//! Durability: `flush` (and `force_merge`) make every item added before the
//! call durable. Dropping a table discards unflushed items, exactly like a
//! crash: call `flush` before closing. Items added while a flush runs stay
//! in memory for the next one.
//!
//! The table runs no threads of its own. The owner flushes every few
//! seconds (which also bounds memory and the size of in-memory merges that
//! adders pay for), calls `merge_step` from a background loop until it
//! returns `false`, and may `force_merge` a partition that no longer
//! receives writes. All methods take `&self` and may run concurrently:
//! flushes and force merges take turns, merge steps pick disjoint parts.
//! A `Search` pins the runs and parts it started with (memory, and the
//! files of merged-away parts) until it is dropped, so keep searches short.

mod block;
mod cache;
mod manifest;
mod part;
mod run;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex, RwLock};
use tracing::{error, info, warn};

pub use cache::IndexCache;
use part::{Part, PartWriter, parse_part_dir_name};
use run::ItemRun;

#[derive(Debug, thiserror::Error)]
pub enum MergesetError {
    #[error("index i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index corrupted in {path} at offset {offset}: {what}")]
    Corrupted {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MergesetError + '_ {
    move |source| MergesetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), MergesetError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Tuning knobs; `TableOptions::default()` is what production uses.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Raw item bytes after which a block is cut. Default 64 KiB. Smaller
    /// blocks seek faster but compress worse.
    pub block_bytes: usize,
    /// `merge_step` merges once more than this many parts are live (and not
    /// already merging). Default 8.
    pub max_parts: usize,
    /// Most parts merged in one `merge_step`. Default 8.
    pub merge_width: usize,
    /// In-memory runs kept before adders merge them (up to this many at a
    /// time). More runs make adding cheaper and seeks dearer. Default 16.
    pub max_mem_runs: usize,
    /// zstd level of blocks. Default 3.
    pub zstd_level: i32,
    /// Bytes of decoded blocks cached for searches; 0 disables. Default 16 MiB.
    /// Ignored when `cache` is set.
    pub cache_bytes: usize,
    /// A cache shared with other tables. Default: none (the table has its
    /// own of `cache_bytes`).
    pub cache: Option<Arc<IndexCache>>,
}

impl Default for TableOptions {
    fn default() -> TableOptions {
        TableOptions {
            block_bytes: 64 << 10,
            max_parts: 8,
            merge_width: 8,
            max_mem_runs: 16,
            zstd_level: 3,
            cache_bytes: 16 << 20,
            cache: None,
        }
    }
}

/// What searches see: swapped as a whole under the state lock so a
/// snapshot holds every item exactly where it lives at that instant.
#[derive(Default)]
struct State {
    /// In-memory runs, in no particular order.
    runs: Vec<Arc<ItemRun>>,
    /// Runs being written by a flush or force merge; still searchable.
    flushing: Vec<Arc<ItemRun>>,
    /// Live parts.
    parts: Vec<Arc<Part>>,
}

pub struct Table {
    dir: PathBuf,
    opts: TableOptions,
    state: RwLock<State>,
    /// Held while merging in-memory runs, and briefly by a flush moving runs
    /// to `flushing`, so runs are only ever removed by one thread at a time.
    run_merge: Mutex<()>,
    /// One flush or force merge at a time: they share `flushing`.
    flush_lock: Mutex<()>,
    /// Serializes manifest writes; holds the ids of broken parts, which every
    /// manifest keeps listing.
    manifest: Mutex<Vec<u64>>,
    /// Ids of parts an ongoing merge is reading.
    merging: Mutex<HashSet<u64>>,
    merging_done: Condvar,
    next_part_id: AtomicU64,
    cache: Arc<IndexCache>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("dir", &self.dir).finish()
    }
}

/// Picks which of `sizes` to merge: the smallest first, then the next
/// smallest while it is no bigger than the sum so far, so each input is at
/// most half the output and an item is rewritten O(log n) times. At least
/// two (when there are two), at most `max`.
fn pick_merge(sizes: &[u64], max: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| sizes[i]);
    let mut sum = 0u64;
    let mut picked = Vec::new();
    for i in order {
        if picked.len() >= max.max(2) || (picked.len() >= 2 && sizes[i] > sum) {
            break;
        }
        sum += sizes[i];
        picked.push(i);
    }
    picked
}

impl Table {
    /// Opens (or creates) the table in `dir`.
    pub fn open(dir: &Path) -> Result<Table, MergesetError> {
        Table::open_with(dir, TableOptions::default())
    }

    /// Opens (or creates) the table in `dir` with explicit tuning.
    pub fn open_with(dir: &Path, opts: TableOptions) -> Result<Table, MergesetError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let listed = manifest::read(dir)?.unwrap_or_default();
        let keep: HashSet<u64> = listed.parts.iter().chain(&listed.broken).copied().collect();
        let mut max_id = keep.iter().copied().max().unwrap_or(0);

        let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                warn!(path = %entry.path().display(), "Unknown entry in index dir left alone.");
                continue;
            };
            if name == manifest::MANIFEST_FILE {
                continue;
            }
            let path = entry.path();
            if name == manifest::MANIFEST_TMP {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let live = parse_part_dir_name(name);
            let tmp = name.strip_suffix(".tmp").and_then(parse_part_dir_name);
            match live.or(tmp) {
                Some(id) if live.is_some() && keep.contains(&id) => {}
                Some(id) => {
                    max_id = max_id.max(id);
                    info!(path = %path.display(), "Deleting index part the manifest does not list (left by a crash).");
                    let is_dir = entry.file_type().map_err(io_err(&path))?.is_dir();
                    let removed = if is_dir {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    removed.map_err(io_err(&path))?;
                }
                None => warn!(path = %path.display(), "Unknown entry in index dir left alone."),
            }
        }

        let mut parts = Vec::new();
        let mut broken = Vec::new();
        let mut ids: Vec<u64> = keep.into_iter().collect();
        ids.sort_unstable();
        for id in ids {
            match Part::open(dir, id) {
                Ok(p) => parts.push(Arc::new(p)),
                Err(MergesetError::Corrupted { path, offset, what }) => {
                    error!(path = %path.display(), offset, error = %what, "Index part is corrupted; skipping it, its items are not searchable until it is repaired.");
                    broken.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Table {
            dir: dir.to_path_buf(),
            state: RwLock::new(State {
                parts,
                ..State::default()
            }),
            run_merge: Mutex::new(()),
            flush_lock: Mutex::new(()),
            manifest: Mutex::new(broken),
            merging: Mutex::new(HashSet::new()),
            merging_done: Condvar::new(),
            next_part_id: AtomicU64::new(max_id.saturating_add(1)),
            cache: opts
                .cache
                .clone()
                .unwrap_or_else(|| IndexCache::new(opts.cache_bytes)),
            opts,
        })
    }

    /// Adds items (duplicates are allowed and collapse). Visible to searches
    /// started after this returns.
    pub fn add_items<'a>(&self, items: impl IntoIterator<Item = &'a [u8]>) {
        let batch: Vec<&[u8]> = items.into_iter().collect();
        if batch.is_empty() {
            return;
        }
        let run = Arc::new(ItemRun::from_unsorted(batch));
        let runs = {
            let mut st = self.state.write();
            st.runs.push(run);
            st.runs.len()
        };
        let max = self.opts.max_mem_runs.max(2);
        if runs > max {
            // Past four times the limit adders wait for the merger: searches
            // must not slow down without bound under a write storm.
            self.merge_runs(runs > 4 * max);
        }
    }

    fn merge_runs(&self, wait: bool) {
        let _guard = if wait {
            self.run_merge.lock()
        } else {
            match self.run_merge.try_lock() {
                Some(g) => g,
                None => return,
            }
        };
        loop {
            let picked: Vec<Arc<ItemRun>> = {
                let st = self.state.read();
                if st.runs.len() <= self.opts.max_mem_runs.max(2) {
                    return;
                }
                let sizes: Vec<u64> = st.runs.iter().map(|r| r.len() as u64).collect();
                pick_merge(&sizes, self.opts.max_mem_runs)
                    .into_iter()
                    .map(|i| st.runs[i].clone())
                    .collect()
            };
            let items = picked.iter().map(|r| r.len()).sum();
            let bytes = picked.iter().map(|r| r.data_len()).sum();
            let mut merged = ItemRun::with_capacity(items, bytes);
            let mut search = Search::over(picked.iter().cloned().map(Cursor::run).collect(), None);
            while let Some(Ok(item)) = search.next_item() {
                merged.push(item);
            }
            drop(search);
            merged.shrink_to_fit();
            let mut st = self.state.write();
            st.runs
                .retain(|r| !picked.iter().any(|p| Arc::ptr_eq(p, r)));
            st.runs.push(Arc::new(merged));
        }
    }

    /// Moves every in-memory run to `flushing` and returns them.
    fn take_runs(&self) -> Vec<Arc<ItemRun>> {
        let _guard = self.run_merge.lock();
        let mut st = self.state.write();
        debug_assert!(st.flushing.is_empty());
        st.flushing = std::mem::take(&mut st.runs);
        st.flushing.clone()
    }

    /// Puts runs of a failed flush back so their items are neither lost nor
    /// doubled.
    fn restore_runs(&self) {
        let _guard = self.run_merge.lock();
        let mut st = self.state.write();
        let flushing = std::mem::take(&mut st.flushing);
        st.runs.extend(flushing);
    }

    /// Writes the merged view of `cursors` as a new durable (but unlisted)
    /// part.
    fn write_part(&self, cursors: Vec<Cursor>) -> Result<Arc<Part>, MergesetError> {
        let id = self.next_part_id.fetch_add(1, Ordering::Relaxed);
        let mut writer =
            PartWriter::create(&self.dir, id, self.opts.block_bytes, self.opts.zstd_level)?;
        let mut search = Search::over(cursors, None);
        while let Some(item) = search.next_item() {
            writer.add(item?)?;
        }
        Ok(Arc::new(writer.finish()?))
    }

    /// Lists `new` in the manifest in place of `replaced`, then swaps the
    /// searchable state in one step (dropping `flushing` when `flushed`).
    fn publish(
        &self,
        new: Arc<Part>,
        replaced: &[Arc<Part>],
        flushed: bool,
    ) -> Result<(), MergesetError> {
        let broken = self.manifest.lock();
        let mut ids: Vec<u64> = self
            .state
            .read()
            .parts
            .iter()
            .map(|p| p.id)
            .filter(|id| !replaced.iter().any(|r| r.id == *id))
            .collect();
        ids.push(new.id);
        // On failure the new part stays unlisted and the next open deletes
        // it; the replaced parts and runs stay live.
        manifest::write(&self.dir, &ids, &broken)?;
        let mut st = self.state.write();
        st.parts
            .retain(|p| !replaced.iter().any(|r| Arc::ptr_eq(p, r)));
        st.parts.push(new);
        if flushed {
            st.flushing.clear();
        }
        drop(st);
        for r in replaced {
            r.mark_removed();
        }
        Ok(())
    }

    /// Remembers a corrupted part met by a merge so merges skip it.
    fn quarantine_on_corruption(err: &MergesetError, parts: &[Arc<Part>]) {
        if let MergesetError::Corrupted { path, offset, what } = err {
            for p in parts.iter().filter(|p| p.blocks_path() == path) {
                error!(path = %path.display(), offset, error = %what, "Index part has a corrupted block; merges leave it out until restart.");
                p.quarantine();
            }
        }
    }

    /// Writes the in-memory items as a part and fsyncs it; after it returns
    /// every added item survives a crash.
    pub fn flush(&self) -> Result<(), MergesetError> {
        let _flush = self.flush_lock.lock();
        let runs = self.take_runs();
        if runs.is_empty() {
            return Ok(());
        }
        let result = self
            .write_part(runs.into_iter().map(Cursor::run).collect())
            .and_then(|part| self.publish(part, &[], true));
        if result.is_err() {
            self.restore_runs();
        }
        result
    }

    /// A consistent snapshot to iterate over.
    pub fn search(&self) -> Search {
        let st = self.state.read();
        let mut cursors = Vec::with_capacity(st.runs.len() + st.flushing.len() + st.parts.len());
        cursors.extend(st.runs.iter().chain(&st.flushing).cloned().map(Cursor::run));
        cursors.extend(st.parts.iter().cloned().map(Cursor::part));
        drop(st);
        Search::over(cursors, Some(self.cache.clone()))
    }

    /// Runs one merge step if the merge policy wants one; returns whether it merged.
    pub fn merge_step(&self) -> Result<bool, MergesetError> {
        let picked: Vec<Arc<Part>> = {
            let mut merging = self.merging.lock();
            let st = self.state.read();
            let candidates: Vec<&Arc<Part>> = st
                .parts
                .iter()
                .filter(|p| !merging.contains(&p.id) && !p.is_quarantined())
                .collect();
            if candidates.len() <= self.opts.max_parts {
                return Ok(false);
            }
            let sizes: Vec<u64> = candidates.iter().map(|p| p.items()).collect();
            let picked: Vec<Arc<Part>> = pick_merge(&sizes, self.opts.merge_width)
                .into_iter()
                .map(|i| candidates[i].clone())
                .collect();
            merging.extend(picked.iter().map(|p| p.id));
            picked
        };
        let result = self
            .write_part(picked.iter().cloned().map(Cursor::part).collect())
            .and_then(|part| self.publish(part, &picked, false));
        if let Err(e) = &result {
            Table::quarantine_on_corruption(e, &picked);
        }
        self.end_merge(&picked);
        result.map(|()| true)
    }

    fn end_merge(&self, parts: &[Arc<Part>]) {
        let mut merging = self.merging.lock();
        for p in parts {
            merging.remove(&p.id);
        }
        self.merging_done.notify_all();
    }

    /// Merges everything (memory and disk) into a single part.
    pub fn force_merge(&self) -> Result<(), MergesetError> {
        let _flush = self.flush_lock.lock();
        let parts: Vec<Arc<Part>> = {
            let mut merging = self.merging.lock();
            while !merging.is_empty() {
                self.merging_done.wait(&mut merging);
            }
            let st = self.state.read();
            let parts: Vec<Arc<Part>> = st
                .parts
                .iter()
                .filter(|p| !p.is_quarantined())
                .cloned()
                .collect();
            merging.extend(parts.iter().map(|p| p.id));
            parts
        };
        let runs = self.take_runs();
        let result = if runs.is_empty() && parts.len() <= 1 {
            Ok(())
        } else {
            let mut cursors: Vec<Cursor> = runs.into_iter().map(Cursor::run).collect();
            cursors.extend(parts.iter().cloned().map(Cursor::part));
            self.write_part(cursors)
                .and_then(|part| self.publish(part, &parts, true))
        };
        if let Err(e) = &result {
            Table::quarantine_on_corruption(e, &parts);
            self.restore_runs();
        }
        self.end_merge(&parts);
        result
    }

    /// Items held in memory (not yet flushed; duplicates across runs
    /// counted once per run) and the bytes they take: lets the owner flush
    /// early when memory grows.
    pub fn in_memory(&self) -> (usize, usize) {
        let st = self.state.read();
        st.runs
            .iter()
            .chain(&st.flushing)
            .fold((0, 0), |(items, bytes), r| {
                (items + r.len(), bytes + r.mem_bytes())
            })
    }

    /// Number of parts on disk and their total size in bytes.
    pub fn disk_usage(&self) -> (usize, u64) {
        let st = self.state.read();
        (
            st.parts.len(),
            st.parts.iter().map(|p| p.disk_bytes()).sum(),
        )
    }
}

/// One source of the merged view: an in-memory run or a part.
enum Cursor {
    Run {
        run: Arc<ItemRun>,
        pos: usize,
    },
    Part {
        part: Arc<Part>,
        /// Number of the loaded block; `block_count()` once exhausted.
        block: usize,
        run: Option<Arc<ItemRun>>,
        pos: usize,
    },
}

impl Cursor {
    fn run(run: Arc<ItemRun>) -> Cursor {
        Cursor::Run { run, pos: 0 }
    }

    fn part(part: Arc<Part>) -> Cursor {
        Cursor::Part {
            part,
            block: usize::MAX,
            run: None,
            pos: 0,
        }
    }

    fn current(&self) -> Option<&[u8]> {
        match self {
            Cursor::Run { run, pos } => run.get(*pos),
            Cursor::Part { run, pos, .. } => run.as_ref()?.get(*pos),
        }
    }

    fn seek(
        &mut self,
        key: &[u8],
        cache: Option<&IndexCache>,
        errors: &mut VecDeque<MergesetError>,
    ) {
        match self {
            Cursor::Run { run, pos } => *pos = run.lower_bound(key),
            Cursor::Part {
                part,
                block,
                run,
                pos,
            } => {
                let Some(target) = part.block_for(key) else {
                    *block = part.block_count();
                    *run = None;
                    return;
                };
                if *block != target || run.is_none() {
                    load_block(part, target, block, run, pos, cache, errors);
                }
                if *block == target
                    && let Some(r) = run
                {
                    *pos = r.lower_bound(key);
                    if *pos >= r.len() {
                        load_block(part, target + 1, block, run, pos, cache, errors);
                    }
                }
            }
        }
    }

    fn advance(&mut self, cache: Option<&IndexCache>, errors: &mut VecDeque<MergesetError>) {
        match self {
            Cursor::Run { pos, .. } => *pos += 1,
            Cursor::Part {
                part,
                block,
                run,
                pos,
            } => {
                *pos += 1;
                if run.as_ref().is_some_and(|r| *pos >= r.len()) {
                    load_block(part, *block + 1, block, run, pos, cache, errors);
                }
            }
        }
    }
}

/// Loads the first readable block at or after `from` into a part cursor,
/// queueing an error for every corrupted block it skips.
fn load_block(
    part: &Part,
    from: usize,
    block: &mut usize,
    run: &mut Option<Arc<ItemRun>>,
    pos: &mut usize,
    cache: Option<&IndexCache>,
    errors: &mut VecDeque<MergesetError>,
) {
    *pos = 0;
    for i in from..part.block_count() {
        let key = (part.uid, i as u32);
        if let Some(hit) = cache.and_then(|c| c.get(key)) {
            *block = i;
            *run = Some(hit);
            return;
        }
        match part.read_block(i) {
            Ok(decoded) => {
                let decoded = Arc::new(decoded);
                if let Some(c) = cache {
                    c.insert(key, decoded.clone());
                }
                *block = i;
                *run = Some(decoded);
                return;
            }
            Err(e) => errors.push_back(e),
        }
    }
    *block = part.block_count();
    *run = None;
}

/// Iterates items in ascending byte order, each item once.
pub struct Search {
    sources: Vec<Cursor>,
    /// Min-heap of indices into `sources` that have a current item.
    heap: Vec<usize>,
    /// Corrupted blocks met while positioning, reported before more items.
    errors: VecDeque<MergesetError>,
    item: Vec<u8>,
    cache: Option<Arc<IndexCache>>,
    positioned: bool,
}

impl Search {
    fn over(sources: Vec<Cursor>, cache: Option<Arc<IndexCache>>) -> Search {
        Search {
            heap: Vec::with_capacity(sources.len()),
            sources,
            errors: VecDeque::new(),
            item: Vec::new(),
            cache,
            positioned: false,
        }
    }

    /// Positions at the first item >= `key`.
    pub fn seek(&mut self, key: &[u8]) {
        self.positioned = true;
        self.errors.clear();
        self.heap.clear();
        let cache = self.cache.as_deref();
        for (i, src) in self.sources.iter_mut().enumerate() {
            src.seek(key, cache, &mut self.errors);
            if src.current().is_some() {
                self.heap.push(i);
            }
        }
        for i in (0..self.heap.len() / 2).rev() {
            sift_down(&mut self.heap, &self.sources, i);
        }
    }

    /// The next item, or `None` at the end. Errors name file and offset; the
    /// search can continue past a corrupted block with the next call.
    pub fn next_item(&mut self) -> Option<Result<&[u8], MergesetError>> {
        if !self.positioned {
            self.seek(&[]);
        }
        if let Some(e) = self.errors.pop_front() {
            return Some(Err(e));
        }
        let &top = self.heap.first()?;
        self.item.clear();
        self.item
            .extend_from_slice(self.sources[top].current().unwrap_or_default());
        let cache = self.cache.as_deref();
        // Advance the top, then every other source holding a duplicate.
        let mut top = top;
        loop {
            let src = &mut self.sources[top];
            src.advance(cache, &mut self.errors);
            if src.current().is_none() {
                self.heap.swap_remove(0);
            }
            sift_down(&mut self.heap, &self.sources, 0);
            match self.heap.first() {
                Some(&next) if self.sources[next].current() == Some(self.item.as_slice()) => {
                    top = next;
                }
                _ => break,
            }
        }
        Some(Ok(&self.item))
    }
}

/// Restores the heap below `i` after the cursor at `heap[i]` moved forward.
/// The moved cursor usually either stays first (scanning one source) or
/// sinks deep (merging interleaved sources): the first case costs two
/// comparisons; the second descends along the smaller children and climbs
/// back, about one comparison per level instead of two.
fn sift_down(heap: &mut [usize], sources: &[Cursor], i: usize) {
    let len = heap.len();
    let x = match heap.get(i) {
        Some(&x) => x,
        None => return,
    };
    let cur = |s: usize| sources[s].current();
    let (l, r) = (2 * i + 1, 2 * i + 2);
    let stays = (l >= len || cur(x) <= cur(heap[l])) && (r >= len || cur(x) <= cur(heap[r]));
    if stays {
        return;
    }
    let mut pos = i;
    loop {
        let l = 2 * pos + 1;
        if l >= len {
            break;
        }
        let c = if l + 1 < len && cur(heap[l + 1]) < cur(heap[l]) {
            l + 1
        } else {
            l
        };
        heap[pos] = heap[c];
        pos = c;
    }
    while pos > i {
        let parent = (pos - 1) / 2;
        if cur(x) >= cur(heap[parent]) {
            break;
        }
        heap[pos] = heap[parent];
        pos = parent;
    }
    heap[pos] = x;
}
