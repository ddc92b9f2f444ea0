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

    #[inline]
    pub(super) fn uvarint(&mut self) -> Result<u64, DecodeError> {
        // Fast path: most varints in a block are a single byte.
        if let Some(&b) = self.data.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
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
}
