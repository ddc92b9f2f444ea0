//! LEB128 varints, zigzag mapping and a bounds-checked reader.
//!
//! Every read returns a `DecodeError` naming the byte offset inside the
//! block instead of panicking: blocks come from disk and may be corrupt.

use super::DecodeError;

/// Maps signed to unsigned so that small magnitudes of either sign get short
/// varints: 0, -1, 1, -2, 2, ... become 0, 1, 2, 3, 4, ...
#[inline]
pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(super) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[inline]
pub(super) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub(super) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// Length in bytes of the varint of `v`, for choosing encodings by size
/// without writing them.
#[inline]
pub(super) fn uvarint_len(v: u64) -> usize {
    // 1 byte per started group of 7 significant bits; 0 still takes a byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[inline]
pub(super) fn varint_len(v: i64) -> usize {
    uvarint_len(zigzag(v))
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Packs the low 7 bits of each byte of `word` (little endian, high bits
/// ignored) into a 56-bit integer: pairs of groups into 14-bit lanes, then
/// 28-bit lanes, then one.
#[inline]
fn gather7(word: u64) -> u64 {
    let x = word & !HIGH_BITS;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

/// Cursor over one block; errors name offsets within it.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The unread rest; the reader is left at the end.
    pub(super) fn take_rest(&mut self) -> &'a [u8] {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        self.pos = self.data.len();
        rest
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let bytes: [u8; 8] = self
            .data
            .get(self.pos..self.pos + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::Truncated(self.data.len()))?;
        self.pos += 8;
        Ok(u64::from_le_bytes(bytes))
    }

    /// One varint. While 8 bytes remain they are loaded as one word: the
    /// lowest clear high bit ends the varint, and the 7-bit groups are
    /// gathered with masks and shifts instead of a loop per byte with a
    /// branch on each byte's length. Varints of 9 and 10 bytes, and any
    /// within the last 7 bytes of the block, take the checked byte loop.
    #[inline]
    pub(super) fn uvarint(&mut self) -> Result<u64, DecodeError> {
        if let Some(word) = self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<8>())
        {
            let word = u64::from_le_bytes(*word);
            let stops = !word & HIGH_BITS;
            if stops != 0 {
                // stops ^ (stops - 1) sets every bit up to the first stop,
                // which is bit 7 of the last byte: 8 * len bits.
                let len = stops.trailing_zeros() / 8 + 1;
                self.pos += len as usize;
                return Ok(gather7(word & (stops ^ (stops - 1))));
            }
        }
        self.uvarint_slow()
    }

    /// The byte-at-a-time reader: for varints longer than 8 bytes and near
    /// the end of the block, where every byte is bounds-checked.
    #[cold]
    #[inline(never)]
    fn uvarint_slow(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .data
                .get(self.pos)
                .ok_or(DecodeError::Truncated(self.pos))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(DecodeError::Malformed {
                    at: start,
                    what: "varint overflows 64 bits",
                });
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed {
            at: start,
            what: "varint longer than 10 bytes",
        })
    }

    /// Reads `out.len()` zigzag varints, storing `f` of each: what
    /// `varint` in a loop would, with one load per 8 bytes. Every varint
    /// that ends inside the loaded word is cut out of it by its stop bit,
    /// so the position advances once per word rather than after each
    /// varint's length is known.
    #[inline]
    pub(super) fn varints(
        &mut self,
        out: &mut [i64],
        mut f: impl FnMut(i64) -> i64,
    ) -> Result<(), DecodeError> {
        let mut i = 0;
        while i < out.len() {
            let Some(word) = self
                .data
                .get(self.pos..)
                .and_then(|rest| rest.first_chunk::<8>())
            else {
                break;
            };
            let word = u64::from_le_bytes(*word);
            let mut stops = !word & HIGH_BITS;
            if stops == 0 {
                out[i] = f(unzigzag(self.uvarint_slow()?));
                i += 1;
                continue;
            }
            // Eight one-byte varints: small residuals come in runs.
            if stops == HIGH_BITS
                && let Some(run) = out.get_mut(i..i + 8)
            {
                for (k, x) in run.iter_mut().enumerate() {
                    *x = f(unzigzag((word >> (8 * k)) & 0x7f));
                }
                i += 8;
                self.pos += 8;
                continue;
            }
            let mut consumed = 0;
            while stops != 0 && i < out.len() {
                let upto = stops ^ (stops - 1);
                out[i] = f(unzigzag(gather7((word & upto) >> consumed)));
                i += 1;
                consumed = stops.trailing_zeros() + 1;
                stops &= stops - 1;
            }
            self.pos += (consumed / 8) as usize;
        }
        for x in out.get_mut(i..).unwrap_or_default() {
            *x = f(self.varint()?);
        }
        Ok(())
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<i64, DecodeError> {
        Ok(unzigzag(self.uvarint()?))
    }

    /// A varint that counts something in a block of `limit` samples at most;
    /// bounding it keeps corrupt counts from driving allocations.
    pub(super) fn count(&mut self, limit: usize, what: &'static str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let v = self.uvarint()?;
        if v > limit as u64 {
            return Err(DecodeError::Malformed { at, what });
        }
        Ok(v as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_table() {
        for (v, want) in [
            (0i64, 0u64),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (i64::MAX, u64::MAX - 1),
            (i64::MIN, u64::MAX),
        ] {
            assert_eq!(zigzag(v), want, "zigzag({v})");
            assert_eq!(unzigzag(want), v, "unzigzag({want})");
        }
    }

    #[test]
    fn varint_lengths_match_writes() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            assert_eq!(out.len(), uvarint_len(v), "len of {v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.uvarint(), Ok(v));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn varint_overflow_is_an_error() {
        let bytes = [0xffu8; 10];
        assert!(matches!(
            Reader::new(&bytes).uvarint(),
            Err(DecodeError::Malformed { at: 0, .. })
        ));
        assert_eq!(
            Reader::new(&[0x80, 0x80]).uvarint(),
            Err(DecodeError::Truncated(2))
        );
    }

    /// Varints of every length, written with `put_uvarint` or padded with
    /// redundant zero groups, followed by 0..=9 bytes: the word path (8
    /// bytes available) and the byte loop (fewer) must agree, including a
    /// varint ending exactly at the last byte.
    #[test]
    fn varints_at_buffer_ends_table() {
        let mut cases: Vec<(Vec<u8>, u64)> = Vec::new();
        for bits in [
            0u32, 1, 6, 7, 8, 13, 14, 20, 21, 27, 28, 35, 42, 49, 55, 56, 57, 63, 64,
        ] {
            let v = if bits == 0 {
                0
            } else {
                u64::MAX >> (64 - bits)
            };
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            cases.push((b, v));
        }
        // Non-minimal forms read as the same value: 0 in 2 and 9 bytes, 1
        // in 8, and 10-byte forms whose last byte is 0 or 1.
        cases.push((vec![0x80, 0x00], 0));
        cases.push((vec![0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 1));
        cases.push((
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            0,
        ));
        cases.push((
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            0,
        ));
        cases.push((
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            1 << 63,
        ));
        for (bytes, want) in &cases {
            for pad in 0..=9 {
                for lead in [0usize, 3] {
                    let mut data = vec![0x7f; lead];
                    data.extend_from_slice(bytes);
                    data.extend(std::iter::repeat_n(0xff, pad));
                    let mut r = Reader {
                        data: &data,
                        pos: lead,
                    };
                    assert_eq!(r.uvarint(), Ok(*want), "{bytes:x?} + {pad} bytes");
                    assert_eq!(r.pos(), lead + bytes.len(), "{bytes:x?} + {pad} bytes");
                }
            }
        }
    }

    /// A varint cut at any byte is `Truncated` at the block's end, whether
    /// or not the cut leaves 8 bytes after the varint's start.
    #[test]
    fn truncated_varints_table() {
        for len in 1..=10usize {
            let mut varint = vec![0x80u8; len - 1];
            varint.push(0x01);
            for lead in [0usize, 1, 5, 8] {
                for cut in 0..len {
                    let mut data = vec![0u8; lead];
                    data.extend_from_slice(&varint[..cut]);
                    let mut r = Reader {
                        data: &data,
                        pos: lead,
                    };
                    assert_eq!(
                        r.uvarint(),
                        Err(DecodeError::Truncated(lead + cut)),
                        "{len}-byte varint cut to {cut} after {lead} bytes"
                    );
                }
            }
        }
    }

    #[test]
    fn long_varints_are_errors_table() {
        let check = |data: &[u8], want: Result<u64, DecodeError>| {
            let mut padded = vec![0x00u8; 2];
            padded.extend_from_slice(data);
            padded.extend_from_slice(&[0x00; 8]);
            let mut r = Reader {
                data: &padded,
                pos: 2,
            };
            let shifted = want.map_err(|e| match e {
                DecodeError::Malformed { at, what } => DecodeError::Malformed { at: at + 2, what },
                other => other,
            });
            assert_eq!(r.uvarint(), shifted, "{data:x?}");
        };
        let overflow = || {
            Err(DecodeError::Malformed {
                at: 0,
                what: "varint overflows 64 bits",
            })
        };
        check(&[0xff; 10], overflow());
        check(
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
            overflow(),
        );
        // A 10th byte with its continuation bit set overflows too.
        check(&[0x80; 11], overflow());
        check(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            Ok(u64::MAX),
        );
    }

    /// The word path reads what the byte loop reads, for every start in
    /// byte strings mixing stop and continuation bytes.
    #[test]
    fn word_path_matches_byte_loop() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (state % 40) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Mostly continuation bytes, so long varints occur.
                    if state.is_multiple_of(4) {
                        state as u8 & 0x7f
                    } else {
                        state as u8 | 0x80
                    }
                })
                .collect();
            for start in 0..=len {
                let mut fast = Reader {
                    data: &data,
                    pos: start,
                };
                let mut slow = Reader {
                    data: &data,
                    pos: start,
                };
                assert_eq!(fast.uvarint(), slow.uvarint_slow(), "{data:x?} at {start}");
                assert_eq!(fast.pos, slow.pos, "{data:x?} at {start}");
                for n in 0..=len - start {
                    check_varints(&data, start, n);
                }
            }
        }
    }

    /// `varints` over `n` values from `start` stores what a loop of the
    /// byte reader reads and stops at the same byte, or fails the same way.
    fn check_varints(data: &[u8], start: usize, n: usize) {
        let mut want = Vec::new();
        let mut slow = Reader { data, pos: start };
        let want_err = (0..n).try_for_each(|_| {
            want.push(unzigzag(slow.uvarint_slow()?));
            Ok(())
        });
        let mut got = vec![0i64; n];
        let mut fast = Reader { data, pos: start };
        let got_err = fast.varints(&mut got, |v| v);
        assert_eq!(got_err, want_err, "{data:x?} from {start}, {n} values");
        if want_err.is_ok() {
            assert_eq!(got, want, "{data:x?} from {start}, {n} values");
            assert_eq!(fast.pos, slow.pos, "{data:x?} from {start}, {n} values");
        }
    }

    #[test]
    fn varints_table() {
        // Runs of every length mix around word edges, ending at the last
        // byte, and followed by a varint of 9 or 10 bytes.
        let mut data = Vec::new();
        for v in [
            0u64,
            1,
            300,
            5,
            70_000,
            1 << 40,
            2,
            1 << 62,
            3,
            u64::MAX,
            127,
            128,
            4,
        ] {
            put_uvarint(&mut data, v);
        }
        for start in 0..data.len() {
            for n in 0..=13 {
                check_varints(&data, start, n);
            }
        }
        // Runs of one-byte varints longer than a word, broken by longer
        // ones at every offset.
        for brk in 0..20 {
            let mut data = Vec::new();
            for v in 0..20u64 {
                put_uvarint(&mut data, if v == brk { 1 << 20 } else { v * 5 });
            }
            for start in 0..data.len() {
                for n in 0..=20 {
                    check_varints(&data, start, n);
                }
            }
        }
        let mut got = vec![0i64; 13];
        let mut r = Reader::new(&data);
        r.varints(&mut got, |v| v).expect("varints");
        assert!(r.is_empty());
        assert_eq!(got[4], unzigzag(70_000));
        assert_eq!(got[9], unzigzag(u64::MAX));
    }
}
