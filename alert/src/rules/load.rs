//! Reading rule files: YAML into span-aware raw structs, then validation into
//! [`RuleFile`]. `serde_saphyr::Spanned` gives the line of every node that an
//! error may point at, so no separate position index of the document is needed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{
    Rule, RuleError, RuleErrorKind, RuleFile, RuleGroup, RuleKind, is_valid_label_name,
    is_valid_metric_name, parse_duration,
};
use crate::template::Template;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Option<Vec<Spanned<RawGroup>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    query_offset: Option<Spanned<String>>,
    limit: Option<i64>,
    labels: Option<BTreeMap<String, Spanned<String>>>,
    tenant: Option<String>,
    rules: Option<Vec<Spanned<RawRule>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    record: Option<Spanned<String>>,
    alert: Option<Spanned<String>>,
    expr: Option<Spanned<String>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    keep_firing_for: Option<Spanned<String>>,
    labels: Option<BTreeMap<String, Spanned<String>>>,
    annotations: Option<BTreeMap<String, Spanned<String>>>,
}

fn line_of<T>(spanned: &Spanned<T>) -> usize {
    spanned.referenced.line() as usize
}

/// Reads and validates rule files; all errors of all files are returned together.
pub fn load_files<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<(PathBuf, RuleFile)>, Vec<RuleError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                errors.push(RuleError {
                    file: path.to_path_buf(),
                    line: 0,
                    group: None,
                    rule_index: None,
                    rule_name: None,
                    kind: RuleErrorKind::Read(error.to_string()),
                });
                continue;
            }
        };
        match parse_rule_file(path, &text) {
            Ok(file) => files.push((path.to_path_buf(), file)),
            Err(mut file_errors) => errors.append(&mut file_errors),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// Parses and validates one rule file; `path` only names the file in errors.
pub fn parse_rule_file(path: &Path, text: &str) -> Result<RuleFile, Vec<RuleError>> {
    let error_at = |line: usize, kind: RuleErrorKind| RuleError {
        file: path.to_path_buf(),
        line,
        group: None,
        rule_index: None,
        rule_name: None,
        kind,
    };
    // An empty document is an empty rule file, as in Prometheus.
    if text
        .lines()
        .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'))
    {
        return Ok(RuleFile::default());
    }
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|error| {
        let line = error.location().map_or(0, |loc| loc.line() as usize);
        vec![error_at(line, RuleErrorKind::Yaml(yaml_message(&error)))]
    })?;
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut seen = HashSet::new();
    for raw_group in raw.groups.unwrap_or_default() {
        let group_line = line_of(&raw_group);
        let raw_group = raw_group.value;
        let (name, name_line) = match &raw_group.name {
            Some(name) => (name.value.clone(), line_of(name)),
            None => (String::new(), group_line),
        };
        let mut group_errors = GroupErrors {
            path,
            group: &name,
            errors: &mut errors,
        };
        if name.is_empty() {
            group_errors.push(name_line, None, RuleErrorKind::EmptyGroupName);
        } else if !seen.insert(name.clone()) {
            group_errors.push(name_line, None, RuleErrorKind::DuplicateGroup(name.clone()));
        }
        let interval = group_errors
            .duration(raw_group.interval.as_ref(), "interval", None)
            .filter(|interval| !interval.is_zero());
        let query_offset =
            group_errors.duration(raw_group.query_offset.as_ref(), "query_offset", None);
        let labels = group_errors.labels(raw_group.labels.as_ref(), None);
        let mut rules = Vec::new();
        for (index, raw_rule) in raw_group.rules.unwrap_or_default().into_iter().enumerate() {
            if let Some(rule) = group_errors.rule(index, raw_rule) {
                rules.push(rule);
            }
        }
        groups.push(RuleGroup {
            name,
            interval,
            limit: raw_group.limit.map_or(0, |limit| limit.max(0) as u64),
            query_offset,
            labels,
            tenant: raw_group.tenant,
            rules,
            line: name_line,
        });
    }
    if errors.is_empty() {
        Ok(RuleFile { groups })
    } else {
        Err(errors)
    }
}

/// serde-saphyr's Display may append a source snippet over several lines; the
/// first line is the message, the position is reported separately.
fn yaml_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Collects the errors of one group, each tagged with the group and rule.
struct GroupErrors<'a> {
    path: &'a Path,
    group: &'a str,
    errors: &'a mut Vec<RuleError>,
}

/// A rule's position for error messages: index within the group and name.
type RuleAt<'a> = Option<(usize, Option<&'a str>)>;

impl GroupErrors<'_> {
    fn push(&mut self, line: usize, rule: RuleAt<'_>, kind: RuleErrorKind) {
        self.errors.push(RuleError {
            file: self.path.to_path_buf(),
            line,
            group: Some(self.group.to_string()),
            rule_index: rule.map(|(index, _)| index),
            rule_name: rule.and_then(|(_, name)| name.map(str::to_string)),
            kind,
        });
    }

    fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        field: &'static str,
        rule: RuleAt<'_>,
    ) -> Option<Duration> {
        let raw = raw?;
        match parse_duration(&raw.value) {
            Ok(duration) => Some(duration),
            Err(error) => {
                self.push(
                    line_of(raw),
                    rule,
                    RuleErrorKind::Duration {
                        field,
                        value: raw.value.clone(),
                        error,
                    },
                );
                None
            }
        }
    }

    fn labels(
        &mut self,
        raw: Option<&BTreeMap<String, Spanned<String>>>,
        rule: RuleAt<'_>,
    ) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        for (name, value) in raw.into_iter().flatten() {
            if !is_valid_label_name(name) || name == "__name__" {
                self.push(
                    line_of(value),
                    rule,
                    RuleErrorKind::InvalidLabelName(name.clone()),
                );
            }
            labels.insert(name.clone(), value.value.clone());
        }
        labels
    }

    fn rule(&mut self, index: usize, raw: Spanned<RawRule>) -> Option<Rule> {
        let rule_line = line_of(&raw);
        let raw = raw.value;
        let record = raw.record.as_ref().filter(|r| !r.value.is_empty());
        let alert = raw.alert.as_ref().filter(|a| !a.value.is_empty());
        let name = record.or(alert).map(|n| n.value.as_str());
        let at = Some((index, name));
        let errors_before = self.errors.len();
        let kind = match (record, alert) {
            (Some(_), Some(alert)) => {
                self.push(line_of(alert), at, RuleErrorKind::BothRecordAndAlert);
                None
            }
            (None, None) => {
                self.push(rule_line, at, RuleErrorKind::NeitherRecordNorAlert);
                None
            }
            (Some(record), None) => Some(RuleKind::Record(record.value.clone())),
            (None, Some(alert)) => Some(RuleKind::Alert(alert.value.clone())),
        };
        let line = record.or(alert).map_or(rule_line, line_of);
        let parsed_expr = match raw.expr.as_ref().filter(|e| !e.value.is_empty()) {
            None => {
                self.push(rule_line, at, RuleErrorKind::MissingExpr);
                None
            }
            // The engine's parse: Prometheus' functions the parser library
            // lacks, and errors placed as `line:column` when it refuses.
            Some(expr) => match strata_select::promql::syntax::parse(&expr.value) {
                Ok(parsed) => Some(parsed),
                Err(error) => {
                    let error = error.to_string();
                    self.push(
                        line_of(expr),
                        at,
                        RuleErrorKind::Expr {
                            expr: expr.value.clone(),
                            error,
                        },
                    );
                    None
                }
            },
        };
        let for_ = self.duration(raw.for_.as_ref(), "for", at);
        let keep_firing_for = self.duration(raw.keep_firing_for.as_ref(), "keep_firing_for", at);
        let labels = self.labels(raw.labels.as_ref(), at);
        let mut annotations = BTreeMap::new();
        for (name, value) in raw.annotations.iter().flatten() {
            if !is_valid_label_name(name) {
                self.push(
                    line_of(value),
                    at,
                    RuleErrorKind::InvalidAnnotationName(name.clone()),
                );
            }
            annotations.insert(name.clone(), value.value.clone());
        }
        if let Some(RuleKind::Record(metric)) = &kind {
            if let Some(annotations) = raw.annotations.as_ref().filter(|a| !a.is_empty()) {
                let first_line = annotations.values().map(line_of).min().unwrap_or(line);
                self.push(
                    first_line,
                    at,
                    RuleErrorKind::FieldInRecordingRule("annotations"),
                );
            }
            if let (Some(raw_for), Some(d)) = (&raw.for_, for_)
                && !d.is_zero()
            {
                self.push(
                    line_of(raw_for),
                    at,
                    RuleErrorKind::FieldInRecordingRule("for"),
                );
            }
            if let (Some(raw_keep), Some(d)) = (&raw.keep_firing_for, keep_firing_for)
                && !d.is_zero()
            {
                self.push(
                    line_of(raw_keep),
                    at,
                    RuleErrorKind::FieldInRecordingRule("keep_firing_for"),
                );
            }
            if !is_valid_metric_name(metric) {
                self.push(line, at, RuleErrorKind::InvalidRecordName(metric.clone()));
            }
        }
        // Prometheus checks templates of alerting rules only: recording rule
        // labels are used verbatim.
        if let Some(RuleKind::Alert(alert_name)) = &kind {
            for (field, map) in [("label", &raw.labels), ("annotation", &raw.annotations)] {
                for (name, value) in map.iter().flatten() {
                    let template_name = format!("__alert_{alert_name}");
                    if let Err(error) = Template::parse(&template_name, &value.value) {
                        self.push(
                            line_of(value),
                            at,
                            RuleErrorKind::Template {
                                field,
                                name: name.clone(),
                                error: error.to_string(),
                            },
                        );
                    }
                }
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Rule {
            kind: kind?,
            expr: raw.expr.map(|e| e.value).unwrap_or_default(),
            parsed_expr: parsed_expr?,
            for_: for_.unwrap_or_default(),
            keep_firing_for: keep_firing_for.unwrap_or_default(),
            labels,
            annotations,
            line,
        })
    }
}
