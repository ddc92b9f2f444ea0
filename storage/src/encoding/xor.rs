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

/// Random access to the bits of a stream, most significant bit first, as if
/// it went on with zero bytes past its end: the decoder reads at positions
/// it computes without a length check on every read, and checks once at the
/// end that it consumed no bit past the end.
struct Bits<'a> {
    data: &'a [u8],
}

impl Bits<'_> {
    /// The 64 bits from bit `pos` on, of which the first 57 or more are the
    /// stream's: the 8 bytes from the one that holds `pos`, shifted (the
    /// bits shifted in are zero).
    #[inline]
    fn word_at(&self, pos: usize) -> u64 {
        let at = pos / 8;
        let word = match self.data.get(at..at + 8) {
            Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) => {
                u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
            }
            _ => self.tail_word(at),
        };
        word << (pos % 8)
    }

    /// The word at byte `at` when fewer than 8 bytes remain, zero-padded.
    #[cold]
    fn tail_word(&self, at: usize) -> u64 {
        let mut bytes = [0u8; 8];
        let rest = self.data.get(at..).unwrap_or_default();
        for (b, &d) in bytes.iter_mut().zip(rest) {
            *b = d;
        }
        u64::from_be_bytes(bytes)
    }

    /// The `n` bits (1..=64) from bit `pos` on, right-aligned.
    #[inline]
    fn read(&self, pos: usize, n: u32) -> u64 {
        debug_assert!((1..=64).contains(&n));
        if n <= 57 {
            self.word_at(pos) >> (64 - n)
        } else {
            let lo = n - 32;
            (self.word_at(pos) >> 32) << lo | self.word_at(pos + 32) >> (64 - lo)
        }
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

/// Decodes `n` values from `data`, which must hold exactly that stream,
/// appending them to `out`. `base` is the offset of `data` in the block,
/// for error positions. On error `out` may hold some of the values; the
/// block decoder truncates it.
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
    // Every value but the first takes at least a bit: refuse a stream too
    // short for `n` before decoding zeros past its end.
    if data.len().saturating_mul(8) < 64 + (n - 1) {
        return Err(DecodeError::Truncated(base + data.len()));
    }
    let start = out.len();
    out.resize(start + n, 0.0);
    let (first, rest) = out[start..].split_at_mut(1);
    let bits = Bits { data };
    let mut prev = bits.read(0, 64);
    first[0] = f64::from_bits(prev);
    let mut pos = 64usize;
    // The window: its width in bits (0 until one is set) and its trailing
    // zeros.
    let (mut width, mut trail) = (0u32, 0u32);
    for slot in rest {
        let head = bits.word_at(pos);
        if head >> 63 == 0 {
            pos += 1;
        } else {
            // Control bits, and the new window's header after '11'.
            let header = if head >> 62 == 0b11 {
                let lead = (head >> 56) as u32 & 63;
                let sig = (head >> 50) as u32 & 63;
                width = sig + 1;
                if lead + width > 64 {
                    return Err(DecodeError::Malformed {
                        at: base + pos / 8,
                        what: "xor window wider than 64 bits",
                    });
                }
                trail = 64 - lead - width;
                14
            } else {
                if width == 0 {
                    return Err(DecodeError::Malformed {
                        at: base + pos / 8,
                        what: "xor value reuses a window before one was set",
                    });
                }
                2
            };
            // The head word holds 57 bits or more: most values end in it,
            // and the rest take another read.
            let x = if header + width <= 57 {
                head << header >> (64 - width)
            } else {
                bits.read(pos + header as usize, width)
            };
            prev ^= x << trail;
            pos += (header + width) as usize;
        }
        *slot = f64::from_bits(prev);
    }
    let end = pos.div_ceil(8);
    if end > data.len() {
        return Err(DecodeError::Truncated(base + data.len()));
    }
    if end < data.len() {
        return Err(DecodeError::Malformed {
            at: base + end,
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
    use proptest::prelude::*;

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

    fn encoded(values: &[f64]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(values, &mut buf);
        buf
    }

    fn bits(values: &[f64]) -> Vec<u64> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn every_window_at_every_bit_offset_round_trips() {
        for width in 1..=64u32 {
            for lead in [0, (64 - width) / 2, 64 - width] {
                let trail = 64 - lead - width;
                let window = (u64::MAX >> (64 - width)) << trail;
                // The window's first and last bits: sets the window.
                let edges = 1u64 << (63 - lead) | 1 << trail;
                // Repeats shift the window's bits to each offset in a byte.
                for repeats in 1..=8 {
                    let mut values = vec![0.0; repeats];
                    // New window, then reuses of it.
                    values.extend([edges, 0, window, window ^ edges].map(f64::from_bits));
                    let buf = encoded(&values);
                    let mut got = Vec::new();
                    decode(&buf, 0, values.len(), &mut got).expect("decode");
                    assert_eq!(
                        bits(&got),
                        bits(&values),
                        "width {width}, lead {lead}, {repeats} repeats"
                    );
                }
            }
        }
    }

    #[test]
    fn trailing_and_missing_bytes_are_errors() {
        let values = [1.0, 2.0, 3.0];
        let buf = encoded(&values);
        let mut out = Vec::new();
        let mut padded = buf.clone();
        padded.push(0);
        assert_eq!(
            decode(&padded, 10, 3, &mut out),
            Err(DecodeError::Malformed {
                at: 10 + buf.len(),
                what: "bytes after the xor stream",
            })
        );
        for len in 0..buf.len() {
            assert_eq!(
                decode(&buf[..len], 10, 3, &mut out),
                Err(DecodeError::Truncated(10 + len)),
                "prefix of {len} bytes"
            );
        }
        assert!(decode(&[0], 0, 0, &mut out).is_err());
    }

    #[test]
    fn malformed_windows_are_errors() {
        // (stream after a first value of 0.0, values, what)
        let check = |tail: &[u8], n: usize, want: &'static str| {
            let mut data = vec![0u8; 8];
            data.extend_from_slice(tail);
            let got = decode(&data, 0, n, &mut Vec::new());
            assert_eq!(
                got,
                Err(DecodeError::Malformed { at: 8, what: want }),
                "tail {tail:02x?}"
            );
        };
        // '10' first: no window yet.
        check(
            &[0b1000_0000],
            2,
            "xor value reuses a window before one was set",
        );
        // '11', lead 32, width 64.
        check(
            &[
                0b1110_0000,
                0b1111_1100,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
            ],
            2,
            "xor window wider than 64 bits",
        );
    }

    /// Full-precision floats that wander like load averages, so windows
    /// are reused and replaced.
    fn walk(n: usize) -> impl Strategy<Value = Vec<f64>> {
        (0.0f64..4.0, prop::collection::vec(-0.05f64..0.05, n)).prop_map(|(start, steps)| {
            steps
                .iter()
                .scan(start, |x, d| {
                    *x = (*x + d).abs();
                    Some(*x)
                })
                .collect()
        })
    }

    fn special() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            // NaNs with any payload and sign.
            (any::<bool>(), 1u64..1 << 52)
                .prop_map(|(neg, p)| f64::from_bits(u64::from(neg) << 63 | 0x7ff << 52 | p)),
            Just(f64::from_bits(crate::STALE_NAN_BITS)),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            Just(-0.0),
            Just(f64::MIN_POSITIVE / 7.0),
            Just(f64::MAX),
        ]
    }

    fn stream_values() -> impl Strategy<Value = Vec<f64>> {
        (0usize..600).prop_flat_map(|n| {
            prop_oneof![
                prop::collection::vec(any::<u64>().prop_map(f64::from_bits), n),
                prop::collection::vec(special(), n),
                walk(n),
                // A walk with specials and runs of repeats mixed in.
                (
                    walk(n),
                    prop::collection::vec((any::<prop::sample::Index>(), special()), 0..8),
                    1usize..6,
                )
                    .prop_map(|(mut v, specials, run)| {
                        for (at, s) in specials {
                            if !v.is_empty() {
                                let i = at.index(v.len());
                                v[i] = s;
                            }
                        }
                        for i in 1..v.len() {
                            if i % (run + 1) != 0 {
                                v[i] = v[i - 1];
                            }
                        }
                        v
                    }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bits_round_trip(values in stream_values()) {
            let buf = encoded(&values);
            prop_assert_eq!(buf.len(), measure(&values));
            let mut got = vec![4.2];
            decode(&buf, 0, values.len(), &mut got).expect("decode");
            prop_assert_eq!(bits(&got[1..]), bits(&values));
        }

        #[test]
        fn truncated_streams_are_errors(
            values in stream_values(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
        ) {
            let buf = encoded(&values);
            let mut got = Vec::new();
            // The last byte and a few prefixes anywhere.
            let lens = cuts.iter().map(|c| c.index(buf.len().max(1)));
            for len in lens.chain([buf.len().saturating_sub(1)]).filter(|&l| l < buf.len()) {
                got.clear();
                let res = decode(&buf[..len], 0, values.len(), &mut got);
                prop_assert!(res.is_err(), "prefix of {} of {} bytes", len, buf.len());
            }
        }

        #[test]
        fn corrupted_streams_never_panic(
            values in stream_values(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
            n_delta in -2i64..3,
        ) {
            let mut buf = encoded(&values);
            if buf.is_empty() {
                return Ok(());
            }
            for (at, bit) in flips {
                let i = at.index(buf.len());
                buf[i] ^= 1 << bit;
            }
            let n = (values.len() as i64 + n_delta).max(0) as usize;
            let mut got = Vec::new();
            if decode(&buf, 0, n, &mut got).is_ok() {
                prop_assert_eq!(got.len(), n);
            }
        }
    }
}
