//! Function calls: argument evaluation and types, range windows, which
//! functions drop `__name__`, and the functions that work on whole vectors
//! rather than on numbers (`absent`, `scalar`, `sort`, `label_replace`,
//! `histogram_quantile`, ...). The math lives in `functions`.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};

use promql_parser::label::MatchOp as PromMatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Call, Expr};
use rayon::prelude::*;
use strata_storage::{Label, METRIC_NAME_LABEL};

use super::engine::QueryError;
use super::eval::{
    Elem, Evaluator, RangeArg, RawSeries, Shared, StepSeries, Steps, Val, Walker, WindowShape,
    drop_name, duplicate_labelset, label_value, merge_same_labels, strip_name,
};
use super::functions::{elementwise, histogram, labels as label_fns, range};
use super::hash::{FastMap, FastSet};
use super::value::Point;

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call, steps: Steps) -> Result<Val, QueryError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    match name {
        "time" => {
            let v: Vec<f64> = (0..steps.count())
                .map(|i| steps.ts(i) as f64 / 1000.0)
                .collect();
            ev.hold(v.len())?;
            Ok(Val::Scalar(v))
        }
        "pi" => {
            let v = vec![std::f64::consts::PI; steps.count()];
            ev.hold(v.len())?;
            Ok(Val::Scalar(v))
        }
        "vector" => {
            let s = ev.eval_scalar(arg(&args, 0, name)?, steps)?;
            let points = s
                .iter()
                .enumerate()
                .map(|(i, v)| Point {
                    t: steps.ts(i),
                    v: *v,
                })
                .collect();
            Ok(Val::Vector(vec![StepSeries {
                labels: Arc::new(Vec::new()),
                points,
            }]))
        }
        "scalar" => {
            let input = ev.eval_vector(arg(&args, 0, name)?, steps)?;
            let mut out = vec![f64::NAN; steps.count()];
            let mut seen = vec![0u32; steps.count()];
            for s in &input {
                for p in &s.points {
                    let i = ((p.t - steps.start) / steps.step) as usize;
                    if let Some(slot) = out.get_mut(i) {
                        *slot = p.v;
                        seen[i] += 1;
                    }
                }
            }
            for (v, n) in out.iter_mut().zip(&seen) {
                if *n != 1 {
                    *v = f64::NAN;
                }
            }
            ev.release(samples(&input));
            ev.hold(out.len())?;
            Ok(Val::Scalar(out))
        }
        "timestamp" => {
            let a = unparen(arg(&args, 0, name)?);
            let mut series = match a {
                Expr::VectorSelector(vs) => ev.vector_selector(vs, steps, true)?,
                other => {
                    let mut series = ev.eval_vector(other, steps)?;
                    for s in &mut series {
                        s.points.iter_mut().for_each(|p| p.v = p.t as f64 / 1000.0);
                    }
                    series
                }
            };
            for s in &mut series {
                strip_name(&mut s.labels);
            }
            Ok(Val::Vector(merge_same_labels(series)?))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            let mut series = ev.eval_vector(arg(&args, 0, name)?, steps)?;
            if steps.count() == 1 {
                sort_by_value(&mut series, name.ends_with("desc"));
                if name.starts_with("sort_by_label") {
                    let names = string_args(ev, &args[1..], steps)?;
                    let desc = name == "sort_by_label_desc";
                    series.sort_by(|a, b| {
                        for n in &names {
                            let o =
                                natural_cmp(label_value(&a.labels, n), label_value(&b.labels, n));
                            if o != std::cmp::Ordering::Equal {
                                return if desc { o.reverse() } else { o };
                            }
                        }
                        std::cmp::Ordering::Equal
                    });
                }
            }
            Ok(Val::Vector(series))
        }
        "label_replace" => {
            let series = ev.eval_vector(arg(&args, 0, name)?, steps)?;
            let s = string_args(ev, &args[1..], steps)?;
            let [dst, replacement, src, regex] = s.as_slice() else {
                return Err(arg_count_error(name, 5, args.len()));
            };
            let replacer = label_fns::Replace::new(dst, replacement, src, regex)
                .map_err(|e| QueryError::Execution(e.to_string()))?;
            relabel(series, |labels| replacer.apply(labels))
        }
        "label_join" => {
            let series = ev.eval_vector(arg(&args, 0, name)?, steps)?;
            let s = string_args(ev, &args[1..], steps)?;
            let (Some(dst), Some(separator)) = (s.first(), s.get(1)) else {
                return Err(arg_count_error(name, 3, args.len()));
            };
            let sources: Vec<&str> = s[2..].iter().map(String::as_str).collect();
            label_fns::validate_label_join(dst, &sources)
                .map_err(|e| QueryError::Execution(e.to_string()))?;
            relabel(series, |labels| {
                label_fns::join(labels, dst, separator, &sources)
            })
        }
        "histogram_quantile" => histogram_quantile(ev, &args, steps),
        "absent" => absent(ev, &args, steps),
        "absent_over_time" => absent_over_time(ev, &args, steps),
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year"
            if args.is_empty() =>
        {
            let now: Vec<f64> = (0..steps.count())
                .map(|i| steps.ts(i) as f64 / 1000.0)
                .collect();
            let f = elementwise::lookup(name).ok_or_else(|| unknown(name))?;
            let points = now
                .iter()
                .enumerate()
                .map(|(i, v)| Point {
                    t: steps.ts(i),
                    v: f(*v, &[]),
                })
                .collect();
            ev.hold(now.len())?;
            Ok(Val::Vector(vec![StepSeries {
                labels: Arc::new(Vec::new()),
                points,
            }]))
        }
        _ => {
            if let Some(i) = c
                .func
                .arg_types
                .iter()
                .position(|t| *t == ValueType::Matrix)
            {
                range_call(ev, name, &args, i, steps)
            } else {
                elementwise_call(ev, name, &args, steps)
            }
        }
    }
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

fn arg<'e>(args: &[&'e Expr], i: usize, name: &str) -> Result<&'e Expr, QueryError> {
    args.get(i)
        .copied()
        .ok_or_else(|| QueryError::BadData(format!("missing argument {} of {name}()", i + 1)))
}

fn arg_count_error(name: &str, want: usize, got: usize) -> QueryError {
    QueryError::BadData(format!("expected {want} arguments for {name}(), got {got}"))
}

fn unknown(name: &str) -> QueryError {
    QueryError::BadData(format!("function {name}() is not supported"))
}

fn samples(series: &[StepSeries]) -> usize {
    series.iter().map(|s| s.points.len()).sum()
}

fn string_args(
    ev: &mut Evaluator<'_>,
    args: &[&Expr],
    steps: Steps,
) -> Result<Vec<String>, QueryError> {
    args.iter()
        .map(|a| match ev.eval(a, steps)? {
            Val::String(s) => Ok(s),
            other => Err(QueryError::BadData(format!(
                "expected type string, got {}",
                other.type_name()
            ))),
        })
        .collect()
}

/// Gives every series new labels; series that end up sharing a label set
/// are merged, and an error if both have a point at one step.
fn relabel(
    series: Vec<StepSeries>,
    mut f: impl FnMut(&[Label]) -> Vec<Label>,
) -> Result<Val, QueryError> {
    let mut out = Vec::with_capacity(series.len());
    for mut s in series {
        let mut labels = f(&s.labels);
        labels.retain(|l| !l.value.is_empty());
        labels.sort();
        s.labels = Arc::new(labels);
        out.push(s);
    }
    Ok(Val::Vector(merge_same_labels(out)?))
}

/// Orders an instant vector by value, NaN last (`sort`, `sort_desc`).
fn sort_by_value(series: &mut [StepSeries], desc: bool) {
    let value = |s: &StepSeries| s.points.first().map_or(f64::NAN, |p| p.v);
    series.sort_by(|a, b| {
        let (x, y) = (value(a), value(b));
        match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => {
                let o = x.total_cmp(&y);
                if desc { o.reverse() } else { o }
            }
        }
    });
}

/// Compares strings with runs of digits compared as numbers ("a2" < "a10").
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na = std::str::from_utf8(&a[si..i])
                .unwrap_or("")
                .trim_start_matches('0');
            let nb = std::str::from_utf8(&b[sj..j])
                .unwrap_or("")
                .trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// A function of a range vector: one output series per input series, with
/// `__name__` dropped except by `last_over_time`.
fn range_call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    matrix_index: usize,
    steps: Steps,
) -> Result<Val, QueryError> {
    let mut out: Vec<StepSeries> = Vec::new();
    range_call_each(ev, name, args, matrix_index, steps, &mut |_, series| {
        out.push(series);
        Ok(())
    })?;
    Ok(Val::Vector(out))
}

/// Receives the series of an instant vector one at a time, in order. Each
/// series' points are held (`Evaluator::hold`) when it arrives; the sink
/// releases what it does not keep.
pub(crate) type SeriesSink<'s> =
    dyn FnMut(&mut Evaluator<'_>, StepSeries) -> Result<(), QueryError> + 's;

/// Evaluates a call whose result can be handed on series by series without
/// being gathered first (a range function): `None` once every series went to
/// `sink`. Any other call is evaluated whole and returned.
pub(crate) fn eval_each(
    ev: &mut Evaluator<'_>,
    c: &Call,
    steps: Steps,
    sink: &mut SeriesSink<'_>,
) -> Result<Option<Val>, QueryError> {
    let name = c.func.name;
    let matrix_index = c
        .func
        .arg_types
        .iter()
        .position(|t| *t == ValueType::Matrix);
    match matrix_index {
        // `absent_over_time` answers for series that are not there.
        Some(i) if name != "absent_over_time" => {
            let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
            range_call_each(ev, name, &args, i, steps, sink)?;
            Ok(None)
        }
        _ => eval(ev, c, steps).map(Some),
    }
}

/// `range_call`, handing each result series to `sink` as soon as it is
/// computed.
fn range_call_each(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    matrix_index: usize,
    steps: Steps,
    sink: &mut SeriesSink<'_>,
) -> Result<(), QueryError> {
    let f = range::lookup(name).ok_or_else(|| unknown(name))?;
    let mut scalars = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i != matrix_index {
            scalars.push(ev.eval_scalar(a, steps)?);
        }
    }
    let matrix = arg(args, matrix_index, name)?;
    let mut output = RenamedOutput {
        keep_name: name == "last_over_time",
        // Series of one metric name differ in other labels, so dropping the
        // name cannot make two of them equal (a subquery is never taken
        // for one name).
        may_collide: !selects_one_name(matrix),
        seen: FastSet::default(),
    };
    let mut walker = Walker::new(range::counts_drops(name));
    let mut step_args = vec![0.0; scalars.len()];
    let mut validated = vec![false; steps.count()];
    // One series' windows, then its result. `input` has no stale markers
    // when `fresh`; the `held` samples it came from are released.
    let mut apply = |ev: &mut Evaluator<'_>,
                     shape: &WindowShape,
                     labels: Shared,
                     input: &[Point],
                     fresh: bool,
                     held: usize| {
        let mut points = Vec::with_capacity(shape.window_steps(input, steps));
        let at_step = |i: usize, window: &super::functions::RangeWindow<'_>| {
            for (slot, s) in step_args.iter_mut().zip(&scalars) {
                *slot = s.get(i).copied().unwrap_or(f64::NAN);
            }
            if !validated[i] {
                range::validate_args(name, &step_args)
                    .map_err(|e| QueryError::Execution(e.to_string()))?;
                validated[i] = true;
            }
            if let Some(v) = f(window, &step_args) {
                points.push(Point { t: steps.ts(i), v });
            }
            Ok(())
        };
        if fresh {
            walker.walk_fresh(shape, input, steps, at_step)?;
        } else {
            walker.walk(shape, input, steps, at_step)?;
        }
        ev.release(held);
        if points.is_empty() {
            return Ok(());
        }
        ev.hold(points.len())?;
        output.hand_on(ev, StepSeries { labels, points }, sink)
    };
    match ev.range_arg(matrix, steps)? {
        // Many steps make real work per series: windows of several series
        // are walked at once on the pool (functions without scalar
        // arguments, whose validation is per step) while this thread takes
        // the next series from storage, which reads ahead on the pool too.
        RangeArg::Selector { vs, shape, lo, hi } if steps.count() > 1 && scalars.is_empty() => {
            let mut walks = PoolWalks {
                f,
                count_drops: range::counts_drops(name),
                shape,
                steps,
                in_flight: None,
            };
            let mut batch: Vec<RawSeries> = Vec::with_capacity(PARALLEL_WALK_SERIES);
            let mut take = |ev: &mut Evaluator<'_>, walked: Vec<Walked>| {
                for (held, walked) in walked {
                    ev.release(held);
                    let Some(series) = walked? else {
                        continue;
                    };
                    ev.hold(series.points.len())?;
                    output.hand_on(ev, series, sink)?;
                }
                Ok::<(), QueryError>(())
            };
            ev.stream_raw(vs, lo, hi, false, |ev, series| {
                batch.push(series);
                if batch.len() == PARALLEL_WALK_SERIES {
                    let full =
                        std::mem::replace(&mut batch, Vec::with_capacity(PARALLEL_WALK_SERIES));
                    if let Some(walked) = walks.start(full) {
                        take(ev, walked)?;
                    }
                }
                Ok(())
            })?;
            if let Some(walked) = walks.start(batch) {
                take(ev, walked)?;
            }
            if let Some(walked) = walks.finish() {
                take(ev, walked)?;
            }
        }
        RangeArg::Selector { vs, shape, lo, hi } => {
            let read_ahead = steps.count() > 1;
            // Each series' samples become points in one reused buffer.
            let mut input = Vec::new();
            ev.stream_raw(vs, lo, hi, read_ahead, |ev, series| {
                series.fresh_points_into(&mut input);
                let held = series.len();
                apply(ev, &shape, series.labels, &input, true, held)
            })?;
        }
        RangeArg::Data(data) => {
            for (si, series) in data.series.into_iter().enumerate() {
                if si % 256 == 0 {
                    ev.check_deadline()?;
                }
                let held = series.points.len();
                apply(ev, &data.shape, series.labels, &series.points, false, held)?;
            }
        }
    }
    Ok(())
}

/// Whether every series a range argument reads has one metric name: a
/// selector with the name or an equality matcher on `__name__` that every
/// `or` alternative shares.
fn selects_one_name(e: &Expr) -> bool {
    let Expr::MatrixSelector(ms) = unparen(e) else {
        return false;
    };
    ms.vs.name.is_some()
        || ms
            .vs
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == METRIC_NAME_LABEL && matches!(m.op, PromMatchOp::Equal))
}

/// The output of a range function on its way to the sink: `__name__`
/// dropped, and, where dropping it can make two series' labels equal, the
/// label sets checked to be unique (an error even at different steps, as
/// in Prometheus).
struct RenamedOutput {
    keep_name: bool,
    may_collide: bool,
    seen: FastSet<Shared>,
}

impl RenamedOutput {
    fn hand_on(
        &mut self,
        ev: &mut Evaluator<'_>,
        mut series: StepSeries,
        sink: &mut SeriesSink<'_>,
    ) -> Result<(), QueryError> {
        if !self.keep_name
            && strip_name(&mut series.labels)
            && self.may_collide
            && !self.seen.insert(series.labels.clone())
        {
            return Err(duplicate_labelset());
        }
        sink(ev, series)
    }
}

/// Series whose windows `range_call` walks at once on the pool: enough
/// that waking the pool is cheap next to the work, few enough that the
/// points held meanwhile stay small (two batches of 256 x a range's
/// points).
const PARALLEL_WALK_SERIES: usize = 256;

/// What walking one series gave: the input points it held, and its result
/// series (`None` when no window had points).
type Walked = (usize, Result<Option<StepSeries>, QueryError>);

/// Batches of series whose windows are walked on rayon's pool, one batch in
/// flight while the caller gathers the next.
struct PoolWalks {
    f: super::functions::RangeFunction,
    count_drops: bool,
    shape: WindowShape,
    steps: Steps,
    in_flight: Option<mpsc::Receiver<std::thread::Result<Vec<Walked>>>>,
}

impl PoolWalks {
    /// Starts walking `batch`, and returns the batch walked before it (in
    /// order), waiting for it if needed.
    fn start(&mut self, batch: Vec<RawSeries>) -> Option<Vec<Walked>> {
        let done = self.finish();
        if batch.is_empty() {
            return done;
        }
        let (sender, receiver) = mpsc::sync_channel(1);
        let (f, count_drops, shape, steps) = (self.f, self.count_drops, self.shape, self.steps);
        rayon::spawn(move || {
            let walked = std::panic::catch_unwind(AssertUnwindSafe(|| {
                walk_on_pool(f, count_drops, &shape, steps, batch)
            }));
            // The query may have failed meanwhile: then nobody waits.
            let _ = sender.send(walked);
        });
        self.in_flight = Some(receiver);
        done
    }

    /// Waits for the batch in flight, if any.
    fn finish(&mut self) -> Option<Vec<Walked>> {
        let receiver = self.in_flight.take()?;
        match receiver.recv() {
            Ok(Ok(walked)) => Some(walked),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The task catches panics, so it always sends before dropping
            // its sender.
            Err(mpsc::RecvError) => unreachable!("a walk task ended without an answer"),
        }
    }
}

/// Walks the windows of every series of `batch` with `f` on rayon's pool,
/// in order. The samples become points there too, in a buffer each worker
/// reuses.
fn walk_on_pool(
    f: super::functions::RangeFunction,
    count_drops: bool,
    shape: &WindowShape,
    steps: Steps,
    batch: Vec<RawSeries>,
) -> Vec<Walked> {
    batch
        .into_par_iter()
        .map_init(
            || (Walker::new(count_drops), Vec::new()),
            |(walker, input), series| {
                let held = series.len();
                series.fresh_points_into(input);
                let mut points = Vec::with_capacity(shape.window_steps(input, steps));
                let walked = walker.walk_fresh(shape, input, steps, |i, window| {
                    if let Some(v) = f(window, &[]) {
                        points.push(Point { t: steps.ts(i), v });
                    }
                    Ok(())
                });
                let result = walked.map(|()| {
                    (!points.is_empty()).then_some(StepSeries {
                        labels: series.labels,
                        points,
                    })
                });
                (held, result)
            },
        )
        .collect()
}

/// A function of each element's value (and scalar arguments): `__name__`
/// dropped.
fn elementwise_call(
    ev: &mut Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    steps: Steps,
) -> Result<Val, QueryError> {
    let f = elementwise::lookup(name).ok_or_else(|| unknown(name))?;
    let input = ev.eval_vector(arg(args, 0, name)?, steps)?;
    let mut scalars = Vec::new();
    for a in &args[1..] {
        scalars.push(ev.eval_scalar(a, steps)?);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut step_args = vec![0.0; scalars.len()];
    for mut s in input {
        let mut points = Vec::with_capacity(s.points.len());
        for p in &s.points {
            let i = ((p.t - steps.start) / steps.step) as usize;
            for (slot, sc) in step_args.iter_mut().zip(&scalars) {
                *slot = sc.get(i).copied().unwrap_or(f64::NAN);
            }
            if !elementwise::produces_output(name, &step_args) {
                continue;
            }
            points.push(Point {
                t: p.t,
                v: f(p.v, &step_args),
            });
        }
        if !points.is_empty() {
            strip_name(&mut s.labels);
            out.push(StepSeries {
                labels: s.labels,
                points,
            });
        }
    }
    Ok(Val::Vector(merge_same_labels(out)?))
}

/// `histogram_quantile(q, buckets)`: per step, the buckets of each series
/// (all labels but `le` and `__name__`) give one quantile.
fn histogram_quantile(
    ev: &mut Evaluator<'_>,
    args: &[&Expr],
    steps: Steps,
) -> Result<Val, QueryError> {
    let q = ev.eval_scalar(arg(args, 0, "histogram_quantile")?, steps)?;
    let input = ev.eval_vector(arg(args, 1, "histogram_quantile")?, steps)?;
    let held = q.len() + samples(&input);
    if let Some(out) = quantiles_by_group(&q, &input, steps) {
        ev.release(held);
        ev.hold(samples(&out))?;
        return Ok(Val::Vector(out));
    }
    let (q, input) = (Val::Scalar(q), Val::Vector(input));
    let mut keys: FastMap<usize, Option<(Shared, f64)>> = FastMap::default();
    let out = ev.range_eval(steps, &[&q, &input], |_, _, a| {
        let q = a[0].scalar();
        let vector = a[1].take_vector();
        let mut index: FastMap<Shared, usize> = FastMap::default();
        let mut groups: Vec<(Shared, Vec<histogram::Bucket>)> = Vec::new();
        // `le` values seen per group: one twice means two input series
        // differ only in `__name__`.
        let mut seen_le: Vec<Vec<Shared>> = Vec::new();
        for e in vector {
            let entry = keys
                .entry(Arc::as_ptr(&e.labels) as usize)
                .or_insert_with(|| {
                    let upper = histogram::parse_le(label_value(&e.labels, "le"))?;
                    let labels: Vec<Label> = e
                        .labels
                        .iter()
                        .filter(|l| l.name != "le" && l.name != METRIC_NAME_LABEL)
                        .cloned()
                        .collect();
                    Some((Arc::new(labels), upper))
                });
            // Series without a parsable `le` are not buckets.
            let Some((labels, upper)) = entry.clone() else {
                continue;
            };
            let gi = *index.entry(labels.clone()).or_insert_with(|| {
                groups.push((labels, Vec::new()));
                seen_le.push(Vec::new());
                groups.len() - 1
            });
            let without_name = drop_name(&e.labels);
            if seen_le[gi].contains(&without_name) {
                return Err(duplicate_labelset());
            }
            seen_le[gi].push(without_name);
            groups[gi].1.push(histogram::Bucket {
                upper_bound: upper,
                count: e.v,
            });
        }
        Ok(groups
            .into_iter()
            .map(|(labels, mut buckets)| Elem {
                labels,
                v: histogram::bucket_quantile(q, &mut buckets),
            })
            .collect())
    })?;
    ev.release(held);
    Ok(Val::Vector(out))
}

/// `histogram_quantile` group by group instead of step by step: each input
/// series' group (its labels but `le` and `__name__`) and bucket bound are
/// worked out once, then each group's buckets at each step come from its
/// members in input order, as step by step. `None` when two members of a
/// group share an `le` (they differ only in `__name__`): whether that is an
/// error depends on whether both have a value at one step, which the
/// step-by-step path tells.
fn quantiles_by_group(q: &[f64], input: &[StepSeries], steps: Steps) -> Option<Vec<StepSeries>> {
    struct Group {
        labels: Shared,
        /// First step with a bucket, and the first input series there.
        first: (usize, usize),
        /// Input series and their bucket bound, in input order.
        members: Vec<(usize, f64)>,
        les: Vec<String>,
    }
    let mut ids: FastMap<Shared, usize> = FastMap::default();
    let mut groups: Vec<Group> = Vec::new();
    for (si, s) in input.iter().enumerate() {
        let Some(head) = s.points.first() else {
            continue;
        };
        let le = label_value(&s.labels, "le");
        // Series without a parsable `le` are not buckets.
        let Some(upper) = histogram::parse_le(le) else {
            continue;
        };
        let labels: Shared = Arc::new(
            s.labels
                .iter()
                .filter(|l| l.name != "le" && l.name != METRIC_NAME_LABEL)
                .cloned()
                .collect(),
        );
        let next = groups.len();
        let gi = *ids.entry(labels.clone()).or_insert(next);
        if gi == next {
            groups.push(Group {
                labels,
                first: (usize::MAX, usize::MAX),
                members: Vec::new(),
                les: Vec::new(),
            });
        }
        let g = &mut groups[gi];
        if g.les.iter().any(|l| l == le) {
            return None;
        }
        g.les.push(le.to_owned());
        g.members.push((si, upper));
        let step = steps.index(head.t);
        if step < g.first.0 {
            g.first = (step, si);
        }
    }
    groups.sort_by_key(|g| g.first);
    let mut buckets = Vec::new();
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut cursors = vec![0; g.members.len()];
        let mut points = Vec::new();
        for i in g.first.0..steps.count() {
            let ts = steps.ts(i);
            buckets.clear();
            for (&(si, upper), cursor) in g.members.iter().zip(&mut cursors) {
                let member = &input[si].points;
                while member.get(*cursor).is_some_and(|p| p.t < ts) {
                    *cursor += 1;
                }
                if let Some(p) = member.get(*cursor)
                    && p.t == ts
                {
                    buckets.push(histogram::Bucket {
                        upper_bound: upper,
                        count: p.v,
                    });
                }
            }
            if !buckets.is_empty() {
                let q = q.get(i).copied().unwrap_or(f64::NAN);
                points.push(Point {
                    t: ts,
                    v: histogram::bucket_quantile(q, &mut buckets),
                });
            }
        }
        out.push(StepSeries {
            labels: g.labels,
            points,
        });
    }
    Some(out)
}

/// Labels `absent` gives its answer: the equality matchers of a selector
/// argument (a label matched twice is left out).
fn absent_labels(e: &Expr) -> Shared {
    let vs = match unparen(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Arc::new(Vec::new()),
    };
    let mut labels: Vec<Label> = Vec::new();
    let mut repeated: Vec<String> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME_LABEL {
            continue;
        }
        // A label matched more than once, or not by equality, has no one value.
        if !matches!(m.op, PromMatchOp::Equal) || labels.iter().any(|l| l.name == m.name) {
            repeated.push(m.name.clone());
            continue;
        }
        labels.push(Label::new(m.name.clone(), m.value.clone()));
    }
    labels.retain(|l| !repeated.contains(&l.name));
    labels.sort();
    Arc::new(labels)
}

fn absent(ev: &mut Evaluator<'_>, args: &[&Expr], steps: Steps) -> Result<Val, QueryError> {
    let a = arg(args, 0, "absent")?;
    let input = ev.eval_vector(a, steps)?;
    let mut present = vec![false; steps.count()];
    for s in &input {
        for p in &s.points {
            if let Some(slot) = present.get_mut(((p.t - steps.start) / steps.step) as usize) {
                *slot = true;
            }
        }
    }
    ev.release(samples(&input));
    absent_result(ev, a, &present, steps)
}

fn absent_over_time(
    ev: &mut Evaluator<'_>,
    args: &[&Expr],
    steps: Steps,
) -> Result<Val, QueryError> {
    let a = arg(args, 0, "absent_over_time")?;
    let data = ev.matrix_arg(a, steps)?;
    let mut present = vec![false; steps.count()];
    data.for_each_window(steps, ev.deadline, false, |_, i, w| {
        if !w.points.is_empty() {
            present[i] = true;
        }
        Ok(())
    })?;
    ev.release(samples(&data.series));
    absent_result(ev, a, &present, steps)
}

fn absent_result(
    ev: &mut Evaluator<'_>,
    a: &Expr,
    present: &[bool],
    steps: Steps,
) -> Result<Val, QueryError> {
    let points: Vec<Point> = present
        .iter()
        .enumerate()
        .filter(|(_, p)| !**p)
        .map(|(i, _)| Point {
            t: steps.ts(i),
            v: 1.0,
        })
        .collect();
    if points.is_empty() {
        return Ok(Val::Vector(Vec::new()));
    }
    ev.hold(points.len())?;
    Ok(Val::Vector(vec![StepSeries {
        labels: absent_labels(a),
        points,
    }]))
}
