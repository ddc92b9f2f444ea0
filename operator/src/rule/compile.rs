//! From a `StrataRule` to rule files, and rule files to ConfigMaps.
//!
//! File names: `<namespace>_<name>.yaml`, and `<namespace>_<name>_<k>.yaml`
//! (k = 1, 2, ...) for the further parts of an object too large for one
//! ConfigMap. `_` cannot appear in Kubernetes names, so the prefix is unique
//! per object.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value, json};
use strata_crds::StrataRule;
use strata_crds::rule::{RejectedRule, RuleGroup};

/// Separates namespace, name and part in rule file names.
pub const FILE_SEPARATOR: char = '_';

/// A valid rule object as files, in order: `(file name, rule file text)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    pub files: Vec<(String, String)>,
}

/// `<namespace>_<name>`: the start of every file of one object.
pub fn file_prefix(namespace: &str, name: &str) -> String {
    format!("{namespace}{FILE_SEPARATOR}{name}")
}

/// Whether `file` is one of the files of the object with `prefix`.
pub fn owns_file(prefix: &str, file: &str) -> bool {
    match file.strip_prefix(prefix) {
        Some(".yaml") => true,
        Some(rest) => rest
            .strip_prefix(FILE_SEPARATOR)
            .and_then(|part| part.strip_suffix(".yaml"))
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

fn group_value(group: &RuleGroup, tenant: Option<&str>) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(group.name));
    if let Some(interval) = &group.interval {
        out.insert("interval".into(), json!(interval));
    }
    if let Some(offset) = &group.query_offset {
        out.insert("query_offset".into(), json!(offset));
    }
    if let Some(limit) = group.limit {
        out.insert("limit".into(), json!(limit));
    }
    if let Some(labels) = &group.labels {
        out.insert("labels".into(), json!(labels));
    }
    if let Some(tenant) = tenant {
        out.insert("tenant".into(), json!(tenant));
    }
    let rules: Vec<Value> = group
        .rules
        .iter()
        .map(|rule| {
            let mut r = Map::new();
            if let Some(record) = &rule.record {
                r.insert("record".into(), json!(record));
            }
            if let Some(alert) = &rule.alert {
                r.insert("alert".into(), json!(alert));
            }
            r.insert("expr".into(), json!(rule.expr_text()));
            if let Some(for_) = &rule.for_ {
                r.insert("for".into(), json!(for_));
            }
            if let Some(keep) = &rule.keep_firing_for {
                r.insert("keep_firing_for".into(), json!(keep));
            }
            if let Some(labels) = &rule.labels {
                r.insert("labels".into(), json!(labels));
            }
            if let Some(annotations) = &rule.annotations {
                r.insert("annotations".into(), json!(annotations));
            }
            Value::Object(r)
        })
        .collect();
    out.insert("rules".into(), Value::Array(rules));
    Value::Object(out)
}

/// The Prometheus rule file of `groups`, each with the object's tenant.
/// `partial_response_strategy` is dropped: the evaluator has no use for it.
pub fn rule_file_text(groups: &[&RuleGroup], tenant: Option<&str>) -> Result<String, String> {
    let groups: Vec<Value> = groups.iter().map(|g| group_value(g, tenant)).collect();
    serde_saphyr::to_string(&json!({ "groups": groups })).map_err(|e| e.to_string())
}

fn rejected(group: &str, index: i32, name: Option<String>, error: String) -> RejectedRule {
    RejectedRule {
        group: group.to_string(),
        index,
        name,
        error,
    }
}

/// Validates `rule` exactly as `strata alert` loads its files and compiles
/// it into files of at most `max_bytes` each (split between groups).
/// Rejected rules name their group and index; errors that are not about
/// one rule (a bad tenant, a repeated group) have index -1.
pub fn compile(rule: &StrataRule, max_bytes: usize) -> Result<Compiled, Vec<RejectedRule>> {
    let namespace = rule.metadata.namespace.as_deref().unwrap_or_default();
    let name = rule.metadata.name.as_deref().unwrap_or_default();
    let tenant = rule.spec.tenant.as_deref();
    let mut errors = Vec::new();
    if let Some(tenant) = tenant
        && let Err(e) = tenant.parse::<strata_storage::types::Tenant>()
    {
        errors.push(rejected("", -1, None, e.to_string()));
    }
    let groups: Vec<&RuleGroup> = rule.spec.groups.iter().collect();
    let whole = rule_file_text(&groups, tenant).map_err(|e| vec![rejected("", -1, None, e)])?;
    let path = PathBuf::from(format!("{namespace}/{name}"));
    if let Err(parse_errors) = strata_alert::rules::parse_rule_file(&path, &whole) {
        for e in parse_errors {
            errors.push(rejected(
                e.group.as_deref().unwrap_or_default(),
                e.rule_index
                    .map_or(-1, |i| i32::try_from(i).unwrap_or(i32::MAX)),
                e.rule_name.clone(),
                e.kind.to_string(),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let prefix = file_prefix(namespace, name);
    let header = format!("# StrataRule {namespace}/{name}\n");
    if header.len() + whole.len() <= max_bytes {
        return Ok(Compiled {
            files: vec![(format!("{prefix}.yaml"), format!("{header}{whole}"))],
        });
    }
    // Too large for one ConfigMap: one file per run of groups that fits.
    let mut files = Vec::new();
    let mut current: Vec<&RuleGroup> = Vec::new();
    let flush = |current: &mut Vec<&RuleGroup>, files: &mut Vec<(String, String)>| {
        if current.is_empty() {
            return Ok(());
        }
        let text = rule_file_text(current, tenant)?;
        let file = match files.len() {
            0 => format!("{prefix}.yaml"),
            k => format!("{prefix}{FILE_SEPARATOR}{k}.yaml"),
        };
        files.push((file, format!("{header}{text}")));
        current.clear();
        Ok::<(), String>(())
    };
    for group in &rule.spec.groups {
        let alone = header.len()
            + rule_file_text(&[group], tenant)
                .map_err(|e| vec![rejected(&group.name, -1, None, e)])?
                .len();
        if alone > max_bytes {
            return Err(vec![rejected(
                &group.name,
                -1,
                None,
                format!(
                    "group is {alone} bytes as a rule file, more than the {max_bytes} a rule ConfigMap holds"
                ),
            )]);
        }
        current.push(group);
        let together = header.len()
            + rule_file_text(&current, tenant)
                .map_err(|e| vec![rejected(&group.name, -1, None, e)])?
                .len();
        if together > max_bytes {
            current.pop();
            flush(&mut current, &mut files)
                .map_err(|e| vec![rejected(&group.name, -1, None, e)])?;
            current.push(group);
        }
    }
    flush(&mut current, &mut files).map_err(|e| vec![rejected("", -1, None, e)])?;
    Ok(Compiled { files })
}

/// Packs files into ConfigMap data maps of at most `max_bytes` of content
/// each, in file name order (so a rule's place is stable while others come
/// and go after it). Every file is at most `max_bytes` ([`compile`] splits
/// larger objects), so each fits somewhere.
pub fn pack(files: &BTreeMap<String, String>, max_bytes: usize) -> Vec<BTreeMap<String, String>> {
    let mut maps = Vec::new();
    let mut current = BTreeMap::new();
    let mut size = 0;
    for (name, text) in files {
        let len = name.len() + text.len();
        if !current.is_empty() && size + len > max_bytes {
            maps.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.insert(name.clone(), text.clone());
    }
    if !current.is_empty() {
        maps.push(current);
    }
    maps
}
