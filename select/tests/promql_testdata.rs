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

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use strata_select::promqltest::{CaseResult, Outcome, Runner};

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

/// The cases of one file and how long the file took.
type FileRun = (Vec<CaseResult>, Duration);

/// Runs `files` on a few threads (loading and flushing wait on the disk
/// more than they compute); results in the order of `files`.
fn run_files(runner: &Runner, root: &Path, files: &[String], scratch: &Path) -> Vec<FileRun> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<FileRun>>> = Mutex::new(files.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(n) else {
                        return;
                    };
                    let text = std::fs::read_to_string(root.join(file))
                        .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
                    let started = Instant::now();
                    let results = runner
                        .run_text(&text, &scratch.join(n.to_string()))
                        .unwrap_or_else(|e| panic!("{file}: {e}"));
                    done.lock().expect("results lock")[n] = Some((results, started.elapsed()));
                }
            });
        }
    });
    done.into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every file ran"))
        .collect()
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
    let runs = run_files(&runner, &root, &files, scratch.path());
    for (file, (results, took)) in files.iter().zip(runs) {
        let mut counts = Counts::default();
        for case in results {
            let key = format!("{file}:{}", case.line);
            cases.insert(key.clone());
            for note in &case.notes {
                println!("NOTE {key}: {note}");
            }
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
                    // An error message says more than "query failed".
                    let why = match got.strip_prefix("error: ") {
                        Some(e) => format!("{reason}: {e}"),
                        None => reason.clone(),
                    };
                    failing.push((key.clone(), one_line(&why, 160)));
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
        let _ = writeln!(summary, "{file}: {counts} ({:.1}s)", took.as_secs_f64());
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

/// Our own files must agree with Prometheus: every eval promtool can
/// express is run by `promtool test rules` (Prometheus' unit test runner).
#[test]
fn own_files_agree_with_promtool() {
    let Some(promtool) = common::promtool_or_skip() else {
        return;
    };
    let root = workspace_root();
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in test_files(&root, OWN_DIR) {
        let text = std::fs::read_to_string(root.join(&file))
            .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let commands =
            strata_select::promqltest::parse_file(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for test in strata_select::promqltest::promtool::rule_tests(&commands) {
            let test = match test {
                Ok(t) => t,
                Err((line, why)) => {
                    println!("NOT CHECKED {file}:{line}: {why}");
                    continue;
                }
            };
            let path = scratch.path().join(format!("case-{checked}.yml"));
            std::fs::write(&path, &test.yaml).expect("write rule test");
            let out = std::process::Command::new(&promtool)
                .arg("test")
                .arg("rules")
                .arg(&path)
                .output()
                .expect("run promtool");
            checked += 1;
            if !out.status.success() {
                println!(
                    "DISAGREES {file}:{}\n{}{}\nrule test:\n{}",
                    test.line,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    test.yaml
                );
                failures.push(format!("{file}:{}", test.line));
            }
        }
    }
    println!("checked {checked} evals with {}", promtool.display());
    assert!(checked > 0, "no eval of {OWN_DIR} could be checked");
    assert!(
        failures.is_empty(),
        "promtool disagrees with the expectations of: {}",
        failures.join(", ")
    );
}
