//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, ...) with
//! `by`/`without` grouping, step by step, with Prometheus 2.53's float
//! arithmetic (incremental mean for `avg`, NaN rules of `min`/`max`).

use std::sync::Arc;

use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};
use strata_storage::{Label, METRIC_NAME_LABEL};

use super::engine::QueryError;
use super::eval::{Arg, Elem, Evaluator, Shared, StepSeries, Steps, Val};
use super::functions::stats;
use super::hash::FastMap;

pub(crate) fn eval(
    ev: &mut Evaluator<'_>,
    a: &AggregateExpr,
    steps: Steps,
) -> Result<Val, QueryError> {
    let op = a.op.to_string();
    let param = match &a.param {
        Some(p) => Some(eval_param(ev, &op, p, steps)?),
        None => None,
    };
    if let Some(Val::String(label)) = &param
        && !valid_label_name(label)
    {
        return Err(QueryError::Execution(format!(
            "invalid label name {label:?}"
        )));
    }
    let (without, mut names) = match &a.modifier {
        Some(LabelModifier::Include(l)) => (false, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (true, l.labels.clone()),
        None => (false, Vec::new()),
    };
    if op == "count_values"
        && !without
        && let Some(Val::String(label)) = &param
    {
        names.push(label.clone());
    }
    let grouping = Grouping { without, names };
    if let (Some(fold), None) = (Fold::of(&op), &param) {
        // Each input series is folded as it comes and dropped: the input is
        // never held whole.
        let mut folder = Folder::new(fold, &grouping, steps);
        let other = ev.eval_each(&a.expr, steps, &mut |ev, series| {
            if folder.series.is_multiple_of(256) {
                ev.check_deadline()?;
            }
            folder.add(&series);
            ev.release(series.points.len());
            Ok(())
        })?;
        if let Some(input) = other {
            return Err(not_a_vector(&input));
        }
        let out = folder.finish();
        ev.hold(out.iter().map(|s| s.points.len()).sum())?;
        return Ok(Val::Vector(out));
    }
    let input = ev.eval(&a.expr, steps)?;
    if !matches!(input, Val::Vector(_)) {
        return Err(not_a_vector(&input));
    }
    let held = input.samples() + param.as_ref().map_or(0, Val::samples);
    let mut args: Vec<&Val> = vec![&input];
    if let Some(p) = &param {
        args.push(p);
    }
    // Groups and the group of each input label set, kept across steps.
    let mut cache = GroupCache::default();
    let out = ev.range_eval(steps, &args, |_, _, step_args| {
        let vector = step_args[0].take_vector();
        let param = step_args.get(1);
        aggregate_step(&op, &grouping, vector, param, &mut cache)
    })?;
    ev.release(held);
    Ok(Val::Vector(out))
}

fn not_a_vector(input: &Val) -> QueryError {
    QueryError::BadData(format!(
        "expected type instant vector in aggregation expression, got {}",
        input.type_name()
    ))
}

fn eval_param(ev: &mut Evaluator<'_>, op: &str, p: &Expr, steps: Steps) -> Result<Val, QueryError> {
    let val = ev.eval(p, steps)?;
    let ok = if op == "count_values" {
        matches!(val, Val::String(_))
    } else {
        matches!(val, Val::Scalar(_))
    };
    if ok {
        return Ok(val);
    }
    Err(QueryError::BadData(format!(
        "expected type {} in aggregation parameter, got {}",
        if op == "count_values" {
            "string"
        } else {
            "scalar"
        },
        val.type_name()
    )))
}

struct Grouping {
    without: bool,
    names: Vec<String>,
}

impl Grouping {
    fn keeps(&self, name: &str) -> bool {
        let listed = self.names.iter().any(|n| n == name);
        if self.without {
            !listed && name != METRIC_NAME_LABEL
        } else {
            listed
        }
    }

    /// The group's key and output labels for an input label set.
    fn group(&self, labels: &[Label]) -> (String, Shared) {
        let mut key = String::new();
        self.key(labels, &mut key);
        (key, self.labels(labels))
    }

    /// Replaces `key` with the group key of an input label set.
    fn key(&self, labels: &[Label], key: &mut String) {
        key.clear();
        for l in labels.iter().filter(|l| self.keeps(&l.name)) {
            key.push_str(&l.name);
            key.push('\u{ff}');
            key.push_str(&l.value);
            key.push('\u{ff}');
        }
    }

    /// The output labels of the group of an input label set.
    fn labels(&self, labels: &[Label]) -> Shared {
        Arc::new(
            labels
                .iter()
                .filter(|l| self.keeps(&l.name))
                .cloned()
                .collect(),
        )
    }
}

/// Aggregations whose state per group and step is a few numbers. They run
/// series by series instead of step by step: each input series' group is
/// found once, then its points fold into the group's cells at their steps.
/// At every step the values of a group still meet in input order, as they
/// do step by step, so the results agree to the bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fold {
    Sum,
    Avg,
    Count,
    Group,
    Min,
    Max,
    Stddev,
    Stdvar,
}

impl Fold {
    fn of(op: &str) -> Option<Fold> {
        Some(match op {
            "sum" => Fold::Sum,
            "avg" => Fold::Avg,
            "count" => Fold::Count,
            "group" => Fold::Group,
            "min" => Fold::Min,
            "max" => Fold::Max,
            "stddev" => Fold::Stddev,
            "stdvar" => Fold::Stdvar,
            _ => return None,
        })
    }
}

/// One group's cells, one per step; only the vectors its fold needs are
/// allocated.
struct FoldGroup {
    labels: Shared,
    /// Where the group first appears: the earliest step with a value, and
    /// the first input series with a value there. Step-by-step evaluation
    /// orders its output this way, and instant queries show that order.
    first: (usize, usize),
    counts: Vec<u32>,
    values: Vec<f64>,
    means: Vec<stats::Mean>,
    variances: Vec<stats::Variance>,
}

impl FoldGroup {
    fn new(fold: Fold, labels: Shared, steps: usize) -> FoldGroup {
        let sized = |wanted: bool| if wanted { steps } else { 0 };
        FoldGroup {
            labels,
            first: (usize::MAX, usize::MAX),
            counts: vec![0; steps],
            values: vec![0.0; sized(matches!(fold, Fold::Sum | Fold::Min | Fold::Max))],
            means: vec![stats::Mean::default(); sized(fold == Fold::Avg)],
            variances: vec![
                stats::Variance::default();
                sized(matches!(fold, Fold::Stddev | Fold::Stdvar))
            ],
        }
    }

    fn value(&self, fold: Fold, i: usize) -> f64 {
        match fold {
            Fold::Sum | Fold::Min | Fold::Max => self.values[i],
            Fold::Avg => self.means[i].value(),
            Fold::Count => f64::from(self.counts[i]),
            Fold::Group => 1.0,
            Fold::Stddev => self.variances[i].stddev(),
            Fold::Stdvar => self.variances[i].stdvar(),
        }
    }
}

/// Folds series one at a time into their groups' cells.
struct Folder<'g> {
    fold: Fold,
    grouping: &'g Grouping,
    steps: Steps,
    ids: FastMap<String, usize>,
    groups: Vec<FoldGroup>,
    key: String,
    /// Series added so far.
    series: usize,
}

impl<'g> Folder<'g> {
    fn new(fold: Fold, grouping: &'g Grouping, steps: Steps) -> Folder<'g> {
        Folder {
            fold,
            grouping,
            steps,
            ids: FastMap::default(),
            groups: Vec::new(),
            key: String::new(),
            series: 0,
        }
    }

    /// Folds the next input series.
    fn add(&mut self, s: &StepSeries) {
        let si = self.series;
        self.series += 1;
        let Some(head) = s.points.first() else {
            return;
        };
        let (fold, steps) = (self.fold, self.steps);
        self.grouping.key(&s.labels, &mut self.key);
        let gi = match self.ids.get(self.key.as_str()) {
            Some(&gi) => gi,
            None => {
                self.ids.insert(self.key.clone(), self.groups.len());
                self.groups.push(FoldGroup::new(
                    fold,
                    self.grouping.labels(&s.labels),
                    steps.count(),
                ));
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[gi];
        let first_step = steps.index(head.t);
        if first_step < g.first.0 {
            g.first = (first_step, si);
        }
        let counts = &mut g.counts;
        match fold {
            Fold::Sum => {
                for p in &s.points {
                    let i = steps.index(p.t);
                    counts[i] += 1;
                    if counts[i] == 1 {
                        g.values[i] = p.v;
                    } else {
                        g.values[i] += p.v;
                    }
                }
            }
            Fold::Min | Fold::Max => {
                let max = fold == Fold::Max;
                for p in &s.points {
                    let i = steps.index(p.t);
                    counts[i] += 1;
                    let current = g.values[i];
                    let replaces = if max { current < p.v } else { current > p.v };
                    if counts[i] == 1 || replaces || current.is_nan() {
                        g.values[i] = p.v;
                    }
                }
            }
            Fold::Avg => {
                for p in &s.points {
                    let i = steps.index(p.t);
                    counts[i] += 1;
                    g.means[i].add(p.v);
                }
            }
            Fold::Stddev | Fold::Stdvar => {
                for p in &s.points {
                    let i = steps.index(p.t);
                    counts[i] += 1;
                    g.variances[i].add(p.v);
                }
            }
            Fold::Count | Fold::Group => {
                for p in &s.points {
                    counts[steps.index(p.t)] += 1;
                }
            }
        }
    }

    /// Every group's series, in the order step-by-step evaluation gives.
    fn finish(self) -> Vec<StepSeries> {
        let (fold, steps) = (self.fold, self.steps);
        let mut groups = self.groups;
        groups.sort_by_key(|g| g.first);
        groups
            .into_iter()
            .map(|g| {
                let points = g
                    .counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, _)| super::value::Point {
                        t: steps.ts(i),
                        v: g.value(fold, i),
                    })
                    .collect();
                StepSeries {
                    labels: g.labels,
                    points,
                }
            })
            .collect()
    }
}

/// Groups seen so far across steps: the group of an input label set is
/// found by the address of its shared labels (the input holds them for the
/// whole evaluation), so steps after the first neither build nor hash keys.
#[derive(Default)]
struct GroupCache {
    by_address: FastMap<usize, usize>,
    by_key: FastMap<String, usize>,
    labels: Vec<Shared>,
}

impl GroupCache {
    /// The id of the group of `labels`.
    fn id(&mut self, grouping: &Grouping, labels: &Shared) -> usize {
        let address = Arc::as_ptr(labels) as usize;
        if let Some(&id) = self.by_address.get(&address) {
            return id;
        }
        let id = self.id_of(grouping.group(labels));
        self.by_address.insert(address, id);
        id
    }

    /// The id of the group with this key and output labels.
    fn id_of(&mut self, (key, labels): (String, Shared)) -> usize {
        let next = self.labels.len();
        let id = *self.by_key.entry(key).or_insert(next);
        if id == next {
            self.labels.push(labels);
        }
        id
    }
}

/// A group's running state.
struct Group {
    labels: Shared,
    count: u64,
    value: f64,
    mean: stats::Mean,
    variance: stats::Variance,
    values: Vec<f64>,
    members: Vec<Elem>,
}

fn aggregate_step(
    op: &str,
    grouping: &Grouping,
    vector: Vec<Elem>,
    param: Option<&Arg>,
    cache: &mut GroupCache,
) -> Result<Vec<Elem>, QueryError> {
    // Position in `groups` of each group id met at this step, in order of
    // first appearance (the output order).
    let mut slot: Vec<usize> = vec![usize::MAX; cache.labels.len()];
    let mut groups: Vec<Group> = Vec::new();
    let k = match op {
        "topk" | "bottomk" | "limitk" => {
            let p = param.map_or(f64::NAN, Arg::scalar);
            if !(p >= i64::MIN as f64 && p <= i64::MAX as f64) {
                return Err(QueryError::Execution(format!(
                    "Scalar value {} overflows int64",
                    go_float(p)
                )));
            }
            let k = p as i64;
            if k < 1 {
                return Ok(Vec::new());
            }
            k as usize
        }
        _ => 0,
    };
    let ratio = if op == "limit_ratio" {
        let r = param.map_or(f64::NAN, Arg::scalar);
        if r.is_nan() {
            return Err(QueryError::Execution(format!(
                "Ratio value {} is NaN",
                go_float(r)
            )));
        }
        r.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let value_label = match param {
        Some(Arg::String(s)) if op == "count_values" => Some(s.clone()),
        _ => None,
    };
    for e in vector {
        let id = if let Some(label) = &value_label {
            let mut with_value: Vec<Label> = e
                .labels
                .iter()
                .filter(|l| &l.name != label)
                .cloned()
                .collect();
            with_value.push(Label::new(label.clone(), go_float(e.v)));
            with_value.sort();
            cache.id_of(grouping.group(&with_value))
        } else {
            cache.id(grouping, &e.labels)
        };
        if slot.len() <= id {
            slot.resize(id + 1, usize::MAX);
        }
        let gi = if slot[id] != usize::MAX {
            slot[id]
        } else {
            slot[id] = groups.len();
            groups.push(Group {
                labels: cache.labels[id].clone(),
                count: 0,
                value: e.v,
                mean: stats::Mean::default(),
                variance: stats::Variance::default(),
                values: Vec::new(),
                members: Vec::new(),
            });
            groups.len() - 1
        };
        let g = &mut groups[gi];
        g.count += 1;
        let first = g.count == 1;
        match op {
            "sum" => {
                if !first {
                    g.value += e.v;
                }
            }
            "avg" => g.mean.add(e.v),
            "max" => {
                if g.value < e.v || g.value.is_nan() {
                    g.value = e.v;
                }
            }
            "min" => {
                if g.value > e.v || g.value.is_nan() {
                    g.value = e.v;
                }
            }
            "stddev" | "stdvar" => g.variance.add(e.v),
            "quantile" => g.values.push(e.v),
            "topk" | "bottomk" => g.members.push(e),
            "limitk" => {
                if g.members.len() < k {
                    g.members.push(e);
                }
            }
            "limit_ratio" => {
                if ratio_keeps(ratio, &e.labels) {
                    g.members.push(e);
                }
            }
            "count" | "group" | "count_values" => {}
            other => {
                return Err(QueryError::BadData(format!(
                    "unknown aggregation operator {other:?}"
                )));
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let v = match op {
            "sum" | "max" | "min" => g.value,
            "avg" => g.mean.value(),
            "count" | "count_values" => g.count as f64,
            "group" => 1.0,
            "stddev" => g.variance.stddev(),
            "stdvar" => g.variance.stdvar(),
            "quantile" => stats::quantile(param.map_or(f64::NAN, Arg::scalar), &mut g.values),
            "topk" | "bottomk" => {
                let top = op == "topk";
                // NaN ranks last either way.
                g.members
                    .sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        (false, false) => {
                            let o = a.v.total_cmp(&b.v);
                            if top { o.reverse() } else { o }
                        }
                    });
                g.members.truncate(k);
                out.append(&mut g.members);
                continue;
            }
            _ => {
                out.append(&mut g.members);
                continue;
            }
        };
        out.push(Elem {
            labels: g.labels,
            v,
        });
    }
    Ok(out)
}

/// Whether `limit_ratio(ratio, ...)` keeps a series: a stable hash of its
/// labels placed in [0, 1) against the ratio (from the top when negative), so
/// a series is kept at every step or none and `r` and `-(1 - r)` split the
/// series into complements.
fn ratio_keeps(ratio: f64, labels: &[Label]) -> bool {
    // FNV-1a: stable across processes and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for l in labels {
        for b in l
            .name
            .bytes()
            .chain([0xff])
            .chain(l.value.bytes())
            .chain([0xff])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let offset = (h % (1 << 16)) as f64 / (1u64 << 16) as f64;
    if ratio >= 0.0 {
        offset < ratio
    } else {
        offset >= 1.0 + ratio
    }
}

/// A float as Go's `strconv.FormatFloat(v, 'f', -1, 64)` prints it.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
