//! Integer streams: a sequence of i64 (timestamps, or decimal mantissas)
//! stored as residuals after a transform, packed densely or sparsely.
//!
//! Transforms (all arithmetic wraps, so any i64 sequence round-trips, even
//! when a difference overflows):
//! - plain: `r[i] = x[i]`
//! - delta: `r[0] = x[0]`, `r[i] = x[i] - x[i-1]`
//! - delta-of-delta: `r[0] = x[0]`, `r[1] = x[1] - x[0]`,
//!   `r[i] = (x[i] - x[i-1]) - (x[i-1] - x[i-2])`
//!
//! Packings:
//! - dense: `n` zigzag varints.
//! - sparse: varint `c` (count of nonzero residuals), then `c` pairs of
//!   (uvarint zeros skipped before it, zigzag varint residual); residuals
//!   after the last pair are zero. A regular scrape's timestamps are two
//!   pairs (first, step) whatever the count.
//!
//! The stream code is `transform * 2 + packing` (0..=5).

use super::DecodeError;
use super::varint::{Reader, put_uvarint, put_varint, uvarint_len, varint_len, zigzag};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transform {
    Plain = 0,
    Delta = 1,
    DeltaOfDelta = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Packing {
    Dense = 0,
    Sparse = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StreamCode {
    pub(super) transform: Transform,
    pub(super) packing: Packing,
}

/// Number of distinct stream codes.
pub(super) const STREAM_CODES: u8 = 6;

impl StreamCode {
    pub(super) fn code(self) -> u8 {
        self.transform as u8 * 2 + self.packing as u8
    }

    pub(super) fn from_code(code: u8) -> Option<StreamCode> {
        let transform = match code / 2 {
            0 => Transform::Plain,
            1 => Transform::Delta,
            2 => Transform::DeltaOfDelta,
            _ => return None,
        };
        let packing = if code.is_multiple_of(2) {
            Packing::Dense
        } else {
            Packing::Sparse
        };
        Some(StreamCode { transform, packing })
    }
}

/// Calls `f` with each residual of `xs` under `t`.
#[inline]
fn for_each_residual(xs: &[i64], t: Transform, mut f: impl FnMut(i64)) {
    match t {
        Transform::Plain => xs.iter().for_each(|&x| f(x)),
        Transform::Delta => {
            let mut prev = 0i64;
            for &x in xs {
                f(x.wrapping_sub(prev));
                prev = x;
            }
        }
        Transform::DeltaOfDelta => {
            let Some((&first, rest)) = xs.split_first() else {
                return;
            };
            f(first);
            let mut prev = first;
            let mut prev_delta = 0i64;
            for &x in rest {
                let d = x.wrapping_sub(prev);
                f(d.wrapping_sub(prev_delta));
                prev = x;
                prev_delta = d;
            }
        }
    }
}

/// Sizes of `xs` under `t`.
struct Measure {
    dense: usize,
    sparse: usize,
    /// Significant bits of all zigzagged residuals: closer to what zstd's
    /// entropy coding makes of the stream than the varint bytes are.
    bits: usize,
}

fn measure(xs: &[i64], t: Transform) -> Measure {
    let mut dense = 0usize;
    let mut bits = 0usize;
    let mut sparse_pairs = 0usize;
    let mut nonzero = 0u64;
    let mut zeros = 0u64;
    for_each_residual(xs, t, |r| {
        dense += varint_len(r);
        let z = zigzag(r);
        bits += (64 - z.leading_zeros()) as usize;
        if r == 0 {
            zeros += 1;
        } else {
            sparse_pairs += uvarint_len(zeros) + varint_len(r);
            nonzero += 1;
            zeros = 0;
        }
    });
    Measure {
        dense,
        sparse: uvarint_len(nonzero) + sparse_pairs,
        bits,
    }
}

/// Picks the transform with the fewest significant bits among `transforms`
/// (ties go to the earlier), then the smaller packing (ties go to sparse, it
/// decodes faster). Returns the code and its encoded size.
pub(super) fn choose(xs: &[i64], transforms: &[Transform]) -> (StreamCode, usize) {
    let mut best: Option<(Transform, Measure)> = None;
    for &transform in transforms {
        let m = measure(xs, transform);
        if best.as_ref().is_none_or(|(_, b)| m.bits < b.bits) {
            best = Some((transform, m));
        }
    }
    let Some((transform, m)) = best else {
        return (
            StreamCode {
                transform: Transform::Plain,
                packing: Packing::Dense,
            },
            0,
        );
    };
    if m.sparse <= m.dense {
        (
            StreamCode {
                transform,
                packing: Packing::Sparse,
            },
            m.sparse,
        )
    } else {
        (
            StreamCode {
                transform,
                packing: Packing::Dense,
            },
            m.dense,
        )
    }
}

pub(super) fn encode(xs: &[i64], code: StreamCode, out: &mut Vec<u8>) {
    match code.packing {
        Packing::Dense => for_each_residual(xs, code.transform, |r| put_varint(out, r)),
        Packing::Sparse => {
            let mut nonzero = 0u64;
            for_each_residual(xs, code.transform, |r| nonzero += u64::from(r != 0));
            put_uvarint(out, nonzero);
            let mut zeros = 0u64;
            for_each_residual(xs, code.transform, |r| {
                if r == 0 {
                    zeros += 1;
                } else {
                    put_uvarint(out, zeros);
                    put_varint(out, r);
                    zeros = 0;
                }
            });
        }
    }
}

/// Decodes `n` values appended to `out`.
pub(super) fn decode(
    r: &mut Reader<'_>,
    n: usize,
    code: StreamCode,
    out: &mut Vec<i64>,
) -> Result<(), DecodeError> {
    let base = out.len();
    out.resize(base + n, 0);
    let xs = &mut out[base..];
    match code.packing {
        // Dense streams undo the transform as they read: one pass, and the
        // running sums stay in registers.
        Packing::Dense => match code.transform {
            Transform::Plain => r.varints(xs, |v| v)?,
            Transform::Delta => {
                let mut acc = 0i64;
                r.varints(xs, |v| {
                    acc = acc.wrapping_add(v);
                    acc
                })?;
            }
            Transform::DeltaOfDelta => {
                let Some((first, rest)) = xs.split_first_mut() else {
                    return Ok(());
                };
                let mut acc = r.varint()?;
                *first = acc;
                let mut delta = 0i64;
                r.varints(rest, |v| {
                    delta = delta.wrapping_add(v);
                    acc = acc.wrapping_add(delta);
                    acc
                })?;
            }
        },
        // Sparse streams fill the runs of zero residuals between entries
        // directly: a constant under delta, an arithmetic progression under
        // delta², neither with a loop-carried sum, so the fills vectorize.
        Packing::Sparse => match code.transform {
            // `resize` already zeroed the slots.
            Transform::Plain => for_each_sparse(r, n, |slot, v| xs[slot] = v)?,
            Transform::Delta => {
                let (mut acc, mut next) = (0i64, 0usize);
                for_each_sparse(r, n, |slot, v| {
                    xs[next..slot].fill(acc);
                    acc = acc.wrapping_add(v);
                    xs[slot] = acc;
                    next = slot + 1;
                })?;
                xs[next..].fill(acc);
            }
            Transform::DeltaOfDelta => {
                // Before any entry every value is 0 (acc 0, delta 0). The
                // first residual is the first value, not a change of delta.
                let (mut acc, mut delta, mut next) = (0i64, 0i64, 0usize);
                for_each_sparse(r, n, |slot, v| {
                    if slot == 0 {
                        acc = v;
                    } else {
                        acc = progression(&mut xs[next..slot], acc, delta);
                        delta = delta.wrapping_add(v);
                        acc = acc.wrapping_add(delta);
                    }
                    xs[slot] = acc;
                    next = slot + 1;
                })?;
                progression(&mut xs[next..], acc, delta);
            }
        },
    }
    Ok(())
}

/// Reads a sparse stream's entries of a block of `n` samples, calling
/// `f(slot, residual)` for each in increasing slot order.
#[inline]
pub(super) fn for_each_sparse(
    r: &mut Reader<'_>,
    n: usize,
    mut f: impl FnMut(usize, i64),
) -> Result<(), DecodeError> {
    let count = r.count(n, "sparse stream has more entries than samples")?;
    let mut next = 0u64;
    for _ in 0..count {
        let at = r.pos();
        let skip = r.uvarint()?;
        let slot =
            next.checked_add(skip)
                .filter(|&s| s < n as u64)
                .ok_or(DecodeError::Malformed {
                    at,
                    what: "sparse stream runs past the sample count",
                })?;
        f(slot as usize, r.varint()?);
        next = slot + 1;
    }
    Ok(())
}

/// Fills `xs` with `from + step`, `from + 2 * step`, ... (wrapping) and
/// returns the last value written (`from` if `xs` is empty).
#[inline]
fn progression(xs: &mut [i64], from: i64, step: i64) -> i64 {
    // A running sum, which the compiler turns into vector lanes each
    // stepping by lanes * step; a multiply per slot does not vectorize
    // without 64-bit vector multiplies.
    let mut x = from;
    for slot in xs {
        x = x.wrapping_add(step);
        *slot = x;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(xs: &[i64]) {
        for code in (0..STREAM_CODES).filter_map(StreamCode::from_code) {
            let mut buf = Vec::new();
            encode(xs, code, &mut buf);
            let m = measure(xs, code.transform);
            let want = match code.packing {
                Packing::Dense => m.dense,
                Packing::Sparse => m.sparse,
            };
            assert_eq!(buf.len(), want, "measured size of {code:?}");
            let mut r = Reader::new(&buf);
            let mut got = vec![7];
            decode(&mut r, xs.len(), code, &mut got).expect("decode");
            assert!(r.is_empty(), "{code:?} left bytes");
            assert_eq!(&got[1..], xs, "{code:?}");
        }
    }

    #[test]
    fn round_trips_table() {
        round_trip(&[]);
        round_trip(&[5]);
        round_trip(&[1000, 2000, 3000, 4000]);
        round_trip(&[0, 0, 0, 1, 0, 0]);
        round_trip(&[i64::MIN, i64::MAX, i64::MIN, 0, -1, i64::MAX]);
        // Sparse fills: runs before the first entry, between entries and
        // after the last; entries at the first and last slot; progressions
        // that wrap.
        round_trip(&[0, 0, 0, 9]);
        round_trip(&[0, 0, 4, 8, 12, 16]);
        round_trip(&[7, 7, 7, 7, 7]);
        round_trip(&[5, 10, 15, 20, 26, 32, 38]);
        round_trip(&[i64::MAX - 2, i64::MAX - 1, i64::MAX, i64::MIN, i64::MIN + 1]);
        let mut late: Vec<i64> = (0..700).map(|i| 1_700_000_000_000 + i * 15_000).collect();
        late[350] += 40;
        late[699] -= 1;
        round_trip(&late);
    }

    #[test]
    fn regular_steps_choose_sparse_delta_of_delta() {
        let xs: Vec<i64> = (0..600).map(|i| 1_700_000_000_000 + i * 15_000).collect();
        let (code, size) = choose(&xs, &[Transform::Delta, Transform::DeltaOfDelta]);
        assert_eq!(
            code,
            StreamCode {
                transform: Transform::DeltaOfDelta,
                packing: Packing::Sparse
            }
        );
        assert_eq!(size, 1 + 1 + 6 + 1 + 3);
    }
}
