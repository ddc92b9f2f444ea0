//! Runs every PromQL test file (Prometheus' own, fetched by
//! `scripts/fetch-peers promql-tests`, and ours in `select/testdata/`)
//! through the real storage engine and the PromQL engine.
//!
//! Cases listed in `select/testdata/known-failures.txt` (`file:line reason`
//! per line) may fail; any other failure fails the test. A listed case that
//! passes is reported so the list can shrink.
//!
//! Env:
//! - `STRATA_SKIP_PROMQL_TESTDATA=1`: run only our files when Prometheus'
//!   files are not fetched (otherwise their absence is a failure).
//! - `STRATA_PROMQL_WRITE_KNOWN_FAILURES=1`: rewrite the known-failures list
//!   from this run's failures.
//! - `STRATA_PROMQL_VERBOSE=1`: also print known failures in full.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use strata_select::promqltest::{Outcome, Runner};

const PEER_DIR: &str = ".peers/promql/testdata";
const OWN_DIR: &str = "select/testdata";
const KNOWN_FAILURES: &str = "select/testdata/known-failures.txt";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("select/ has a parent")
        .to_path_buf()
}

fn test_files(root: &Path, dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".test"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    files.sort();
    files
}

/// `file:line` -> reason.
fn known_failures(root: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root.join(KNOWN_FAILURES)).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(' ') {
            Some((key, reason)) => (key.to_string(), reason.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.lines().next().unwrap_or_default();
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s.to_string()
    }
}

#[derive(Default)]
struct Counts {
    passed: usize,
    failed: usize,
    known_failing: usize,
    skipped: usize,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.known_failing += other.known_failing;
        self.skipped += other.skipped;
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "passed {}, failed {}, known-failing {}, skipped {}",
            self.passed, self.failed, self.known_failing, self.skipped
        )
    }
}

#[test]
fn promql_test_files() {
    let root = workspace_root();
    let mut files = Vec::new();
    if root.join(PEER_DIR).is_dir() {
        files.extend(test_files(&root, PEER_DIR));
        assert!(!files.is_empty(), "{PEER_DIR} holds no .test files");
    } else if std::env::var("STRATA_SKIP_PROMQL_TESTDATA").as_deref() == Ok("1") {
        println!(
            "SKIPPED Prometheus' PromQL test files: {PEER_DIR} is missing and \
             STRATA_SKIP_PROMQL_TESTDATA=1; running only {OWN_DIR}"
        );
    } else {
        panic!(
            "{PEER_DIR} is missing: run `scripts/fetch-peers promql-tests` in the repository \
             root (or set STRATA_SKIP_PROMQL_TESTDATA=1 to run only {OWN_DIR})"
        );
    }
    files.extend(test_files(&root, OWN_DIR));

    let known = known_failures(&root);
    let verbose = std::env::var("STRATA_PROMQL_VERBOSE").as_deref() == Ok("1");
    let runner = Runner::default();
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut cases = BTreeSet::new();
    let mut failing: Vec<(String, String)> = Vec::new();
    let mut new_failures = Vec::new();
    let mut now_passing = Vec::new();
    let mut summary = String::new();
    let mut totals = Counts::default();
    for (n, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let dir = scratch.path().join(n.to_string());
        let results = runner
            .run_text(&text, &dir)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut counts = Counts::default();
        for case in results {
            let key = format!("{file}:{}", case.line);
            cases.insert(key.clone());
            match case.outcome {
                Outcome::Passed => {
                    counts.passed += 1;
                    if known.contains_key(&key) {
                        now_passing.push(key);
                    }
                }
                Outcome::Skipped { reason } => {
                    counts.skipped += 1;
                    println!("SKIPPED {key}: {reason}");
                }
                Outcome::Failed {
                    reason,
                    expected,
                    got,
                } => {
                    let report = format!(
                        "FAILED {key}\n  query: {}\n  reason: {reason}\n  expected: {expected}\n  got: {got}\n",
                        case.query
                    );
                    failing.push((key.clone(), one_line(&reason, 120)));
                    if known.contains_key(&key) {
                        counts.known_failing += 1;
                        if verbose {
                            println!("(known) {report}");
                        }
                    } else {
                        counts.failed += 1;
                        println!("{report}");
                        new_failures.push(key);
                    }
                }
            }
        }
        totals.add(&counts);
        let _ = writeln!(summary, "{file}: {counts}");
    }
    let _ = writeln!(summary, "total: {totals}");
    println!("\n{summary}");
    for key in &now_passing {
        println!("NOW PASSING (remove from {KNOWN_FAILURES}): {key}");
    }
    for key in known.keys().filter(|k| !cases.contains(*k)) {
        println!("STALE ENTRY (no such case; remove from {KNOWN_FAILURES}): {key}");
    }

    if std::env::var("STRATA_PROMQL_WRITE_KNOWN_FAILURES").as_deref() == Ok("1") {
        let mut out = String::from(
            "# PromQL test cases that fail today: `file:line reason`, one per line.\n\
             # Regenerate with `STRATA_PROMQL_WRITE_KNOWN_FAILURES=1 cargo nextest run -p \
             strata-select --test promql_testdata`; fix a case, remove its line.\n",
        );
        for (key, reason) in &failing {
            let _ = writeln!(out, "{key} {reason}");
        }
        std::fs::write(root.join(KNOWN_FAILURES), out).expect("write known failures");
        println!("wrote {} entries to {KNOWN_FAILURES}", failing.len());
        return;
    }
    assert!(
        new_failures.is_empty(),
        "{} PromQL test cases failed that are not in {KNOWN_FAILURES} (each printed above \
         as FAILED), first: {}",
        new_failures.len(),
        new_failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
}
