//! `histogram_quantile` over classic (`le`) buckets, Prometheus 2.53 rules.
//!
//! Contract with the evaluator: for each input sample it parses the `le`
//! label with [`parse_le`] (a sample whose `le` does not parse is skipped;
//! Prometheus warns), groups the samples by their labels without `le` (the
//! output series keeps those labels minus `__name__`), and calls
//! [`bucket_quantile`] once per group. Buckets may come in any order and
//! with repeated bounds (`le="1"` and `le="1.0"`): they are sorted and
//! coalesced here.

use std::cmp::Ordering;

/// One classic histogram bucket: the cumulative count of observations at or
/// below `upper_bound`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// The result of [`bucket_quantile_detailed`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketQuantile {
    pub value: f64,
    /// Some bucket counted fewer observations than a lower one and was
    /// raised to it (Prometheus reports this as an info annotation).
    pub forced_monotonic: bool,
    /// Counts differing by a relative 1e-12 or less were treated as equal.
    pub fixed_precision: bool,
}

/// Relative difference below which neighbouring bucket counts count as
/// equal: floating point noise from rates and sums, not a real decrease.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// Parses an `le` label value like Go's `strconv.ParseFloat`: decimal and
/// exponent forms, `+Inf`/`Inf`/`infinity` and `NaN` in any case. (Hex
/// floats, which Go also reads, are not accepted.)
pub fn parse_le(s: &str) -> Option<f64> {
    s.parse().ok()
}

/// The `q`-quantile of a classic histogram, interpolating linearly inside
/// the bucket holding rank `q * total`.
///
/// - NaN `q`: NaN; `q < 0`: `-Inf`; `q > 1`: `+Inf` (even without buckets).
/// - NaN when the highest bound is not `+Inf`, when fewer than two distinct
///   bounds remain, or when the `+Inf` bucket counts no observations.
/// - A rank in the `+Inf` bucket returns the highest finite bound.
/// - The lowest bucket starts at 0 when its bound is positive; a rank in a
///   lowest bucket with a bound at or below 0 returns that bound.
/// - Counts are first made monotonic: differences within 1e-12 relative are
///   ignored, any other decrease is raised to the count before it.
pub fn bucket_quantile(q: f64, buckets: &mut [Bucket]) -> f64 {
    bucket_quantile_detailed(q, buckets).value
}

/// [`bucket_quantile`] with the repairs it made to the counts. `buckets` is
/// left sorted, its coalesced and repaired prefix in front.
pub fn bucket_quantile_detailed(q: f64, buckets: &mut [Bucket]) -> BucketQuantile {
    let plain = |value| BucketQuantile {
        value,
        forced_monotonic: false,
        fixed_precision: false,
    };
    if q.is_nan() {
        return plain(f64::NAN);
    }
    if q < 0.0 {
        return plain(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return plain(f64::INFINITY);
    }
    buckets.sort_by(|a, b| {
        a.upper_bound
            .partial_cmp(&b.upper_bound)
            .unwrap_or(Ordering::Equal)
    });
    if buckets
        .last()
        .is_none_or(|b| b.upper_bound != f64::INFINITY)
    {
        return plain(f64::NAN);
    }
    let distinct = coalesce(buckets);
    let buckets = &mut buckets[..distinct];
    let (forced_monotonic, fixed_precision) = make_monotonic(buckets);
    let detailed = |value| BucketQuantile {
        value,
        forced_monotonic,
        fixed_precision,
    };
    let n = buckets.len();
    if n < 2 {
        return plain(f64::NAN);
    }
    let observations = buckets[n - 1].count;
    if observations == 0.0 {
        return plain(f64::NAN);
    }
    let mut rank = q * observations;
    let b = first_index(n - 1, |i| buckets[i].count >= rank);
    if b == n - 1 {
        return detailed(buckets[n - 2].upper_bound);
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return detailed(buckets[0].upper_bound);
    }
    let (mut start, end, mut count) = (0.0, buckets[b].upper_bound, buckets[b].count);
    if b > 0 {
        start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    detailed(start + (end - start) * (rank / count))
}

/// The smallest `i` in `0..n` with `pred(i)`, or `n`, by bisection assuming
/// `pred` is false then true; with NaN counts it is not, and the bisection
/// steps decide, so they follow the reference's.
fn first_index(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Merges neighbouring buckets with equal bounds (sorted input), adding
/// their counts, into a prefix of `buckets`; returns its length.
pub fn coalesce(buckets: &mut [Bucket]) -> usize {
    let mut kept = 0;
    for i in 0..buckets.len() {
        if i > 0 && buckets[i].upper_bound == buckets[kept - 1].upper_bound {
            buckets[kept - 1].count += buckets[i].count;
        } else {
            buckets[kept] = buckets[i];
            kept += 1;
        }
    }
    kept
}

/// Makes counts non-decreasing: a count within the tolerance of the last
/// kept count takes its value, a lower one too. Returns `(forced_monotonic,
/// fixed_precision)`.
fn make_monotonic(buckets: &mut [Bucket]) -> (bool, bool) {
    let (mut forced, mut fixed) = (false, false);
    let Some(first) = buckets.first() else {
        return (false, false);
    };
    let mut prev = first.count;
    for b in buckets.iter_mut().skip(1) {
        if b.count == prev {
            continue;
        }
        if almost_equal(prev, b.count, SMALL_DELTA_TOLERANCE) {
            b.count = prev;
            fixed = true;
        } else if b.count < prev {
            b.count = prev;
            forced = true;
        } else {
            prev = b.count;
        }
    }
    (forced, fixed)
}

/// Whether `a` and `b` differ by less than `epsilon` relative to their
/// magnitude (absolute near zero); two NaNs are equal.
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() || a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f64 = f64::NAN;
    const INF: f64 = f64::INFINITY;

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper_bound, count)| Bucket { upper_bound, count })
            .collect()
    }

    fn check(q: f64, pairs: &[(f64, f64)], want: f64) {
        let got = bucket_quantile(q, &mut buckets(pairs));
        let ok = (got.is_nan() && want.is_nan())
            || got == want
            || (got - want).abs() <= 1e-12 * want.abs();
        assert!(ok, "bucket_quantile({q}, {pairs:?}) = {got}, want {want}");
    }

    #[test]
    fn quantile_rules() {
        let h = [
            (0.1, 10.0),
            (0.2, 20.0),
            (0.5, 30.0),
            (1.0, 40.0),
            (INF, 40.0),
        ];
        check(0.5, &h, 0.2);
        check(0.25, &h, 0.1);
        check(0.75, &h, 0.5);
        check(0.875, &h, 0.75);
        check(0.0, &h, 0.0);
        check(1.0, &h, 1.0);
        check(0.1, &h, 0.04);
        // q out of range or NaN, also without buckets.
        check(-0.1, &h, -INF);
        check(1.1, &h, INF);
        check(NAN, &h, NAN);
        check(-1.0, &[], -INF);
        check(2.0, &[], INF);
        check(0.5, &[], NAN);
        // Needs a +Inf bucket and two bounds.
        check(0.5, &[(0.1, 10.0), (1.0, 20.0)], NAN);
        check(0.5, &[(INF, 20.0)], NAN);
        check(0.5, &[(INF, 20.0), (INF, 5.0)], NAN);
        // No observations.
        check(0.5, &[(1.0, 0.0), (INF, 0.0)], NAN);
        // Rank in the +Inf bucket: the highest finite bound.
        check(0.99, &[(1.0, 10.0), (2.0, 20.0), (INF, 100.0)], 2.0);
        // Lowest bucket with a bound at or below zero.
        check(0.1, &[(-1.0, 10.0), (0.0, 20.0), (INF, 30.0)], -1.0);
        check(0.5, &[(-1.0, 10.0), (0.0, 20.0), (INF, 30.0)], -0.5);
        check(0.1, &[(0.0, 10.0), (INF, 30.0)], 0.0);
        // Unsorted input with repeated bounds is sorted and coalesced.
        check(0.5, &[(INF, 20.0), (1.0, 5.0), (0.5, 2.0), (1.0, 5.0)], 1.0);
        // NaN counts.
        check(0.5, &[(1.0, NAN), (INF, 10.0)], 1.0);
        // A NaN total makes every comparison false: the search ends in the
        // +Inf bucket.
        check(0.5, &[(1.0, 5.0), (INF, NAN)], 1.0);
    }

    /// Cases from Prometheus' histogram test data, at 50m (10 increments).
    #[test]
    fn reference_histograms() {
        let positive = [(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 120.0)];
        let negative = [(-0.2, 10.0), (-0.1, 20.0), (0.3, 20.0), (INF, 30.0)];
        for (q, want_positive, want_negative) in [
            (0.0, 0.0, -0.2),
            (1.0, 1.0, 0.3),
            (0.2, 0.048, -0.2),
            (0.5, 0.15, -0.15),
            (0.8, 0.72, 0.3),
        ] {
            check(q, &positive, want_positive);
            check(q, &negative, want_negative);
        }
        let second = [
            (0.0, 0.0),
            (2.0, 10.0),
            (4.0, 20.0),
            (6.0, 30.0),
            (INF, 30.0),
        ];
        check(1.0 / 6.0, &second, 1.0);
        check(0.5, &second, 3.0);
        check(5.0 / 6.0, &second, 5.0);
        let nonmonotonic = [
            (0.1, 20.0),
            (1.0, 10.0),
            (10.0, 50.0),
            (100.0, 40.0),
            (1000.0, 90.0),
            (INF, 80.0),
        ];
        check(0.01, &nonmonotonic, 0.0045);
        check(0.5, &nonmonotonic, 8.5);
        check(0.99, &nonmonotonic, 979.75);
    }

    #[test]
    fn monotonicity_repairs() {
        fn check(pairs: &[(f64, f64)], q: f64, want: f64, forced: bool, fixed: bool) {
            let got = bucket_quantile_detailed(q, &mut buckets(pairs));
            assert!(
                (got.value - want).abs() <= 1e-12 * want.abs().max(1.0)
                    && got.forced_monotonic == forced
                    && got.fixed_precision == fixed,
                "{pairs:?} q={q}: {got:?}, want {want} forced={forced} fixed={fixed}"
            );
        }
        // A real decrease is raised to the previous count.
        check(
            &[(1.0, 10.0), (2.0, 5.0), (3.0, 20.0), (INF, 20.0)],
            0.5,
            1.0,
            true,
            false,
        );
        check(
            &[(1.0, 10.0), (2.0, 5.0), (3.0, 20.0), (INF, 20.0)],
            0.75,
            2.5,
            true,
            false,
        );
        // Noise within 1e-12 is smoothed without a forced flag, either way.
        let noisy = [
            (1.0, 10.0),
            (2.0, 20.0),
            (3.0, 20.0 - 1e-12),
            (4.0, 20.0 + 1e-12),
            (INF, 40.0),
        ];
        check(&noisy, 0.5, 2.0, false, true);
        check(
            &[(1.0, 10.0), (2.0, 20.0), (INF, 40.0)],
            0.5,
            2.0,
            false,
            false,
        );
    }

    #[test]
    fn coalescing() {
        let mut b = buckets(&[(1.0, 1.0), (1.0, 2.0), (2.0, 3.0), (INF, 4.0), (INF, 5.0)]);
        let n = coalesce(&mut b);
        assert_eq!(b[..n], buckets(&[(1.0, 3.0), (2.0, 3.0), (INF, 9.0)]));
        assert_eq!(coalesce(&mut []), 0);
    }

    #[test]
    fn le_values() {
        for (s, want) in [
            ("0.5", Some(0.5)),
            ("+Inf", Some(INF)),
            ("Inf", Some(INF)),
            ("1e3", Some(1000.0)),
            ("-1", Some(-1.0)),
            ("x", None),
            ("", None),
        ] {
            assert_eq!(parse_le(s), want, "{s}");
        }
        assert!(parse_le("NaN").is_some_and(f64::is_nan));
    }

    #[test]
    fn almost_equal_table() {
        for (a, b, want) in [
            (1.0, 1.0 + 1e-13, true),
            (1.0, 1.0 + 1e-11, false),
            (0.0, 1e-300, false),
            (0.0, 0.0, true),
            (NAN, NAN, true),
            (NAN, 1.0, false),
            (INF, INF, true),
        ] {
            assert_eq!(almost_equal(a, b, SMALL_DELTA_TOLERANCE), want, "{a} {b}");
        }
    }
}
