//! Binary operators: arithmetic, comparisons (filtering or `bool`), the set
//! operators `and`/`or`/`unless`, and vector matching (`on`, `ignoring`,
//! `group_left`, `group_right`) with Prometheus' cardinality errors.

use std::sync::Arc;

use promql_parser::label::Labels as NameList;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use strata_storage::{Label, METRIC_NAME_LABEL};

use super::engine::QueryError;
use super::eval::{
    Elem, Evaluator, Shared, StepSeries, Steps, Val, drop_name, format_labels, merge_disjoint,
    merge_same_labels, strip_name,
};
use super::hash::{FastMap, FastSet, map_with_capacity};
use super::value::Point;

/// How two vectors are matched.
struct Matching<'e> {
    card: &'e VectorMatchCardinality,
    /// `on(...)` when true, `ignoring(...)` (or nothing) when false.
    on: bool,
    names: Vec<String>,
    /// Extra labels of `group_left(...)`/`group_right(...)`.
    include: Vec<String>,
}

pub(crate) fn eval(
    ev: &mut Evaluator<'_>,
    b: &BinaryExpr,
    steps: Steps,
) -> Result<Val, QueryError> {
    let name = b.op.to_string();
    let op = Op::of(&name);
    let return_bool = b.return_bool();
    let lhs = ev.eval(&b.lhs, steps)?;
    let rhs = ev.eval(&b.rhs, steps)?;
    let held = lhs.samples() + rhs.samples();
    let comparison = b.op.is_comparison_operator();
    let vectors = Operands {
        op,
        name: &name,
        return_bool,
        comparison,
        steps,
    };
    let out = match (lhs, rhs) {
        (Val::Scalar(a), Val::Scalar(c)) => {
            let mut out = Vec::with_capacity(a.len());
            for (x, y) in a.iter().zip(&c) {
                let (v, keep) = vectors.apply(*x, *y)?;
                out.push(if comparison {
                    f64::from(u8::from(keep))
                } else {
                    v
                });
            }
            ev.release(held);
            ev.hold(out.len())?;
            return Ok(Val::Scalar(out));
        }
        (Val::Vector(series), Val::Scalar(scalars)) => {
            vectors.vector_scalar(series, &scalars, false)?
        }
        (Val::Scalar(scalars), Val::Vector(series)) => {
            vectors.vector_scalar(series, &scalars, true)?
        }
        (Val::Vector(left), Val::Vector(right)) => {
            let matching = matching_of(b);
            match name.as_str() {
                "and" => and_unless(left, &right, &matching, true, steps),
                "unless" => and_unless(left, &right, &matching, false, steps),
                "or" => or(left, right, &matching, steps)?,
                _ => match vectors.vector_vector(&left, &right, &matching)? {
                    Some(out) => out,
                    None => {
                        let (lhs, rhs) = (Val::Vector(left), Val::Vector(right));
                        let mut memo = Memo::default();
                        let out = ev.range_eval(steps, &[&lhs, &rhs], |_, _, args| {
                            let left = args[0].take_vector();
                            let right = args[1].take_vector();
                            vector_vector(&vectors, left, right, &matching, &mut memo)
                        })?;
                        ev.release(held);
                        return Ok(Val::Vector(out));
                    }
                },
            }
        }
        (lhs, rhs) => {
            return Err(QueryError::BadData(format!(
                "binary operator {name} is not defined between {} and {}",
                lhs.type_name(),
                rhs.type_name()
            )));
        }
    };
    ev.release(held);
    ev.hold(out.iter().map(|s| s.points.len()).sum())?;
    Ok(Val::Vector(out))
}

/// An arithmetic or comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl Op {
    fn of(name: &str) -> Option<Op> {
        Some(match name {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            _ => return None,
        })
    }

    /// The value of `lhs op rhs`, and for comparisons whether it holds.
    #[inline]
    fn apply(self, lhs: f64, rhs: f64) -> (f64, bool) {
        match self {
            Op::Add => (lhs + rhs, true),
            Op::Sub => (lhs - rhs, true),
            Op::Mul => (lhs * rhs, true),
            Op::Div => (lhs / rhs, true),
            Op::Mod => (lhs % rhs, true),
            Op::Pow => (lhs.powf(rhs), true),
            Op::Atan2 => (lhs.atan2(rhs), true),
            Op::Eq => (lhs, lhs == rhs),
            Op::Ne => (lhs, lhs != rhs),
            Op::Gt => (lhs, lhs > rhs),
            Op::Lt => (lhs, lhs < rhs),
            Op::Ge => (lhs, lhs >= rhs),
            Op::Le => (lhs, lhs <= rhs),
        }
    }
}

/// An arithmetic or comparison operation between operands that hold every
/// step: vectors are computed series by series (a series' labels are
/// worked out once, not once per step) wherever the answer cannot differ
/// from the step-by-step one.
struct Operands<'n> {
    /// `None` for names that are no such operator: an error once a pair of
    /// values meets, as step by step.
    op: Option<Op>,
    name: &'n str,
    return_bool: bool,
    comparison: bool,
    steps: Steps,
}

impl Operands<'_> {
    fn op(&self) -> Result<Op, QueryError> {
        self.op.ok_or_else(|| {
            QueryError::BadData(format!(
                "operator {:?} is not defined on scalars or vector elements",
                self.name
            ))
        })
    }

    fn apply(&self, lhs: f64, rhs: f64) -> Result<(f64, bool), QueryError> {
        Ok(self.op()?.apply(lhs, rhs))
    }

    /// `vector op scalar`, or `scalar op vector` when `swap`.
    fn vector_scalar(
        &self,
        series: Vec<StepSeries>,
        scalars: &[f64],
        swap: bool,
    ) -> Result<Vec<StepSeries>, QueryError> {
        let keeps_name = self.comparison && !self.return_bool;
        let mut renamed = false;
        let mut out = Vec::with_capacity(series.len());
        for mut s in series {
            if s.points.is_empty() {
                continue;
            }
            let op = self.op()?;
            s.points.retain_mut(|p| {
                let scalar = scalars
                    .get(self.steps.index(p.t))
                    .copied()
                    .unwrap_or(f64::NAN);
                let (l, r) = if swap { (scalar, p.v) } else { (p.v, scalar) };
                let (mut v, mut keep) = op.apply(l, r);
                // A comparison keeps the vector's value even with the scalar
                // on the left.
                if self.comparison && swap {
                    v = r;
                }
                if self.return_bool {
                    v = f64::from(u8::from(keep));
                    keep = true;
                }
                p.v = v;
                keep
            });
            if s.points.is_empty() {
                continue;
            }
            if !keeps_name {
                renamed |= strip_name(&mut s.labels);
            }
            out.push(s);
        }
        // Series that differ only in `__name__` now share labels: fine at
        // different steps, an error at one.
        if renamed {
            merge_same_labels(out)
        } else {
            Ok(out)
        }
    }

    /// Arithmetic or comparison between two vectors, series by series when
    /// every matching key has at most one series on the "one" side (and on
    /// both sides for one-to-one matching) and no two results share labels
    /// at a step. `None` otherwise: then only a step-by-step evaluation
    /// tells which step fails and how.
    fn vector_vector(
        &self,
        left: &[StepSeries],
        right: &[StepSeries],
        m: &Matching<'_>,
    ) -> Result<Option<Vec<StepSeries>>, QueryError> {
        if matches!(m.card, VectorMatchCardinality::ManyToMany) {
            return Ok(None);
        }
        let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
        let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
        let (many, one) = if one_to_many {
            (right, left)
        } else {
            (left, right)
        };
        let mut one_by_key: FastMap<String, usize> = map_with_capacity(one.len());
        for (i, s) in one.iter().enumerate() {
            if !s.points.is_empty() && one_by_key.insert(signature(&s.labels, m), i).is_some() {
                return Ok(None);
            }
        }
        let mut many_keys: FastSet<String> = FastSet::default();
        let mut out = Vec::new();
        for e in many {
            if e.points.is_empty() {
                continue;
            }
            let key = signature(&e.labels, m);
            let Some(&oi) = one_by_key.get(&key) else {
                continue;
            };
            if one_to_one && !many_keys.insert(key) {
                return Ok(None);
            }
            let other = &one[oi];
            let mut points = Vec::with_capacity(e.points.len().min(other.points.len()));
            let (mut a, mut b) = (0, 0);
            while let (Some(x), Some(y)) = (e.points.get(a), other.points.get(b)) {
                if x.t < y.t {
                    a += 1;
                    continue;
                }
                if x.t > y.t {
                    b += 1;
                    continue;
                }
                a += 1;
                b += 1;
                let (l, r) = if one_to_many { (y.v, x.v) } else { (x.v, y.v) };
                let (mut v, keep) = self.apply(l, r)?;
                if self.return_bool {
                    v = f64::from(u8::from(keep));
                } else if !keep {
                    continue;
                }
                points.push(Point { t: x.t, v });
            }
            if points.is_empty() {
                continue;
            }
            let mut labels = result_labels(&e.labels, &other.labels, m, self.comparison);
            if self.return_bool {
                strip_name(&mut labels);
            }
            out.push(StepSeries { labels, points });
        }
        Ok(merge_disjoint(out).ok())
    }
}

/// `left and right` (`keep_matched`) or `left unless right`: the points of
/// `left` at the steps where `right` has (or has not) a series with the
/// same matching key.
fn and_unless(
    left: Vec<StepSeries>,
    right: &[StepSeries],
    m: &Matching<'_>,
    keep_matched: bool,
    steps: Steps,
) -> Vec<StepSeries> {
    let present = Presence::of(right, m, steps);
    left.into_iter()
        .filter_map(|mut s| {
            match present.row(&s.labels, m) {
                Some(row) => s.points.retain(|p| row[steps.index(p.t)] == keep_matched),
                None if keep_matched => return None,
                None => {}
            }
            (!s.points.is_empty()).then_some(s)
        })
        .collect()
}

/// `left or right`: all of `left`, and the points of `right` at the steps
/// where `left` has no series with the same matching key.
fn or(
    left: Vec<StepSeries>,
    right: Vec<StepSeries>,
    m: &Matching<'_>,
    steps: Steps,
) -> Result<Vec<StepSeries>, QueryError> {
    let present = Presence::of(&left, m, steps);
    let mut out: Vec<StepSeries> = left.into_iter().filter(|s| !s.points.is_empty()).collect();
    for mut s in right {
        if let Some(row) = present.row(&s.labels, m) {
            s.points.retain(|p| !row[steps.index(p.t)]);
        }
        if !s.points.is_empty() {
            out.push(s);
        }
    }
    // A series of `right` with the labels of one of `left` has points only
    // at steps where that one has none: one series again.
    merge_same_labels(out)
}

/// The steps at which a vector has a series of each matching key.
struct Presence {
    rows: FastMap<String, usize>,
    /// One row of `steps` flags per key.
    flags: Vec<bool>,
    width: usize,
}

impl Presence {
    fn of(series: &[StepSeries], m: &Matching<'_>, steps: Steps) -> Presence {
        let width = steps.count();
        let mut rows: FastMap<String, usize> = FastMap::default();
        let mut flags = Vec::new();
        for s in series {
            if s.points.is_empty() {
                continue;
            }
            let next = rows.len();
            let row = *rows.entry(signature(&s.labels, m)).or_insert(next);
            if row == next {
                flags.resize(flags.len() + width, false);
            }
            for p in &s.points {
                flags[row * width + steps.index(p.t)] = true;
            }
        }
        Presence { rows, flags, width }
    }

    /// The flags of the key of `labels`, if the vector has it at all.
    fn row(&self, labels: &[Label], m: &Matching<'_>) -> Option<&[bool]> {
        let row = *self.rows.get(&signature(labels, m))?;
        Some(&self.flags[row * self.width..(row + 1) * self.width])
    }
}

fn matching_of(b: &BinaryExpr) -> Matching<'_> {
    static ONE_TO_ONE: VectorMatchCardinality = VectorMatchCardinality::OneToOne;
    let Some(m) = &b.modifier else {
        return Matching {
            card: &ONE_TO_ONE,
            on: false,
            names: Vec::new(),
            include: Vec::new(),
        };
    };
    let names = |l: &NameList| l.labels.clone();
    let (on, list) = match &m.matching {
        Some(LabelModifier::Include(l)) => (true, names(l)),
        Some(LabelModifier::Exclude(l)) => (false, names(l)),
        None => (false, Vec::new()),
    };
    Matching {
        card: &m.card,
        on,
        names: list,
        include: m.card.labels().map(names).unwrap_or_default(),
    }
}

/// The matching key of a label set: the `on` labels, or every label but the
/// `ignoring` ones and `__name__`.
fn signature(labels: &[Label], m: &Matching<'_>) -> String {
    let mut key = String::new();
    for l in labels {
        let included = if m.on {
            m.names.iter().any(|n| n == &l.name)
        } else {
            l.name != METRIC_NAME_LABEL && !m.names.iter().any(|n| n == &l.name)
        };
        if included {
            key.push_str(&l.name);
            key.push('\u{ff}');
            key.push_str(&l.value);
            key.push('\u{ff}');
        }
    }
    key
}

/// The labels a match group is identified by, for error messages.
fn match_labels(labels: &[Label], m: &Matching<'_>) -> Vec<Label> {
    labels
        .iter()
        .filter(|l| {
            if m.on {
                m.names.iter().any(|n| n == &l.name)
            } else {
                l.name != METRIC_NAME_LABEL && !m.names.iter().any(|n| n == &l.name)
            }
        })
        .cloned()
        .collect()
}

/// Per-query caches keyed by label-set address (the inputs stay alive for
/// the whole evaluation, so an address names one label set): matching keys
/// and result labels are computed once per series, not once per step.
#[derive(Default)]
struct Memo {
    signatures: FastMap<usize, Arc<str>>,
    results: FastMap<(usize, usize), Shared>,
}

impl Memo {
    fn signature(&mut self, labels: &Shared, m: &Matching<'_>) -> Arc<str> {
        self.signatures
            .entry(Arc::as_ptr(labels) as usize)
            .or_insert_with(|| Arc::from(signature(labels, m)))
            .clone()
    }
}

/// Arithmetic or comparison between two vectors at one step.
fn vector_vector(
    operands: &Operands<'_>,
    left: Vec<Elem>,
    right: Vec<Elem>,
    m: &Matching<'_>,
    memo: &mut Memo,
) -> Result<Vec<Elem>, QueryError> {
    let (return_bool, comparison) = (operands.return_bool, operands.comparison);
    if matches!(m.card, VectorMatchCardinality::ManyToMany) {
        return Err(QueryError::BadData(
            "many-to-many matching is only allowed for set operators".into(),
        ));
    }
    // Nothing can match: answer nothing without checking the other side
    // for duplicate match groups, as Prometheus does.
    if left.is_empty() || right.is_empty() {
        return Ok(Vec::new());
    }
    let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
    // The "one" side is indexed; the "many" side is walked.
    let (many, one) = if one_to_many {
        (right, left)
    } else {
        (left, right)
    };
    let mut one_by_key: FastMap<Arc<str>, &Elem> = map_with_capacity(one.len());
    for e in &one {
        let key = memo.signature(&e.labels, m);
        if one_by_key.contains_key(&key) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(duplicate_match_group(&one, m, memo, side));
        }
        one_by_key.insert(key, e);
    }
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    let mut matched: FastMap<Arc<str>, FastSet<Shared>> = FastMap::default();
    let mut out = Vec::new();
    for e in &many {
        let key = memo.signature(&e.labels, m);
        let Some(other) = one_by_key.get(&key) else {
            continue;
        };
        let (l, r) = if one_to_many {
            (other.v, e.v)
        } else {
            (e.v, other.v)
        };
        let (mut v, keep) = operands.apply(l, r)?;
        if return_bool {
            v = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let address = (
            Arc::as_ptr(&e.labels) as usize,
            Arc::as_ptr(&other.labels) as usize,
        );
        let labels = memo
            .results
            .entry(address)
            .or_insert_with(|| {
                let labels = result_labels(&e.labels, &other.labels, m, comparison);
                if return_bool {
                    drop_name(&labels)
                } else {
                    labels
                }
            })
            .clone();
        match matched.get_mut(&key) {
            None => {
                let mut set = FastSet::default();
                set.insert(labels.clone());
                matched.insert(key, set);
            }
            Some(set) => {
                if one_to_one {
                    return Err(QueryError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit \
                         (group_left/group_right)"
                            .into(),
                    ));
                }
                if !set.insert(labels.clone()) {
                    return Err(QueryError::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into(),
                    ));
                }
            }
        }
        out.push(Elem { labels, v });
    }
    Ok(out)
}

/// The error for a "one" side with two series in one match group, naming
/// the first such pair in label order (the order Prometheus reads series
/// in), so that the message does not depend on the order the source
/// streamed them in.
fn duplicate_match_group(
    one: &[Elem],
    m: &Matching<'_>,
    memo: &mut Memo,
    side: &str,
) -> QueryError {
    let mut sorted: Vec<&Elem> = one.iter().collect();
    sorted.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut seen: FastMap<Arc<str>, &Elem> = map_with_capacity(sorted.len());
    for e in sorted {
        let key = memo.signature(&e.labels, m);
        if let Some(dup) = seen.get(&key) {
            return QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the \
                 operation: [{}, {}];many-to-many matching not allowed: matching labels must be \
                 unique on one side",
                format_labels(&match_labels(&e.labels, m)),
                format_labels(&e.labels),
                format_labels(&dup.labels),
            ));
        }
        seen.insert(key, e);
    }
    QueryError::Execution(format!(
        "found duplicate series on the {side} hand-side of the operation"
    ))
}

/// Labels of a vector-vector result: the "many" side's, without `__name__`
/// for arithmetic, reduced to the matching labels for one-to-one matching,
/// plus the `group_x` labels copied from the "one" side.
fn result_labels(many: &Shared, one: &Shared, m: &Matching<'_>, comparison: bool) -> Shared {
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    if comparison && !one_to_one && m.include.is_empty() {
        return many.clone();
    }
    let mut labels: Vec<Label> = many
        .iter()
        .filter(|l| {
            if !comparison && l.name == METRIC_NAME_LABEL {
                return false;
            }
            if one_to_one {
                let listed = m.names.iter().any(|n| n == &l.name);
                if m.on { listed } else { !listed }
            } else {
                true
            }
        })
        .cloned()
        .collect();
    for name in &m.include {
        labels.retain(|l| &l.name != name);
        if let Some(l) = one.iter().find(|l| &l.name == name)
            && !l.value.is_empty()
        {
            labels.push(l.clone());
        }
    }
    labels.sort();
    Arc::new(labels)
}
