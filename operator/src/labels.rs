//! Labels on every object the operator owns, and `metav1.LabelSelector`
//! matching (for `spec.alert.ruleSelector` and `ruleNamespaceSelector`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const VERSION: &str = "app.kubernetes.io/version";
/// The select pool of a select pod.
pub const POOL: &str = "strata.dev/pool";
/// On Deployments and the StatefulSet: hash of the pod template the
/// operator last applied, compared to tell whether a component still has
/// to be upgraded.
pub const TEMPLATE_HASH: &str = "strata.dev/template-hash";
/// On every owned object: hash of the whole desired object, so that an
/// unchanged object is not applied again.
pub const SPEC_HASH: &str = "strata.dev/spec-hash";
/// Set by the StatefulSet controller on its pods.
pub const REVISION: &str = "controller-revision-hash";

/// The labels that select one component's pods of one cluster.
pub fn selector(cluster: &str, component: &str, pool: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (NAME.to_string(), "strata".to_string()),
        (INSTANCE.to_string(), cluster.to_string()),
        (COMPONENT.to_string(), component.to_string()),
    ]);
    if let Some(pool) = pool {
        labels.insert(POOL.to_string(), pool.to_string());
    }
    labels
}

/// `selector` plus the labels that say who manages the object.
pub fn object(cluster: &str, component: &str, pool: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = selector(cluster, component, pool);
    labels.insert(MANAGED_BY.to_string(), crate::FIELD_MANAGER.to_string());
    labels
}

/// The label selector query (`a=b,c=d`) of every object of one cluster.
pub fn cluster_query(cluster: &str) -> String {
    format!("{NAME}=strata,{INSTANCE}={cluster}")
}

/// Whether `labels` match `selector`, with Kubernetes' semantics: every
/// `matchLabels` pair and every `matchExpressions` term must hold; an empty
/// selector matches everything. An unknown operator matches nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector.match_labels.iter().flatten();
    if !pairs.into_iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    selector.match_expressions.iter().flatten().all(|term| {
        let value = labels.get(&term.key);
        let values = term.values.as_deref().unwrap_or_default();
        match term.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn term(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn check(selector: LabelSelector, pairs: &[(&str, &str)], want: bool) {
        assert_eq!(
            matches(&selector, &labels(pairs)),
            want,
            "{selector:?} on {pairs:?}"
        );
    }

    #[test]
    fn selector_semantics() {
        let by_labels = |pairs: &[(&str, &str)]| LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        };
        let by_terms = |terms: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: None,
            match_expressions: Some(terms),
        };
        check(LabelSelector::default(), &[], true);
        check(LabelSelector::default(), &[("a", "1")], true);
        check(by_labels(&[("team", "db")]), &[("team", "db")], true);
        check(by_labels(&[("team", "db")]), &[("team", "web")], false);
        check(by_labels(&[("team", "db")]), &[], false);
        check(by_labels(&[("a", "1"), ("b", "2")]), &[("a", "1")], false);
        check(
            by_terms(vec![term("env", "In", &["prod", "stage"])]),
            &[("env", "stage")],
            true,
        );
        check(by_terms(vec![term("env", "In", &["prod"])]), &[], false);
        check(by_terms(vec![term("env", "NotIn", &["prod"])]), &[], true);
        check(
            by_terms(vec![term("env", "NotIn", &["prod"])]),
            &[("env", "prod")],
            false,
        );
        check(
            by_terms(vec![term("env", "Exists", &[])]),
            &[("env", "")],
            true,
        );
        check(
            by_terms(vec![term("env", "DoesNotExist", &[])]),
            &[("env", "x")],
            false,
        );
        check(
            by_terms(vec![term("env", "Gt", &["1"])]),
            &[("env", "2")],
            false,
        );
    }
}
