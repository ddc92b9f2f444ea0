//! The evaluator: walks a parsed expression over a grid of steps, the way
//! Prometheus does. An instant query is a grid of one step. Every instant
//! vector is held as series with points at the steps where they have a value,
//! so operators and functions run step by step over the whole grid, and each
//! selector reads storage once for the whole query range.

use std::sync::{Arc, mpsc};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PromMatchOp;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};
use strata_storage::{METRIC_NAME_LABEL, MatchOp, Matcher, SeriesData, TimeRange, is_stale_nan};

use super::call::SeriesSink;
use super::engine::{QueryError, QueryStats};
use super::functions::RangeWindow;
use super::hash::{FastMap, FastSet, map_with_capacity};
use super::value::{Labels, Point};
use crate::source::SeriesStream;

/// A label set shared by the points of a series and by the per-step
/// elements built from it, so steps do not copy labels.
pub(crate) type Shared = Arc<Labels>;

/// The evaluation grid: `start`, `start + step`, ... up to `end` (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Steps {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Steps {
    pub fn count(&self) -> usize {
        if self.end < self.start || self.step <= 0 {
            0
        } else {
            ((self.end - self.start) / self.step) as usize + 1
        }
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// The index of the step at `t`, which must be a step's timestamp.
    pub fn index(&self, t: i64) -> usize {
        ((t - self.start) / self.step) as usize
    }

    /// The index of the first step at or after `t`: `count()` when none is.
    pub fn first_at_or_after(&self, t: i64) -> usize {
        if t <= self.start {
            return 0;
        }
        let i = (t - self.start + self.step - 1) / self.step;
        (i as usize).min(self.count())
    }

    /// How many steps lie in `[lo, hi]`.
    pub fn count_within(&self, lo: i64, hi: i64) -> usize {
        let lo = lo.max(self.start);
        let hi = hi.min(self.end);
        if hi < lo || self.step <= 0 {
            return 0;
        }
        let first = (lo - self.start + self.step - 1) / self.step;
        let last = (hi - self.start) / self.step;
        (last - first + 1).max(0) as usize
    }
}

/// A series and its points: at step timestamps for instant vectors, at
/// sample timestamps for raw and range data.
#[derive(Clone, Debug)]
pub(crate) struct StepSeries {
    pub labels: Shared,
    pub points: Vec<Point>,
}

/// The value of an expression over the whole grid.
#[derive(Debug)]
pub(crate) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    String(String),
    /// An instant vector at every step.
    Vector(Vec<StepSeries>),
    /// A range vector; only at a one-step grid (instant queries).
    Matrix(Vec<StepSeries>),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::String(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }

    /// Points held, for the samples limit.
    pub fn samples(&self) -> usize {
        match self {
            Val::Scalar(v) => v.len(),
            Val::String(_) => 0,
            Val::Vector(s) | Val::Matrix(s) => s.iter().map(|s| s.points.len()).sum(),
        }
    }
}

/// One element of an instant vector at one step.
#[derive(Clone, Debug)]
pub(crate) struct Elem {
    pub labels: Shared,
    pub v: f64,
}

/// An argument of a per-step operation at one step.
#[derive(Debug)]
pub(crate) enum Arg {
    Scalar(f64),
    Vector(Vec<Elem>),
    String(String),
}

impl Arg {
    pub fn scalar(&self) -> f64 {
        match self {
            Arg::Scalar(v) => *v,
            _ => f64::NAN,
        }
    }

    pub fn take_vector(&mut self) -> Vec<Elem> {
        match self {
            Arg::Vector(v) => std::mem::take(v),
            _ => Vec::new(),
        }
    }
}

/// Where the windows of a range vector sit: their width, and the offset and
/// `@` time that move them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowShape {
    pub range: i64,
    pub offset: i64,
    pub at: Option<i64>,
}

impl WindowShape {
    /// Last millisecond of the window at step `ts`.
    pub fn window_end(&self, ts: i64) -> i64 {
        self.at.unwrap_or(ts) - self.offset
    }

    /// The most steps at which a series with `points` can have a non-empty
    /// window.
    pub fn window_steps(&self, points: &[Point], steps: Steps) -> usize {
        match (self.at, points.first(), points.last()) {
            (Some(_), _, _) => steps.count(),
            (None, Some(first), Some(last)) => {
                steps.count_within(first.t + self.offset, last.t + self.offset + self.range)
            }
            _ => 0,
        }
    }
}

/// Slides the windows of a [`WindowShape`] over one series after another,
/// keeping its scratch space from series to series.
#[derive(Default)]
pub(crate) struct Walker {
    /// Count the counter resets of each window (see
    /// `functions::range::counts_drops`).
    pub count_drops: bool,
    fresh: Vec<Point>,
    /// drops_until[k]: points in 1..=k lower than the one before them.
    drops_until: Vec<u32>,
}

impl Walker {
    pub fn new(count_drops: bool) -> Walker {
        Walker {
            count_drops,
            ..Walker::default()
        }
    }

    /// Calls `f(step index, window)` at every step whose window holds
    /// points of one series (never for an empty window, as the range
    /// functions' contract asks), moving the window's bounds forward instead
    /// of searching, and skipping the steps before the series' first point
    /// and after its last.
    pub fn walk(
        &mut self,
        shape: &WindowShape,
        series: &[Point],
        steps: Steps,
        f: impl FnMut(usize, &RangeWindow<'_>) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        // Stale markers never count in a window; most series have none, so
        // they are read in place.
        if series.iter().any(|p| is_stale_nan(p.v)) {
            let mut fresh = std::mem::take(&mut self.fresh);
            fresh.clear();
            fresh.extend(series.iter().filter(|p| !is_stale_nan(p.v)));
            let walked = self.walk_fresh(shape, &fresh, steps, f);
            self.fresh = fresh;
            walked
        } else {
            self.walk_fresh(shape, series, steps, f)
        }
    }

    /// `walk` over points without stale markers.
    pub fn walk_fresh(
        &mut self,
        shape: &WindowShape,
        points: &[Point],
        steps: Steps,
        mut f: impl FnMut(usize, &RangeWindow<'_>) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let drops_until = &mut self.drops_until;
        if self.count_drops {
            drops_until.clear();
            drops_until.push(0);
            let mut drops = 0;
            for pair in points.windows(2) {
                drops += u32::from(pair[1].v < pair[0].v);
                drops_until.push(drops);
            }
        }
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return Ok(());
        };
        // Windows reach points only from the step whose window ends at the
        // first point to the one whose window starts at the last.
        let (from, to) = match shape.at {
            Some(_) => (0, steps.count()),
            None => (
                steps.first_at_or_after(first.t + shape.offset),
                steps.first_at_or_after(last.t + shape.offset + shape.range + 1),
            ),
        };
        let (mut lo, mut hi) = (0, 0);
        for i in from..to {
            let ts = steps.ts(i);
            let end = shape.window_end(ts);
            let start = end - shape.range;
            while hi < points.len() && points[hi].t <= end {
                hi += 1;
            }
            while lo < hi && points[lo].t < start {
                lo += 1;
            }
            if lo == hi {
                continue;
            }
            let window = RangeWindow {
                points: &points[lo..hi],
                start,
                end,
                eval_time: ts,
                drops: self
                    .count_drops
                    .then(|| (drops_until[hi - 1] - drops_until[lo]) as usize),
            };
            f(i, &window)?;
        }
        Ok(())
    }
}

/// Range-vector input of a function: raw samples (stale markers included)
/// or a subquery's points, with the windows' shape.
pub(crate) struct MatrixData {
    pub series: Vec<StepSeries>,
    pub shape: WindowShape,
}

impl MatrixData {
    /// Calls `f(series index, step index, window)` for every series and step.
    pub fn for_each_window(
        &self,
        steps: Steps,
        deadline: Instant,
        count_drops: bool,
        mut f: impl FnMut(usize, usize, &RangeWindow<'_>) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let mut walker = Walker::new(count_drops);
        for (si, series) in self.series.iter().enumerate() {
            if si % 256 == 0 && Instant::now() > deadline {
                return Err(QueryError::Timeout("expression evaluation"));
            }
            walker.walk(&self.shape, &series.points, steps, |i, w| f(si, i, w))?;
        }
        Ok(())
    }
}

/// The range-vector argument of a function: a selector whose series can be
/// read and used one at a time, or data already evaluated (a subquery).
pub(crate) enum RangeArg<'e> {
    Selector {
        vs: &'e VectorSelector,
        shape: WindowShape,
        /// The span of samples to read.
        lo: i64,
        hi: i64,
    },
    Data(MatrixData),
}

/// Series read in line before a selector's reading moves to a second
/// thread, and per message between that thread and the evaluation: enough
/// to make the channel's cost per series small.
const READ_AHEAD_SERIES: usize = 64;
/// Messages the reading thread may be ahead by.
const READ_AHEAD_BATCHES: usize = 4;

/// What a selector's reading needs from series to series: turns storage's
/// answers into series on the query's terms (range cut, labels shared,
/// limits counted).
pub(crate) struct Intake<'v> {
    vs: &'v VectorSelector,
    lo: i64,
    hi: i64,
    check_seen: bool,
    seen: FastSet<Shared>,
    count: usize,
}

impl Intake<'_> {
    /// The series of `data` within the selector's range, counted against
    /// the limits, its samples left in the source's columns; `None` when it
    /// has no sample there or was seen before.
    fn take(
        &mut self,
        ev: &mut Evaluator<'_>,
        data: SeriesData,
    ) -> Result<Option<RawSeries>, QueryError> {
        let SeriesData {
            mut labels,
            timestamps,
            values,
        } = data;
        // Sources answer labels sorted by name, and names are unique within
        // a set: comparing names alone is enough to tell.
        if !labels.windows(2).all(|w| w[0].name < w[1].name) {
            labels.sort();
        }
        let labels = Arc::new(labels);
        if self.check_seen && self.seen.contains(&labels) {
            return Ok(None);
        }
        // Samples come in time order.
        let from = timestamps.partition_point(|t| *t < self.lo);
        let to = timestamps
            .partition_point(|t| *t <= self.hi)
            .min(values.len());
        if to <= from {
            return Ok(None);
        }
        let samples = to - from;
        ev.stats.series_loaded += 1;
        ev.stats.samples_loaded += samples as u64;
        ev.hold(samples)?;
        if self.check_seen {
            self.seen.insert(labels.clone());
        }
        self.count += 1;
        if ev.max_series > 0 && self.count > ev.max_series {
            return Err(QueryError::Limit(format!(
                "the selector {} matches more than {} series (limit --query.max-series)",
                self.vs, ev.max_series
            )));
        }
        Ok(Some(RawSeries {
            labels,
            timestamps,
            values,
            from,
            to,
        }))
    }
}

/// A series as the source answered it, its samples in columns: those at
/// `from..to` lie in the selector's range and are held against the limits.
pub(crate) struct RawSeries {
    pub labels: Shared,
    timestamps: Vec<i64>,
    values: Vec<f64>,
    from: usize,
    to: usize,
}

impl RawSeries {
    /// Samples held.
    pub fn len(&self) -> usize {
        self.to - self.from
    }

    /// The held samples as points.
    fn points(&self) -> impl Iterator<Item = Point> + '_ {
        let range = self.from..self.to;
        self.timestamps[range.clone()]
            .iter()
            .zip(&self.values[range])
            .map(|(t, v)| Point { t: *t, v: *v })
    }

    pub fn into_step_series(self) -> StepSeries {
        let points = self.points().collect();
        StepSeries {
            labels: self.labels,
            points,
        }
    }

    /// Replaces `points` with the samples, stale markers left out (no
    /// window counts them).
    pub fn fresh_points_into(&self, points: &mut Vec<Point>) {
        points.clear();
        points.extend(self.points().filter(|p| !is_stale_nan(p.v)));
    }
}

/// Per-query evaluation state: limits, counters and warnings.
pub(crate) struct Evaluator<'a> {
    pub source: &'a dyn crate::source::Source,
    pub lookback: i64,
    pub max_series: usize,
    pub max_samples: usize,
    pub deadline: Instant,
    /// Start and end of the query, for `@ start()` and `@ end()`.
    pub query_start: i64,
    pub query_end: i64,
    /// Step of subqueries written without one (`x[5m:]`).
    pub subquery_step: i64,
    pub current_samples: usize,
    pub stats: QueryStats,
    pub warnings: Vec<String>,
    /// A selector read a partial answer (storage nodes missing).
    pub partial: bool,
    /// See [`EngineOptions::read_ahead`](super::engine::EngineOptions).
    pub read_ahead: bool,
}

impl Evaluator<'_> {
    /// Counts `n` more samples in memory against the limit.
    pub fn hold(&mut self, n: usize) -> Result<(), QueryError> {
        self.current_samples += n;
        self.stats.peak_samples = self.stats.peak_samples.max(self.current_samples as u64);
        if self.max_samples > 0 && self.current_samples > self.max_samples {
            return Err(QueryError::Limit(format!(
                "query processing would load too many samples into memory in query execution: \
                 more than {} samples (limit --query.max-samples)",
                self.max_samples
            )));
        }
        Ok(())
    }

    pub fn release(&mut self, n: usize) {
        self.current_samples = self.current_samples.saturating_sub(n);
    }

    pub fn check_deadline(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout("expression evaluation"));
        }
        Ok(())
    }

    /// Evaluates `expr` and hands the series of its instant vector to
    /// `sink` one at a time, in order (see [`SeriesSink`] for what is
    /// held); a range function's result is never gathered whole. A value
    /// of another type is returned instead.
    pub fn eval_each(
        &mut self,
        expr: &Expr,
        steps: Steps,
        sink: &mut SeriesSink<'_>,
    ) -> Result<Option<Val>, QueryError> {
        let val = match expr {
            Expr::Paren(p) => return self.eval_each(&p.expr, steps, sink),
            Expr::Call(c) => match super::call::eval_each(self, c, steps, sink)? {
                Some(val) => val,
                None => return Ok(None),
            },
            other => self.eval(other, steps)?,
        };
        match val {
            Val::Vector(series) => {
                for s in series {
                    sink(self, s)?;
                }
                Ok(None)
            }
            other => Ok(Some(other)),
        }
    }

    /// Evaluates `expr` at every step of `steps`.
    pub fn eval(&mut self, expr: &Expr, steps: Steps) -> Result<Val, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => {
                let v = vec![n.val; steps.count()];
                self.hold(v.len())?;
                Ok(Val::Scalar(v))
            }
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, steps),
            Expr::Unary(u) => {
                let val = self.eval(&u.expr, steps)?;
                match val {
                    Val::Scalar(mut v) => {
                        v.iter_mut().for_each(|x| *x = -*x);
                        Ok(Val::Scalar(v))
                    }
                    Val::Vector(mut series) => {
                        for s in &mut series {
                            strip_name(&mut s.labels);
                            s.points.iter_mut().for_each(|p| p.v = -p.v);
                        }
                        check_unique_labelsets(&series)?;
                        Ok(Val::Vector(series))
                    }
                    other => Err(QueryError::BadData(format!(
                        "unary minus is not defined on a {}",
                        other.type_name()
                    ))),
                }
            }
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.vector_selector(vs, steps, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let data = self.matrix_arg(expr, steps)?;
                let mut out = Vec::new();
                let mut held = 0;
                data.for_each_window(steps, self.deadline, false, |si, _, w| {
                    if !w.points.is_empty() {
                        held += w.points.len();
                        out.push(StepSeries {
                            labels: data.series[si].labels.clone(),
                            points: w.points.to_vec(),
                        });
                    }
                    Ok(())
                })?;
                self.release(data.series.iter().map(|s| s.points.len()).sum());
                self.hold(held)?;
                Ok(Val::Matrix(out))
            }
            Expr::Binary(b) => super::binary::eval(self, b, steps),
            Expr::Aggregate(a) => super::aggregate::eval(self, a, steps),
            Expr::Call(c) => super::call::eval(self, c, steps),
            Expr::Extension(_) => Err(QueryError::BadData(
                "extension expressions are not supported".into(),
            )),
        }
    }

    /// Evaluates `expr` and requires an instant vector.
    pub fn eval_vector(
        &mut self,
        expr: &Expr,
        steps: Steps,
    ) -> Result<Vec<StepSeries>, QueryError> {
        match self.eval(expr, steps)? {
            Val::Vector(v) => Ok(v),
            other => Err(QueryError::BadData(format!(
                "expected type instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `expr` and requires a scalar.
    pub fn eval_scalar(&mut self, expr: &Expr, steps: Steps) -> Result<Vec<f64>, QueryError> {
        match self.eval(expr, steps)? {
            Val::Scalar(v) => Ok(v),
            other => Err(QueryError::BadData(format!(
                "expected type scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// The value of an instant vector selector at every step; with
    /// `sample_time` the value is the chosen sample's timestamp in seconds
    /// (what `timestamp()` of a selector answers).
    pub fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        steps: Steps,
        sample_time: bool,
    ) -> Result<Vec<StepSeries>, QueryError> {
        let offset = offset_ms(&vs.offset);
        let at = self.at_ms(&vs.at);
        let (lo, hi) = match at {
            Some(at) => (at - offset - self.lookback, at - offset),
            None => (steps.start - offset - self.lookback, steps.end - offset),
        };
        let lookback = self.lookback;
        let mut out = Vec::new();
        // Each series is turned into its values at the steps as it is read,
        // and its raw samples dropped; ahead on a second thread when there
        // are many steps.
        self.stream(vs, lo, hi, steps.count() > 1, |ev, series| {
            let pts = &series.points;
            let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
                return Ok(());
            };
            // Only steps from the first point to the last plus the lookback
            // can see a sample.
            let (from, to) = match at {
                Some(_) => (0, steps.count()),
                None => (
                    steps.first_at_or_after(first.t + offset),
                    steps.first_at_or_after(last.t + offset + lookback + 1),
                ),
            };
            let mut points = Vec::with_capacity(to.saturating_sub(from));
            let mut j = 0;
            for i in from..to {
                let ts = steps.ts(i);
                let reference = at.unwrap_or(ts) - offset;
                while j < pts.len() && pts[j].t <= reference {
                    j += 1;
                }
                if j == 0 {
                    continue;
                }
                let p = pts[j - 1];
                if p.t < reference - lookback || is_stale_nan(p.v) {
                    continue;
                }
                let v = if sample_time {
                    p.t as f64 / 1000.0
                } else {
                    p.v
                };
                points.push(Point { t: ts, v });
            }
            ev.release(pts.len());
            if !points.is_empty() {
                ev.hold(points.len())?;
                out.push(StepSeries {
                    labels: series.labels,
                    points,
                });
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The range-vector argument `expr` (a matrix selector or a subquery,
    /// maybe in parentheses) with its data for every step of `steps`.
    pub fn matrix_arg(&mut self, expr: &Expr, steps: Steps) -> Result<MatrixData, QueryError> {
        match expr {
            Expr::Paren(p) => self.matrix_arg(&p.expr, steps),
            Expr::MatrixSelector(_) => match self.range_arg(expr, steps)? {
                RangeArg::Selector { vs, shape, lo, hi } => Ok(MatrixData {
                    series: self.load(vs, lo, hi)?,
                    shape,
                }),
                RangeArg::Data(data) => Ok(data),
            },
            Expr::Subquery(sq) => self.subquery(sq, steps),
            other => Err(QueryError::BadData(format!(
                "expected type range vector, got {}",
                value_type_name(other)
            ))),
        }
    }

    /// The range-vector argument `expr` of a function, a selector left
    /// unread so that its series can be taken one at a time.
    pub fn range_arg<'e>(
        &mut self,
        expr: &'e Expr,
        steps: Steps,
    ) -> Result<RangeArg<'e>, QueryError> {
        match expr {
            Expr::Paren(p) => self.range_arg(&p.expr, steps),
            Expr::MatrixSelector(ms) => {
                let offset = offset_ms(&ms.vs.offset);
                let at = self.at_ms(&ms.vs.at);
                let range = ms.range.as_millis() as i64;
                let (lo, hi) = match at {
                    Some(at) => (at - offset - range, at - offset),
                    None => (steps.start - offset - range, steps.end - offset),
                };
                Ok(RangeArg::Selector {
                    vs: &ms.vs,
                    shape: WindowShape { range, offset, at },
                    lo,
                    hi,
                })
            }
            other => Ok(RangeArg::Data(self.matrix_arg(other, steps)?)),
        }
    }

    /// Evaluates a subquery's inner expression on its own grid: steps at
    /// absolute multiples of the subquery step, covering every window the
    /// outer steps need.
    fn subquery(&mut self, sq: &SubqueryExpr, steps: Steps) -> Result<MatrixData, QueryError> {
        let offset = offset_ms(&sq.offset);
        let at = self.at_ms(&sq.at);
        let range = sq.range.as_millis() as i64;
        let step = match sq.step {
            Some(s) if !s.is_zero() => s.as_millis() as i64,
            _ => self.subquery_step,
        };
        if step <= 0 {
            return Err(QueryError::BadData("subquery step must be positive".into()));
        }
        let (first_end, last_end) = match at {
            Some(at) => (at - offset, at - offset),
            None => (steps.start - offset, steps.end - offset),
        };
        let lowest = first_end - range;
        let mut start = step * lowest.div_euclid(step);
        if start < lowest {
            start += step;
        }
        let inner = Steps {
            start,
            end: last_end,
            step,
        };
        let series = match self.eval(&sq.expr, inner)? {
            Val::Vector(v) => v,
            Val::Scalar(vals) => {
                let points = vals
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Point {
                        t: inner.ts(i),
                        v: *v,
                    })
                    .collect();
                vec![StepSeries {
                    labels: Arc::new(Vec::new()),
                    points,
                }]
            }
            other => {
                return Err(QueryError::BadData(format!(
                    "subquery is only allowed on instant vector, got {}",
                    other.type_name()
                )));
            }
        };
        Ok(MatrixData {
            series,
            shape: WindowShape { range, offset, at },
        })
    }

    /// Reads the series of `vs` with samples in `[lo, hi]`, counting them
    /// against the limits as they stream in.
    pub fn load(
        &mut self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<StepSeries>, QueryError> {
        let mut out = Vec::new();
        self.stream(vs, lo, hi, false, |_, series| {
            out.push(series);
            Ok(())
        })?;
        Ok(out)
    }

    /// Hands the series of `vs` with samples in `[lo, hi]` to `f` one at a
    /// time, as they are read. Their samples count as held when `f` gets
    /// them; `f` releases what it drops. With `read_ahead` (and the engine's
    /// `read_ahead` option), once a batch of series has gone through `f`, a
    /// second thread reads and decodes the rest from storage while `f` works
    /// on the ones already read: worth it when `f` has real work per series
    /// (windows at many steps), and small selections never start a thread.
    pub fn stream(
        &mut self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
        read_ahead: bool,
        mut f: impl FnMut(&mut Self, StepSeries) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        self.stream_raw(vs, lo, hi, read_ahead, |ev, raw| {
            f(ev, raw.into_step_series())
        })
    }

    /// `stream`, handing on each series with its samples in the source's
    /// columns.
    pub fn stream_raw(
        &mut self,
        vs: &VectorSelector,
        lo: i64,
        hi: i64,
        read_ahead: bool,
        mut f: impl FnMut(&mut Self, RawSeries) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let alternatives = matchers_of(vs)?;
        let mut intake = Intake {
            vs,
            lo,
            hi,
            // A source answers each label set once per select, so only the
            // alternatives of `or` matchers can repeat one.
            check_seen: alternatives.len() > 1,
            seen: FastSet::default(),
            count: 0,
        };
        let read_ahead = read_ahead && self.read_ahead;
        for matchers in &alternatives {
            let selected = self
                .source
                .select(matchers, TimeRange::new(lo, hi), self.deadline)?;
            self.warnings.extend(selected.warnings);
            self.partial |= selected.partial;
            let mut series = selected.series;
            let mut in_line = 0;
            loop {
                if read_ahead && in_line == READ_AHEAD_SERIES {
                    self.read_ahead(series, &mut intake, &mut f)?;
                    break;
                }
                let Some(item) = series.next() else {
                    break;
                };
                in_line += 1;
                self.check_deadline()?;
                if let Some(series) = intake.take(self, item?)? {
                    f(self, series)?;
                }
            }
            // The stream ended: what the source found meanwhile is known.
            let (warnings, partial) = selected.late.take();
            self.warnings.extend(warnings);
            self.partial |= partial;
        }
        Ok(())
    }

    /// Hands the rest of `series` to `f` through `intake`, read on a second
    /// thread a few batches ahead.
    fn read_ahead(
        &mut self,
        mut series: SeriesStream,
        intake: &mut Intake<'_>,
        mut f: impl FnMut(&mut Self, RawSeries) -> Result<(), QueryError>,
    ) -> Result<(), QueryError> {
        let deadline = self.deadline;
        std::thread::scope(|scope| {
            let (sender, batches) = mpsc::sync_channel::<Vec<SeriesData>>(READ_AHEAD_BATCHES);
            let reader = scope.spawn(move || -> Result<(), QueryError> {
                let mut batch = Vec::with_capacity(READ_AHEAD_SERIES);
                for item in series.by_ref() {
                    if Instant::now() > deadline {
                        return Err(QueryError::Timeout("expression evaluation"));
                    }
                    batch.push(item?);
                    if batch.len() == READ_AHEAD_SERIES {
                        let full =
                            std::mem::replace(&mut batch, Vec::with_capacity(READ_AHEAD_SERIES));
                        // The evaluation gave up: nothing more to read.
                        if sender.send(full).is_err() {
                            return Ok(());
                        }
                    }
                }
                if !batch.is_empty() {
                    // Nobody to tell if the evaluation gave up meanwhile.
                    let _ = sender.send(batch);
                }
                Ok(())
            });
            let mut consume = || {
                for batch in &batches {
                    for data in batch {
                        self.check_deadline()?;
                        if let Some(series) = intake.take(self, data)? {
                            f(self, series)?;
                        }
                    }
                }
                Ok::<(), QueryError>(())
            };
            let consumed = consume();
            // Stops the reader at its next batch if evaluation failed.
            drop(batches);
            let read = match reader.join() {
                Ok(read) => read,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            consumed.and(read)
        })
    }

    /// The time an `@` modifier pins evaluation to, in ms.
    pub fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at.as_ref()? {
            AtModifier::Start => Some(self.query_start),
            AtModifier::End => Some(self.query_end),
            AtModifier::At(t) => Some(system_time_ms(*t)),
        }
    }

    /// Runs `f` at every step with the arguments' values at that step and
    /// gathers its outputs into series. Two outputs with one label set at
    /// one step are an error, as in Prometheus.
    pub fn range_eval(
        &mut self,
        steps: Steps,
        args: &[&Val],
        mut f: impl FnMut(&mut Self, i64, &mut [Arg]) -> Result<Vec<Elem>, QueryError>,
    ) -> Result<Vec<StepSeries>, QueryError> {
        let mut cursors: Vec<Vec<usize>> = args
            .iter()
            .map(|a| match a {
                Val::Vector(s) => vec![0; s.len()],
                _ => Vec::new(),
            })
            .collect();
        let mut out: Vec<StepSeries> = Vec::new();
        let mut index: FastMap<Shared, usize> = FastMap::default();
        // Most outputs reuse one label set allocation at every step; finding
        // it by address skips hashing the labels.
        let mut by_address: FastMap<usize, usize> = FastMap::default();
        let mut step_args = Vec::with_capacity(args.len());
        for i in 0..steps.count() {
            self.check_deadline()?;
            let ts = steps.ts(i);
            step_args.clear();
            for (a, cursor) in args.iter().zip(&mut cursors) {
                step_args.push(match a {
                    Val::Scalar(v) => Arg::Scalar(v.get(i).copied().unwrap_or(f64::NAN)),
                    Val::String(s) => Arg::String(s.clone()),
                    Val::Vector(series) => Arg::Vector(vector_at(series, cursor, ts)),
                    Val::Matrix(_) => Arg::Vector(Vec::new()),
                });
            }
            let result = f(self, ts, &mut step_args)?;
            self.hold(result.len())?;
            for e in result {
                let address = Arc::as_ptr(&e.labels) as usize;
                let known = match by_address.get(&address) {
                    Some(&k) => Some(k),
                    None => {
                        let k = index.get(&e.labels).copied();
                        // Only addresses `out` keeps alive may be remembered:
                        // a freed one can come back with other labels.
                        if let Some(k) = k
                            && Arc::ptr_eq(&out[k].labels, &e.labels)
                        {
                            by_address.insert(address, k);
                        }
                        k
                    }
                };
                match known {
                    Some(k) => {
                        let series = &mut out[k];
                        if series.points.last().is_some_and(|p| p.t == ts) {
                            return Err(duplicate_labelset());
                        }
                        series.points.push(Point { t: ts, v: e.v });
                    }
                    None => {
                        index.insert(e.labels.clone(), out.len());
                        by_address.insert(address, out.len());
                        out.push(StepSeries {
                            labels: e.labels,
                            points: vec![Point { t: ts, v: e.v }],
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The elements of `series` that have a point at `ts`; `cursor` holds each
/// series' position and only moves forward.
pub(crate) fn vector_at(series: &[StepSeries], cursor: &mut [usize], ts: i64) -> Vec<Elem> {
    let mut out = Vec::new();
    for (s, c) in series.iter().zip(cursor.iter_mut()) {
        while *c < s.points.len() && s.points[*c].t < ts {
            *c += 1;
        }
        if let Some(p) = s.points.get(*c)
            && p.t == ts
        {
            out.push(Elem {
                labels: s.labels.clone(),
                v: p.v,
            });
        }
    }
    out
}

pub(crate) fn duplicate_labelset() -> QueryError {
    QueryError::Execution("vector cannot contain metrics with the same labelset".into())
}

/// Errors when two series of a result share a label set.
pub(crate) fn check_unique_labelsets(series: &[StepSeries]) -> Result<(), QueryError> {
    let mut seen = FastSet::with_capacity_and_hasher(series.len(), Default::default());
    for s in series {
        if !seen.insert(&s.labels) {
            return Err(duplicate_labelset());
        }
    }
    Ok(())
}

/// Merges series that share a label set (after a label change); two points
/// at one step are an error.
pub(crate) fn merge_same_labels(series: Vec<StepSeries>) -> Result<Vec<StepSeries>, QueryError> {
    merge_disjoint(series).map_err(|Collision| duplicate_labelset())
}

/// Two series with one label set had a point at the same step.
#[derive(Debug)]
pub(crate) struct Collision;

/// Merges series that share a label set, in the order of first appearance,
/// if no two of them have a point at the same step.
pub(crate) fn merge_disjoint(series: Vec<StepSeries>) -> Result<Vec<StepSeries>, Collision> {
    let mut index: FastMap<Shared, usize> = map_with_capacity(series.len());
    let mut out: Vec<StepSeries> = Vec::with_capacity(series.len());
    for s in series {
        match index.get(&s.labels) {
            Some(&k) => {
                let target = &mut out[k];
                let mut merged = Vec::with_capacity(target.points.len() + s.points.len());
                let (mut a, mut b) = (target.points.iter().peekable(), s.points.iter().peekable());
                loop {
                    match (a.peek(), b.peek()) {
                        (Some(x), Some(y)) if x.t == y.t => return Err(Collision),
                        (Some(x), Some(y)) => {
                            if x.t < y.t {
                                merged.push(**x);
                                a.next();
                            } else {
                                merged.push(**y);
                                b.next();
                            }
                        }
                        (Some(x), None) => {
                            merged.push(**x);
                            a.next();
                        }
                        (None, Some(y)) => {
                            merged.push(**y);
                            b.next();
                        }
                        (None, None) => break,
                    }
                }
                target.points = merged;
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Removes `__name__` from `labels`, in place when nothing else holds
/// them (a series owned by the operation at hand: no copy of every label).
/// Returns whether there was one.
pub(crate) fn strip_name(labels: &mut Shared) -> bool {
    if !labels.iter().any(|l| l.name == METRIC_NAME_LABEL) {
        return false;
    }
    Arc::make_mut(labels).retain(|l| l.name != METRIC_NAME_LABEL);
    true
}

/// `labels` without `__name__`.
pub(crate) fn drop_name(labels: &Shared) -> Shared {
    if labels.iter().any(|l| l.name == METRIC_NAME_LABEL) {
        Arc::new(
            labels
                .iter()
                .filter(|l| l.name != METRIC_NAME_LABEL)
                .cloned()
                .collect(),
        )
    } else {
        labels.clone()
    }
}

/// The value of label `name`, empty when absent.
pub(crate) fn label_value<'l>(labels: &'l Labels, name: &str) -> &'l str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

/// Renders a label set as Prometheus prints it: `{a="1", b="2"}`.
pub(crate) fn format_labels(labels: &Labels) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

pub(crate) fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Storage matchers of a selector: one list per `or` alternative.
fn matchers_of(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let convert = |m: &promql_parser::label::Matcher| {
        let op = match m.op {
            PromMatchOp::Equal => MatchOp::Equal,
            PromMatchOp::NotEqual => MatchOp::NotEqual,
            PromMatchOp::Re(_) => MatchOp::RegexMatch,
            PromMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
        };
        Matcher::new(op, m.name.clone(), m.value.clone())
            .map_err(|e| QueryError::BadData(format!("invalid matcher in {vs}: {e}")))
    };
    let groups: Vec<Vec<&promql_parser::label::Matcher>> = if vs.matchers.or_matchers.is_empty() {
        vec![vs.matchers.matchers.iter().collect()]
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|g| g.iter().chain(&vs.matchers.matchers).collect())
            .collect()
    };
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let mut matchers = group
            .into_iter()
            .map(convert)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(name) = &vs.name
            && !matchers
                .iter()
                .any(|m| m.name == METRIC_NAME_LABEL && m.op == MatchOp::Equal && &m.value == name)
        {
            matchers.insert(0, Matcher::eq(METRIC_NAME_LABEL, name.clone()));
        }
        out.push(matchers);
    }
    Ok(out)
}

fn value_type_name(e: &Expr) -> &'static str {
    match e.value_type() {
        promql_parser::parser::value::ValueType::Scalar => "scalar",
        promql_parser::parser::value::ValueType::String => "string",
        promql_parser::parser::value::ValueType::Vector => "instant vector",
        promql_parser::parser::value::ValueType::Matrix => "range vector",
    }
}
