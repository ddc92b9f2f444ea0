//! Comparison of query results with the expectations of an `eval`, with the
//! rules of the reference runner: floats equal within a relative epsilon,
//! NaN equal to NaN, label sets exact, element order only for `eval_ordered`,
//! matrix series sorted by labels.

use std::collections::{HashMap, HashSet};

use strata_storage::engine::format_series;

use crate::promql::value::{Labels, Sample, Series, Value};

use super::parse::{Expectation, SeqValue, SeriesValues};

/// Relative error allowed between an expected and a computed value.
pub const EPSILON: f64 = 0.000001;

/// Whether `a` and `b` are equal within the relative error `epsilon`; two
/// NaNs are equal.
pub fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// The expected float of a series line in an instant eval.
fn instant_value(values: &SeriesValues) -> Option<f64> {
    match values {
        SeriesValues::Floats(v) => match v.first() {
            Some(SeqValue::Float(f)) => Some(*f),
            _ => None,
        },
        SeriesValues::Histograms(_) => None,
    }
}

/// Renders the expectation for failure messages.
pub fn format_expected(expect: &Expectation) -> String {
    if let Some(v) = expect.scalar {
        return format!("scalar {v}");
    }
    if let Some(s) = &expect.string {
        return format!("string {s:?}");
    }
    if expect.series.is_empty() {
        return "nothing".to_string();
    }
    let lines: Vec<String> = expect
        .series
        .iter()
        .map(|s| {
            let values = match &s.values {
                SeriesValues::Floats(v) => v
                    .iter()
                    .map(|x| match x {
                        SeqValue::Omitted => "_".to_string(),
                        SeqValue::Float(f) => f.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                SeriesValues::Histograms(h) => h.clone(),
            };
            format!("  {} {values}", format_series(&s.labels))
        })
        .collect();
    format!("\n{}", lines.join("\n"))
}

/// Renders a result for failure messages.
pub fn format_value(value: &Value) -> String {
    match value {
        Value::Scalar { v, .. } => format!("scalar {v}"),
        Value::String { s, .. } => format!("string {s:?}"),
        Value::Vector(v) if v.is_empty() => "empty vector".to_string(),
        Value::Vector(v) => {
            let lines: Vec<String> = v
                .iter()
                .map(|s| format!("  {} {}", format_series(&s.labels), s.v))
                .collect();
            format!("vector\n{}", lines.join("\n"))
        }
        Value::Matrix(m) if m.is_empty() => "empty matrix".to_string(),
        Value::Matrix(m) => {
            let lines: Vec<String> = m
                .iter()
                .map(|s| {
                    let points: Vec<String> = s
                        .points
                        .iter()
                        .map(|p| format!("{}@{}", p.v, p.t))
                        .collect();
                    format!("  {} {}", format_series(&s.labels), points.join(" "))
                })
                .collect();
            format!("matrix\n{}", lines.join("\n"))
        }
    }
}

/// Checks the result of an instant eval.
pub fn check_instant(expect: &Expectation, got: &Value) -> Result<(), String> {
    match got {
        Value::Scalar { v, .. } => match expect.scalar {
            Some(want) if almost_equal(want, *v, EPSILON) => Ok(()),
            Some(want) => Err(format!("expected scalar {want}, got {v}")),
            None => Err("expected a vector, got a scalar".to_string()),
        },
        Value::String { s, .. } => match &expect.string {
            Some(want) if want == s => Ok(()),
            Some(want) => Err(format!("expected string {want:?}, got {s:?}")),
            None => Err("got a string, which was not expected".to_string()),
        },
        Value::Vector(v) => check_vector(expect, v),
        Value::Matrix(m) => {
            if m.is_empty() && expect.series.is_empty() && expect.scalar.is_none() {
                Ok(())
            } else {
                Err(
                    "instant eval returned a matrix; matrix expectations of instant evals \
                     are not supported"
                        .to_string(),
                )
            }
        }
    }
}

/// Checks a vector against the expected series lines.
pub fn check_vector(expect: &Expectation, got: &[Sample]) -> Result<(), String> {
    if let Some(want) = expect.scalar {
        return Err(format!("expected scalar {want}, got a vector"));
    }
    if expect.string.is_some() {
        return Err("expected a string, got a vector".to_string());
    }
    let mut wanted: HashMap<&Labels, (usize, f64)> = HashMap::new();
    for (pos, s) in expect.series.iter().enumerate() {
        let v = instant_value(&s.values).ok_or_else(|| {
            format!(
                "expected series {} has no float value",
                format_series(&s.labels)
            )
        })?;
        wanted.insert(&s.labels, (pos, v));
    }
    let mut seen = HashSet::new();
    for (pos, s) in got.iter().enumerate() {
        let Some(&(want_pos, want)) = wanted.get(&s.labels) else {
            return Err(format!(
                "unexpected series {} with value {}",
                format_series(&s.labels),
                s.v
            ));
        };
        if !seen.insert(&s.labels) {
            return Err(format!(
                "series {} appears twice in the result",
                format_series(&s.labels)
            ));
        }
        if expect.ordered && want_pos != pos {
            return Err(format!(
                "expected series {} at position {}, got it at {}",
                format_series(&s.labels),
                want_pos + 1,
                pos + 1
            ));
        }
        if !almost_equal(want, s.v, EPSILON) {
            return Err(format!(
                "expected {} for {}, got {}",
                want,
                format_series(&s.labels),
                s.v
            ));
        }
    }
    for s in &expect.series {
        if !seen.contains(&s.labels) {
            return Err(format!(
                "expected series {} not in the result",
                format_series(&s.labels)
            ));
        }
    }
    Ok(())
}

/// Checks the result of a range eval over `start..=end` by `step`.
pub fn check_range(
    expect: &Expectation,
    start: i64,
    end: i64,
    step: i64,
    got: &Value,
) -> Result<(), String> {
    let Value::Matrix(got) = got else {
        return Err(format!(
            "a range query must return a matrix, got a {}",
            got.type_name()
        ));
    };
    if expect.scalar.is_some() || expect.string.is_some() {
        return Err("a range eval expects series lines, not a bare value".to_string());
    }
    check_sorted(got)?;
    let mut wanted: HashMap<&Labels, Vec<(i64, f64)>> = HashMap::new();
    for s in &expect.series {
        let SeriesValues::Floats(values) = &s.values else {
            return Err(format!(
                "expected series {} has no float values",
                format_series(&s.labels)
            ));
        };
        let mut points = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let t = start + i as i64 * step;
            if t > end {
                return Err(format!(
                    "{} expected points for {}, more than the time range has",
                    values.len(),
                    format_series(&s.labels)
                ));
            }
            if let SeqValue::Float(f) = v {
                points.push((t, *f));
            }
        }
        wanted.insert(&s.labels, points);
    }
    let mut seen = HashSet::new();
    for s in got {
        let Some(want) = wanted.get(&s.labels) else {
            return Err(format!("unexpected series {}", format_series(&s.labels)));
        };
        seen.insert(&s.labels);
        if want.len() != s.points.len() {
            return Err(format!(
                "expected {} points for {}, got {}",
                want.len(),
                format_series(&s.labels),
                s.points.len()
            ));
        }
        for (i, (&(t, v), p)) in want.iter().zip(&s.points).enumerate() {
            if t != p.t {
                return Err(format!(
                    "point {i} of {}: expected timestamp {t}, got {}",
                    format_series(&s.labels),
                    p.t
                ));
            }
            if !almost_equal(v, p.v, EPSILON) {
                return Err(format!(
                    "point {i} (t={t}) of {}: expected {v}, got {}",
                    format_series(&s.labels),
                    p.v
                ));
            }
        }
    }
    for s in &expect.series {
        if !seen.contains(&s.labels) {
            return Err(format!(
                "expected series {} not in the result",
                format_series(&s.labels)
            ));
        }
    }
    Ok(())
}

/// Matrix results are sorted by label set, each label set once.
fn check_sorted(m: &[Series]) -> Result<(), String> {
    for w in m.windows(2) {
        if w[0].labels >= w[1].labels {
            return Err(format!(
                "matrix not sorted by labels: {} before {}",
                format_series(&w[0].labels),
                format_series(&w[1].labels)
            ));
        }
    }
    Ok(())
}
