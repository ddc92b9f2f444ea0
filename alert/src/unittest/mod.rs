//! Rule unit tests in the format of `promtool test rules` (`strata alert
//! test <file...>`): the same files pass and fail, and a failing test prints
//! what differed in the same shape.
//!
//! A test file (YAML, unknown fields rejected):
//!
//! ```text
//! rule_files: [<pattern>, ...]       relative to the test file; Go glob syntax
//!                                    (`*`, `?`, `[a-z]`, `[^a]`); no match only warns
//! evaluation_interval: <duration>    default (and 0 means) 1m
//! group_eval_order: [<group>, ...]   listed groups in this order; unlisted ones
//!                                    sort with the first
//! tests:
//!   - name: <string>
//!     interval: <duration>           spacing of input values; default (and 0
//!                                    means) evaluation_interval
//!     input_series:
//!       - series: 'name{label="value"}'
//!         values: '1+1x10 _ stale'   the value notation of PromQL test files
//!     external_labels: {<name>: <value>}   `$externalLabels` of templates
//!     external_url: <string>               `$externalURL` of templates
//!     alert_rule_test:
//!       - eval_time: <duration>
//!         alertname: <string>
//!         exp_alerts:                firing alerts only
//!           - exp_labels: {...}      alertname is implied
//!             exp_annotations: {...}
//!     promql_expr_test:
//!       - expr: <PromQL>
//!         eval_time: <duration>
//!         exp_samples:
//!           - labels: 'name{label="value"}'
//!             value: <number>
//!             histogram: <string>    native histograms: not supported
//! ```
//!
//! Each test group gets its own storage in a temporary directory. The rule
//! groups (`query_offset` and `limit` honoured, group `interval` ignored)
//! are evaluated at every multiple of `evaluation_interval` from 0 to the
//! largest eval time; before each step the input samples up to that step are
//! written (so nothing later is ever visible, also not to expression tests).
//! Recording results and `ALERTS`/`ALERTS_FOR_STATE` are written back at the
//! query time, with stale markers when a series ends; rules later in a group
//! and later steps see them. Alert state is [`crate::state::AlertingRule`].
//! An alert test at `eval_time` sees the state of the last evaluation at or
//! before it; expression tests run after all evaluations. A rule that fails
//! to evaluate ends its test group. Samples compare exactly (NaN never
//! equal), after sorting by labels; alerts compare as sorted (labels,
//! annotations) lists of the firing alerts of every rule with that name.
//!
//! Where the reference runner is nondeterministic (it orders groups not in
//! `group_eval_order` at random), groups run in rule-file order.

mod sim;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::rules::{self, format_duration, parse_duration};

/// Runs every test file, printing per-file results to `out`; true when all
/// passed.
pub fn run(files: &[PathBuf], out: &mut dyn Write) -> bool {
    let mut all_passed = true;
    for file in files {
        // A broken `out` cannot be reported anywhere else; the result still
        // says whether the tests passed.
        let _ = writeln!(out, "Unit Testing:  {}", file.display());
        // The temporary storage logs its opening and closing; to someone
        // running tests that is noise, so it is not logged at all.
        let FileReport { warnings, failures } =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                run_file(file)
            });
        for warning in &warnings {
            let _ = writeln!(out, "  WARNING: {warning}");
        }
        if failures.is_empty() {
            let _ = writeln!(out, "  SUCCESS");
        } else {
            all_passed = false;
            let _ = writeln!(out, "  FAILED:");
            for failure in &failures {
                let _ = writeln!(out, "{failure}\n");
            }
        }
        let _ = writeln!(out);
    }
    all_passed
}

/// Runs one test file; no failures means it passed.
pub fn run_file(path: &Path) -> FileReport {
    let mut report = FileReport::default();
    match load(path, &mut report.warnings) {
        Ok((file, groups)) => {
            for group in &file.tests {
                report
                    .failures
                    .extend(sim::run_group(&file, &groups, group));
            }
        }
        Err(failure) => report.failures.push(failure),
    }
    report
}

/// What running one test file found.
#[derive(Debug, Default)]
pub struct FileReport {
    /// Things that do not fail the file (a `rule_files` pattern matching
    /// no file, which the reference runner only warns about).
    pub warnings: Vec<String>,
    /// Empty when the file passed.
    pub failures: Vec<Failure>,
}

/// Why a test file failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The test file or a rule file could not be read or is invalid.
    Invalid(String),
    /// A rule failed to evaluate; the test group stops there.
    Eval {
        rule: String,
        time: i64,
        error: String,
    },
    /// The firing alerts differ from the expected ones.
    Alerts {
        test: String,
        alertname: String,
        eval_time: i64,
        expected: Vec<AlertView>,
        got: Vec<AlertView>,
    },
    /// An expression test's query failed or its expectation is invalid.
    ExprError {
        expr: String,
        eval_time: i64,
        error: String,
    },
    /// An expression test answered other samples.
    Samples {
        expr: String,
        eval_time: i64,
        expected: Vec<(BTreeMap<String, String>, f64)>,
        got: Vec<(BTreeMap<String, String>, f64)>,
    },
}

/// Labels and annotations of one alert, as compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertView {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

fn duration_text(ms: i64) -> String {
    format_duration(Duration::from_millis(ms.max(0) as u64))
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Unindented, as the reference runner prints file-level errors.
            Failure::Invalid(message) => write!(f, "{message}"),
            Failure::Eval { rule, time, error } => write!(
                f,
                "    rule: {rule}, time: {}, err: {error}",
                duration_text(*time)
            ),
            Failure::Alerts {
                test,
                alertname,
                eval_time,
                expected,
                got,
            } => {
                if !test.is_empty() {
                    writeln!(f, "    name: {test},")?;
                }
                write!(
                    f,
                    "    alertname: {alertname}, time: {}, \n        exp:{}, \n        got:{}",
                    duration_text(*eval_time),
                    indent(&alerts_text(expected), "            "),
                    indent(&alerts_text(got), "            ")
                )
            }
            Failure::ExprError {
                expr,
                eval_time,
                error,
            } => write!(
                f,
                "    expr: {expr:?}, time: {}, err: {error}",
                duration_text(*eval_time)
            ),
            Failure::Samples {
                expr,
                eval_time,
                expected,
                got,
            } => write!(
                f,
                "    expr: {expr:?}, time: {},\n        exp: {}\n        got: {}",
                duration_text(*eval_time),
                samples_text(expected),
                samples_text(got)
            ),
        }
    }
}

/// Indents every line but the first.
fn indent(text: &str, prefix: &str) -> String {
    text.replace('\n', &format!("\n{prefix}"))
}

fn alerts_text(alerts: &[AlertView]) -> String {
    if alerts.is_empty() {
        return "[]".to_string();
    }
    let mut out = "[".to_string();
    for (i, a) in alerts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "\n{i}:\n  Labels:{}\n  Annotations:{}",
            labels_text(&a.labels),
            labels_text(&a.annotations)
        ));
    }
    out.push_str("\n]");
    out
}

/// `{a="b", c="d"}`.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

fn samples_text(samples: &[(BTreeMap<String, String>, f64)]) -> String {
    if samples.is_empty() {
        return "nil".to_string();
    }
    let items: Vec<String> = samples
        .iter()
        .map(|(l, v)| format!("{} {}", labels_text(l), float_text(*v)))
        .collect();
    items.join(", ")
}

/// A float in exponent notation with a signed two-digit exponent (`1.5E+00`).
pub fn float_text(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let s = format!("{v:E}");
    match s.split_once('E') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}E{sign}{digits:0>2}")
        }
        None => s,
    }
}

// The YAML of a test file.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFileYaml {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default)]
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroupYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroupYaml {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeriesYaml>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTestYaml>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTestYaml>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeriesYaml {
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTestYaml {
    #[serde(default)]
    eval_time: Option<String>,
    #[serde(default)]
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlertYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlertYaml {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTestYaml {
    expr: String,
    #[serde(default)]
    eval_time: Option<String>,
    #[serde(default)]
    exp_samples: Vec<ExpSampleYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSampleYaml {
    labels: String,
    #[serde(default)]
    value: f64,
    /// A native histogram in the test notation; not supported (empty is
    /// accepted and ignored).
    #[serde(default)]
    histogram: String,
}

/// A test file with its durations parsed (milliseconds).
#[derive(Debug)]
struct TestFile {
    evaluation_interval: i64,
    /// Group name -> position in `group_eval_order`.
    group_order: BTreeMap<String, usize>,
    tests: Vec<TestGroup>,
}

#[derive(Debug)]
struct TestGroup {
    name: String,
    interval: i64,
    input_series: Vec<InputSeriesYaml>,
    alert_tests: Vec<AlertTest>,
    expr_tests: Vec<ExprTest>,
    external_labels: BTreeMap<String, String>,
    external_url: String,
}

#[derive(Debug)]
struct AlertTest {
    eval_time: i64,
    alertname: String,
    exp_alerts: Vec<ExpAlertYaml>,
}

#[derive(Debug)]
struct ExprTest {
    expr: String,
    eval_time: i64,
    exp_samples: Vec<ExpSampleYaml>,
}

fn duration_ms(field: &str, text: Option<&str>, default: i64) -> Result<i64, Failure> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t)
            .map(|d| d.as_millis() as i64)
            .map_err(|e| Failure::Invalid(format!("invalid {field} {t:?}: {e}"))),
    }
}

/// Reads the test file and the rule files it names.
fn load(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(TestFile, Vec<(PathBuf, rules::RuleFile)>), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let yaml: TestFileYaml = serde_saphyr::from_str(&text)
        .map_err(|e| Failure::Invalid(format!("cannot parse {}: {e}", path.display())))?;
    let evaluation_interval = duration_ms(
        "evaluation_interval",
        yaml.evaluation_interval.as_deref(),
        60_000,
    )?;
    // Zero means the default, as for the reference runner.
    let evaluation_interval = if evaluation_interval <= 0 {
        60_000
    } else {
        evaluation_interval
    };
    let mut group_order = BTreeMap::new();
    for (i, name) in yaml.group_eval_order.iter().enumerate() {
        if group_order.insert(name.clone(), i).is_some() {
            return Err(Failure::Invalid(format!(
                "group name repeated in evaluation order: {name}"
            )));
        }
    }
    let mut tests = Vec::new();
    for g in yaml.tests {
        let interval = match duration_ms("interval", g.interval.as_deref(), 0)? {
            0 => evaluation_interval,
            i => i,
        };
        let mut alert_tests = Vec::new();
        for a in g.alert_rule_test {
            alert_tests.push(AlertTest {
                eval_time: duration_ms("eval_time", a.eval_time.as_deref(), 0)?,
                alertname: a.alertname,
                exp_alerts: a.exp_alerts,
            });
        }
        let mut expr_tests = Vec::new();
        for e in g.promql_expr_test {
            expr_tests.push(ExprTest {
                eval_time: duration_ms("eval_time", e.eval_time.as_deref(), 0)?,
                expr: e.expr,
                exp_samples: e.exp_samples,
            });
        }
        tests.push(TestGroup {
            name: g.name,
            interval,
            input_series: g.input_series,
            alert_tests,
            expr_tests,
            external_labels: g.external_labels,
            external_url: g.external_url,
        });
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut rule_paths = Vec::new();
    for pattern in &yaml.rule_files {
        let p = Path::new(pattern);
        let pattern = if p.is_absolute() || pattern.is_empty() {
            p.to_path_buf()
        } else {
            dir.join(p)
        };
        let matches = glob(&pattern)
            .map_err(|e| Failure::Invalid(format!("rule_files {}: {e}", pattern.display())))?;
        if matches.is_empty() {
            warnings.push(format!("no file match pattern {}", pattern.display()));
        }
        rule_paths.extend(matches);
    }
    let rule_files = rules::load_files(&rule_paths).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        Failure::Invalid(text.join("\n"))
    })?;
    Ok((
        TestFile {
            evaluation_interval,
            group_order,
            tests,
        },
        rule_files,
    ))
}

/// Expands `*`, `?` and `[...]` in any component of `pattern` (within one
/// component, like a shell); a pattern without them names itself if the
/// file exists. Matches come sorted per directory.
fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let is_meta = |s: &str| s.contains(['*', '?', '[']);
    let mut current = vec![PathBuf::new()];
    for component in pattern.components() {
        let text = component.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        if !is_meta(&text) {
            for base in current {
                next.push(base.join(component.as_os_str()));
            }
        } else {
            let re = glob_regex(&text)?;
            for base in current {
                let dir = if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base.as_path()
                };
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| re.is_match(n))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            }
        }
        current = next;
    }
    Ok(current.into_iter().filter(|p| p.exists()).collect())
}

/// The regular expression of one glob component.
fn glob_regex(component: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' => {
                re.push('[');
                let mut closed = false;
                let mut first = true;
                for c in chars.by_ref() {
                    match c {
                        ']' => {
                            closed = true;
                            break;
                        }
                        // Only `^` negates (`!` is a plain character).
                        '^' if first => re.push('^'),
                        '\\' | '[' => {
                            re.push('\\');
                            re.push(c);
                        }
                        _ => re.push(c),
                    }
                    first = false;
                }
                if !closed {
                    return Err(format!("syntax error in pattern {component:?}"));
                }
                re.push(']');
            }
            '\\' => match chars.next() {
                Some(e) => re.push_str(&regex::escape(&e.to_string())),
                None => return Err(format!("syntax error in pattern {component:?}")),
            },
            _ => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("syntax error in pattern {component:?}: {e}"))
}
