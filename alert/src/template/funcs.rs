//! Template values, Go's value formatting (`%v`, `printf`) and the function table:
//! text/template's builtins plus Prometheus' alert template functions.

use std::collections::BTreeMap;

use super::{Data, QueryFn, Sample};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A Go map: missing keys read as the empty string.
    Map(BTreeMap<String, Value>),
    /// A Go struct: missing fields are errors.
    Struct(BTreeMap<String, Value>),
    List(Vec<Value>),
    /// A timestamp in seconds, printed like Go's `time.Time`.
    Time(f64),
}

impl Value {
    pub fn string_map(map: &BTreeMap<String, String>) -> Value {
        Value::Map(
            map.iter()
                .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                .collect(),
        )
    }

    pub fn sample(sample: &Sample) -> Value {
        Value::Struct(BTreeMap::from([
            ("Labels".to_string(), Value::string_map(&sample.labels)),
            ("Value".to_string(), Value::Float(sample.value)),
        ]))
    }

    /// Go's truth: false, 0, nil and empty strings, maps and lists are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Struct(_) | Value::Time(_) => true,
            Value::List(l) => !l.is_empty(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Map(_) => "map[string]string",
            Value::Struct(_) => "struct",
            Value::List(_) => "[]interface {}",
            Value::Time(_) => "time.Time",
        }
    }

    /// `fmt.Sprint` of the value.
    pub fn to_go_string(&self) -> String {
        match self {
            Value::Nil => "<no value>".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_g(*f, None),
            Value::Str(s) => s.clone(),
            Value::Map(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.to_go_string()))
                    .collect();
                format!("map[{}]", parts.join(" "))
            }
            Value::Struct(m) => {
                let parts: Vec<String> = m.values().map(Value::to_go_string).collect();
                format!("{{{}}}", parts.join(" "))
            }
            Value::List(l) => {
                let parts: Vec<String> = l.iter().map(Value::to_go_string).collect();
                format!("[{}]", parts.join(" "))
            }
            Value::Time(t) => format_time(*t),
        }
    }

    fn to_float(&self) -> Result<f64, String> {
        match self {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            Value::Str(s) => parse_go_float(s)
                .ok_or_else(|| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
            other => Err(format!("can't convert {} to float", other.type_name())),
        }
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().trim_start_matches(['+', '-']) {
        "inf" | "infinity" => Some(if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Go's `%g` (`prec` = None: shortest, as `%v` prints floats; Some(p): `%.pg`).
pub(super) fn format_g(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let sci = match prec {
        None => format!("{v:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, v),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let eprec = prec.map_or(6, |p| p.max(1) as i32);
    if exp < -4 || exp >= eprec {
        let mantissa = if prec.is_some() && mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    match prec {
        None => format!("{v}"),
        Some(p) => {
            let decimals = (p.max(1) as i32 - 1 - exp).max(0) as usize;
            let fixed = format!("{v:.decimals$}");
            if fixed.contains('.') {
                fixed
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            } else {
                fixed
            }
        }
    }
}

/// Go's `%e` with a precision: `1.500000e+00`.
fn format_e(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return format_g(v, None);
    }
    let sci = format!("{v:.prec$e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// Go's `time.Time.String()` in UTC (`2006-01-02 15:04:05.999 +0000 UTC`)
/// of the time Prometheus makes of `seconds`: whole nanoseconds (truncated),
/// then whole milliseconds (truncated towards zero).
fn format_time(seconds: f64) -> String {
    let millis = ((seconds * 1e9) as i64) / 1_000_000;
    let secs = millis.div_euclid(1000);
    let nanos = (millis.rem_euclid(1000) * 1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let day_secs = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        day_secs / 3600,
        (day_secs / 60) % 60,
        day_secs % 60
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

/// Whether `seconds` as nanoseconds fits an i64, as a time must.
fn nanoseconds_fit(seconds: f64) -> Result<(), String> {
    let nanos = seconds * 1e9;
    if nanos > i64::MAX as f64 || nanos < i64::MIN as f64 {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            format_g(seconds, None)
        ));
    }
    Ok(())
}

/// Days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const BUILTINS: &[&str] = &[
    "and", "or", "not", "len", "index", "print", "printf", "println", "html", "js", "urlquery",
    "eq", "ne", "lt", "le", "gt", "ge", "slice",
];

const PROMETHEUS: &[&str] = &[
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "match",
    "title",
    "toUpper",
    "toLower",
    "safeHtml",
    "stripPort",
    "stripDomain",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "sortByLabel",
    "graphLink",
    "tableLink",
];

pub(super) fn is_function(name: &str) -> bool {
    BUILTINS.contains(&name) || PROMETHEUS.contains(&name)
}

fn want_args(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn string_arg(name: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::Str(s) => Ok(s.clone()),
        other => Err(format!(
            "wrong type for value in {name}; expected string; got {}",
            other.type_name()
        )),
    }
}

fn regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| format!("error parsing regexp {pattern:?}: {e}"))
}

fn compare(name: &str, a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    use std::cmp::Ordering;
    let ordering = match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Less),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) if name == "eq" || name == "ne" => x.cmp(y),
        (Value::Bool(_), Value::Bool(_)) => return Err("invalid type for comparison".to_string()),
        _ => return Err("incompatible types for comparison".to_string()),
    };
    Ok(ordering)
}

pub(super) fn call(
    name: &str,
    args: Vec<Value>,
    data: &Data,
    query: Option<&dyn QueryFn>,
) -> Result<Value, String> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Nil);
    let one_string = |args: &[Value]| -> Result<String, String> {
        want_args(name, args, 1)?;
        string_arg(name, &args[0])
    };
    let one_float = |args: &[Value]| -> Result<f64, String> {
        want_args(name, args, 1)?;
        args[0].to_float()
    };
    Ok(match name {
        "not" => {
            want_args(name, &args, 1)?;
            Value::Bool(!args[0].truthy())
        }
        "len" => {
            want_args(name, &args, 1)?;
            Value::Int(match &args[0] {
                Value::Str(s) => s.len(),
                Value::Map(m) => m.len(),
                Value::List(l) => l.len(),
                other => return Err(format!("len of type {}", other.type_name())),
            } as i64)
        }
        "index" => {
            let mut value = arg(0);
            for key in args.iter().skip(1) {
                value = match (&value, key) {
                    (Value::Map(m), Value::Str(k)) => {
                        m.get(k).cloned().unwrap_or(Value::Str(String::new()))
                    }
                    (Value::List(l), Value::Int(i)) => l
                        .get(usize::try_from(*i).map_err(|_| format!("index out of range: {i}"))?)
                        .cloned()
                        .ok_or_else(|| format!("index out of range: {i}"))?,
                    (Value::Nil, _) => return Err("index of untyped nil".to_string()),
                    (v, k) => {
                        return Err(format!(
                            "can't index item of type {} with {}",
                            v.type_name(),
                            k.type_name()
                        ));
                    }
                };
            }
            value
        }
        "print" => Value::Str(sprint(&args)),
        "println" => {
            let parts: Vec<String> = args.iter().map(Value::to_go_string).collect();
            Value::Str(format!("{}\n", parts.join(" ")))
        }
        "printf" => {
            let format = match args.first() {
                Some(Value::Str(f)) => f.clone(),
                _ => return Err("printf: format must be a string".to_string()),
            };
            Value::Str(sprintf(&format, &args[1..]))
        }
        "html" | "safeHtml" if name == "html" => Value::Str(html_escape(&sprint(&args))),
        "safeHtml" => Value::Str(one_string(&args)?),
        "js" => Value::Str(
            sprint(&args)
                .replace('\\', "\\\\")
                .replace('\'', "\\'")
                .replace('"', "\\\""),
        ),
        "urlquery" => Value::Str(form_escape(&sprint(&args))),
        "eq" | "ne" => {
            if args.len() < 2 {
                return Err("missing argument for comparison".to_string());
            }
            let mut equal = false;
            for other in &args[1..] {
                if compare("eq", &args[0], other)? == std::cmp::Ordering::Equal {
                    equal = true;
                }
            }
            Value::Bool(if name == "eq" { equal } else { !equal })
        }
        "lt" | "le" | "gt" | "ge" => {
            want_args(name, &args, 2)?;
            let ordering = compare(name, &args[0], &args[1])?;
            Value::Bool(match name {
                "lt" => ordering.is_lt(),
                "le" => ordering.is_le(),
                "gt" => ordering.is_gt(),
                _ => ordering.is_ge(),
            })
        }
        "slice" => {
            let s = string_arg(name, &arg(0))?;
            let bound = |i: usize, default: usize| match args.get(i) {
                Some(Value::Int(n)) => {
                    usize::try_from(*n).map_err(|_| format!("index out of range: {n}"))
                }
                None => Ok(default),
                Some(_) => Err("cannot index slice with non-int".to_string()),
            };
            let (start, end) = (bound(1, 0)?, bound(2, s.len())?);
            Value::Str(
                s.get(start..end)
                    .ok_or_else(|| format!("slice indices out of range: {start}:{end}"))?
                    .to_string(),
            )
        }
        "query" => {
            let q = one_string(&args)?;
            let query = query.ok_or_else(|| "query is not available here".to_string())?;
            let samples = query.query(&q)?;
            Value::List(samples.iter().map(Value::sample).collect())
        }
        "first" => {
            want_args(name, &args, 1)?;
            match &args[0] {
                Value::List(l) => l
                    .first()
                    .cloned()
                    .ok_or("first() called on vector with no elements")?,
                other => {
                    return Err(format!(
                        "wrong type for value in first; got {}",
                        other.type_name()
                    ));
                }
            }
        }
        "label" => {
            want_args(name, &args, 2)?;
            let label = string_arg(name, &args[0])?;
            match &args[1] {
                Value::Struct(s) => match s.get("Labels") {
                    Some(Value::Map(labels)) => labels
                        .get(&label)
                        .cloned()
                        .unwrap_or(Value::Str(String::new())),
                    _ => Value::Str(String::new()),
                },
                _ => Value::Str(String::new()),
            }
        }
        "value" => {
            want_args(name, &args, 1)?;
            match &args[0] {
                Value::Struct(s) => s.get("Value").cloned().unwrap_or(Value::Float(0.0)),
                other => {
                    return Err(format!(
                        "wrong type for value in value; got {}",
                        other.type_name()
                    ));
                }
            }
        }
        "strvalue" => {
            want_args(name, &args, 1)?;
            match &args[0] {
                Value::Struct(s) => match s.get("Labels") {
                    Some(Value::Map(labels)) => labels
                        .get("__value__")
                        .cloned()
                        .unwrap_or(Value::Str(String::new())),
                    _ => Value::Str(String::new()),
                },
                _ => Value::Str(String::new()),
            }
        }
        "sortByLabel" => {
            want_args(name, &args, 2)?;
            let label = string_arg(name, &args[0])?;
            let Value::List(mut list) = args[1].clone() else {
                return Err("sortByLabel needs a query result".to_string());
            };
            let key = |v: &Value| {
                call(
                    "label",
                    vec![Value::Str(label.clone()), v.clone()],
                    data,
                    None,
                )
                .map(|l| l.to_go_string())
                .unwrap_or_default()
            };
            list.sort_by_key(key);
            Value::List(list)
        }
        "args" => Value::Map(
            args.iter()
                .enumerate()
                .map(|(i, v)| (format!("arg{i}"), v.clone()))
                .collect(),
        ),
        "reReplaceAll" => {
            want_args(name, &args, 3)?;
            let (pattern, repl, text) = (
                string_arg(name, &args[0])?,
                string_arg(name, &args[1])?,
                string_arg(name, &args[2])?,
            );
            Value::Str(
                regex(&pattern)?
                    .replace_all(&text, repl.as_str())
                    .into_owned(),
            )
        }
        "match" => {
            want_args(name, &args, 2)?;
            let (pattern, text) = (string_arg(name, &args[0])?, string_arg(name, &args[1])?);
            Value::Bool(regex(&pattern)?.is_match(&text))
        }
        "title" => Value::Str(title(&one_string(&args)?)),
        "toUpper" => Value::Str(one_string(&args)?.to_uppercase()),
        "toLower" => Value::Str(one_string(&args)?.to_lowercase()),
        "stripPort" => Value::Str(strip_port(&one_string(&args)?)),
        "stripDomain" => {
            let host_port = one_string(&args)?;
            let (host, port) = match host_port.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), format!(":{p}")),
                _ => (host_port.clone(), String::new()),
            };
            if host.parse::<std::net::IpAddr>().is_ok() {
                Value::Str(host_port)
            } else {
                Value::Str(format!(
                    "{}{port}",
                    host.split('.').next().unwrap_or_default()
                ))
            }
        }
        "humanize" => Value::Str(humanize(one_float(&args)?)),
        "humanize1024" => Value::Str(humanize_1024(one_float(&args)?)),
        "humanizeDuration" => Value::Str(humanize_duration(one_float(&args)?)),
        "humanizePercentage" => {
            Value::Str(format!("{}%", format_g(one_float(&args)? * 100.0, Some(4))))
        }
        "humanizeTimestamp" => {
            let v = one_float(&args)?;
            if v.is_finite() {
                nanoseconds_fit(v)?;
                Value::Str(format_time(v))
            } else {
                Value::Str(format_g(v, Some(4)))
            }
        }
        "toTime" => {
            let v = one_float(&args)?;
            if !v.is_finite() {
                return Err(format!("cannot convert {} to time", format_g(v, None)));
            }
            nanoseconds_fit(v)?;
            Value::Time(v)
        }
        "externalURL" => Value::Str(data.external_url.clone()),
        "pathPrefix" => Value::Str(url_path(&data.external_url)),
        "graphLink" | "tableLink" => {
            let expr = one_string(&args)?;
            let tab = if name == "graphLink" { 0 } else { 1 };
            Value::Str(format!(
                "{}/graph?g0.expr={}&g0.tab={tab}",
                url_path(&data.external_url),
                form_escape(&expr)
            ))
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

/// `fmt.Sprint`: spaces between operands when neither side is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 && !matches!(arg, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&arg.to_go_string());
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn form_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) => after_scheme[i..]
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
        None => String::new(),
    }
}

fn strip_port(host_port: &str) -> String {
    if let Some(rest) = host_port.strip_prefix('[')
        && let Some((host, port)) = rest.split_once("]:")
        && !port.contains(':')
    {
        return host.to_string();
    }
    match host_port.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') && !host.contains('[') => host.to_string(),
        _ => host_port.to_string(),
    }
}

/// Go's deprecated `strings.Title`: upper-cases the first letter of each word.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut previous_separator = true;
    for c in s.chars() {
        if previous_separator {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        previous_separator = if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            !(c.is_alphanumeric()) && c.is_whitespace()
        };
    }
    out
}

fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

fn humanize_1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return format_g(v, Some(4));
    }
    if v == 0.0 {
        return "0s".to_string();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let whole = v as i64;
        let (days, hours, minutes, seconds) = (
            whole / 86_400,
            (whole / 3600) % 24,
            (whole / 60) % 60,
            whole % 60,
        );
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", format_g(v, Some(4)))
        };
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", format_g(v, Some(4)))
}

/// `fmt.Sprintf` for the verbs templates use: `%s %d %f %e %g %v %q %x %X %t %%`
/// with flags `-+0 ` and width/precision.
pub(super) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some(width.unwrap_or(0) * 10 + d as usize);
            chars.next();
        }
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p * 10 + d as usize;
                chars.next();
            }
            prec = Some(p);
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let bad = || format!("%!{verb}({}={})", arg.type_name(), arg.to_go_string());
        let numeric = matches!(arg, Value::Int(_) | Value::Float(_));
        let mut text = match (verb, arg) {
            ('v', _) => match (arg, prec) {
                (Value::Float(f), Some(p)) => format_g(*f, Some(p)),
                _ => arg.to_go_string(),
            },
            ('s', Value::Str(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            },
            ('s', Value::Map(_) | Value::List(_) | Value::Time(_)) => arg.to_go_string(),
            ('q', Value::Str(s)) => format!("{s:?}"),
            ('q', Value::Int(i)) => {
                format!("'{}'", char::from_u32(*i as u32).unwrap_or('\u{FFFD}'))
            }
            ('d', Value::Int(i)) => i.to_string(),
            ('x', Value::Int(i)) => format!("{i:x}"),
            ('X', Value::Int(i)) => format!("{i:X}"),
            ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
            ('c', Value::Int(i)) => char::from_u32(*i as u32).unwrap_or('\u{FFFD}').to_string(),
            ('t', Value::Bool(b)) => b.to_string(),
            ('f' | 'F', Value::Float(f)) => {
                if f.is_finite() {
                    format!("{:.*}", prec.unwrap_or(6), f)
                } else {
                    format_g(*f, None)
                }
            }
            ('e', Value::Float(f)) => format_e(*f, prec.unwrap_or(6)),
            ('g', Value::Float(f)) => format_g(*f, prec),
            _ => bad(),
        };
        if numeric && !text.starts_with('-') && !text.starts_with('%') {
            if plus {
                text.insert(0, '+');
            } else if space {
                text.insert(0, ' ');
            }
        }
        if let Some(width) = width {
            let len = text.chars().count();
            if len < width {
                let pad = width - len;
                if minus {
                    text.push_str(&" ".repeat(pad));
                } else if zero && numeric && !text.starts_with('%') {
                    let sign_len = usize::from(text.starts_with(['-', '+', ' ']));
                    text.insert_str(sign_len, &"0".repeat(pad));
                } else {
                    text.insert_str(0, &" ".repeat(pad));
                }
            }
        }
        out.push_str(&text);
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.to_go_string()))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}
