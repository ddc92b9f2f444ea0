//! Every fixture of `testdata/unittest/` (`good-*.yaml` must pass,
//! `bad-*.yaml` must fail) is run by Strata's rule unit tests and by the real
//! `promtool test rules` of both Prometheus releases we track: Debian's 2.42
//! (`promtool` on PATH, `scripts/fetch-peers prometheus`) and 2.53
//! (`.peers/promtool-newer/usr/bin/promtool`, `scripts/fetch-peers
//! promtool-newer`). Strata must agree with 2.53 on every file, and with 2.42
//! except for the files listed in [`NEWER_ONLY`].
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
