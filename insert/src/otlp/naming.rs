//! OpenTelemetry names to Prometheus names.
//!
//! Metric names: the OTel name is split into words at every character that
//! is not an ASCII letter or digit; the unit's words are appended unless the
//! name already has them; counters (monotonic sums) end in `total` and
//! gauges of unit `1` in `ratio` (moved to the end when the name has them
//! elsewhere); the words are joined with `_`, and a name starting with a
//! digit gets a leading `_`. So `http.server.duration` in `ms` is
//! `http_server_duration_milliseconds`, and `http.requests` in `{request}`
//! as a counter is `http_requests_total`.
//!
//! Units: parts in braces are annotations and dropped (`{request}`), `1` is
//! dimensionless, `a/b` reads "a per b"; known UCUM units become words
//! (`s` -> `seconds`, `By` -> `bytes`, `/s` -> `per_second`), others are
//! kept, sanitized.
//!
//! Label names: every character outside `[a-zA-Z0-9_]` becomes `_`; a name
//! starting with a digit gets the prefix `key_`; a name starting with `__`
//! (reserved for internal labels such as `__name__`) gets the prefix `key`,
//! so that no attribute can set or spoof a reserved label.

/// How a metric is exposed, for the suffix rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
    Summary,
}

/// The Prometheus metric name of an OTel metric.
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut words: Vec<&str> = split_words(name).collect();
    let unit = strip_annotations(unit);
    let unit = unit.trim();
    let dimensionless = unit == "1";
    let mut unit_words: Vec<String> = Vec::new();
    if !unit.is_empty() && !dimensionless {
        let (main, per) = match unit.split_once('/') {
            Some((main, per)) => (main.trim(), Some(per.trim())),
            None => (unit, None),
        };
        if let Some(word) = main_unit(main) {
            unit_words.push(word);
        }
        if let Some(per) = per.and_then(per_unit) {
            unit_words.push("per".to_string());
            unit_words.push(per);
        }
    }
    // "per" alone never repeats meaningfully: check the unit words as a whole
    // so that `bytes_per_second` in `By/s` is not extended again.
    let suffix = unit_words.join("_");
    let joined = words.join("_");
    let has_suffix = suffix.is_empty()
        || words.iter().any(|w| *w == suffix)
        || joined.ends_with(&suffix)
        || joined.contains(&format!("{suffix}_"));
    let mut out_words: Vec<&str> = Vec::with_capacity(words.len() + 4);
    let special = match kind {
        Kind::Counter => Some("total"),
        Kind::Gauge if dimensionless => Some("ratio"),
        _ => None,
    };
    if let Some(special) = special {
        words.retain(|w| *w != special);
    }
    out_words.extend(words.iter().copied());
    if !has_suffix {
        out_words.extend(unit_words.iter().flat_map(|w| split_words(w)));
    }
    if let Some(special) = special {
        out_words.push(special);
    }
    let mut out = out_words.join("_");
    if out.is_empty() {
        // Nothing alphanumeric at all: keep a sanitized form of the original
        // so that the series is still named (and rejected or stored visibly).
        out = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Prometheus label name of an attribute key; `None` for an empty key.
pub fn label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let sanitized: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(if sanitized.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{sanitized}")
    } else if sanitized.starts_with("__") {
        format!("key{sanitized}")
    } else {
        sanitized
    })
}

fn split_words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

fn strip_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn main_unit(unit: &str) -> Option<String> {
    let word = match unit {
        "" => return None,
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => return sanitized_unit(other),
    };
    Some(word.to_string())
}

fn per_unit(unit: &str) -> Option<String> {
    let word = match unit {
        "" => return None,
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => return sanitized_unit(other),
    };
    Some(word.to_string())
}

fn sanitized_unit(unit: &str) -> Option<String> {
    let words: Vec<&str> = split_words(unit).collect();
    (!words.is_empty()).then(|| words.join("_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_the_prometheus_rules() {
        let check = |name: &str, unit: &str, kind: Kind, want: &str| {
            assert_eq!(
                metric_name(name, unit, kind),
                want,
                "{name} [{unit}] {kind:?}"
            );
        };
        use Kind::*;
        check(
            "http.server.duration",
            "ms",
            Histogram,
            "http_server_duration_milliseconds",
        );
        check(
            "system.memory.usage",
            "By",
            Gauge,
            "system_memory_usage_bytes",
        );
        check("requests", "1", Counter, "requests_total");
        check("cpu.utilization", "1", Gauge, "cpu_utilization_ratio");
        check("queue.size", "1", Histogram, "queue_size");
        check("http.requests", "{request}", Counter, "http_requests_total");
        check("speed", "m/s", Gauge, "speed_meters_per_second");
        check("net.io", "By/s", Gauge, "net_io_bytes_per_second");
        check("rate", "{packets}/s", Gauge, "rate_per_second");
        check("latency_seconds", "s", Gauge, "latency_seconds");
        check("latency.seconds.max", "s", Gauge, "latency_seconds_max");
        check("requests_total", "", Counter, "requests_total");
        check("total.requests", "", Counter, "requests_total");
        check("ratio.of.x", "1", Gauge, "of_x_ratio");
        check("2xx.count", "", Gauge, "_2xx_count");
        check("foo..bar", "", Gauge, "foo_bar");
        check("jobs:rate5m", "", Gauge, "jobs_rate5m");
        check("temp", "Cel", Gauge, "temp_celsius");
        check(
            "weird",
            "furlongs/fortnight",
            Gauge,
            "weird_furlongs_per_fortnight",
        );
        check("up.down", "", Gauge, "up_down");
        check("summary.x", "s", Summary, "summary_x_seconds");
        check("...", "", Gauge, "___");
        check("é", "s", Gauge, "seconds");
    }

    #[test]
    fn label_names_are_sanitized() {
        let check = |key: &str, want: Option<&str>| {
            assert_eq!(label_name(key).as_deref(), want, "{key}");
        };
        check("host.name", Some("host_name"));
        check("http.status_code", Some("http_status_code"));
        check("_private", Some("_private"));
        check("__name__", Some("key__name__"));
        check("__x", Some("key__x"));
        check("2fa", Some("key_2fa"));
        check("a-b c", Some("a_b_c"));
        check("ünï", Some("_n_"));
        check("", None);
    }
}
