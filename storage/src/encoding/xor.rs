//! XOR float coding for values that are not short decimals.
//!
//! Bit stream, most significant bit first, padded with zero bits to a whole
//! byte:
//!
//! ```text
//! first value: 64 bits (the f64 bit pattern)
//! each next value, x = bits ^ previous bits:
//!   '0'                          x == 0 (same bits as before)
//!   '10' + w bits                x fits the current window: w = 64 - lead - trail
//!                                of the window, bits are x >> trail
//!   '11' + lead:6 + (w-1):6 + w  new window: lead = leading zeros of x,
//!                                w = significant bits; trail = 64 - lead - w
//! ```

use super::DecodeError;

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Pending bits, left-aligned.
    acc: u64,
    used: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> BitWriter<'a> {
        BitWriter {
            out,
            acc: 0,
            used: 0,
        }
    }

    /// Writes the low `n` bits of `v` (n <= 64; higher bits of v are zero).
    #[inline]
    fn write(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        let free = 64 - self.used;
        if n < free {
            self.acc |= v << (free - n);
            self.used += n;
        } else {
            let rest = n - free;
            self.acc |= v >> rest;
            self.out.extend_from_slice(&self.acc.to_be_bytes());
            self.acc = if rest == 0 { 0 } else { v << (64 - rest) };
            self.used = rest;
        }
    }

    fn finish(self) {
        let bytes = self.used.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_be_bytes()[..bytes]);
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load into `buf`.
    next: usize,
    /// Loaded bits, left-aligned.
    buf: u64,
    nbits: u32,
    consumed_bits: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> BitReader<'a> {
        BitReader {
            data,
            next: 0,
            buf: 0,
            nbits: 0,
            consumed_bits: 0,
        }
    }

    #[inline]
    fn refill(&mut self) {
        while self.nbits <= 56 {
            let Some(&b) = self.data.get(self.next) else {
                break;
            };
            self.buf |= u64::from(b) << (56 - self.nbits);
            self.nbits += 8;
            self.next += 1;
        }
    }

    /// Reads `n` bits, n <= 56.
    #[inline]
    fn read(&mut self, n: u32) -> Result<u64, DecodeError> {
        if n == 0 {
            return Ok(0);
        }
        if self.nbits < n {
            self.refill();
            if self.nbits < n {
                return Err(DecodeError::Truncated(self.data.len()));
            }
        }
        let v = self.buf >> (64 - n);
        self.buf <<= n;
        self.nbits -= n;
        self.consumed_bits += n as usize;
        Ok(v)
    }

    /// Reads `n` bits, n <= 64.
    #[inline]
    fn read_wide(&mut self, n: u32) -> Result<u64, DecodeError> {
        if n <= 56 {
            return self.read(n);
        }
        let hi = self.read(n - 32)?;
        let lo = self.read(32)?;
        Ok((hi << 32) | lo)
    }

    fn byte_pos(&self) -> usize {
        self.consumed_bits / 8
    }
}

pub(super) fn encode(values: &[f64], out: &mut Vec<u8>) {
    let Some((first, rest)) = values.split_first() else {
        return;
    };
    let mut w = BitWriter::new(out);
    let mut prev = first.to_bits();
    w.write(prev, 64);
    // Window (leading zeros, trailing zeros); lead 64 means none yet.
    let (mut lead, mut trail) = (64u32, 0u32);
    for v in rest {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.write(0, 1);
            continue;
        }
        let lz = x.leading_zeros();
        let tz = x.trailing_zeros();
        if lead < 64 && lz >= lead && tz >= trail {
            w.write(0b10, 2);
            w.write(x >> trail, 64 - lead - trail);
        } else {
            let sig = 64 - lz - tz;
            w.write(0b11, 2);
            w.write(u64::from(lz), 6);
            w.write(u64::from(sig - 1), 6);
            w.write(x >> tz, sig);
            lead = lz;
            trail = tz;
        }
    }
    w.finish();
}

/// Decodes `n` values from `data`, which must hold exactly that stream.
/// `base` is the offset of `data` in the block, for error positions.
pub(super) fn decode(
    data: &[u8],
    base: usize,
    n: usize,
    out: &mut Vec<f64>,
) -> Result<(), DecodeError> {
    if n == 0 {
        return if data.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed {
                at: base,
                what: "bytes after an empty xor stream",
            })
        };
    }
    let shift = |e: DecodeError| match e {
        DecodeError::Truncated(at) => DecodeError::Truncated(base + at),
        other => other,
    };
    let mut r = BitReader::new(data);
    out.reserve(n);
    let mut prev = r.read_wide(64).map_err(shift)?;
    out.push(f64::from_bits(prev));
    let (mut lead, mut trail) = (64u32, 0u32);
    for _ in 1..n {
        if r.read(1).map_err(shift)? == 1 {
            if r.read(1).map_err(shift)? == 1 {
                let lz = r.read(6).map_err(shift)? as u32;
                let sig = r.read(6).map_err(shift)? as u32 + 1;
                if lz + sig > 64 {
                    return Err(DecodeError::Malformed {
                        at: base + r.byte_pos(),
                        what: "xor window wider than 64 bits",
                    });
                }
                lead = lz;
                trail = 64 - lz - sig;
            } else if lead == 64 {
                return Err(DecodeError::Malformed {
                    at: base + r.byte_pos(),
                    what: "xor value reuses a window before one was set",
                });
            }
            let x = r.read_wide(64 - lead - trail).map_err(shift)? << trail;
            prev ^= x;
        }
        out.push(f64::from_bits(prev));
    }
    if data.len() != r.consumed_bits.div_ceil(8) {
        return Err(DecodeError::Malformed {
            at: base + r.consumed_bits.div_ceil(8),
            what: "bytes after the xor stream",
        });
    }
    Ok(())
}

/// Size `encode` would write, without writing it.
pub(super) fn measure(values: &[f64]) -> usize {
    let Some((first, rest)) = values.split_first() else {
        return 0;
    };
    let mut bits = 64usize;
    let mut prev = first.to_bits();
    let (mut lead, mut trail) = (64u32, 0u32);
    for v in rest {
        let b = v.to_bits();
        let x = b ^ prev;
        prev = b;
        if x == 0 {
            bits += 1;
            continue;
        }
        let lz = x.leading_zeros();
        let tz = x.trailing_zeros();
        if lead < 64 && lz >= lead && tz >= trail {
            bits += 2 + (64 - lead - trail) as usize;
        } else {
            bits += 14 + (64 - lz - tz) as usize;
            lead = lz;
            trail = tz;
        }
    }
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_measures() {
        let cases: Vec<Vec<f64>> = vec![
            vec![],
            vec![1.5],
            vec![0.1, 0.2, 0.30000000000000004, 0.2, 0.2],
            vec![
                f64::NAN,
                -0.0,
                f64::INFINITY,
                f64::MIN_POSITIVE / 3.0,
                1e300,
            ],
            (0..100).map(|i| (f64::from(i) * 0.37).sin()).collect(),
        ];
        for values in cases {
            let mut buf = Vec::new();
            encode(&values, &mut buf);
            assert_eq!(buf.len(), measure(&values));
            let mut got = Vec::new();
            decode(&buf, 0, values.len(), &mut got).expect("decode");
            let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&values));
        }
    }

    #[test]
    fn trailing_and_missing_bytes_are_errors() {
        let values = [1.0, 2.0, 3.0];
        let mut buf = Vec::new();
        encode(&values, &mut buf);
        let mut out = Vec::new();
        buf.push(0);
        assert!(decode(&buf, 0, 3, &mut out).is_err());
        buf.truncate(buf.len() - 2);
        assert!(decode(&buf, 0, 3, &mut out).is_err());
    }
}
