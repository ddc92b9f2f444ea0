//! Immutable data parts: columnar per-series blocks sorted by (series id,
//! time), compressed, checksummed, read through mmap.
//!
//! A part is a directory of four files:
//!
//! ```text
//! <part>/
//!   data.bin     compressed data pages, back to back
//!   headers.bin  zstd-compressed header pages, back to back
//!   index.bin    one fixed-width entry per header page, then a crc32c
//!   meta.json    PartMeta as JSON, then its crc32c; written last
//! ```
//!
//! **Blocks.** The samples of one series are cut into blocks of
//! `encoding::BLOCK_TARGET_SAMPLES` samples (the last holds the rest;
//! readers accept up to `encoding::MAX_BLOCK_SAMPLES`), each encoded by
//! `encoding::encode_block`. Blocks are written in (series id, min timestamp)
//! order; the blocks of one series never overlap in time.
//!
//! **Data pages** (`data.bin`). Consecutive encoded blocks are concatenated
//! into a raw page until it reaches `encoding::PAGE_TARGET_BYTES` (a single
//! block may exceed it); the page is stored as `encoding::compress_page` made
//! it. The file has no framing of its own: offsets, lengths and crc32c of the
//! compressed pages live in the header pages.
//!
//! **Header pages** (`headers.bin`). A header page describes a run of whole
//! data pages and all of their blocks; it is closed at the first data page
//! boundary at or after `HEADER_PAGE_BLOCKS` blocks, so every data page
//! belongs to exactly one header page. Uncompressed layout (varint = unsigned
//! LEB128, zigzag = signed mapped to unsigned; n = sum of `blocks`):
//!
//! ```text
//! varint  page_count                        >= 1
//! varint  first_page_offset                 offset in data.bin of the first page
//! zigzag  base_ts                           least min_ts of the page's blocks
//! page_count x {                            pages follow each other in data.bin
//!   varint  blocks                          >= 1, blocks stored in this page
//!   varint  compressed_len
//!   varint  raw_len                         = sum of its blocks' enc_len
//!   u32 LE  crc32c of the compressed page
//! }
//! n x varint  series id delta               first one from 0; never decreasing
//! n x varint  enc_len                       encoded block length; a block's offset
//!                                           in its raw page is the sum of the
//!                                           enc_len before it in that page
//! n x varint  sample count                  >= 1
//! n x varint  max_ts - min_ts
//! n x varint  start                         min_ts - previous max_ts - 1 when the
//!                                           previous block is of the same series,
//!                                           else min_ts - base_ts
//! ```
//!
//! The whole is compressed with zstd; the compressed bytes are what
//! `index.bin` points at and checksums.
//!
//! **Index** (`index.bin`). One 52-byte little-endian entry per header page,
//! in file order, then a u32 LE crc32c of all entries:
//!
//! ```text
//! u64 first_series  u64 last_series  i64 min_ts  i64 max_ts
//! u64 offset (in headers.bin)  u32 len  u32 crc32c (of the compressed page)  u32 blocks
//! ```
//!
//! Entries are contiguous from offset 0 and cover `headers.bin` exactly; their
//! series ranges never decrease (`last_series[i] <= first_series[i+1]`: one
//! series may span several header pages).
//!
//! **Meta** (`meta.json`). The JSON object of [`PartMeta`], `\n`, the crc32c of
//! the JSON bytes as 8 lowercase hex digits, `\n`. `size_bytes` counts all four
//! files, meta.json included. An empty part has `rows == 0`,
//! `min_timestamp > max_timestamp` and `min_series_id > max_series_id`.
//!
//! **Checks.** `Part::open` verifies meta.json, index.bin and the crc32c of
//! every header page (cheap: header pages are a small share of the part), and
//! that `size_bytes` matches the files. Header pages are decoded lazily on read;
//! data pages are checked against their crc32c when they are decompressed.
//! Both are kept in a [`PageCache`] shared by the parts of a storage
//! instance (merges bypass it). Corruption is reported as
//! [`PartError::Corrupted`] with the file and the offset of the page.

mod cache;
mod format;
mod search;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::encoding;
use crate::types::{SeriesId, TimeRange};

pub use cache::PageCache;
pub use format::META_FILE;
use format::{DATA_FILE, HEADERS_FILE, HeaderPage, INDEX_ENTRY_BYTES, INDEX_FILE, IndexEntry};
use writer::Limits;
pub use writer::PartWriter;

/// Version written into `PartMeta::format_version`; `Part::open` refuses others.
pub const FORMAT_VERSION: u32 = 1;

/// Target number of blocks per header page (see the module doc).
pub const HEADER_PAGE_BLOCKS: usize = 512;

/// Largest decoded header page taken by the one-shot decoder (a page of
/// `HEADER_PAGE_BLOCKS` blocks is far smaller; larger ones are still read,
/// by the streaming decoder).
const MAX_HEADER_PAGE_BYTES: usize = 16 << 20;

/// Cache budgets of a part opened with `Part::open` (a part read on its
/// own: tests, tools): decoded header pages, decompressed data pages.
const OWN_CACHE_BYTES: (usize, usize) = (1 << 20, 4 << 20);

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
    /// The caller broke the `PartWriter::add` contract (order, lengths).
    #[error("part writer input rejected: {what}")]
    InvalidInput { what: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PartError + '_ {
    move |source| PartError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupted(path: &Path, offset: u64, what: impl Into<String>) -> PartError {
    PartError::Corrupted {
        path: path.to_path_buf(),
        offset,
        what: what.into(),
    }
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

/// An open, immutable part. Send + Sync: share it behind an `Arc`.
pub struct Part {
    dir: PathBuf,
    data_path: PathBuf,
    headers_path: PathBuf,
    meta: PartMeta,
    index: Vec<IndexEntry>,
    data: Mmap,
    headers: Mmap,
    /// Key of this part's entries in `cache`.
    uid: u64,
    cache: Arc<PageCache>,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Samples of one series from one block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockSamples {
    pub series_id: SeriesId,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// Maps a file read-only; empty files map to an empty slice.
#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<Mmap, PartError> {
    let file = File::open(path).map_err(io_error(path))?;
    // SAFETY: part files are immutable once `finish` returned: nothing in the
    // process writes or truncates them while a `Part` maps them, and parts are
    // only deleted by unlinking, which keeps the mapping valid.
    unsafe { Mmap::map(&file) }.map_err(io_error(path))
}

impl Part {
    /// Opens a part with a small cache of its own (see `open_with_cache`).
    pub fn open(dir: &Path) -> Result<Part, PartError> {
        let (headers, pages) = OWN_CACHE_BYTES;
        Part::open_with_cache(dir, PageCache::new(headers, pages))
    }

    /// Opens a part, verifying the checksums of its metadata and block
    /// index; its reads keep decoded pages in `cache`.
    pub fn open_with_cache(dir: &Path, cache: Arc<PageCache>) -> Result<Part, PartError> {
        let meta_path = dir.join(format::META_FILE);
        let meta_bytes = std::fs::read(&meta_path).map_err(io_error(&meta_path))?;
        let meta = format::decode_meta(&meta_bytes)
            .map_err(|(offset, what)| corrupted(&meta_path, offset, what))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(corrupted(
                &meta_path,
                0,
                format!(
                    "unsupported format version {}, want {FORMAT_VERSION}",
                    meta.format_version
                ),
            ));
        }

        let index_path = dir.join(INDEX_FILE);
        let index_bytes = std::fs::read(&index_path).map_err(io_error(&index_path))?;
        let index = decode_index(&index_bytes, &index_path)?;

        let headers_path = dir.join(HEADERS_FILE);
        let data_path = dir.join(DATA_FILE);
        let headers = map_file(&headers_path)?;
        let data = map_file(&data_path)?;

        let size = (meta_bytes.len() + index_bytes.len() + headers.len() + data.len()) as u64;
        if size != meta.size_bytes {
            return Err(corrupted(
                &meta_path,
                0,
                format!(
                    "part files hold {size} bytes, meta says {}",
                    meta.size_bytes
                ),
            ));
        }
        check_index(&index, &meta, headers.len() as u64, &index_path)?;
        for e in &index {
            let bytes = &headers[e.offset as usize..(e.offset + u64::from(e.len)) as usize];
            let crc = crc32c::crc32c(bytes);
            if crc != e.crc {
                return Err(corrupted(
                    &headers_path,
                    e.offset,
                    format!(
                        "header page crc32c mismatch: index says {:08x}, computed {crc:08x}",
                        e.crc
                    ),
                ));
            }
        }
        Ok(Part {
            dir: dir.to_path_buf(),
            data_path,
            headers_path,
            meta,
            index,
            data,
            headers,
            uid: cache::next_uid(),
            cache,
        })
    }

    pub fn meta(&self) -> &PartMeta {
        &self.meta
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Appends to `out` the samples of `series_id` within `range`, in time
    /// order. A corrupted block is reported as an error after the good blocks
    /// of the series were appended.
    ///
    /// Cost: a binary search over the index, the header pages that may hold
    /// the series and the data pages holding its blocks within `range`, each
    /// from the cache or decoded and cached.
    pub fn read_series(
        &self,
        series_id: SeriesId,
        range: TimeRange,
        out_timestamps: &mut Vec<i64>,
        out_values: &mut Vec<f64>,
    ) -> Result<(), PartError> {
        self.read_series_cached(
            &mut ReadCache::default(),
            series_id,
            range,
            out_timestamps,
            out_values,
        )
    }

    /// `read_series` keeping the last header page and data page in `cache`,
    /// so that reading series in id order finds each page once rather than
    /// once per series. A `ReadCache` belongs to this part only.
    pub fn read_series_cached(
        &self,
        cache: &mut ReadCache,
        series_id: SeriesId,
        range: TimeRange,
        out_timestamps: &mut Vec<i64>,
        out_values: &mut Vec<f64>,
    ) -> Result<(), PartError> {
        if range.start > range.end {
            return Ok(());
        }
        let first = search::first_at_or_above(&self.index, |e| e.last_series, series_id);
        let mut first_err = None;
        // A damaged page is skipped within one call but reported again by the
        // next call that needs it, so no series loses its error.
        cache.page.failed = None;
        for (i, e) in self.index.iter().enumerate().skip(first) {
            if e.first_series > series_id {
                break;
            }
            if !range.overlaps(e.min_ts, e.max_ts) {
                continue;
            }
            let hp = match cache.header_page(self, i) {
                Ok(hp) => hp,
                Err(err) => {
                    first_err.get_or_insert(err);
                    continue;
                }
            };
            let (page, scratch) = (&mut cache.page, &mut cache.scratch);
            let start = search::first_at_or_above(&hp.blocks, |b| b.series, series_id);
            for b in hp.blocks[start..]
                .iter()
                .take_while(|b| b.series == series_id)
            {
                if b.min_ts > range.end {
                    break;
                }
                if b.max_ts < range.start {
                    continue;
                }
                let raw = match page.load(self, &hp, b.page, true) {
                    Ok(Some(raw)) => raw,
                    Ok(None) => continue,
                    Err(err) => {
                        first_err.get_or_insert(err);
                        continue;
                    }
                };
                let whole = range.start <= b.min_ts && b.max_ts <= range.end;
                let result = if whole {
                    // Room for the block in one step (decoding uses the
                    // timestamps' spare room for as many mantissas).
                    out_timestamps.reserve(2 * b.count as usize);
                    out_values.reserve(b.count as usize);
                    self.decode(&hp, b, raw, out_timestamps, out_values)
                } else {
                    let (block_ts, block_vals) = scratch;
                    block_ts.clear();
                    block_vals.clear();
                    self.decode(&hp, b, raw, block_ts, block_vals).map(|()| {
                        // A block's timestamps ascend (the writer's contract,
                        // and the page passed its checksum).
                        let lo = block_ts.partition_point(|&t| t < range.start);
                        let hi = lo + block_ts[lo..].partition_point(|&t| t <= range.end);
                        out_timestamps.extend_from_slice(&block_ts[lo..hi]);
                        out_values.extend_from_slice(&block_vals[lo..hi]);
                    })
                };
                if let Err(err) = result {
                    first_err.get_or_insert(err);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Whether `series_id` has a sample within `range`, from the block
    /// headers alone where they settle it: a block's first and last
    /// timestamps are samples, so a block with either inside `range` has
    /// one. Only a block that starts before `range` and ends after it is
    /// decompressed.
    pub fn has_samples(
        &self,
        cache: &mut ReadCache,
        series_id: SeriesId,
        range: TimeRange,
    ) -> Result<bool, PartError> {
        if range.start > range.end {
            return Ok(false);
        }
        let first = search::first_at_or_above(&self.index, |e| e.last_series, series_id);
        let mut straddling = false;
        for (i, e) in self.index.iter().enumerate().skip(first) {
            if e.first_series > series_id {
                break;
            }
            if !range.overlaps(e.min_ts, e.max_ts) {
                continue;
            }
            let hp = cache.header_page(self, i)?;
            let start = search::first_at_or_above(&hp.blocks, |b| b.series, series_id);
            for b in hp.blocks[start..]
                .iter()
                .take_while(|b| b.series == series_id)
            {
                if range.contains(b.min_ts) || range.contains(b.max_ts) {
                    return Ok(true);
                }
                straddling |= b.min_ts < range.start && range.end < b.max_ts;
            }
        }
        if !straddling {
            return Ok(false);
        }
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        self.read_series_cached(cache, series_id, range, &mut ts, &mut vs)?;
        Ok(!ts.is_empty())
    }

    /// Every block of the part in (series id, time) order, for merges and scans.
    /// Each page is decompressed once. After an error the iterator goes on with
    /// the next readable page, so a scan can skip damage; a merge stops at it.
    pub fn blocks(&self) -> BlockIter<'_> {
        BlockIter {
            part: self,
            next_entry: 0,
            header: None,
            block: 0,
            page: PageSlot::default(),
        }
    }

    /// Header page `i` from the cache, decoding and caching it on a miss.
    fn cached_header_page(&self, i: usize) -> Result<Arc<HeaderPage>, PartError> {
        let key = (self.uid, self.index[i].offset);
        if let Some(hp) = self.cache.headers.get(key) {
            return Ok(hp);
        }
        // Decode outside any lock: concurrent readers of other pages go on.
        let hp = Arc::new(self.header_page(i)?);
        let bytes = std::mem::size_of::<HeaderPage>()
            + hp.pages.capacity() * std::mem::size_of::<format::PageRef>()
            + hp.blocks.capacity() * std::mem::size_of::<format::BlockRef>();
        self.cache.headers.insert(key, Arc::clone(&hp), bytes);
        Ok(hp)
    }

    /// Data page `p` decompressed, from the cache or loaded and cached.
    fn cached_page(&self, p: &format::PageRef) -> Result<Arc<Vec<u8>>, PartError> {
        let key = (self.uid, p.offset);
        if let Some(raw) = self.cache.pages.get(key) {
            return Ok(raw);
        }
        let mut raw = Vec::new();
        self.load_page(p, &mut raw)?;
        let raw = Arc::new(raw);
        self.cache
            .pages
            .insert(key, Arc::clone(&raw), raw.capacity());
        Ok(raw)
    }

    fn header_page(&self, i: usize) -> Result<HeaderPage, PartError> {
        let e = &self.index[i];
        let bytes = &self.headers[e.offset as usize..(e.offset + u64::from(e.len)) as usize];
        let crc = crc32c::crc32c(bytes);
        if crc != e.crc {
            return Err(corrupted(
                &self.headers_path,
                e.offset,
                format!(
                    "header page crc32c mismatch: index says {:08x}, computed {crc:08x}",
                    e.crc
                ),
            ));
        }
        // Header pages written by `PartWriter` declare their size; other
        // frames take the streaming decoder.
        let raw = match crate::encoding::decompress_frame(bytes, MAX_HEADER_PAGE_BYTES) {
            Some(raw) => Ok(raw),
            None => zstd::decode_all(bytes),
        };
        let raw = raw.map_err(|err| {
            corrupted(
                &self.headers_path,
                e.offset,
                format!("cannot decompress header page: {err}"),
            )
        })?;
        format::decode_header_page(&raw, e, self.data.len() as u64)
            .map_err(|what| corrupted(&self.headers_path, e.offset, format!("header page: {what}")))
    }

    /// Decompresses and checks one data page into `out`.
    fn load_page(&self, p: &format::PageRef, out: &mut Vec<u8>) -> Result<(), PartError> {
        // In bounds: `decode_header_page` checked every page against the file.
        let bytes = &self.data[p.offset as usize..(p.offset + u64::from(p.len)) as usize];
        let crc = crc32c::crc32c(bytes);
        if crc != p.crc {
            return Err(corrupted(
                &self.data_path,
                p.offset,
                format!(
                    "data page crc32c mismatch: header says {:08x}, computed {crc:08x}",
                    p.crc
                ),
            ));
        }
        out.clear();
        encoding::decompress_page(bytes, out).map_err(|err| {
            corrupted(
                &self.data_path,
                p.offset,
                format!("cannot decompress data page: {err}"),
            )
        })?;
        if out.len() != p.raw_len as usize {
            return Err(corrupted(
                &self.data_path,
                p.offset,
                format!(
                    "data page decompressed to {} bytes, header says {}",
                    out.len(),
                    p.raw_len
                ),
            ));
        }
        Ok(())
    }

    /// Decodes block `b` from its raw page, appending exactly its samples.
    fn decode(
        &self,
        hp: &HeaderPage,
        b: &format::BlockRef,
        raw: &[u8],
        ts: &mut Vec<i64>,
        vals: &mut Vec<f64>,
    ) -> Result<(), PartError> {
        let page_offset = hp.pages[b.page as usize].offset;
        let bytes = &raw[b.offset as usize..(b.offset + b.len) as usize];
        let (t0, v0) = (ts.len(), vals.len());
        let result = encoding::decode_block(bytes, ts, vals);
        let what = match result {
            Err(err) => Some(format!("{err}")),
            Ok(()) if ts.len() - t0 != b.count as usize || vals.len() - v0 != b.count as usize => {
                Some(format!(
                    "decoded {} samples, header says {}",
                    ts.len() - t0,
                    b.count
                ))
            }
            Ok(()) => None,
        };
        match what {
            None => Ok(()),
            Some(what) => {
                ts.truncate(t0);
                vals.truncate(v0);
                Err(corrupted(
                    &self.data_path,
                    page_offset,
                    format!(
                        "block of series {} at byte {} of the decompressed page: {what}",
                        b.series, b.offset
                    ),
                ))
            }
        }
    }

    #[cfg(test)]
    fn data_page_offsets(&self, series_id: SeriesId) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..self.index.len() {
            let hp = self.header_page(i).expect("header page");
            for b in hp.blocks.iter().filter(|b| b.series == series_id) {
                let off = hp.pages[b.page as usize].offset;
                if out.last() != Some(&off) {
                    out.push(off);
                }
            }
        }
        out
    }
}

/// Parses index.bin: entries then a crc32c over them.
fn decode_index(bytes: &[u8], path: &Path) -> Result<Vec<IndexEntry>, PartError> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(corrupted(path, 0, "shorter than its checksum"));
    };
    if body_len % INDEX_ENTRY_BYTES != 0 {
        return Err(corrupted(
            path,
            0,
            format!(
                "length {} is not whole {INDEX_ENTRY_BYTES}-byte entries plus a checksum",
                bytes.len()
            ),
        ));
    }
    let (body, tail) = bytes.split_at(body_len);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(tail);
    let stored = u32::from_le_bytes(stored);
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(corrupted(
            path,
            body_len as u64,
            format!("crc32c mismatch: stored {stored:08x}, computed {actual:08x}"),
        ));
    }
    Ok(body
        .chunks_exact(INDEX_ENTRY_BYTES)
        .filter_map(|c| c.try_into().ok())
        .map(format::decode_index_entry)
        .collect())
}

/// Checks that the index covers headers.bin exactly, in series order, and
/// agrees with the metadata.
fn check_index(
    index: &[IndexEntry],
    meta: &PartMeta,
    headers_len: u64,
    path: &Path,
) -> Result<(), PartError> {
    let mut offset = 0u64;
    let mut blocks = 0u64;
    for (i, e) in index.iter().enumerate() {
        let at = (i * INDEX_ENTRY_BYTES) as u64;
        if e.offset != offset || e.len == 0 || e.blocks == 0 {
            return Err(corrupted(
                path,
                at,
                format!(
                    "entry {i} points at {} length {} with {} blocks, want offset {offset} and a non-empty page",
                    e.offset, e.len, e.blocks
                ),
            ));
        }
        if e.first_series > e.last_series || e.min_ts > e.max_ts {
            return Err(corrupted(
                path,
                at,
                format!("entry {i} has inverted ranges"),
            ));
        }
        if i > 0 && index[i - 1].last_series > e.first_series {
            return Err(corrupted(
                path,
                at,
                format!(
                    "entry {i} starts at series {} before the previous entry ends",
                    e.first_series
                ),
            ));
        }
        offset += u64::from(e.len);
        blocks += u64::from(e.blocks);
    }
    if offset != headers_len {
        return Err(corrupted(
            path,
            0,
            format!("entries cover {offset} bytes of headers.bin, which holds {headers_len}"),
        ));
    }
    let span = match (index.first(), index.last()) {
        (Some(f), Some(l)) => (f.first_series, l.last_series),
        _ => (SeriesId::MAX, 0),
    };
    if blocks != meta.blocks || span != (meta.min_series_id, meta.max_series_id) {
        return Err(corrupted(
            path,
            0,
            format!(
                "entries hold {blocks} blocks of series {}..={}, meta says {} blocks of series {}..={}",
                span.0, span.1, meta.blocks, meta.min_series_id, meta.max_series_id
            ),
        ));
    }
    Ok(())
}

/// State kept between `Part::read_series_cached` calls on one part.
#[derive(Default)]
pub struct ReadCache {
    /// The last header page used, by index entry number.
    header: Option<(usize, Arc<HeaderPage>)>,
    page: PageSlot,
    /// A block that straddles the range is decoded here, then only its
    /// samples within the range are copied out.
    scratch: (Vec<i64>, Vec<f64>),
}

impl ReadCache {
    fn header_page(&mut self, part: &Part, i: usize) -> Result<Arc<HeaderPage>, PartError> {
        if let Some((at, hp)) = &self.header
            && *at == i
        {
            return Ok(Arc::clone(hp));
        }
        let hp = part.cached_header_page(i)?;
        self.header = Some((i, Arc::clone(&hp)));
        Ok(hp)
    }
}

/// The one decompressed data page a reader holds. Blocks are visited in page
/// order, so one slot is enough to find each page once.
#[derive(Default)]
struct PageSlot {
    raw: PageBuf,
    /// data.bin offset of the page in `raw`.
    loaded: Option<u64>,
    /// data.bin offset of a page that failed; its blocks are skipped.
    failed: Option<u64>,
}

/// A page decompressed into the slot's own buffer (reused from page to
/// page), or shared with the part's cache.
enum PageBuf {
    Own(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl Default for PageBuf {
    fn default() -> PageBuf {
        PageBuf::Own(Vec::new())
    }
}

impl PageSlot {
    /// The raw page `page` of `hp`, through the part's cache when `shared`;
    /// `None` when it already failed.
    fn load(
        &mut self,
        part: &Part,
        hp: &HeaderPage,
        page: u32,
        shared: bool,
    ) -> Result<Option<&[u8]>, PartError> {
        let p = &hp.pages[page as usize];
        if self.failed == Some(p.offset) {
            return Ok(None);
        }
        if self.loaded != Some(p.offset) {
            self.loaded = None;
            let loaded = if shared && part.cache.pages.enabled() {
                part.cached_page(p)
                    .map(|raw| self.raw = PageBuf::Shared(raw))
            } else {
                let mut buf = match std::mem::take(&mut self.raw) {
                    PageBuf::Own(buf) => buf,
                    PageBuf::Shared(_) => Vec::new(),
                };
                let loaded = part.load_page(p, &mut buf);
                self.raw = PageBuf::Own(buf);
                loaded
            };
            if let Err(err) = loaded {
                self.failed = Some(p.offset);
                return Err(err);
            }
            self.loaded = Some(p.offset);
        }
        Ok(Some(match &self.raw {
            PageBuf::Own(buf) => buf,
            PageBuf::Shared(raw) => raw,
        }))
    }
}

pub struct BlockIter<'a> {
    part: &'a Part,
    next_entry: usize,
    header: Option<HeaderPage>,
    block: usize,
    page: PageSlot,
}

impl Iterator for BlockIter<'_> {
    type Item = Result<BlockSamples, PartError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(hp) = self.header.as_ref().filter(|h| self.block < h.blocks.len()) else {
                let i = self.next_entry;
                if i >= self.part.index.len() {
                    return None;
                }
                self.next_entry += 1;
                self.header = None;
                self.block = 0;
                match self.part.header_page(i) {
                    Ok(hp) => self.header = Some(hp),
                    Err(err) => return Some(Err(err)),
                }
                continue;
            };
            let b = hp.blocks[self.block];
            self.block += 1;
            // Merges and scans read every page once: leave the cache to queries.
            let raw = match self.page.load(self.part, hp, b.page, false) {
                Ok(Some(raw)) => raw,
                Ok(None) => continue,
                Err(err) => return Some(Err(err)),
            };
            let mut out = BlockSamples {
                series_id: b.series,
                timestamps: Vec::with_capacity(b.count as usize),
                values: Vec::with_capacity(b.count as usize),
            };
            return Some(
                self.part
                    .decode(hp, &b, raw, &mut out.timestamps, &mut out.values)
                    .map(|()| out),
            );
        }
    }
}

/// Merges `parts` into a new part at `dir`: samples of a series from every
/// input are combined and deduplicated with `dedup::sort_and_dedup` using
/// `dedup_interval_ms`; series for which `drop_series` returns true and
/// samples outside `keep` are left out.
///
/// Memory is bounded by the samples of one series plus one page per input.
/// Any read error of an input fails the merge and removes `dir`.
pub fn merge_parts(
    parts: &[&Part],
    dir: &Path,
    dedup_interval_ms: i64,
    keep: TimeRange,
    drop_series: &dyn Fn(SeriesId) -> bool,
) -> Result<PartMeta, PartError> {
    merge_with_limits(
        parts,
        dir,
        dedup_interval_ms,
        keep,
        drop_series,
        Limits::DEFAULT,
    )
}

fn merge_with_limits(
    parts: &[&Part],
    dir: &Path,
    dedup_interval_ms: i64,
    keep: TimeRange,
    drop_series: &dyn Fn(SeriesId) -> bool,
    limits: Limits,
) -> Result<PartMeta, PartError> {
    struct Input<'a> {
        blocks: BlockIter<'a>,
        head: Option<BlockSamples>,
    }
    // Dropping the writer on any error below removes `dir`.
    let mut writer = PartWriter::with_limits(dir, limits)?;
    let mut inputs = Vec::with_capacity(parts.len());
    for p in parts {
        let mut blocks = p.blocks();
        let head = blocks.next().transpose()?;
        inputs.push(Input { blocks, head });
    }
    let mut ts = Vec::new();
    let mut vals = Vec::new();
    while let Some(series) = inputs
        .iter()
        .filter_map(|i| i.head.as_ref().map(|b| b.series_id))
        .min()
    {
        ts.clear();
        vals.clear();
        for input in &mut inputs {
            while let Some(b) = input.head.take_if(|b| b.series_id == series) {
                ts.extend_from_slice(&b.timestamps);
                vals.extend_from_slice(&b.values);
                input.head = input.blocks.next().transpose()?;
            }
        }
        if drop_series(series) {
            continue;
        }
        crate::dedup::sort_and_dedup(&mut ts, &mut vals, dedup_interval_ms);
        let lo = ts.partition_point(|&t| t < keep.start);
        let hi = ts.partition_point(|&t| t <= keep.end);
        if lo < hi {
            writer.add(series, &ts[lo..hi], &vals[lo..hi])?;
        }
    }
    writer.finish()
}
