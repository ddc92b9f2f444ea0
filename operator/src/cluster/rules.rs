//! Which StrataRules a cluster's alert component evaluates, and the rule
//! files they become (a rejected rule keeps its last good files).

use std::collections::BTreeMap;

use strata_crds::StrataRule;

use super::desired::{Cluster, RULES};
use super::object::component_of;
use super::plan::Observed;
use crate::{labels, rule};

/// The rules the alert component of `cluster` evaluates, in namespace and
/// name order.
pub fn selected_rules<'a>(
    cluster: &Cluster,
    rules: &'a [StrataRule],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<&'a StrataRule> {
    let Some(alert) = &cluster.spec.alert else {
        return Vec::new();
    };
    let empty = BTreeMap::new();
    let mut selected: Vec<&StrataRule> = rules
        .iter()
        .filter(|r| {
            let ns = r.metadata.namespace.as_deref().unwrap_or_default();
            match &alert.rule_namespace_selector {
                None => ns == cluster.namespace,
                Some(selector) => namespaces
                    .get(ns)
                    .is_some_and(|labels| labels::matches(selector, labels)),
            }
        })
        .filter(|r| match &alert.rule_selector {
            None => true,
            Some(selector) => {
                labels::matches(selector, r.metadata.labels.as_ref().unwrap_or(&empty))
            }
        })
        .collect();
    selected.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    selected
}

/// The rule files of the selected rules: each valid rule compiled, each
/// rejected one with the files it had before (its last good version), if
/// any.
pub(super) fn rule_files(
    selected: &[&StrataRule],
    observed: &Observed,
    max_bytes: usize,
) -> BTreeMap<String, String> {
    let previous: BTreeMap<&String, &String> = observed
        .config_maps
        .iter()
        .filter(|cm| component_of(&cm.metadata) == Some(RULES))
        .flat_map(|cm| cm.data.iter().flatten())
        .collect();
    let mut files = BTreeMap::new();
    for rule_object in selected {
        let ns = rule_object
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default();
        let name = rule_object.metadata.name.as_deref().unwrap_or_default();
        match rule::compile(rule_object, max_bytes) {
            Ok(compiled) => files.extend(compiled.files),
            Err(_) => {
                let prefix = rule::file_prefix(ns, name);
                for (file, text) in &previous {
                    if rule::owns_file(&prefix, file) {
                        files.insert((*file).clone(), (*text).clone());
                    }
                }
            }
        }
    }
    files
}
