//! The load generator against `strata single`'s remote write endpoint: every
//! sample is accepted and exported back, series appear and stop with churn,
//! and counters read back only grow.

use std::time::Duration;

use strata_e2e::loadgen::fleet::FleetShape;
use strata_e2e::loadgen::{self, Config};
use strata_e2e::{Single, parse_export};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

#[test]
fn loadgen_remote_write_round_trips_through_export() {
    let single = Single::start(BIN);
    // 4 hosts, half replaced every 2 scrapes: events before scrapes 2 and 4
    // start 2 new hosts each, 8 hosts' series in all.
    let config = Config {
        url: format!("{}/api/v1/write", single.base_url()),
        hosts: 4,
        points: 5,
        senders: 2,
        batch: 700,
        churn: 0.5,
        churn_every: Duration::from_secs(30),
        report_every: Duration::ZERO,
        ..Config::default()
    };
    let report = loadgen::run_blocking(&config).expect("load");
    eprintln!("{report}");
    let per_host = FleetShape::series_per_host();
    assert_eq!(report.samples_accepted, 4 * 5 * per_host, "{report}");
    assert_eq!(report.requests, report.requests_ok, "{report}");

    let response = single.export(&[("match[]", r#"{__name__=~".+"}"#)]);
    assert_eq!(response.status, 200, "{}", response.body);
    let series = parse_export(&response.body);
    assert_eq!(series.len() as u64, 8 * per_host);
    let samples: usize = series.iter().map(|s| s.values.len()).sum();
    assert_eq!(samples as u64, report.samples_accepted);
    // Hosts 0-3 from the start; 0-1 replaced before scrape 2, 2-3 before 4;
    // 4-5 from scrape 2 on, 6-7 from scrape 4 on.
    for s in &series {
        let instance = &s.labels["instance"];
        let want = match instance.as_str() {
            "host-0000:9100" | "host-0001:9100" => 2,
            "host-0002:9100" | "host-0003:9100" => 4,
            "host-0004:9100" | "host-0005:9100" => 3,
            "host-0006:9100" | "host-0007:9100" => 1,
            other => panic!("unexpected instance {other}"),
        };
        assert_eq!(s.values.len(), want, "{:?}", s.labels);
        if s.labels["__name__"].ends_with("_total") {
            assert!(
                s.values.windows(2).all(|w| w[1] >= w[0]),
                "{:?}: {:?}",
                s.labels,
                s.values
            );
        }
    }
}
