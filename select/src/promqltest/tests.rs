use strata_storage::{Label, STALE_NAN_BITS};

use super::compare::almost_equal;
use super::parse::{
    Command, Eval, EvalTime, Expectation, SeqValue, SeriesLine, SeriesValues, parse_duration,
    parse_file, parse_labels, parse_number, parse_values,
};

use SeqValue::{Float as F, Omitted as O};

/// Compares floats by bits so NaN and stale markers can be expected.
fn same(a: &[SeqValue], b: &[SeqValue]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (F(x), F(y)) => x.to_bits() == y.to_bits(),
            (O, O) => true,
            _ => false,
        })
}

#[test]
fn values_notation() {
    let stale = f64::from_bits(STALE_NAN_BITS);
    let check = |input: &str, want: &[SeqValue]| {
        let got = parse_values(input).expect(input);
        assert!(same(&got, want), "{input}: got {got:?}, want {want:?}");
    };
    check("", &[]);
    check("1", &[F(1.0)]);
    check("1 2 3", &[F(1.0), F(2.0), F(3.0)]);
    check("1+2x3", &[F(1.0), F(3.0), F(5.0), F(7.0)]);
    check("10-1x2", &[F(10.0), F(9.0), F(8.0)]);
    check("-1-1x2", &[F(-1.0), F(-2.0), F(-3.0)]);
    check("1x3", &[F(1.0); 4]);
    check("0x10", &[F(0.0); 11]);
    check("1+0x2", &[F(1.0); 3]);
    check("_", &[O]);
    check("_x3", &[O, O, O]);
    check("1 _ 2", &[F(1.0), O, F(2.0)]);
    check("stale", &[F(stale)]);
    check("1 stale 2", &[F(1.0), F(stale), F(2.0)]);
    check("stalex2", &[F(stale); 3]);
    check("NaN", &[F(f64::NAN)]);
    check(
        "Inf -Inf +Inf",
        &[F(f64::INFINITY), F(f64::NEG_INFINITY), F(f64::INFINITY)],
    );
    check("1e3 1.5e-3 -2.5e+2", &[F(1000.0), F(0.0015), F(-250.0)]);
    check("1e2+1e1x1", &[F(100.0), F(110.0)]);
    check(".5 -.5", &[F(0.5), F(-0.5)]);
    check("0.1+0.1x2", &[F(0.1), F(0.1 + 0.1), F(0.1 + 0.1 + 0.1)]);
    check("NaNx1", &[F(f64::NAN); 2]);
}

#[test]
fn values_notation_errors() {
    for input in ["foo", "1xa", "1+x2", "_x", "1+2", "1x-1"] {
        assert!(parse_values(input).is_err(), "{input} should not parse");
    }
}

#[test]
fn numbers() {
    let check = |input: &str, want: Option<f64>| {
        let got = parse_number(input);
        let ok = match (got, want) {
            (Some(g), Some(w)) => g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            (None, None) => true,
            _ => false,
        };
        assert!(ok, "{input}: got {got:?}, want {want:?}");
    };
    check("1", Some(1.0));
    check("-1.5", Some(-1.5));
    check("+Inf", Some(f64::INFINITY));
    check("-Inf", Some(f64::NEG_INFINITY));
    check("NaN", Some(f64::NAN));
    check("0x10", Some(16.0));
    check("1e-3", Some(0.001));
    check("--1", None);
    check("{} 1", None);
    check("foo", None);
}

#[test]
fn durations() {
    let check = |input: &str, want: Option<i64>| {
        assert_eq!(parse_duration(input).ok(), want, "{input}");
    };
    check("0", Some(0));
    check("5m", Some(300_000));
    check("1h30m", Some(5_400_000));
    check("100ms", Some(100));
    check("10s", Some(10_000));
    check("2d", Some(172_800_000));
    check("1w", Some(604_800_000));
    check("1y", Some(31_536_000_000));
    check("1.5", Some(1_500));
    check("", None);
    check("5", Some(5_000));
    check("m", None);
    check("5x", None);
    check("-5m", None);
}

fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    let mut v: Vec<Label> = pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect();
    v.sort();
    v
}

#[test]
fn series_labels() {
    let check = |input: &str, want: Option<(&[(&str, &str)], &str)>| {
        let got = parse_labels(input);
        match want {
            Some((pairs, rest)) => {
                let (l, r) = got.expect(input);
                assert_eq!(l, labels(pairs), "{input}");
                assert_eq!(r.trim(), rest, "{input}");
            }
            None => assert!(got.is_err(), "{input} should not parse: {got:?}"),
        }
    };
    check("up 1", Some((&[("__name__", "up")], "1")));
    check("up{} 1", Some((&[("__name__", "up")], "1")));
    check("{} 1", Some((&[], "1")));
    check(
        r#"http_requests{job="api", instance="0"} 1+1x3"#,
        Some((
            &[
                ("__name__", "http_requests"),
                ("job", "api"),
                ("instance", "0"),
            ],
            "1+1x3",
        )),
    );
    check(
        r#"{__name__="a:b", x="y",} 2"#,
        Some((&[("__name__", "a:b"), ("x", "y")], "2")),
    );
    check(
        r#"m{a="q\"uote\\", b='single', c=`raw\n`}"#,
        Some((
            &[
                ("__name__", "m"),
                ("a", "q\"uote\\"),
                ("b", "single"),
                ("c", "raw\\n"),
            ],
            "",
        )),
    );
    check(
        r#"m{a="with space, comma"} 1"#,
        Some((&[("__name__", "m"), ("a", "with space, comma")], "1")),
    );
    check(r#"m{a="x"}1"#, None);
    check(r#"m{a="x" 1"#, None);
    check(r#"m{a=x} 1"#, None);
    check(r#"m{a="x", a="y"} 1"#, None);
    check(r#"m{__name__="n"} 1"#, None);
    check("1", None);
}

fn floats(v: &[f64]) -> SeriesValues {
    SeriesValues::Floats(v.iter().map(|&x| F(x)).collect())
}

fn series(line: usize, pairs: &[(&str, &str)], v: &[f64]) -> SeriesLine {
    SeriesLine {
        line,
        labels: labels(pairs),
        values: floats(v),
    }
}

fn eval(line: usize, query: &str, time: EvalTime, expect: Expectation) -> Command {
    Command::Eval(Eval {
        line,
        query: query.to_string(),
        time,
        expect,
        unsupported: None,
    })
}

#[test]
fn commands() {
    let check = |input: &str, want: Vec<Command>| {
        let got = parse_file(input).expect(input);
        assert_eq!(got, want, "{input}");
    };
    check("", vec![]);
    check("# only a comment\n\n", vec![]);
    check("clear", vec![Command::Clear { line: 1 }]);
    check(
        "clear\nclear",
        vec![Command::Clear { line: 1 }, Command::Clear { line: 2 }],
    );
    check(
        "load 5m\n  a{x=\"1\"} 1 2\n  b 0+1x1\n",
        vec![Command::Load {
            line: 1,
            interval_ms: 300_000,
            series: vec![
                series(2, &[("__name__", "a"), ("x", "1")], &[1.0, 2.0]),
                series(3, &[("__name__", "b")], &[0.0, 1.0]),
            ],
            with_nhcb: false,
        }],
    );
    // A comment line ends a block like a blank line.
    check(
        "load 1m\n  a 1\n# c\nclear",
        vec![
            Command::Load {
                line: 1,
                interval_ms: 60_000,
                series: vec![series(2, &[("__name__", "a")], &[1.0])],
                with_nhcb: false,
            },
            Command::Clear { line: 4 },
        ],
    );
    check(
        "eval instant at 50m sum(a) by (x)\n  {x=\"1\"} 3\n  {x=\"2\"} -Inf",
        vec![eval(
            1,
            "sum(a) by (x)",
            EvalTime::Instant { at: 3_000_000 },
            Expectation {
                series: vec![
                    series(2, &[("x", "1")], &[3.0]),
                    series(3, &[("x", "2")], &[f64::NEG_INFINITY]),
                ],
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval instant at 1m 1 + 2\n  3",
        vec![eval(
            1,
            "1 + 2",
            EvalTime::Instant { at: 60_000 },
            Expectation {
                scalar: Some(3.0),
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval instant time()\n  0",
        vec![eval(
            1,
            "time()",
            EvalTime::Instant { at: 0 },
            Expectation {
                scalar: Some(0.0),
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval range from 0 to 2m step 1m a\n  a 1 _ 3",
        vec![eval(
            1,
            "a",
            EvalTime::Range {
                start: 0,
                end: 120_000,
                step: 60_000,
            },
            Expectation {
                series: vec![SeriesLine {
                    line: 2,
                    labels: labels(&[("__name__", "a")]),
                    values: SeriesValues::Floats(vec![F(1.0), O, F(3.0)]),
                }],
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval_ordered instant at 0 sort(a)\n  a 1",
        vec![eval(
            1,
            "sort(a)",
            EvalTime::Instant { at: 0 },
            Expectation {
                ordered: true,
                series: vec![series(2, &[("__name__", "a")], &[1.0])],
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval_fail instant at 0 a\n  expected_fail_message boom: a",
        vec![eval(
            1,
            "a",
            EvalTime::Instant { at: 0 },
            Expectation {
                fail: true,
                fail_message: Some("boom: a".to_string()),
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval_fail range from 0 to 1m step 10s a\n  expected_fail_regexp bo+m",
        vec![eval(
            1,
            "a",
            EvalTime::Range {
                start: 0,
                end: 60_000,
                step: 10_000,
            },
            Expectation {
                fail: true,
                fail_regexp: Some("bo+m".to_string()),
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval_warn instant at 0 a",
        vec![eval(
            1,
            "a",
            EvalTime::Instant { at: 0 },
            Expectation {
                warnings: Some(true),
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval instant at 0 a\n  expect fail regex: x.*\n  expect ordered",
        vec![eval(
            1,
            "a",
            EvalTime::Instant { at: 0 },
            Expectation {
                fail: true,
                fail_regexp: Some("x.*".to_string()),
                ordered: true,
                ..Expectation::default()
            },
        )],
    );
    check(
        "eval instant at 0 \"a\"\n  expect string \"a\"",
        vec![eval(
            1,
            "\"a\"",
            EvalTime::Instant { at: 0 },
            Expectation {
                string: Some("a".to_string()),
                ..Expectation::default()
            },
        )],
    );
}

#[test]
fn histogram_lines_are_marked() {
    let got = parse_file(
        "load 1m\n  h {{schema:0 sum:1 count:1}}x2\n\neval instant at 0 h\n  h {{count:1}}",
    )
    .expect("parses");
    let Command::Load { series, .. } = &got[0] else {
        panic!("want a load, got {:?}", got[0]);
    };
    assert!(matches!(series[0].values, SeriesValues::Histograms(_)));
    let Command::Eval(e) = &got[1] else {
        panic!("want an eval, got {:?}", got[1]);
    };
    assert_eq!(
        e.unsupported.as_deref(),
        Some("native histogram expected at line 5")
    );
}

#[test]
fn command_errors() {
    let check = |input: &str, line: usize| {
        let got = parse_file(input);
        assert_eq!(
            got.as_ref().map_err(|e| e.line).err(),
            Some(line),
            "{input}: {got:?}"
        );
    };
    check("bogus", 1);
    check("load\n a 1", 1);
    check("load 5x\n a 1", 1);
    check("load 1m\n a 1 x", 2);
    check("eval at 0 a", 1);
    check("eval instant at a", 1);
    check("eval range from 0 to 1m a", 1);
    check("eval range from 0 to 1m step 0 a", 1);
    check("eval_ordered range from 0 to 1m step 1m a", 1);
    check("\n\neval instant at 0 a\n  a 1 2", 4);
    check("eval instant at 0 a\n  expect nonsense", 2);
    check("clear\na 1", 2);
}

#[test]
fn float_comparison() {
    let check = |a: f64, b: f64, want: bool| {
        assert_eq!(almost_equal(a, b, 1e-6), want, "{a} vs {b}");
    };
    check(1.0, 1.0, true);
    check(f64::NAN, f64::NAN, true);
    check(f64::NAN, 1.0, false);
    check(f64::INFINITY, f64::INFINITY, true);
    check(f64::INFINITY, f64::NEG_INFINITY, false);
    check(1.0, 1.0 + 1e-9, true);
    check(1.0, 1.00001, false);
    check(0.0, 1e-300, false);
    check(0.0, -0.0, true);
    check(1e10, 1e10 + 1.0, true);
}
