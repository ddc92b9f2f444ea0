//! The Prometheus HTTP API of a `strata single` process: exact JSON of every
//! endpoint, error shapes, and the real `promtool` as a client.
//!
//! The promtool tests need `promtool` on the PATH (`scripts/fetch-peers
//! prometheus` installs it); without it they fail, unless
//! `STRATA_TEST_SKIP_PEERS=1` is set, which skips them with a message.

use std::process::Command;

use serde_json::{Value, json};
use strata_e2e::{Response, Single, encode_params, now_ms};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Whole seconds, ten minutes ago: every sample is at `T0 + k * 15s`.
fn t0() -> i64 {
    (now_ms() / 1000 - 600) * 1000
}

/// Label pairs of a fixture series, `__name__` first.
type Labels = &'static [(&'static str, &'static str)];

/// The fixture: two `up` series, a counter rising 1/s, a gauge; samples at
/// `t0 + k * 15s`.
fn fixture() -> Vec<(Labels, Vec<f64>)> {
    vec![
        (
            &[("__name__", "up"), ("job", "a"), ("instance", "x")],
            vec![1.0; 5],
        ),
        (
            &[("__name__", "up"), ("job", "b"), ("instance", "y")],
            vec![0.0; 5],
        ),
        (
            &[("__name__", "e2e_requests_total"), ("job", "a")],
            vec![0.0, 15.0, 30.0, 45.0, 60.0],
        ),
        (
            &[("__name__", "node_cpu"), ("job", "a"), ("cpu", "0")],
            vec![0.25],
        ),
    ]
}

/// The fixture as import lines.
fn fixture_json(t0: i64) -> String {
    let mut lines = Vec::new();
    for (labels, values) in fixture() {
        let metric: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!(r#""{k}":"{v}""#))
            .collect();
        let values: Vec<String> = values.iter().map(ToString::to_string).collect();
        let ts: Vec<String> = (0..values.len() as i64)
            .map(|i| (t0 + i * 15_000).to_string())
            .collect();
        lines.push(format!(
            r#"{{"metric":{{{}}},"values":[{}],"timestamps":[{}]}}"#,
            metric.join(","),
            values.join(","),
            ts.join(",")
        ));
    }
    lines.join("\n")
}

/// The fixture in the OpenMetrics text format, for `promtool tsdb create-blocks-from`.
fn fixture_openmetrics(t0: i64) -> String {
    let mut text = String::new();
    for (labels, values) in fixture() {
        let name = labels[0].1;
        let rest: Vec<String> = labels[1..]
            .iter()
            .map(|(k, v)| format!(r#"{k}="{v}""#))
            .collect();
        for (i, v) in values.iter().enumerate() {
            let t = t0 + i as i64 * 15_000;
            text.push_str(&format!("{name}{{{}}} {v} {}\n", rest.join(","), secs(t)));
        }
    }
    text.push_str("# EOF\n");
    text
}

/// Starts `strata single` with `args` and imports the fixture.
fn start_with_fixture(args: &[&str]) -> (Single, i64) {
    let single = Single::start_with_args(BIN, args);
    let t0 = t0();
    let imported = single.import(&fixture_json(t0));
    assert_eq!(imported.status, 204, "{}", imported.body);
    (single, t0)
}

fn get(single: &Single, path: &str, params: &[(&str, &str)]) -> Response {
    single.get(&format!("{path}?{}", encode_params(params)))
}

fn post_form(single: &Single, path: &str, params: &[(&str, &str)]) -> Response {
    single.post(
        path,
        encode_params(params).into_bytes(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    )
}

fn post_form_raw(single: &Single, path: &str, form: &str) -> Response {
    single.post(
        path,
        form.as_bytes().to_vec(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    )
}

/// Checks status, content type and the exact body.
fn check(response: Response, status: u16, body: &str) {
    assert_eq!(
        (response.status, response.body.as_str()),
        (status, body),
        "unexpected answer"
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
}

fn parse(response: &Response) -> Value {
    serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.body))
}

/// Seconds text of a millisecond timestamp, as the API writes it.
fn secs(t: i64) -> String {
    if t % 1000 == 0 {
        (t / 1000).to_string()
    } else {
        format!("{}.{:03}", t / 1000, t % 1000)
    }
}

#[test]
fn series_labels_and_values_have_prometheus_shapes() {
    let (single, t0) = start_with_fixture(&[]);
    let up_x = r#"{"__name__":"up","instance":"x","job":"a"}"#;
    let up_y = r#"{"__name__":"up","instance":"y","job":"b"}"#;

    check(
        get(&single, "/api/v1/series", &[("match[]", "up")]),
        200,
        &format!(r#"{{"status":"success","data":[{up_x},{up_y}]}}"#),
    );
    // POST form, two selectors: a union, each series once.
    check(
        post_form(
            &single,
            "/api/v1/series",
            &[
                ("match[]", r#"up{job="a"}"#),
                ("match[]", r#"{instance=~"x|y"}"#),
            ],
        ),
        200,
        &format!(r#"{{"status":"success","data":[{up_x},{up_y}]}}"#),
    );
    check(
        get(
            &single,
            "/api/v1/series",
            &[("match[]", "up"), ("limit", "1")],
        ),
        200,
        &format!(
            r#"{{"status":"success","data":[{up_x}],"warnings":["results truncated due to limit"]}}"#
        ),
    );
    // A range before the data finds nothing.
    let before = secs(t0 - 60_000);
    check(
        get(
            &single,
            "/api/v1/series",
            &[("match[]", "up"), ("start", "0"), ("end", &before)],
        ),
        200,
        r#"{"status":"success","data":[]}"#,
    );
    check(
        get(&single, "/api/v1/series", &[]),
        400,
        r#"{"status":"error","errorType":"bad_data","error":"no match[] parameter provided"}"#,
    );
    check(
        get(
            &single,
            "/api/v1/series",
            &[("match[]", "up"), ("start", "yesterday")],
        ),
        400,
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"start\": invalid time value for 'start': cannot parse \"yesterday\" to a valid timestamp"}"#,
    );
    check(
        get(
            &single,
            "/api/v1/series",
            &[("match[]", "up"), ("limit", "0")],
        ),
        400,
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"limit\": limit must be positive"}"#,
    );
    let bad_selector = get(&single, "/api/v1/series", &[("match[]", "rate(up[5m])")]);
    assert_eq!(bad_selector.status, 400, "{}", bad_selector.body);
    assert_eq!(parse(&bad_selector)["errorType"], "bad_data");

    check(
        get(&single, "/api/v1/labels", &[]),
        200,
        r#"{"status":"success","data":["__name__","cpu","instance","job"]}"#,
    );
    check(
        post_form(&single, "/api/v1/labels", &[("match[]", "up")]),
        200,
        r#"{"status":"success","data":["__name__","instance","job"]}"#,
    );
    check(
        get(&single, "/api/v1/labels", &[("limit", "2")]),
        200,
        r#"{"status":"success","data":["__name__","cpu"],"warnings":["results truncated due to limit"]}"#,
    );
    check(
        get(&single, "/api/v1/label/job/values", &[]),
        200,
        r#"{"status":"success","data":["a","b"]}"#,
    );
    check(
        get(&single, "/api/v1/label/__name__/values", &[]),
        200,
        r#"{"status":"success","data":["e2e_requests_total","node_cpu","up"]}"#,
    );
    check(
        get(
            &single,
            "/api/v1/label/job/values",
            &[("match[]", "node_cpu"), ("match[]", r#"up{instance="y"}"#)],
        ),
        200,
        r#"{"status":"success","data":["a","b"]}"#,
    );
    check(
        get(&single, "/api/v1/label/nope/values", &[]),
        200,
        r#"{"status":"success","data":[]}"#,
    );
    check(
        get(&single, "/api/v1/label/1x/values", &[]),
        400,
        r#"{"status":"error","errorType":"bad_data","error":"invalid label name: \"1x\""}"#,
    );

    // A body that is not a form is refused rather than silently ignored.
    let json_body = single.post(
        "/api/v1/series",
        br#"{"match[]":"up"}"#.to_vec(),
        &[("Content-Type", "application/json")],
    );
    check(
        json_body,
        400,
        r#"{"status":"error","errorType":"bad_data","error":"request body must be application/x-www-form-urlencoded, got \"application/json\""}"#,
    );

    let metrics = single.metrics();
    for want in [
        r#"strata_select_api_requests_total{endpoint="series",result="ok"} 4"#,
        r#"strata_select_api_requests_total{endpoint="series",result="bad_data"} 5"#,
        r#"strata_select_api_requests_total{endpoint="label_values",result="ok"} 4"#,
        r#"strata_select_api_request_duration_seconds_count{endpoint="labels"} 3"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
}

#[test]
fn status_endpoints_have_prometheus_shapes() {
    let single = Single::start(BIN);
    // Today's index: the cardinality report covers the current day.
    let t = now_ms() - 2_000;
    let lines: Vec<String> = [
        r#""__name__":"up","job":"a","instance":"x""#,
        r#""__name__":"up","job":"b","instance":"x""#,
        r#""__name__":"up","job":"b","instance":"y""#,
        r#""__name__":"go_goroutines","job":"a""#,
    ]
    .iter()
    .map(|labels| format!(r#"{{"metric":{{{labels}}},"values":[1],"timestamps":[{t}]}}"#))
    .collect();
    assert_eq!(single.import(&lines.join("\n")).status, 204);

    let buildinfo = single.get("/api/v1/status/buildinfo");
    assert_eq!(buildinfo.status, 200, "{}", buildinfo.body);
    assert_eq!(
        parse(&buildinfo),
        json!({"status":"success","data":{
            "version":"2.53.0","revision":"","branch":"","buildUser":"","buildDate":"",
            "goVersion":"","strataVersion": env!("CARGO_PKG_VERSION")}})
    );

    check(
        single.get("/api/v1/metadata"),
        200,
        r#"{"status":"success","data":{}}"#,
    );
    check(
        single.get("/api/v1/metadata?limit=x"),
        400,
        r#"{"status":"error","errorType":"bad_data","error":"limit must be a number"}"#,
    );

    let tsdb = single.get("/api/v1/status/tsdb");
    assert_eq!(tsdb.status, 200, "{}", tsdb.body);
    let mut got = parse(&tsdb);
    let head = got["data"]["headStats"].take();
    assert_eq!(head["numSeries"], 4, "{head}");
    assert_eq!(head["numLabelPairs"], 6, "{head}");
    assert_eq!(head["chunkCount"], 0, "{head}");
    let (min, max) = (
        head["minTime"].as_i64().expect("minTime"),
        head["maxTime"].as_i64().expect("maxTime"),
    );
    assert!(min <= t && t <= max, "{head}");
    let stat = |pairs: &[(&str, u64)]| -> Value {
        pairs
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect()
    };
    assert_eq!(
        got,
        json!({"status":"success","data":{
            "headStats": null,
            "seriesCountByMetricName": stat(&[("up", 3), ("go_goroutines", 1)]),
            "labelValueCountByLabelName": stat(&[("__name__", 2), ("instance", 2), ("job", 2)]),
            "memoryInBytesByLabelName": stat(&[("__name__", 15), ("instance", 2), ("job", 2)]),
            "seriesCountByLabelValuePair": stat(&[
                ("__name__=up", 3), ("instance=x", 2), ("job=a", 2), ("job=b", 2),
                ("__name__=go_goroutines", 1), ("instance=y", 1),
            ]),
        }}),
        "{}",
        tsdb.body
    );

    let top = parse(&single.get("/api/v1/status/tsdb?limit=1"));
    assert_eq!(
        top["data"]["seriesCountByLabelValuePair"],
        stat(&[("__name__=up", 3)]),
        "{top}"
    );
    check(
        single.get("/api/v1/status/tsdb?limit=0"),
        400,
        r#"{"status":"error","errorType":"bad_data","error":"limit must be a positive number"}"#,
    );
}

#[test]
fn query_parameter_errors_have_prometheus_shapes() {
    let single = Single::start(BIN);
    let bad_data = |response: Response, message: &str| {
        check(
            response,
            400,
            &format!(
                r#"{{"status":"error","errorType":"bad_data","error":{}}}"#,
                serde_json::to_string(message).expect("json string")
            ),
        )
    };
    let query = |params: &[(&str, &str)]| get(&single, "/api/v1/query", params);
    let range = |params: &[(&str, &str)]| post_form(&single, "/api/v1/query_range", params);

    for q in ["up{", "", "sum(", "1 +"] {
        let response = query(&[("query", q)]);
        assert_eq!(response.status, 400, "{q}: {}", response.body);
        let body = parse(&response);
        assert_eq!(body["errorType"], "bad_data", "{q}");
        let message = body["error"].as_str().expect("error");
        assert!(
            message.starts_with(r#"invalid parameter "query": "#),
            "{q}: {message}"
        );
    }
    bad_data(
        query(&[("query", "up"), ("time", "now")]),
        r#"invalid parameter "time": invalid time value for 'time': cannot parse "now" to a valid timestamp"#,
    );
    bad_data(
        query(&[("query", "up"), ("timeout", "soon")]),
        r#"invalid parameter "timeout": cannot parse "soon" to a valid duration"#,
    );
    bad_data(
        query(&[("query", "up"), ("lookback_delta", "far")]),
        r#"error parsing lookback delta duration: cannot parse "far" to a valid duration"#,
    );
    bad_data(
        query(&[("query", "up"), ("limit", "x")]),
        r#"invalid parameter "limit": strconv.Atoi: parsing "x": invalid syntax"#,
    );

    let ok = [
        ("query", "up"),
        ("start", "100"),
        ("end", "200"),
        ("step", "15s"),
    ];
    let with = |name: &str, value: &'static str| -> Vec<(&'static str, &'static str)> {
        ok.iter()
            .map(|&(k, v)| if k == name { (k, value) } else { (k, v) })
            .filter(|(_, v)| !v.is_empty())
            .collect()
    };
    bad_data(
        range(&with("start", "")),
        r#"invalid parameter "start": cannot parse "" to a valid timestamp"#,
    );
    bad_data(
        range(&with("end", "2023-13-01T00:00:00Z")),
        r#"invalid parameter "end": cannot parse "2023-13-01T00:00:00Z" to a valid timestamp"#,
    );
    bad_data(
        range(&with("end", "50")),
        r#"invalid parameter "end": end timestamp must not be before start time"#,
    );
    bad_data(
        range(&with("step", "")),
        r#"invalid parameter "step": cannot parse "" to a valid duration"#,
    );
    for step in ["0", "-15", "0s"] {
        bad_data(
            range(&with("step", step)),
            r#"invalid parameter "step": zero or negative query resolution step widths are not accepted. Try a positive integer"#,
        );
    }
    bad_data(
        range(&with("step", "0.001")),
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query \
         resolution (?step=XX)",
    );
    let response = range(&with("query", "up["));
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(
        response
            .body
            .contains(r#""error":"invalid parameter \"query\": "#),
        "{}",
        response.body
    );

    check(
        get(
            &single,
            "/api/v1/format_query",
            &[("query", "sum(rate(x[5m]))by(job)")],
        ),
        200,
        r#"{"status":"success","data":"sum by (job) (rate(x[5m]))"}"#,
    );
    check(
        get(&single, "/api/v1/query_exemplars", &[("query", "up")]),
        200,
        r#"{"status":"success","data":[]}"#,
    );

    let metrics = single.metrics();
    for want in [
        r#"strata_select_queries_rejected_total{reason="max_points_per_series"} 1"#,
        r#"strata_select_api_requests_total{endpoint="query_range",result="bad_data"} 9"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
}

#[test]
fn queries_evaluate_selectors_literals_and_rate() {
    let (single, t0) = start_with_fixture(&[]);
    let t = t0 + 60_000;
    let at = secs(t);

    // Instant vector: the order of a plain selector's result is unspecified.
    let response = get(&single, "/api/v1/query", &[("query", "up"), ("time", &at)]);
    assert_eq!(response.status, 200, "{}", response.body);
    let mut body = parse(&response);
    body["data"]["result"]
        .as_array_mut()
        .expect("result")
        .sort_by_key(|s| s["metric"].to_string());
    assert_eq!(
        body.to_string(),
        format!(
            r#"{{"data":{{"result":[{{"metric":{{"__name__":"up","instance":"x","job":"a"}},"value":[{at},"1"]}},{{"metric":{{"__name__":"up","instance":"y","job":"b"}},"value":[{at},"0"]}}],"resultType":"vector"}},"status":"success"}}"#
        )
    );

    check(
        post_form(
            &single,
            "/api/v1/query",
            &[("query", "node_cpu"), ("time", &at)],
        ),
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"__name__":"node_cpu","cpu":"0","job":"a"}},"value":[{at},"0.25"]}}]}}}}"#
        ),
    );
    check(
        post_form(&single, "/api/v1/query", &[("query", "1+1"), ("time", &at)]),
        200,
        &format!(r#"{{"status":"success","data":{{"resultType":"scalar","result":[{at},"2"]}}}}"#),
    );
    check(
        get(
            &single,
            "/api/v1/query",
            &[("query", r#""hello""#), ("time", &at)],
        ),
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"string","result":[{at},"hello"]}}}}"#
        ),
    );

    let response = get(
        &single,
        "/api/v1/query",
        &[("query", "rate(e2e_requests_total[1m])"), ("time", &at)],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let body = parse(&response);
    let result = &body["data"]["result"];
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(result[0]["metric"], json!({"job":"a"}), "{body}");
    let rate: f64 = result[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("rate value");
    assert!((rate - 1.0).abs() < 1e-9, "{body}");

    // Range query: one point per step, timestamps in seconds.
    let values: Vec<String> = (0..5)
        .map(|i| format!(r#"[{},"1"]"#, secs(t0 + i * 15_000)))
        .collect();
    check(
        get(
            &single,
            "/api/v1/query_range",
            &[
                ("query", r#"up{job="a"}"#),
                ("start", &secs(t0)),
                ("end", &at),
                ("step", "15s"),
            ],
        ),
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"__name__":"up","instance":"x","job":"a"}},"values":[{}]}}]}}}}"#,
            values.join(",")
        ),
    );

    // limit cuts the result and says so; stats adds Prometheus' stats object.
    let response = get(
        &single,
        "/api/v1/query",
        &[
            ("query", "up"),
            ("time", &at),
            ("limit", "1"),
            ("stats", "all"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let body = parse(&response);
    assert_eq!(
        body["data"]["result"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert_eq!(
        body["warnings"],
        json!(["results truncated due to limit"]),
        "{body}"
    );
    let stats = &body["data"]["stats"];
    for field in [
        "evalTotalTime",
        "execQueueTime",
        "execTotalTime",
        "innerEvalTime",
    ] {
        assert!(stats["timings"][field].is_number(), "{field}: {body}");
    }
    assert!(stats["samples"]["totalQueryableSamples"].is_u64(), "{body}");
    assert!(stats["samples"]["peakSamples"].is_u64(), "{body}");
}

/// Runs promtool; `None` when peers are opted out.
fn promtool(args: &[&str]) -> Option<String> {
    let output = match Command::new("promtool").args(args).output() {
        Ok(output) => output,
        Err(e) if std::env::var_os("STRATA_TEST_SKIP_PEERS").is_some() => {
            eprintln!("skipped: promtool is not available ({e}) and STRATA_TEST_SKIP_PEERS is set");
            return None;
        }
        Err(e) => panic!(
            "cannot run promtool ({e}): install it with `scripts/fetch-peers prometheus`, \
             or set STRATA_TEST_SKIP_PEERS=1 to skip peer tests"
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "promtool {args:?} failed: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Some(stdout)
}

#[test]
fn promtool_lists_series_and_label_values() {
    let (single, _) = start_with_fixture(&[]);
    let url = single.base_url();
    let Some(series) = promtool(&["query", "series", &url, "--match=up", "--match=node_cpu"])
    else {
        return;
    };
    let mut lines: Vec<&str> = series.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        vec![
            r#"{__name__="node_cpu", cpu="0", job="a"}"#,
            r#"{__name__="up", instance="x", job="a"}"#,
            r#"{__name__="up", instance="y", job="b"}"#,
        ]
    );
    let values = promtool(&["query", "labels", &url, "job"]).expect("not skipped");
    assert_eq!(values, "a\nb\n");
    let names = promtool(&["query", "labels", &url, "__name__"]).expect("not skipped");
    assert_eq!(names, "e2e_requests_total\nnode_cpu\nup\n");
}

#[test]
fn promtool_runs_instant_and_range_queries() {
    let (single, t0) = start_with_fixture(&[]);
    let url = single.base_url();
    let t = secs(t0 + 60_000);
    let Some(instant) = promtool(&["query", "instant", "--time", &t, &url, r#"up{job="a"}"#])
    else {
        return;
    };
    assert_eq!(
        instant,
        format!("up{{instance=\"x\", job=\"a\"}} => 1 @[{t}]\n")
    );

    let scalar = promtool(&["query", "instant", "--time", &t, &url, "1+1"]).expect("not skipped");
    assert_eq!(scalar, format!("scalar: 2 @[{t}]\n"));

    let range = promtool(&[
        "query",
        "range",
        "--start",
        &secs(t0),
        "--end",
        &t,
        "--step",
        "15s",
        &url,
        r#"up{job="b"}"#,
    ])
    .expect("not skipped");
    let points: Vec<String> = (0..5)
        .map(|i| format!("0 @[{}]", secs(t0 + i * 15_000)))
        .collect();
    assert_eq!(
        range,
        format!(
            "up{{instance=\"y\", job=\"b\"}} =>\n{}\n",
            points.join("\n")
        )
    );
}

/// A real Prometheus server on an empty database, killed on drop.
struct Prometheus {
    child: std::process::Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Prometheus {
    /// `None` when peers are opted out and `prometheus` is missing. With
    /// `openmetrics`, its samples are loaded first (`promtool tsdb
    /// create-blocks-from openmetrics`).
    fn start(openmetrics: Option<&str>) -> Option<Prometheus> {
        let addr = strata_e2e::free_port();
        let dir = std::env::temp_dir().join(format!("strata-e2e-prometheus-{}", addr.port()));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        if let Some(text) = openmetrics {
            let file = dir.join("data.om");
            std::fs::write(&file, text).expect("openmetrics file");
            let data = dir.join("data");
            let file = file.to_string_lossy().into_owned();
            let data = data.to_string_lossy().into_owned();
            promtool(&["tsdb", "create-blocks-from", "openmetrics", &file, &data])?;
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").expect("prometheus config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let spawned = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var_os("STRATA_TEST_SKIP_PEERS").is_some() => {
                eprintln!(
                    "skipped: prometheus is not available ({e}) and STRATA_TEST_SKIP_PEERS is set"
                );
                let _ = std::fs::remove_dir_all(&dir);
                return None;
            }
            Err(e) => panic!(
                "cannot run prometheus ({e}): install it with `scripts/fetch-peers prometheus`, \
                 or set STRATA_TEST_SKIP_PEERS=1 to skip peer tests"
            ),
        };
        let prometheus = Prometheus {
            child,
            dir,
            url: format!("http://{addr}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if fetch(&format!("{}/-/ready", prometheus.url))
                .is_some_and(|(status, _)| status == 200)
            {
                return Some(prometheus);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus not ready after 30s; log:\n{}",
                std::fs::read_to_string(prometheus.dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// POST `form` (URL-encoded) to `url`: status and body.
fn post_fetch(url: &str, form: &str) -> (u16, String) {
    let response = reqwest::blocking::Client::new()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().expect("body"))
}

/// GET `url`: status and body, `None` when the connection fails.
fn fetch(url: &str) -> Option<(u16, String)> {
    let response = reqwest::blocking::get(url).ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().ok()?))
}

/// Requests whose answers do not depend on stored data get byte-identical
/// answers from Strata and from Prometheus (the Debian package, 2.42: the
/// 2.53 details it lacks are left out here and tested above).
#[test]
fn answers_match_a_real_prometheus() {
    let Some(prometheus) = Prometheus::start(None) else {
        return;
    };
    let single = Single::start(BIN);
    let same = [
        // Values and timestamps of every result type.
        "query?query=1%2B1&time=100.5",
        "query?query=1e21&time=1",
        "query?query=1e-7&time=1",
        "query?query=-0&time=1",
        "query?query=1/0&time=0.001",
        "query?query=0/0&time=1700000000.123",
        "query?query=%22text%22&time=100.05",
        "query?query=vector(1)&time=100.5",
        "query?query=vector(1)&time=-1.5",
        "query?query=vector(1e-7)&time=1",
        "query?query=vector(1e21)&time=1",
        "query?query=vector(1e-6)&time=1",
        "query?query=-vector(1/0)&time=1",
        "query?query=vector(0/0)&time=1",
        "query?query=vector(0.1%2B0.2)&time=1",
        "query?query=vector(-0)&time=1",
        "query?query=up&time=1",
        "query?query=sum(up)&time=1",
        "query_range?query=1&start=100&end=130&step=15",
        "query_range?query=vector(2)*time()&start=100.5&end=101&step=0.25",
        "query_range?query=time()&start=0&end=3600&step=1m",
        "query_range?query=up&start=0&end=100&step=10",
        // Time and duration forms.
        "query?query=time()&time=2023-11-14T22:13:20.123456789Z",
        "query?query=time()&time=2023-11-15T00:13:20%2B02:00",
        "query?query=time()&time=1e9",
        "query_range?query=time()&start=2023-11-14T22:00:00Z&end=2023-11-14T23:30:00Z&step=1h30m",
        "query_range?query=time()&start=100&end=100&step=1",
        "query_range?query=time()&start=100&end=101&step=0.5",
        // Parameter errors.
        "query?query=up&timeout=soon",
        "query_range?query=up&end=200&step=15s",
        "query_range?query=up&start=x&end=200&step=15s",
        "query_range?query=up&start=100&end=50&step=15s",
        "query_range?query=up&start=100&end=200",
        "query_range?query=up&start=100&end=200&step=0",
        "query_range?query=up&start=100&end=200&step=-15",
        "query_range?query=up&start=100&end=200&step=1y1y",
        "query_range?query=up&start=0&end=200000&step=0.001",
        "series",
        "label/1x/values",
        "metadata?limit=x",
        // Lookups on an empty database.
        "series?match[]=up",
        "labels",
        "label/job/values",
        "metadata",
        "query_exemplars?query=up",
        "query_exemplars?query=1%2Babs(vector(1))",
        "query_exemplars?query=sum(rate(up%5B5m%5D))",
        "query_exemplars?query=up&start=100&end=50",
        "format_query?query=sum(rate(x%5B5m%5D))by(job)",
    ];
    for path in same {
        let want = fetch(&format!("{}/api/v1/{path}", prometheus.url)).expect("prometheus answers");
        let got = single.get(&format!("/api/v1/{path}"));
        assert_eq!((got.status, got.body), want, "{path}");
    }
    // Parse errors: Prometheus prefixes a position Strata's parser does not give.
    for path in [
        "query?query=up%7B",
        "query?query=",
        "query?query=sum(",
        "series?match[]=rate(up%5B5m%5D)",
    ] {
        let (status, body) =
            fetch(&format!("{}/api/v1/{path}", prometheus.url)).expect("prometheus");
        let got = single.get(&format!("/api/v1/{path}"));
        assert_eq!(
            (got.status, status),
            (400, 400),
            "{path}: {body} / {}",
            got.body
        );
        let prefix = |b: &str| b.split(": ").next().map(str::to_string);
        assert_eq!(
            prefix(&got.body),
            prefix(&body),
            "{path}: {body} / {}",
            got.body
        );
    }
}

/// Sorts the `result` of a query answer by metric: the order of an instant
/// vector is unspecified.
fn sorted_result(body: &str) -> Value {
    let mut value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    if let Some(result) = value["data"]["result"].as_array_mut() {
        result.sort_by_key(|s| s["metric"].to_string());
    }
    value
}

/// The same samples in Strata and in Prometheus give the same series,
/// labels and query answers.
#[test]
fn answers_on_the_same_data_match_a_real_prometheus() {
    let t0 = t0();
    let Some(prometheus) = Prometheus::start(Some(&fixture_openmetrics(t0))) else {
        return;
    };
    let single = Single::start(BIN);
    assert_eq!(single.import(&fixture_json(t0)).status, 204);
    let at = secs(t0 + 60_000);
    let start = secs(t0);
    let exact: Vec<String> = [
        "series?match[]=up".to_string(),
        "series?match[]=up%7Bjob%3D%22a%22%7D&match[]=node_cpu".to_string(),
        "series?match[]=%7Bjob%3D%22a%22%7D".to_string(),
        "series?match[]=up&match[]=up".to_string(),
        format!("series?match[]=up&start={start}&end={at}"),
        "labels?match[]=%7B__name__%3D~%22.%2B%22%7D".to_string(),
        format!("label/__name__/values?start={start}&end={at}"),
        format!("query?query=count_over_time(up%5B1m%5D)&time={at}"),
        format!("query?query=max_over_time(node_cpu%5B10m%5D)%20*%202&time={at}"),
        format!("series?match[]=up&start=0&end={}", secs(t0 - 60_000)),
        "labels".to_string(),
        "labels?match[]=node_cpu".to_string(),
        "label/job/values".to_string(),
        "label/__name__/values".to_string(),
        "label/instance/values?match[]=up%7Bjob%3D%22b%22%7D".to_string(),
        format!("query?query=node_cpu&time={at}"),
        format!("query?query=sum(up)&time={at}"),
        format!("query?query=rate(e2e_requests_total%5B1m%5D)&time={at}"),
        format!("query_range?query=up&start={start}&end={at}&step=15"),
        format!("query_range?query=sum%20by%20(job)(up)&start={start}&end={at}&step=20s"),
        format!("query_range?query=node_cpu&start={start}&end={at}&step=7.5"),
    ]
    .into();
    for path in &exact {
        let want = fetch(&format!("{}/api/v1/{path}", prometheus.url)).expect("prometheus answers");
        let got = single.get(&format!("/api/v1/{path}"));
        assert_eq!((got.status, got.body), want, "{path}");
    }
    // The same as form bodies (what Grafana sends).
    for path in exact.iter().filter(|p| !p.starts_with("label/")) {
        let (endpoint, form) = path.split_once('?').unwrap_or((path, ""));
        let want = post_fetch(&format!("{}/api/v1/{endpoint}", prometheus.url), form);
        let got = post_form_raw(&single, &format!("/api/v1/{endpoint}"), form);
        assert_eq!((got.status, got.body), want, "POST {path}");
    }
    for path in [
        format!("query?query=up&time={at}"),
        format!("query?query=%7Bjob%3D%22a%22%7D&time={at}"),
    ] {
        let (status, body) =
            fetch(&format!("{}/api/v1/{path}", prometheus.url)).expect("prometheus");
        let got = single.get(&format!("/api/v1/{path}"));
        assert_eq!(got.status, status, "{path}");
        assert_eq!(sorted_result(&got.body), sorted_result(&body), "{path}");
    }
}
