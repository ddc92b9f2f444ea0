//! Health, readiness and metrics of a `strata single` process.

use strata_e2e::{Single, now_ms};

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
