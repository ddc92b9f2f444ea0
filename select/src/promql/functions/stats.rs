//! Statistics shared by functions and aggregations: compensated summation,
//! the quantile of a set of floats, and streaming mean and variance with the
//! exact arithmetic Prometheus 2.53 uses, so that results agree to the bit
//! where its test files compare them (`avg_over_time` divides a compensated
//! sum once unless it overflows, which may differ in the last bits).
//!
//! Which helper serves which PromQL operation:
//!
//! | operation                         | helper                                   |
//! |-----------------------------------|------------------------------------------|
//! | `sum_over_time`                   | [`KahanSum`]                             |
//! | `avg_over_time`                   | [`KahanSum`], [`KahanMean`] on overflow  |
//! | `stddev_over_time`, `stdvar_...`  | [`KahanVariance`]                        |
//! | `avg` aggregation                 | [`Mean`]                                 |
//! | `stddev`, `stdvar` aggregations   | [`Variance`]                             |
//! | `quantile`, `quantile_over_time`  | [`quantile`]                             |
//! | `sum` aggregation                 | plain `+=` (2.53 does not compensate it) |

use std::cmp::Ordering;

/// One step of Neumaier's variant of Kahan summation: adds `inc` to `sum`,
/// accumulating the lost low-order bits in `c`. Returns the new `(sum, c)`;
/// the compensated total is `sum + c` (but `sum` alone once it is infinite,
/// since `c` is then NaN).
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    // The smaller operand is the one whose low bits were rounded away.
    let lost = if sum.abs() >= inc.abs() {
        (sum - t) + inc
    } else {
        (inc - t) + sum
    };
    (t, c + lost)
}

/// A compensated running sum (`sum_over_time`).
#[derive(Clone, Copy, Debug, Default)]
pub struct KahanSum {
    sum: f64,
    c: f64,
}

impl KahanSum {
    pub fn add(&mut self, v: f64) {
        (self.sum, self.c) = kahan_inc(v, self.sum, self.c);
    }

    /// The sum; an infinite sum is returned as is (its compensation is NaN).
    pub fn value(&self) -> f64 {
        if self.sum.is_infinite() {
            self.sum
        } else {
            self.sum + self.c
        }
    }
}

/// The running mean of `avg_over_time`: each value moves the mean by
/// `v/n - mean/n` (dividing first so large values cannot overflow), the moves
/// summed with compensation. An infinite mean stays put unless a NaN or an
/// infinity of the other sign arrives, instead of turning into `Inf - Inf`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KahanMean {
    mean: f64,
    c: f64,
    count: f64,
}

impl KahanMean {
    pub fn add(&mut self, v: f64) {
        self.count += 1.0;
        if self.mean.is_infinite() && mean_absorbs(self.mean, v) {
            return;
        }
        (self.mean, self.c) = kahan_inc(v / self.count - self.mean / self.count, self.mean, self.c);
    }

    /// The mean; NaN when nothing was added.
    pub fn value(&self) -> f64 {
        if self.count == 0.0 {
            f64::NAN
        } else if self.mean.is_infinite() {
            self.mean
        } else {
            self.mean + self.c
        }
    }
}

/// Whether an infinite `mean` is already the right mean after adding `v`:
/// `v` is finite, or the same infinity.
fn mean_absorbs(mean: f64, v: f64) -> bool {
    if v.is_infinite() {
        (mean > 0.0) == (v > 0.0)
    } else {
        !v.is_nan()
    }
}

/// The running mean of the `avg` aggregation: the first value is the mean,
/// each next value moves it by `v/n - mean/n`, without compensation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mean {
    mean: f64,
    count: u64,
}

impl Mean {
    pub fn add(&mut self, v: f64) {
        self.count += 1;
        if self.count == 1 {
            self.mean = v;
            return;
        }
        if self.mean.is_infinite() && mean_absorbs(self.mean, v) {
            return;
        }
        let n = self.count as f64;
        self.mean += v / n - self.mean / n;
    }

    /// The mean; NaN when nothing was added.
    pub fn value(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.mean }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Welford's running variance as the `stddev` and `stdvar` aggregations
/// compute it (no compensation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Variance {
    mean: f64,
    m2: f64,
    count: u64,
}

impl Variance {
    pub fn add(&mut self, v: f64) {
        self.count += 1;
        if self.count == 1 {
            self.mean = v;
            return;
        }
        let delta = v - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (v - self.mean);
    }

    /// The population variance; NaN when nothing was added.
    pub fn stdvar(&self) -> f64 {
        self.m2 / self.count as f64
    }

    /// The population standard deviation; NaN when nothing was added.
    pub fn stddev(&self) -> f64 {
        self.stdvar().sqrt()
    }
}

/// Welford's running variance with both the mean and the sum of squared
/// deviations compensated, as `stddev_over_time` and `stdvar_over_time`
/// compute it.
#[derive(Clone, Copy, Debug, Default)]
pub struct KahanVariance {
    mean: f64,
    c_mean: f64,
    m2: f64,
    c_m2: f64,
    count: f64,
}

impl KahanVariance {
    pub fn add(&mut self, v: f64) {
        self.count += 1.0;
        let delta = v - (self.mean + self.c_mean);
        (self.mean, self.c_mean) = kahan_inc(delta / self.count, self.mean, self.c_mean);
        let spread = delta * (v - (self.mean + self.c_mean));
        (self.m2, self.c_m2) = kahan_inc(spread, self.m2, self.c_m2);
    }

    /// The population variance; NaN when nothing was added.
    pub fn stdvar(&self) -> f64 {
        (self.m2 + self.c_m2) / self.count
    }

    /// The population standard deviation; NaN when nothing was added.
    pub fn stddev(&self) -> f64 {
        self.stdvar().sqrt()
    }
}

/// The order PromQL sorts floats in for quantiles: NaN below everything.
pub fn nan_first(a: &f64, b: &f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

/// The `q`-quantile of `values` (reordered in place), interpolating linearly
/// between the two closest ranks (rank `q * (n - 1)`). NaN for no values or a
/// NaN `q`; `-Inf` for `q < 0`, `+Inf` for `q > 1`. NaN values sort below
/// all others.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_unstable_by(nan_first);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(got: f64, want: f64) -> bool {
        (got.is_nan() && want.is_nan()) || got == want
    }

    #[test]
    fn quantile_table() {
        fn check(q: f64, values: &[f64], want: f64) {
            let got = quantile(q, &mut values.to_vec());
            assert!(
                same(got, want),
                "quantile({q}, {values:?}) = {got}, want {want}"
            );
        }
        check(0.5, &[], f64::NAN);
        check(f64::NAN, &[1.0], f64::NAN);
        check(-0.1, &[1.0], f64::NEG_INFINITY);
        check(1.1, &[1.0], f64::INFINITY);
        check(0.5, &[3.0, 1.0, 2.0], 2.0);
        check(0.0, &[3.0, 1.0, 2.0], 1.0);
        check(1.0, &[3.0, 1.0, 2.0], 3.0);
        check(0.25, &[4.0, 1.0, 2.0, 3.0], 1.75);
        check(0.9, &[1.0, 2.0], 1.9);
        check(0.5, &[7.0], 7.0);
        // NaN sorts lowest.
        check(0.0, &[1.0, f64::NAN, 2.0], f64::NAN);
        check(1.0, &[1.0, f64::NAN, 2.0], 2.0);
        check(0.5, &[f64::INFINITY, 1.0], f64::INFINITY);
    }

    #[test]
    fn kahan_sum_keeps_small_terms() {
        fn check(values: &[f64], want: f64) {
            let mut s = KahanSum::default();
            values.iter().for_each(|v| s.add(*v));
            assert!(
                same(s.value(), want),
                "sum of {values:?} = {}, want {want}",
                s.value()
            );
        }
        check(&[], 0.0);
        check(&[1.0, 1e100, 1.0, -1e100], 2.0);
        check(&[0.1, 0.2, 0.3], 0.6);
        check(&[1.0, f64::INFINITY], f64::INFINITY);
        check(&[f64::INFINITY, f64::NEG_INFINITY], f64::NAN);
        check(&[1.0, f64::NAN], f64::NAN);
    }

    #[test]
    fn means() {
        fn check(values: &[f64], want_kahan: f64, want_plain: f64) {
            let mut k = KahanMean::default();
            let mut m = Mean::default();
            for v in values {
                k.add(*v);
                m.add(*v);
            }
            assert!(
                same(k.value(), want_kahan),
                "kahan mean of {values:?} = {}",
                k.value()
            );
            assert!(
                same(m.value(), want_plain),
                "mean of {values:?} = {}",
                m.value()
            );
        }
        check(&[], f64::NAN, f64::NAN);
        check(&[1.0, 2.0, 3.0, 4.0], 2.5, 2.5);
        check(&[f64::MAX, f64::MAX], f64::MAX, f64::MAX);
        check(&[1.0, f64::INFINITY, 2.0], f64::INFINITY, f64::INFINITY);
        check(
            &[f64::INFINITY, f64::INFINITY],
            f64::INFINITY,
            f64::INFINITY,
        );
        check(&[f64::INFINITY, f64::NEG_INFINITY], f64::NAN, f64::NAN);
        check(&[f64::INFINITY, f64::NAN], f64::NAN, f64::NAN);
        check(&[1.0, f64::NAN, 1.0], f64::NAN, f64::NAN);
    }

    /// Cases from Prometheus' aggregator test data.
    #[test]
    fn aggregation_reference_cases() {
        let mut var = Variance::default();
        (1..=8).for_each(|i| var.add(f64::from(i) * 100.0));
        assert_eq!(var.stdvar(), 52500.0);
        assert!((var.stddev() - 229.12878474779).abs() < 1e-9);
        let mut flat = Variance::default();
        [13.3, 13.3, 13.3].iter().for_each(|v| flat.add(*v));
        assert_eq!(flat.stddev(), 0.0);

        let big = 9.988_465_674_311_58e307;
        fn mean(values: &[f64]) -> f64 {
            let mut m = Mean::default();
            values.iter().for_each(|v| m.add(*v));
            m.value()
        }
        assert_eq!(mean(&[big; 4]), big);
        assert_eq!(mean(&[-big; 4]), -big);
        assert!(mean(&[-big, -big, big, big]).abs() < 1e-6 * big);
        assert_eq!(mean(&[f64::INFINITY, 0.0, f64::INFINITY]), f64::INFINITY);
        assert_eq!(
            mean(&[f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0]),
            f64::NEG_INFINITY
        );
        assert!(mean(&[f64::NEG_INFINITY, 0.0, f64::INFINITY]).is_nan());
    }

    #[test]
    fn variances() {
        fn check(values: &[f64], want_var: f64) {
            let mut k = KahanVariance::default();
            let mut w = Variance::default();
            for v in values {
                k.add(*v);
                w.add(*v);
            }
            assert!(
                same(k.stdvar(), want_var),
                "kahan stdvar of {values:?} = {}",
                k.stdvar()
            );
            assert!(
                same(w.stdvar(), want_var),
                "stdvar of {values:?} = {}",
                w.stdvar()
            );
            assert!(same(w.stddev(), want_var.sqrt()), "stddev of {values:?}");
        }
        check(&[], f64::NAN);
        check(&[5.0], 0.0);
        check(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], 4.0);
        check(&[1.0, f64::NAN], f64::NAN);
        check(&[1.0, f64::INFINITY], f64::NAN);
    }
}
