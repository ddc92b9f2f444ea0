//! Prometheus rule files: `groups` of recording and alerting rules.
//!
//! The loader accepts what `promtool check rules` accepts and rejects what it
//! rejects (unknown fields, empty or repeated group names, bad durations, rules
//! that set both or neither of `record`/`alert`, invalid metric and label names,
//! `for`/`keep_firing_for`/`annotations` on recording rules, PromQL that does not
//! parse, alert templates that do not parse). Two extensions Prometheus 2.x lacks:
//! group `labels` (added to every rule of the group, as in Prometheus 3) and
//! group `tenant`.
//!
//! Every error names the file, the group, the rule (index within the group and
//! its name) and the line of the offending YAML node.

mod duration;
mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use duration::{DurationError, format_duration, parse_duration};
pub use load::{load_files, parse_rule_file};

/// One parsed rule file.
#[derive(Debug, Clone, Default)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

/// A group of rules evaluated together, in order, at one interval.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub name: String,
    /// `interval`; `None` means the global evaluation interval.
    pub interval: Option<Duration>,
    /// `limit`: an alert or recording rule producing more series than this fails; 0 means no limit.
    pub limit: u64,
    /// `query_offset`; `None` means the global query offset.
    pub query_offset: Option<Duration>,
    /// `labels`: added to every rule's result, the rule's own labels win.
    pub labels: BTreeMap<String, String>,
    /// `tenant`: evaluate and write this group as this tenant; `None` means the global tenant.
    pub tenant: Option<String>,
    pub rules: Vec<Rule>,
    /// 1-based line of the group's `name` in its file.
    pub line: usize,
}

/// Whether a rule records a series or raises an alert, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    /// `record: <metric name>`.
    Record(String),
    /// `alert: <alert name>`.
    Alert(String),
}

/// One recording or alerting rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub kind: RuleKind,
    /// `expr` as written.
    pub expr: String,
    /// `expr` parsed.
    pub parsed_expr: promql_parser::parser::Expr,
    /// `for`: how long an alert stays pending before it fires; zero for recording rules.
    pub for_: Duration,
    /// `keep_firing_for`: how long an alert keeps firing after its condition cleared.
    pub keep_firing_for: Duration,
    /// `labels`: added to (or replacing) the result's labels; templates for alerts.
    pub labels: BTreeMap<String, String>,
    /// `annotations` (alerts only); templates.
    pub annotations: BTreeMap<String, String>,
    /// 1-based line of the rule's `record`/`alert` key in its file.
    pub line: usize,
}

impl Rule {
    /// The metric name (recording rule) or alert name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Record(name) | RuleKind::Alert(name) => name,
        }
    }

    pub fn is_alert(&self) -> bool {
        matches!(self.kind, RuleKind::Alert(_))
    }
}

/// Where a rule error is and what it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based line; 0 when the error has no position (the file could not be read).
    pub line: usize,
    /// The group's name, when the error is inside a group.
    pub group: Option<String>,
    /// The rule's 0-based index within its group, when the error is inside a rule.
    pub rule_index: Option<usize>,
    /// The rule's `record`/`alert` name, when it has one.
    pub rule_name: Option<String>,
    pub kind: RuleErrorKind,
}

impl RuleError {
    fn describe(&self) -> String {
        let mut out = format!("{}:{}:", self.file.display(), self.line);
        if let Some(group) = &self.group {
            out.push_str(&format!(" group {group:?}"));
        }
        if let Some(index) = self.rule_index {
            out.push_str(&format!(", rule {index}"));
            if let Some(name) = &self.rule_name {
                out.push_str(&format!(" ({name:?})"));
            }
        }
        out.push_str(": ");
        out.push_str(&self.kind.to_string());
        out
    }
}

/// What is wrong in a rule file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleErrorKind {
    #[error("cannot read file: {0}")]
    Read(String),
    #[error("cannot parse yaml: {0}")]
    Yaml(String),
    #[error("group name must not be empty")]
    EmptyGroupName,
    #[error("group name {0:?} is repeated in the same file")]
    DuplicateGroup(String),
    #[error("invalid duration {value:?} in {field}: {error}")]
    Duration {
        field: &'static str,
        value: String,
        error: DurationError,
    },
    #[error("only one of 'record' and 'alert' must be set")]
    BothRecordAndAlert,
    #[error("one of 'record' or 'alert' must be set")]
    NeitherRecordNorAlert,
    #[error("field 'expr' must be set in rule")]
    MissingExpr,
    #[error("cannot parse expression {expr:?}: {error}")]
    Expr { expr: String, error: String },
    #[error("invalid field '{0}' in recording rule")]
    FieldInRecordingRule(&'static str),
    #[error("invalid recording rule name {0:?}")]
    InvalidRecordName(String),
    #[error("invalid label name {0:?}")]
    InvalidLabelName(String),
    #[error("invalid annotation name {0:?}")]
    InvalidAnnotationName(String),
    #[error("cannot parse template in {field} {name:?}: {error}")]
    Template {
        field: &'static str,
        name: String,
        error: String,
    },
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the metric names Prometheus 2 accepts.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, the label names Prometheus 2 accepts.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
