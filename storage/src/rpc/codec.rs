//! Primitive encodings of RPC message bodies: varints, strings, label sets
//! and samples (layouts in the `rpc` module doc).
//!
//! Decoding never panics and never allocates more than the input can hold:
//! a count is checked against the bytes left before anything is reserved.

use crate::types::Label;

/// Why a body could not be decoded; `at` is the byte offset in the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed message body at byte {at}: {what}")]
pub struct CodecError {
    pub at: usize,
    pub what: &'static str,
}

/// 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...: small magnitudes of either sign
/// get short varints.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    // Into a stack buffer first: one capacity check per varint, not per byte.
    let mut buf = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    out.extend_from_slice(&buf[..=n]);
}

pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn put_labels(out: &mut Vec<u8>, labels: &[Label]) {
    put_uvarint(out, labels.len() as u64);
    for l in labels {
        put_str(out, &l.name);
        put_str(out, &l.value);
    }
}

/// Samples as parallel columns: count, timestamps (first as a varint, then
/// delta of delta, so a steady scrape interval costs a byte), values (XOR
/// with the previous value's bits, bit-reversed so that the unchanged low
/// mantissa bits become leading zeros of a short varint).
pub fn put_samples(
    out: &mut Vec<u8>,
    n: usize,
    timestamps: impl Iterator<Item = i64>,
    values: impl Iterator<Item = f64>,
) {
    put_uvarint(out, n as u64);
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for (i, t) in timestamps.enumerate() {
        match i {
            0 => put_varint(out, t),
            _ => {
                let delta = t.wrapping_sub(prev);
                put_varint(out, delta.wrapping_sub(prev_delta));
                prev_delta = delta;
            }
        }
        prev = t;
    }
    let mut prev_bits = 0u64;
    for v in values {
        let bits = v.to_bits();
        put_uvarint(out, (bits ^ prev_bits).reverse_bits());
        prev_bits = bits;
    }
}

/// A cursor over a body; every read checks bounds.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn error(&self, what: &'static str) -> CodecError {
        CodecError { at: self.pos, what }
    }

    /// Fails unless the whole body was read: trailing bytes mean the two
    /// sides disagree on the layout.
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error("trailing bytes after the message"))
        }
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| self.error("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn uvarint(&mut self) -> Result<u64, CodecError> {
        let rest = &self.data[self.pos..];
        let mut v = 0u64;
        for (i, &b) in rest.iter().take(10).enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        Err(self.error(if rest.len() < 10 {
            "truncated"
        } else {
            "varint longer than 10 bytes"
        }))
    }

    pub fn varint(&mut self) -> Result<i64, CodecError> {
        self.uvarint().map(unzigzag)
    }

    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let v = self.uvarint()?;
        u32::try_from(v).map_err(|_| self.error("value does not fit 32 bits"))
    }

    /// A count of items that take at least `min_item_bytes` each: larger
    /// than the bytes left means a corrupt body, not a huge allocation.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, CodecError> {
        let n = self.uvarint()?;
        let max = self.remaining() / min_item_bytes.max(1);
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| self.error("count exceeds the bytes left"))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() {
            return Err(self.error("truncated"));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn str(&mut self) -> Result<&'a str, CodecError> {
        let n = self.count(1)?;
        let at = self.pos;
        let bytes = self.bytes(n)?;
        std::str::from_utf8(bytes).map_err(|_| CodecError {
            at,
            what: "string is not UTF-8",
        })
    }

    pub fn string(&mut self) -> Result<String, CodecError> {
        self.str().map(str::to_string)
    }

    pub fn labels(&mut self) -> Result<Vec<Label>, CodecError> {
        let n = self.count(2)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.string()?;
            let value = self.string()?;
            out.push(Label { name, value });
        }
        Ok(out)
    }

    /// Reverses [`put_samples`], appending to the two columns.
    pub fn samples(
        &mut self,
        timestamps: &mut Vec<i64>,
        values: &mut Vec<f64>,
    ) -> Result<(), CodecError> {
        let n = self.count(2)?;
        timestamps.reserve(n);
        values.reserve(n);
        let (mut prev, mut prev_delta) = (0i64, 0i64);
        for i in 0..n {
            let t = match i {
                0 => self.varint()?,
                _ => {
                    let delta = prev_delta.wrapping_add(self.varint()?);
                    prev_delta = delta;
                    prev.wrapping_add(delta)
                }
            };
            timestamps.push(t);
            prev = t;
        }
        let mut prev_bits = 0u64;
        for _ in 0..n {
            let bits = self.uvarint()?.reverse_bits() ^ prev_bits;
            values.push(f64::from_bits(bits));
            prev_bits = bits;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::STALE_NAN_BITS;

    #[test]
    fn samples_round_trip_bit_exact() {
        let check = |ts: &[i64], vs: &[f64]| {
            let mut out = Vec::new();
            put_samples(&mut out, ts.len(), ts.iter().copied(), vs.iter().copied());
            let mut r = Reader::new(&out);
            let (mut got_ts, mut got_vs) = (Vec::new(), Vec::new());
            r.samples(&mut got_ts, &mut got_vs).expect("decodes");
            r.finish().expect("whole body read");
            assert_eq!(got_ts, ts);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got_vs), bits(vs));
        };
        check(&[], &[]);
        check(&[1_700_000_000_000], &[1.0]);
        check(
            &[1_000, 16_000, 31_000, 46_001, 40_000],
            &[0.0, -0.0, f64::NAN, f64::from_bits(STALE_NAN_BITS), 1e300],
        );
        check(
            &[i64::MIN, i64::MAX, 0, i64::MIN, -1],
            &[
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MIN_POSITIVE,
                3.5,
                3.5,
            ],
        );
    }

    #[test]
    fn steady_scrapes_cost_about_two_bytes_per_sample() {
        let ts: Vec<i64> = (0..100).map(|i| 1_700_000_000_000 + i * 15_000).collect();
        let vs: Vec<f64> = (0..100).map(|i| 1000.0 + f64::from(i) * 4.0).collect();
        let mut out = Vec::new();
        put_samples(&mut out, ts.len(), ts.iter().copied(), vs.iter().copied());
        assert!(out.len() < 100 * 5, "{} bytes", out.len());
    }

    #[test]
    fn corrupt_bodies_are_errors_not_panics() {
        let check = |body: &[u8], what: &str| {
            let mut r = Reader::new(body);
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            let err = r.samples(&mut ts, &mut vs).expect_err("must fail");
            assert_eq!(err.what, what, "{body:?}");
        };
        check(&[], "truncated");
        check(&[0xff, 0xff, 0xff, 0x7f], "count exceeds the bytes left");
        check(&[1, 0x80, 0x80], "truncated");
        check(
            &[
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            "varint longer than 10 bytes",
        );
        let mut r = Reader::new(&[2, 0xc3, 0x28]);
        assert_eq!(r.str().expect_err("bad utf-8").what, "string is not UTF-8");
    }
}
