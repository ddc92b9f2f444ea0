//! Immutable data parts: columnar per-series blocks sorted by (series id,
//! time), compressed, checksummed, read through mmap. (Signatures fixed; body
//! to be written.)

use std::path::{Path, PathBuf};

use crate::types::{SeriesId, TimeRange};

#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("part i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("part corrupted: {path} at offset {offset}: {what}")]
    Corrupted {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

/// Summary of a part, stored beside it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartMeta {
    pub format_version: u32,
    pub rows: u64,
    pub blocks: u64,
    pub series: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub min_series_id: SeriesId,
    pub max_series_id: SeriesId,
    /// Bytes of all files of the part.
    pub size_bytes: u64,
}

/// Writes a part into a new directory. Nothing is visible until `finish`
/// fsynced every file and the directory.
pub struct PartWriter {}

impl PartWriter {
    /// `dir` must not exist yet; it is created.
    pub fn create(dir: &Path) -> Result<PartWriter, PartError> {
        let _ = dir;
        unimplemented!("part")
    }

    /// Adds the samples of one series. Calls come in ascending series id; for
    /// one series, timestamps are ascending without duplicates (already
    /// deduplicated) and may span several calls in ascending time. Long runs
    /// are split into blocks of at most `encoding::MAX_BLOCK_SAMPLES`.
    pub fn add(
        &mut self,
        series_id: SeriesId,
        timestamps: &[i64],
        values: &[f64],
    ) -> Result<(), PartError> {
        let _ = (series_id, timestamps, values);
        unimplemented!("part")
    }

    pub fn finish(self) -> Result<PartMeta, PartError> {
        unimplemented!("part")
    }
}

/// An open, immutable part.
pub struct Part {}

/// Samples of one series from one block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockSamples {
    pub series_id: SeriesId,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

impl Part {
    /// Opens a part, verifying the checksums of its metadata and block index.
    pub fn open(dir: &Path) -> Result<Part, PartError> {
        let _ = dir;
        unimplemented!("part")
    }

    pub fn meta(&self) -> &PartMeta {
        unimplemented!("part")
    }

    pub fn path(&self) -> &Path {
        unimplemented!("part")
    }

    /// Appends to `out` the samples of `series_id` within `range`, in time
    /// order. A corrupted block is reported as an error after the good blocks
    /// of the series were appended.
    pub fn read_series(
        &self,
        series_id: SeriesId,
        range: TimeRange,
        out_timestamps: &mut Vec<i64>,
        out_values: &mut Vec<f64>,
    ) -> Result<(), PartError> {
        let _ = (series_id, range, out_timestamps, out_values);
        unimplemented!("part")
    }

    /// Every block of the part in (series id, time) order, for merges and scans.
    pub fn blocks(&self) -> BlockIter<'_> {
        unimplemented!("part")
    }
}

pub struct BlockIter<'a> {
    _part: std::marker::PhantomData<&'a Part>,
}

impl Iterator for BlockIter<'_> {
    type Item = Result<BlockSamples, PartError>;

    fn next(&mut self) -> Option<Self::Item> {
        unimplemented!("part")
    }
}

/// Merges `parts` into a new part at `dir`: samples of a series from every
/// input are combined and deduplicated with `dedup::sort_and_dedup` using
/// `dedup_interval_ms`; series for which `drop_series` returns true and
/// samples outside `keep` are left out.
pub fn merge_parts(
    parts: &[&Part],
    dir: &Path,
    dedup_interval_ms: i64,
    keep: TimeRange,
    drop_series: &dyn Fn(SeriesId) -> bool,
) -> Result<PartMeta, PartError> {
    let _ = (parts, dir, dedup_interval_ms, keep, drop_series);
    unimplemented!("part")
}
