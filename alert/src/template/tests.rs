//! Expected outputs here were confirmed with real `promtool test rules`
//! (2.42 and 2.53) expanding the same templates as alert annotations.

use std::collections::BTreeMap;

use super::{Data, Template};

fn check(text: &str, value: f64, want: &str) {
    let data = Data {
        labels: BTreeMap::from([("job".to_string(), "x".to_string())]),
        value,
        ..Data::default()
    };
    let got = Template::parse("t", text)
        .and_then(|t| t.expand(&data, None))
        .unwrap_or_else(|e| format!("error: {e}"));
    assert_eq!(got, want, "{text:?} with value {value}");
}

#[test]
fn expand() {
    check(
        "{{ $value }}|{{ 1e6 }}|{{ printf \"%v\" 1234567.0 }}|{{ .Value }}",
        1234567.0,
        "1.234567e+06|1e+06|1.234567e+06|1.234567e+06",
    );
    check("{{ $labels.job }} {{ .Labels.job }}", 0.0, "x x");
    check("a {{- \" b \" -}} c", 0.0, "a b c");
    check(
        "{{ if gt $value 10.0 }}big{{ else if gt $value 1.0 }}mid{{ else }}small{{ end }}",
        5.0,
        "mid",
    );
    check(
        "{{ range $k, $v := $labels }}{{ $k }}={{ $v }}{{ end }}",
        0.0,
        "job=x",
    );
    check("{{ $x := \"a\" }}{{ $x | toUpper }}", 0.0, "A");
    check(
        "{{ printf \"%.2f %d %s %q\" 1.5 3 \"s\" \"q\" }}",
        0.0,
        "1.50 3 s \"q\"",
    );
}

#[test]
fn humanize() {
    check("{{ humanize 1234567.0 }}", 0.0, "1.235M");
    check("{{ humanize 0.00123 }}", 0.0, "1.23m");
    check("{{ humanize1024 1048576.0 }}", 0.0, "1Mi");
    check("{{ humanizeDuration 90061.0 }}", 0.0, "1d 1h 1m 1s");
    check("{{ humanizeDuration 0.0015 }}", 0.0, "1.5ms");
    check("{{ humanizePercentage 0.1234 }}", 0.0, "12.34%");
    check(
        "{{ humanizeTimestamp 1.5 }}",
        0.0,
        "1970-01-01 00:00:01.5 +0000 UTC",
    );
    // Whole milliseconds, truncated towards zero, as Prometheus keeps them.
    check(
        "{{ humanizeTimestamp 1700000000.25 }}|{{ humanizeTimestamp -1.5 }}",
        0.0,
        "2023-11-14 22:13:20.249 +0000 UTC|1969-12-31 23:59:58.5 +0000 UTC",
    );
    check(
        "{{ humanizeTimestamp 1e300 }}",
        0.0,
        "error: template t: cannot expand: error calling humanizeTimestamp: 1e+300 cannot be represented as a nanoseconds timestamp since it overflows int64",
    );
    check("{{ title \"foo bar-baz\" }}", 0.0, "Foo Bar-Baz");
}

#[test]
fn parse_errors() {
    for bad in [
        "{{ $labels.job",
        "{{ nosuch }}",
        "{{ $undefined }}",
        "{{ if 1 }}",
        "{{ end }}",
    ] {
        assert!(Template::parse("t", bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn defined_templates() {
    check(
        r#"{{ define "j" }}<{{ .Labels.job }}>{{ end }}{{ template "j" . }}{{ template "j" . }}"#,
        0.0,
        "<x><x>",
    );
    check(
        r#"{{ block "b" $labels }}[{{ .job }}]{{ end }}"#,
        0.0,
        "[x]",
    );
    check(
        r#"{{ define "n" }}{{ . }}{{ end }}{{ template "n" }}"#,
        0.0,
        "<no value>",
    );
    // `$` inside a defined template is its dot; the caller's variables stay.
    check(
        r#"{{ $a := 1 }}{{ define "d" }}{{ $ }}{{ end }}{{ template "d" "s" }}{{ $a }}"#,
        0.0,
        "s1",
    );
    check(
        r#"{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}"#,
        0.0,
        "error: template t: cannot expand: exceeded maximum template depth (100)",
    );
    check(
        r#"{{ template "missing" . }}"#,
        0.0,
        "error: template t: cannot expand: template \"missing\" not defined",
    );
}

#[test]
fn defined_template_errors() {
    for bad in [
        r#"{{ if true }}{{ define "x" }}{{ end }}{{ end }}"#,
        r#"{{ define "x" }}{{ $labels.job }}{{ end }}"#,
        r#"{{ define "x" }}a{{ end }}{{ define "x" }}b{{ end }}"#,
        r#"{{ define x }}{{ end }}"#,
        r#"{{ define "x" }}"#,
        r#"{{ range $labels }}{{ define "x" }}{{ break }}{{ end }}{{ end }}"#,
    ] {
        assert!(Template::parse("t", bad).is_err(), "{bad:?} parsed");
    }
}
