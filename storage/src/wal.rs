//! Write-ahead log with group commit. (Signatures fixed; body to be written.)
//!
//! The engine hands the log opaque payloads; the log frames them, orders them,
//! makes them durable according to the sync mode, and gives them back in the
//! same order on replay. A torn or corrupted tail (the process died mid-write)
//! is cut off at the last good record; corruption before the tail is an error
//! naming the file and offset.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    pub segments: u64,
    pub records: u64,
    pub bytes: u64,
    /// Bytes cut off a torn tail.
    pub truncated_bytes: u64,
}

pub struct Wal {}

impl Wal {
    /// Opens the log in `dir`, calling `on_record` with every intact record
    /// payload in append order, then positions appends after the last one.
    pub fn open(
        dir: &Path,
        mode: SyncMode,
        on_record: &mut dyn FnMut(&[u8]) -> Result<(), WalError>,
    ) -> Result<(Wal, ReplayStats), WalError> {
        let _ = (dir, mode, on_record);
        unimplemented!("wal")
    }

    /// Appends one record. Appends are totally ordered: a record appended after
    /// another returns (and replays) after it. Not yet durable: see `sync_to`.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, WalError> {
        let _ = payload;
        unimplemented!("wal")
    }

    /// Blocks until the record at `lsn` is durable per the sync mode.
    pub fn sync_to(&self, lsn: Lsn) -> Result<(), WalError> {
        let _ = lsn;
        unimplemented!("wal")
    }

    /// Starts a new segment; every record appended before this call is in a
    /// segment with an id lower than the returned one.
    pub fn rotate(&self) -> Result<SegmentId, WalError> {
        unimplemented!("wal")
    }

    /// Deletes every segment with an id lower than `id`.
    pub fn remove_segments_before(&self, id: SegmentId) -> Result<(), WalError> {
        let _ = id;
        unimplemented!("wal")
    }

    /// Total size of the segments on disk.
    pub fn size_bytes(&self) -> u64 {
        unimplemented!("wal")
    }

    /// Flushes and fsyncs everything appended, then refuses further appends.
    pub fn close(&self) -> Result<(), WalError> {
        unimplemented!("wal")
    }
}
