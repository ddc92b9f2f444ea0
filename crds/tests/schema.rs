//! The CRDs against the checked-in YAML, the examples, and the validation
//! an API server would do. No API server runs here, so the schema is
//! enforced by hand: defaults and CEL rules by the same CEL library the
//! derive uses (`kube::core::cel`), the OpenAPI keywords the schema uses by
//! the small walker below. Every case must be judged the same by the schema
//! and by `strata_crds::validate`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel::{
    CompiledSchema, ScopeContext, Validator, WarningKind, analyze_rule, apply_defaults,
    compile_schema,
};
use serde_json::{Value, json};
use strata_crds::{StrataCluster, StrataRule, crdgen, validate};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent directory")
        .to_path_buf()
}

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("example readable");
    serde_saphyr::from_str(&text).expect("example parses as YAML")
}

// ---- generated YAML ----

#[test]
fn checked_in_yaml_matches_the_types() {
    if let Err(e) = crdgen::check(&repo_root()) {
        panic!("{e}");
    }
}

#[test]
fn checked_in_yaml_parses_back_to_the_same_crds() {
    for dir in crdgen::OUTPUT_DIRS {
        for crd in crdgen::crds() {
            let name = crd.metadata.name.clone().expect("CRD has a name");
            let (plural, group) = name.split_once('.').expect("name is plural.group");
            let path = repo_root().join(dir).join(format!("{group}_{plural}.yaml"));
            let text = std::fs::read_to_string(&path).expect("CRD file readable");
            let parsed: CustomResourceDefinition =
                serde_saphyr::from_str(&text).expect("CRD file parses");
            assert_eq!(parsed, crd, "{}", path.display());
        }
    }
}

#[test]
fn drift_is_reported_with_the_command_to_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let written = crdgen::write(dir.path()).expect("writes");
    assert_eq!(written.len(), 2 * crdgen::OUTPUT_DIRS.len());
    crdgen::check(dir.path()).expect("fresh output has no drift");

    let edited = &written[1];
    let text = std::fs::read_to_string(edited).expect("readable");
    std::fs::write(edited, format!("{text}# edited\n")).expect("writable");
    let leftover = dir
        .path()
        .join(crdgen::OUTPUT_DIRS[1])
        .join("strata.dev_strataretired.yaml");
    std::fs::write(&leftover, "").expect("writable");
    std::fs::remove_file(&written[0]).expect("removable");

    let err = crdgen::check(dir.path()).expect_err("drift detected");
    let message = err.to_string();
    assert!(message.contains("run `strata crdgen`"), "{message}");
    let crdgen::Error::Drift(paths) = err else {
        panic!("not a drift error: {message}");
    };
    let mut want = vec![written[0].clone(), written[1].clone(), leftover];
    let mut paths = paths;
    want.sort();
    paths.sort();
    assert_eq!(paths, want);
}

// ---- CEL rules compile, stay in budget ----

fn compiled_rules(node: &CompiledSchema, path: &str, out: &mut Vec<(String, String)>) {
    for rule in &node.validations {
        match rule {
            Ok(compiled) => out.push((path.to_string(), compiled.rule.rule.clone())),
            Err(e) => panic!("rule at {path} does not compile: {e:?}"),
        }
    }
    for (name, child) in &node.properties {
        compiled_rules(child, &format!("{path}.{name}"), out);
    }
    if let Some(items) = &node.items {
        compiled_rules(items, &format!("{path}[]"), out);
    }
    if let Some(values) = &node.additional_properties {
        compiled_rules(values, &format!("{path}{{}}"), out);
    }
}

fn node_at<'a>(root: &'a CompiledSchema, path: &str) -> &'a CompiledSchema {
    let mut node = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        node = &node.properties[name];
        if items {
            node = node.items.as_deref().expect("array has items");
        }
    }
    node
}

#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let mut total = 0;
    for crd in crdgen::crds() {
        let compiled = compile_schema(&schema_of(&crd));
        let mut rules = Vec::new();
        compiled_rules(&compiled, "", &mut rules);
        for (path, rule) in &rules {
            let warnings =
                analyze_rule(rule, node_at(&compiled, path), ScopeContext::CrdValidation);
            // Scope warnings are not checked: the analysis counts the
            // variables that macros like `exists(p, ...)` bind as out of scope.
            let serious: Vec<_> = warnings
                .iter()
                .filter(|w| matches!(w.kind, WarningKind::CostExceeded))
                .collect();
            assert!(serious.is_empty(), "{path}: {rule}: {serious:?}");
        }
        total += rules.len();
    }
    // The rules this file's tables exercise; a dropped rule must fail here.
    assert_eq!(total, 4);
}

// ---- the OpenAPI keywords the schemas use ----

/// Checks `value` against `schema` the way the API server's OpenAPI
/// validation would for the keywords our schemas use; returns the paths and
/// reasons of violations.
fn openapi_errors(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let mut fail = |why: String| errors.push(format!("{path}: {why}"));
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            fail("null not allowed".into());
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_string()) {
            fail(format!("{value} is not an integer or string"));
        }
        return;
    }
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        fail(format!("{value} has the wrong type"));
        return;
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        fail(format!("{n} < minimum {min}"));
    }
    if let Some(s) = value.as_str() {
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && (s.chars().count() as u64) < min
        {
            fail(format!("{s:?} shorter than {min}"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && (s.chars().count() as u64) > max
        {
            fail(format!("{s:?} longer than {max}"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let re = regex::Regex::new(pattern).expect("schema pattern compiles");
            if !re.is_match(s) {
                fail(format!("{s:?} does not match {pattern}"));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            fail(format!("{s:?} not one of {allowed:?}"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            fail(format!("{} items, more than {max}", items.len()));
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            fail(format!("{} items, fewer than {min}", items.len()));
        }
        if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
            let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                .as_array()
                .expect("map list has keys")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let mut seen = HashSet::new();
            for item in items {
                let key: Vec<String> = keys.iter().map(|k| item[k].to_string()).collect();
                if !seen.insert(key.clone()) {
                    fail(format!("duplicate entry {key:?}"));
                }
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                openapi_errors(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(required) {
                errors.push(format!("{path}.{required}: required"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (key, field) in object {
            let child = format!("{path}.{key}");
            match (properties.and_then(|p| p.get(key)), additional) {
                (Some(s), _) => openapi_errors(s, field, &child, errors),
                (None, Some(s)) if s.is_object() => openapi_errors(s, field, &child, errors),
                // Root fields the API server handles itself.
                (None, _)
                    if path.is_empty()
                        && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) => {}
                (None, _) => errors.push(format!("{child}: unknown field")),
            }
        }
    }
}

/// Everything the schema rejects in `object`: OpenAPI keywords after
/// defaulting, then the CEL rules.
fn schema_errors(schema: &Value, object: &Value) -> Vec<String> {
    let defaulted = apply_defaults(schema, object);
    let mut errors = Vec::new();
    openapi_errors(schema, &defaulted, "", &mut errors);
    if let Err(cel) = Validator::new().validate(schema, object, None) {
        errors.extend(cel.iter().map(|e| format!("CEL {e}")));
    }
    errors
}

/// RFC 7386 merge patch: objects merge, null deletes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Cases the schema rejects on an API server but the CEL library here
/// accepts: it escapes every `_` in a field name as `__`, where Kubernetes
/// escapes only `__`, so `self.keep_firing_for` reads nothing.
const KUBE_CEL_BLIND: [&str; 1] = ["recording with keep_firing_for"];

/// Judges `object` with the schema and with the Rust checks: both must
/// accept it (`want` None) or both reject it, the Rust error containing
/// `want`. Also checks that serde's defaults are the schema's.
fn judge<K>(
    name: &str,
    object: &Value,
    want: Option<&str>,
    rust: impl Fn(&K) -> Vec<validate::ValidationError>,
) where
    K: CustomResourceExt + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let schema = schema_of(&K::crd());
    let by_schema = schema_errors(&schema, object);
    let typed: K = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{name}: does not deserialize: {e}"));
    let defaulted: K = serde_json::from_value(apply_defaults(&schema, object))
        .unwrap_or_else(|e| panic!("{name}: defaulted object does not deserialize: {e}"));
    assert_eq!(
        typed, defaulted,
        "{name}: serde defaults differ from schema defaults"
    );
    let by_rust = rust(&typed);
    match want {
        None => {
            assert!(
                by_schema.is_empty(),
                "{name}: schema rejects: {by_schema:?}"
            );
            assert!(by_rust.is_empty(), "{name}: Rust rejects: {by_rust:?}");
        }
        Some(want) => {
            if KUBE_CEL_BLIND.contains(&name) {
                assert!(
                    by_schema.is_empty(),
                    "{name}: the CEL library now sees this rule: drop it from KUBE_CEL_BLIND"
                );
            } else {
                assert!(!by_schema.is_empty(), "{name}: schema accepts");
            }
            let messages: Vec<String> = by_rust.iter().map(ToString::to_string).collect();
            assert!(
                messages.iter().any(|m| m.contains(want)),
                "{name}: no error has {want:?}: {messages:?}"
            );
        }
    }
}

fn example(file: &str) -> Value {
    read_yaml(&repo_root().join("examples").join(file))
}

#[test]
fn example_cluster_is_valid() {
    let object = example("stratacluster.yaml");
    judge::<StrataCluster>("example", &object, None, |c| validate::cluster(&c.spec));
    let cluster: StrataCluster = serde_json::from_value(object).expect("typed");
    let spec = &cluster.spec;
    assert_eq!(
        (spec.storage.replicas, spec.storage.replication_factor),
        (3, 2)
    );
    assert_eq!(spec.insert.replicas, 2);
    let pools: Vec<&str> = spec.select.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pools, ["dashboards", "alerting"]);
    assert_eq!(
        spec.alert.as_ref().map(|a| a.select_pool.as_str()),
        Some("alerting")
    );
}

#[test]
fn cluster_validation_agrees_with_the_schema() {
    let base = example("stratacluster.yaml");
    let many_pools: Vec<Value> = (0..17).map(|i| json!({"name": format!("p{i}")})).collect();
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("unchanged", json!({}), None),
        (
            "minimal",
            json!({"spec": {"storage": {"replicas": 1, "replicationFactor": null, "retention": null,
                "dedupMinScrapeInterval": null, "volume": null, "resources": null},
                "insert": null, "select": null, "alert": null}}),
            None,
        ),
        (
            "storage replicas 0",
            json!({"spec": {"storage": {"replicas": 0, "replicationFactor": null}}}),
            Some("spec.storage.replicas is 0"),
        ),
        (
            "rf above replicas",
            json!({"spec": {"storage": {"replicationFactor": 4}}}),
            Some("must not exceed"),
        ),
        (
            "rf 0",
            json!({"spec": {"storage": {"replicationFactor": 0}}}),
            Some("replicationFactor is 0"),
        ),
        (
            "insert replicas 0",
            json!({"spec": {"insert": {"replicas": 0}}}),
            Some("spec.insert.replicas"),
        ),
        (
            "alert replicas 0",
            json!({"spec": {"alert": {"replicas": 0}}}),
            Some("spec.alert.replicas"),
        ),
        (
            "bad retention",
            json!({"spec": {"storage": {"retention": "90 days"}}}),
            Some("spec.storage.retention"),
        ),
        (
            "year retention",
            json!({"spec": {"storage": {"retention": "1y"}}}),
            Some("spec.storage.retention"),
        ),
        (
            "compound retention",
            json!({"spec": {"storage": {"retention": "2w3d"}}}),
            None,
        ),
        (
            "bad dedup",
            json!({"spec": {"storage": {"dedupMinScrapeInterval": "30"}}}),
            Some("dedupMinScrapeInterval"),
        ),
        (
            "duplicate pool",
            json!({"spec": {"select": {"pools": [{"name": "alerting"}, {"name": "alerting"}]}}}),
            Some("appears more than once"),
        ),
        (
            "no pools",
            json!({"spec": {"select": {"pools": []}, "alert": null}}),
            Some("must not be empty"),
        ),
        (
            "too many pools",
            json!({"spec": {"select": {"pools": many_pools}, "alert": null}}),
            Some("at most 16"),
        ),
        (
            "bad pool name",
            json!({"spec": {"select": {"pools": [{"name": "Alerting"}]}, "alert": null}}),
            Some("DNS label"),
        ),
        (
            "unknown select pool",
            json!({"spec": {"alert": {"selectPool": "reports"}}}),
            Some("\"reports\" must name one of"),
        ),
        (
            "pool removed under alert",
            json!({"spec": {"select": {"pools": [{"name": "dashboards"}]}}}),
            Some("must name one of"),
        ),
        (
            "bad notifier",
            json!({"spec": {"alert": {"notifiers": [{"url": "alertmanager:9093"}]}}}),
            Some("notifiers[0].url"),
        ),
        (
            "bad evaluation interval",
            json!({"spec": {"alert": {"evaluationInterval": "1 m"}}}),
            Some("evaluationInterval"),
        ),
        ("paused", json!({"spec": {"paused": true}}), None),
    ];
    for (name, patch, want) in cases {
        let mut object = base.clone();
        merge(&mut object, &patch);
        judge::<StrataCluster>(name, &object, want, |c| validate::cluster(&c.spec));
    }
}

#[test]
fn example_rule_is_valid() {
    let object = example("stratarule.yaml");
    judge::<StrataRule>("example", &object, None, |r| validate::rule(&r.spec));
    let rule: StrataRule = serde_json::from_value(object).expect("typed");
    let names: Vec<Option<&str>> = rule
        .spec
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .map(|r| r.name())
        .collect();
    assert_eq!(names.len(), 4);
    assert!(names.contains(&Some("TargetDown")));
}

#[test]
fn rule_validation_agrees_with_the_schema() {
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("record", "groups: [{name: g, rules: [{record: 'a:b', expr: 'sum(up)'}]}]", None),
        ("number expression", "groups: [{name: g, rules: [{alert: Always, expr: 1}]}]", None),
        ("empty object", "{}", None),
        (
            "every group field",
            "{tenant: '12:3', groups: [{name: g, interval: 1m, query_offset: 30s, limit: 10, labels: {team: db},
              partial_response_strategy: warn, rules: [{alert: A, expr: up == 0, for: 1h5m, keep_firing_for: '0',
              labels: {severity: page}, annotations: {summary: '{{ $value }}'}}]}]}",
            None,
        ),
        ("both kinds", "groups: [{name: g, rules: [{record: a, alert: A, expr: up}]}]", Some("exactly one")),
        ("no kind", "groups: [{name: g, rules: [{expr: up}]}]", Some("exactly one")),
        ("recording with for", "groups: [{name: g, rules: [{record: a, expr: up, for: 5m}]}]", Some("cannot have for")),
        (
            "recording with annotations",
            "groups: [{name: g, rules: [{record: a, expr: up, annotations: {a: b}}]}]",
            Some("cannot have annotations"),
        ),
        (
            "recording with keep_firing_for",
            "groups: [{name: g, rules: [{record: a, expr: up, keep_firing_for: 5m}]}]",
            Some("cannot have keep_firing_for"),
        ),
        ("duplicate group", "groups: [{name: g, rules: []}, {name: g, rules: []}]", Some("appears more than once")),
        ("empty group name", "groups: [{name: '', rules: []}]", Some("groups[0].name must not be empty")),
        ("bad interval", "groups: [{name: g, interval: 5 minutes, rules: []}]", Some("groups[0].interval")),
        ("bad query_offset", "groups: [{name: g, query_offset: -1m, rules: []}]", Some("query_offset")),
        ("negative limit", "groups: [{name: g, limit: -1, rules: []}]", Some("limit is -1")),
        ("bad for", "groups: [{name: g, rules: [{alert: A, expr: up, for: '5'}]}]", Some("rules[0].for")),
        ("bad record", "groups: [{name: g, rules: [{record: a-b, expr: up}]}]", Some("a metric name")),
        ("empty alert", "groups: [{name: g, rules: [{alert: '', expr: up}]}]", Some("rules[0].alert must not be empty")),
        ("bad tenant", "tenant: a:b", Some("spec.tenant")),
    ];
    for (name, spec, want) in cases {
        let spec: Value = serde_saphyr::from_str(spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        let object = json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StrataRule",
            "metadata": {"name": "r"}, "spec": spec});
        judge::<StrataRule>(name, &object, want, |r| validate::rule(&r.spec));
    }
}

#[test]
fn a_prometheus_rule_moves_over_by_changing_kind() {
    // A PrometheusRule as GitOps repositories hold them.
    let text = r#"
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: kube-state
  namespace: monitoring
  labels: {prometheus: k8s, role: alert-rules}
spec:
  groups:
  - name: kube-state-metrics
    interval: 1m
    partial_response_strategy: abort
    rules:
    - alert: KubeStateMetricsListErrors
      annotations:
        description: kube-state-metrics is experiencing errors in list operations.
        runbook_url: https://runbooks.example/kubestatemetricslisterrors
      expr: |
        (sum(rate(kube_state_metrics_list_total{result="error"}[5m])) by (cluster)
          / sum(rate(kube_state_metrics_list_total[5m])) by (cluster)) > 0.01
      for: 15m
      labels:
        severity: critical
    - record: cluster:kube_pod_info:count
      expr: count by (cluster) (kube_pod_info)
"#;
    let mut object: Value = serde_saphyr::from_str(text).expect("parses");
    object["apiVersion"] = json!("strata.dev/v1alpha1");
    object["kind"] = json!("StrataRule");
    judge::<StrataRule>("prometheus rule", &object, None, |r| {
        validate::rule(&r.spec)
    });
}
