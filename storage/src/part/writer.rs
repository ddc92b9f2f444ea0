//! Streaming part writer: buffers at most one block of samples, one raw data
//! page and the block headers of one header page.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::format::{
    self, BlockRef, DATA_FILE, HEADER_ZSTD_LEVEL, HEADERS_FILE, INDEX_FILE, IndexEntry, META_FILE,
    PageRef,
};
use super::{FORMAT_VERSION, PartError, PartMeta, io_error};
use crate::encoding;
use crate::types::SeriesId;

/// Size knobs of the layout. Readers accept any values; tests shrink them to
/// get many pages out of few samples.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// A data page is closed once its raw size reaches this.
    pub page_target_bytes: usize,
    /// A header page is closed at the first data page boundary at or after
    /// this many blocks.
    pub header_page_blocks: usize,
    /// At most `encoding::MAX_BLOCK_SAMPLES`; `encoding::BLOCK_TARGET_SAMPLES` by default.
    pub max_block_samples: usize,
}

impl Limits {
    pub(super) const DEFAULT: Limits = Limits {
        page_target_bytes: encoding::PAGE_TARGET_BYTES,
        header_page_blocks: super::HEADER_PAGE_BLOCKS,
        max_block_samples: encoding::BLOCK_TARGET_SAMPLES,
    };
}

/// Writes a part into a new directory. Nothing is visible until `finish`
/// fsynced every file and the directory. Dropping a writer without a
/// successful `finish` removes its directory.
pub struct PartWriter {
    dir: PathBuf,
    limits: Limits,
    data: BufWriter<File>,
    data_len: u64,
    headers: BufWriter<File>,
    headers_len: u64,
    index: Vec<IndexEntry>,

    /// Samples of the current series not yet encoded (less than one block).
    series: Option<SeriesId>,
    last_ts: Option<i64>,
    ts: Vec<i64>,
    vals: Vec<f64>,

    /// Encoded blocks of the open data page.
    page_raw: Vec<u8>,
    /// Closed data pages and all blocks of the open header page.
    hp_pages: Vec<PageRef>,
    hp_blocks: Vec<BlockRef>,
    scratch: Vec<u8>,

    meta: PartMeta,
    done: bool,
}

impl PartWriter {
    /// `dir` must not exist yet; it is created.
    pub fn create(dir: &Path) -> Result<PartWriter, PartError> {
        PartWriter::with_limits(dir, Limits::DEFAULT)
    }

    pub(super) fn with_limits(dir: &Path, limits: Limits) -> Result<PartWriter, PartError> {
        fs::create_dir(dir).map_err(io_error(dir))?;
        let open = |name: &str| {
            let path = dir.join(name);
            File::create_new(&path)
                .map(BufWriter::new)
                .map_err(io_error(&path))
        };
        let files = open(DATA_FILE).and_then(|d| Ok((d, open(HEADERS_FILE)?)));
        let (data, headers) = match files {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir_all(dir);
                return Err(e);
            }
        };
        Ok(PartWriter {
            dir: dir.to_path_buf(),
            limits,
            data,
            data_len: 0,
            headers,
            headers_len: 0,
            index: Vec::new(),
            series: None,
            last_ts: None,
            ts: Vec::new(),
            vals: Vec::new(),
            page_raw: Vec::new(),
            hp_pages: Vec::new(),
            hp_blocks: Vec::new(),
            scratch: Vec::new(),
            meta: PartMeta {
                format_version: FORMAT_VERSION,
                rows: 0,
                blocks: 0,
                series: 0,
                min_timestamp: i64::MAX,
                max_timestamp: i64::MIN,
                min_series_id: SeriesId::MAX,
                max_series_id: 0,
                size_bytes: 0,
            },
            done: false,
        })
    }

    /// Adds the samples of one series. Calls come in ascending series id; for
    /// one series, timestamps are ascending without duplicates (already
    /// deduplicated) and may span several calls in ascending time. Long runs
    /// are split into blocks of `encoding::BLOCK_TARGET_SAMPLES`.
    pub fn add(
        &mut self,
        series_id: SeriesId,
        timestamps: &[i64],
        values: &[f64],
    ) -> Result<(), PartError> {
        if timestamps.len() != values.len() {
            return Err(PartError::InvalidInput {
                what: format!(
                    "series {series_id}: {} timestamps but {} values",
                    timestamps.len(),
                    values.len()
                ),
            });
        }
        if timestamps.is_empty() {
            return Ok(());
        }
        let same_series = match self.series {
            Some(s) if s > series_id => {
                return Err(PartError::InvalidInput {
                    what: format!("series {series_id} added after series {s}"),
                });
            }
            Some(s) => s == series_id,
            None => false,
        };
        // Validate before touching any state, so a rejected call changes nothing.
        let mut prev = if same_series { self.last_ts } else { None };
        for &t in timestamps {
            if let Some(p) = prev
                && p >= t
            {
                return Err(PartError::InvalidInput {
                    what: format!("series {series_id}: timestamp {t} does not follow {p}"),
                });
            }
            prev = Some(t);
        }
        if !same_series {
            self.flush_series()?;
            self.series = Some(series_id);
            self.meta.series += 1;
        }
        self.last_ts = prev;
        let max = self.limits.max_block_samples;
        let mut i = 0;
        while i < timestamps.len() {
            let take = (max - self.ts.len()).min(timestamps.len() - i);
            self.ts.extend_from_slice(&timestamps[i..i + take]);
            self.vals.extend_from_slice(&values[i..i + take]);
            i += take;
            if self.ts.len() >= max {
                self.emit_block(series_id)?;
            }
        }
        Ok(())
    }

    /// Encodes the buffered samples of the current series as one block.
    fn flush_series(&mut self) -> Result<(), PartError> {
        match self.series {
            Some(s) if !self.ts.is_empty() => self.emit_block(s),
            _ => Ok(()),
        }
    }

    fn emit_block(&mut self, series: SeriesId) -> Result<(), PartError> {
        let (Some(&min_ts), Some(&max_ts)) = (self.ts.first(), self.ts.last()) else {
            return Ok(());
        };
        let start = self.page_raw.len();
        encoding::encode_block(&self.ts, &self.vals, &mut self.page_raw);
        let len = self.page_raw.len() - start;
        let too_big = |what: &str, n: usize| PartError::InvalidInput {
            what: format!("series {series}: {what} {n} exceeds u32"),
        };
        self.hp_blocks.push(BlockRef {
            series,
            min_ts,
            max_ts,
            count: self.ts.len() as u32,
            page: self.hp_pages.len() as u32,
            offset: u32::try_from(start).map_err(|_| too_big("page offset", start))?,
            len: u32::try_from(len).map_err(|_| too_big("block length", len))?,
        });
        let m = &mut self.meta;
        m.rows += self.ts.len() as u64;
        m.blocks += 1;
        m.min_timestamp = m.min_timestamp.min(min_ts);
        m.max_timestamp = m.max_timestamp.max(max_ts);
        m.min_series_id = m.min_series_id.min(series);
        m.max_series_id = m.max_series_id.max(series);
        self.ts.clear();
        self.vals.clear();
        if self.page_raw.len() >= self.limits.page_target_bytes {
            self.close_data_page()?;
        }
        Ok(())
    }

    fn close_data_page(&mut self) -> Result<(), PartError> {
        if self.page_raw.is_empty() {
            return Ok(());
        }
        self.scratch.clear();
        encoding::compress_page(&self.page_raw, &mut self.scratch);
        let path = self.dir.join(DATA_FILE);
        let too_big = |n: usize| PartError::InvalidInput {
            what: format!("data page of {n} bytes exceeds u32"),
        };
        let page = PageRef {
            offset: self.data_len,
            len: u32::try_from(self.scratch.len()).map_err(|_| too_big(self.scratch.len()))?,
            raw_len: u32::try_from(self.page_raw.len())
                .map_err(|_| too_big(self.page_raw.len()))?,
            crc: crc32c::crc32c(&self.scratch),
        };
        self.data
            .write_all(&self.scratch)
            .map_err(io_error(&path))?;
        self.data_len += self.scratch.len() as u64;
        self.hp_pages.push(page);
        self.page_raw.clear();
        if self.hp_blocks.len() >= self.limits.header_page_blocks {
            self.close_header_page()?;
        }
        Ok(())
    }

    fn close_header_page(&mut self) -> Result<(), PartError> {
        let (Some(first), Some(last)) = (self.hp_blocks.first(), self.hp_blocks.last()) else {
            return Ok(());
        };
        self.scratch.clear();
        format::encode_header_page(&self.hp_pages, &self.hp_blocks, &mut self.scratch);
        let path = self.dir.join(HEADERS_FILE);
        let compressed =
            zstd::bulk::compress(&self.scratch, HEADER_ZSTD_LEVEL).map_err(io_error(&path))?;
        let len = u32::try_from(compressed.len()).map_err(|_| PartError::InvalidInput {
            what: format!("header page of {} bytes exceeds u32", compressed.len()),
        })?;
        let entry = IndexEntry {
            first_series: first.series,
            last_series: last.series,
            min_ts: self.hp_blocks.iter().map(|b| b.min_ts).min().unwrap_or(0),
            max_ts: self.hp_blocks.iter().map(|b| b.max_ts).max().unwrap_or(0),
            offset: self.headers_len,
            len,
            crc: crc32c::crc32c(&compressed),
            blocks: self.hp_blocks.len() as u32,
        };
        self.headers
            .write_all(&compressed)
            .map_err(io_error(&path))?;
        self.headers_len += compressed.len() as u64;
        self.index.push(entry);
        self.hp_pages.clear();
        self.hp_blocks.clear();
        Ok(())
    }

    /// Writes the remaining pages, the index and the metadata, then fsyncs
    /// every file and the directory. On error the directory is removed.
    pub fn finish(mut self) -> Result<PartMeta, PartError> {
        self.flush_series()?;
        self.close_data_page()?;
        self.close_header_page()?;

        let mut index = Vec::with_capacity(self.index.len() * format::INDEX_ENTRY_BYTES + 4);
        for e in &self.index {
            format::encode_index_entry(e, &mut index);
        }
        let crc = crc32c::crc32c(&index);
        index.extend_from_slice(&crc.to_le_bytes());

        // `size_bytes` counts meta.json too, whose length depends on it: iterate
        // to the fixed point (the digit count settles within a few rounds).
        let base = self.data_len + self.headers_len + index.len() as u64;
        let meta_path = self.dir.join(META_FILE);
        let to_io = |e: serde_json::Error| PartError::Io {
            path: meta_path.clone(),
            source: std::io::Error::other(e),
        };
        let mut meta_bytes = format::encode_meta(&self.meta).map_err(to_io)?;
        for _ in 0..8 {
            let total = base + meta_bytes.len() as u64;
            if total == self.meta.size_bytes {
                break;
            }
            self.meta.size_bytes = total;
            meta_bytes = format::encode_meta(&self.meta).map_err(to_io)?;
        }

        for (w, name) in [
            (&mut self.data, DATA_FILE),
            (&mut self.headers, HEADERS_FILE),
        ] {
            let path = self.dir.join(name);
            w.flush().map_err(io_error(&path))?;
            w.get_ref().sync_all().map_err(io_error(&path))?;
        }
        write_synced(&self.dir.join(INDEX_FILE), &index)?;
        // meta.json last: a directory without it is an unfinished part.
        write_synced(&meta_path, &meta_bytes)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&self.dir))?;
        self.done = true;
        Ok(self.meta.clone())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PartError> {
    let mut f = File::create_new(path).map_err(io_error(path))?;
    f.write_all(bytes).map_err(io_error(path))?;
    f.sync_all().map_err(io_error(path))
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: an unfinished part must not be mistaken for one.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
