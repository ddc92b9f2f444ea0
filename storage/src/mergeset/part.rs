//! One immutable on-disk part: `blocks.bin` (checksummed compressed blocks,
//! read through mmap) and `index.bin` (the block index, read into memory at
//! open). The byte layout is drawn in the parent module's doc.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::Mmap;
use tracing::warn;

use super::block::{BlockEncoder, CODEC_PLAIN, CODEC_ZSTD, Reader, decode_disk, put_varint};
use super::run::ItemRun;
use super::{MergesetError, fsync_dir, io_err};

pub(crate) const BLOCKS_FILE: &str = "blocks.bin";
pub(crate) const INDEX_FILE: &str = "index.bin";
pub(crate) const BLOCKS_MAGIC: &[u8; 8] = b"STMSBLK1";
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"STMSIDX1";

/// Appends `item` as (shared prefix length with `prev`, suffix length, suffix).
fn put_prefixed(out: &mut Vec<u8>, prev: &[u8], item: &[u8]) {
    let cp = prev.iter().zip(item).take_while(|(a, b)| a == b).count();
    put_varint(out, cp as u64);
    put_varint(out, (item.len() - cp) as u64);
    out.extend_from_slice(&item[cp..]);
}

/// Directory name of a live part.
pub(crate) fn part_dir_name(id: u64) -> String {
    format!("{id:016x}")
}

/// Directory name of a part being written.
pub(crate) fn tmp_dir_name(id: u64) -> String {
    format!("{id:016x}.tmp")
}

/// Parses a live part directory name back into its id.
pub(crate) fn parse_part_dir_name(name: &str) -> Option<u64> {
    if name.len() != 16 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(name, 16).ok()
}

/// Where one block lives and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockMeta {
    pub(crate) first: Box<[u8]>,
    pub(crate) offset: u64,
    pub(crate) disk_len: u32,
    pub(crate) raw_len: u32,
    pub(crate) items: u32,
    pub(crate) crc: u32,
}

pub(crate) struct Part {
    pub(crate) id: u64,
    /// Unique in the process (ids are unique in a table): the key of the
    /// part's blocks in a cache shared by tables.
    pub(crate) uid: u64,
    dir: PathBuf,
    blocks_path: PathBuf,
    mmap: Mmap,
    blocks: Vec<BlockMeta>,
    items: u64,
    max_item: Box<[u8]>,
    disk_bytes: u64,
    /// Set once the part left the manifest: the directory is deleted when the
    /// last search holding the part lets go of it.
    removed: AtomicBool,
    /// Set when a merge met a corrupted block here: merges leave the part
    /// alone so its readable blocks stay available to searches.
    quarantined: AtomicBool,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("dir", &self.dir)
            .field("items", &self.items)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.removed.load(Ordering::Acquire) {
            return;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %self.dir.display(), error = %e, "Cannot delete merged-away index part; the next open deletes it.");
            }
        }
    }
}

#[allow(unsafe_code)]
fn map_file(file: &File, path: &Path) -> Result<Mmap, MergesetError> {
    // SAFETY: part files are written once into a temp dir and never modified
    // after the rename that publishes them; the table only ever deletes whole
    // parts, and on Linux a mapping stays valid after unlink. Only an outside
    // process truncating the file could invalidate the mapping.
    unsafe { Mmap::map(file) }.map_err(io_err(path))
}

fn corrupted(path: &Path, offset: u64, what: impl Into<String>) -> MergesetError {
    MergesetError::Corrupted {
        path: path.to_path_buf(),
        offset,
        what: what.into(),
    }
}

/// Little-endian cursor over the index file that names the failing offset.
struct IndexReader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> IndexReader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], MergesetError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(corrupted(
                self.path,
                self.pos as u64,
                format!("truncated {what}"),
            ));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, MergesetError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, MergesetError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

impl Part {
    /// Opens a published part. Corruption of the index or of the block file's
    /// framing is `Corrupted`; failing syscalls are `Io`.
    pub(crate) fn open(table_dir: &Path, id: u64) -> Result<Part, MergesetError> {
        let dir = table_dir.join(part_dir_name(id));
        let index_path = dir.join(INDEX_FILE);
        let blocks_path = dir.join(BLOCKS_FILE);
        let index = match std::fs::read(&index_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupted(&index_path, 0, "index file is missing"));
            }
            Err(e) => return Err(io_err(&index_path)(e)),
        };
        let blocks_file = match File::open(&blocks_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupted(&blocks_path, 0, "block file is missing"));
            }
            Err(e) => return Err(io_err(&blocks_path)(e)),
        };
        let blocks_len = blocks_file.metadata().map_err(io_err(&blocks_path))?.len();
        let (items, max_item, blocks) = parse_index(&index, &index_path, blocks_len)?;
        let mmap = map_file(&blocks_file, &blocks_path)?;
        if mmap.get(..BLOCKS_MAGIC.len()) != Some(BLOCKS_MAGIC.as_slice()) {
            return Err(corrupted(&blocks_path, 0, "bad block file magic"));
        }
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        Ok(Part {
            id,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            dir,
            blocks_path,
            mmap,
            blocks,
            items,
            max_item,
            disk_bytes: blocks_len + index.len() as u64,
            removed: AtomicBool::new(false),
            quarantined: AtomicBool::new(false),
        })
    }

    pub(crate) fn items(&self) -> u64 {
        self.items
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    pub(crate) fn block_count(&self) -> usize {
        self.blocks.len()
    }

    pub(crate) fn blocks_path(&self) -> &Path {
        &self.blocks_path
    }

    #[cfg(test)]
    pub(crate) fn block_meta(&self, i: usize) -> &BlockMeta {
        &self.blocks[i]
    }

    /// The last block whose first item is `<= key` (0 when all are greater),
    /// or `None` when every item of the part is `< key`.
    pub(crate) fn block_for(&self, key: &[u8]) -> Option<usize> {
        if &*self.max_item < key {
            return None;
        }
        let after = self.blocks.partition_point(|b| &*b.first <= key);
        Some(after.saturating_sub(1))
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    pub(crate) fn quarantine(&self) {
        self.quarantined.store(true, Ordering::Release);
    }

    pub(crate) fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Acquire)
    }

    /// Reads, verifies and decodes block `i`.
    pub(crate) fn read_block(&self, i: usize) -> Result<ItemRun, MergesetError> {
        let Some(meta) = self.blocks.get(i) else {
            return Err(corrupted(&self.blocks_path, 0, format!("no block {i}")));
        };
        // Bounds were checked against the file length at open.
        let start = meta.offset as usize;
        let disk = self
            .mmap
            .get(start..start + meta.disk_len as usize)
            .ok_or_else(|| corrupted(&self.blocks_path, meta.offset, "block past end of file"))?;
        let crc = crc32c::crc32c(disk);
        if crc != meta.crc {
            return Err(corrupted(
                &self.blocks_path,
                meta.offset,
                format!(
                    "block {i} checksum {crc:08x} does not match index {:08x}",
                    meta.crc
                ),
            ));
        }
        decode_disk(
            disk,
            meta.raw_len as usize,
            &meta.first,
            meta.items as usize,
        )
        .map_err(|what| corrupted(&self.blocks_path, meta.offset, format!("block {i}: {what}")))
    }
}

type ParsedIndex = (u64, Box<[u8]>, Vec<BlockMeta>);

/// Bytes of the fixed index header: magic, items, blocks, entries length, codec.
const INDEX_HEADER: usize = 8 + 8 + 4 + 4 + 1;

/// Refuses absurd entry-section sizes before allocating for them.
const MAX_ENTRIES_LEN: usize = 1 << 30;

fn parse_index(buf: &[u8], path: &Path, blocks_len: u64) -> Result<ParsedIndex, MergesetError> {
    let Some(body_len) = buf.len().checked_sub(4) else {
        return Err(corrupted(path, 0, "index file shorter than its checksum"));
    };
    let (body, crc) = buf.split_at(body_len);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let got = crc32c::crc32c(body);
    if got != want {
        return Err(corrupted(
            path,
            body_len as u64,
            format!("index checksum {got:08x} does not match stored {want:08x}"),
        ));
    }
    let mut r = IndexReader {
        buf: body,
        pos: 0,
        path,
    };
    if r.take(INDEX_MAGIC.len(), "magic")? != INDEX_MAGIC {
        return Err(corrupted(path, 0, "bad index file magic"));
    }
    let items = r.u64("item count")?;
    let block_count = r.u32("block count")? as usize;
    let entries_len = r.u32("entries length")? as usize;
    let codec = r.take(1, "entries codec")?[0];
    let payload = &body[r.pos..];
    let at = r.pos as u64;
    if entries_len > MAX_ENTRIES_LEN {
        return Err(corrupted(
            path,
            20,
            format!("entries length {entries_len} is absurd"),
        ));
    }
    let decompressed;
    let entries: &[u8] = match codec {
        CODEC_PLAIN => payload,
        CODEC_ZSTD => {
            decompressed = zstd::bulk::decompress(payload, entries_len)
                .map_err(|e| corrupted(path, at, format!("cannot decompress block index: {e}")))?;
            &decompressed
        }
        other => {
            return Err(corrupted(
                path,
                at - 1,
                format!("unknown entries codec {other}"),
            ));
        }
    };
    if entries.len() != entries_len {
        return Err(corrupted(
            path,
            at,
            format!(
                "block index holds {} bytes, header says {entries_len}",
                entries.len()
            ),
        ));
    }
    let bad =
        |i: usize, what: String| corrupted(path, at, format!("block index entry {i}: {what}"));
    let as_u32 = |i: usize, v: u64, what: &str| {
        u32::try_from(v).map_err(|_| bad(i, format!("{what} {v} does not fit in u32")))
    };

    let mut e = Reader::new(entries, "block index");
    // Each entry takes at least 8 bytes: bound the allocation by what the
    // entries can hold, not by the stored count.
    let mut blocks: Vec<BlockMeta> = Vec::with_capacity(block_count.min(entries.len() / 8));
    let mut offset = BLOCKS_MAGIC.len() as u64;
    let mut total_items = 0u64;
    let mut prev_first: &[u8] = &[];
    let mut first_buf = Vec::new();
    for i in 0..=block_count {
        let fields = if i < block_count {
            let disk_len = e.varint().map_err(|w| bad(i, w))?;
            let raw_len = e.varint().map_err(|w| bad(i, w))?;
            let block_items = e.varint().map_err(|w| bad(i, w))?;
            let crc = e.bytes(4).map_err(|w| bad(i, w))?;
            Some((
                disk_len,
                raw_len,
                block_items,
                u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]),
            ))
        } else {
            None
        };
        // The first item (or, after the last entry, the max item) shares a
        // prefix with the previous first item.
        let cp = e.usize().map_err(|w| bad(i, w))?;
        let suffix_len = e.usize().map_err(|w| bad(i, w))?;
        let suffix = e.bytes(suffix_len).map_err(|w| bad(i, w))?;
        if cp > prev_first.len() {
            return Err(bad(
                i,
                format!("shares {cp} bytes with a {}-byte item", prev_first.len()),
            ));
        }
        first_buf.clear();
        first_buf.extend_from_slice(&prev_first[..cp]);
        first_buf.extend_from_slice(suffix);
        let Some((disk_len, raw_len, block_items, crc)) = fields else {
            let max_item: Box<[u8]> = first_buf.as_slice().into();
            if blocks.last().is_some_and(|b| b.first > max_item) {
                return Err(bad(
                    i,
                    "max item is below the last block's first item".into(),
                ));
            }
            if !e.rest().is_empty() {
                return Err(bad(i, format!("{} trailing bytes", e.rest().len())));
            }
            if blocks.is_empty() || total_items != items {
                return Err(corrupted(
                    path,
                    8,
                    format!(
                        "index counts {items} items but its {} blocks hold {total_items}",
                        blocks.len()
                    ),
                ));
            }
            return Ok((items, max_item, blocks));
        };
        let disk_len = as_u32(i, disk_len, "block length")?;
        let raw_len = as_u32(i, raw_len, "raw length")?;
        let block_items = as_u32(i, block_items, "item count")?;
        if disk_len == 0 || block_items == 0 {
            return Err(bad(
                i,
                format!("empty block ({disk_len} bytes, {block_items} items)"),
            ));
        }
        let end = offset + u64::from(disk_len);
        if end > blocks_len {
            return Err(bad(
                i,
                format!("block ends at {end}, past the block file's {blocks_len} bytes"),
            ));
        }
        let first: Box<[u8]> = first_buf.as_slice().into();
        if blocks.last().is_some_and(|prev| prev.first >= first) {
            return Err(bad(i, "block is out of order".into()));
        }
        total_items += u64::from(block_items);
        blocks.push(BlockMeta {
            first,
            offset,
            disk_len,
            raw_len,
            items: block_items,
            crc,
        });
        offset = end;
        prev_first = blocks.last().map(|b| &*b.first).unwrap_or_default();
    }
    Err(bad(block_count, "missing max item".into()))
}

/// Streams sorted items into a new part inside a temp dir; `finish` makes it
/// durable and publishes it under its final name.
pub(crate) struct PartWriter {
    table_dir: PathBuf,
    id: u64,
    tmp_dir: PathBuf,
    blocks_path: PathBuf,
    blocks: BufWriter<File>,
    offset: u64,
    index: Vec<u8>,
    block_count: u32,
    items: u64,
    block: ItemRun,
    block_bytes: usize,
    encoder: BlockEncoder,
    /// Last item of the last written block.
    max_item: Vec<u8>,
    /// First item of the last written block, for prefix-compressing the next.
    prev_first: Vec<u8>,
    finished: bool,
}

impl PartWriter {
    pub(crate) fn create(
        table_dir: &Path,
        id: u64,
        block_bytes: usize,
        zstd_level: i32,
    ) -> Result<PartWriter, MergesetError> {
        let tmp_dir = table_dir.join(tmp_dir_name(id));
        match std::fs::remove_dir_all(&tmp_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&tmp_dir)(e)),
        }
        std::fs::create_dir(&tmp_dir).map_err(io_err(&tmp_dir))?;
        let blocks_path = tmp_dir.join(BLOCKS_FILE);
        let file = File::create(&blocks_path).map_err(io_err(&blocks_path))?;
        let mut blocks = BufWriter::with_capacity(1 << 18, file);
        blocks
            .write_all(BLOCKS_MAGIC)
            .map_err(io_err(&blocks_path))?;
        let encoder = BlockEncoder::new(zstd_level).map_err(io_err(&blocks_path))?;
        Ok(PartWriter {
            table_dir: table_dir.to_path_buf(),
            id,
            tmp_dir,
            blocks_path,
            blocks,
            offset: BLOCKS_MAGIC.len() as u64,
            index: Vec::new(),
            block_count: 0,
            items: 0,
            block: ItemRun::default(),
            block_bytes: block_bytes.max(1),
            encoder,
            max_item: Vec::new(),
            prev_first: Vec::new(),
            finished: false,
        })
    }

    /// Adds the next item; items arrive strictly ascending.
    pub(crate) fn add(&mut self, item: &[u8]) -> Result<(), MergesetError> {
        self.block.push(item);
        if self.block.data_len() >= self.block_bytes {
            self.write_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self) -> Result<(), MergesetError> {
        let Some(first) = self.block.get(0) else {
            return Ok(());
        };
        let too_big = |what: &str| {
            corrupted(
                &self.blocks_path,
                self.offset,
                format!("block {what} does not fit in u32"),
            )
        };
        let items = u32::try_from(self.block.len()).map_err(|_| too_big("item count"))?;
        let (disk, raw_len) = self
            .encoder
            .encode(&self.block)
            .map_err(io_err(&self.blocks_path))?;
        let raw_len = u32::try_from(raw_len).map_err(|_| too_big("raw length"))?;
        let disk_len = u32::try_from(disk.len()).map_err(|_| too_big("length"))?;
        let crc = crc32c::crc32c(disk);
        self.blocks
            .write_all(disk)
            .map_err(io_err(&self.blocks_path))?;
        put_varint(&mut self.index, u64::from(disk_len));
        put_varint(&mut self.index, u64::from(raw_len));
        put_varint(&mut self.index, u64::from(items));
        self.index.extend_from_slice(&crc.to_le_bytes());
        put_prefixed(&mut self.index, &self.prev_first, first);
        self.prev_first.clear();
        self.prev_first.extend_from_slice(first);
        self.offset += u64::from(disk_len);
        self.block_count += 1;
        self.items += u64::from(items);
        self.max_item.clear();
        self.max_item
            .extend_from_slice(self.block.last().unwrap_or_default());
        self.block.clear();
        Ok(())
    }

    /// Writes the index, fsyncs both files and the temp dir, renames the temp
    /// dir to the part's name and fsyncs the table dir. The part is durable
    /// but not yet live: the caller lists it in the manifest.
    pub(crate) fn finish(mut self) -> Result<Part, MergesetError> {
        self.write_block()?;
        if self.items == 0 {
            return Err(corrupted(
                &self.tmp_dir,
                0,
                "cannot write a part with no items",
            ));
        }
        let max_item = std::mem::take(&mut self.max_item);
        put_prefixed(&mut self.index, &self.prev_first, &max_item);
        let entries_len = u32::try_from(self.index.len())
            .map_err(|_| corrupted(&self.tmp_dir, 0, "block index does not fit in u32"))?;
        let compressed = self
            .encoder
            .compress(&self.index)
            .map_err(io_err(&self.tmp_dir))?;
        self.blocks.flush().map_err(io_err(&self.blocks_path))?;
        self.blocks
            .get_ref()
            .sync_all()
            .map_err(io_err(&self.blocks_path))?;

        let mut index =
            Vec::with_capacity(INDEX_HEADER + compressed.len().min(self.index.len()) + 4);
        index.extend_from_slice(INDEX_MAGIC);
        index.extend_from_slice(&self.items.to_le_bytes());
        index.extend_from_slice(&self.block_count.to_le_bytes());
        index.extend_from_slice(&entries_len.to_le_bytes());
        if compressed.len() < self.index.len() {
            index.push(CODEC_ZSTD);
            index.extend_from_slice(&compressed);
        } else {
            index.push(CODEC_PLAIN);
            index.extend_from_slice(&self.index);
        }
        let crc = crc32c::crc32c(&index);
        index.extend_from_slice(&crc.to_le_bytes());
        let index_path = self.tmp_dir.join(INDEX_FILE);
        let mut f = File::create(&index_path).map_err(io_err(&index_path))?;
        f.write_all(&index).map_err(io_err(&index_path))?;
        f.sync_all().map_err(io_err(&index_path))?;
        drop(f);
        fsync_dir(&self.tmp_dir)?;

        let final_dir = self.table_dir.join(part_dir_name(self.id));
        std::fs::rename(&self.tmp_dir, &final_dir).map_err(io_err(&final_dir))?;
        self.finished = true;
        fsync_dir(&self.table_dir)?;
        Part::open(&self.table_dir, self.id)
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if !self.finished {
            // A failed or abandoned write leaves nothing behind; should this
            // fail too, the next open removes the temp dir.
            let _ = std::fs::remove_dir_all(&self.tmp_dir);
        }
    }
}
