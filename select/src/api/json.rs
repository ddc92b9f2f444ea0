//! JSON encoding of API responses, byte for byte as Prometheus writes them.
//!
//! ```text
//! {"status":"success","data":<data>,"warnings":["..."]}
//! {"status":"success","isPartial":true,"data":<data>,"warnings":["..."]}
//! {"status":"error","errorType":"bad_data","error":"..."}
//! ```
//!
//! Query results (`data` of `query` and `query_range`):
//!
//! ```text
//! {"resultType":"vector","result":[{"metric":{"__name__":"up"},"value":[1700000000.5,"1"]}]}
//! {"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"],[1700000015,"2"]]}]}
//! {"resultType":"scalar","result":[1700000000,"2"]}
//! {"resultType":"string","result":[1700000000,"text"]}
//! ```
//!
//! - Timestamps of vector and matrix samples are seconds: the integer part,
//!   then `.` and exactly three digits of milliseconds when those are not
//!   zero (`1.500`, `1.005`). Scalar and string results write the time as
//!   the shortest float instead (`1.5`, `1.005`).
//! - Values of vector and matrix samples are strings: the shortest decimal
//!   that parses back to the same float, without an exponent unless
//!   `|v| < 1e-6` or `|v| >= 1e21` (then `1e-07`, `1.5e+21`: at least two
//!   exponent digits, with a sign); `NaN`, `+Inf`, `-Inf` for the rest.
//!   Scalar values never use an exponent (`0.0000001`).
//! - Strings escape `<`, `>`, `&`, U+2028 and U+2029 as `\u003c`... as
//!   Prometheus does.
//! - Labels of a series are an object with keys in label-name order.

use std::fmt::Write as _;

use strata_storage::Label;

use crate::promql::Value;

/// Appends `s` as a JSON string.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends milliseconds `t` as seconds.
pub fn push_timestamp(out: &mut String, t: i64) {
    let abs = t.unsigned_abs();
    if t < 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", abs / 1000);
    let ms = abs % 1000;
    if ms != 0 {
        let _ = write!(out, ".{ms:03}");
    }
}

/// Appends the text of a float as Prometheus formats sample values (unquoted).
pub fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v != 0.0 && (v.abs() < 1e-6 || v.abs() >= 1e21) {
        // Rust writes `1.5e21` and `1e-7`; the exponent is rewritten to
        // carry a sign and at least two digits.
        let text = format!("{v:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        let _ = write!(out, "{mantissa}e{sign}{digits:0>2}");
    } else {
        // Display is the shortest text that round-trips, never with an exponent.
        let _ = write!(out, "{v}");
    }
}

/// Appends a value as Prometheus writes scalars: never with an exponent.
pub fn push_plain_float(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        push_float(out, v);
    }
}

/// Appends milliseconds `t` as the shortest float of seconds (scalar and
/// string results).
fn push_float_seconds(out: &mut String, t: i64) {
    let _ = write!(out, "{}", t as f64 / 1000.0);
}

/// Appends a `[<seconds>,"<value>"]` pair.
pub fn push_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    push_timestamp(out, t);
    out.push_str(",\"");
    push_float(out, v);
    out.push_str("\"]");
}

/// Appends a label set as an object.
pub fn push_labels(out: &mut String, labels: &[Label]) {
    out.push('{');
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, &label.name);
        out.push(':');
        push_str(out, &label.value);
    }
    out.push('}');
}

/// Appends `["a","b"]`.
pub fn push_str_array(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, item);
    }
    out.push(']');
}

/// Appends `"resultType":"...","result":...` (the object's braces are the caller's).
pub fn push_result(out: &mut String, value: &Value) {
    out.push_str("\"resultType\":");
    push_str(out, value.type_name());
    out.push_str(",\"result\":");
    match value {
        Value::Scalar { t, v } => {
            out.push('[');
            push_float_seconds(out, *t);
            out.push_str(",\"");
            push_plain_float(out, *v);
            out.push_str("\"]");
        }
        Value::String { t, s } => {
            out.push('[');
            push_float_seconds(out, *t);
            out.push(',');
            push_str(out, s);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push('[');
            for (i, sample) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(out, &sample.labels);
                out.push_str(",\"value\":");
                push_point(out, sample.t, sample.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, p) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_point(out, p.t, p.v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
}

/// A success envelope around `data` (already JSON). A partial answer
/// carries `"isPartial":true` after the status (where VictoriaMetrics' cluster
/// puts it); a complete one has no such field, as Prometheus answers.
pub fn success(data: &str, warnings: &[String], partial: bool) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"status\":\"success\",");
    if partial {
        out.push_str("\"isPartial\":true,");
    }
    out.push_str("\"data\":");
    out.push_str(data);
    if !warnings.is_empty() {
        out.push_str(",\"warnings\":");
        push_str_array(&mut out, warnings);
    }
    out.push('}');
    out
}

/// An error envelope.
pub fn error(error_type: &str, message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 64);
    out.push_str("{\"status\":\"error\",\"errorType\":");
    push_str(&mut out, error_type);
    out.push_str(",\"error\":");
    push_str(&mut out, message);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use strata_storage::STALE_NAN_BITS;

    use super::*;
    use crate::promql::{Point, Sample, Series};

    #[test]
    fn floats_format_like_prometheus() {
        let check = |v: f64, want: &str| {
            let mut s = String::new();
            push_float(&mut s, v);
            assert_eq!(s, want, "{v:?}");
        };
        check(0.0, "0");
        check(-0.0, "-0");
        check(1.0, "1");
        check(-2.5, "-2.5");
        check(0.1, "0.1");
        check(1.0 / 3.0, "0.3333333333333333");
        check(123456789.0, "123456789");
        check(1e20, "100000000000000000000");
        check(1e21, "1e+21");
        check(1.5e300, "1.5e+300");
        check(-1.5e21, "-1.5e+21");
        check(0.000001, "0.000001");
        check(1e-7, "1e-07");
        check(1.25e-10, "1.25e-10");
        check(5e-324, "5e-324");
        check(f64::MAX, "1.7976931348623157e+308");
        check(f64::NAN, "NaN");
        check(f64::from_bits(STALE_NAN_BITS), "NaN");
        check(f64::INFINITY, "+Inf");
        check(f64::NEG_INFINITY, "-Inf");
    }

    #[test]
    fn timestamps_are_seconds_with_three_decimals() {
        let check = |t: i64, want: &str| {
            let mut s = String::new();
            push_timestamp(&mut s, t);
            assert_eq!(s, want, "{t}");
        };
        check(0, "0");
        check(1_700_000_000_000, "1700000000");
        check(1_700_000_000_500, "1700000000.500");
        check(1_700_000_000_005, "1700000000.005");
        check(1_700_000_000_050, "1700000000.050");
        check(-1_500, "-1.500");
        check(-999, "-0.999");
        check(i64::MIN, "-9223372036854775.808");
    }

    #[test]
    fn strings_escape_like_go() {
        let check = |s: &str, want: &str| {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, want, "{s:?}");
        };
        check("plain", r#""plain""#);
        check("a\"b\\c", r#""a\"b\\c""#);
        check("<a&b>", r#""\u003ca\u0026b\u003e""#);
        check("\n\t\r\u{1}", r#""\n\t\r\u0001""#);
        check("ünï\u{2028}", r#""ünï\u2028""#);
    }

    #[test]
    fn results_encode_each_type() {
        let labels = vec![Label::new("__name__", "up"), Label::new("job", "a")];
        let check = |value: Value, want: &str| {
            let mut out = String::new();
            push_result(&mut out, &value);
            assert_eq!(out, want);
        };
        check(
            Value::Scalar { t: 1_000, v: 2.0 },
            r#""resultType":"scalar","result":[1,"2"]"#,
        );
        check(
            Value::Scalar { t: -1_050, v: 1e21 },
            r#""resultType":"scalar","result":[-1.05,"1000000000000000000000"]"#,
        );
        check(
            Value::Scalar {
                t: 1_700_000_000_123,
                v: 1e-7,
            },
            r#""resultType":"scalar","result":[1700000000.123,"0.0000001"]"#,
        );
        check(
            Value::String {
                t: 1_500,
                s: "x".into(),
            },
            r#""resultType":"string","result":[1.5,"x"]"#,
        );
        check(
            Value::Vector(vec![Sample {
                labels: labels.clone(),
                t: 1_000,
                v: f64::NAN,
            }]),
            r#""resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1,"NaN"]}]"#,
        );
        check(
            Value::Vector(vec![]),
            r#""resultType":"vector","result":[]"#,
        );
        check(
            Value::Matrix(vec![
                Series {
                    labels: vec![],
                    points: vec![Point { t: 0, v: 1.0 }, Point { t: 15_000, v: 0.5 }],
                },
                Series {
                    labels,
                    points: vec![Point { t: 1, v: -1.0 }],
                },
            ]),
            r#""resultType":"matrix","result":[{"metric":{},"values":[[0,"1"],[15,"0.5"]]},{"metric":{"__name__":"up","job":"a"},"values":[[0.001,"-1"]]}]"#,
        );
    }

    #[test]
    fn envelopes() {
        assert_eq!(
            success("[]", &[], false),
            r#"{"status":"success","data":[]}"#
        );
        assert_eq!(
            success("{}", &["w1".to_string()], false),
            r#"{"status":"success","data":{},"warnings":["w1"]}"#
        );
        assert_eq!(
            success("[]", &["node a down".to_string()], true),
            r#"{"status":"success","isPartial":true,"data":[],"warnings":["node a down"]}"#
        );
        assert_eq!(
            error("bad_data", "invalid \"x\""),
            r#"{"status":"error","errorType":"bad_data","error":"invalid \"x\""}"#
        );
    }
}
