//! Write-ahead log with group commit.
//!
//! The engine hands the log opaque payloads; the log frames them, orders them,
//! makes them durable according to the sync mode, and gives them back in the
//! same order on replay. A torn or corrupted tail (the process died mid-write)
//! is cut off at the last good record; corruption before the tail is an error
//! naming the file and offset.
//!
//! # Files
//!
//! The log is a directory of segment files named by id in 20 zero-padded
//! digits, so that names sort like ids: `00000000000000000001.wal`, ...
//! Appends go to the segment with the highest id. A segment is created as
//! `<id>.wal.tmp`, its header fsynced, then renamed into place and the
//! directory fsynced; leftover `.wal.tmp` files are deleted on open.
//!
//! # Byte layout (all integers little-endian, format version 1)
//!
//! ```text
//! segment:
//! +--------+---------+------------+-----------+------------+
//! | magic  | version | segment id | first lsn | header crc |   32-byte header
//! | 8 B    | u32     | u64        | u64       | u32        |
//! +--------+---------+------------+-----------+------------+
//! | record frame | record frame | ...                          0 or more frames
//! +--------------+--------------+
//!
//! magic       "STRATWAL"
//! version     1
//! segment id  the id in the file name
//! first lsn   lsn of the first record in this segment
//! header crc  crc32c of header bytes 0..28
//!
//! record frame:
//! +--------+--------+-----------------+
//! | len    | crc    | payload         |
//! | u32    | u32    | len bytes       |
//! +--------+--------+-----------------+
//!
//! len         payload length, at most MAX_RECORD_LEN
//! crc         crc32c over the 4 len bytes followed by the payload
//! ```
//!
//! Lsns are not stored per record: the n-th record (from 0) of a segment has
//! lsn `first lsn + n`. Lsns start at 1 and continue across reopen.
//!
//! # Invariants
//!
//! - Every segment except the last is complete and fsynced: `rotate` writes
//!   out and fsyncs the old segment before the new one exists, and `open`
//!   truncates and fsyncs a torn tail before it creates the segment it
//!   appends to. A kill -9 or power loss can therefore only damage the end of
//!   the last segment.
//! - A segment file that exists has a complete header (temp file + rename).
//!   A last segment with a short or invalid header and no bytes beyond the
//!   header is still accepted as the remains of an interrupted creation: it
//!   holds no record and is deleted on open.
//! - After `open`, appends go to a new segment; a replayed segment is never
//!   written again.
//!
//! # Replay and damage
//!
//! `open` reads every segment in id order and hands each intact record to
//! the caller. Damage in the last segment that runs to the end of the file
//! (a short frame header, a payload cut short, a crc mismatch with no intact
//! frame right after it) is a torn tail: the file is truncated to the last
//! intact record, fsynced, and the cut bytes are counted in
//! `ReplayStats::truncated_bytes`. Anything else, namely damage in a segment
//! that is not the last, a bad header in a segment holding data, or a crc
//! mismatch followed by an intact frame, is `WalError::Corrupted` naming the
//! file and the frame offset, and `open` fails rather than silently dropping
//! acknowledged records. Detecting mid-log damage looks one frame ahead: a
//! flipped bit in a length field near the end of the last segment is
//! indistinguishable from a torn tail and is cut off.
//!
//! # Concurrency and durability
//!
//! `append` frames the payload into an in-memory buffer under a short mutex
//! and returns its lsn; buffer order is lsn order. `sync_to` makes the
//! buffer reach the file with leader/follower group commit: the first caller
//! that is not yet covered becomes the leader, takes the whole buffer, and
//! writes it (and in `Batch` mode fdatasyncs it) holding only the writer
//! lock, so appends continue meanwhile; later callers wait on a condvar and
//! are usually covered by the leader's write. In every mode a record has
//! been handed to the kernel with write(2) before `sync_to` returns, so a
//! kill -9 never loses an acknowledged record; `Batch` adds an fdatasync
//! covering it, `Interval(d)` leaves the fsync to a background thread
//! running every `d`, `None` fsyncs only on `rotate` and `close`.
//!
//! Any write or fsync error poisons the log: after a failed fsync the kernel
//! may have dropped the dirty pages, so nothing later can be acknowledged
//! honestly. Every later append, sync and rotate returns the original error;
//! reopening (replay) is the way back.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use tracing::{error, warn};

mod format;
#[cfg(test)]
mod tests;

pub use format::MAX_RECORD_LEN;

/// Position of a record in the log; increases with every append.
pub type Lsn = u64;

/// Identifies one segment file; increases with every rotation.
pub type SegmentId = u64;

/// When an append counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge after the record is fsynced; concurrent appends share one fsync.
    Batch,
    /// Acknowledge after the record reached the OS; fsync at this interval.
    Interval(Duration),
    /// Acknowledge after the record reached the OS; never fsync on append.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("wal record corrupted in {path} at offset {offset}: {what}")]
    Corrupted {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("wal is closed")]
    Closed,
}

/// What replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Segments with a valid header that were read.
    pub segments: u64,
    /// Records handed to `on_record`.
    pub records: u64,
    /// Payload bytes handed to `on_record` (frames and headers excluded).
    pub bytes: u64,
    /// Bytes cut off a torn tail.
    pub truncated_bytes: u64,
}

/// Counters since open, for self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended.
    pub records: u64,
    /// write(2) batches issued to segment files.
    pub writes: u64,
    /// fdatasyncs covering records (segment creation not counted).
    pub fsyncs: u64,
}

/// Buffered records beyond which `append` itself flushes (and in `Batch` mode
/// syncs), so a caller that never calls `sync_to` cannot grow memory without
/// bound.
const MAX_PENDING_BYTES: usize = 16 << 20;

/// Capacity of the write buffer kept between flushes; a burst above it is
/// released afterwards.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

pub struct Wal {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    dir: PathBuf,
    mode: SyncMode,
    /// Records appended but not yet handed to the writer. Lock order:
    /// `writer` before `pending` before `progress`; `append` takes only
    /// `pending`.
    pending: Mutex<Pending>,
    /// The segment being appended to; held for a write(2)+fsync, a rotation
    /// or a close, never by `append`.
    writer: Mutex<Writer>,
    progress: Mutex<Progress>,
    /// Signalled whenever `progress` changes.
    progress_cv: Condvar,
    /// Segments before the current one, in id order.
    sealed: Mutex<Vec<Sealed>>,
    /// Highest lsn handed out, so `sync_to` can clamp without `pending`.
    last_lsn: AtomicU64,
    current_id: AtomicU64,
    total_bytes: AtomicU64,
    /// Mirrors `progress.failure.is_some()` for the append fast path.
    failed: AtomicBool,
    records: AtomicU64,
    writes: AtomicU64,
    fsyncs: AtomicU64,
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

struct Pending {
    buf: Vec<u8>,
    next_lsn: Lsn,
    closed: bool,
}

struct Writer {
    file: Arc<fs::File>,
    id: SegmentId,
    path: PathBuf,
    len: u64,
    /// Swapped with `Pending::buf` so that steady state allocates nothing.
    spare: Vec<u8>,
}

#[derive(Default)]
struct Progress {
    /// Every record up to here is in the kernel.
    written: Lsn,
    /// Every record up to here is fsynced.
    synced: Lsn,
    /// A `sync_to` caller is writing; others wait for it.
    leader: bool,
    closed: bool,
    failure: Option<Failure>,
}

struct Sealed {
    id: SegmentId,
    path: PathBuf,
    len: u64,
}

/// The error that poisoned the log, kept to answer every later call.
#[derive(Clone)]
struct Failure {
    path: PathBuf,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn to_error(&self) -> WalError {
        WalError::Io {
            path: self.path.clone(),
            source: io::Error::new(
                self.kind,
                format!(
                    "log failed earlier and refuses writes until reopened: {}",
                    self.message
                ),
            ),
        }
    }
}

/// Clears the leader flag even if the leader's write panics, so followers
/// never wait forever.
struct LeaderGuard<'a>(&'a Shared);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.0.progress.lock().leader = false;
        self.0.progress_cv.notify_all();
    }
}

impl Wal {
    /// Opens the log in `dir`, calling `on_record` with every intact record
    /// payload in append order, then positions appends after the last one.
    ///
    /// Creates `dir` if missing. Appends go to a new segment. Returns the
    /// first error of `on_record` unchanged.
    pub fn open(
        dir: &Path,
        mode: SyncMode,
        on_record: &mut dyn FnMut(&[u8]) -> Result<(), WalError>,
    ) -> Result<(Wal, ReplayStats), WalError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WalError::Io { path, source }
        };
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                format::sync_dir(parent)?;
            }
        }

        let mut ids = Vec::new();
        let mut removed_any = false;
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = format::parse_segment_file_name(name) {
                ids.push(id);
            } else if name.ends_with(format::TEMP_SUFFIX) {
                // A segment whose creation never finished; it held no record.
                fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                removed_any = true;
            }
        }
        ids.sort_unstable();

        let mut stats = ReplayStats::default();
        let mut sealed = Vec::with_capacity(ids.len());
        let mut next_lsn: Lsn = 1;
        let mut total_bytes = 0u64;
        for (i, &id) in ids.iter().enumerate() {
            let path = dir.join(format::segment_file_name(id));
            let is_last = i + 1 == ids.len();
            let seg = format::replay_segment(&path, id, is_last, on_record)?;
            stats.truncated_bytes += seg.truncated;
            let Some(header) = seg.header else {
                removed_any = true;
                continue;
            };
            stats.segments += 1;
            stats.records += seg.records;
            stats.bytes += seg.payload_bytes;
            next_lsn = next_lsn.max(header.first_lsn + seg.records);
            total_bytes += seg.len;
            sealed.push(Sealed {
                id,
                path,
                len: seg.len,
            });
        }
        if removed_any {
            format::sync_dir(dir)?;
        }

        let id = ids.last().map_or(1, |last| last + 1);
        let (file, path) = format::create_segment(dir, id, next_lsn)?;
        let header_len = format::HEADER_LEN as u64;
        let last_lsn = next_lsn - 1;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            mode,
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                next_lsn,
                closed: false,
            }),
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                id,
                path,
                len: header_len,
                spare: Vec::new(),
            }),
            progress: Mutex::new(Progress {
                written: last_lsn,
                synced: last_lsn,
                ..Progress::default()
            }),
            progress_cv: Condvar::new(),
            sealed: Mutex::new(sealed),
            last_lsn: AtomicU64::new(last_lsn),
            current_id: AtomicU64::new(id),
            total_bytes: AtomicU64::new(total_bytes + header_len),
            failed: AtomicBool::new(false),
            records: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        });
        let syncer = match mode {
            SyncMode::Interval(every) => {
                Some(spawn_syncer(Arc::clone(&shared), every).map_err(io_err(dir))?)
            }
            SyncMode::Batch | SyncMode::None => None,
        };
        let wal = Wal {
            shared,
            syncer: Mutex::new(syncer),
        };
        Ok((wal, stats))
    }

    /// Appends one record. Appends are totally ordered: a record appended after
    /// another returns (and replays) after it. Not yet durable: see `sync_to`.
    ///
    /// Payloads above `MAX_RECORD_LEN` are refused with an `InvalidInput` i/o
    /// error. Normally only copies into memory; if more than 16 MiB are
    /// buffered because nobody syncs, it flushes like `sync_to`.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        let s = &*self.shared;
        let Some(frame_header) = format::frame_header(payload) else {
            return Err(WalError::Io {
                path: s.dir.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "record of {} bytes exceeds the limit of {MAX_RECORD_LEN} bytes",
                        payload.len()
                    ),
                ),
            });
        };
        let (lsn, buffered) = {
            let mut p = s.pending.lock();
            if p.closed {
                return Err(WalError::Closed);
            }
            if s.failed.load(Ordering::Acquire) {
                drop(p);
                return Err(s.failure_error());
            }
            p.buf.extend_from_slice(&frame_header);
            p.buf.extend_from_slice(payload);
            let lsn = p.next_lsn;
            p.next_lsn += 1;
            s.last_lsn.store(lsn, Ordering::Release);
            (lsn, p.buf.len())
        };
        s.records.fetch_add(1, Ordering::Relaxed);
        if buffered > MAX_PENDING_BYTES {
            self.sync_to(lsn)?;
        }
        Ok(lsn)
    }

    /// Blocks until the record at `lsn` is durable per the sync mode.
    ///
    /// An `lsn` not handed out yet means "everything appended so far".
    /// Returns at once for records already covered, even after `close`.
    pub fn sync_to(&self, lsn: Lsn) -> Result<(), WalError> {
        let s = &*self.shared;
        let lsn = lsn.min(s.last_lsn.load(Ordering::Acquire));
        let batch = s.mode == SyncMode::Batch;
        let mut progress = s.progress.lock();
        loop {
            let covered = if batch {
                progress.synced
            } else {
                progress.written
            };
            if covered >= lsn {
                return Ok(());
            }
            if let Some(failure) = &progress.failure {
                return Err(failure.to_error());
            }
            if progress.closed {
                return Err(WalError::Closed);
            }
            if progress.leader {
                s.progress_cv.wait(&mut progress);
                continue;
            }
            progress.leader = true;
            MutexGuard::unlocked(&mut progress, || {
                let _leader = LeaderGuard(s);
                let mut writer = s.writer.lock();
                s.flush_locked(&mut writer, batch)
            })?;
        }
    }

    /// Starts a new segment; every record appended before this call is in a
    /// segment with an id lower than the returned one.
    ///
    /// The old segment is written out and fsynced first, in every sync mode.
    pub fn rotate(&self) -> Result<SegmentId, WalError> {
        let s = &*self.shared;
        let mut writer = s.writer.lock();
        if s.pending.lock().closed {
            return Err(WalError::Closed);
        }
        let last = s.flush_locked(&mut writer, true)?;
        let id = writer.id + 1;
        let (file, path) = format::create_segment(&s.dir, id, last + 1).map_err(|e| s.poison(e))?;
        let header_len = format::HEADER_LEN as u64;
        let spare = std::mem::take(&mut writer.spare);
        let old = std::mem::replace(
            &mut *writer,
            Writer {
                file: Arc::new(file),
                id,
                path,
                len: header_len,
                spare,
            },
        );
        s.sealed.lock().push(Sealed {
            id: old.id,
            path: old.path,
            len: old.len,
        });
        s.total_bytes.fetch_add(header_len, Ordering::Relaxed);
        s.current_id.store(id, Ordering::Release);
        Ok(id)
    }

    /// Deletes every segment with an id lower than `id`.
    ///
    /// The current segment is never deleted, whatever `id` says. Deletes
    /// oldest first, then fsyncs the directory.
    pub fn remove_segments_before(&self, id: SegmentId) -> Result<(), WalError> {
        let s = &*self.shared;
        let doomed: Vec<Sealed> = {
            let mut sealed = s.sealed.lock();
            let n = sealed.partition_point(|seg| seg.id < id);
            sealed.drain(..n).collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        let mut doomed = doomed.into_iter();
        while let Some(seg) = doomed.next() {
            match fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    let path = seg.path.clone();
                    // Keep tracking what is still on disk so a retry can
                    // delete it.
                    let mut sealed = s.sealed.lock();
                    let rest: Vec<Sealed> = std::iter::once(seg).chain(doomed).collect();
                    sealed.splice(0..0, rest);
                    return Err(WalError::Io { path, source });
                }
            }
            s.total_bytes.fetch_sub(seg.len, Ordering::Relaxed);
        }
        format::sync_dir(&s.dir)
    }

    /// Total size of the segments on disk.
    pub fn size_bytes(&self) -> u64 {
        self.shared.total_bytes.load(Ordering::Relaxed)
    }

    /// Flushes and fsyncs everything appended, then refuses further appends.
    ///
    /// Stops the background fsync thread. Calling it again is a no-op; on a
    /// poisoned log it returns the original error.
    pub fn close(&self) -> Result<(), WalError> {
        let s = &*self.shared;
        let result = {
            let mut writer = s.writer.lock();
            s.pending.lock().closed = true;
            let result = s.flush_locked(&mut writer, true);
            s.progress.lock().closed = true;
            s.progress_cv.notify_all();
            result
        };
        self.stop_syncer();
        result.map(|_| ())
    }

    /// Id of the segment appends currently go to.
    pub fn current_segment(&self) -> SegmentId {
        self.shared.current_id.load(Ordering::Acquire)
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        let s = &*self.shared;
        WalStats {
            records: s.records.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
        }
    }

    fn stop_syncer(&self) {
        let Some(handle) = self.syncer.lock().take() else {
            return;
        };
        *self.shared.stop.lock() = true;
        self.shared.stop_cv.notify_all();
        if handle.join().is_err() {
            warn!(dir = %self.shared.dir.display(), "Wal fsync thread panicked.");
        }
    }
}

/// Dropping the log closes it: buffered records are written and fsynced
/// (errors are logged) and the background thread stops.
impl Drop for Wal {
    fn drop(&mut self) {
        let closed = self.shared.pending.lock().closed;
        if closed {
            self.stop_syncer();
        } else if let Err(e) = self.close() {
            warn!(dir = %self.shared.dir.display(), error = %e, "Closing dropped wal failed.");
        }
    }
}

impl Shared {
    /// Writes every buffered record to the current segment and, if `sync`,
    /// fdatasyncs it. Returns the lsn of the last record written. The caller
    /// holds the writer lock.
    fn flush_locked(&self, writer: &mut Writer, sync: bool) -> Result<Lsn, WalError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failure_error());
        }
        let last = {
            let mut pending = self.pending.lock();
            std::mem::swap(&mut pending.buf, &mut writer.spare);
            pending.next_lsn - 1
        };
        if !writer.spare.is_empty() {
            if let Err(e) = (&*writer.file).write_all(&writer.spare) {
                return Err(self.poison(WalError::Io {
                    path: writer.path.clone(),
                    source: e,
                }));
            }
            let n = writer.spare.len() as u64;
            writer.len += n;
            self.total_bytes.fetch_add(n, Ordering::Relaxed);
            self.writes.fetch_add(1, Ordering::Relaxed);
            writer.spare.clear();
            writer.spare.shrink_to(KEEP_BUFFER_BYTES);
        }
        let need_sync = {
            let mut progress = self.progress.lock();
            progress.written = progress.written.max(last);
            sync && progress.synced < last
        };
        if need_sync {
            if let Err(e) = writer.file.sync_data() {
                return Err(self.poison(WalError::Io {
                    path: writer.path.clone(),
                    source: e,
                }));
            }
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            let mut progress = self.progress.lock();
            progress.synced = progress.synced.max(last);
        }
        self.progress_cv.notify_all();
        Ok(last)
    }

    /// The `Interval` tick: write out the buffer, then fdatasync without
    /// holding the writer lock, so `sync_to` callers (who only need the
    /// write) are not held up by the fsync.
    fn background_sync(&self) -> Result<(), WalError> {
        let (file, path, last) = {
            let mut writer = self.writer.lock();
            let last = self.flush_locked(&mut writer, false)?;
            (Arc::clone(&writer.file), writer.path.clone(), last)
        };
        if self.progress.lock().synced >= last {
            return Ok(());
        }
        // A rotation meanwhile is harmless: it fsynced the older segment, so
        // every record up to `last` is durable once this file is synced.
        if let Err(e) = file.sync_data() {
            return Err(self.poison(WalError::Io { path, source: e }));
        }
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        let mut progress = self.progress.lock();
        progress.synced = progress.synced.max(last);
        Ok(())
    }

    /// Records the first write-path failure and returns `err`.
    fn poison(&self, err: WalError) -> WalError {
        let failure = match &err {
            WalError::Io { path, source } => Failure {
                path: path.clone(),
                kind: source.kind(),
                message: source.to_string(),
            },
            WalError::Corrupted { path, what, .. } => Failure {
                path: path.clone(),
                kind: io::ErrorKind::Other,
                message: what.clone(),
            },
            WalError::Closed => return err,
        };
        error!(dir = %self.dir.display(), error = %err,
            "Wal write failed; refusing further writes until reopened.");
        let mut progress = self.progress.lock();
        progress.failure.get_or_insert(failure);
        self.failed.store(true, Ordering::Release);
        drop(progress);
        self.progress_cv.notify_all();
        err
    }

    fn failure_error(&self) -> WalError {
        match &self.progress.lock().failure {
            Some(failure) => failure.to_error(),
            None => WalError::Closed,
        }
    }
}

fn spawn_syncer(shared: Arc<Shared>, every: Duration) -> io::Result<JoinHandle<()>> {
    // A zero interval would spin; the config layer refuses it anyway.
    let every = every.max(Duration::from_millis(1));
    thread::Builder::new()
        .name("strata-wal-sync".into())
        .spawn(move || {
            let mut stop = shared.stop.lock();
            loop {
                let deadline = Instant::now() + every;
                while !*stop && !shared.stop_cv.wait_until(&mut stop, deadline).timed_out() {}
                if *stop {
                    return;
                }
                // The log is poisoned on error and every caller will hear of
                // it; there is nothing left for this thread to do.
                if MutexGuard::unlocked(&mut stop, || shared.background_sync()).is_err() {
                    return;
                }
            }
        })
}
