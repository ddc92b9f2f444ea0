//! The math of PromQL's float functions, apart from evaluation: each takes
//! plain points and numbers and returns numbers, so each is table-tested
//! alone. The evaluator (`engine`) selects the windows, evaluates the
//! arguments, keeps or drops labels, and calls in here.
//!
//! - `range`: functions over a range vector window (`rate`, `*_over_time`,
//!   ...): `lookup`, `arg_count`, `validate_args` (the `holt_winters`
//!   factors; the query fails on `Err`).
//! - `elementwise`: functions of one float (`abs`, `clamp`, `day_of_month`,
//!   ...): `lookup`, `arg_count`, `produces_output` (false for `clamp` with
//!   `min > max`: the call's result is empty).
//! - `labels`: `label_replace` (`Replace` compiles once per call),
//!   `label_join` (`validate_label_join` once, then `join` per series).
//! - `histogram`: `histogram_quantile` over classic buckets
//!   (`bucket_quantile`, `parse_le`).
//! - `stats`: quantile, compensated sums, streaming mean and variance, for
//!   functions and aggregations alike.
//!
//! What stays with the evaluator: `pi()`, `time()`, `timestamp()`,
//! `vector()`, `scalar()`, `absent*()`, `sort*()`, dropping `__name__`
//! (kept by `last_over_time` only), and the duplicate label set check.

pub mod elementwise;
pub mod histogram;
pub mod labels;
pub mod range;
pub mod stats;

use super::value::Point;

/// The points of one series inside a range selector's window at one
/// evaluation step, with the window's bounds (after `offset` and `@`).
#[derive(Clone, Copy, Debug)]
pub struct RangeWindow<'a> {
    /// Points with `start <= t <= end`, in time order, stale markers removed.
    pub points: &'a [Point],
    /// First millisecond of the window: evaluation time - range - offset.
    pub start: i64,
    /// Last millisecond of the window: evaluation time - offset.
    pub end: i64,
    /// The evaluation step's own timestamp in milliseconds, before `offset`
    /// and `@` move the window: `predict_linear` extrapolates from it
    /// (`predict_linear(x[5m] @ 3000, 60)` evaluated at 600s predicts for
    /// 660s from a regression over the window ending at 3000s).
    pub eval_time: i64,
    /// How many points are lower than the point before them (counter
    /// resets), when the evaluator counted them once for the whole series
    /// (see [`range::counts_drops`]); `None`: not counted, the function
    /// looks at the points itself.
    pub drops: Option<usize>,
}

/// A function of a range vector window and scalar arguments (in call order,
/// without the range vector itself: `quantile_over_time(0.9, x[5m])` gets
/// `[0.9]`). `None`: no output sample for this series at this step (an
/// empty window, too few points, or arguments that `range::validate_args`
/// rejects).
pub type RangeFunction = fn(window: &RangeWindow<'_>, args: &[f64]) -> Option<f64>;

/// A function of one float and scalar arguments in call order after the
/// vector (`clamp(v, min, max)` gets `v` and `[min, max]`).
pub type ElementwiseFunction = fn(v: f64, args: &[f64]) -> f64;
