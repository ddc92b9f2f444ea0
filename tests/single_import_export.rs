//! Import and export through a `strata single` process.

use std::io::Write;

use strata_e2e::{ExportedSeries, Single, labels, now_ms, parse_export};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn export_all(single: &Single, selector: &str) -> Vec<ExportedSeries> {
    let response = single.export(&[("match[]", selector)]);
    assert_eq!(response.status, 200, "export {selector}: {}", response.body);
    parse_export(&response.body)
}

#[test]
fn import_then_export_keeps_every_value_exactly() {
    let single = Single::start(BIN);
    let t0 = now_ms() - 3_600_000;
    let values = [
        "1",
        "-2.5",
        "0.1",
        "0.30000000000000004",
        "1e300",
        "-1e-300",
        "123456.789",
        "9007199254740993",
        "-0.0",
        "0",
        "5e-324",
        "1.7976931348623157e308",
        "\"Inf\"",
        "\"-Inf\"",
        "\"+Inf\"",
        "\"NaN\"",
        "42",
    ];
    let timestamps: Vec<i64> = (0..values.len() as i64).map(|i| t0 + i * 15_000).collect();
    let line = format!(
        r#"{{"metric":{{"__name__":"e2e_roundtrip","job":"a b","quote":"say \"hi\"\n"}},"values":[{}],"timestamps":[{}]}}"#,
        values.join(","),
        timestamps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let other = format!(
        r#"{{"metric":{{"__name__":"e2e_roundtrip_other"}},"values":[7],"timestamps":[{t0}]}}"#
    );
    let response = single.import(&format!("{line}\n{other}\n"));
    assert_eq!(response.status, 204, "import: {}", response.body);

    let got = export_all(&single, "e2e_roundtrip");
    assert_eq!(got.len(), 1, "{got:?}");
    let series = &got[0];
    assert_eq!(
        series.labels,
        labels(&[
            ("__name__", "e2e_roundtrip"),
            ("job", "a b"),
            ("quote", "say \"hi\"\n")
        ])
    );
    assert_eq!(series.timestamps, timestamps);
    for (i, text) in values.iter().enumerate() {
        let want: f64 = text.trim_matches('"').parse().expect("test value parses");
        let got = series.values[i];
        if want.is_nan() {
            assert!(got.is_nan(), "values[{i}]: want NaN, got {got:?}");
        } else {
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "values[{i}] {text}: got {got:?}"
            );
        }
    }

    // The export imports back unchanged into a new series set.
    let exported = single.export(&[("match[]", "e2e_roundtrip")]).body;
    let renamed = exported.replace("\"e2e_roundtrip\"", "\"e2e_roundtrip_copy\"");
    let response = single.import(&renamed);
    assert_eq!(response.status, 204, "re-import: {}", response.body);
    let copy = export_all(&single, "e2e_roundtrip_copy");
    assert_eq!(copy.len(), 1);
    assert_eq!(copy[0].timestamps, series.timestamps);
    for (a, b) in copy[0].values.iter().zip(&series.values) {
        assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
    }
}

#[test]
fn export_selects_by_matchers_union_and_time_range() {
    let single = Single::start(BIN);
    let t0 = now_ms() - 600_000;
    let body = format!(
        concat!(
            r#"{{"metric":{{"__name__":"e2e_sel_a","job":"x"}},"values":[1,2,3],"timestamps":[{a},{b},{c}]}}"#,
            "\n",
            r#"{{"metric":{{"__name__":"e2e_sel_a","job":"y"}},"values":[4],"timestamps":[{a}]}}"#,
            "\n",
            r#"{{"metric":{{"__name__":"e2e_sel_b","job":"x"}},"values":[5],"timestamps":[{a}]}}"#,
            "\n",
        ),
        a = t0,
        b = t0 + 60_000,
        c = t0 + 120_000
    );
    assert_eq!(single.import(&body).status, 204);

    let names = |got: &[ExportedSeries]| {
        let mut v: Vec<String> = got
            .iter()
            .map(|s| format!("{}/{}", s.labels["__name__"], s.labels["job"]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&export_all(&single, r#"e2e_sel_a{job="x"}"#)),
        ["e2e_sel_a/x"]
    );
    assert_eq!(
        names(&export_all(
            &single,
            r#"{__name__=~"e2e_sel_.*", job!="y"}"#
        )),
        ["e2e_sel_a/x", "e2e_sel_b/x"]
    );
    // Overlapping selectors: each series once.
    let union = single.export(&[("match[]", "e2e_sel_a"), ("match[]", r#"{job="x"}"#)]);
    assert_eq!(union.status, 200, "{}", union.body);
    assert_eq!(
        names(&parse_export(&union.body)),
        ["e2e_sel_a/x", "e2e_sel_a/y", "e2e_sel_b/x"]
    );

    // Inclusive range in seconds and in RFC 3339 alike.
    let start = format!("{:.3}", (t0 + 60_000) as f64 / 1000.0);
    let end = format!("{:.3}", (t0 + 120_000) as f64 / 1000.0);
    let ranged = single.export(&[
        ("match[]", r#"e2e_sel_a{job="x"}"#),
        ("start", &start),
        ("end", &end),
    ]);
    assert_eq!(ranged.status, 200, "{}", ranged.body);
    let got = parse_export(&ranged.body);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].timestamps, vec![t0 + 60_000, t0 + 120_000]);
    assert_eq!(got[0].values, vec![2.0, 3.0]);

    // POST form works like GET.
    let form = strata_e2e::encode_params(&[("match[]", "e2e_sel_b")]);
    let posted = single.post(
        "/api/v1/export",
        form.into_bytes(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(names(&parse_export(&posted.body)), ["e2e_sel_b/x"]);

    // Bad requests say what is wrong.
    let check_bad = |params: &[(&str, &str)], want: &str| {
        let response = single.export(params);
        assert_eq!(response.status, 400, "{params:?}: {}", response.body);
        assert!(
            response.body.contains(want),
            "{params:?}: {}",
            response.body
        );
    };
    check_bad(&[], "missing match[]");
    check_bad(&[("match[]", "e2e_sel_a{")], "cannot parse series selector");
    check_bad(
        &[("match[]", "rate(e2e_sel_a[5m])")],
        "is not a series selector",
    );
    check_bad(
        &[("match[]", "e2e_sel_a"), ("start", "tomorrow")],
        "cannot parse start",
    );
    check_bad(
        &[("match[]", "e2e_sel_a"), ("start", "20"), ("end", "10")],
        "is before start",
    );
}

#[test]
fn a_bad_line_rejects_the_whole_request() {
    let single = Single::start(BIN);
    let t = now_ms() - 60_000;
    let good = format!(
        r#"{{"metric":{{"__name__":"e2e_bad","case":"good"}},"values":[1],"timestamps":[{t}]}}"#
    );
    let cases: &[(&str, &str)] = &[
        ("{not json", "line 2: invalid JSON"),
        (
            r#"{"values":[1],"timestamps":[1]}"#,
            r#"line 2: missing "metric""#,
        ),
        (
            r#"{"metric":{"a":"b"},"timestamps":[1]}"#,
            r#"line 2: missing "values""#,
        ),
        (
            r#"{"metric":{"a":"b"},"values":[1]}"#,
            r#"line 2: missing "timestamps""#,
        ),
        (
            r#"{"metric":{"a":"b"},"values":[1,2],"timestamps":[1]}"#,
            "line 2: 2 values but 1 timestamps",
        ),
        (
            r#"{"metric":{"a":"b"},"values":["one"],"timestamps":[1]}"#,
            r#"line 2: values[0] is not a number: "one""#,
        ),
        (
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1.5]}"#,
            "line 2: timestamps[0] is not a 64-bit integer",
        ),
        (
            r#"{"metric":{"":"b"},"values":[1],"timestamps":[1]}"#,
            "line 2: empty label name",
        ),
        (
            r#"{"metric":{"a":"b","a":"c"},"values":[1],"timestamps":[1]}"#,
            r#"line 2: duplicate label name "a""#,
        ),
        (
            r#"{"metric":{},"values":[1],"timestamps":[1]}"#,
            "line 2: metric has no labels",
        ),
    ];
    for (bad, want) in cases {
        let response = single.import(&format!("{good}\n{bad}\n{good}\n"));
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
        assert!(
            response.body.starts_with(want),
            "{bad}: want {want:?}, got {:?}",
            response.body
        );
    }
    assert_eq!(
        export_all(&single, r#"{__name__="e2e_bad"}"#),
        [],
        "nothing of a rejected request is stored"
    );
    let metrics = single.metrics();
    assert!(
        metrics.contains(
            r#"strata_insert_rows_rejected_total{protocol="vmimport",reason="missing_field"} 9"#
        ),
        "{metrics}"
    );
}

#[test]
fn compressed_bodies_are_accepted() {
    let single = Single::start(BIN);
    let t = now_ms() - 60_000;
    let line = |encoding: &str| {
        format!(
            r#"{{"metric":{{"__name__":"e2e_compressed","enc":"{encoding}"}},"values":[1.5],"timestamps":[{t}]}}"#
        )
    };

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(line("gzip").as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let response = single.post("/api/v1/import", gz, &[("Content-Encoding", "gzip")]);
    assert_eq!(response.status, 204, "gzip: {}", response.body);

    let zst = zstd::encode_all(line("zstd").as_bytes(), 3).expect("zstd");
    let response = single.post("/api/v1/import", zst, &[("Content-Encoding", "zstd")]);
    assert_eq!(response.status, 204, "zstd: {}", response.body);

    let response = single.post(
        "/api/v1/import",
        b"garbage".to_vec(),
        &[("Content-Encoding", "gzip")],
    );
    assert_eq!(response.status, 400, "{}", response.body);
    let response = single.post(
        "/api/v1/import",
        b"x".to_vec(),
        &[("Content-Encoding", "br")],
    );
    assert_eq!(response.status, 415, "{}", response.body);

    let mut got: Vec<String> = export_all(&single, "e2e_compressed")
        .into_iter()
        .map(|s| s.labels["enc"].clone())
        .collect();
    got.sort();
    assert_eq!(got, ["gzip", "zstd"]);
}

#[test]
fn oversized_bodies_are_refused() {
    let single = Single::start_with_args(BIN, &["--insert.max-body-bytes", "1000"]);
    let t = now_ms() - 60_000;
    let line = format!(r#"{{"metric":{{"__name__":"e2e_big"}},"values":[1],"timestamps":[{t}]}}"#);
    let body = format!("{line}\n").repeat(20);
    let response = single.import(&body);
    assert_eq!(response.status, 413, "{}", response.body);
    // Small when compressed, too large once decompressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(body.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < 1000);
    let response = single.post("/api/v1/import", gz, &[("Content-Encoding", "gzip")]);
    assert_eq!(response.status, 413, "{}", response.body);
    assert!(
        response.body.contains("after decompression"),
        "{}",
        response.body
    );
    assert_eq!(export_all(&single, "e2e_big"), []);
}

#[test]
fn samples_outside_retention_are_reported_not_silently_dropped() {
    let single = Single::start_with_args(BIN, &["--retention", "1d"]);
    let recent = now_ms() - 60_000;
    let ancient = now_ms() - 10 * 86_400_000;
    let body = format!(
        r#"{{"metric":{{"__name__":"e2e_retention"}},"values":[1,2,3],"timestamps":[{ancient},{recent},{}]}}"#,
        recent + 1000
    );
    let response = single.import(&body);
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(
        response.body.contains("stored 2 of 3 samples; rejected 1"),
        "{}",
        response.body
    );
    assert!(response.body.contains("too old"), "{}", response.body);
    let got = export_all(&single, "e2e_retention");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].timestamps, vec![recent, recent + 1000]);
    let metrics = single.metrics();
    assert!(
        metrics.contains(
            r#"strata_insert_rows_rejected_total{protocol="vmimport",reason="too_old"} 1"#
        ),
        "{metrics}"
    );
}
