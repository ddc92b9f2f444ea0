//! Binary operators: arithmetic, comparisons (filtering or `bool`), the set
//! operators `and`/`or`/`unless`, and vector matching (`on`, `ignoring`,
//! `group_left`, `group_right`) with Prometheus' cardinality errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use promql_parser::label::Labels as NameList;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use strata_storage::{Label, METRIC_NAME_LABEL};

use super::engine::QueryError;
use super::eval::{Elem, Evaluator, Shared, Steps, Val, drop_name, format_labels};

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
    let op = b.op.to_string();
    let return_bool = b.return_bool();
    let lhs = ev.eval(&b.lhs, steps)?;
    let rhs = ev.eval(&b.rhs, steps)?;
    let held = lhs.samples() + rhs.samples();
    let comparison = b.op.is_comparison_operator();
    let result = match (&lhs, &rhs) {
        (Val::Scalar(a), Val::Scalar(c)) => {
            let mut out = Vec::with_capacity(a.len());
            for (x, y) in a.iter().zip(c) {
                let (v, keep) = apply(&op, *x, *y)?;
                out.push(if comparison {
                    f64::from(u8::from(keep))
                } else {
                    v
                });
            }
            ev.hold(out.len())?;
            Val::Scalar(out)
        }
        (Val::Vector(_), Val::Scalar(_)) | (Val::Scalar(_), Val::Vector(_)) => {
            let swap = matches!(lhs, Val::Scalar(_));
            let mut names = NameDropper::default();
            let out = ev.range_eval(steps, &[&lhs, &rhs], |_, _, args| {
                let (vector, scalar) = if swap {
                    (args[1].take_vector(), args[0].scalar())
                } else {
                    (args[0].take_vector(), args[1].scalar())
                };
                vector_scalar(
                    &op,
                    vector,
                    scalar,
                    swap,
                    return_bool,
                    comparison,
                    &mut names,
                )
            })?;
            Val::Vector(out)
        }
        (Val::Vector(_), Val::Vector(_)) => {
            let matching = matching_of(b);
            let mut memo = Memo::default();
            let out = ev.range_eval(steps, &[&lhs, &rhs], |_, _, args| {
                let left = args[0].take_vector();
                let right = args[1].take_vector();
                let memo = &mut memo;
                match op.as_str() {
                    "and" => Ok(and(left, right, &matching, memo)),
                    "or" => Ok(or(left, right, &matching, memo)),
                    "unless" => Ok(unless(left, right, &matching, memo)),
                    _ => vector_vector(&op, left, right, &matching, return_bool, comparison, memo),
                }
            })?;
            Val::Vector(out)
        }
        _ => {
            return Err(QueryError::BadData(format!(
                "binary operator {op} is not defined between {} and {}",
                lhs.type_name(),
                rhs.type_name()
            )));
        }
    };
    ev.release(held);
    Ok(result)
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

/// `drop_name` that answers one allocation per input label set, so the
/// results of every step share it.
#[derive(Default)]
struct NameDropper {
    dropped: HashMap<usize, Shared>,
}

impl NameDropper {
    fn drop_name(&mut self, labels: &Shared) -> Shared {
        self.dropped
            .entry(Arc::as_ptr(labels) as usize)
            .or_insert_with(|| drop_name(labels))
            .clone()
    }
}

/// The value of `lhs op rhs`, and for comparisons whether it holds.
pub(crate) fn apply(op: &str, lhs: f64, rhs: f64) -> Result<(f64, bool), QueryError> {
    Ok(match op {
        "+" => (lhs + rhs, true),
        "-" => (lhs - rhs, true),
        "*" => (lhs * rhs, true),
        "/" => (lhs / rhs, true),
        "%" => (lhs % rhs, true),
        "^" => (lhs.powf(rhs), true),
        "atan2" => (lhs.atan2(rhs), true),
        "==" => (lhs, lhs == rhs),
        "!=" => (lhs, lhs != rhs),
        ">" => (lhs, lhs > rhs),
        "<" => (lhs, lhs < rhs),
        ">=" => (lhs, lhs >= rhs),
        "<=" => (lhs, lhs <= rhs),
        other => {
            return Err(QueryError::BadData(format!(
                "operator {other:?} is not defined on scalars or vector elements"
            )));
        }
    })
}

fn vector_scalar(
    op: &str,
    vector: Vec<Elem>,
    scalar: f64,
    swap: bool,
    return_bool: bool,
    comparison: bool,
    names: &mut NameDropper,
) -> Result<Vec<Elem>, QueryError> {
    let mut out = Vec::with_capacity(vector.len());
    for e in vector {
        let (l, r) = if swap { (scalar, e.v) } else { (e.v, scalar) };
        let (mut v, mut keep) = apply(op, l, r)?;
        // A comparison keeps the vector's value even with the scalar on the left.
        if comparison && swap {
            v = r;
        }
        if return_bool {
            v = f64::from(u8::from(keep));
            keep = true;
        }
        if !keep {
            continue;
        }
        let labels = if !comparison || return_bool {
            names.drop_name(&e.labels)
        } else {
            e.labels
        };
        out.push(Elem { labels, v });
    }
    Ok(out)
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
    signatures: HashMap<usize, Arc<str>>,
    results: HashMap<(usize, usize), Shared>,
}

impl Memo {
    fn signature(&mut self, labels: &Shared, m: &Matching<'_>) -> Arc<str> {
        self.signatures
            .entry(Arc::as_ptr(labels) as usize)
            .or_insert_with(|| Arc::from(signature(labels, m)))
            .clone()
    }
}

fn and(left: Vec<Elem>, right: Vec<Elem>, m: &Matching<'_>, memo: &mut Memo) -> Vec<Elem> {
    let keys: HashSet<Arc<str>> = right.iter().map(|e| memo.signature(&e.labels, m)).collect();
    left.into_iter()
        .filter(|e| keys.contains(&memo.signature(&e.labels, m)))
        .collect()
}

fn or(left: Vec<Elem>, right: Vec<Elem>, m: &Matching<'_>, memo: &mut Memo) -> Vec<Elem> {
    let keys: HashSet<Arc<str>> = left.iter().map(|e| memo.signature(&e.labels, m)).collect();
    let mut out = left;
    out.extend(
        right
            .into_iter()
            .filter(|e| !keys.contains(&memo.signature(&e.labels, m))),
    );
    out
}

fn unless(left: Vec<Elem>, right: Vec<Elem>, m: &Matching<'_>, memo: &mut Memo) -> Vec<Elem> {
    let keys: HashSet<Arc<str>> = right.iter().map(|e| memo.signature(&e.labels, m)).collect();
    left.into_iter()
        .filter(|e| !keys.contains(&memo.signature(&e.labels, m)))
        .collect()
}

fn vector_vector(
    op: &str,
    left: Vec<Elem>,
    right: Vec<Elem>,
    m: &Matching<'_>,
    return_bool: bool,
    comparison: bool,
    memo: &mut Memo,
) -> Result<Vec<Elem>, QueryError> {
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
    let mut one_by_key: HashMap<Arc<str>, &Elem> = HashMap::with_capacity(one.len());
    for e in &one {
        let key = memo.signature(&e.labels, m);
        if let Some(dup) = one_by_key.get(&key) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the \
                 operation: [{}, {}];many-to-many matching not allowed: matching labels must be \
                 unique on one side",
                format_labels(&match_labels(&e.labels, m)),
                format_labels(&e.labels),
                format_labels(&dup.labels),
            )));
        }
        one_by_key.insert(key, e);
    }
    let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
    let mut matched: HashMap<Arc<str>, HashSet<Shared>> = HashMap::new();
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
        let (mut v, keep) = apply(op, l, r)?;
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
                let mut set = HashSet::new();
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
