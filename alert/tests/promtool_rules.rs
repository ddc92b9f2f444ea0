//! Every rule fixture is accepted or rejected by our loader exactly when real
//! `promtool check rules` accepts or rejects it: the Debian release (2.42) and
//! the newer one (2.53, `scripts/fetch-peers promtool-newer`). Fixtures named
//! `*-newer-*` use fields 2.42 lacks and are checked against 2.53 only.
//! Set `STRATA_SKIP_PEER_TESTS=1` to skip when promtool is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_alert::rules::parse_rule_file;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read testdata/rules")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn ours_accepts(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).expect("read fixture");
    parse_rule_file(path, &text).map(|_| ()).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[test]
fn fixtures_match_their_names() {
    for path in fixtures() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let result = ours_accepts(&path);
        if name.ends_with("-good.yaml") {
            assert!(result.is_ok(), "{name} rejected: {result:?}");
        } else {
            assert!(
                name.ends_with("-bad.yaml"),
                "{name}: fixtures end in -good/-bad"
            );
            let errors = result.expect_err(name);
            // Every error names the file and a line.
            for line in errors.lines() {
                assert!(
                    line.contains(name) && !line.contains(":0:"),
                    "{name}: {line}"
                );
            }
        }
    }
}

#[test]
fn promtool_agrees() {
    let promtools = [
        ("2.42", PathBuf::from("/usr/bin/promtool")),
        (
            "2.53",
            repo_root().join(".peers/promtool-newer/usr/bin/promtool"),
        ),
    ];
    let present: Vec<_> = promtools.iter().filter(|(_, path)| path.exists()).collect();
    if present.len() < promtools.len() {
        if std::env::var("STRATA_SKIP_PEER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: promtool missing and STRATA_SKIP_PEER_TESTS=1");
            return;
        }
        panic!(
            "promtool missing ({promtools:?}); run scripts/fetch-peers prometheus promtool-newer \
             or set STRATA_SKIP_PEER_TESTS=1"
        );
    }
    let mut disagreements = Vec::new();
    for path in fixtures() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let ours = ours_accepts(&path);
        for (version, promtool) in &present {
            if name.contains("-newer-") && *version == "2.42" {
                continue;
            }
            let output = Command::new(promtool)
                .args(["check", "rules"])
                .arg(&path)
                .output()
                .expect("run promtool");
            if output.status.success() != ours.is_ok() {
                disagreements.push(format!(
                    "{name}: promtool {version} {} it, we {}: {}{}",
                    if output.status.success() {
                        "accepts"
                    } else {
                        "rejects"
                    },
                    if ours.is_ok() { "accept" } else { "reject" },
                    String::from_utf8_lossy(&output.stderr),
                    ours.as_ref().err().cloned().unwrap_or_default(),
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// An expression that does not parse is placed within the expression as
/// promtool places it (`line:column` of the expression, then Prometheus'
/// wording), besides the file's line.
#[test]
fn expression_errors_are_placed_like_promtool() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rules/expr-bad.yaml");
    let errors = ours_accepts(&path).expect_err("expr-bad.yaml is refused");
    // promtool 2.42 and 2.53: `could not parse expression: 1:7: parse
    // error: unclosed left parenthesis` for `sum(up`.
    assert!(
        errors.contains("1:7: parse error: unclosed left parenthesis"),
        "{errors}"
    );
}
