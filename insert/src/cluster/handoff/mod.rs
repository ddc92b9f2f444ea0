//! Hand-off queues: rows a storage node missed, kept on insert's disk until
//! the node takes them (or, when the node left the topology, until the
//! series' current owners do).
//!
//! # Files
//!
//! ```text
//! <handoff.dir>/
//!   lock                          held while open (one process per directory)
//!   <node>/                       one directory per storage node
//!     00000000000000000001.seg    segments, appended in id order
//!     00000000000000000002.seg
//!     cursor                      where replay resumes
//! ```
//!
//! `<node>` is the node's address with every byte outside `[A-Za-z0-9.-]`
//! written as `_` and two hex digits (`storage-0.svc:8400` is
//! `storage-0.svc_3a8400`), so that any address maps to one name and back.
//! Segment names are ids in 20 zero-padded digits, so names sort like ids.
//!
//! # Byte layout (integers little-endian, format version 1)
//!
//! ```text
//! segment:
//! +----------+--------+--------+-----
//! | magic    | record | record | ...
//! | 8 B      |        |        |
//! +----------+--------+--------+-----
//! magic    "STRHOFF" then the version byte 0x01
//!
//! record:
//! +-------+-------------+------+-------------+------------+-------------+
//! | magic | payload len | rows | payload crc | header crc | payload     |
//! | 4 B   | u32         | u32  | u32         | u32        | len bytes   |
//! +-------+-------------+------+-------------+------------+-------------+
//! magic        "HREC": lets a reader find the next record after damage
//! payload len  bytes of the payload, at most 256 MiB
//! rows         samples in the record
//! payload crc  crc32c of the payload
//! header crc   crc32c of the 16 bytes before it
//! payload      a zstd frame of the body
//!
//! body:
//!   account u32 | project u32 | series count u32 | series...
//! series:
//!   label count u32 | (name len u32 | name | value len u32 | value)...
//!   | sample count u32 | (timestamp i64 | value f64 bits u64)...
//!
//! cursor (16 bytes + crc):
//!   segment id u64 | offset u64 | crc32c of the 16 bytes before it u32
//! ```
//!
//! # Invariants
//!
//! - A record is appended with one write and the file is fsynced before
//!   `append` returns (and so before the client is acked); a new segment's
//!   directory entry is fsynced before its first record counts as queued.
//! - After a restart, appends go to a new segment: an old segment is never
//!   written again, so a torn tail (a crash mid-append, never acked) stays
//!   at the end of its segment, where the reader stops.
//! - Records leave the queue only after the node (or the new owners) acked
//!   them: the cursor moves past them, whole segments behind the cursor are
//!   deleted. The cursor is written with a rename and not fsynced: a stale
//!   cursor replays records again, which is harmless (storage collapses
//!   exact duplicates).
//! - A record whose header checks out but whose payload does not is skipped
//!   (counted, logged with file and offset). A damaged header is skipped by
//!   searching for the next record magic with a valid header checksum.
//! - The bytes of a node's segments never exceed `--handoff.max-bytes`:
//!   a record that does not fit is dropped and counted (`queue_full`).

mod record;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use strata_storage::{SeriesSamples, Tenant};

use record::{RECORD_HEADER_LEN, RECORD_MAGIC, SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
pub use record::{Record, RecordError};

use super::metrics::ClusterMetrics;

/// Name of the file holding the replay position of a node's queue.
const CURSOR_FILE: &str = "cursor";
/// Extension of segment files.
const SEGMENT_EXT: &str = "seg";
/// Largest segment: a segment is deleted whole, so this bounds the bytes
/// kept on disk after their rows were replayed.
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Smallest segment, so that a small queue bound does not mean a file per record.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("hand-off i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot queue rows for hand-off: {0}")]
    Encode(RecordError),
    #[error("hand-off directory {path} is in use by another process")]
    Locked { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HandoffError + '_ {
    move |source| HandoffError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What became of rows given to [`Queue::append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Durable in the queue.
    Queued,
    /// Not queued: the queue is at `--handoff.max-bytes` (counted as
    /// dropped with reason `queue_full`).
    Full,
}

/// How much a queue holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Samples not yet replayed.
    pub rows: u64,
    /// Bytes of records not yet replayed.
    pub bytes: u64,
}

/// A place in a queue: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// A record read from a queue.
#[derive(Debug)]
pub struct Taken {
    pub record: Record,
    /// The position just after the record.
    pub end: Position,
    /// Samples from the batch's start through this record, damaged records
    /// on the way included: what [`Queue::commit`] takes with `end`.
    pub rows_through: u64,
}

/// Records read from a queue.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Taken>,
    /// Where reading stopped (past damaged records too).
    pub end: Position,
    /// Samples from the batch's start to `end`.
    pub end_rows: u64,
}

/// All hand-off queues, one per node, under `--handoff.dir`.
pub struct Handoff {
    dir: PathBuf,
    /// Held open (and locked) while the queues are in use.
    _lock: File,
    max_bytes: u64,
    metrics: ClusterMetrics,
    queues: Mutex<BTreeMap<String, Arc<Queue>>>,
}

impl Handoff {
    /// Opens (creating it if needed) `dir` and every node queue in it.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        metrics: ClusterMetrics,
    ) -> Result<Handoff, HandoffError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(HandoffError::Locked {
                path: dir.to_path_buf(),
            });
        }
        let mut queues = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(addr) = name.to_str().and_then(addr_of_dir) else {
                tracing::warn!(path = %entry.path().display(), "Not a hand-off queue directory; ignored.");
                continue;
            };
            if !entry.path().is_dir() {
                continue;
            }
            let queue = Queue::open(&addr, &entry.path(), max_bytes, metrics.clone())?;
            queues.insert(addr, Arc::new(queue));
        }
        Ok(Handoff {
            dir: dir.to_path_buf(),
            _lock: lock,
            max_bytes,
            metrics,
            queues: Mutex::new(queues),
        })
    }

    /// The queue of node `addr`, created when it has none.
    pub fn queue(&self, addr: &str) -> Result<Arc<Queue>, HandoffError> {
        let mut queues = lock(&self.queues);
        if let Some(q) = queues.get(addr) {
            return Ok(q.clone());
        }
        let dir = self.dir.join(dir_of_addr(addr));
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let queue = Arc::new(Queue::open(
            addr,
            &dir,
            self.max_bytes,
            self.metrics.clone(),
        )?);
        queues.insert(addr.to_string(), queue.clone());
        Ok(queue)
    }

    /// Nodes that have a queue (empty or not), sorted.
    pub fn nodes(&self) -> Vec<String> {
        lock(&self.queues).keys().cloned().collect()
    }

    /// Deletes the queue of `addr` if it is empty; true when it is gone.
    pub fn remove_if_empty(&self, addr: &str) -> Result<bool, HandoffError> {
        let mut queues = lock(&self.queues);
        let Some(queue) = queues.get(addr) else {
            return Ok(true);
        };
        let state = lock(&queue.state);
        if state.backlog.rows > 0 || state.backlog.bytes > 0 {
            return Ok(false);
        }
        fs::remove_dir_all(&queue.dir).map_err(io(&queue.dir))?;
        sync_dir(&self.dir)?;
        drop(state);
        queue.metrics.forget(addr);
        queues.remove(addr);
        Ok(true)
    }
}

/// Directory name of a node's queue: see the module doc.
pub fn dir_of_addr(addr: &str) -> String {
    let mut out = String::with_capacity(addr.len());
    for b in addr.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The address a queue directory name stands for, if it is one.
pub fn addr_of_dir(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'-' {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok().filter(|a| !a.is_empty())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sync_dir(dir: &Path) -> Result<(), HandoffError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.{SEGMENT_EXT}")
}

/// One segment file as the queue tracks it.
#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes of the file that the queue reads (records end here).
    bytes: u64,
}

struct QueueState {
    /// Oldest first; the last one takes appends when `writer` is set.
    segments: VecDeque<Segment>,
    /// The segment being appended to (the last of `segments`).
    writer: Option<File>,
    /// Next record to replay. With no segment, the id the next segment gets.
    cursor: Position,
    backlog: Backlog,
    /// Bytes of every segment file: what `max_bytes` bounds.
    disk_bytes: u64,
    /// Whether the last append found the queue full (to warn once per episode).
    full: bool,
    /// Damage before this position was counted and logged already: a read
    /// that is not committed is read again, and damage counts once.
    reported: Position,
}

/// The hand-off queue of one node.
pub struct Queue {
    addr: String,
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    metrics: ClusterMetrics,
    state: Mutex<QueueState>,
}

impl Queue {
    fn open(
        addr: &str,
        dir: &Path,
        max_bytes: u64,
        metrics: ClusterMetrics,
    ) -> Result<Queue, HandoffError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name
                .strip_suffix(&format!(".{SEGMENT_EXT}"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                ids.push(id);
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        ids.sort_unstable();
        let saved = read_cursor(&dir.join(CURSOR_FILE));
        let queue = Queue {
            addr: addr.to_string(),
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            metrics,
            state: Mutex::new(QueueState {
                segments: VecDeque::new(),
                writer: None,
                cursor: Position::default(),
                backlog: Backlog::default(),
                disk_bytes: 0,
                full: false,
                reported: Position::default(),
            }),
        };
        let mut segments = VecDeque::new();
        let mut cursor = None;
        let mut backlog = Backlog::default();
        for id in ids {
            let path = queue.segment_path(id);
            // Segments wholly behind the cursor were replayed: the process
            // stopped between the cursor write and their deletion.
            if saved.is_some_and(|c| id < c.segment) {
                fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let len = fs::metadata(&path).map_err(io(&path))?.len();
            let from = match saved {
                Some(c) if c.segment == id => c.offset.max(SEGMENT_HEADER_LEN),
                _ => SEGMENT_HEADER_LEN,
            };
            cursor.get_or_insert(Position {
                segment: id,
                offset: from,
            });
            backlog.rows += queue.count_rows(id, from)?;
            backlog.bytes += len.saturating_sub(from);
            segments.push_back(Segment { id, bytes: len });
        }
        {
            let mut state = lock(&queue.state);
            state.disk_bytes = segments.iter().map(|s| s.bytes).sum();
            state.backlog = backlog;
            // With no segment left, the next one continues after the saved
            // cursor's, so that the saved cursor never points into it.
            state.cursor = cursor.unwrap_or(Position {
                segment: saved.map_or(1, |c| c.segment + 1),
                offset: SEGMENT_HEADER_LEN,
            });
            state.segments = segments;
            if backlog.rows > 0 {
                tracing::info!(
                    node = addr,
                    rows = backlog.rows,
                    bytes = backlog.bytes,
                    "Hand-off queue reopened with rows to replay."
                );
            }
            queue.metrics.backlog(addr, backlog);
        }
        Ok(queue)
    }

    /// The node this queue is for.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    /// Samples in the records of segment `id` from `from` on whose headers
    /// check out (payloads are checked when replayed).
    fn count_rows(&self, id: u64, from: u64) -> Result<u64, HandoffError> {
        let mut rows = 0;
        let mut reader = SegmentReader::open(&self.segment_path(id), from)?;
        while let Some(step) = reader.next_header()? {
            if let Step::Record { header, .. } = step {
                rows += u64::from(header.rows);
                reader.skip_payload(&header)?;
            }
        }
        Ok(rows)
    }

    /// Queues `series` of `tenant`, durably (fsynced) when it answers
    /// `Queued`; `Full` when it does not fit under the bound.
    pub fn append(
        &self,
        tenant: Tenant,
        series: &[&SeriesSamples],
    ) -> Result<Appended, HandoffError> {
        let bytes = record::encode(tenant, series).map_err(HandoffError::Encode)?;
        let rows: u64 = series.iter().map(|s| s.samples.len() as u64).sum();
        let added = bytes.len() as u64;
        let mut state = lock(&self.state);
        let new_segment = state.writer.is_none()
            || state
                .segments
                .back()
                .is_none_or(|s| s.bytes + added > self.segment_bytes);
        let needed = added + if new_segment { SEGMENT_HEADER_LEN } else { 0 };
        if state.disk_bytes + needed > self.max_bytes {
            self.metrics.dropped(&self.addr, "queue_full", rows);
            if !state.full {
                state.full = true;
                tracing::warn!(node = %self.addr, max_bytes = self.max_bytes,
                    queued_bytes = state.disk_bytes,
                    "Hand-off queue is full (--handoff.max-bytes); dropping this node's rows until it drains.");
            }
            return Ok(Appended::Full);
        }
        state.full = false;
        if new_segment {
            self.start_segment(&mut state)?;
        }
        let (id, len) = match state.segments.back() {
            Some(s) => (s.id, s.bytes),
            None => (0, 0),
        };
        let written = match state.writer.as_mut() {
            Some(file) => file.write_all(&bytes).and_then(|()| file.sync_data()),
            None => Err(std::io::Error::other("no segment open for appends")),
        };
        if let Err(source) = written {
            // Cut what may have been written and start a new segment next
            // time, so that no record ever follows a partial one.
            if let Some(file) = state.writer.take() {
                let _ = file.set_len(len);
            }
            return Err(HandoffError::Io {
                path: self.segment_path(id),
                source,
            });
        }
        if let Some(segment) = state.segments.back_mut() {
            segment.bytes += added;
        }
        state.disk_bytes += added;
        state.backlog.rows += rows;
        state.backlog.bytes += added;
        self.metrics.queued(&self.addr, rows);
        self.metrics.backlog(&self.addr, state.backlog);
        Ok(Appended::Queued)
    }

    /// Creates the next segment, durable with its header and directory
    /// entry, and makes it the one appends go to.
    fn start_segment(&self, state: &mut QueueState) -> Result<(), HandoffError> {
        let id = state
            .segments
            .back()
            .map_or(state.cursor.segment.max(1), |s| s.id + 1);
        let path = self.segment_path(id);
        let tmp = path.with_extension("seg.tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(SEGMENT_MAGIC)
            .and_then(|()| file.sync_data())
            .map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        if state.segments.is_empty() {
            state.cursor = Position {
                segment: id,
                offset: SEGMENT_HEADER_LEN,
            };
        }
        state.writer = Some(file);
        state.segments.push_back(Segment {
            id,
            bytes: SEGMENT_HEADER_LEN,
        });
        state.disk_bytes += SEGMENT_HEADER_LEN;
        Ok(())
    }

    /// What the queue holds.
    pub fn backlog(&self) -> Backlog {
        lock(&self.state).backlog
    }

    /// Reads records from the cursor on, up to about `max_bytes` of them
    /// (at least one record when there is one). Damaged records on the way
    /// are counted, logged and passed over. The cursor does not move: call
    /// [`Queue::commit`] once records are taken.
    pub fn read(&self, max_bytes: u64) -> Result<Batch, HandoffError> {
        // Where to read and how far is taken under the lock; the reading
        // runs without it, so that appends do not wait on replay.
        let (start, limits): (Position, Vec<(u64, u64)>) = {
            let state = lock(&self.state);
            let limits = state
                .segments
                .iter()
                .filter(|s| s.id >= state.cursor.segment)
                .map(|s| (s.id, s.bytes))
                .collect();
            (state.cursor, limits)
        };
        let mut batch = Batch {
            records: Vec::new(),
            end: start,
            end_rows: 0,
        };
        let mut read_bytes = 0u64;
        for (id, len) in limits {
            let from = if id == start.segment {
                start.offset
            } else {
                SEGMENT_HEADER_LEN
            };
            let path = self.segment_path(id);
            let mut reader = SegmentReader::open(&path, from)?.limit(len);
            while read_bytes < max_bytes {
                let Some(step) = reader.next_header()? else {
                    break;
                };
                let at = Position {
                    segment: id,
                    offset: match &step {
                        Step::Skipped { from, .. } => *from,
                        Step::Torn { offset, .. } | Step::Record { offset, .. } => *offset,
                    },
                };
                match step {
                    Step::Skipped { .. } | Step::Torn { .. } if !self.first_report(at) => {}
                    Step::Skipped { from, to, why } => {
                        self.metrics.corrupted(&self.addr);
                        tracing::warn!(node = %self.addr, file = %path.display(), offset = from,
                            skipped_bytes = to - from, error = %why,
                            "Damaged hand-off record header; skipped to the next record.");
                    }
                    Step::Torn { offset, len } => {
                        self.metrics.corrupted(&self.addr);
                        tracing::warn!(node = %self.addr, file = %path.display(), offset,
                            bytes = len - offset,
                            "Incomplete hand-off record at the end of a segment (a write cut by a crash, never acknowledged); ignored.");
                    }
                    Step::Record { header, offset } => {
                        let payload = reader.read_payload(&header)?;
                        read_bytes += (RECORD_HEADER_LEN + payload.len()) as u64;
                        batch.end_rows += u64::from(header.rows);
                        match record::decode_payload(&header, &payload) {
                            Ok(record) => batch.records.push(Taken {
                                record,
                                end: Position {
                                    segment: id,
                                    offset: reader.position(),
                                },
                                rows_through: batch.end_rows,
                            }),
                            Err(_) if !self.first_report(at) => {}
                            Err(e) => {
                                self.metrics.corrupted(&self.addr);
                                self.metrics.dropped(
                                    &self.addr,
                                    "corrupted",
                                    u64::from(header.rows),
                                );
                                tracing::warn!(node = %self.addr, file = %path.display(), offset,
                                    rows = header.rows, error = %e,
                                    "Damaged hand-off record skipped; its rows are lost for this node.");
                            }
                        }
                    }
                }
            }
            batch.end = Position {
                segment: id,
                offset: reader.position(),
            };
            if read_bytes >= max_bytes {
                break;
            }
        }
        Ok(batch)
    }

    /// Whether damage at `at` is seen for the first time (then it is
    /// counted and logged).
    fn first_report(&self, at: Position) -> bool {
        let mut state = lock(&self.state);
        if at < state.reported {
            return false;
        }
        state.reported = Position {
            segment: at.segment,
            offset: at.offset + 1,
        };
        true
    }

    /// Marks everything before `to` as taken (`rows` samples): moves the
    /// cursor and deletes the segments it left behind.
    pub fn commit(&self, to: Position, rows: u64) -> Result<(), HandoffError> {
        let mut state = lock(&self.state);
        if to <= state.cursor {
            return Ok(());
        }
        let from = state.cursor;
        let passed: u64 = state
            .segments
            .iter()
            .filter(|s| s.id >= from.segment && s.id <= to.segment)
            .map(|s| {
                let start = if s.id == from.segment {
                    from.offset
                } else {
                    SEGMENT_HEADER_LEN
                };
                let end = if s.id == to.segment {
                    to.offset
                } else {
                    s.bytes
                };
                end.saturating_sub(start)
            })
            .sum();
        state.cursor = to;
        state.backlog.rows = state.backlog.rows.saturating_sub(rows);
        state.backlog.bytes = state.backlog.bytes.saturating_sub(passed);
        self.trim(&mut state)?;
        if state.segments.is_empty() {
            // Everything was read; only counts of damaged bytes could be left.
            state.backlog = Backlog::default();
        }
        self.metrics.backlog(&self.addr, state.backlog);
        write_cursor(&self.dir.join(CURSOR_FILE), state.cursor)
    }

    /// Deletes segments wholly behind the cursor, the one being appended
    /// to included when it is used up (the next append starts a new one).
    fn trim(&self, state: &mut QueueState) -> Result<(), HandoffError> {
        while let Some(first) = state.segments.front() {
            let (id, bytes) = (first.id, first.bytes);
            let at_end = id == state.cursor.segment && state.cursor.offset >= bytes;
            if id > state.cursor.segment || (id == state.cursor.segment && !at_end) {
                break;
            }
            if at_end {
                // Reading goes on in the next segment, or the next one
                // created: ids only grow, so the cursor stays meaningful.
                if state.segments.len() == 1 {
                    state.writer = None;
                }
                state.cursor = Position {
                    segment: id + 1,
                    offset: SEGMENT_HEADER_LEN,
                };
            }
            let path = self.segment_path(id);
            fs::remove_file(&path).map_err(io(&path))?;
            state.segments.pop_front();
            state.disk_bytes = state.disk_bytes.saturating_sub(bytes);
        }
        Ok(())
    }
}

fn read_cursor(path: &Path) -> Option<Position> {
    let b = fs::read(path).ok()?;
    if b.len() != 20 || crc32c::crc32c(&b[..16]).to_le_bytes() != b[16..20] {
        tracing::warn!(path = %path.display(), "Hand-off cursor is damaged; replaying the queue from its start (duplicates are harmless).");
        return None;
    }
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[0..8]);
    let segment = u64::from_le_bytes(x);
    x.copy_from_slice(&b[8..16]);
    Some(Position {
        segment,
        offset: u64::from_le_bytes(x),
    })
}

fn write_cursor(path: &Path, at: Position) -> Result<(), HandoffError> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&at.segment.to_le_bytes());
    b.extend_from_slice(&at.offset.to_le_bytes());
    b.extend_from_slice(&crc32c::crc32c(&b).to_le_bytes());
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, &b).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// What the reader found at its position.
enum Step {
    /// A record header that checks out, at `offset`.
    Record { header: record::Header, offset: u64 },
    /// Damaged bytes from `from` to `to`, where the next valid header is
    /// (or the end).
    Skipped {
        from: u64,
        to: u64,
        why: RecordError,
    },
    /// A record cut short by the end of the segment at `len`.
    Torn { offset: u64, len: u64 },
}

/// Sequential reads of one segment from an offset.
struct SegmentReader {
    file: std::io::BufReader<File>,
    path: PathBuf,
    at: u64,
    len: u64,
}

impl SegmentReader {
    fn open(path: &Path, from: u64) -> Result<SegmentReader, HandoffError> {
        let mut file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let mut magic = [0u8; SEGMENT_MAGIC.len()];
        let header_ok = file.read_exact(&mut magic).is_ok() && &magic == SEGMENT_MAGIC;
        if !header_ok {
            tracing::warn!(file = %path.display(), "Hand-off segment has no valid header; reading its records anyway.");
        }
        let from = from.max(SEGMENT_HEADER_LEN);
        file.seek(SeekFrom::Start(from)).map_err(io(path))?;
        Ok(SegmentReader {
            file: std::io::BufReader::with_capacity(1 << 16, file),
            path: path.to_path_buf(),
            at: from,
            len,
        })
    }

    /// Reads no further than `len` (what the queue knew of when reading began).
    fn limit(mut self, len: u64) -> SegmentReader {
        self.len = self.len.min(len);
        self
    }

    fn position(&self) -> u64 {
        self.at
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), HandoffError> {
        self.file.read_exact(buf).map_err(io(&self.path))?;
        self.at += buf.len() as u64;
        Ok(())
    }

    fn next_header(&mut self) -> Result<Option<Step>, HandoffError> {
        if self.at >= self.len {
            return Ok(None);
        }
        let offset = self.at;
        if self.len - self.at < RECORD_HEADER_LEN as u64 {
            self.skip_to(self.len)?;
            return Ok(Some(Step::Torn {
                offset,
                len: self.len,
            }));
        }
        let mut b = [0u8; RECORD_HEADER_LEN];
        self.read_exact(&mut b)?;
        match record::decode_header(&b) {
            Ok(header) => {
                if self.at + u64::from(header.payload_len) > self.len {
                    self.skip_to(self.len)?;
                    return Ok(Some(Step::Torn {
                        offset,
                        len: self.len,
                    }));
                }
                Ok(Some(Step::Record { header, offset }))
            }
            Err(why) => {
                let to = self.find_next_record(offset + 1)?;
                Ok(Some(Step::Skipped {
                    from: offset,
                    to,
                    why,
                }))
            }
        }
    }

    /// Offset of the next valid record header at or after `from` (the
    /// reader is left there), or the end.
    fn find_next_record(&mut self, from: u64) -> Result<u64, HandoffError> {
        self.file
            .seek(SeekFrom::Start(from))
            .map_err(io(&self.path))?;
        let mut rest = Vec::new();
        (&mut self.file)
            .take(self.len - from)
            .read_to_end(&mut rest)
            .map_err(io(&self.path))?;
        let mut i = 0;
        while i + RECORD_HEADER_LEN <= rest.len() {
            if &rest[i..i + 4] == RECORD_MAGIC && record::decode_header(&rest[i..]).is_ok() {
                let to = from + i as u64;
                self.file
                    .seek(SeekFrom::Start(to))
                    .map_err(io(&self.path))?;
                self.at = to;
                return Ok(to);
            }
            i += 1;
        }
        self.at = self.len;
        Ok(self.len)
    }

    fn skip_to(&mut self, to: u64) -> Result<(), HandoffError> {
        self.file
            .seek(SeekFrom::Start(to))
            .map_err(io(&self.path))?;
        self.at = to;
        Ok(())
    }

    fn skip_payload(&mut self, header: &record::Header) -> Result<(), HandoffError> {
        self.skip_to(self.at + u64::from(header.payload_len))
    }

    fn read_payload(&mut self, header: &record::Header) -> Result<Vec<u8>, HandoffError> {
        let mut payload = vec![0u8; header.payload_len as usize];
        self.read_exact(&mut payload)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use strata_storage::{Label, Sample};

    use super::*;

    fn series(name: &str, samples: usize) -> SeriesSamples {
        SeriesSamples {
            labels: vec![Label::new("__name__", name), Label::new("job", "t")],
            samples: (0..samples)
                .map(|i| Sample::new(1_000 * i as i64, ((i * 7919) as f64).sqrt()))
                .collect(),
        }
    }

    fn append(q: &Queue, name: &str, samples: usize) -> Appended {
        q.append(Tenant::new(1, 2), &[&series(name, samples)])
            .expect("append")
    }

    /// Metric names of every record in `batch`.
    fn names(batch: &Batch) -> Vec<String> {
        batch
            .records
            .iter()
            .map(|t| t.record.series[0].labels[0].value.clone())
            .collect()
    }

    fn open(dir: &Path, max_bytes: u64) -> (Handoff, Arc<Queue>, ClusterMetrics) {
        let metrics = ClusterMetrics::default();
        let handoff = Handoff::open(dir, max_bytes, metrics.clone()).expect("open");
        let queue = handoff.queue("storage-0.svc:8400").expect("queue");
        (handoff, queue, metrics)
    }

    #[test]
    fn node_directories_name_any_address() {
        let check = |addr: &str, dir: &str| {
            assert_eq!(dir_of_addr(addr), dir);
            assert_eq!(addr_of_dir(dir).as_deref(), Some(addr));
        };
        check("storage-0.svc:8400", "storage-0.svc_3a8400");
        check("10.0.0.1:8400", "10.0.0.1_3a8400");
        check("[::1]:8400", "_5b_3a_3a1_5d_3a8400");
        check("a_b", "a_5fb");
        check("a/../b", "a_2f.._2fb");
        for bad in ["", "a_zz", "a_3", "a b", "a:b"] {
            assert_eq!(addr_of_dir(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn records_come_back_in_order_and_leave_when_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_h, q, _m) = open(dir.path(), 1 << 20);
        assert_eq!(q.backlog(), Backlog::default());
        for (name, n) in [("a", 3), ("b", 1), ("c", 2)] {
            assert_eq!(append(&q, name, n), Appended::Queued);
        }
        assert_eq!(q.backlog().rows, 6);
        let batch = q.read(1 << 20).expect("read");
        assert_eq!(names(&batch), ["a", "b", "c"]);
        assert_eq!(batch.records[1].rows_through, 4);
        assert_eq!(batch.end_rows, 6);
        assert_eq!(batch.records[0].record.tenant, Tenant::new(1, 2));

        // Reading again without a commit gives the same records.
        assert_eq!(names(&q.read(1 << 20).expect("read")), ["a", "b", "c"]);
        let first = &batch.records[0];
        q.commit(first.end, first.rows_through).expect("commit");
        assert_eq!(q.backlog().rows, 3);
        assert_eq!(names(&q.read(1 << 20).expect("read")), ["b", "c"]);
        q.commit(batch.end, batch.end_rows - first.rows_through)
            .expect("commit");
        assert_eq!(q.backlog(), Backlog::default());
        assert!(q.read(1 << 20).expect("read").records.is_empty());
        let segments = fs::read_dir(&q.dir)
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
            })
            .count();
        assert_eq!(segments, 0, "a used-up segment is deleted");

        // Appends after that go to a new segment and read as usual.
        append(&q, "d", 1);
        assert_eq!(names(&q.read(1 << 20).expect("read")), ["d"]);
    }

    #[test]
    fn reads_stop_near_the_byte_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_h, q, _m) = open(dir.path(), 1 << 20);
        for name in ["a", "b", "c", "d"] {
            append(&q, name, 10);
        }
        let one = q.read(1).expect("read");
        assert_eq!(names(&one), ["a"], "at least one record");
        q.commit(one.end, one.end_rows).expect("commit");
        assert_eq!(names(&q.read(1 << 20).expect("read")), ["b", "c", "d"]);
    }

    #[test]
    fn a_reopened_queue_resumes_where_replay_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // Small segments: the queue spans several files.
            let (_h, q, _m) = open(dir.path(), 8 * MIN_SEGMENT_BYTES);
            for i in 0..400 {
                append(&q, &format!("m{i}"), 40);
            }
            assert_eq!(q.read(u64::MAX).expect("read").records.len(), 400);
            let segments = lock(&q.state).segments.len();
            assert!(segments > 2, "{segments} segments");
            let batch = q.read(1 << 20).expect("read");
            let t = &batch.records[149];
            q.commit(t.end, t.rows_through).expect("commit");
            assert_eq!(q.backlog().rows, 250 * 40);
        }
        let (h, q, m) = open(dir.path(), 8 * MIN_SEGMENT_BYTES);
        assert_eq!(q.backlog().rows, 250 * 40, "rows counted on reopen");
        let batch = q.read(u64::MAX).expect("read");
        let want: Vec<String> = (150..400).map(|i| format!("m{i}")).collect();
        assert_eq!(names(&batch), want);
        assert_eq!(m.corrupted_records("storage-0.svc:8400"), 0);

        // New appends after a restart follow the old records.
        append(&q, "after", 1);
        let batch = q.read(u64::MAX).expect("read");
        assert_eq!(names(&batch).last().map(String::as_str), Some("after"));
        q.commit(batch.end, batch.end_rows).expect("commit");
        assert_eq!(q.backlog(), Backlog::default());
        drop((h, q));
        let (_h, q, _m) = open(dir.path(), 8 * MIN_SEGMENT_BYTES);
        assert_eq!(q.backlog(), Backlog::default());
        assert!(q.read(u64::MAX).expect("read").records.is_empty());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_h, q, m) = open(dir.path(), 2_000);
        let mut queued = 0;
        let mut dropped_rows = 0;
        for i in 0..50 {
            match append(&q, &format!("m{i}"), 5) {
                Appended::Queued => queued += 1,
                Appended::Full => dropped_rows += 5,
            }
        }
        assert!(queued > 0 && dropped_rows > 0, "{queued} queued");
        assert_eq!(
            m.dropped_rows("storage-0.svc:8400", "queue_full"),
            dropped_rows
        );
        assert!(lock(&q.state).disk_bytes <= 2_000);
        assert_eq!(q.read(u64::MAX).expect("read").records.len(), queued);

        // Room again once replayed.
        let batch = q.read(u64::MAX).expect("read");
        q.commit(batch.end, batch.end_rows).expect("commit");
        assert_eq!(append(&q, "again", 5), Appended::Queued);
    }

    /// Offsets of the records in a segment file.
    fn record_offsets(path: &Path) -> Vec<u64> {
        let mut reader = SegmentReader::open(path, 0).expect("open");
        let mut out = Vec::new();
        while let Some(step) = reader.next_header().expect("read") {
            if let Step::Record { header, offset } = step {
                out.push(offset);
                reader.skip_payload(&header).expect("skip");
            }
        }
        out
    }

    fn the_segment(q: &Queue) -> PathBuf {
        let id = lock(&q.state).segments.front().expect("a segment").id;
        q.segment_path(id)
    }

    fn damage(path: &Path, at: u64) {
        let mut b = fs::read(path).expect("read");
        b[at as usize] ^= 0xff;
        fs::write(path, b).expect("write");
    }

    #[test]
    fn a_damaged_payload_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_h, q, m) = open(dir.path(), 1 << 20);
        for name in ["a", "b", "c"] {
            append(&q, name, 4);
        }
        let path = the_segment(&q);
        let offsets = record_offsets(&path);
        damage(&path, offsets[1] + RECORD_HEADER_LEN as u64 + 2);
        // Read twice, as a replay that failed and starts over does.
        assert_eq!(names(&q.read(u64::MAX).expect("read")), ["a", "c"]);
        let batch = q.read(u64::MAX).expect("read");
        assert_eq!(names(&batch), ["a", "c"]);
        assert_eq!(
            batch.records[1].rows_through, 12,
            "the damaged rows count as passed"
        );
        assert_eq!(m.corrupted_records("storage-0.svc:8400"), 1);
        assert_eq!(m.dropped_rows("storage-0.svc:8400", "corrupted"), 4);
        q.commit(batch.end, batch.end_rows).expect("commit");
        assert_eq!(q.backlog(), Backlog::default());
    }

    #[test]
    fn a_damaged_header_is_passed_by_finding_the_next_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, q, m) = open(dir.path(), 1 << 20);
        for name in ["a", "b", "c", "d"] {
            append(&q, name, 4);
        }
        let path = the_segment(&q);
        let offsets = record_offsets(&path);
        damage(&path, offsets[1] + 5);
        let batch = q.read(u64::MAX).expect("read");
        assert_eq!(names(&batch), ["a", "c", "d"]);
        assert_eq!(m.corrupted_records("storage-0.svc:8400"), 1);

        // A queue reopened over the damage counts only what it can read.
        drop((h, q));
        let (_h, q, _m) = open(dir.path(), 1 << 20);
        assert_eq!(q.backlog().rows, 12);
        assert_eq!(names(&q.read(u64::MAX).expect("read")), ["a", "c", "d"]);
    }

    #[test]
    fn a_torn_tail_from_a_crash_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = {
            let (_h, q, _m) = open(dir.path(), 1 << 20);
            append(&q, "a", 4);
            append(&q, "b", 4);
            the_segment(&q)
        };
        // The second record was cut mid-write (never acknowledged).
        let len = fs::metadata(&path).expect("meta").len();
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(len - 7).expect("truncate");
        drop(file);
        let (_h, q, m) = open(dir.path(), 1 << 20);
        assert_eq!(q.backlog().rows, 4);
        let batch = q.read(u64::MAX).expect("read");
        assert_eq!(names(&batch), ["a"]);
        assert_eq!(m.corrupted_records("storage-0.svc:8400"), 1);
        q.commit(batch.end, batch.end_rows).expect("commit");
        append(&q, "c", 1);
        assert_eq!(names(&q.read(u64::MAX).expect("read")), ["c"]);
    }

    #[test]
    fn format_guard_segment_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_h, q, _m) = open(dir.path(), 1 << 20);
        append(&q, "a", 2);
        let path = the_segment(&q);
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some("00000000000000000001.seg")
        );
        assert_eq!(
            path.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str()),
            Some("storage-0.svc_3a8400")
        );
        let b = fs::read(&path).expect("read");
        assert_eq!(&b[..8], b"STRHOFF\x01");
        assert_eq!(&b[8..12], b"HREC");
        let payload_len = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
        assert_eq!(b.len(), 8 + 20 + payload_len as usize);
        assert_eq!(
            u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            2
        );

        let batch = q.read(u64::MAX).expect("read");
        q.commit(batch.records[0].end, 2).expect("commit");
        // The cursor of a used-up last segment points at the next id.
        let c = fs::read(q.dir.join(CURSOR_FILE)).expect("cursor");
        assert_eq!(c.len(), 20);
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().expect("8")), 2);
        assert_eq!(u64::from_le_bytes(c[8..16].try_into().expect("8")), 8);
        assert_eq!(
            u32::from_le_bytes(c[16..20].try_into().expect("4")),
            crc32c::crc32c(&c[..16])
        );
    }

    #[test]
    fn one_process_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Handoff::open(dir.path(), 1 << 20, ClusterMetrics::default()).expect("open");
        let err = Handoff::open(dir.path(), 1 << 20, ClusterMetrics::default())
            .err()
            .expect("locked");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        let again = Handoff::open(dir.path(), 1 << 20, ClusterMetrics::default()).expect("open");
        assert!(again.nodes().is_empty(), "the lock file is not a queue");
    }

    #[test]
    fn empty_queues_of_departed_nodes_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, q, _m) = open(dir.path(), 1 << 20);
        append(&q, "a", 1);
        assert!(!h.remove_if_empty("storage-0.svc:8400").expect("remove"));
        let batch = q.read(u64::MAX).expect("read");
        q.commit(batch.end, batch.end_rows).expect("commit");
        assert!(h.remove_if_empty("storage-0.svc:8400").expect("remove"));
        assert!(h.nodes().is_empty());
        assert!(!dir.path().join("storage-0.svc_3a8400").exists());
        drop((h, q));
        let reopened = Handoff::open(dir.path(), 1 << 20, ClusterMetrics::default()).expect("open");
        assert!(reopened.nodes().is_empty());
    }
}
