//! Exact decimal form of floats: `v == m * 10^e` with an integer mantissa.
//!
//! Decoding is `m as f64 * 10^e` for `e >= 0` and `m as f64 / 10^-e` for
//! `e < 0`, with `|m| <= 2^53` and `|e| <= 22`: both operands are exact in
//! f64 and IEEE multiplication and division round correctly, so the result
//! is the double nearest to the decimal `m * 10^e`. That is the double a
//! parser produced from the scraped text, so values such as `0.25`,
//! `1234.5` or `2.8061e-05` convert and come back bit for bit. Exactness
//! never rests on this argument, though: the encoder stores the difference
//! between the value's bits and `to_f64`'s (the ulp correction, usually 0),
//! and a value whose difference is too large becomes an exception.

/// Largest |mantissa|: every integer up to 2^53 is exact in f64.
pub(super) const MAX_MANTISSA: i64 = 1 << 53;

/// Largest |exponent|: 10^22 is the largest power of ten exact in f64.
pub(super) const MAX_EXPONENT: i32 = 22;

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The divisor or multiplier for exponent `e`; `e` must be within
/// `-MAX_EXPONENT..=MAX_EXPONENT`.
#[inline]
pub(super) fn scale(e: i32) -> f64 {
    POW10[e.unsigned_abs() as usize]
}

#[inline]
pub(super) fn to_f64(m: i64, e: i32) -> f64 {
    if e >= 0 {
        m as f64 * scale(e)
    } else {
        m as f64 / scale(e)
    }
}

/// A decimal form of `v` with as few mantissa digits as this search finds,
/// or None for NaN, infinities, -0.0 and values needing more than 2^53 of
/// mantissa or an exponent beyond +-22.
pub(super) fn from_f64(v: f64) -> Option<(i64, i32)> {
    const LIMIT: f64 = MAX_MANTISSA as f64;
    if v == 0.0 {
        // -0.0 compares equal to 0.0 but has other bits.
        return v.is_sign_positive().then_some((0, 0));
    }
    let a = v.abs();
    if !a.is_finite() {
        return None;
    }
    if a <= LIMIT {
        if v.fract() == 0.0 {
            return Some(strip_zeros(v as i64, 0));
        }
        for k in 1..=MAX_EXPONENT {
            let x = v * POW10[k as usize];
            if x.abs() > LIMIT {
                return None;
            }
            let m = x.round();
            if m / POW10[k as usize] == v {
                return Some((m as i64, -k));
            }
        }
        return None;
    }
    // Large magnitude: try the fewest trailing zeros that make it fit.
    for e in 1..=MAX_EXPONENT {
        let m = (v / POW10[e as usize]).round();
        if m.abs() <= LIMIT && m * POW10[e as usize] == v {
            return Some(strip_zeros(m as i64, e));
        }
    }
    None
}

/// A decimal near `v`: `(m, e, c)` such that the bits of `v` are the bits of
/// `to_f64(m, e)` plus `c`, with `|c| <= tolerance`. Floats that went
/// through arithmetic (`0.1 + 0.2`, sums of durations, counters kept as
/// floats) sit a few ulps off a short decimal: storing that decimal and the
/// ulp offset costs a fraction of the raw bits. The fewest digits that get
/// within `tolerance` win; exact short decimals come out with `c == 0`.
pub(super) fn approx(v: f64, tolerance: i64) -> Option<(i64, i32, i64)> {
    const LIMIT: f64 = MAX_MANTISSA as f64;
    if v == 0.0 {
        return v.is_sign_positive().then_some((0, 0, 0));
    }
    let a = v.abs();
    if !a.is_finite() {
        return None;
    }
    if a <= LIMIT && v.fract() == 0.0 {
        let (m, e) = strip_zeros(v as i64, 0);
        return Some((m, e, 0));
    }
    if a <= LIMIT {
        for k in 0..=MAX_EXPONENT {
            let x = v * POW10[k as usize];
            if x.abs() > LIMIT {
                return None;
            }
            let m = x.round() as i64;
            let c = correction(v, m, -k);
            if c.unsigned_abs() <= tolerance as u64 {
                return Some((m, -k, c));
            }
        }
        return None;
    }
    for e in 1..=MAX_EXPONENT {
        let m = (v / POW10[e as usize]).round();
        if m.abs() > LIMIT {
            continue;
        }
        let c = correction(v, m as i64, e);
        if c.unsigned_abs() <= tolerance as u64 {
            let (m, e) = strip_zeros(m as i64, e);
            return Some((m, e, c));
        }
    }
    None
}

/// Ulp offset of `v` from the decimal `m * 10^e`: bits of v minus bits of
/// `to_f64(m, e)`, wrapping (exact whatever the signs).
#[inline]
pub(super) fn correction(v: f64, m: i64, e: i32) -> i64 {
    (v.to_bits() as i64).wrapping_sub(to_f64(m, e).to_bits() as i64)
}

/// The mantissa nearest to `v` at exponent `e`, if within `MAX_MANTISSA`.
#[inline]
pub(super) fn nearest(v: f64, e: i32) -> Option<i64> {
    let x = if e >= 0 { v / scale(e) } else { v * scale(e) };
    let m = x.round();
    (m.abs() <= MAX_MANTISSA as f64).then_some(m as i64)
}

fn strip_zeros(mut m: i64, mut e: i32) -> (i64, i32) {
    while m != 0 && m % 10 == 0 && e < MAX_EXPONENT {
        m /= 10;
        e += 1;
    }
    (m, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_table() {
        let cases: &[(f64, Option<(i64, i32)>)] = &[
            (0.0, Some((0, 0))),
            (-0.0, None),
            (1.0, Some((1, 0))),
            (-7.0, Some((-7, 0))),
            (100.0, Some((1, 2))),
            (0.25, Some((25, -2))),
            (1234.5, Some((12345, -1))),
            (2.8061e-05, Some((28061, -9))),
            (0.1 + 0.2, None),
            (1e20, Some((1, 20))),
            (1.8446744073709552e19, None),
            (9007199254740993.0, Some((9007199254740992, 0))),
            (f64::NAN, None),
            (f64::INFINITY, None),
            (f64::MIN_POSITIVE, None),
            (1795248407.7643886, None),
        ];
        for &(v, want) in cases {
            let got = from_f64(v);
            assert_eq!(got, want, "from_f64({v:e})");
            if let Some((m, e)) = got {
                assert_eq!(to_f64(m, e).to_bits(), v.to_bits(), "to_f64 of {v:e}");
            }
        }
    }

    #[test]
    fn short_decimals_round_trip() {
        // Every value with up to 4 decimals parsed from text converts.
        for i in -20_000i64..20_000 {
            for d in 0..5 {
                let text = format!("{}e-{d}", i * 7919);
                let v: f64 = text.parse().expect("parse");
                let (m, e) = from_f64(v).unwrap_or_else(|| panic!("{text} not decimal"));
                assert_eq!(to_f64(m, e).to_bits(), v.to_bits(), "{text}");
            }
        }
    }

    #[test]
    fn approx_table() {
        type Case = (f64, Option<(i64, i32, i64)>);
        let cases: &[Case] = &[
            (0.25, Some((25, -2, 0))),
            (0.1 + 0.2, Some((3, -1, 1))),
            (0.18000000000000002, Some((18, -2, 1))),
            (0.042980511000000006, Some((42980511, -9, 1))),
            (5e-324, Some((0, 0, 1))),
            (-5e-324, None),
            (f64::NAN, None),
            (-0.0, None),
        ];
        for &(v, want) in cases {
            let got = approx(v, 64);
            assert_eq!(got, want, "approx({v:e})");
            if let Some((m, e, c)) = got {
                assert_eq!(
                    (to_f64(m, e).to_bits() as i64).wrapping_add(c) as u64,
                    v.to_bits()
                );
            }
        }
    }
}
