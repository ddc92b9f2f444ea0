//! Parser of the JSON-lines import format, one series per line:
//!
//! ```text
//! {"metric":{"__name__":"up","job":"x"},"values":[1,2.5,"NaN"],"timestamps":[1700000000000,1700000015000,1700000030000]}
//! ```
//!
//! - `metric`: label names to string values. Labels with an empty value are
//!   dropped (an empty value means "no such label" to every matcher); at least
//!   one label must remain. Names must be non-empty and unique.
//! - `values`: JSON numbers, or strings that parse as a float (`"NaN"`,
//!   `"Inf"`, `"+Inf"`, `"-Inf"`, `"1.5"`, case-insensitive).
//! - `timestamps`: integer milliseconds since the Unix epoch, one per value.
//! - Empty (or whitespace-only) lines are skipped; a trailing `\r` is ignored.
//!
//! The whole body is validated before anything is returned: one bad line
//! rejects the request, so a client never has half of a request stored
//! without knowing which half.

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use strata_storage::{Label, Sample, SeriesSamples};

pub use crate::ingest::Parsed;

/// The first bad line of a body, plus how many samples the whole body held
/// (all of them are rejected).
#[derive(Debug, PartialEq)]
pub struct ParseFailure {
    pub error: ParseError,
    pub rows: u64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// 1-based line number in the decompressed body.
    pub line: usize,
    pub problem: Problem,
}

/// What is wrong with a line.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("missing \"{0}\"")]
    MissingField(&'static str),
    #[error("{values} values but {timestamps} timestamps")]
    LengthMismatch { values: usize, timestamps: usize },
    #[error("values[{index}] is not a number: {found}")]
    InvalidValue { index: usize, found: String },
    #[error("timestamps[{index}] is not a 64-bit integer of milliseconds: {found}")]
    InvalidTimestamp { index: usize, found: String },
    #[error("empty label name")]
    EmptyLabelName,
    #[error("duplicate label name {0:?}")]
    DuplicateLabelName(String),
    #[error("value of label {name:?} is not a string: {found}")]
    InvalidLabelValue { name: String, found: String },
    #[error("metric has no labels")]
    NoLabels,
}

impl Problem {
    /// The `reason` label of the rejected-rows counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidJson(_) => "invalid_json",
            Problem::MissingField(_) => "missing_field",
            Problem::LengthMismatch { .. } => "length_mismatch",
            Problem::InvalidValue { .. } => "invalid_value",
            Problem::InvalidTimestamp { .. } => "invalid_timestamp",
            Problem::EmptyLabelName => "empty_label_name",
            Problem::DuplicateLabelName(_) => "duplicate_label_name",
            Problem::InvalidLabelValue { .. } => "invalid_label_value",
            Problem::NoLabels => "no_labels",
        }
    }
}

/// Parses a whole (decompressed) body.
pub fn parse(body: &[u8]) -> Result<Parsed, ParseFailure> {
    let mut parsed = Parsed::default();
    let mut first_error: Option<ParseError> = None;
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line) {
            Ok(series) => {
                parsed.rows += series.samples.len() as u64;
                // After an error, keep reading only to count the rejected rows.
                if first_error.is_none() {
                    parsed.series.push(series);
                }
            }
            Err((problem, rows)) => {
                parsed.rows += rows;
                if first_error.is_none() {
                    first_error = Some(ParseError {
                        line: index + 1,
                        problem,
                    });
                    parsed.series = Vec::new();
                }
            }
        }
    }
    match first_error {
        None => Ok(parsed),
        Some(error) => Err(ParseFailure {
            error,
            rows: parsed.rows,
        }),
    }
}

#[derive(Deserialize)]
struct RawLine {
    metric: Option<RawLabels>,
    values: Option<Vec<Value>>,
    timestamps: Option<Vec<Value>>,
}

/// Label pairs in input order, duplicates kept so that they can be reported
/// (a JSON map type would silently keep only the last one).
struct RawLabels(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for RawLabels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(LabelsVisitor)
    }
}

struct LabelsVisitor;

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = RawLabels;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of label names to string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawLabels, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(pair) = map.next_entry::<String, Value>()? {
            pairs.push(pair);
        }
        Ok(RawLabels(pairs))
    }
}

/// Parses one non-empty line. On error also returns how many samples the
/// line seemed to carry, for the rejected-rows counter.
fn parse_line(line: &[u8]) -> Result<SeriesSamples, (Problem, u64)> {
    let raw: RawLine =
        serde_json::from_slice(line).map_err(|e| (Problem::InvalidJson(json_error(&e)), 1))?;
    let rows = raw.values.as_ref().map_or(1, |v| v.len() as u64);
    let fail = |problem| (problem, rows);

    let metric = raw
        .metric
        .ok_or_else(|| fail(Problem::MissingField("metric")))?;
    let values = raw
        .values
        .ok_or_else(|| fail(Problem::MissingField("values")))?;
    let timestamps = raw
        .timestamps
        .ok_or_else(|| fail(Problem::MissingField("timestamps")))?;

    let labels = labels(metric).map_err(fail)?;
    if values.len() != timestamps.len() {
        return Err(fail(Problem::LengthMismatch {
            values: values.len(),
            timestamps: timestamps.len(),
        }));
    }
    let mut samples = Vec::with_capacity(values.len());
    for (index, (v, t)) in values.iter().zip(&timestamps).enumerate() {
        let value = sample_value(v).ok_or_else(|| {
            fail(Problem::InvalidValue {
                index,
                found: excerpt(v),
            })
        })?;
        let timestamp = t.as_i64().ok_or_else(|| {
            fail(Problem::InvalidTimestamp {
                index,
                found: excerpt(t),
            })
        })?;
        samples.push(Sample::new(timestamp, value));
    }
    Ok(SeriesSamples { labels, samples })
}

fn labels(metric: RawLabels) -> Result<Vec<Label>, Problem> {
    let mut labels: Vec<Label> = Vec::with_capacity(metric.0.len());
    for (name, value) in metric.0 {
        if name.is_empty() {
            return Err(Problem::EmptyLabelName);
        }
        let Value::String(value) = value else {
            return Err(Problem::InvalidLabelValue {
                found: excerpt(&value),
                name,
            });
        };
        // Label sets are small: a linear scan beats hashing here.
        if labels.iter().any(|l| l.name == name) {
            return Err(Problem::DuplicateLabelName(name));
        }
        labels.push(Label { name, value });
    }
    // Checked after the duplicate test so that `{"a":"","a":"x"}` is reported.
    labels.retain(|l| !l.value.is_empty());
    if labels.is_empty() {
        return Err(Problem::NoLabels);
    }
    Ok(labels)
}

fn sample_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // Rust's float grammar accepts "NaN", "inf", "+Infinity", ... in any case.
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    }
}

/// The offending JSON value, shortened for an error message.
fn excerpt(v: &Value) -> String {
    const MAX: usize = 40;
    let s = v.to_string();
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// serde_json appends "at line 1 column N", where the line is always 1 here;
/// keep only the column.
fn json_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(message) if e.column() > 0 => format!("{message} at column {}", e.column()),
        Some(message) => message.to_string(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Parsed {
        parse(body.as_bytes()).unwrap_or_else(|f| panic!("{body:?} failed: {}", f.error))
    }

    #[test]
    fn parses_series_with_numbers_and_strings() {
        let body = concat!(
            r#"{"metric":{"__name__":"up","job":"x"},"values":[1,2.5,"NaN","Inf","-Inf","+inf","0.1",-3e-7,1e300],"#,
            r#""timestamps":[1,2,3,4,5,6,7,8,-9]}"#,
            "\n\r\n   \n",
            r#"{"timestamps":[10],"values":[-0.0],"metric":{"b":"2","a":"1","empty":""},"extra":true}"#,
            "\r\n"
        );
        let parsed = ok(body);
        assert_eq!(parsed.rows, 10);
        assert_eq!(parsed.series.len(), 2);
        let first = &parsed.series[0];
        assert_eq!(
            first.labels,
            vec![Label::new("__name__", "up"), Label::new("job", "x")]
        );
        let values: Vec<f64> = first.samples.iter().map(|s| s.value).collect();
        assert_eq!(values[0], 1.0);
        assert_eq!(values[1], 2.5);
        assert!(values[2].is_nan());
        assert_eq!(values[3], f64::INFINITY);
        assert_eq!(values[4], f64::NEG_INFINITY);
        assert_eq!(values[5], f64::INFINITY);
        assert_eq!(values[6], 0.1);
        assert_eq!(values[7], -3e-7);
        assert_eq!(values[8], 1e300);
        assert_eq!(first.samples[8].timestamp, -9);
        let second = &parsed.series[1];
        assert_eq!(
            second.labels,
            vec![Label::new("b", "2"), Label::new("a", "1")],
            "empty-valued labels are dropped, order is kept"
        );
        assert!(second.samples[0].value.is_sign_negative());
    }

    #[test]
    fn decimals_parse_to_the_nearest_float() {
        // Values where a fast but inexact decimal parser is off by one ulp.
        for text in [
            "0.3",
            "2.2250738585072011e-308",
            "9007199254740993",
            "1.7976931348623157e308",
            "5e-324",
            "0.1000000000000000055511151231257827",
            "123456.789e-3",
        ] {
            let body = format!(r#"{{"metric":{{"a":"b"}},"values":[{text}],"timestamps":[1]}}"#);
            let got = ok(&body).series[0].samples[0].value;
            let want: f64 = text.parse().expect("valid float");
            assert_eq!(got.to_bits(), want.to_bits(), "{text}");
        }
    }

    #[test]
    fn empty_body_is_valid() {
        assert_eq!(ok(""), Parsed::default());
        assert_eq!(ok("\n\n"), Parsed::default());
    }

    #[test]
    fn bad_lines_name_line_and_problem() {
        let good = r#"{"metric":{"a":"b"},"values":[1,2],"timestamps":[1,2]}"#;
        let check = |bad: &str, want: &str, reason: &str| {
            // The bad line is line 3, after a good line and an empty line.
            let body = format!("{good}\n\n{bad}\n{good}\n");
            let failure = parse(body.as_bytes()).expect_err(bad);
            assert_eq!(failure.error.line, 3, "{bad}");
            assert_eq!(failure.error.to_string(), want, "{bad}");
            assert_eq!(failure.error.problem.reason(), reason, "{bad}");
        };
        check(
            "{not json",
            "line 3: invalid JSON: key must be a string at column 2",
            "invalid_json",
        );
        check(
            r#"{"values":[1],"timestamps":[1]}"#,
            r#"line 3: missing "metric""#,
            "missing_field",
        );
        check(
            r#"{"metric":{"a":"b"},"timestamps":[1]}"#,
            r#"line 3: missing "values""#,
            "missing_field",
        );
        check(
            r#"{"metric":{"a":"b"},"values":[1]}"#,
            r#"line 3: missing "timestamps""#,
            "missing_field",
        );
        check(
            r#"{"metric":{"a":"b"},"values":[1,2],"timestamps":[1]}"#,
            "line 3: 2 values but 1 timestamps",
            "length_mismatch",
        );
        check(
            r#"{"metric":{"a":"b"},"values":[1,"abc"],"timestamps":[1,2]}"#,
            r#"line 3: values[1] is not a number: "abc""#,
            "invalid_value",
        );
        check(
            r#"{"metric":{"a":"b"},"values":[null],"timestamps":[1]}"#,
            "line 3: values[0] is not a number: null",
            "invalid_value",
        );
        check(
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1.5]}"#,
            "line 3: timestamps[0] is not a 64-bit integer of milliseconds: 1.5",
            "invalid_timestamp",
        );
        check(
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":["1"]}"#,
            r#"line 3: timestamps[0] is not a 64-bit integer of milliseconds: "1""#,
            "invalid_timestamp",
        );
        check(
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[9223372036854775808]}"#,
            "line 3: timestamps[0] is not a 64-bit integer of milliseconds: 9223372036854775808",
            "invalid_timestamp",
        );
        check(
            r#"{"metric":{"":"b"},"values":[1],"timestamps":[1]}"#,
            "line 3: empty label name",
            "empty_label_name",
        );
        check(
            r#"{"metric":{"a":"b","a":"c"},"values":[1],"timestamps":[1]}"#,
            r#"line 3: duplicate label name "a""#,
            "duplicate_label_name",
        );
        check(
            r#"{"metric":{"a":1},"values":[1],"timestamps":[1]}"#,
            r#"line 3: value of label "a" is not a string: 1"#,
            "invalid_label_value",
        );
        check(
            r#"{"metric":{},"values":[1],"timestamps":[1]}"#,
            "line 3: metric has no labels",
            "no_labels",
        );
        check(
            r#"{"metric":{"a":""},"values":[1],"timestamps":[1]}"#,
            "line 3: metric has no labels",
            "no_labels",
        );
        check(
            r#"{"metric":"up","values":[1],"timestamps":[1]}"#,
            r#"line 3: invalid JSON: invalid type: string "up", expected an object of label names to string values at column 14"#,
            "invalid_json",
        );
        check(
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1]} trailing"#,
            "line 3: invalid JSON: trailing characters at column 52",
            "invalid_json",
        );
    }

    #[test]
    fn failure_counts_every_row_of_the_body() {
        let body = concat!(
            r#"{"metric":{"a":"b"},"values":[1,2],"timestamps":[1,2]}"#,
            "\n",
            r#"{"metric":{"a":"b"},"values":[1,2,3],"timestamps":[1]}"#,
            "\n",
            "garbage\n",
            r#"{"metric":{"a":"b"},"values":[1,2,3,4],"timestamps":[1,2,3,4]}"#,
        );
        let failure = parse(body.as_bytes()).expect_err("bad body");
        assert_eq!(failure.error.line, 2);
        assert_eq!(failure.rows, 2 + 3 + 1 + 4);
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(100);
        let body = format!(r#"{{"metric":{{"a":"b"}},"values":["{long}"],"timestamps":[1]}}"#);
        let msg = parse(body.as_bytes()).expect_err("bad").error.to_string();
        assert!(msg.ends_with("...") && msg.len() < 100, "{msg}");
    }
}
