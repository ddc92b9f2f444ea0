//! Block codecs: one series' timestamps and values in one block, and the
//! page compression around runs of blocks.
//!
//! Contract:
//! - `encode_block` takes timestamps sorted ascending (no duplicates) and the
//!   values of the same length (at most `MAX_BLOCK_SAMPLES`), and appends a
//!   self-describing byte string to `out`. The part writer concatenates the
//!   blocks of consecutive series into pages and stores `compress_page` of
//!   each page, so blocks aim at being small *and* regular for zstd.
//! - `decode_block` reverses it exactly: every value bit pattern survives
//!   (NaN payloads, the staleness marker, -0.0, infinities, subnormals), and
//!   any i64 timestamps (all arithmetic wraps). Any input, corrupt or
//!   hostile, gives a `DecodeError` or some samples, never a panic, and never
//!   more than `MAX_BLOCK_SAMPLES` of them.
//! - Encoding picks per block whatever is smallest; decoding needs nothing
//!   but the block's bytes.
//!
//! # Block layout
//!
//! ```text
//! byte 0     tag: bits 0..=2 timestamp stream code (0..=5),
//!                 bits 3..=7 value kind (0..=9)
//! varint     n, the sample count (0..=8192)
//! ...        timestamps: an integer stream of n values
//! ...        values: the value kind's section, up to the end of the block
//! ```
//!
//! varint = LEB128 of a u64; zigzag = a varint of `(v << 1) ^ (v >> 63)`.
//!
//! Integer stream (timestamps, decimal mantissas, corrections), code =
//! `transform * 2 + packing`:
//!
//! ```text
//! transform  0 plain      r[i] = x[i]
//!            1 delta      r[0] = x[0], r[i] = x[i] - x[i-1]
//!            2 delta²     r[0] = x[0], r[1] = x[1] - x[0],
//!                         r[i] = (x[i] - x[i-1]) - (x[i-1] - x[i-2])
//! packing    0 dense      n zigzag r
//!            1 sparse     varint c (nonzero residuals), c x (varint zeros
//!                         skipped, zigzag r); the rest are zero
//! ```
//!
//! A regular scrape's timestamps are delta² sparse: `02 00 <first> 00
//! <step>`, whatever n; a late scrape adds a pair or two.
//!
//! Value kinds:
//!
//! ```text
//! 0  const decimal   zigzag m, zigzag e     every value is m * 10^e
//! 1  const raw       u64 LE                 every value has these bits
//! 2..=7 decimal      the mantissa stream's code is kind - 2
//!      u8 flags      1 divisor, 2 dense corrections, 4 sparse corrections,
//!                    8 exceptions (others must be 0)
//!      zigzag E      exponent, -22..=22
//!      [flags & 1]   varint g (>= 2), zigzag base
//!      stream of n q; mantissa m = base + g * q (base 0, g 1 without flag 1)
//!                    value = m * 10^E computed as m as f64 * 10^E, or
//!                    m as f64 / 10^-E when E < 0
//!      [flags & 6]   plain stream of n ulp corrections c:
//!                    value bits = bits of (m * 10^E) + c
//!      [flags & 8]   varint count, count x (varint gap, u64 LE bits): values
//!                    replaced verbatim; index = previous index + 1 + gap
//!                    (first: gap)
//! 8  xor             bit stream (see `xor`): first value's 64 bits, then
//!                    per value '0' same | '10' bits in the last window |
//!                    '11' lead:6 (width-1):6 bits; zero-padded to a byte
//! 9  raw             n x u64 LE
//! ```
//!
//! Why decimals: scraped values are parsed from short decimal text, so most
//! are `m * 10^E` exactly with a small integer m; counters and gauges then
//! cost a byte or two per sample as deltas or delta²s of m, and constant
//! runs cost nothing in the sparse packing. Floats that went through
//! arithmetic (`_sum` of durations, `0.1 + 0.2`) sit a few ulps off such a
//! decimal: the ulp correction keeps them exact for about a byte. The
//! divisor strips common factors (bytes in 4 KiB pages, 8-byte allocations).
//! Values with no decimal form (NaN, infinities, -0.0, beyond 2^53 * 10^22)
//! are exceptions, or the block falls back to XOR or raw.
//!
//! # Page layout
//!
//! ```text
//! byte 0     kind: 0 stored, 1 zstd
//! varint     length of the page content (<= MAX_PAGE_BYTES)
//! ...        the content as is, or one zstd frame of exactly that length
//! ```
//!
//! Pages are cut at `PAGE_TARGET_BYTES` of encoded blocks; zstd level
//! `PAGE_ZSTD_LEVEL`. Decompression reserves the declared length (refusing
//! more than `MAX_PAGE_BYTES`) and lets zstd write no further, so a hostile
//! page cannot make the reader allocate more than that. Checksums are the
//! part layer's business.

mod decimal;
mod stream;
pub mod synthetic;
#[cfg(test)]
mod tests;
mod values;
mod varint;
mod xor;

use std::cell::RefCell;
use std::io::Cursor;

use stream::{StreamCode, Transform};
use varint::{Reader, put_uvarint};

/// Pages: the part writer concatenates encoded blocks of consecutive series
/// into pages of about `PAGE_TARGET_BYTES` (before compression) and stores each
/// page as `compress_page` made it. Compression choices live here, not in the
/// part layout.
///
/// A read decompresses the whole page of every block it needs, so the
/// target trades compression against what reading one series costs: 16 KiB
/// pages decompress a quarter of what 64 KiB pages did for a query that
/// reads one block per page (2.2x fewer instructions for a cold
/// `node_load1` over 150 hosts), at -0.7% bytes per sample on the
/// node_exporter fleet and +4% on the real scrape sample. Parts written with
/// 64 KiB pages read the same.
pub const PAGE_TARGET_BYTES: usize = 16 * 1024;

/// Largest page `decompress_page` accepts. The writer closes a page once it
/// reaches `PAGE_TARGET_BYTES`, so a page is at most the target plus one
/// block (`MAX_BLOCK_BYTES`); this bound keeps a corrupt or hostile page
/// from making the reader allocate more. It stays at 1 MiB, what it was
/// with 64 KiB pages, so every part written before reads.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Largest encoded block: tag, count, dense timestamps of 10-byte varints,
/// raw values.
pub const MAX_BLOCK_BYTES: usize = 1 + 2 + MAX_BLOCK_SAMPLES * (10 + 8);

const _: () = assert!(PAGE_TARGET_BYTES + MAX_BLOCK_BYTES <= MAX_PAGE_BYTES);

/// zstd level for pages.
pub const PAGE_ZSTD_LEVEL: i32 = 3;

const PAGE_STORED: u8 = 0;
const PAGE_ZSTD: u8 = 1;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses one page (concatenated encoded blocks), appending to `out`.
pub fn compress_page(page: &[u8], out: &mut Vec<u8>) {
    compress_page_with(page, PAGE_ZSTD_LEVEL, out);
}

/// `compress_page` at a given zstd level, for tuning.
pub fn compress_page_with(page: &[u8], level: i32, out: &mut Vec<u8>) {
    // A larger page would be written fine and refused by every read: fail
    // the write instead.
    assert!(
        page.len() <= MAX_PAGE_BYTES,
        "page of {} bytes exceeds MAX_PAGE_BYTES",
        page.len()
    );
    let start = out.len();
    out.push(PAGE_ZSTD);
    put_uvarint(out, page.len() as u64);
    let header = out.len() - start;
    let compressed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(level).ok();
        }
        let c = slot.as_mut()?;
        c.set_compression_level(level).ok()?;
        out.reserve(zstd::zstd_safe::compress_bound(page.len()));
        let mut cursor = Cursor::new(&mut *out);
        cursor.set_position((start + header) as u64);
        c.compress_to_buffer(page, &mut cursor).ok()
    });
    match compressed {
        Some(n) if n < page.len() => {}
        // zstd failing (it only does on allocation failure) or not paying:
        // store the page as it is.
        _ => {
            out.truncate(start);
            out.push(PAGE_STORED);
            put_uvarint(out, page.len() as u64);
            out.extend_from_slice(page);
        }
    }
}

/// Reverses `compress_page`, appending to `out`.
pub fn decompress_page(data: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let mut r = Reader::new(data);
    let kind = r.u8()?;
    let len_at = r.pos();
    let len = r.uvarint()?;
    if len > MAX_PAGE_BYTES as u64 {
        return Err(DecodeError::Malformed {
            at: len_at,
            what: "page declares more than MAX_PAGE_BYTES",
        });
    }
    let len = len as usize;
    let body_at = r.pos();
    let body = r.take_rest();
    match kind {
        PAGE_STORED => {
            if body.len() != len {
                return Err(DecodeError::Malformed {
                    at: body_at,
                    what: "stored page length differs from its header",
                });
            }
            out.extend_from_slice(body);
            Ok(())
        }
        PAGE_ZSTD => {
            let start = out.len();
            out.reserve_exact(len);
            let written = DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = zstd::bulk::Decompressor::new().ok();
                }
                let d = slot.as_mut()?;
                let mut cursor = Cursor::new(&mut *out);
                cursor.set_position(start as u64);
                // The cursor may see more capacity than `len`; a frame that
                // writes more is rejected below.
                d.decompress_to_buffer(body, &mut cursor).ok()
            });
            if written != Some(len) {
                out.truncate(start);
                return Err(DecodeError::Malformed {
                    at: body_at,
                    what: "zstd page is corrupt or differs from its declared length",
                });
            }
            Ok(())
        }
        tag => Err(DecodeError::UnknownTag { tag, at: 0 }),
    }
}

/// Decompresses one zstd frame that declares its size (at most `max`
/// bytes) with this thread's decompression context, rather than a new one
/// per call; None when the frame is corrupt, larger than `max`, or does not
/// declare its size.
pub fn decompress_frame(frame: &[u8], max: usize) -> Option<Vec<u8>> {
    let len = zstd::zstd_safe::get_frame_content_size(frame).ok()??;
    let len = usize::try_from(len).ok().filter(|&len| len <= max)?;
    let mut out = Vec::with_capacity(len);
    let written = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Decompressor::new().ok();
        }
        slot.as_mut()?.decompress_to_buffer(frame, &mut out).ok()
    })?;
    (written == len).then_some(out)
}

/// Largest number of samples in one block.
pub const MAX_BLOCK_SAMPLES: usize = 8192;

/// Samples per block the part writer aims at (the last block of a series
/// in a part holds the rest). A read decodes every block it touches from
/// its first sample, so the block size bounds what a query over the last
/// minutes of a long series decodes: with 8192-sample blocks a 5-minute
/// `rate` over 15 s scrapes (20 samples) decoded up to 34 hours of them.
/// Cost of 256 against 8192, page bytes per sample: real scrape sample
/// 0.148 -> 0.154 (+4%), node_exporter fleet of 240 points unchanged; at
/// 120 it was +12%.
pub const BLOCK_TARGET_SAMPLES: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("block is truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown encoding tag {tag} at byte {at}")]
    UnknownTag { tag: u8, at: usize },
    #[error("block is malformed at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

const TIMESTAMP_TRANSFORMS: [Transform; 2] = [Transform::DeltaOfDelta, Transform::Delta];

/// Appends the encoded block to `out`.
///
/// Panics if the slices differ in length or hold more than
/// `MAX_BLOCK_SAMPLES`: a block that cannot be decoded must not be written.
pub fn encode_block(timestamps: &[i64], values: &[f64], out: &mut Vec<u8>) {
    assert_eq!(
        timestamps.len(),
        values.len(),
        "timestamps and values differ in length"
    );
    assert!(
        timestamps.len() <= MAX_BLOCK_SAMPLES,
        "block of {} samples exceeds MAX_BLOCK_SAMPLES",
        timestamps.len()
    );
    let tag_at = out.len();
    out.push(0);
    put_uvarint(out, timestamps.len() as u64);
    let (ts_code, _) = stream::choose(timestamps, &TIMESTAMP_TRANSFORMS);
    stream::encode(timestamps, ts_code, out);
    let value_kind = values::encode(values, out);
    out[tag_at] = ts_code.code() | (value_kind << 3);
}

/// Decodes a block written by `encode_block`, appending to the two vectors.
/// On error both vectors are left as they were.
pub fn decode_block(
    data: &[u8],
    timestamps: &mut Vec<i64>,
    values: &mut Vec<f64>,
) -> Result<(), DecodeError> {
    let (ts_len, v_len) = (timestamps.len(), values.len());
    let res = decode_into(data, timestamps, values);
    if res.is_err() {
        timestamps.truncate(ts_len);
        values.truncate(v_len);
    }
    res
}

fn decode_into(
    data: &[u8],
    timestamps: &mut Vec<i64>,
    values: &mut Vec<f64>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(data);
    let tag = r.u8()?;
    let ts_code = StreamCode::from_code(tag & 7).ok_or(DecodeError::UnknownTag { tag, at: 0 })?;
    let value_kind = tag >> 3;
    if value_kind >= values::KINDS {
        return Err(DecodeError::UnknownTag { tag, at: 0 });
    }
    let n = r.count(MAX_BLOCK_SAMPLES, "sample count exceeds MAX_BLOCK_SAMPLES")?;
    stream::decode(&mut r, n, ts_code, timestamps)?;
    // The timestamps vector's spare room serves as scratch for mantissas.
    values::decode(&mut r, value_kind, n, values, timestamps)?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed {
            at: r.pos(),
            what: "bytes after the end of the block",
        });
    }
    Ok(())
}
