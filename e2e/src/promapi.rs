//! Answers of the Prometheus query API in a comparable form, and their
//! comparison: what the differential tests against Prometheus check.
//!
//! Two answers are equal when both failed with the same `errorType`, or both
//! succeeded with the same result type and, after sorting series by labels,
//! the same label sets with the same timestamps and values within a relative
//! tolerance (NaN equals NaN, infinities equal by sign).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// A label set, sorted by name.
pub type LabelSet = BTreeMap<String, String>;

/// One series of a vector (one point) or matrix answer.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesPoints {
    pub labels: LabelSet,
    /// (milliseconds, value)
    pub points: Vec<(i64, f64)>,
}

/// A parsed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Error {
        error_type: String,
        message: String,
    },
    Scalar(i64, f64),
    String(i64, String),
    /// Vector or matrix: the result type and its series, sorted by labels.
    Series {
        result_type: String,
        series: Vec<SeriesPoints>,
    },
}

/// Parses a query API body. A body that is not a Prometheus API answer is an
/// `Error` with type `malformed`.
pub fn parse_answer(body: &str) -> Answer {
    let malformed = |why: &str| Answer::Error {
        error_type: "malformed".to_string(),
        message: format!("{why}: {}", truncate(body, 300)),
    };
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        return malformed("not JSON");
    };
    match json.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            return Answer::Error {
                error_type: json
                    .get("errorType")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                message: json
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            };
        }
        _ => return malformed("no status"),
    }
    let Some(data) = json.get("data") else {
        return malformed("no data");
    };
    let result_type = data.get("resultType").and_then(Value::as_str).unwrap_or("");
    let result = data.get("result").unwrap_or(&Value::Null);
    match result_type {
        "scalar" | "string" => {
            let Some((t, v)) = point(result) else {
                return malformed("bad scalar");
            };
            if result_type == "scalar" {
                match parse_value(v) {
                    Some(v) => Answer::Scalar(t, v),
                    None => malformed("bad scalar value"),
                }
            } else {
                Answer::String(t, v.as_str().unwrap_or("").to_string())
            }
        }
        "vector" | "matrix" => {
            let Some(items) = result.as_array() else {
                return malformed("result is not an array");
            };
            let mut series = Vec::with_capacity(items.len());
            for item in items {
                let labels: LabelSet = item
                    .get("metric")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let raw_points: Vec<&Value> = if result_type == "vector" {
                    item.get("value").into_iter().collect()
                } else {
                    item.get("values")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().collect())
                        .unwrap_or_default()
                };
                let mut points = Vec::with_capacity(raw_points.len());
                for p in raw_points {
                    match point(p).and_then(|(t, v)| Some((t, parse_value(v)?))) {
                        Some(tv) => points.push(tv),
                        None => return malformed("bad point"),
                    }
                }
                series.push(SeriesPoints { labels, points });
            }
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            Answer::Series {
                result_type: result_type.to_string(),
                series,
            }
        }
        _ => malformed("unknown resultType"),
    }
}

fn point(v: &Value) -> Option<(i64, &Value)> {
    let pair = v.as_array()?;
    let t = pair.first()?.as_f64()?;
    Some(((t * 1000.0).round() as i64, pair.get(1)?))
}

fn parse_value(v: &Value) -> Option<f64> {
    match v.as_str()? {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

/// Whether `a` and `b` agree within `rel` relative tolerance.
pub fn values_equal(a: f64, b: f64, rel: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    (a - b).abs() <= rel * a.abs().max(b.abs())
}

/// `None` when equal, else a description of the first difference.
pub fn first_difference(want: &Answer, got: &Answer, rel: f64) -> Option<String> {
    match (want, got) {
        (Answer::Error { error_type: a, .. }, Answer::Error { error_type: b, .. }) => {
            (a != b).then(|| format!("error types differ: {a} vs {b}"))
        }
        (Answer::Scalar(t1, v1), Answer::Scalar(t2, v2)) => (t1 != t2
            || !values_equal(*v1, *v2, rel))
        .then(|| format!("scalar differs: [{t1}, {v1}] vs [{t2}, {v2}]")),
        (Answer::String(t1, s1), Answer::String(t2, s2)) => (t1 != t2 || s1 != s2)
            .then(|| format!("string differs: [{t1}, {s1:?}] vs [{t2}, {s2:?}]")),
        (
            Answer::Series {
                result_type: rt1,
                series: s1,
            },
            Answer::Series {
                result_type: rt2,
                series: s2,
            },
        ) => {
            if rt1 != rt2 {
                return Some(format!("result types differ: {rt1} vs {rt2}"));
            }
            for i in 0..s1.len().max(s2.len()) {
                match (s1.get(i), s2.get(i)) {
                    (Some(a), Some(b)) if a.labels != b.labels => {
                        return Some(format!(
                            "series #{i} differs in labels: {} vs {} ({} vs {} series in all)",
                            format_labels(&a.labels),
                            format_labels(&b.labels),
                            s1.len(),
                            s2.len()
                        ));
                    }
                    (Some(a), Some(b)) => {
                        if let Some(d) = points_difference(&a.points, &b.points, rel) {
                            return Some(format!(
                                "series {} differs: {d}",
                                format_labels(&a.labels)
                            ));
                        }
                    }
                    (Some(a), None) => {
                        return Some(format!(
                            "series {} is missing from the second answer",
                            format_labels(&a.labels)
                        ));
                    }
                    (None, Some(b)) => {
                        return Some(format!(
                            "series {} is only in the second answer",
                            format_labels(&b.labels)
                        ));
                    }
                    (None, None) => {}
                }
            }
            None
        }
        _ => Some(format!(
            "answers differ in kind: {} vs {}",
            describe(want),
            describe(got)
        )),
    }
}

fn points_difference(a: &[(i64, f64)], b: &[(i64, f64)], rel: f64) -> Option<String> {
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(&(t1, v1)), Some(&(t2, v2))) => {
                if t1 != t2 || !values_equal(v1, v2, rel) {
                    return Some(format!("point #{i}: [{t1}, {v1}] vs [{t2}, {v2}]"));
                }
            }
            (Some(p), None) => return Some(format!("point {p:?} missing from the second")),
            (None, Some(p)) => return Some(format!("point {p:?} only in the second")),
            (None, None) => {}
        }
    }
    None
}

fn describe(a: &Answer) -> String {
    match a {
        Answer::Error {
            error_type,
            message,
        } => format!("error {error_type}: {message}"),
        Answer::Scalar(..) => "scalar".to_string(),
        Answer::String(..) => "string".to_string(),
        Answer::Series {
            result_type,
            series,
        } => format!("{result_type} of {} series", series.len()),
    }
}

/// `{a="1", b="2"}`
pub fn format_labels(labels: &LabelSet) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}={v:?}");
    }
    s.push('}');
    s
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_compare() {
        let a = parse_answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"b":"2"},"value":[1.5,"NaN"]},
                {"metric":{"a":"1"},"value":[1.5,"1"]}]}}"#,
        );
        let b = parse_answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"a":"1"},"value":[1.5,"1.0000000001"]},
                {"metric":{"b":"2"},"value":[1.5,"NaN"]}]}}"#,
        );
        assert_eq!(first_difference(&a, &b, 1e-6), None);
        let c = parse_answer(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"a":"1"},"value":[1.5,"1.1"]},
                {"metric":{"b":"2"},"value":[1.5,"NaN"]}]}}"#,
        );
        let diff = first_difference(&a, &c, 1e-6).expect("differs");
        assert!(diff.contains(r#"{a="1"}"#), "{diff}");
        let e1 = parse_answer(r#"{"status":"error","errorType":"bad_data","error":"x"}"#);
        let e2 = parse_answer(r#"{"status":"error","errorType":"bad_data","error":"y"}"#);
        assert_eq!(first_difference(&e1, &e2, 1e-6), None);
        assert!(first_difference(&e1, &a, 1e-6).is_some());
        let s1 = parse_answer(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#,
        );
        let s2 = parse_answer(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"-Inf"]}}"#,
        );
        assert!(first_difference(&s1, &s2, 1e-6).is_some());
        assert!(
            matches!(parse_answer("oops"), Answer::Error { error_type, .. } if error_type == "malformed")
        );
    }

    #[test]
    fn tolerance_is_relative() {
        assert!(values_equal(1e9, 1e9 + 1.0, 1e-6));
        assert!(!values_equal(1.0, 1.01, 1e-6));
        assert!(values_equal(0.0, 0.0, 1e-6));
        assert!(!values_equal(0.0, 1e-300, 1e-6));
        assert!(values_equal(f64::INFINITY, f64::INFINITY, 1e-6));
    }
}
