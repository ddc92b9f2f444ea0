//! Parser of the `.test` format: commands, series lines and the expanding
//! value notation. The layout is described in the module doc of `promqltest`.

use strata_storage::{Label, METRIC_NAME_LABEL};

use crate::promql::value::Labels;

/// Why a test file does not parse. `line` is 1-based.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// One position of a value sequence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SeqValue {
    /// `_`: no sample at this position.
    Omitted,
    /// A float, stale markers (`stale`) included as their NaN bit pattern.
    Float(f64),
}

/// A series line: labels (sorted, `__name__` included) and what follows them.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesLine {
    pub line: usize,
    pub labels: Labels,
    pub values: SeriesValues,
}

/// The values of a series line.
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesValues {
    Floats(Vec<SeqValue>),
    /// The line holds native histogram samples (`{{...}}`), which are not
    /// supported; the raw text is kept for messages.
    Histograms(String),
}

/// What an `eval` expects to happen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expectation {
    /// The query must fail.
    pub fail: bool,
    /// With `fail`: the exact error message wanted.
    pub fail_message: Option<String>,
    /// With `fail`: a regular expression the error message must match.
    pub fail_regexp: Option<String>,
    /// Vector elements must come in the listed order.
    pub ordered: bool,
    /// Some(true): warnings (or infos) are wanted; Some(false): none are.
    /// None: not checked.
    pub warnings: Option<bool>,
    /// A bare number line: the result is a scalar with this value.
    pub scalar: Option<f64>,
    /// A string result (`expect string "..."`).
    pub string: Option<String>,
    /// Series lines: the elements of a vector or the series of a matrix.
    pub series: Vec<SeriesLine>,
}

/// When an `eval` evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalTime {
    /// `instant at <t>` (ms).
    Instant { at: i64 },
    /// `range from <start> to <end> step <step>` (ms).
    Range { start: i64, end: i64, step: i64 },
}

/// An `eval*` command.
#[derive(Clone, Debug, PartialEq)]
pub struct Eval {
    pub line: usize,
    pub query: String,
    pub time: EvalTime,
    pub expect: Expectation,
    /// Why the case cannot run here (e.g. native histogram expectations).
    pub unsupported: Option<String>,
}

/// A command of a test file.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `load <interval>`: samples at 0, interval, 2*interval, ...
    Load {
        line: usize,
        interval_ms: i64,
        series: Vec<SeriesLine>,
        /// `load_with_nhcb`: classic histograms also as native ones.
        with_nhcb: bool,
    },
    /// `clear`: drop every series.
    Clear {
        line: usize,
    },
    Eval(Eval),
}

/// Parses a whole test file.
pub fn parse_file(text: &str) -> Result<Vec<Command>, ParseError> {
    // Comment lines end blocks like blank lines do.
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            let l = l.trim();
            if l.starts_with('#') { "" } else { l }
        })
        .collect();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let lineno = i + 1;
        if l.is_empty() {
            i += 1;
            continue;
        }
        // The block is the command line and the non-empty lines after it.
        let mut end = i + 1;
        while end < lines.len() && !lines[end].is_empty() {
            end += 1;
        }
        let body: Vec<(usize, &str)> = (i + 1..end).map(|j| (j + 1, lines[j])).collect();
        let word = l
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_lowercase();
        let command = if word == "clear" {
            // A one-line command: the next line starts another command.
            end = i + 1;
            Command::Clear { line: lineno }
        } else if word == "load" || word == "load_with_nhcb" {
            parse_load(lineno, l, &body)?
        } else if word.starts_with("eval") {
            Command::Eval(parse_eval(lineno, l, &body)?)
        } else {
            return Err(err(lineno, format!("invalid command {l:?}")));
        };
        commands.push(command);
        i = end;
    }
    Ok(commands)
}

fn parse_load(line: usize, l: &str, body: &[(usize, &str)]) -> Result<Command, ParseError> {
    let mut words = l.split_whitespace();
    let with_nhcb = words.next() == Some("load_with_nhcb");
    let interval = words
        .next()
        .ok_or_else(|| err(line, "load needs an interval: load <duration>"))?;
    if let Some(extra) = words.next() {
        return Err(err(
            line,
            format!("unexpected {extra:?} after load interval"),
        ));
    }
    let interval_ms = parse_duration(interval).map_err(|m| err(line, m))?;
    let series = body
        .iter()
        .map(|&(n, text)| parse_series_line(n, text))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Command::Load {
        line,
        interval_ms,
        series,
        with_nhcb,
    })
}

/// Strips `word` and the whitespace after it from the front of `s`.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(word)?;
    if rest.starts_with(char::is_whitespace) {
        Some(rest.trim_start())
    } else {
        None
    }
}

/// Splits the first whitespace-separated word off `s`.
fn next_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    match s.find(char::is_whitespace) {
        Some(p) => Some((&s[..p], s[p..].trim_start())),
        None => Some((s, "")),
    }
}

fn parse_eval(line: usize, l: &str, body: &[(usize, &str)]) -> Result<Eval, ParseError> {
    let (word, rest) = next_word(l).ok_or_else(|| err(line, "empty eval"))?;
    let mut expect = Expectation::default();
    match word {
        "eval" => {}
        "eval_fail" => expect.fail = true,
        "eval_ordered" => expect.ordered = true,
        "eval_warn" | "eval_info" => expect.warnings = Some(true),
        _ => return Err(err(line, format!("invalid eval command {word:?}"))),
    }
    let time;
    let query;
    if let Some(rest) = strip_word(rest, "instant") {
        let (at, q) = match strip_word(rest, "at") {
            Some(rest) => {
                let (t, q) = next_word(rest).ok_or_else(|| err(line, "missing time after at"))?;
                (parse_duration(t).map_err(|m| err(line, m))?, q)
            }
            None => (0, rest),
        };
        time = EvalTime::Instant { at };
        query = q;
    } else if let Some(rest) = strip_word(rest, "range") {
        let bad = || {
            err(
                line,
                "invalid range eval: want eval range from <t> to <t> step <d> <query>",
            )
        };
        let rest = strip_word(rest, "from").ok_or_else(bad)?;
        let (start, rest) = next_word(rest).ok_or_else(bad)?;
        let rest = strip_word(rest, "to").ok_or_else(bad)?;
        let (end, rest) = next_word(rest).ok_or_else(bad)?;
        let rest = strip_word(rest, "step").ok_or_else(bad)?;
        let (step, q) = next_word(rest).ok_or_else(bad)?;
        let d = |s: &str| parse_duration(s).map_err(|m| err(line, m));
        let (start, end, step) = (d(start)?, d(end)?, d(step)?);
        if step <= 0 {
            return Err(err(line, "range eval step must be positive"));
        }
        if expect.ordered {
            return Err(err(line, "eval_ordered is only valid for instant queries"));
        }
        time = EvalTime::Range { start, end, step };
        query = q;
    } else {
        return Err(err(
            line,
            "invalid eval: want eval[_fail|_ordered|_warn|_info] instant at <t> <query> \
             or eval[_fail|_warn|_info] range from <t> to <t> step <d> <query>",
        ));
    }
    if query.is_empty() {
        return Err(err(line, "eval without a query"));
    }
    let mut eval = Eval {
        line,
        query: query.to_string(),
        time,
        expect,
        unsupported: None,
    };
    for &(n, text) in body {
        if parse_expected_line(&mut eval, n, text)? {
            break;
        }
    }
    Ok(eval)
}

/// Parses one line under an `eval`; true when it ends the block.
fn parse_expected_line(eval: &mut Eval, n: usize, text: &str) -> Result<bool, ParseError> {
    let expect = &mut eval.expect;
    if let Some(m) = text.strip_prefix("expected_fail_message") {
        expect.fail_message = Some(m.trim().to_string());
        return Ok(true);
    }
    if let Some(m) = text.strip_prefix("expected_fail_regexp") {
        expect.fail_regexp = Some(m.trim().to_string());
        return Ok(true);
    }
    if let Some(rest) = strip_word(text, "expect").or((text == "expect").then_some("")) {
        return parse_expect(eval, n, rest).map(|()| false);
    }
    if let Some(v) = parse_number(text) {
        expect.scalar = Some(v);
        return Ok(true);
    }
    let series = parse_series_line(n, text)?;
    if let SeriesValues::Histograms(_) = &series.values {
        eval.unsupported
            .get_or_insert_with(|| format!("native histogram expected at line {n}"));
    }
    if let (EvalTime::Instant { .. }, SeriesValues::Floats(v)) = (eval.time, &series.values)
        && v.len() != 1
    {
        return Err(err(
            n,
            "an instant eval expects exactly one value per series",
        ));
    }
    eval.expect.series.push(series);
    Ok(false)
}

/// `expect <what> [msg: <text> | regex: <re>]` lines of the newer format.
fn parse_expect(eval: &mut Eval, n: usize, rest: &str) -> Result<(), ParseError> {
    let (what, tail) = next_word(rest).ok_or_else(|| err(n, "empty expect line"))?;
    let (msg, regex) = if let Some(m) = tail.strip_prefix("msg:") {
        (Some(m.trim().to_string()), None)
    } else if let Some(r) = tail.strip_prefix("regex:") {
        (None, Some(r.trim().to_string()))
    } else {
        (None, None)
    };
    let expect = &mut eval.expect;
    match what {
        "fail" => {
            expect.fail = true;
            expect.fail_message = msg;
            expect.fail_regexp = regex;
        }
        "ordered" => expect.ordered = true,
        "warn" | "info" => expect.warnings = Some(true),
        // The engine does not tell warnings from infos, so the absence of
        // one kind cannot be checked.
        "no_warn" | "no_info" => {}
        "string" => {
            let s = tail.trim();
            let unquoted = unquote(s).ok_or_else(|| err(n, format!("invalid string {s:?}")))?;
            expect.string = Some(unquoted);
        }
        "range" => {
            eval.unsupported.get_or_insert_with(|| {
                format!("'expect range vector' at line {n} is not supported")
            });
        }
        _ => return Err(err(n, format!("invalid expect {what:?}"))),
    }
    Ok(())
}

/// A bare number: decimal, exponent, hex, `Inf`, `NaN`, with a sign.
pub fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()? as f64
    } else {
        // Rust's float syntax also accepts these, but not with a second sign.
        if body.starts_with(['+', '-']) {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Parses `metric{label="value", ...} <values>`.
pub fn parse_series_line(n: usize, text: &str) -> Result<SeriesLine, ParseError> {
    let (labels, rest) = parse_labels(text).map_err(|m| err(n, m))?;
    let rest = rest.trim();
    let values = if rest.contains("{{") {
        SeriesValues::Histograms(rest.to_string())
    } else {
        SeriesValues::Floats(parse_values(rest).map_err(|m| err(n, m))?)
    };
    Ok(SeriesLine {
        line: n,
        labels,
        values,
    })
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses a series notation `name{a="b"}`, `name` or `{a="b"}` at the start
/// of `s`; returns the sorted labels and the rest of `s`.
pub fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let name_len = s
        .char_indices()
        .find(|&(i, c)| {
            !(if i == 0 {
                is_name_start(c)
            } else {
                is_name_char(c)
            })
        })
        .map_or(s.len(), |(i, _)| i);
    let mut labels = Vec::new();
    if name_len > 0 {
        labels.push(Label::new(METRIC_NAME_LABEL, &s[..name_len]));
    }
    let mut rest = &s[name_len..];
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner.trim_start();
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let len = rest
                .char_indices()
                .find(|&(i, c)| {
                    !(if i == 0 {
                        is_name_start(c)
                    } else {
                        is_name_char(c)
                    })
                })
                .map_or(rest.len(), |(i, _)| i);
            if len == 0 {
                return Err(format!("expected a label name at {rest:?}"));
            }
            let name = &rest[..len];
            rest = rest[len..].trim_start();
            rest = rest
                .strip_prefix('=')
                .ok_or_else(|| format!("expected '=' after label {name:?}"))?
                .trim_start();
            let (value, after) = parse_quoted(rest)?;
            if name == METRIC_NAME_LABEL && name_len > 0 {
                return Err("metric name given twice".to_string());
            }
            if labels.iter().any(|l: &Label| l.name == name) {
                return Err(format!("label {name:?} given twice"));
            }
            labels.push(Label::new(name, value));
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after.trim_start();
            } else if !rest.starts_with('}') {
                return Err(format!("expected ',' or '}}' at {rest:?}"));
            }
        }
    } else if name_len == 0 {
        return Err(format!("expected a series at {s:?}"));
    }
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("expected whitespace after the series at {rest:?}"));
    }
    labels.sort();
    Ok((labels, rest))
}

/// Parses a quoted string (`"`, `'` or backquote) at the start of `s`;
/// returns its value and the rest of `s`.
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let quote = s
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\'' | '`'))
        .ok_or_else(|| format!("expected a quoted value at {s:?}"))?;
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((out, &s[i + c.len_utf8()..]));
        }
        if c == '\\' && quote != '`' {
            let (_, e) = chars.next().ok_or("unterminated escape")?;
            out.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '\\' | '"' | '\'' => e,
                _ => return Err(format!("unsupported escape \\{e}")),
            });
        } else {
            out.push(c);
        }
    }
    Err(format!("unterminated string {s:?}"))
}

fn unquote(s: &str) -> Option<String> {
    match parse_quoted(s) {
        Ok((v, rest)) if rest.trim().is_empty() => Some(v),
        _ => None,
    }
}

/// One value of the notation: a number or `stale`.
fn parse_value(s: &str) -> Result<f64, String> {
    if s == "stale" {
        return Ok(f64::from_bits(strata_storage::STALE_NAN_BITS));
    }
    parse_number(s).ok_or_else(|| format!("invalid value {s:?}"))
}

/// Expands the value notation: space-separated items, each one of
/// `_` (no sample), `_xN` (N times no sample), `v` (one value),
/// `vxN` (N+1 times v), `a+bxN` / `a-bxN` (N+1 values from a, adding or
/// subtracting b each step). Values are numbers, `Inf`, `NaN` or `stale`.
pub fn parse_values(s: &str) -> Result<Vec<SeqValue>, String> {
    let mut out = Vec::new();
    for item in s.split_whitespace() {
        let (head, times) = match item.rfind('x') {
            Some(p) => {
                let n = &item[p + 1..];
                let times: usize = n
                    .parse()
                    .map_err(|_| format!("invalid repeat count {n:?} in {item:?}"))?;
                (&item[..p], Some(times))
            }
            None => (item, None),
        };
        if head == "_" {
            out.extend(std::iter::repeat_n(SeqValue::Omitted, times.unwrap_or(1)));
            continue;
        }
        let Some(times) = times else {
            out.push(SeqValue::Float(parse_value(head)?));
            continue;
        };
        // A sign after the first character, not inside an exponent, starts
        // the increment.
        let split = head
            .char_indices()
            .skip(1)
            .find(|&(i, c)| {
                matches!(c, '+' | '-') && !matches!(head.as_bytes()[i - 1], b'e' | b'E')
            })
            .map(|(i, _)| i);
        match split {
            None => {
                let v = parse_value(head)?;
                out.extend(std::iter::repeat_n(SeqValue::Float(v), times + 1));
            }
            Some(p) => {
                let mut v = parse_value(&head[..p])?;
                let delta = parse_value(&head[p..])?;
                for _ in 0..=times {
                    out.push(SeqValue::Float(v));
                    // Accumulated like the reference runner, so float
                    // rounding of long sequences matches.
                    v += delta;
                }
            }
        }
    }
    Ok(out)
}

/// Parses durations like `5m`, `1h30m`, `10s`, `100ms`, `2d`, `1w`, `1y`;
/// a bare number is seconds. Returns milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {s:?}");
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            return Err(bad());
        }
        return Ok((secs * 1000.0).round() as i64);
    }
    let mut total: i64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
    }
    Ok(total)
}
