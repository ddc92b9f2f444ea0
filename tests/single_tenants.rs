//! Tenant paths of `strata single`: `/insert/<tenant>/...` and
//! `/select/<tenant>/prometheus/...`. Data written to one tenant is never
//! visible to another; the plain paths are tenant 0.

use serde_json::Value;
use strata_e2e::{Single, encode_params, now_ms, parse_export};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Series names visible to `path_prefix` (e.g. `/select/1/prometheus`)
/// through an instant query.
fn visible(single: &Single, path_prefix: &str, t_ms: i64) -> Vec<String> {
    let time = format!("{}", t_ms as f64 / 1000.0);
    let response = single.get(&format!(
        "{path_prefix}/api/v1/query?{}",
        encode_params(&[("query", r#"{__name__=~"tenant_.*"}"#), ("time", &time)])
    ));
    assert_eq!(response.status, 200, "{path_prefix}: {}", response.body);
    let json: Value = serde_json::from_str(&response.body).expect("JSON");
    let mut names: Vec<String> = json["data"]["result"]
        .as_array()
        .expect("result array")
        .iter()
        .map(|s| s["metric"]["__name__"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn tenants_are_isolated_on_every_path() {
    let single = Single::start(BIN);
    let t = now_ms() - 60_000;

    // Tenant 1:0 through the Prometheus text import, 2:0 through Influx,
    // 1:5 through JSON lines, 0:0 through the plain path.
    let response = single.post(
        &format!("/insert/1/prometheus/api/v1/import/prometheus?timestamp={t}"),
        b"tenant_one 1\n".to_vec(),
        &[],
    );
    assert_eq!(response.status, 204, "{}", response.body);
    let response = single.post(
        "/insert/2:0/influx/write?precision=ms",
        format!("tenant two=2 {t}\n").into_bytes(),
        &[],
    );
    assert_eq!(response.status, 204, "{}", response.body);
    let response = single.post(
        "/insert/1:5/prometheus/api/v1/import",
        format!(
            r#"{{"metric":{{"__name__":"tenant_one_five"}},"values":[15],"timestamps":[{t}]}}"#
        )
        .into_bytes(),
        &[],
    );
    assert_eq!(response.status, 204, "{}", response.body);
    let response = single.import(&format!(
        r#"{{"metric":{{"__name__":"tenant_zero"}},"values":[0],"timestamps":[{t}]}}"#
    ));
    assert_eq!(response.status, 204, "{}", response.body);

    assert_eq!(visible(&single, "/select/1/prometheus", t), ["tenant_one"]);
    assert_eq!(
        visible(&single, "/select/1:0/prometheus", t),
        ["tenant_one"]
    );
    assert_eq!(
        visible(&single, "/select/2:0/prometheus", t),
        ["tenant_two"]
    );
    assert_eq!(
        visible(&single, "/select/1:5/prometheus", t),
        ["tenant_one_five"]
    );
    assert_eq!(visible(&single, "", t), ["tenant_zero"]);
    assert_eq!(visible(&single, "/select/0/prometheus", t), ["tenant_zero"]);
    assert!(visible(&single, "/select/3/prometheus", t).is_empty());

    // Export and label lookups honour the tenant too.
    let response = single.get(&format!(
        "/select/2/prometheus/api/v1/export?{}",
        encode_params(&[("match[]", r#"{__name__=~".+"}"#)])
    ));
    assert_eq!(response.status, 200, "{}", response.body);
    let exported = parse_export(&response.body);
    assert_eq!(exported.len(), 1, "{}", response.body);
    assert_eq!(exported[0].values, [2.0]);
    let response = single.get("/select/1:5/prometheus/api/v1/label/__name__/values");
    assert_eq!(response.status, 200, "{}", response.body);
    let json: Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(json["data"], serde_json::json!(["tenant_one_five"]));

    // A malformed tenant is a clear 400, and nothing is written.
    for path in [
        "/insert/x/prometheus/api/v1/import/prometheus",
        "/insert/1:2:3/prometheus/api/v1/import/prometheus",
        "/insert/4294967296/prometheus/api/v1/import/prometheus",
    ] {
        let response = single.post(path, b"tenant_bad 1\n".to_vec(), &[]);
        assert_eq!(response.status, 400, "{path}: {}", response.body);
        assert!(
            response.body.contains("cannot parse tenant"),
            "{path}: {}",
            response.body
        );
    }
    let response = single.get("/select/abc/prometheus/api/v1/query?query=1");
    assert_eq!(response.status, 400, "{}", response.body);
}
