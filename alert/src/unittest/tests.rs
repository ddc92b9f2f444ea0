use std::path::PathBuf;

use super::*;

const RULES: &str = r#"
groups:
  - name: g
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels:
          kind: recorded
      - record: job:up:sum_plus_one
        expr: job:up:sum + 1
      - alert: Down
        expr: up == 0
        for: 2m
        labels:
          severity: page
      - alert: DownNow
        expr: up == 0
        keep_firing_for: 2m
      - alert: Dup
        expr: up{job="dup"}
        labels:
          instance: same
"#;

/// Runs `test` (a test file body naming `rules.yaml`) next to [`RULES`];
/// checks whether it passed and that the report holds every `want` text.
fn check(test: &str, want_pass: bool, want: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("rules.yaml"), RULES).expect("write rules");
    let path = dir.path().join("test.yaml");
    std::fs::write(&path, test).expect("write test");
    let mut out = Vec::new();
    let passed = run(&[path], &mut out);
    let out = String::from_utf8(out).expect("utf-8");
    assert_eq!(passed, want_pass, "test:\n{test}\nreport:\n{out}");
    for w in want {
        assert!(out.contains(w), "report lacks {w:?}:\n{out}");
    }
}

fn down_test(eval_time: &str, values: &str, alertname: &str, firing: bool) -> String {
    let exp = if firing {
        let severity = if alertname == "Down" {
            "severity: page, "
        } else {
            ""
        };
        format!("[{{exp_labels: {{{severity}job: a, instance: x}}}}]")
    } else {
        "[]".to_string()
    };
    format!(
        r#"rule_files: [rules.yaml]
tests:
  - input_series:
      - series: 'up{{job="a", instance="x"}}'
        values: '{values}'
    alert_rule_test:
      - eval_time: {eval_time}
        alertname: {alertname}
        exp_alerts: {exp}
"#
    )
}

#[test]
fn pending_then_firing() {
    // Down at 1m: pending at 1m and 2m, firing from 3m (for: 2m).
    check(
        &down_test("2m", "1 0x10", "Down", false),
        true,
        &["SUCCESS"],
    );
    check(
        &down_test("2m", "1 0x10", "Down", true),
        false,
        &["time: 2m"],
    );
    check(&down_test("3m", "1 0x10", "Down", true), true, &[]);
    // Between steps: the state of the step before.
    check(&down_test("3m59s", "1 0x10", "Down", true), true, &[]);
    check(&down_test("2m59s", "1 0x10", "Down", true), false, &[]);
    // Recovered at 5m.
    check(&down_test("5m", "1 0 0 0 0 1x5", "Down", false), true, &[]);
}

#[test]
fn no_for_fires_at_once_and_keep_firing_for() {
    check(&down_test("1m", "1 0 1x10", "DownNow", true), true, &[]);
    // Result gone at 2m; keeps firing while less than 2m since.
    check(&down_test("3m", "1 0 1x10", "DownNow", true), true, &[]);
    check(&down_test("4m", "1 0 1x10", "DownNow", false), true, &[]);
}

#[test]
fn reports_differences_like_promtool() {
    check(
        &down_test("3m", "1 0x10", "Down", false),
        false,
        &[
            "Unit Testing:  ",
            "  FAILED:",
            "    alertname: Down, time: 3m, \n        exp:[], \n        got:[\n",
            "Labels:{alertname=\"Down\", instance=\"x\", job=\"a\", severity=\"page\"}",
            "Annotations:{}",
        ],
    );
}

fn expr_test(expr: &str, eval_time: &str, samples: &str) -> String {
    format!(
        r#"rule_files: [rules.yaml]
evaluation_interval: 30s
tests:
  - interval: 1m
    input_series:
      - series: 'up{{job="a", instance="x"}}'
        values: '1 1 1 stale'
      - series: 'up{{job="a", instance="y"}}'
        values: '1 _ 1 1 1 1'
    promql_expr_test:
      - expr: '{expr}'
        eval_time: {eval_time}
        exp_samples: {samples}
"#
    )
}

#[test]
fn recording_rules_and_expressions() {
    let sum =
        |v: &str| format!("[{{labels: 'job:up:sum{{job=\"a\", kind=\"recorded\"}}', value: {v}}}]");
    check(&expr_test("job:up:sum", "0m", &sum("2")), true, &[]);
    // y has no sample at 1m but the lookback finds the one at 0.
    check(&expr_test("job:up:sum", "1m", &sum("2")), true, &[]);
    // x is stale from 3m.
    check(&expr_test("job:up:sum", "3m", &sum("1")), true, &[]);
    check(
        &expr_test("job:up:sum", "3m", &sum("2")),
        false,
        &[
            "    expr: \"job:up:sum\", time: 3m,\n        exp: {__name__=\"job:up:sum\", job=\"a\", kind=\"recorded\"} 2E+00\n        got: {__name__=\"job:up:sum\", job=\"a\", kind=\"recorded\"} 1E+00",
        ],
    );
    // A later rule of the group sees the earlier one's result of the same step.
    check(
        &expr_test(
            "job:up:sum_plus_one",
            "30s",
            "[{labels: 'job:up:sum_plus_one{job=\"a\", kind=\"recorded\"}', value: 3}]",
        ),
        true,
        &[],
    );
    check(&expr_test("nothing", "1m", "[]"), true, &[]);
    check(
        &expr_test("nothing", "1m", "[{labels: 'nothing', value: 1}]"),
        false,
        &["got: nil"],
    );
    check(
        &expr_test("1 + 1", "1m", "[{labels: '{}', value: 2}]"),
        true,
        &[],
    );
    check(
        &expr_test("sum(", "1m", "[]"),
        false,
        &["expr: \"sum(\", time: 1m, err: "],
    );
    check(
        &expr_test("up", "1m", "[{labels: 'up{', value: 2}]"),
        false,
        &["labels \"up{\""],
    );
}

#[test]
fn alerts_series_are_written() {
    let alerts = |t: &str, state: &str| {
        expr_test(
            "ALERTS{alertname=\"Down\"}",
            t,
            &format!(
                "[{{labels: 'ALERTS{{alertname=\"Down\", alertstate=\"{state}\", instance=\"x\", job=\"a\", severity=\"page\"}}', value: 1}}]"
            ),
        )
        .replace("values: '1 1 1 stale'", "values: '1 0 0 0 0 0'")
    };
    check(&alerts("1m", "pending"), true, &[]);
    check(&alerts("2m30s", "pending"), true, &[]);
    check(&alerts("3m", "firing"), true, &[]);
    check(&alerts("3m", "pending"), false, &[]);
    let for_state = expr_test(
        "ALERTS_FOR_STATE{alertname=\"Down\"}",
        "4m",
        "[{labels: 'ALERTS_FOR_STATE{alertname=\"Down\", instance=\"x\", job=\"a\", severity=\"page\"}', value: 60}]",
    )
    .replace("values: '1 1 1 stale'", "values: '1 0 0 0 0 0'");
    check(&for_state, true, &[]);
}

#[test]
fn duplicate_alert_labels_fail_evaluation() {
    check(
        &expr_test("up", "0m", "[]").replace("job=\"a\"", "job=\"dup\""),
        false,
        &["rule: Dup, time: 0s, err: vector contains metrics with the same labelset"],
    );
}

#[test]
fn invalid_files() {
    check("tests: []\nunknown: 1\n", false, &["unknown"]);
    check(
        "rule_files: [rules.yaml]\ngroup_eval_order: [g, g]\n",
        false,
        &["group name repeated in evaluation order: g"],
    );
    check(
        "rule_files: [rules.yaml]\ntests:\n- alert_rule_test:\n  - eval_time: 1m\n",
        false,
        &["an item under alert_rule_test misses required attribute alertname at eval_time 1m"],
    );
    // Zero intervals mean the defaults.
    check(
        "rule_files: [rules.yaml]\nevaluation_interval: 0s\ntests: [{interval: 0s}]\n",
        true,
        &[],
    );
    check(
        "rule_files: [rules.yaml]\nevaluation_interval: 1x\n",
        false,
        &["evaluation_interval"],
    );
    check(
        "rule_files: [rules.yaml]\ntests: []\n",
        true,
        &["  SUCCESS\n"],
    );
}

#[test]
fn float_text_like_go() {
    for (v, want) in [
        (3.0, "3E+00"),
        (1.5, "1.5E+00"),
        (0.0, "0E+00"),
        (-2.5e-7, "-2.5E-07"),
        (1.0e100, "1E+100"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
    ] {
        assert_eq!(float_text(v), want, "{v}");
    }
}

#[test]
fn missing_file_fails() {
    let mut out = Vec::new();
    assert!(!run(&[PathBuf::from("/nonexistent/t.yaml")], &mut out));
}

#[test]
fn rule_file_patterns() {
    let sum_test = |pattern: &str| {
        format!(
            r#"rule_files: ["{pattern}"]
tests:
  - input_series: [{{series: 'up{{job="a"}}', values: "1 1"}}]
    promql_expr_test:
      - expr: job:up:sum
        eval_time: 1m
        exp_samples: [{{labels: 'job:up:sum{{job="a", kind="recorded"}}', value: 1}}]
"#
        )
    };
    check(&sum_test("rules.yaml"), true, &[]);
    check(&sum_test("rul*.yaml"), true, &[]);
    check(&sum_test("r?les.y[a-z]ml"), true, &[]);
    check(&sum_test("[!r]ules.yaml"), true, &[]);
    check(
        &sum_test("[^r]ules.yaml"),
        false,
        &["no file match pattern"],
    );
    // A pattern matching nothing only warns, so a file without expectations
    // on rules passes.
    check(
        "rule_files: [nosuch.yaml]\ntests: []\n",
        true,
        &[
            "  WARNING: no file match pattern ",
            "nosuch.yaml",
            "SUCCESS",
        ],
    );
    check("rule_files: [\"[\"]\n", false, &["syntax error in pattern"]);
}
