//! Helpers shared by the select integration tests.

use std::path::PathBuf;

/// The `promtool` on `PATH`. When it is missing the calling test fails with
/// how to install it, unless `STRATA_SKIP_PEER_TESTS=1`: then this says the
/// test is skipped and returns `None`.
pub fn promtool_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("STRATA_SKIP_PEER_TESTS").as_deref() == Ok("1") {
            println!("SKIPPED: promtool not found and STRATA_SKIP_PEER_TESTS=1");
            return None;
        }
        panic!(
            "promtool not found in PATH: run `scripts/fetch-peers prometheus` \
             (or set STRATA_SKIP_PEER_TESTS=1 to skip peer tests)"
        );
    }
    found
}
