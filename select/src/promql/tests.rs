//! Table tests of the evaluator over an in-memory source.

use std::time::{Duration, Instant};

use promql_parser::parser::{self, Expr};
use strata_storage::{
    Cardinality, Label, Matcher, STALE_NAN_BITS, SeriesData, StorageError, TimeRange,
};

use super::engine::{Engine, EngineOptions, QueryError, QueryOptions};
use super::value::Value;
use crate::source::{Found, Selected, Source};

/// Series held in memory, matched like storage matches them.
struct MemSource {
    series: Vec<SeriesData>,
    warnings: Vec<String>,
    /// Fail a select's stream after this many series.
    fail_after: Option<usize>,
}

impl Source for MemSource {
    fn select(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        _: Instant,
    ) -> Result<Selected, StorageError> {
        let mut out = Vec::new();
        for s in &self.series {
            if !matchers.iter().all(|m| m.matches_labels(&s.labels)) {
                continue;
            }
            let mut d = SeriesData {
                labels: s.labels.clone(),
                timestamps: Vec::new(),
                values: Vec::new(),
            };
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                if range.contains(*t) {
                    d.timestamps.push(*t);
                    d.values.push(*v);
                }
            }
            if !d.timestamps.is_empty() {
                if self.fail_after == Some(out.len()) {
                    out.push(Err(StorageError::Corrupted {
                        path: "part".into(),
                        offset: 0,
                        what: "block checksum".into(),
                    }));
                    break;
                }
                out.push(Ok(d));
            }
        }
        Ok(Selected {
            series: Box::new(out.into_iter()),
            warnings: self.warnings.clone(),
            partial: false,
            late: Default::default(),
        })
    }

    fn label_names(
        &self,
        _: &[Matcher],
        _: TimeRange,
        _: usize,
        _: Instant,
    ) -> Result<Found<Vec<String>>, StorageError> {
        Ok(Found::default())
    }

    fn label_values(
        &self,
        _: &str,
        _: &[Matcher],
        _: TimeRange,
        _: usize,
        _: Instant,
    ) -> Result<Found<Vec<String>>, StorageError> {
        Ok(Found::default())
    }

    fn cardinality(
        &self,
        _: TimeRange,
        _: usize,
        _: Instant,
    ) -> Result<Found<Cardinality>, StorageError> {
        Ok(Found::default())
    }
}

/// Builds a source from lines `selector start step v1 v2 ...` (seconds; `_`
/// skips a step, `stale` is a stale marker).
fn source(lines: &[&str]) -> MemSource {
    let mut series = Vec::new();
    for line in lines {
        let mut parts = line.split_whitespace();
        let selector = parts.next().expect("selector");
        let Ok(Expr::VectorSelector(vs)) = parser::parse(selector) else {
            panic!("bad selector {selector}");
        };
        let mut labels: Vec<Label> = vs
            .matchers
            .matchers
            .iter()
            .map(|m| Label::new(m.name.clone(), m.value.clone()))
            .collect();
        if let Some(name) = vs.name
            && !labels.iter().any(|l| l.name == "__name__")
        {
            labels.push(Label::new("__name__", name));
        }
        labels.sort();
        let start: i64 = parts.next().expect("start").parse().expect("start");
        let step: i64 = parts.next().expect("step").parse().expect("step");
        let mut d = SeriesData {
            labels,
            timestamps: Vec::new(),
            values: Vec::new(),
        };
        for (i, v) in parts.enumerate() {
            let t = (start + step * i as i64) * 1000;
            let v = match v {
                "_" => continue,
                "stale" => f64::from_bits(STALE_NAN_BITS),
                v => v.parse().expect("value"),
            };
            d.timestamps.push(t);
            d.values.push(v);
        }
        series.push(d);
    }
    MemSource {
        series,
        warnings: Vec::new(),
        fail_after: None,
    }
}

fn labels_string(labels: &[Label]) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}=\"{}\"", l.name, l.value))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Renders a result: scalars as the number, vectors as sorted
/// `{labels} value` lines, matrices as `{labels} t:v t:v` lines (seconds).
fn render(v: &Value) -> String {
    match v {
        Value::Scalar { v, .. } => format!("{v}"),
        Value::String { s, .. } => format!("{s:?}"),
        Value::Vector(samples) => {
            let mut lines: Vec<String> = samples
                .iter()
                .map(|s| format!("{} {}", labels_string(&s.labels), s.v))
                .collect();
            lines.sort();
            lines.join("\n")
        }
        Value::Matrix(series) => {
            let mut lines: Vec<String> = series
                .iter()
                .map(|s| {
                    let pts: Vec<String> = s
                        .points
                        .iter()
                        .map(|p| format!("{}:{}", p.t / 1000, p.v))
                        .collect();
                    format!("{} {}", labels_string(&s.labels), pts.join(" "))
                })
                .collect();
            lines.sort();
            lines.join("\n")
        }
    }
}

fn instant(src: &MemSource, query: &str, at_seconds: i64) -> Result<String, QueryError> {
    let engine = Engine::new(EngineOptions::default());
    engine
        .instant(src, query, at_seconds * 1000, &QueryOptions::default())
        .map(|r| render(&r.value))
}

fn data() -> MemSource {
    source(&[
        r#"metric 0 10 0 1 stale 2"#,
        r#"http_requests{job="api",instance="0",group="production"} 0 300 0 10 20 30 40 50 60 70 80 90 100"#,
        r#"http_requests{job="api",instance="1",group="production"} 0 300 0 20 40 60 80 100 120 140 160 180 200"#,
        r#"http_requests{job="api",instance="0",group="canary"} 0 300 0 30 60 90 120 150 180 210 240 270 300"#,
        r#"http_requests{job="app",instance="0",group="production"} 0 300 0 50 100 150 200 250 300 350 400 450 500"#,
        r#"vector_matching_a{l="x"} 0 60 0 1 2 3 4 5 6 7 8 9 10"#,
        r#"vector_matching_a{l="y"} 0 60 0 2 4 6 8 10 12 14 16 18 20"#,
        r#"vector_matching_b{l="x"} 0 60 0 4 8 12 16 20 24 28 32 36 40"#,
        r#"nan_metric{a="1"} 0 60 NaN"#,
        r#"nan_metric{a="2"} 0 60 5"#,
    ])
}

#[test]
fn instant_queries() {
    let src = data();
    let check = |query: &str, at: i64, want: &str| match instant(&src, query, at) {
        Ok(got) => assert_eq!(got, want, "{query} at {at}s"),
        Err(e) => panic!("{query} at {at}s: {e}"),
    };
    // Lookback and staleness.
    check("metric", 10, r#"{__name__="metric"} 1"#);
    check("metric", 20, "");
    check("metric", 30, r#"{__name__="metric"} 2"#);
    check("metric", 330, r#"{__name__="metric"} 2"#);
    check("metric", 331, "");
    // Offset and @.
    check("metric offset 20s", 50, r#"{__name__="metric"} 2"#);
    check("metric offset -20s", 0, "");
    check("metric offset -10s", 0, r#"{__name__="metric"} 1"#);
    check("metric @ 10", 1000, r#"{__name__="metric"} 1"#);
    check("metric @ 30 offset 20s", 0, r#"{__name__="metric"} 1"#);
    check("metric @ start()", 10, r#"{__name__="metric"} 1"#);
    // Literals and scalar arithmetic.
    check("1 + 2 * 3", 0, "7");
    check("2 ^ 3 ^ 2", 0, "512");
    check("-(3)", 0, "-3");
    check(r#""hello""#, 0, r#""hello""#);
    check("5 > bool 3", 0, "1");
    check("time()", 42, "42");
    // Unary minus drops the name.
    check("-metric", 10, "{} -1");
    // Vector-scalar arithmetic and comparisons.
    check(
        r#"http_requests{job="api",group="canary"} * 2"#,
        3000,
        r#"{group="canary",instance="0",job="api"} 600"#,
    );
    check(
        r#"http_requests{group="production"} > 150"#,
        3000,
        "{__name__=\"http_requests\",group=\"production\",instance=\"0\",job=\"app\"} 500\n\
         {__name__=\"http_requests\",group=\"production\",instance=\"1\",job=\"api\"} 200",
    );
    check(
        r#"200 <= bool http_requests{group="production"}"#,
        3000,
        "{group=\"production\",instance=\"0\",job=\"api\"} 0\n\
         {group=\"production\",instance=\"0\",job=\"app\"} 1\n\
         {group=\"production\",instance=\"1\",job=\"api\"} 1",
    );
    // Vector matching.
    check(
        "vector_matching_a - vector_matching_b",
        600,
        r#"{l="x"} -30"#,
    );
    check(
        "vector_matching_a / on() group_left vector_matching_b",
        600,
        "{l=\"x\"} 0.25\n{l=\"y\"} 0.5",
    );
    check(
        "vector_matching_a and vector_matching_b",
        600,
        r#"{__name__="vector_matching_a",l="x"} 10"#,
    );
    check(
        "vector_matching_a unless vector_matching_b",
        600,
        r#"{__name__="vector_matching_a",l="y"} 20"#,
    );
    check(
        "vector_matching_b or vector_matching_a",
        600,
        "{__name__=\"vector_matching_a\",l=\"y\"} 20\n{__name__=\"vector_matching_b\",l=\"x\"} 40",
    );
    check(
        r#"sum by (group) (http_requests) / ignoring(group) group_left sum(http_requests)"#,
        3000,
        "{group=\"canary\"} 0.2727272727272727\n{group=\"production\"} 0.7272727272727273",
    );
    // Aggregations.
    check(
        "sum by (group) (http_requests)",
        3000,
        "{group=\"canary\"} 300\n{group=\"production\"} 800",
    );
    check("avg(http_requests)", 3000, "{} 275");
    check(
        "count without (instance) (http_requests)",
        3000,
        "{group=\"canary\",job=\"api\"} 1\n{group=\"production\",job=\"api\"} 2\n{group=\"production\",job=\"app\"} 1",
    );
    check("max(nan_metric)", 0, "{} 5");
    check("min(nan_metric)", 0, "{} 5");
    check("group(http_requests)", 3000, "{} 1");
    check("stddev(vector_matching_a)", 600, "{} 5");
    check("stdvar(vector_matching_a)", 600, "{} 25");
    check(
        "topk(1, http_requests)",
        3000,
        r#"{__name__="http_requests",group="production",instance="0",job="app"} 500"#,
    );
    check(
        "bottomk(1, http_requests)",
        3000,
        r#"{__name__="http_requests",group="production",instance="0",job="api"} 100"#,
    );
    check("quantile(0.5, http_requests)", 3000, "{} 250");
    check(
        r#"count_values("value", vector_matching_a)"#,
        600,
        "{value=\"10\"} 1\n{value=\"20\"} 1",
    );
    // Vector-level functions.
    check("vector(3)", 0, "{} 3");
    check("scalar(vector_matching_b)", 600, "40");
    check("scalar(vector_matching_a)", 600, "NaN");
    check("timestamp(metric)", 40, "{} 30");
    check(r#"absent(nonexistent{job="x"})"#, 0, r#"{job="x"} 1"#);
    check("absent(metric)", 10, "");
    check(
        r#"absent_over_time(nonexistent{a="b"}[1m])"#,
        0,
        r#"{a="b"} 1"#,
    );
    // Subqueries.
    check(
        "vector_matching_a[2m:1m]",
        600,
        r#"{__name__="vector_matching_a",l="x"} 480:8 540:9 600:10
{__name__="vector_matching_a",l="y"} 480:16 540:18 600:20"#,
    );
    // Range selectors keep raw samples, drop stale markers.
    check("metric[30s]", 30, r#"{__name__="metric"} 0:0 10:1 30:2"#);
}

#[test]
fn instant_query_errors() {
    let src = source(&[
        r#"m1{a="1"} 0 60 1"#,
        r#"m2{a="1"} 0 60 2"#,
        r#"many{a="1",b="1"} 0 60 1"#,
        r#"many{a="1",b="2"} 0 60 2"#,
        r#"one{a="1"} 0 60 3"#,
    ]);
    let check = |query: &str, want: &str| match instant(&src, query, 0) {
        Ok(got) => panic!("{query}: want error {want:?}, got {got:?}"),
        Err(e) => assert!(
            e.to_string().contains(want),
            "{query}: want error containing {want:?}, got {e}"
        ),
    };
    check(
        r#"-{__name__=~"m1|m2"}"#,
        "vector cannot contain metrics with the same labelset",
    );
    check("one + on(a) many", "many-to-many matching not allowed");
    check(
        "many + on(a) one",
        "multiple matches for labels: many-to-one matching must be explicit",
    );
    check("rate(", "unclosed left parenthesis");
    check(
        r#"count_values("invalid-label", one)"#,
        "invalid label name",
    );
    // An evaluation error (422), as in Prometheus, not a bad parameter.
    assert!(matches!(
        instant(&src, r#"count_values("invalid-label", one)"#, 0),
        Err(QueryError::Execution(_))
    ));
}

#[test]
fn range_queries() {
    let src = data();
    let engine = Engine::new(EngineOptions::default());
    let check = |query: &str, start: i64, end: i64, step: i64, want: &str| {
        let got = engine
            .range(
                &src,
                query,
                start * 1000,
                end * 1000,
                step * 1000,
                &QueryOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(render(&got.value), want, "{query}");
    };
    check(
        "metric",
        0,
        40,
        10,
        r#"{__name__="metric"} 0:0 10:1 30:2 40:2"#,
    );
    check("1 + 1", 0, 20, 10, "{} 0:2 10:2 20:2");
    check(
        "vector_matching_a > 5",
        240,
        480,
        60,
        "{__name__=\"vector_matching_a\",l=\"x\"} 360:6 420:7 480:8\n\
         {__name__=\"vector_matching_a\",l=\"y\"} 240:8 300:10 360:12 420:14 480:16",
    );
    check(
        "metric @ 10",
        0,
        20,
        10,
        r#"{__name__="metric"} 0:1 10:1 20:1"#,
    );
    check("sum(vector_matching_a)", 0, 120, 60, "{} 0:0 60:3 120:6");
}

#[test]
fn limits_and_warnings() {
    let src = data();
    let limited = Engine::new(EngineOptions {
        max_samples: 5,
        ..EngineOptions::default()
    });
    let err = limited
        .instant(
            &src,
            "http_requests[1h]",
            3_000_000,
            &QueryOptions::default(),
        )
        .expect_err("too many samples");
    assert!(matches!(err, QueryError::Limit(_)), "{err}");

    let limited = Engine::new(EngineOptions {
        max_series: 2,
        ..EngineOptions::default()
    });
    let err = limited
        .instant(&src, "http_requests", 3_000_000, &QueryOptions::default())
        .expect_err("too many series");
    assert!(matches!(err, QueryError::Limit(_)), "{err}");

    let limited = Engine::new(EngineOptions {
        max_points_per_series: 10,
        ..EngineOptions::default()
    });
    let err = limited
        .range(&src, "metric", 0, 100_000, 1_000, &QueryOptions::default())
        .expect_err("too many points");
    assert!(matches!(err, QueryError::Limit(_)), "{err}");

    let engine = Engine::default();
    let err = engine
        .instant(
            &src,
            "metric",
            0,
            &QueryOptions {
                timeout: Some(Duration::ZERO),
                ..QueryOptions::default()
            },
        )
        .expect_err("timeout");
    assert!(matches!(err, QueryError::Timeout(_)), "{err}");

    let warned = MemSource {
        warnings: vec!["block skipped".into()],
        ..data()
    };
    let got = Engine::default()
        .instant(&warned, "metric", 10_000, &QueryOptions::default())
        .expect("query");
    assert_eq!(got.warnings, vec!["block skipped".to_string()]);
    assert_eq!(got.stats.series_loaded, 1);
}

/// Range functions of range queries read their series on a second thread
/// once a first batch (64) went through: its limits, warnings, errors and
/// counters must reach the query as they do without it.
#[test]
fn read_ahead_reports_like_reading_in_line() {
    let lines: Vec<String> = (0..300)
        .map(|i| {
            let values: Vec<String> = (0..=60).map(|v| (v * 60).to_string()).collect();
            format!("counter{{i=\"{i:03}\"}} 0 60 {}", values.join(" "))
        })
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let run = |src: &MemSource, options: EngineOptions| {
        Engine::new(options).range(
            src,
            "rate(counter[5m])",
            0,
            3_600_000,
            60_000,
            &QueryOptions::default(),
        )
    };
    for read_ahead in [false, true] {
        let options = EngineOptions {
            read_ahead,
            ..EngineOptions::default()
        };
        let err = run(
            &source(&lines),
            EngineOptions {
                max_series: 200,
                ..options.clone()
            },
        )
        .expect_err("too many series");
        assert!(matches!(err, QueryError::Limit(_)), "{read_ahead}: {err}");
        let err = run(
            &source(&lines),
            EngineOptions {
                max_samples: 100 * 61,
                ..options.clone()
            },
        )
        .expect_err("too many samples");
        assert!(matches!(err, QueryError::Limit(_)), "{read_ahead}: {err}");
        let failing = MemSource {
            fail_after: Some(250),
            ..source(&lines)
        };
        let err = run(&failing, options.clone()).expect_err("storage error");
        assert!(matches!(err, QueryError::Storage(_)), "{read_ahead}: {err}");
        let warned = MemSource {
            warnings: vec!["block skipped".into()],
            ..source(&lines)
        };
        let got = run(&warned, options).expect("query");
        assert_eq!(
            got.warnings,
            vec!["block skipped".to_string()],
            "{read_ahead}"
        );
        assert_eq!(got.stats.series_loaded, 300, "{read_ahead}");
        let rendered = render(&got.value);
        assert_eq!(rendered.lines().count(), 300, "{read_ahead}");
        // One per second everywhere.
        assert!(
            rendered
                .lines()
                .all(|l| l.ends_with(" 3600:1") && l.contains(" 300:1 ")),
            "{read_ahead}: {rendered}"
        );
    }
}

/// Ragged data for `range_equals_instants`: counters and gauges with gaps,
/// resets, stale markers, NaN and negative values, and series that differ
/// only in `__name__`, some overlapping in time and some not.
fn ragged() -> MemSource {
    use strata_storage::encoding::synthetic::SplitMix64;
    let mut rng = SplitMix64::new(7);
    let mut series = Vec::new();
    let mut add = |pairs: &[(&str, &str)], from: i64, to: i64, rng: &mut SplitMix64| {
        let mut labels: Vec<Label> = pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect();
        labels.sort();
        let mut d = SeriesData {
            labels,
            timestamps: Vec::new(),
            values: Vec::new(),
        };
        let mut counter = 0.0;
        let mut t = from * 1000 + (rng.next_u64() % 5000) as i64;
        while t <= to * 1000 {
            let roll = rng.next_f64();
            counter += (rng.next_u64() % 10) as f64;
            let v = if roll < 0.1 {
                t += 15_000;
                continue;
            } else if roll < 0.13 {
                f64::from_bits(STALE_NAN_BITS)
            } else if roll < 0.15 {
                f64::NAN
            } else if roll < 0.18 {
                counter = 0.0;
                -1.5
            } else {
                counter
            };
            d.timestamps.push(t);
            d.values.push(v);
            t += 10_000 + (rng.next_u64() % 10_000) as i64;
        }
        series.push(d);
    };
    for job in ["a", "b"] {
        for inst in ["1", "2", "3"] {
            add(
                &[("__name__", "m"), ("job", job), ("inst", inst)],
                0,
                900,
                &mut rng,
            );
            add(
                &[("__name__", "n"), ("job", job), ("inst", inst)],
                100,
                800,
                &mut rng,
            );
        }
    }
    for job in ["a", "b"] {
        for le in ["0.1", "1", "1.0", "10", "+Inf", "x"] {
            add(
                &[("__name__", "h_bucket"), ("job", job), ("le", le)],
                0,
                900,
                &mut rng,
            );
        }
    }
    // Buckets that differ only in `__name__`, at some steps both.
    add(&[("__name__", "g1_bucket"), ("le", "1")], 0, 600, &mut rng);
    add(
        &[("__name__", "g2_bucket"), ("le", "1")],
        500,
        900,
        &mut rng,
    );
    add(
        &[("__name__", "g1_bucket"), ("le", "+Inf")],
        0,
        900,
        &mut rng,
    );
    // Disjoint in time: one series once the name is gone.
    add(&[("__name__", "x1"), ("k", "1")], 0, 400, &mut rng);
    add(&[("__name__", "x2"), ("k", "1")], 700, 900, &mut rng);
    // Overlapping: an error at the steps where both have a value.
    add(&[("__name__", "y1"), ("k", "1")], 0, 600, &mut rng);
    add(&[("__name__", "y2"), ("k", "1")], 500, 900, &mut rng);
    MemSource {
        series,
        warnings: Vec::new(),
        fail_after: None,
    }
}

/// Every (labels, time) -> value bits of a result.
fn points_of(v: &Value, t: i64) -> std::collections::BTreeMap<(String, i64), u64> {
    let mut out = std::collections::BTreeMap::new();
    match v {
        Value::Scalar { v, .. } => {
            out.insert((String::new(), t), v.to_bits());
        }
        Value::Vector(samples) => {
            for s in samples {
                let dup = out.insert((labels_string(&s.labels), t), s.v.to_bits());
                assert!(dup.is_none(), "two samples of {:?} at {t}", s.labels);
            }
        }
        Value::Matrix(series) => {
            for s in series {
                for p in &s.points {
                    let dup = out.insert((labels_string(&s.labels), p.t), p.v.to_bits());
                    assert!(dup.is_none(), "two points of {:?} at {}", s.labels, p.t);
                }
            }
        }
        Value::String { .. } => {}
    }
    out
}

/// A range query is its instant queries stacked: every operation the
/// evaluator runs series by series over the whole range must answer, to
/// the bit, what it answers one step at a time, and fail when some step
/// fails.
#[test]
fn range_equals_instants() {
    let src = ragged();
    let engine = Engine::default();
    let options = QueryOptions::default();
    let queries = [
        "m",
        "sum(m)",
        "sum by (job) (m)",
        "avg without (inst) (m)",
        "count by (inst) (m)",
        "group by (job) (m)",
        "min by (job) (m)",
        "max(m)",
        "stddev by (job) (m)",
        "stdvar(m)",
        "sum by (job) (rate(m[1m]))",
        "increase(m[2m])",
        "resets(m[3m])",
        "avg_over_time(m[1m])",
        "max_over_time(rate(m[1m])[2m:20s])",
        "m * 2",
        "2 - m",
        "m > 3",
        "3 < m",
        "m > bool 3",
        "-m",
        "m + n",
        "m / on(job, inst) n",
        "m > n",
        "m >= bool n",
        "m - ignoring(inst) group_left sum by (job) (n)",
        "sum by (job) (n) * on(job) group_right m",
        "m and n",
        "m unless n",
        "m or n",
        "m and on(job) n",
        "n or on(job) m",
        "m unless on(inst) n",
        "{__name__=~\"x.\"} * 1",
        "{__name__=~\"y.\"} * 1",
        "{__name__=~\"x.\"} > bool 2",
        "sum({__name__=~\"y.\"})",
        "{__name__=~\"x.\"} + on(k) {__name__=~\"y.\"}",
        "topk(2, m)",
        "quantile by (job) (0.5, m)",
        "count_values(\"v\", m)",
        "histogram_quantile(0.9, h_bucket)",
        "histogram_quantile(0.5, rate(h_bucket[1m]))",
        "histogram_quantile(0.75, sum by (le) (rate(h_bucket[2m])))",
        "histogram_quantile(scalar(m{job=\"a\",inst=\"1\"}) / 10, h_bucket)",
        "histogram_quantile(0.5, {__name__=~\"g._bucket\"})",
    ];
    let (mut answered, mut failed_queries) = (0, Vec::new());
    for (start, end, step) in [(0, 900, 30), (50, 850, 7), (300, 300, 1)] {
        for query in queries {
            let range = engine.range(&src, query, start * 1000, end * 1000, step * 1000, &options);
            let mut stacked = std::collections::BTreeMap::new();
            let mut failed = None;
            let mut t = start * 1000;
            while t <= end * 1000 {
                match engine.instant(&src, query, t, &options) {
                    Ok(r) => stacked.extend(points_of(&r.value, t)),
                    Err(e) => failed = failed.or(Some(e)),
                }
                t += step * 1000;
            }
            match (range, failed) {
                (Ok(r), None) => {
                    assert_eq!(
                        points_of(&r.value, 0),
                        stacked,
                        "{query} over {start}..{end} by {step}"
                    );
                    answered += usize::from(!stacked.is_empty());
                }
                (Err(_), Some(_)) => failed_queries.push(query),
                (Ok(_), Some(e)) => panic!("{query}: range ok, an instant failed: {e}"),
                (Err(e), None) => panic!("{query}: range failed, no instant did: {e}"),
            }
        }
    }
    // The data must exercise both outcomes: answers, and the labels
    // collision that only some steps have.
    assert!(answered > 100, "only {answered} non-empty answers");
    assert!(
        failed_queries.contains(&"{__name__=~\"y.\"} * 1")
            && !failed_queries.contains(&"{__name__=~\"x.\"} * 1")
            && failed_queries.contains(&"histogram_quantile(0.5, {__name__=~\"g._bucket\"})")
            && !failed_queries.contains(&"histogram_quantile(0.9, h_bucket)"),
        "failed: {failed_queries:?}"
    );
}

/// Counters of 700 series (`w`, jobs a..d) with resets and gaps, and
/// `v` with the labels of the first 10: enough series for range functions
/// to walk several batches on the pool.
fn wide() -> MemSource {
    use strata_storage::encoding::synthetic::SplitMix64;
    let mut rng = SplitMix64::new(11);
    let mut series = Vec::new();
    for i in 0..710 {
        let name = if i < 700 { "w" } else { "v" };
        let inst = (i % 700).to_string();
        let job = ["a", "b", "c", "d"][i % 4];
        let mut labels = vec![
            Label::new("__name__", name),
            Label::new("inst", inst),
            Label::new("job", job),
        ];
        labels.sort();
        let mut d = SeriesData {
            labels,
            timestamps: Vec::new(),
            values: Vec::new(),
        };
        let mut counter = (rng.next_u64() % 1000) as f64;
        let mut t = (rng.next_u64() % 15_000) as i64;
        while t <= 900_000 {
            let roll = rng.next_f64();
            if roll < 0.05 {
                counter = 0.0;
            } else if roll > 0.02 {
                counter += rng.next_f64() * 50.0;
            }
            if roll > 0.01 {
                d.timestamps.push(t);
                d.values.push(counter);
            }
            t += 15_000;
        }
        series.push(d);
    }
    MemSource {
        series,
        warnings: Vec::new(),
        fail_after: None,
    }
}

/// Range functions walked on the pool in batches, and aggregations that
/// fold their output as it comes, answer to the bit what one step at a
/// time answers (which walks in line).
#[test]
fn wide_range_equals_instants() {
    let src = wide();
    let engine = Engine::default();
    let options = QueryOptions::default();
    for query in [
        "rate(w[1m])",
        "sum by (job) (rate(w[1m]))",
        "avg(increase(w[2m]))",
        "max by (job) (irate(w[1m]))",
        "stddev(delta(w[1m]))",
        "count(resets(w[5m]))",
        "sum by (job) (last_over_time(w[1m]))",
    ] {
        let (start, end, step) = (120_000, 900_000, 30_000);
        let range = engine
            .range(&src, query, start, end, step, &options)
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        let mut stacked = std::collections::BTreeMap::new();
        let mut t = start;
        while t <= end {
            let r = engine
                .instant(&src, query, t, &options)
                .unwrap_or_else(|e| panic!("{query} at {t}: {e}"));
            stacked.extend(points_of(&r.value, t));
            t += step;
        }
        assert!(stacked.len() > 20, "{query}: only {} points", stacked.len());
        assert_eq!(points_of(&range.value, 0), stacked, "{query}");
    }
    // Dropping the name makes `v` and the first `w` series equal: an error
    // whether or not an aggregation takes the result.
    for query in [
        r#"rate({__name__=~"w|v"}[1m])"#,
        r#"sum(rate({__name__=~"w|v"}[1m]))"#,
    ] {
        match engine.range(&src, query, 120_000, 900_000, 30_000, &options) {
            Ok(r) => panic!(
                "{query}: want an error, got {} series",
                points_of(&r.value, 0).len()
            ),
            Err(e) => assert!(
                e.to_string()
                    .contains("vector cannot contain metrics with the same labelset"),
                "{query}: {e}"
            ),
        }
    }
}

#[test]
fn steps_locate_times() {
    use super::eval::Steps;
    let steps = Steps {
        start: 10,
        end: 50,
        step: 10,
    };
    let check = |t: i64, want: usize| assert_eq!(steps.first_at_or_after(t), want, "{t}");
    check(-100, 0);
    check(10, 0);
    check(11, 1);
    check(20, 1);
    check(49, 4);
    check(50, 4);
    check(51, 5);
    check(1_000, 5);
    let within = |lo: i64, hi: i64, want: usize| {
        assert_eq!(steps.count_within(lo, hi), want, "[{lo}, {hi}]")
    };
    within(0, 100, 5);
    within(10, 10, 1);
    within(11, 19, 0);
    within(15, 35, 2);
    within(50, 60, 1);
    within(51, 60, 0);
    within(30, 20, 0);
}
