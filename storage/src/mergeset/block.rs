//! Block encoding: sorted items -> raw streams -> zstd. The byte layout is
//! drawn in the parent module's doc.

use std::cell::RefCell;

use super::run::ItemRun;

/// The on-disk block is the raw encoding as is.
pub(crate) const CODEC_PLAIN: u8 = 0;
/// The on-disk block is the raw encoding compressed as one zstd frame.
pub(crate) const CODEC_ZSTD: u8 = 1;

/// Control value meaning "same length as the previous item; the last
/// `min(8, len)` bytes grew by the next value of the delta stream".
const CTRL_DELTA: u64 = 0;

/// Longest tail that delta mode treats as one big-endian integer.
const DELTA_TAIL: usize = 8;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads LEB128 varints from a byte slice, reporting where it ran out.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(format!(
                    "{} stream ends inside a varint at byte {}",
                    self.what, self.pos
                ));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(format!(
            "{} stream has an over-long varint at byte {}",
            self.what, self.pos
        ))
    }

    pub(crate) fn usize(&mut self) -> Result<usize, String> {
        let v = self.varint()?;
        usize::try_from(v).map_err(|_| format!("{} value {v} does not fit in memory", self.what))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(format!(
                "{} stream needs {n} bytes at byte {} but has {}",
                self.what,
                self.pos,
                self.buf.len() - self.pos
            ));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn tail_value(tail: &[u8]) -> u64 {
    tail.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Splits sorted items into the four streams of the raw block layout and
/// compresses them. Reused across blocks so buffers and the zstd context are
/// allocated once per part writer.
pub(crate) struct BlockEncoder {
    ctrl: Vec<u8>,
    lens: Vec<u8>,
    deltas: Vec<u8>,
    suffixes: Vec<u8>,
    raw: Vec<u8>,
    disk: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
}

impl BlockEncoder {
    pub(crate) fn new(level: i32) -> std::io::Result<BlockEncoder> {
        Ok(BlockEncoder {
            ctrl: Vec::new(),
            lens: Vec::new(),
            deltas: Vec::new(),
            suffixes: Vec::new(),
            raw: Vec::new(),
            disk: Vec::new(),
            compressor: zstd::bulk::Compressor::new(level)?,
        })
    }

    /// Raw encoding of `items` (strictly ascending, at least one) minus the
    /// first item, which the decoder gets from the block index.
    pub(crate) fn encode_raw(&mut self, items: &ItemRun) -> &[u8] {
        self.ctrl.clear();
        self.lens.clear();
        self.deltas.clear();
        self.suffixes.clear();
        let mut prev: Option<&[u8]> = None;
        for item in items.iter() {
            // Item 0 is not stored: the block index holds it.
            let Some(p) = prev else {
                prev = Some(item);
                continue;
            };
            let cp = common_prefix(p, item);
            let suffix = &item[cp..];
            let prefix_cost =
                varint_len(cp as u64 + 1) + varint_len(suffix.len() as u64) + suffix.len();
            let tail = item.len().min(DELTA_TAIL);
            let delta = (item.len() == p.len() && cp >= item.len() - tail).then(|| {
                let start = item.len() - tail;
                tail_value(&item[start..]).wrapping_sub(tail_value(&p[start..]))
            });
            match delta {
                Some(d) if varint_len(d) < prefix_cost => {
                    put_varint(&mut self.ctrl, CTRL_DELTA);
                    put_varint(&mut self.deltas, d);
                }
                _ => {
                    put_varint(&mut self.ctrl, cp as u64 + 1);
                    put_varint(&mut self.lens, suffix.len() as u64);
                    self.suffixes.extend_from_slice(suffix);
                }
            }
            prev = Some(item);
        }
        self.raw.clear();
        put_varint(&mut self.raw, items.len() as u64);
        put_varint(&mut self.raw, self.ctrl.len() as u64);
        put_varint(&mut self.raw, self.lens.len() as u64);
        put_varint(&mut self.raw, self.deltas.len() as u64);
        self.raw.extend_from_slice(&self.ctrl);
        self.raw.extend_from_slice(&self.lens);
        self.raw.extend_from_slice(&self.deltas);
        self.raw.extend_from_slice(&self.suffixes);
        &self.raw
    }

    /// zstd-compresses other data (the block index) with the same context.
    pub(crate) fn compress(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        self.compressor.compress(data)
    }

    /// On-disk bytes of a block: codec byte, then the raw encoding, zstd
    /// compressed unless that does not make it smaller. Returns the disk bytes
    /// and the raw length.
    pub(crate) fn encode(&mut self, items: &ItemRun) -> std::io::Result<(&[u8], usize)> {
        self.encode_raw(items);
        let compressed = self.compressor.compress(&self.raw)?;
        self.disk.clear();
        if compressed.len() < self.raw.len() {
            self.disk.push(CODEC_ZSTD);
            self.disk.extend_from_slice(&compressed);
        } else {
            self.disk.push(CODEC_PLAIN);
            self.disk.extend_from_slice(&self.raw);
        }
        Ok((&self.disk, self.raw.len()))
    }
}

thread_local! {
    // One zstd context per thread: creating one per block costs more than
    // decompressing a small block.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Decodes on-disk block bytes (already checksum-verified) into items.
pub(crate) fn decode_disk(
    disk: &[u8],
    raw_len: usize,
    first: &[u8],
    items: usize,
) -> Result<ItemRun, String> {
    let Some((&codec, payload)) = disk.split_first() else {
        return Err("empty block".to_string());
    };
    match codec {
        CODEC_PLAIN => {
            if payload.len() != raw_len {
                return Err(format!(
                    "plain block holds {} bytes, index says {raw_len}",
                    payload.len()
                ));
            }
            decode_raw(payload, first, items)
        }
        CODEC_ZSTD => {
            let raw = DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                let dec = match slot.as_mut() {
                    Some(dec) => dec,
                    None => slot.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| format!("cannot create zstd context: {e}"))?,
                    ),
                };
                dec.decompress(payload, raw_len)
                    .map_err(|e| format!("cannot decompress block: {e}"))
            })?;
            if raw.len() != raw_len {
                return Err(format!(
                    "block decompressed to {} bytes, index says {raw_len}",
                    raw.len()
                ));
            }
            decode_raw(&raw, first, items)
        }
        other => Err(format!("unknown block codec {other}")),
    }
}

/// Inverse of [`BlockEncoder::encode_raw`]; never panics on bad input.
pub(crate) fn decode_raw(
    raw: &[u8],
    first: &[u8],
    expected_items: usize,
) -> Result<ItemRun, String> {
    let mut header = Reader::new(raw, "block header");
    let n = header.usize()?;
    if n != expected_items {
        return Err(format!(
            "block holds {n} items, index says {expected_items}"
        ));
    }
    if n == 0 {
        return Err("block holds no items".to_string());
    }
    let ctrl_len = header.usize()?;
    let lens_len = header.usize()?;
    let deltas_len = header.usize()?;
    let mut ctrl = Reader::new(header.bytes(ctrl_len)?, "control");
    let mut lens = Reader::new(header.bytes(lens_len)?, "length");
    let mut deltas = Reader::new(header.bytes(deltas_len)?, "delta");
    let mut suffixes = Reader::new(header.rest(), "suffix");

    // Items in a block tend to have similar lengths; the hint is capped so a
    // damaged count cannot reserve much.
    let hint = n.min(1 << 16);
    let mut run = ItemRun::with_capacity(hint, hint.saturating_mul(first.len()).min(1 << 20));
    run.push(first);
    for i in 1..n {
        let c = ctrl.varint()?;
        if c == CTRL_DELTA {
            let d = deltas.varint()?;
            let Some(item) = run.push_copy_of_last() else {
                return Err(format!("item {i} has no previous item"));
            };
            let tail = item.len().min(DELTA_TAIL);
            let start = item.len() - tail;
            let max = if tail == DELTA_TAIL {
                u64::MAX
            } else {
                (1u64 << (8 * tail)) - 1
            };
            // d > 0 without overflow keeps the order strictly ascending.
            let value = tail_value(&item[start..])
                .checked_add(d)
                .filter(|&v| v <= max && d > 0);
            let Some(value) = value else {
                return Err(format!("item {i} has an out-of-range delta {d}"));
            };
            for (k, b) in item[start..].iter_mut().enumerate() {
                *b = (value >> (8 * (tail - 1 - k))) as u8;
            }
        } else {
            let shared = usize::try_from(c - 1).unwrap_or(usize::MAX);
            let suffix = suffixes.bytes(lens.usize()?)?;
            let prev = run.last().unwrap_or_default();
            // The encoder stores the longest shared prefix, so the suffix
            // starts with a byte greater than the previous item's at that
            // position (or extends it): checking that keeps the order strict
            // in O(1).
            let ascending = match (prev.get(shared), suffix.first()) {
                (Some(p), Some(s)) => s > p,
                (None, Some(_)) => shared == prev.len(),
                (_, None) => false,
            };
            if !ascending {
                return Err(format!(
                    "item {i} (sharing {shared} of the previous item's {} bytes) is not greater",
                    prev.len()
                ));
            }
            run.push_extending_last(shared, suffix);
        }
    }
    if !suffixes.rest().is_empty() {
        return Err(format!("{} unused suffix bytes", suffixes.rest().len()));
    }
    Ok(run)
}
