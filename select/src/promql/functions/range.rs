//! Functions over a range vector window: `rate`, `increase`, `delta`,
//! `irate`, `idelta`, `deriv`, `predict_linear`, `holt_winters`
//! (`double_exponential_smoothing`), `changes`, `resets`, and every
//! `*_over_time` but `absent_over_time` (which is about series that are not
//! there, so the evaluator answers it).
//!
//! Contract with the evaluator: it calls a function only for a window with at
//! least one point (Prometheus never evaluates an empty window), passes the
//! scalar arguments in call order without the range vector, and, for
//! functions with argument rules (`holt_winters`), calls [`validate_args`]
//! first and fails the query on `Err`. Every function also answers `None` to
//! an empty window or invalid arguments, so a missed check cannot panic.

use super::stats::{KahanMean, KahanSum, KahanVariance, kahan_inc, quantile};
use super::{RangeFunction, RangeWindow};
use crate::promql::value::Point;

/// Arguments a range function cannot work with; the query fails with this.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgError {
    #[error("invalid smoothing factor. Expected: 0 < sf < 1, got: {0:.6}")]
    SmoothingFactor(f64),
    #[error("invalid trend factor. Expected: 0 < tf < 1, got: {0:.6}")]
    TrendFactor(f64),
    #[error("{name}() takes {want} scalar argument(s) besides the range vector, got {got}")]
    Count {
        name: String,
        want: usize,
        got: usize,
    },
}

/// The function called `name`, if it takes a range vector.
pub fn lookup(name: &str) -> Option<RangeFunction> {
    let f: RangeFunction = match name {
        "rate" => rate,
        "increase" => increase,
        "delta" => delta,
        "irate" => irate,
        "idelta" => idelta,
        "deriv" => deriv,
        "predict_linear" => predict_linear,
        "holt_winters" | "double_exponential_smoothing" => holt_winters,
        "changes" => changes,
        "resets" => resets,
        "avg_over_time" => avg_over_time,
        "min_over_time" => min_over_time,
        "max_over_time" => max_over_time,
        "sum_over_time" => sum_over_time,
        "count_over_time" => count_over_time,
        "last_over_time" => last_over_time,
        "present_over_time" => present_over_time,
        "stddev_over_time" => stddev_over_time,
        "stdvar_over_time" => stdvar_over_time,
        "mad_over_time" => mad_over_time,
        "quantile_over_time" => quantile_over_time,
        _ => return None,
    };
    Some(f)
}

/// Whether the function called `name` reads [`RangeWindow::drops`]: with
/// it counted once per series, a window without counter resets costs
/// `rate` and `increase` a constant time instead of a pass over its points.
pub fn counts_drops(name: &str) -> bool {
    matches!(name, "rate" | "increase" | "resets")
}

/// How many scalar arguments the function called `name` takes besides the
/// range vector (`None` for names [`lookup`] does not know).
pub fn arg_count(name: &str) -> Option<usize> {
    lookup(name)?;
    Some(match name {
        "predict_linear" | "quantile_over_time" => 1,
        "holt_winters" | "double_exponential_smoothing" => 2,
        _ => 0,
    })
}

/// Checks the scalar arguments of one call (one series at one step; the
/// arguments may change from step to step). Prometheus checks them only when
/// it evaluates a non-empty window, so the evaluator should call this right
/// before the function, not for steps without points.
pub fn validate_args(name: &str, args: &[f64]) -> Result<(), ArgError> {
    if let Some(want) = arg_count(name)
        && want != args.len()
    {
        return Err(ArgError::Count {
            name: name.to_owned(),
            want,
            got: args.len(),
        });
    }
    if let ("holt_winters" | "double_exponential_smoothing", [sf, tf]) = (name, args) {
        // Written so that NaN fails too.
        if !(*sf > 0.0 && *sf < 1.0) {
            return Err(ArgError::SmoothingFactor(*sf));
        }
        if !(*tf > 0.0 && *tf < 1.0) {
            return Err(ArgError::TrendFactor(*tf));
        }
    }
    Ok(())
}

fn rate(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    extrapolated_delta(w, true, true)
}

fn increase(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    extrapolated_delta(w, true, false)
}

fn delta(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    extrapolated_delta(w, false, false)
}

/// The change over the window, extrapolated towards its bounds: all the way
/// to a bound when the outermost point lies within 1.1 average sample
/// intervals of it, else half an average interval (the series likely starts
/// or ends inside the window). A counter's change adds back the value before
/// each reset, and its extrapolation to the start stops where the counter
/// would reach zero. Per second of the window's length when `per_second`.
fn extrapolated_delta(w: &RangeWindow<'_>, is_counter: bool, per_second: bool) -> Option<f64> {
    let points = w.points;
    let (first, last) = match points {
        [first, .., last] => (first, last),
        _ => return None,
    };
    let mut change = last.v - first.v;
    if is_counter && w.drops != Some(0) {
        // One reset at a time, in order, as Prometheus adds them: a sum of
        // the resets first would round differently.
        for pair in points.windows(2) {
            if pair[1].v < pair[0].v {
                change += pair[0].v;
            }
        }
    }
    let geometry = Geometry {
        to_start_ms: first.t - w.start,
        to_end_ms: w.end - last.t,
        sampled_ms: last.t - first.t,
        intervals: points.len() - 1,
        range_ms: w.end - w.start,
        per_second,
    };
    let e = Extrapolation::of(geometry);
    // The zero point only matters when it lies before the start the
    // geometry chose. With `first.v >= change > 0`, `first.v / change >= 1`
    // and so `to_zero >= sampled`: when the start is no farther than
    // `sampled`, the division can be skipped (the common case: a counter far
    // above its increase over the window).
    if is_counter
        && change > 0.0
        && first.v >= 0.0
        && !(first.v >= change && e.to_start <= e.sampled)
    {
        let to_zero = e.sampled * (first.v / change);
        if to_zero < e.to_start {
            return Some(change * Extrapolation::factor(geometry, e.sampled, to_zero, e.to_end));
        }
    }
    Some(change * e.factor)
}

/// Where a window's outermost points lie: all that its extrapolation
/// factor depends on, apart from a counter's zero point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    to_start_ms: i64,
    to_end_ms: i64,
    sampled_ms: i64,
    intervals: usize,
    range_ms: i64,
    per_second: bool,
}

/// Extrapolation of a window geometry, in seconds, with the arithmetic (and
/// so the rounding) of Prometheus 2.53's `extrapolatedRate`.
#[derive(Clone, Copy, Debug)]
struct Extrapolation {
    sampled: f64,
    to_start: f64,
    to_end: f64,
    factor: f64,
}

thread_local! {
    /// The last geometry extrapolated on this thread. The series of one
    /// selector are sampled at a fixed interval and the steps advance by a
    /// fixed step, so consecutive windows mostly share their geometry; the
    /// divisions it takes were a fifth of the CPU of a rate over many
    /// steps.
    static LAST_EXTRAPOLATION: std::cell::Cell<Option<(Geometry, Extrapolation)>> =
        const { std::cell::Cell::new(None) };
}

impl Extrapolation {
    fn of(g: Geometry) -> Extrapolation {
        LAST_EXTRAPOLATION.with(|last| match last.get() {
            Some((seen, e)) if seen == g => e,
            _ => {
                let e = Extrapolation::compute(g);
                last.set(Some((g, e)));
                e
            }
        })
    }

    fn compute(g: Geometry) -> Extrapolation {
        let mut to_start = g.to_start_ms as f64 / 1000.0;
        let mut to_end = g.to_end_ms as f64 / 1000.0;
        let sampled = g.sampled_ms as f64 / 1000.0;
        let average_interval = sampled / g.intervals as f64;
        let threshold = average_interval * 1.1;
        if to_start >= threshold {
            to_start = average_interval / 2.0;
        }
        if to_end >= threshold {
            to_end = average_interval / 2.0;
        }
        Extrapolation {
            sampled,
            to_start,
            to_end,
            factor: Extrapolation::factor(g, sampled, to_start, to_end),
        }
    }

    fn factor(g: Geometry, sampled: f64, to_start: f64, to_end: f64) -> f64 {
        let mut factor = (sampled + to_start + to_end) / sampled;
        if g.per_second {
            factor /= g.range_ms as f64 / 1000.0;
        }
        factor
    }
}

fn irate(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    last_two_delta(w.points, true)
}

fn idelta(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    last_two_delta(w.points, false)
}

/// The change between the last two points; for `irate` a drop counts as a
/// counter reset (the change is then the last value) and the change is per
/// second.
fn last_two_delta(points: &[Point], per_second: bool) -> Option<f64> {
    let (prev, last) = match points {
        [.., prev, last] => (prev, last),
        _ => return None,
    };
    let interval_ms = last.t - prev.t;
    if interval_ms == 0 {
        return None;
    }
    if !per_second {
        return Some(last.v - prev.v);
    }
    let change = if last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    Some(change / (interval_ms as f64 / 1000.0))
}

/// Least-squares fit of the points, time in seconds relative to
/// `intercept_ms` (keeping the abscissas small keeps the sums precise).
/// Returns `(slope, value at intercept_ms)`. A constant series has slope 0,
/// unless it is constantly infinite: then both are NaN.
fn linear_regression(points: &[Point], intercept_ms: i64) -> (f64, f64) {
    let first_v = points.first().map_or(f64::NAN, |p| p.v);
    let constant = points.iter().all(|p| p.v == first_v);
    if constant {
        return if first_v.is_infinite() {
            (f64::NAN, f64::NAN)
        } else {
            (0.0, first_v)
        };
    }
    let (mut sum_x, mut c_x) = (0.0, 0.0);
    let (mut sum_y, mut c_y) = (0.0, 0.0);
    let (mut sum_xy, mut c_xy) = (0.0, 0.0);
    let (mut sum_x2, mut c_x2) = (0.0, 0.0);
    for p in points {
        let x = (p.t - intercept_ms) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(p.v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * p.v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    let n = points.len() as f64;
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    (slope, sum_y / n - slope * sum_x / n)
}

fn deriv(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    let first = match w.points {
        [first, _, ..] => first,
        _ => return None,
    };
    Some(linear_regression(w.points, first.t).0)
}

/// Args: `[seconds]` after the evaluation time (not the window's end: they
/// differ under `offset` and `@`).
fn predict_linear(w: &RangeWindow<'_>, args: &[f64]) -> Option<f64> {
    let (&[seconds], [_, _, ..]) = (args, w.points) else {
        return None;
    };
    let (slope, intercept) = linear_regression(w.points, w.eval_time);
    Some(slope * seconds + intercept)
}

/// Double exponential smoothing. Args: `[sf, tf]`, both in (0, 1).
fn holt_winters(w: &RangeWindow<'_>, args: &[f64]) -> Option<f64> {
    let &[sf, tf] = args else {
        return None;
    };
    if validate_args("holt_winters", args).is_err() {
        return None;
    }
    let (first, second) = match w.points {
        [first, second, ..] => (first, second),
        _ => return None,
    };
    // `level` is the smoothed value, `prev_level` the one before it; the
    // initial trend is the first difference.
    let mut prev_level = 0.0;
    let mut level = first.v;
    let mut trend = second.v - first.v;
    for (i, p) in w.points.iter().enumerate().skip(1) {
        if i > 1 {
            trend = tf * (level - prev_level) + (1.0 - tf) * trend;
        }
        let next = sf * p.v + (1.0 - sf) * (level + trend);
        prev_level = level;
        level = next;
    }
    Some(level)
}

fn changes(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    if w.points.is_empty() {
        return None;
    }
    let count = w
        .points
        .windows(2)
        .filter(|pair| {
            let (a, b) = (pair[0].v, pair[1].v);
            a != b && !(a.is_nan() && b.is_nan())
        })
        .count();
    Some(count as f64)
}

fn resets(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    if w.points.is_empty() {
        return None;
    }
    if let Some(drops) = w.drops {
        return Some(drops as f64);
    }
    let count = w
        .points
        .windows(2)
        .filter(|pair| pair[1].v < pair[0].v)
        .count();
    Some(count as f64)
}

/// The compensated sum divided by the count; only when that sum is not
/// finite (an overflow, an infinity or a NaN) the running mean, which
/// divides at every point but cannot overflow. The two differ in the last
/// bits at most, and the sum takes a fraction of the time.
fn avg_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    if w.points.is_empty() {
        return None;
    }
    let mut sum = KahanSum::default();
    w.points.iter().for_each(|p| sum.add(p.v));
    let total = sum.value();
    if total.is_finite() {
        return Some(total / w.points.len() as f64);
    }
    let mut mean = KahanMean::default();
    w.points.iter().for_each(|p| mean.add(p.v));
    Some(mean.value())
}

/// The extreme value by `replaces(candidate, current)`; a NaN is replaced by
/// any later value, so NaN comes out only when every value is NaN.
fn extreme(points: &[Point], replaces: fn(f64, f64) -> bool) -> Option<f64> {
    let first = points.first()?.v;
    Some(points.iter().fold(first, |current, p| {
        if replaces(p.v, current) || current.is_nan() {
            p.v
        } else {
            current
        }
    }))
}

fn min_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    extreme(w.points, |candidate, current| candidate < current)
}

fn max_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    extreme(w.points, |candidate, current| candidate > current)
}

fn sum_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    if w.points.is_empty() {
        return None;
    }
    let mut sum = KahanSum::default();
    w.points.iter().for_each(|p| sum.add(p.v));
    Some(sum.value())
}

fn count_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    if w.points.is_empty() {
        return None;
    }
    Some(w.points.len() as f64)
}

fn last_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    w.points.last().map(|p| p.v)
}

fn present_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    if w.points.is_empty() { None } else { Some(1.0) }
}

fn variance(points: &[Point]) -> Option<KahanVariance> {
    if points.is_empty() {
        return None;
    }
    let mut var = KahanVariance::default();
    points.iter().for_each(|p| var.add(p.v));
    Some(var)
}

fn stddev_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    variance(w.points).map(|v| v.stddev())
}

fn stdvar_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    variance(w.points).map(|v| v.stdvar())
}

/// Median absolute deviation from the median.
fn mad_over_time(w: &RangeWindow<'_>, _: &[f64]) -> Option<f64> {
    if w.points.is_empty() {
        return None;
    }
    let mut values: Vec<f64> = w.points.iter().map(|p| p.v).collect();
    let median = quantile(0.5, &mut values);
    let mut deviations: Vec<f64> = w.points.iter().map(|p| (p.v - median).abs()).collect();
    Some(quantile(0.5, &mut deviations))
}

/// Args: `[φ]`. φ outside [0, 1] gives ∓Inf, NaN gives NaN (Prometheus also
/// warns; the evaluator may).
fn quantile_over_time(w: &RangeWindow<'_>, args: &[f64]) -> Option<f64> {
    let &[q] = args else {
        return None;
    };
    if w.points.is_empty() {
        return None;
    }
    let mut values: Vec<f64> = w.points.iter().map(|p| p.v).collect();
    Some(quantile(q, &mut values))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f64 = f64::NAN;
    const INF: f64 = f64::INFINITY;

    /// Points `(seconds, value)`.
    fn points(pts: &[(f64, f64)]) -> Vec<Point> {
        pts.iter()
            .map(|&(s, v)| Point {
                t: (s * 1000.0) as i64,
                v,
            })
            .collect()
    }

    /// Points every `step` seconds from `from`, values listed.
    fn series(from: f64, step: f64, values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (from + step * i as f64, *v))
            .collect()
    }

    /// Evaluates `name(args..., window)` over the window `[eval - range,
    /// eval]` (seconds) and compares with a tolerance of 1e-12 relative.
    fn check(
        name: &str,
        args: &[f64],
        pts: &[(f64, f64)],
        range: f64,
        eval: f64,
        want: Option<f64>,
    ) {
        check_at(name, args, pts, (eval - range, eval, eval), want);
    }

    /// Like `check` with explicit `(start, end, eval_time)` in seconds.
    fn check_at(
        name: &str,
        args: &[f64],
        pts: &[(f64, f64)],
        (start, end, eval): (f64, f64, f64),
        want: Option<f64>,
    ) {
        let pts = points(pts);
        let w = RangeWindow {
            points: &pts,
            start: (start * 1000.0) as i64,
            end: (end * 1000.0) as i64,
            eval_time: (eval * 1000.0) as i64,
            drops: None,
        };
        let f = lookup(name).expect("function exists");
        let got = f(&w, args);
        // With the drops counted beforehand the answer must not change.
        let drops = pts.windows(2).filter(|p| p[1].v < p[0].v).count();
        let counted = f(
            &RangeWindow {
                drops: Some(drops),
                ..w
            },
            args,
        );
        assert_eq!(
            format!("{got:?}"),
            format!("{counted:?}"),
            "{name}({args:?}) over {pts:?} with drops counted"
        );
        let ok = match (got, want) {
            (None, None) => true,
            (Some(g), Some(w)) => {
                (g.is_nan() && w.is_nan())
                    || g == w
                    || ((g - w).abs() <= 1e-12 * w.abs().max(1e-300))
            }
            _ => false,
        };
        assert!(ok, "{name}({args:?}) over {pts:?} = {got:?}, want {want:?}");
    }

    #[test]
    fn lookup_knows_every_range_function() {
        for name in [
            "rate",
            "increase",
            "delta",
            "irate",
            "idelta",
            "deriv",
            "predict_linear",
            "holt_winters",
            "double_exponential_smoothing",
            "changes",
            "resets",
            "avg_over_time",
            "min_over_time",
            "max_over_time",
            "sum_over_time",
            "count_over_time",
            "last_over_time",
            "present_over_time",
            "stddev_over_time",
            "stdvar_over_time",
            "mad_over_time",
            "quantile_over_time",
        ] {
            assert!(lookup(name).is_some(), "{name}");
        }
        assert!(lookup("abs").is_none());
        assert!(lookup("absent_over_time").is_none());
    }

    #[test]
    fn rate_increase_delta() {
        // 0+10x10 every 5m, rate over 50m at 50m: full coverage.
        let counter = series(
            0.0,
            300.0,
            &(0..=10).map(|i| i as f64 * 10.0).collect::<Vec<_>>(),
        );
        check("increase", &[], &counter, 3000.0, 3000.0, Some(100.0));
        check("rate", &[], &counter, 3000.0, 3000.0, Some(100.0 / 3000.0));
        // 0+10x5 0+10x5: one reset adds back the 50 before it.
        let reset: Vec<f64> = (0..=5).chain(0..=5).map(|i| i as f64 * 10.0).collect();
        let reset = series(0.0, 300.0, &reset[..11]);
        check("increase", &[], &reset, 3000.0, 3000.0, Some(90.0));
        // Too few points.
        check("rate", &[], &[(0.0, 1.0)], 60.0, 60.0, None);
        check("rate", &[], &[], 60.0, 60.0, None);
        // Gap at the end larger than 1.1 intervals: extrapolate half an
        // interval. Points at 0..=40s every 10s valued 0..=4; window 0..60s;
        // the first point sits on the start (counter limited to zero: 0).
        let short = series(0.0, 10.0, &[0.0, 1.0, 2.0, 3.0, 4.0]);
        check("increase", &[], &short, 60.0, 60.0, Some(4.0 * 45.0 / 40.0));
        // Counter zero point: values start at 10, slope 1/s, points from 5s
        // to 35s in a window 0..40; to_zero would be 30s*(10/30)=10s > 5s, so
        // extrapolate 5s both ways: 30 * 40/30.
        let high = series(5.0, 10.0, &[10.0, 20.0, 30.0, 40.0]);
        check("increase", &[], &high, 40.0, 40.0, Some(40.0));
        // Counter near zero: values start at 1, to_zero = 30*(1/30) = 1s < 5s.
        let low = series(5.0, 10.0, &[1.0, 11.0, 21.0, 31.0]);
        check("increase", &[], &low, 40.0, 40.0, Some(30.0 * 36.0 / 30.0));
        // delta has no zero limit and no reset handling.
        check("delta", &[], &low, 40.0, 40.0, Some(40.0));
        check(
            "delta",
            &[],
            &series(0.0, 300.0, &[200.0, 150.0, 100.0, 50.0, 0.0]),
            1200.0,
            1200.0,
            Some(-200.0),
        );
        // Negative first value: no zero limit.
        check(
            "increase",
            &[],
            &series(5.0, 10.0, &[-5.0, 5.0]),
            20.0,
            20.0,
            Some(20.0),
        );
        // Only the outer values and the drops count: an inner NaN is
        // ignored, an outer one propagates.
        let inner_nan = series(0.0, 10.0, &[1.0, NAN, 3.0]);
        check("rate", &[], &inner_nan, 20.0, 20.0, Some(0.1));
        let outer_nan = series(0.0, 10.0, &[1.0, 2.0, NAN]);
        check("rate", &[], &outer_nan, 20.0, 20.0, Some(NAN));
        // Inf: change is Inf, factor applies.
        check(
            "increase",
            &[],
            &series(0.0, 10.0, &[1.0, INF]),
            10.0,
            10.0,
            Some(INF),
        );
    }

    /// The zero-cutoff cases of Prometheus' test data: counters `s+240x10`
    /// sampled every 4m, rate over 20m at 10m (window -10m..10m).
    #[test]
    fn rate_zero_cutoff() {
        for (start, want) in [
            (0.0, 0.5),
            (60.0, 0.55),
            (120.0, 0.6),
            (180.0, 0.6),
            (300.0, 0.6),
        ] {
            let pts = series(0.0, 240.0, &[start, start + 240.0, start + 480.0]);
            check("rate", &[], &pts, 1200.0, 600.0, Some(want));
        }
        // Reset at the end of the window: 90 then 0 adds back 90.
        check(
            "rate",
            &[],
            &series(2700.0, 300.0, &[90.0, 0.0]),
            300.0,
            3000.0,
            Some(0.0),
        );
        // 0 1 2 3 2 3 4: the drop to 2 counts as a reset from 3.
        let pts = series(0.0, 300.0, &[0.0, 1.0, 2.0, 3.0, 2.0, 3.0, 4.0]);
        check("increase", &[], &pts, 1800.0, 1800.0, Some(7.0));
        // offset: the window is 40m..50m ending 5m before the evaluation.
        let pts = series(2100.0, 300.0, &[70.0, 80.0, 90.0]);
        check_at(
            "rate",
            &[],
            &pts,
            (2100.0, 2700.0, 3000.0),
            Some(20.0 / 600.0),
        );
    }

    /// Prometheus' arithmetic, step by step, without the reuse of the last
    /// geometry or the skipped zero-point division.
    fn direct_extrapolation(w: &RangeWindow<'_>, is_counter: bool, per_second: bool) -> f64 {
        let (first, last) = (w.points[0], w.points[w.points.len() - 1]);
        let mut change = last.v - first.v;
        if is_counter {
            let mut before = 0.0;
            for p in w.points {
                if p.v < before {
                    change += before;
                }
                before = p.v;
            }
        }
        let mut to_start = (first.t - w.start) as f64 / 1000.0;
        let mut to_end = (w.end - last.t) as f64 / 1000.0;
        let sampled = (last.t - first.t) as f64 / 1000.0;
        let average = sampled / (w.points.len() - 1) as f64;
        if to_start >= average * 1.1 {
            to_start = average / 2.0;
        }
        if is_counter && change > 0.0 && first.v >= 0.0 {
            let to_zero = sampled * (first.v / change);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
        if to_end >= average * 1.1 {
            to_end = average / 2.0;
        }
        let mut factor = (sampled + to_start + to_end) / sampled;
        if per_second {
            factor /= (w.end - w.start) as f64 / 1000.0;
        }
        change * factor
    }

    /// Reused geometries and the skipped division give the same bits as
    /// the direct arithmetic, over windows that repeat their geometry,
    /// counters near and far from zero, resets and jittered timestamps.
    #[test]
    fn extrapolation_matches_the_direct_arithmetic_to_the_bit() {
        let mut rng = strata_storage::encoding::synthetic::SplitMix64::new(0x9e37_79b9);
        let mut next = move || rng.next_u64();
        for case in 0..4000 {
            let n = 2 + (next() % 30) as usize;
            let interval = [1000, 15_000, 60_000][case % 3];
            let jitter = if case % 4 == 0 {
                0
            } else {
                (next() % 700) as i64
            };
            let mut v = [0.0, 0.5, 3.0, 1e9][(next() % 4) as usize];
            let slope = (next() % 1000) as f64 / 7.0;
            let points: Vec<Point> = (0..n)
                .map(|i| {
                    v += slope;
                    if next() % 50 == 0 {
                        v = (next() % 5) as f64;
                    }
                    Point {
                        t: 1_700_000_000_000 + i as i64 * interval + (next() % 3) as i64 * jitter,
                        v,
                    }
                })
                .collect();
            let (first, last) = (points[0].t, points[n - 1].t);
            let start = first - (next() % (2 * interval as u64)) as i64;
            let end = last + (next() % (2 * interval as u64)) as i64;
            let w = RangeWindow {
                points: &points,
                start,
                end,
                eval_time: end,
                drops: None,
            };
            for (is_counter, per_second) in [(true, true), (true, false), (false, false)] {
                // Twice: the second call reuses the geometry of the first.
                for _ in 0..2 {
                    let got = extrapolated_delta(&w, is_counter, per_second).expect("value");
                    let want = direct_extrapolation(&w, is_counter, per_second);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "case {case} counter {is_counter} per second {per_second}: \
                         {got} != {want} over {points:?} in {start}..{end}"
                    );
                }
            }
        }
    }

    #[test]
    fn irate_idelta() {
        let foo = series(
            0.0,
            300.0,
            &(0..=10).map(|i| i as f64 * 10.0).collect::<Vec<_>>(),
        );
        check("irate", &[], &foo, 3000.0, 3000.0, Some(10.0 / 300.0));
        check(
            "irate",
            &[],
            &series(0.0, 300.0, &[40.0, 50.0, 0.0]),
            600.0,
            600.0,
            Some(0.0),
        );
        check(
            "irate",
            &[],
            &series(0.0, 300.0, &[40.0, 50.0, 5.0]),
            600.0,
            600.0,
            Some(5.0 / 300.0),
        );
        check(
            "idelta",
            &[],
            &series(0.0, 300.0, &[0.0, 50.0, 100.0, 50.0]),
            900.0,
            900.0,
            Some(-50.0),
        );
        check("idelta", &[], &[(0.0, 1.0)], 60.0, 60.0, None);
        check("irate", &[], &[(0.0, 1.0)], 60.0, 60.0, None);
        check(
            "idelta",
            &[],
            &series(0.0, 1.0, &[1.0, NAN]),
            60.0,
            60.0,
            Some(NAN),
        );
    }

    #[test]
    fn deriv_and_predict_linear() {
        // Prometheus' worked example: 0+10x4 0+10x5 every 5m.
        let ys = [
            0.0, 10.0, 20.0, 30.0, 40.0, 0.0, 10.0, 20.0, 30.0, 40.0, 50.0,
        ];
        let pts = series(0.0, 300.0, &ys);
        check(
            "deriv",
            &[],
            &pts,
            6000.0,
            3000.0,
            Some(0.010606060606060607),
        );
        check(
            "predict_linear",
            &[3600.0],
            &pts,
            3000.0,
            3000.0,
            Some(76.81818181818181),
        );
        // Window pinned at 3000s by `@`, evaluated at 600s: predicts for 4200s.
        check_at(
            "predict_linear",
            &[3600.0],
            &pts,
            (0.0, 3000.0, 600.0),
            Some(51.36363636363637),
        );
        check_at(
            "predict_linear",
            &[3600.0],
            &pts,
            (0.0, 3000.0, 4200.0),
            Some(89.54545454545455),
        );
        // A line is fitted exactly.
        let line = series(
            0.0,
            300.0,
            &(0..=10).map(|i| i as f64 * 80.0).collect::<Vec<_>>(),
        );
        check("deriv", &[], &line, 3000.0, 3000.0, Some(80.0 / 300.0));
        // Constant series: slope 0, or NaN when constantly infinite.
        check(
            "deriv",
            &[],
            &series(0.0, 10.0, &[5.0, 5.0, 5.0]),
            60.0,
            60.0,
            Some(0.0),
        );
        check(
            "predict_linear",
            &[100.0],
            &series(0.0, 10.0, &[5.0, 5.0]),
            60.0,
            60.0,
            Some(5.0),
        );
        check(
            "deriv",
            &[],
            &series(0.0, 10.0, &[INF, INF]),
            60.0,
            60.0,
            Some(NAN),
        );
        check(
            "predict_linear",
            &[1.0],
            &series(0.0, 10.0, &[INF, INF]),
            60.0,
            60.0,
            Some(NAN),
        );
        check(
            "deriv",
            &[],
            &series(0.0, 10.0, &[1.0, NAN]),
            60.0,
            60.0,
            Some(NAN),
        );
        check("deriv", &[], &[(0.0, 1.0)], 60.0, 60.0, None);
        check("predict_linear", &[1.0], &[(0.0, 1.0)], 60.0, 60.0, None);
        // Large timestamps far from zero stay precise.
        let far = series(1.7e9, 15.0, &[1.0, 2.0, 3.0, 4.0]);
        check("deriv", &[], &far, 60.0, 1.7e9 + 45.0, Some(1.0 / 15.0));
    }

    #[test]
    fn holt_winters_smooths() {
        // Level and trend by hand for [1, 3, 4] with sf = tf = 0.5:
        // s1 = 1, b = 2; i=1: s = .5*3 + .5*(1+2) = 3;
        // i=2: b = .5*(3-1) + .5*2 = 2, s = .5*4 + .5*(3+2) = 4.5.
        let pts = series(0.0, 10.0, &[1.0, 3.0, 4.0]);
        check("holt_winters", &[0.5, 0.5], &pts, 60.0, 60.0, Some(4.5));
        check(
            "double_exponential_smoothing",
            &[0.5, 0.5],
            &pts,
            60.0,
            60.0,
            Some(4.5),
        );
        // A line stays a line.
        let line = series(0.0, 10.0, &[0.0, 10.0, 20.0, 30.0, 40.0]);
        check("holt_winters", &[0.01, 0.1], &line, 60.0, 60.0, Some(40.0));
        check("holt_winters", &[0.5, 0.5], &[(0.0, 1.0)], 60.0, 60.0, None);
        check("holt_winters", &[1.0, 0.5], &pts, 60.0, 60.0, None);
    }

    /// Values promtool computed for the points 1 3 4 8 2 9 7 (or NaN last)
    /// every 10s from 0s, evaluated at 70s.
    #[test]
    fn promtool_cross_checks() {
        let z = series(0.0, 10.0, &[1.0, 3.0, 4.0, 8.0, 2.0, 9.0, 7.0]);
        let y = series(0.0, 10.0, &[1.0, 3.0, 4.0, 8.0, 2.0, 9.0, NAN]);
        check(
            "holt_winters",
            &[0.3, 0.6],
            &z,
            70.0,
            70.0,
            Some(8.518078911999996),
        );
        check("deriv", &[], &z, 70.0, 70.0, Some(0.1));
        check(
            "predict_linear",
            &[100.0],
            &z,
            70.0,
            70.0,
            Some(18.857142857142858),
        );
        check("irate", &[], &z, 70.0, 70.0, Some(0.7));
        check(
            "quantile_over_time",
            &[0.3],
            &y,
            70.0,
            70.0,
            Some(1.7999999999999998),
        );
        check("changes", &[], &y, 70.0, 70.0, Some(6.0));
        check("resets", &[], &y, 70.0, 70.0, Some(1.0));
    }

    #[test]
    fn holt_winters_arguments() {
        fn check(args: &[f64], want: Result<(), ArgError>) {
            assert_eq!(validate_args("holt_winters", args), want, "{args:?}");
        }
        check(&[0.5, 0.5], Ok(()));
        check(&[0.0, 0.5], Err(ArgError::SmoothingFactor(0.0)));
        check(&[1.0, 0.5], Err(ArgError::SmoothingFactor(1.0)));
        check(&[0.5, 1.0], Err(ArgError::TrendFactor(1.0)));
        check(&[0.5, -0.1], Err(ArgError::TrendFactor(-0.1)));
        assert!(validate_args("holt_winters", &[NAN, 0.5]).is_err());
        check(
            &[0.5],
            Err(ArgError::Count {
                name: "holt_winters".into(),
                want: 2,
                got: 1,
            }),
        );
        assert_eq!(
            ArgError::SmoothingFactor(1.0).to_string(),
            "invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000"
        );
        assert_eq!(validate_args("rate", &[]), Ok(()));
        assert_eq!(validate_args("quantile_over_time", &[2.0]), Ok(()));
    }

    #[test]
    fn changes_and_resets() {
        let pts = series(0.0, 1.0, &[1.0, 1.0, 2.0, NAN, NAN, 2.0, 1.0]);
        // 1→2, 2→NaN, NaN→2, 2→1; NaN→NaN is no change.
        check("changes", &[], &pts, 10.0, 10.0, Some(4.0));
        check("resets", &[], &pts, 10.0, 10.0, Some(1.0));
        check("changes", &[], &[(0.0, 1.0)], 10.0, 10.0, Some(0.0));
        check("resets", &[], &[(0.0, 1.0)], 10.0, 10.0, Some(0.0));
        check("changes", &[], &[], 10.0, 10.0, None);
        check(
            "resets",
            &[],
            &series(0.0, 1.0, &[5.0, 4.0, 3.0]),
            10.0,
            10.0,
            Some(2.0),
        );
    }

    #[test]
    fn over_time_aggregations() {
        let pts = series(0.0, 1.0, &[1.0, 2.0, 3.0, 4.0]);
        check("avg_over_time", &[], &pts, 10.0, 10.0, Some(2.5));
        check("sum_over_time", &[], &pts, 10.0, 10.0, Some(10.0));
        check("count_over_time", &[], &pts, 10.0, 10.0, Some(4.0));
        check("min_over_time", &[], &pts, 10.0, 10.0, Some(1.0));
        check("max_over_time", &[], &pts, 10.0, 10.0, Some(4.0));
        check("last_over_time", &[], &pts, 10.0, 10.0, Some(4.0));
        check("present_over_time", &[], &pts, 10.0, 10.0, Some(1.0));
        check("stdvar_over_time", &[], &pts, 10.0, 10.0, Some(1.25));
        check(
            "stddev_over_time",
            &[],
            &pts,
            10.0,
            10.0,
            Some(1.25f64.sqrt()),
        );
        check(
            "mad_over_time",
            &[],
            &series(0.0, 1.0, &[1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]),
            10.0,
            10.0,
            Some(1.0),
        );
        for name in [
            "avg_over_time",
            "sum_over_time",
            "count_over_time",
            "min_over_time",
            "max_over_time",
            "last_over_time",
            "present_over_time",
            "stddev_over_time",
            "stdvar_over_time",
            "mad_over_time",
        ] {
            check(name, &[], &[], 10.0, 10.0, None);
        }
        // Kahan: 1 + 1e100 + 1 - 1e100.
        let big = series(0.0, 1.0, &[1.0, 1e100, 1.0, -1e100]);
        check("sum_over_time", &[], &big, 10.0, 10.0, Some(2.0));
        // Overflow-free mean of huge values.
        check(
            "avg_over_time",
            &[],
            &series(0.0, 1.0, &[f64::MAX, f64::MAX]),
            10.0,
            10.0,
            Some(f64::MAX),
        );
        let near_max = 9.988_465_674_311_58e307;
        check(
            "avg_over_time",
            &[],
            &series(0.0, 1.0, &[-near_max; 3]),
            10.0,
            10.0,
            Some(-near_max),
        );
        check(
            "avg_over_time",
            &[],
            &series(0.0, 1.0, &[-near_max, near_max]),
            10.0,
            10.0,
            Some(0.0),
        );
        check(
            "stdvar_over_time",
            &[],
            &series(0.0, 1.0, &[0.0, 8.0, 8.0, 2.0, 3.0]),
            10.0,
            10.0,
            Some(10.56),
        );
        let same = 1.5990505637277868;
        check(
            "stdvar_over_time",
            &[],
            &series(0.0, 1.0, &[same; 3]),
            10.0,
            10.0,
            Some(0.0),
        );
        // Infinities.
        check(
            "avg_over_time",
            &[],
            &series(0.0, 1.0, &[1.0, 2.0, 3.0, 4.0, INF]),
            10.0,
            10.0,
            Some(INF),
        );
        check(
            "avg_over_time",
            &[],
            &series(0.0, 1.0, &[INF, 0.0, INF]),
            10.0,
            10.0,
            Some(INF),
        );
        check(
            "avg_over_time",
            &[],
            &series(0.0, 1.0, &[INF, -INF]),
            10.0,
            10.0,
            Some(NAN),
        );
        check(
            "avg_over_time",
            &[],
            &series(0.0, 1.0, &[-INF, 0.0, -INF]),
            10.0,
            10.0,
            Some(-INF),
        );
        check(
            "sum_over_time",
            &[],
            &series(0.0, 1.0, &[1.0, INF]),
            10.0,
            10.0,
            Some(INF),
        );
        // NaN: min/max skip it unless all are NaN.
        let some_nan = series(0.0, 1.0, &[NAN, 0.0, 1.0]);
        check("min_over_time", &[], &some_nan, 10.0, 10.0, Some(0.0));
        check("max_over_time", &[], &some_nan, 10.0, 10.0, Some(1.0));
        check(
            "max_over_time",
            &[],
            &series(0.0, 1.0, &[2.0, NAN, 1.0]),
            10.0,
            10.0,
            Some(2.0),
        );
        check(
            "max_over_time",
            &[],
            &series(0.0, 1.0, &[2.0, 0.0, NAN]),
            10.0,
            10.0,
            Some(2.0),
        );
        check(
            "min_over_time",
            &[],
            &series(0.0, 1.0, &[NAN, NAN]),
            10.0,
            10.0,
            Some(NAN),
        );
        check("sum_over_time", &[], &some_nan, 10.0, 10.0, Some(NAN));
        check("avg_over_time", &[], &some_nan, 10.0, 10.0, Some(NAN));
        check("stddev_over_time", &[], &some_nan, 10.0, 10.0, Some(NAN));
        check(
            "stddev_over_time",
            &[],
            &[(0.0, 7.0)],
            10.0,
            10.0,
            Some(0.0),
        );
        check("last_over_time", &[], &some_nan, 10.0, 10.0, Some(1.0));
    }

    #[test]
    fn quantile_over_time_table() {
        let pts = series(0.0, 1.0, &[0.0, 1.0, 2.0, 3.0]);
        check("quantile_over_time", &[0.5], &pts, 10.0, 10.0, Some(1.5));
        check("quantile_over_time", &[0.75], &pts, 10.0, 10.0, Some(2.25));
        check("quantile_over_time", &[0.0], &pts, 10.0, 10.0, Some(0.0));
        check("quantile_over_time", &[1.0], &pts, 10.0, 10.0, Some(3.0));
        check("quantile_over_time", &[-1.0], &pts, 10.0, 10.0, Some(-INF));
        check("quantile_over_time", &[2.0], &pts, 10.0, 10.0, Some(INF));
        check("quantile_over_time", &[NAN], &pts, 10.0, 10.0, Some(NAN));
        check("quantile_over_time", &[0.5], &[], 10.0, 10.0, None);
        check("quantile_over_time", &[], &pts, 10.0, 10.0, None);
    }
}
