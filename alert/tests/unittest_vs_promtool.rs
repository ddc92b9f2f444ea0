//! Every fixture of `testdata/unittest/` (`good-*.yaml` must pass,
//! `bad-*.yaml` must fail) is run by Strata's rule unit tests and by the real
//! `promtool test rules` of both Prometheus releases we track: Debian's 2.42
//! (`promtool` on PATH, `scripts/fetch-peers prometheus`) and 2.53
//! (`.peers/promtool-newer/usr/bin/promtool`, `scripts/fetch-peers
//! promtool-newer`). Strata must agree with 2.53 on every file, and with 2.42
//! except for the files listed in [`NEWER_ONLY`].
//!
//! A second test generates random alert timelines and compares Strata's
//! whole report with promtool 2.53's.
//!
//! A missing promtool fails the test unless `STRATA_SKIP_PEER_TESTS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Fixtures on which 2.42 disagrees with 2.53, and why.
const NEWER_ONLY: &[(&str, &str)] = &[(
    "good-query-offset.yaml",
    "group query_offset came after 2.42, which rejects the field",
)];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate dir has a parent")
        .to_path_buf()
}

fn on_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|p| p.is_file())
}

fn skip_allowed() -> bool {
    std::env::var("STRATA_SKIP_PEER_TESTS").is_ok_and(|v| v == "1")
}

/// The promtools present; panics on a missing one unless skipping is allowed.
fn promtools() -> Vec<(&'static str, PathBuf)> {
    let candidates = [
        (
            "2.42",
            on_path("promtool"),
            "scripts/fetch-peers prometheus",
        ),
        (
            "2.53",
            Some(repo_root().join(".peers/promtool-newer/usr/bin/promtool"))
                .filter(|p| p.is_file()),
            "scripts/fetch-peers promtool-newer",
        ),
    ];
    let mut found = Vec::new();
    for (version, path, install) in candidates {
        match path {
            Some(p) => found.push((version, p)),
            None if skip_allowed() => {
                eprintln!(
                    "promtool {version}: SKIPPED: not installed and STRATA_SKIP_PEER_TESTS=1"
                );
            }
            None => panic!(
                "promtool {version} is missing: run `{install}` (the test command does), \
                 or set STRATA_SKIP_PEER_TESTS=1 to skip peer tests"
            ),
        }
    }
    found
}

fn promtool_passes(promtool: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(promtool)
        .arg("test")
        .arg("rules")
        .arg(file.file_name().expect("fixture has a name"))
        .current_dir(file.parent().expect("fixture has a dir"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn fixtures_agree_with_promtool() {
    let dir = repo_root().join("alert/testdata/unittest");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read fixtures")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("good-") || name.starts_with("bad-")
        })
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 8, "too few fixtures in {}", dir.display());
    let tools = promtools();
    let mut disagreements = Vec::new();
    for file in &fixtures {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let want = name.starts_with("good-");
        let mut out = Vec::new();
        let strata = strata_alert::unittest::run(std::slice::from_ref(file), &mut out);
        let report = String::from_utf8_lossy(&out).to_string();
        if strata != want {
            disagreements.push(format!(
                "{name}: Strata {} but the fixture should {}:\n{report}",
                verdict(strata),
                if want { "pass" } else { "fail" }
            ));
        }
        for (version, promtool) in &tools {
            let (passed, text) = promtool_passes(promtool, file);
            let newer_only = NEWER_ONLY.iter().any(|(n, _)| *n == name);
            if passed == strata {
                if *version == "2.42" && newer_only && strata == want {
                    eprintln!("{name}: promtool 2.42 now agrees; drop it from NEWER_ONLY");
                }
                continue;
            }
            if *version == "2.42" && newer_only {
                eprintln!("{name}: promtool 2.42 differs (known)");
                continue;
            }
            disagreements.push(format!(
                "{name}: Strata {} but promtool {version} {}\n--- Strata:\n{report}--- promtool:\n{text}",
                verdict(strata),
                verdict(passed)
            ));
        }
        eprintln!("{name}: Strata {}", verdict(strata));
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

fn verdict(passed: bool) -> &'static str {
    if passed { "passes" } else { "fails" }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// A random test file with its rule file: flapping `up` series, alerts with
/// random `for`/`keep_firing_for`, and an alert test expecting nothing at
/// every 30s, so that every report lists the firing alerts of that time.
fn random_case(rng: &mut Rng) -> (String, String) {
    let rules = format!(
        r#"groups:
  - name: g
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: up == 0
        for: {}
        keep_firing_for: {}
        labels:
          severity: page
        annotations:
          summary: '{{{{ $labels.instance }}}} is {{{{ $value }}}}'
      - alert: FewUp
        expr: job:up:sum < 2
        for: {}
        keep_firing_for: {}
        annotations:
          summary: 'only {{{{ $value }}}} up'
"#,
        rng.pick(&["0s", "1m", "2m", "90s"]),
        rng.pick(&["0s", "1m", "3m"]),
        rng.pick(&["0s", "30s", "2m"]),
        rng.pick(&["0s", "2m"]),
    );
    let mut series = String::new();
    for instance in ["a", "b", "c"] {
        let values: Vec<&str> = (0..14)
            .map(|_| rng.pick(&["0", "1", "1", "1", "_", "stale"]))
            .collect();
        series.push_str(&format!(
            "      - series: 'up{{job=\"j\", instance=\"{instance}\"}}'\n        values: '{}'\n",
            values.join(" ")
        ));
    }
    let mut tests = String::new();
    for step in 0..=24 {
        for alert in ["Down", "FewUp"] {
            tests.push_str(&format!(
                "      - eval_time: {}s\n        alertname: {alert}\n        exp_alerts: []\n",
                step * 30
            ));
        }
    }
    // Written series (recording results, ALERTS with their stale markers)
    // as read back after the evaluations.
    let mut exprs = String::new();
    for step in [1, 3, 6, 9, 12] {
        for expr in ["job:up:sum", "ALERTS", "ALERTS_FOR_STATE"] {
            exprs.push_str(&format!(
                "      - expr: {expr}\n        eval_time: {step}m\n        exp_samples: []\n"
            ));
        }
    }
    let test = format!(
        "rule_files: [rules.yaml]\nevaluation_interval: {}\ntests:\n  - interval: {}\n    input_series:\n{series}    alert_rule_test:\n{tests}    promql_expr_test:\n{exprs}",
        rng.pick(&["30s", "1m"]),
        rng.pick(&["30s", "1m", "2m"]),
    );
    (test, rules)
}

/// The report without blank lines and the file's header line (promtool
/// writes parts of it to stdout and parts to stderr).
fn normalized(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Unit Testing:"))
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// Random alert timelines: the firing alerts Strata reports at every time,
/// and the recording and `ALERTS` series it wrote, must be exactly those
/// promtool 2.53 reports (compared as report text).
/// `STRATA_ALERT_DIFF_CASES` sets the number of cases (default 15).
#[test]
fn random_alert_timelines_match_promtool() {
    let Some((_, promtool)) = promtools().into_iter().find(|(v, _)| *v == "2.53") else {
        return;
    };
    let cases: u64 = std::env::var("STRATA_ALERT_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let mut rng = Rng(0x5eed_a1e7);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut mismatches = Vec::new();
    let mut firing_lines = 0;
    let mut sample_lines = 0;
    for case in 0..cases {
        let (test, rules) = random_case(&mut rng);
        std::fs::write(dir.path().join("rules.yaml"), &rules).expect("write rules");
        let file = dir.path().join("test.yaml");
        std::fs::write(&file, &test).expect("write test");
        let mut out = Vec::new();
        strata_alert::unittest::run(std::slice::from_ref(&file), &mut out);
        let ours = normalized(&String::from_utf8_lossy(&out));
        let (_, theirs) = promtool_passes(&promtool, &file);
        let theirs = normalized(&theirs);
        firing_lines += ours.iter().filter(|l| l.contains("Labels:")).count();
        sample_lines += ours.iter().filter(|l| l.contains("got: {")).count();
        if ours != theirs {
            let first = ours
                .iter()
                .zip(&theirs)
                .position(|(a, b)| a != b)
                .unwrap_or(ours.len().min(theirs.len()));
            mismatches.push(format!(
                "case {case}: first difference at report line {first}:\n  Strata:   {:?}\n  promtool: {:?}\n--- test:\n{test}--- rules:\n{rules}",
                ours.get(first),
                theirs.get(first)
            ));
        }
    }
    // Something must have fired, or the comparison proves nothing.
    assert!(
        cases == 0 || (firing_lines > 0 && sample_lines > 0),
        "nothing fired or was recorded in any case"
    );
    eprintln!(
        "{cases} cases, {firing_lines} firing alerts and {sample_lines} non-empty \
         query results reported"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {cases} cases differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
