//! The permissions the operator's code uses (`client::ACCESS`, which every
//! API call is checked against, and which the scripted API server of the
//! reconcile tests checks every request against) are exactly those the
//! Helm chart grants (`charts/strata-operator/rbac-rules.yaml`): nothing
//! missing, nothing granted that no code uses. Leader election Leases are
//! granted in the operator's own namespace only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use strata_operator::client::ACCESS;

type Permission = (String, String, String);

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    api_group: String,
    resources: Vec<String>,
    verbs: Vec<String>,
}

fn chart_rules() -> BTreeMap<String, BTreeSet<Permission>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/strata-operator/rbac-rules.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file: BTreeMap<String, Vec<Rule>> =
        serde_saphyr::from_str(&text).expect("rbac-rules.yaml parses");
    file.into_iter()
        .map(|(section, rules)| {
            let set = rules
                .iter()
                .flat_map(|r| {
                    r.resources.iter().flat_map(move |res| {
                        r.verbs
                            .iter()
                            .map(move |v| (r.api_group.clone(), res.clone(), v.clone()))
                    })
                })
                .collect();
            (section, set)
        })
        .collect()
}

#[test]
fn code_uses_exactly_what_the_chart_grants() {
    let chart = chart_rules();
    let granted: BTreeSet<Permission> = chart.values().flatten().cloned().collect();
    let used: BTreeSet<Permission> = ACCESS
        .iter()
        .map(|a| {
            (
                a.group.to_string(),
                a.resource.to_string(),
                a.verb.to_string(),
            )
        })
        .collect();
    assert_eq!(
        used.len(),
        ACCESS.len(),
        "client::ACCESS lists a permission twice"
    );
    let missing: Vec<&Permission> = used.difference(&granted).collect();
    let unused: Vec<&Permission> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "operator code and charts/strata-operator/rbac-rules.yaml disagree\n  used but not granted: {missing:?}\n  granted but not used: {unused:?}"
    );
}

#[test]
fn leases_are_granted_in_the_own_namespace_only() {
    let chart = chart_rules();
    let own = chart.get("own").expect("own section");
    let watched = chart.get("watched").expect("watched section");
    assert!(
        own.iter()
            .all(|(g, r, _)| g == "coordination.k8s.io" && r == "leases"),
        "{own:?}"
    );
    assert!(
        !watched.iter().any(|(_, r, _)| r == "leases"),
        "{watched:?}"
    );
}
