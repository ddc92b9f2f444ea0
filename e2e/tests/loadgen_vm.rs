//! The load generator against a real VictoriaMetrics single-node: every
//! sample it sends is accepted, and the server holds exactly the series the
//! fleet and its churn define.
//!
//! Needs `.peers/vm/usr/bin/victoria-metrics` (`scripts/fetch-peers vm`) or
//! `STRATA_VM_BIN`; without it the test fails, unless `STRATA_SKIP_PEER_TESTS=1`
//! says to skip it.

use std::time::Duration;

use strata_e2e::compare::{self, Kind, Peer, sum_metric};
use strata_e2e::loadgen::fleet::FleetShape;
use strata_e2e::loadgen::{self, Config};

#[test]
fn loadgen_pushes_remote_write_into_victoria_metrics() {
    let bin = std::env::var_os("STRATA_VM_BIN").map_or_else(compare::default_vm_bin, Into::into);
    if !bin.exists() {
        if std::env::var_os("STRATA_SKIP_PEER_TESTS").is_some() {
            eprintln!(
                "skipped: no victoria-metrics at {} and STRATA_SKIP_PEER_TESTS is set",
                bin.display()
            );
            return;
        }
        panic!(
            "no victoria-metrics at {}: run `scripts/fetch-peers vm`, set STRATA_VM_BIN, \
             or set STRATA_SKIP_PEER_TESTS=1 to skip",
            bin.display()
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut vm =
        Peer::start(Kind::Victoria, &bin, &[], dir.path()).expect("start victoria-metrics");

    // 4 hosts, half of them replaced every 2 scrapes: events before scrapes
    // 2 and 4 start 2 new hosts each, so 8 hosts' series in all.
    let config = Config {
        url: vm.url("/api/v1/write"),
        hosts: 4,
        points: 5,
        senders: 2,
        batch: 500,
        churn: 0.5,
        churn_every: Duration::from_secs(30),
        report_every: Duration::ZERO,
        ..Config::default()
    };
    let report = loadgen::run_blocking(&config).expect("load");
    eprintln!("{report}");
    let per_host = FleetShape::series_per_host();
    assert_eq!(report.samples_sent, 4 * 5 * per_host);
    assert_eq!(report.samples_accepted, report.samples_sent, "{report}");
    assert_eq!(report.requests, report.requests_ok);
    assert_eq!(report.fleet.series_created, 8 * per_host);
    assert_eq!(report.fleet.points, 5);

    vm.call("GET", "/internal/force_flush")
        .expect("force flush");
    let count = vm
        .call("GET", "/api/v1/series/count")
        .expect("series count");
    let count: serde_json::Value = serde_json::from_str(&count).expect("json");
    assert_eq!(count["data"][0].as_u64(), Some(8 * per_host), "{count}");
    let metrics = vm.call("GET", "/metrics").expect("metrics");
    let inserted = sum_metric(&metrics, "vm_rows_inserted_total");
    assert_eq!(inserted, report.samples_sent as f64);
    vm.stop(Duration::from_secs(10));
}
