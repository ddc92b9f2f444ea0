//! A persistent sorted set of byte strings ("items"), the structure the
//! inverted index is built on. (Signatures fixed; body to be written.)
//!
//! Items added are visible to searches as soon as `add_items` returns. They
//! live in memory until `flush` writes them as an immutable part; background
//! merges combine parts. Every on-disk block carries a checksum.

use std::path::{Path, PathBuf};

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

pub struct Table {}

impl Table {
    /// Opens (or creates) the table in `dir`.
    pub fn open(dir: &Path) -> Result<Table, MergesetError> {
        let _ = dir;
        unimplemented!("mergeset")
    }

    /// Adds items (duplicates are allowed and collapse). Visible to searches
    /// started after this returns.
    pub fn add_items<'a>(&self, items: impl IntoIterator<Item = &'a [u8]>) {
        let _ = items.into_iter().count();
        unimplemented!("mergeset")
    }

    /// Writes the in-memory items as a part and fsyncs it; after it returns
    /// every added item survives a crash.
    pub fn flush(&self) -> Result<(), MergesetError> {
        unimplemented!("mergeset")
    }

    /// A consistent snapshot to iterate over.
    pub fn search(&self) -> Search {
        unimplemented!("mergeset")
    }

    /// Runs one merge step if the merge policy wants one; returns whether it merged.
    pub fn merge_step(&self) -> Result<bool, MergesetError> {
        unimplemented!("mergeset")
    }

    /// Merges everything (memory and disk) into a single part.
    pub fn force_merge(&self) -> Result<(), MergesetError> {
        unimplemented!("mergeset")
    }

    /// Number of parts on disk and their total size in bytes.
    pub fn disk_usage(&self) -> (usize, u64) {
        unimplemented!("mergeset")
    }
}

/// Iterates items in ascending byte order, each item once.
pub struct Search {}

impl Search {
    /// Positions at the first item >= `key`.
    pub fn seek(&mut self, key: &[u8]) {
        let _ = key;
        unimplemented!("mergeset")
    }

    /// The next item, or `None` at the end. Errors name file and offset; the
    /// search can continue past a corrupted block with the next call.
    pub fn next_item(&mut self) -> Option<Result<&[u8], MergesetError>> {
        unimplemented!("mergeset")
    }
}
