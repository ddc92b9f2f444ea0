//! StrataRule validation and compilation: what the rule loader of
//! `strata alert` rejects is rejected with group, index and error; valid
//! objects become rule files the same loader reads back; large objects are
//! split; files are packed into ConfigMaps.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::{Value, json};
use strata_crds::rule::RejectedRule;
use strata_operator::rule::{compile, owns_file, pack};

fn check_rejected(groups: Value, want: &[(&str, i32, Option<&str>, &str)]) {
    let object = rule(NS, "r", groups.clone(), 1);
    let got = compile(&object, 1 << 20).expect_err("rejected");
    let got: Vec<(String, i32, Option<String>, String)> = got
        .into_iter()
        .map(
            |RejectedRule {
                 group,
                 index,
                 name,
                 error,
             }| (group, index, name, error),
        )
        .collect();
    assert_eq!(got.len(), want.len(), "{got:?} for {groups}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (g.0.as_str(), g.1, g.2.as_deref()),
            (w.0, w.1, w.2),
            "{got:?}"
        );
        assert!(g.3.contains(w.3), "{:?} should contain {:?}", g.3, w.3);
    }
}

#[test]
fn invalid_rules_are_rejected_with_their_place() {
    check_rejected(
        bad_groups(),
        &[("broken", 1, Some("Oops"), "cannot parse expression")],
    );
    check_rejected(
        json!([{"name": "g", "rules": [{"alert": "A", "expr": "up", "annotations": {"s": "{{ $labels.x "}}]}]),
        &[("g", 0, Some("A"), "cannot parse template")],
    );
    check_rejected(
        json!([{"name": "g", "rules": [{"record": "a", "alert": "B", "expr": "up"}]}]),
        &[("g", 0, Some("a"), "only one of 'record' and 'alert'")],
    );
    check_rejected(
        json!([{"name": "g", "rules": [{"record": "bad-name", "expr": "up"}]}]),
        &[("g", 0, Some("bad-name"), "invalid recording rule name")],
    );
    check_rejected(
        json!([{"name": "g", "rules": []}, {"name": "g", "rules": []}]),
        &[("g", -1, None, "repeated")],
    );
    check_rejected(
        json!([{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "5 minutes"}]}]),
        &[("g", 0, Some("A"), "invalid duration")],
    );
    check_rejected(
        json!([{"name": "g", "rules": [{"alert": "A", "expr": "sum(", "labels": {"0bad": "x"}}, {"record": "r", "expr": "rate(x[5m]"}]}]),
        &[
            ("g", 0, Some("A"), ""),
            ("g", 0, Some("A"), ""),
            ("g", 1, Some("r"), "cannot parse expression"),
        ],
    );
}

#[test]
fn bad_tenant_is_rejected() {
    let mut object = rule(NS, "r", good_groups(), 1);
    object.spec.tenant = Some("12:x".into());
    let got = compile(&object, 1 << 20).expect_err("rejected");
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].group.as_str(), got[0].index), ("", -1));
    assert!(
        got[0].error.contains("cannot parse tenant"),
        "{}",
        got[0].error
    );
}

#[test]
fn valid_rules_become_files_the_evaluator_loads() {
    let mut object = rule(NS, "api", good_groups(), 1);
    object.spec.tenant = Some("7:1".into());
    object.spec.groups[0].interval = Some("30s".into());
    object.spec.groups[0].query_offset = Some("1m".into());
    object.spec.groups[0].limit = Some(100);
    object.spec.groups[0].partial_response_strategy = Some("warn".into());
    object.spec.groups[0].rules[1].expr =
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1);
    let compiled = compile(&object, 1 << 20).expect("valid");
    assert_eq!(compiled.files.len(), 1);
    let (name, text) = &compiled.files[0];
    assert_eq!(name, "obs_api.yaml");
    assert!(text.starts_with("# StrataRule obs/api\n"), "{text}");
    let file = strata_alert::rules::parse_rule_file(Path::new(name), text).expect("loads");
    let group = &file.groups[0];
    assert_eq!(group.tenant.as_deref(), Some("7:1"));
    assert_eq!(group.interval, Some(std::time::Duration::from_secs(30)));
    assert_eq!(group.query_offset, Some(std::time::Duration::from_secs(60)));
    assert_eq!(group.limit, 100);
    assert_eq!(group.rules.len(), 2);
    assert_eq!(group.rules[0].name(), "HighLatency");
    assert_eq!(group.rules[0].for_, std::time::Duration::from_secs(300));
    assert_eq!(group.rules[0].annotations["summary"], "p99 {{ $value }}");
    assert_eq!(group.rules[1].expr, "1");
}

#[test]
fn large_objects_split_between_groups() {
    let groups: Vec<Value> = (0..6)
        .map(|i| json!({"name": format!("g{i}"), "rules": [{"record": format!("r{i}"), "expr": format!("sum(rate(metric_{i}_total[5m])) by (job, instance)")}]}))
        .collect();
    let object = rule(NS, "big", Value::Array(groups), 1);
    let whole = compile(&object, 1 << 20).expect("valid").files;
    assert_eq!(whole.len(), 1);
    let max = whole[0].1.len() / 2;
    let parts = compile(&object, max).expect("valid").files;
    assert!(parts.len() >= 2, "{parts:?}");
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "obs_big.yaml");
    assert_eq!(names[1], "obs_big_1.yaml");
    let mut seen = Vec::new();
    for (name, text) in &parts {
        assert!(text.len() <= max, "{name} is {} bytes", text.len());
        let file = strata_alert::rules::parse_rule_file(Path::new(name), text).expect("loads");
        seen.extend(file.groups.into_iter().map(|g| g.name));
    }
    assert_eq!(seen, ["g0", "g1", "g2", "g3", "g4", "g5"]);
    // A single group over the limit cannot be split: rejected.
    let err = compile(&object, 60).expect_err("too large");
    assert!(err[0].error.contains("more than the 60"), "{:?}", err);
}

#[test]
fn file_ownership() {
    let check = |file: &str, want: bool| assert_eq!(owns_file("obs_api", file), want, "{file}");
    check("obs_api.yaml", true);
    check("obs_api_1.yaml", true);
    check("obs_api_12.yaml", true);
    check("obs_api_.yaml", false);
    check("obs_api_x.yaml", false);
    check("obs_api.v2.yaml", false);
    check("obs_apix.yaml", false);
    check("obs_ap.yaml", false);
    check("other_api.yaml", false);
}

#[test]
fn packing_keeps_each_map_under_the_limit_in_name_order() {
    let files: BTreeMap<String, String> = [("a", 40), ("b", 40), ("c", 90), ("d", 10)]
        .into_iter()
        .map(|(n, len)| (n.to_string(), "x".repeat(len)))
        .collect();
    let check = |max: usize, want: Vec<Vec<&str>>| {
        let maps = pack(&files, max);
        let got: Vec<Vec<&str>> = maps
            .iter()
            .map(|m| m.keys().map(String::as_str).collect())
            .collect();
        assert_eq!(got, want, "max {max}");
    };
    check(1000, vec![vec!["a", "b", "c", "d"]]);
    check(100, vec![vec!["a", "b"], vec!["c"], vec!["d"]]);
    check(81, vec![vec!["a"], vec!["b"], vec!["c"], vec!["d"]]);
    assert!(pack(&BTreeMap::new(), 10).is_empty());
}
