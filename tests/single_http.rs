//! Health, readiness and metrics of a `strata single` process.

use strata_e2e::{Single, now_ms, parse_export};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

#[test]
fn health_ready_and_metrics() {
    let single = Single::start(BIN);
    let health = single.get("/health");
    assert_eq!((health.status, health.body.as_str()), (200, "OK"));
    assert_eq!(single.get("/ready").status, 200);
    assert_eq!(single.get("/no/such/path").status, 404);

    let t = now_ms() - 60_000;
    let body = format!(
        r#"{{"metric":{{"__name__":"e2e_metrics"}},"values":[1,2,3],"timestamps":[{t},{},{}]}}"#,
        t + 1,
        t + 2
    );
    assert_eq!(single.import(&body).status, 204);
    assert_eq!(single.import("{oops").status, 400);

    let response = single.get("/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        response.headers
    );
    let metrics = response.body;
    for want in [
        r#"strata_insert_rows_total{protocol="vmimport"} 3"#,
        r#"strata_insert_requests_total{protocol="vmimport",result="ok"} 1"#,
        r#"strata_insert_requests_total{protocol="vmimport",result="parse_error"} 1"#,
        r#"strata_insert_rows_rejected_total{protocol="vmimport",reason="invalid_json"} 1"#,
        r#"strata_http_requests_total{path="/api/v1/import",status="204"} 1"#,
        r#"strata_http_requests_total{path="/api/v1/import",status="400"} 1"#,
        r#"strata_http_requests_total{path="/health",status="200"} 1"#,
        r#"strata_http_requests_total{path="other",status="404"} 1"#,
        "# TYPE strata_http_request_duration_seconds histogram",
        "# EOF",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }
}

#[test]
fn flush_and_force_merge_keep_the_data() {
    let single = Single::start(BIN);
    let t = now_ms() - 600_000;
    let line = |name: &str, offset: i64| {
        format!(
            r#"{{"metric":{{"__name__":"{name}","job":"x"}},"values":[1,2.5],"timestamps":[{},{}]}}"#,
            t + offset,
            t + offset + 15_000
        )
    };
    // Two flushed batches make two parts for the merge to join.
    assert_eq!(single.import(&line("e2e_merge_a", 0)).status, 204);
    assert_eq!(single.post("/internal/flush", Vec::new(), &[]).status, 200);
    assert_eq!(single.import(&line("e2e_merge_b", 30_000)).status, 204);
    assert_eq!(single.import(&line("e2e_merge_a", 60_000)).status, 204);
    let merged = single.post("/internal/force_merge", Vec::new(), &[]);
    assert_eq!((merged.status, merged.body.as_str()), (200, ""));
    assert_eq!(single.get("/internal/force_merge").status, 405);

    let exported = single.export(&[("match[]", r#"{__name__=~"e2e_merge_.*"}"#)]);
    assert_eq!(exported.status, 200, "{}", exported.body);
    let mut got = parse_export(&exported.body);
    got.sort_by(|a, b| a.labels.cmp(&b.labels));
    assert_eq!(got.len(), 2, "{}", exported.body);
    assert_eq!(got[0].labels["__name__"], "e2e_merge_a");
    assert_eq!(
        got[0].timestamps,
        vec![t, t + 15_000, t + 60_000, t + 75_000]
    );
    assert_eq!(got[0].values, vec![1.0, 2.5, 1.0, 2.5]);
    assert_eq!(got[1].timestamps, vec![t + 30_000, t + 45_000]);

    let metrics = single.metrics();
    for want in [
        r#"strata_http_requests_total{path="/internal/flush",status="200"} 1"#,
        r#"strata_http_requests_total{path="/internal/force_merge",status="200"} 1"#,
        // The two flushed parts became one.
        "strata_storage_parts 1\n",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }
}
