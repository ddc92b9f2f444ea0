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
                out.push(Ok(d));
            }
        }
        Ok(Selected {
            series: Box::new(out.into_iter()),
            warnings: self.warnings.clone(),
            partial: false,
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
