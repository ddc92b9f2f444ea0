//! Start, stop and restart of a `strata single` process.

use std::time::{Duration, Instant};

use strata_e2e::{Single, now_ms, parse_export};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn import_marker(single: &Single, name: &str, t: i64) {
    let body = format!(
        r#"{{"metric":{{"__name__":"{name}"}},"values":[1,2],"timestamps":[{t},{}]}}"#,
        t + 1
    );
    let response = single.import(&body);
    assert_eq!(response.status, 204, "import: {}", response.body);
}

fn assert_marker(single: &Single, name: &str, t: i64) {
    let response = single.export(&[("match[]", name)]);
    assert_eq!(response.status, 200, "export: {}", response.body);
    let got = parse_export(&response.body);
    assert_eq!(got.len(), 1, "{name} after restart: {}", response.body);
    assert_eq!(got[0].timestamps, vec![t, t + 1]);
    assert_eq!(got[0].values, vec![1.0, 2.0]);
}

#[test]
fn sigterm_stops_quickly_and_cleanly_and_data_survives() {
    let mut single = Single::start(BIN);
    let t = now_ms() - 60_000;
    import_marker(&single, "e2e_sigterm", t);

    let asked = Instant::now();
    single.sigterm();
    let status = single
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s of SIGTERM");
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let log = single.log();
    for want in [
        "HTTP server stopped",
        "Storage closed",
        "Strata single stopped",
    ] {
        assert!(log.contains(want), "log lacks {want:?}:\n{log}");
    }

    single.restart();
    assert_marker(&single, "e2e_sigterm", t);
}

#[test]
fn kill9_loses_no_acknowledged_sample() {
    let mut single = Single::start(BIN);
    let t = now_ms() - 60_000;
    import_marker(&single, "e2e_kill9", t);
    single.kill9();
    single.restart();
    assert_marker(&single, "e2e_kill9", t);
}
