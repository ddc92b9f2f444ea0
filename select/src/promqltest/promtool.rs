//! Translation of test files into `promtool test rules` files, so the
//! expectations of our own test files can be checked against Prometheus
//! itself.
//!
//! Each `eval` becomes one rule test file: the series loaded so far in its
//! section (all loads merged onto one interval, the greatest common divisor
//! of the sample times) and one `promql_expr_test` per evaluation time (one
//! for an instant eval, one per step for a range eval). What promtool cannot
//! express is reported instead: failures, NaN expectations (promtool compares
//! values exactly, and NaN is not equal to itself), strings, native histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use strata_storage::{METRIC_NAME_LABEL, is_stale_nan};

use crate::promql::value::Labels;

use super::parse::{Command, Eval, EvalTime, SeqValue, SeriesValues};

/// Most positions of one series in a generated file.
const MAX_POSITIONS: i64 = 100_000;

/// The rule test file of the `eval` at `line`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleTest {
    pub line: usize,
    pub yaml: String,
}

/// One rule test per `eval`, or why the `eval` at a line cannot be one.
pub fn rule_tests(commands: &[Command]) -> Vec<Result<RuleTest, (usize, String)>> {
    let mut out = Vec::new();
    let mut data = SeriesData::new();
    let mut histograms = false;
    for command in commands {
        match command {
            Command::Clear { .. } => {
                data.clear();
                histograms = false;
            }
            Command::Load {
                interval_ms,
                series,
                with_nhcb,
                ..
            } => {
                histograms |= *with_nhcb;
                for s in series {
                    let SeriesValues::Floats(values) = &s.values else {
                        histograms = true;
                        continue;
                    };
                    let samples = data.entry(s.labels.clone()).or_default();
                    for (i, v) in values.iter().enumerate() {
                        if let SeqValue::Float(f) = v {
                            samples.insert(i as i64 * interval_ms, *f);
                        }
                    }
                }
            }
            Command::Eval(eval) => {
                let test = if histograms {
                    Err("native histograms loaded".to_string())
                } else {
                    rule_test(&data, eval)
                };
                out.push(
                    test.map(|yaml| RuleTest {
                        line: eval.line,
                        yaml,
                    })
                    .map_err(|why| (eval.line, why)),
                );
            }
        }
    }
    out
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn rule_test(data: &SeriesData, eval: &Eval) -> Result<String, String> {
    let expect = &eval.expect;
    if expect.fail {
        return Err("promtool cannot expect a failure".to_string());
    }
    if let Some(why) = &eval.unsupported {
        return Err(why.clone());
    }
    if expect.string.is_some() {
        return Err("promtool cannot expect a string".to_string());
    }
    let is_range = matches!(eval.time, EvalTime::Range { .. });
    if is_range && (eval.query.contains("start()") || eval.query.contains("end()")) {
        // Each step becomes an instant query, where start() and end() are
        // the step itself.
        return Err("start() and end() of a range eval".to_string());
    }
    // (time, expected samples) per evaluation.
    let mut evals: Vec<(i64, Vec<(&Labels, f64)>)> = Vec::new();
    let empty = Labels::new();
    match eval.time {
        EvalTime::Instant { at } => {
            let mut samples = Vec::new();
            if let Some(v) = expect.scalar {
                samples.push((&empty, v));
            }
            for s in &expect.series {
                if let SeriesValues::Floats(v) = &s.values
                    && let Some(SeqValue::Float(f)) = v.first()
                {
                    samples.push((&s.labels, *f));
                }
            }
            evals.push((at, samples));
        }
        EvalTime::Range { start, end, step } => {
            if expect.scalar.is_some() {
                return Err("a bare value in a range eval".to_string());
            }
            let mut t = start;
            let mut i = 0;
            while t <= end {
                let mut samples = Vec::new();
                for s in &expect.series {
                    if let SeriesValues::Floats(v) = &s.values
                        && let Some(SeqValue::Float(f)) = v.get(i)
                    {
                        samples.push((&s.labels, *f));
                    }
                }
                evals.push((t, samples));
                t += step;
                i += 1;
            }
        }
    }
    if evals.iter().any(|(t, _)| *t < 0) {
        return Err("promtool cannot evaluate before the epoch".to_string());
    }
    // promtool loads samples only up to each eval time, so a query reading
    // later ones (`@`, negative offsets) sees less than it should.
    let last_sample = data
        .values()
        .filter_map(|s| s.keys().next_back())
        .max()
        .copied()
        .unwrap_or(0);
    let first_eval = evals.iter().map(|(t, _)| *t).min().unwrap_or(0);
    let peeks = eval.query.contains('@') || eval.query.replace(' ', "").contains("offset-");
    if peeks && last_sample > first_eval {
        return Err("promtool hides samples after the eval time, which the query may read".into());
    }
    if evals.iter().flat_map(|(_, s)| s).any(|(_, v)| v.is_nan()) {
        return Err("promtool cannot compare NaN".to_string());
    }

    let evals: Vec<ExprTest> = evals
        .into_iter()
        .map(|(t, samples)| ExprTest {
            query: eval.query.clone(),
            time: t,
            samples: samples.into_iter().map(|(l, v)| (l.clone(), v)).collect(),
        })
        .collect();
    rule_file(data, &evals)
}

/// Samples per series: time (ms) -> value.
pub type SeriesData = BTreeMap<Labels, BTreeMap<i64, f64>>;

/// One `promql_expr_test`: a query, its eval time (ms) and the samples it
/// must answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ExprTest {
    pub query: String,
    pub time: i64,
    pub samples: Vec<(Labels, f64)>,
}

/// A rule test file with `data` as input series and `tests`.
pub fn rule_file(data: &SeriesData, tests: &[ExprTest]) -> Result<String, String> {
    let interval = data
        .values()
        .flat_map(|s| s.keys())
        .fold(0, |g, &t| gcd(g, t))
        .max(1);
    let mut yaml = String::from("tests:\n");
    let _ = writeln!(yaml, "  - interval: {interval}ms");
    yaml.push_str("    input_series:\n");
    for (labels, samples) in data {
        let last = samples.keys().next_back().copied().unwrap_or(0);
        if last / interval > MAX_POSITIONS {
            return Err(format!(
                "{} positions at interval {interval}ms are too many",
                last / interval
            ));
        }
        let mut values = Vec::new();
        for i in 0..=last / interval {
            values.push(match samples.get(&(i * interval)) {
                Some(v) => format_value(*v),
                None => "_".to_string(),
            });
        }
        let _ = writeln!(
            yaml,
            "      - series: {}\n        values: {}",
            quote(&series_text(labels)),
            quote(&values.join(" "))
        );
    }
    yaml.push_str("    promql_expr_test:\n");
    for test in tests {
        let _ = writeln!(
            yaml,
            "      - expr: {}\n        eval_time: {}ms",
            quote(&test.query),
            test.time
        );
        let samples = &test.samples;
        if samples.is_empty() {
            yaml.push_str("        exp_samples: []\n");
            continue;
        }
        yaml.push_str("        exp_samples:\n");
        for (labels, v) in samples {
            let v = *v;
            let v = if v == f64::INFINITY {
                ".inf".to_string()
            } else if v == f64::NEG_INFINITY {
                "-.inf".to_string()
            } else {
                format!("{v:?}")
            };
            let _ = writeln!(
                yaml,
                "          - labels: {}\n            value: {v}",
                quote(&series_text(labels))
            );
        }
    }
    Ok(yaml)
}

/// A value in the series notation.
fn format_value(v: f64) -> String {
    if is_stale_nan(v) {
        "stale".to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v:?}")
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{a="b"}`, or `{__name__="...", ...}` when the name is not an
/// identifier, with PromQL string escapes.
fn series_text(labels: &Labels) -> String {
    let name = labels
        .iter()
        .find(|l| l.name == METRIC_NAME_LABEL)
        .map(|l| l.value.as_str());
    let (prefix, skip_name) = match name {
        Some(n) if is_metric_name(n) => (n, true),
        _ => ("", false),
    };
    let pairs: Vec<String> = labels
        .iter()
        .filter(|l| !(skip_name && l.name == METRIC_NAME_LABEL))
        .map(|l| format!("{}=\"{}\"", l.name, escape(&l.value)))
        .collect();
    format!("{prefix}{{{}}}", pairs.join(", "))
}

/// Escapes for a double-quoted PromQL or YAML string.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out
}

/// A YAML double-quoted scalar.
fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}
