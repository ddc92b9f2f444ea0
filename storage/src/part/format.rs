//! Byte-level encoding of the part files owned by the writer and the reader:
//! header pages, top-level index entries and the metadata file. The layout is
//! drawn in the parent module's doc.

use super::PartMeta;
use crate::types::SeriesId;

pub(super) const DATA_FILE: &str = "data.bin";
pub(super) const HEADERS_FILE: &str = "headers.bin";
pub(super) const INDEX_FILE: &str = "index.bin";
/// Written last by `PartWriter::finish`: a directory without it is not a part.
pub const META_FILE: &str = "meta.json";

/// Bytes of one fixed-width top-level index entry.
pub(super) const INDEX_ENTRY_BYTES: usize = 52;

/// zstd level of header pages: they are written once per part and small, so
/// a level above the default costs little and shrinks the per-block overhead.
pub(super) const HEADER_ZSTD_LEVEL: i32 = 9;

/// One compressed data page, as a header page refers to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PageRef {
    /// Offset of the compressed page in `data.bin`.
    pub offset: u64,
    /// Compressed length in `data.bin`.
    pub len: u32,
    /// Length after `decompress_page`.
    pub raw_len: u32,
    /// crc32c of the compressed bytes.
    pub crc: u32,
}

/// One block: where its encoded bytes are and what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockRef {
    pub series: SeriesId,
    pub min_ts: i64,
    pub max_ts: i64,
    pub count: u32,
    /// Index into the header page's page table.
    pub page: u32,
    /// Offset of the encoded block inside the decompressed page.
    pub offset: u32,
    pub len: u32,
}

/// A decoded header page.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HeaderPage {
    pub pages: Vec<PageRef>,
    pub blocks: Vec<BlockRef>,
}

/// One entry of `index.bin`, describing one header page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IndexEntry {
    pub first_series: SeriesId,
    pub last_series: SeriesId,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Offset of the compressed header page in `headers.bin`.
    pub offset: u64,
    pub len: u32,
    /// crc32c of the compressed header page.
    pub crc: u32,
    pub blocks: u32,
}

pub(super) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Cursor over a decompressed header page; errors carry the byte position.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// Header columns are mostly one-byte varints: those are read inline,
    /// the rest by `uvarint_long`.
    #[inline]
    fn uvarint(&mut self) -> Result<u64, String> {
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.uvarint_long()
    }

    #[inline(never)]
    fn uvarint_long(&mut self) -> Result<u64, String> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(format!("varint truncated at byte {start}"));
            };
            self.pos += 1;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(format!("varint overflows u64 at byte {start}"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {start}"))
    }

    #[inline]
    fn u32_field(&mut self, what: &str) -> Result<u32, String> {
        let v = self.uvarint()?;
        u32::try_from(v).map_err(|_| format!("{what} {v} exceeds u32 at byte {}", self.pos))
    }

    fn u32_le(&mut self) -> Result<u32, String> {
        let bytes = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| format!("u32 truncated at byte {}", self.pos))?;
        self.pos += 4;
        let mut a = [0u8; 4];
        a.copy_from_slice(bytes);
        Ok(u32::from_le_bytes(a))
    }
}

/// Appends the uncompressed header page. `blocks[i].page` indexes `pages`;
/// every page has at least one block and blocks fill their page in order.
pub(super) fn encode_header_page(pages: &[PageRef], blocks: &[BlockRef], out: &mut Vec<u8>) {
    put_uvarint(out, pages.len() as u64);
    put_uvarint(out, pages.first().map_or(0, |p| p.offset));
    let base = blocks.iter().map(|b| b.min_ts).min().unwrap_or(0);
    put_uvarint(out, zigzag(base));
    for (i, p) in pages.iter().enumerate() {
        let in_page = blocks.iter().filter(|b| b.page as usize == i).count();
        put_uvarint(out, in_page as u64);
        put_uvarint(out, u64::from(p.len));
        put_uvarint(out, u64::from(p.raw_len));
        out.extend_from_slice(&p.crc.to_le_bytes());
    }
    let mut prev_series = 0;
    for b in blocks {
        put_uvarint(out, b.series - prev_series);
        prev_series = b.series;
    }
    for b in blocks {
        put_uvarint(out, u64::from(b.len));
    }
    for b in blocks {
        put_uvarint(out, u64::from(b.count));
    }
    for b in blocks {
        put_uvarint(out, b.max_ts.wrapping_sub(b.min_ts) as u64);
    }
    // A block continuing its series starts after the previous one ends: store
    // the gap, which is about one scrape interval. A series' first block in
    // the page is stored relative to the page's earliest block.
    let mut prev: Option<&BlockRef> = None;
    for b in blocks {
        let v = match prev {
            Some(p) if p.series == b.series => b.min_ts.wrapping_sub(p.max_ts).wrapping_sub(1),
            _ => b.min_ts.wrapping_sub(base),
        };
        put_uvarint(out, v as u64);
        prev = Some(b);
    }
}

/// Decodes and validates an uncompressed header page described by `entry`,
/// whose data pages must lie within `data_len` bytes. Errors name the byte
/// inside the uncompressed page.
pub(super) fn decode_header_page(
    raw: &[u8],
    entry: &IndexEntry,
    data_len: u64,
) -> Result<HeaderPage, String> {
    let mut r = Reader { buf: raw, pos: 0 };
    let page_count = r.uvarint()?;
    if page_count == 0 {
        return Err("header page refers to no data page".into());
    }
    let mut offset = r.uvarint()?;
    let base = unzigzag(r.uvarint()?);
    // Every page entry takes at least 7 bytes: bound allocations by the input.
    let mut pages = Vec::with_capacity((page_count as usize).min(raw.len() / 7));
    let mut page_blocks = Vec::with_capacity(pages.capacity());
    let mut total_blocks: u64 = 0;
    for _ in 0..page_count {
        let blocks = r.uvarint()?;
        if blocks == 0 {
            return Err(format!("data page without blocks at byte {}", r.pos));
        }
        let len = r.u32_field("page length")?;
        let raw_len = r.u32_field("page raw length")?;
        let crc = r.u32_le()?;
        let end = offset
            .checked_add(u64::from(len))
            .filter(|end| *end <= data_len)
            .ok_or_else(|| {
                format!("data page at {offset} of length {len} runs past data file end {data_len}")
            })?;
        pages.push(PageRef {
            offset,
            len,
            raw_len,
            crc,
        });
        page_blocks.push(blocks);
        total_blocks = total_blocks.saturating_add(blocks);
        offset = end;
    }
    if total_blocks != u64::from(entry.blocks) {
        return Err(format!(
            "page table holds {total_blocks} blocks, index says {}",
            entry.blocks
        ));
    }
    let n = total_blocks as usize;
    let mut blocks = vec![
        BlockRef {
            series: 0,
            min_ts: 0,
            max_ts: 0,
            count: 0,
            page: 0,
            offset: 0,
            len: 0,
        };
        n.min(raw.len())
    ];
    if blocks.len() != n {
        return Err(format!("{n} blocks cannot fit in {} bytes", raw.len()));
    }
    let mut series: u64 = 0;
    for b in blocks.iter_mut() {
        let at = r.pos;
        series = series
            .checked_add(r.uvarint()?)
            .ok_or_else(|| format!("series id overflows at byte {at}"))?;
        b.series = series;
    }
    let mut page = 0usize;
    let mut left_in_page = page_blocks[0];
    let mut in_page_offset: u64 = 0;
    for b in blocks.iter_mut() {
        if left_in_page == 0 {
            if in_page_offset != u64::from(pages[page].raw_len) {
                return Err(format!(
                    "blocks of data page {page} cover {in_page_offset} bytes, page holds {}",
                    pages[page].raw_len
                ));
            }
            page += 1;
            left_in_page = page_blocks[page];
            in_page_offset = 0;
        }
        left_in_page -= 1;
        b.len = r.u32_field("block length")?;
        b.page = page as u32;
        b.offset = in_page_offset as u32;
        in_page_offset += u64::from(b.len);
        if in_page_offset > u64::from(pages[page].raw_len) {
            return Err(format!(
                "block ends at {in_page_offset}, past data page {page} of {} bytes",
                pages[page].raw_len
            ));
        }
    }
    if in_page_offset != u64::from(pages[page].raw_len) {
        return Err(format!(
            "blocks of data page {page} cover {in_page_offset} bytes, page holds {}",
            pages[page].raw_len
        ));
    }
    for b in blocks.iter_mut() {
        let at = r.pos;
        b.count = r.u32_field("sample count")?;
        if b.count == 0 {
            return Err(format!("empty block at byte {at}"));
        }
    }
    let mut spans = Vec::with_capacity(n);
    for _ in 0..n {
        spans.push(r.uvarint()?);
    }
    for i in 0..n {
        let at = r.pos;
        let v = r.uvarint()?;
        let min_ts = match i.checked_sub(1).map(|p| blocks[p]) {
            Some(p) if p.series == blocks[i].series => v
                .checked_add(1)
                .and_then(|gap| p.max_ts.checked_add_unsigned(gap)),
            _ => base.checked_add_unsigned(v),
        };
        let b = &mut blocks[i];
        b.min_ts = min_ts.ok_or_else(|| format!("block start overflows at byte {at}"))?;
        b.max_ts = b
            .min_ts
            .checked_add_unsigned(spans[i])
            .ok_or_else(|| format!("block time span overflows at byte {at}"))?;
    }
    if r.pos != raw.len() {
        return Err(format!(
            "{} trailing bytes after the last column at byte {}",
            raw.len() - r.pos,
            r.pos
        ));
    }
    for (i, w) in blocks.windows(2).enumerate() {
        if w[1].series == w[0].series && w[1].min_ts <= w[0].max_ts {
            return Err(format!(
                "block {} of series {} starts at {} before the previous block ends at {}",
                i + 1,
                w[1].series,
                w[1].min_ts,
                w[0].max_ts
            ));
        }
    }
    let (first, last) = match (blocks.first(), blocks.last()) {
        (Some(f), Some(l)) => (f.series, l.series),
        _ => return Err("header page without blocks".into()),
    };
    let min_ts = blocks.iter().map(|b| b.min_ts).min().unwrap_or(i64::MAX);
    let max_ts = blocks.iter().map(|b| b.max_ts).max().unwrap_or(i64::MIN);
    if (first, last, min_ts, max_ts)
        != (
            entry.first_series,
            entry.last_series,
            entry.min_ts,
            entry.max_ts,
        )
    {
        return Err(format!(
            "blocks span series {first}..={last} and time {min_ts}..={max_ts}, index says \
             series {}..={} and time {}..={}",
            entry.first_series, entry.last_series, entry.min_ts, entry.max_ts
        ));
    }
    Ok(HeaderPage { pages, blocks })
}

pub(super) fn encode_index_entry(e: &IndexEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.first_series.to_le_bytes());
    out.extend_from_slice(&e.last_series.to_le_bytes());
    out.extend_from_slice(&e.min_ts.to_le_bytes());
    out.extend_from_slice(&e.max_ts.to_le_bytes());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.len.to_le_bytes());
    out.extend_from_slice(&e.crc.to_le_bytes());
    out.extend_from_slice(&e.blocks.to_le_bytes());
}

/// Decodes one entry from exactly `INDEX_ENTRY_BYTES` bytes.
pub(super) fn decode_index_entry(b: &[u8; INDEX_ENTRY_BYTES]) -> IndexEntry {
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let u32_at = |at: usize| {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(a)
    };
    IndexEntry {
        first_series: u64_at(0),
        last_series: u64_at(8),
        min_ts: u64_at(16) as i64,
        max_ts: u64_at(24) as i64,
        offset: u64_at(32),
        len: u32_at(40),
        crc: u32_at(44),
        blocks: u32_at(48),
    }
}

/// `meta.json`: the JSON object, a newline, the crc32c of the JSON bytes as 8
/// lowercase hex digits, a newline.
pub(super) fn encode_meta(meta: &PartMeta) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec(meta)?;
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(format!("\n{crc:08x}\n").as_bytes());
    Ok(out)
}

/// Reverses `encode_meta`; errors give the byte offset and what is wrong.
pub(super) fn decode_meta(bytes: &[u8]) -> Result<PartMeta, (u64, String)> {
    let json_len = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| (0, "no newline after the json object".to_string()))?;
    let trailer = &bytes[json_len + 1..];
    let at = json_len as u64 + 1;
    if trailer.len() != 9 || trailer[8] != b'\n' {
        return Err((at, "checksum line is not 8 hex digits and a newline".into()));
    }
    let stored = std::str::from_utf8(&trailer[..8])
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| (at, "checksum line is not 8 hex digits".to_string()))?;
    let json = &bytes[..json_len];
    let actual = crc32c::crc32c(json);
    if stored != actual {
        return Err((
            0,
            format!("crc32c mismatch: stored {stored:08x}, computed {actual:08x}"),
        ));
    }
    serde_json::from_slice(json).map_err(|e| (0, format!("invalid json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_and_zigzag_round_trip() {
        let values = [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX];
        for v in values {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            let mut r = Reader { buf: &out, pos: 0 };
            assert_eq!(r.uvarint(), Ok(v));
            assert_eq!(r.pos, out.len());
        }
        for v in [0i64, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        let mut r = Reader {
            buf: &[0xff; 11],
            pos: 0,
        };
        assert!(r.uvarint().is_err());
        let mut r = Reader {
            buf: &[0x80],
            pos: 0,
        };
        assert!(r.uvarint().is_err());
    }
}
