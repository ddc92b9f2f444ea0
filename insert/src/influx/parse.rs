//! Parser of the InfluxDB line protocol, one point per line:
//!
//! ```text
//! measurement[,tag=value...] field=value[,field=value...] [timestamp]
//! cpu,host=a,region=eu\ west usage_user=1.5,cores=8i,up=true,note="x" 1700000000000000000
//! ```
//!
//! - Measurement: commas and spaces are escaped with `\`. Tag keys, tag values
//!   and field keys: commas, spaces and `=` are escaped with `\`. Any other
//!   backslash is kept as written.
//! - Field values: floats (`1`, `-1.5`, `2e3`), integers (`8i`), unsigned
//!   integers (`8u`), booleans (`t`, `T`, `true`, `True`, `TRUE` and the `f`
//!   forms: 1 and 0), strings in double quotes (`\"` and `\\` escaped; they
//!   may span lines). Strings are not numbers: they are skipped and counted.
//! - Timestamp: an integer in the request's precision (nanoseconds unless
//!   told), converted to milliseconds rounding down. Absent: the receive time.
//! - Blank lines and lines whose first non-blank character is `#` are skipped;
//!   `\r\n` line ends are fine.
//!
//! Each numeric field becomes one sample of the series named
//! `<measurement>_<field>` with the tags as labels. Names are made valid for
//! Prometheus: every character outside `[a-zA-Z0-9_:]` (metric names) or
//! `[a-zA-Z0-9_]` (label names) becomes `_`, and a leading digit gets a `_`
//! in front. A `db` label is added from the request's database (or bucket)
//! unless the line has a `db` tag.
//!
//! The whole body is checked before anything is returned: one bad line
//! rejects the request.

use std::borrow::Cow;

use strata_storage::{Label, METRIC_NAME_LABEL, Sample, SeriesSamples};

use crate::ingest::Parsed;
use crate::textparse::LineCursor;

/// Unit of the timestamps in a request (`precision` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// Reads the `precision` parameter: the v1 names (`n`, `u`, `ms`, `s`,
    /// `m`, `h`) and the v2 names (`ns`, `us`, `ms`, `s`).
    pub fn from_param(text: &str) -> Option<Precision> {
        Some(match text {
            "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return None,
        })
    }

    /// `ts` in this precision as milliseconds; `None` when out of range.
    pub fn to_millis(self, ts: i64) -> Option<i64> {
        match self {
            Precision::Nanoseconds => Some(ts.div_euclid(1_000_000)),
            Precision::Microseconds => Some(ts.div_euclid(1_000)),
            Precision::Milliseconds => Some(ts),
            Precision::Seconds => ts.checked_mul(1_000),
            Precision::Minutes => ts.checked_mul(60_000),
            Precision::Hours => ts.checked_mul(3_600_000),
        }
    }
}

/// How a request's lines are read.
#[derive(Clone, Debug)]
pub struct Options {
    pub precision: Precision,
    /// Timestamp (ms) of lines without one: the receive time.
    pub default_timestamp_ms: i64,
    /// Value of the `db` label for lines without a `db` tag; empty for none.
    pub db: String,
}

/// A body that parsed.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    pub parsed: Parsed,
    /// String fields, skipped: they are not numbers.
    pub strings_skipped: u64,
}

/// The first bad line of a body, plus how many fields the whole body held
/// (all of them are rejected).
#[derive(Debug, PartialEq)]
pub struct ParseFailure {
    pub error: ParseError,
    pub rows: u64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("line {line} column {column}: {problem}")]
pub struct ParseError {
    /// 1-based line number in the decompressed body.
    pub line: usize,
    /// 1-based column, in bytes.
    pub column: usize,
    pub problem: Problem,
}

/// What is wrong with a line.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("missing measurement")]
    MissingMeasurement,
    #[error("missing fields after measurement {0:?}")]
    MissingFields(String),
    #[error("tag {0:?} has no '=value'")]
    MissingTagValue(String),
    #[error("empty tag key")]
    EmptyTagKey,
    #[error("empty value of tag {0:?}")]
    EmptyTagValue(String),
    #[error("empty field key")]
    EmptyFieldKey,
    #[error("field {0:?} has no '=value'")]
    MissingFieldValue(String),
    #[error("invalid value of field {field:?}: {found:?}")]
    InvalidFieldValue { field: String, found: String },
    #[error("unterminated string value of field {0:?}")]
    UnterminatedString(String),
    #[error("invalid timestamp {0:?}: want an integer")]
    InvalidTimestamp(String),
    #[error("timestamp {0} is out of range for its precision")]
    TimestampOutOfRange(i64),
    #[error("unexpected {0:?} after the timestamp")]
    TrailingData(String),
}

impl Problem {
    /// The `reason` label of the rejected-rows counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidUtf8 => "invalid_utf8",
            Problem::MissingMeasurement => "missing_measurement",
            Problem::MissingFields(_) => "missing_fields",
            Problem::MissingTagValue(_) | Problem::EmptyTagKey | Problem::EmptyTagValue(_) => {
                "invalid_tag"
            }
            Problem::EmptyFieldKey | Problem::MissingFieldValue(_) => "invalid_field",
            Problem::InvalidFieldValue { .. } | Problem::UnterminatedString(_) => "invalid_value",
            Problem::InvalidTimestamp(_) | Problem::TimestampOutOfRange(_) => "invalid_timestamp",
            Problem::TrailingData(_) => "trailing_data",
        }
    }
}

/// Parses a whole (decompressed) body.
pub fn parse(body: &[u8], options: &Options) -> Result<Batch, ParseFailure> {
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            return Err(ParseFailure {
                error: locate(body, e.valid_up_to(), Problem::InvalidUtf8),
                rows: count_lines(body),
            });
        }
    };
    let mut parser = Parser {
        text,
        bytes: body,
        pos: 0,
        options,
        batch: Batch::default(),
        tags: Vec::new(),
        fields: Vec::new(),
    };
    let mut first_error: Option<(usize, Problem)> = None;
    while parser.pos < body.len() {
        match parser.line() {
            Ok(()) => {}
            Err((at, problem)) => {
                parser.batch.parsed.rows += 1;
                if first_error.is_none() {
                    first_error = Some((at, problem));
                }
                // Resume at the next line, only to count the rejected rows.
                parser.pos = match body[at.min(body.len())..].iter().position(|&b| b == b'\n') {
                    Some(n) => at + n + 1,
                    None => body.len(),
                };
            }
        }
        if first_error.is_some() {
            parser.batch.parsed.series.clear();
        }
    }
    match first_error {
        None => Ok(parser.batch),
        Some((at, problem)) => Err(ParseFailure {
            error: locate(body, at, problem),
            rows: parser.batch.parsed.rows + parser.batch.strings_skipped,
        }),
    }
}

/// Line and column of byte `at`; only computed for an error.
fn locate(body: &[u8], at: usize, problem: Problem) -> ParseError {
    let before = &body[..at.min(body.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |n| n + 1);
    ParseError {
        line: before.iter().filter(|&&b| b == b'\n').count() + 1,
        column: at - line_start + 1,
        problem,
    }
}

fn count_lines(body: &[u8]) -> u64 {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64
}

type LineResult<T> = Result<T, (usize, Problem)>;

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    options: &'a Options,
    batch: Batch,
    /// The current line's tags, reused across lines.
    tags: Vec<Label>,
    /// The current line's numeric fields: raw key, whether it holds
    /// escapes, value.
    fields: Vec<(&'a str, bool, f64)>,
}

/// Where a token ends: the delimiter found, or the end of the line.
#[derive(PartialEq)]
enum Stop {
    Comma,
    Space,
    Equals,
    EndOfLine,
}

impl LineCursor for Parser<'_> {
    fn bytes(&self) -> &[u8] {
        self.bytes
    }

    fn pos(&self) -> usize {
        self.pos
    }

    fn advance(&mut self) {
        self.pos += 1;
    }
}

impl<'a> Parser<'a> {
    /// Scans an identifier up to an unescaped delimiter. `equals` says whether
    /// an unescaped `=` ends it. Returns the raw text (escapes kept), whether
    /// it holds a backslash, and what stopped it (not consumed).
    fn token(&mut self, equals: bool) -> (&'a str, bool, Stop) {
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                None | Some(b'\n') => {
                    return (&self.text[start..self.pos], escaped, Stop::EndOfLine);
                }
                Some(b'\r') if self.at_line_end() => {
                    return (&self.text[start..self.pos], escaped, Stop::EndOfLine);
                }
                Some(b'\\') if self.pos + 1 < self.bytes.len() => {
                    escaped = true;
                    // The escaped character may be multi-byte: step over it whole.
                    let next = self.text[self.pos + 1..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                    self.pos += 1 + next;
                }
                Some(b',') => return (&self.text[start..self.pos], escaped, Stop::Comma),
                Some(b' ') => return (&self.text[start..self.pos], escaped, Stop::Space),
                Some(b'=') if equals => {
                    return (&self.text[start..self.pos], escaped, Stop::Equals);
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// One line (or a blank or comment line), with its trailing newline.
    fn line(&mut self) -> LineResult<()> {
        self.skip_blanks();
        if self.at_line_end() {
            self.finish_line();
            return Ok(());
        }
        if self.peek() == Some(b'#') {
            self.pos = match self.bytes[self.pos..].iter().position(|&b| b == b'\n') {
                Some(n) => self.pos + n + 1,
                None => self.bytes.len(),
            };
            return Ok(());
        }

        let start = self.pos;
        let (measurement, escaped, mut stop) = self.token(false);
        if measurement.is_empty() {
            return Err((start, Problem::MissingMeasurement));
        }
        let measurement = if escaped {
            Cow::Owned(unescape(measurement, b", "))
        } else {
            Cow::Borrowed(measurement)
        };

        self.tags.clear();
        let mut has_db_tag = false;
        while stop == Stop::Comma {
            self.pos += 1;
            let key_at = self.pos;
            let (key, escaped, key_stop) = self.token(true);
            if key.is_empty() {
                return Err((key_at, Problem::EmptyTagKey));
            }
            if key_stop != Stop::Equals {
                return Err((self.pos, Problem::MissingTagValue(key.to_string())));
            }
            let key = sanitize_label_name(&maybe_unescape(key, escaped));
            self.pos += 1;
            let (value, escaped, value_stop) = self.token(false);
            if value.is_empty() {
                return Err((self.pos, Problem::EmptyTagValue(key)));
            }
            has_db_tag |= key == "db";
            self.tags.push(Label {
                name: key,
                value: maybe_unescape(value, escaped).into_owned(),
            });
            stop = value_stop;
        }
        if stop != Stop::Space {
            return Err((self.pos, Problem::MissingFields(measurement.into_owned())));
        }
        self.skip_blanks();
        if self.at_line_end() {
            return Err((self.pos, Problem::MissingFields(measurement.into_owned())));
        }
        if !has_db_tag && !self.options.db.is_empty() {
            self.tags.push(Label::new("db", self.options.db.as_str()));
        }

        // Fields are read first and their series built once the timestamp
        // (which follows them) is known.
        self.fields.clear();
        loop {
            let key_at = self.pos;
            let (key, escaped, key_stop) = self.token(true);
            if key.is_empty() {
                return Err((key_at, Problem::EmptyFieldKey));
            }
            if key_stop != Stop::Equals {
                return Err((self.pos, Problem::MissingFieldValue(key.to_string())));
            }
            self.pos += 1;
            let value_at = self.pos;
            if self.peek() == Some(b'"') {
                self.skip_string(key)?;
                self.batch.strings_skipped += 1;
            } else {
                let raw = self.value_token();
                let value = field_value(raw).ok_or_else(|| {
                    (
                        value_at,
                        Problem::InvalidFieldValue {
                            field: maybe_unescape(key, escaped).into_owned(),
                            found: excerpt(raw),
                        },
                    )
                })?;
                self.fields.push((key, escaped, value));
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                _ => break,
            }
        }

        let timestamp = self.timestamp()?;
        self.finish_line();

        let rows = self.fields.len();
        self.batch.parsed.rows += rows as u64;
        let mut prefix = String::with_capacity(measurement.len() + 1);
        push_name_chars(&mut prefix, &measurement, true);
        prefix.push('_');
        for i in 0..rows {
            let (field, escaped, value) = self.fields[i];
            let mut name = String::with_capacity(prefix.len() + field.len());
            name.push_str(&prefix);
            push_name_chars(&mut name, &maybe_unescape(field, escaped), true);
            let mut labels = Vec::with_capacity(self.tags.len() + 1);
            labels.push(Label::new(METRIC_NAME_LABEL, name));
            if i + 1 == rows {
                labels.append(&mut self.tags);
            } else {
                labels.extend_from_slice(&self.tags);
            }
            self.batch.parsed.series.push(SeriesSamples {
                labels,
                samples: vec![Sample::new(timestamp, value)],
            });
        }
        Ok(())
    }

    /// Skips a quoted string value; it may span lines.
    fn skip_string(&mut self, field: &str) -> LineResult<()> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                None => return Err((start, Problem::UnterminatedString(field.to_string()))),
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// A non-string field value: up to a comma, a blank or the line end.
    fn value_token(&mut self) -> &'a str {
        let start = self.pos;
        loop {
            match self.peek() {
                None | Some(b',' | b' ' | b'\t' | b'\n') => break,
                Some(b'\r') if self.at_line_end() => break,
                Some(_) => self.pos += 1,
            }
        }
        &self.text[start..self.pos]
    }

    /// The optional timestamp and the blanks around it, up to the line end.
    fn timestamp(&mut self) -> LineResult<i64> {
        if !matches!(self.peek(), Some(b' ' | b'\t')) && !self.at_line_end() {
            let at = self.pos;
            let rest = self.value_token();
            return Err((at, Problem::TrailingData(excerpt(rest))));
        }
        self.skip_blanks();
        if self.at_line_end() {
            return Ok(self.options.default_timestamp_ms);
        }
        let at = self.pos;
        let raw = self.value_token();
        let ts: i64 = raw
            .parse()
            .map_err(|_| (at, Problem::InvalidTimestamp(excerpt(raw))))?;
        let ms = self
            .options
            .precision
            .to_millis(ts)
            .ok_or((at, Problem::TimestampOutOfRange(ts)))?;
        self.skip_blanks();
        if !self.at_line_end() {
            let at = self.pos;
            let rest = self.value_token();
            return Err((at, Problem::TrailingData(excerpt(rest))));
        }
        Ok(ms)
    }
}

/// A numeric or boolean field value; `None` for anything else.
fn field_value(raw: &str) -> Option<f64> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(0.0),
        _ => {}
    }
    if let Some(int) = raw.strip_suffix('i') {
        return int.parse::<i64>().ok().map(|v| v as f64);
    }
    if let Some(uint) = raw.strip_suffix('u') {
        return uint.parse::<u64>().ok().map(|v| v as f64);
    }
    // Rust's float grammar also takes "inf" and "nan", which the protocol
    // does not: allow only digits, signs, dots and exponents.
    if raw.is_empty()
        || !raw
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    raw.parse().ok()
}

fn maybe_unescape(raw: &str, escaped: bool) -> Cow<'_, str> {
    if escaped {
        Cow::Owned(unescape(raw, b", ="))
    } else {
        Cow::Borrowed(raw)
    }
}

/// Drops the backslash before each of `specials`; other backslashes stay.
fn unescape(raw: &str, specials: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match rest.as_bytes().get(i + 1) {
            Some(b) if specials.contains(b) => {
                out.push(*b as char);
                rest = &rest[i + 2..];
            }
            _ => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Appends `raw` with every character a name cannot hold as `_` (`colons`:
/// whether `:` is allowed, as in metric names), and a `_` first if the name
/// would start with a digit.
fn push_name_chars(out: &mut String, raw: &str, colons: bool) {
    if out.is_empty() && raw.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':') {
            out.push(c);
        } else {
            out.push('_');
        }
    }
}

/// A tag key as a valid label name: see [`push_name_chars`].
fn sanitize_label_name(raw: &str) -> String {
    let valid = raw
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()));
    if valid {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len() + 1);
    push_name_chars(&mut out, raw, false);
    out
}

/// The offending text, shortened for an error message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn options() -> Options {
        Options {
            precision: Precision::Nanoseconds,
            default_timestamp_ms: NOW,
            db: String::new(),
        }
    }

    fn ok_with(body: &str, options: &Options) -> Batch {
        parse(body.as_bytes(), options).unwrap_or_else(|f| panic!("{body:?} failed: {}", f.error))
    }

    /// Series as `name{a="1"} value ts` strings, labels sorted.
    fn render(parsed: &Parsed) -> Vec<String> {
        parsed
            .series
            .iter()
            .map(|s| {
                let mut labels = s.labels.clone();
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                let sample = s.samples[0];
                format!(
                    "{} {} {}",
                    crate::ingest::format_series(&labels),
                    sample.value,
                    sample.timestamp
                )
            })
            .collect()
    }

    fn check(body: &str, want: &[&str]) {
        let batch = ok_with(body, &options());
        assert_eq!(render(&batch.parsed), want, "{body:?}");
        assert_eq!(batch.parsed.rows, want.len() as u64, "{body:?}");
    }

    #[test]
    fn lines_become_one_series_per_field() {
        check(
            "cpu,host=a,region=eu usage_user=1.5,cores=8i,big=18446744073709551615u 1700000000123456789\n",
            &[
                r#"cpu_usage_user{host="a",region="eu"} 1.5 1700000000123"#,
                r#"cpu_cores{host="a",region="eu"} 8 1700000000123"#,
                r#"cpu_big{host="a",region="eu"} 18446744073709552000 1700000000123"#,
            ],
        );
        check("m value=1", &[r#"m_value{} 1 1700000000000"#]);
        check(
            "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE 5000000",
            &[
                "m_a{} 1 5",
                "m_b{} 1 5",
                "m_c{} 1 5",
                "m_d{} 1 5",
                "m_e{} 1 5",
                "m_f{} 0 5",
                "m_g{} 0 5",
                "m_h{} 0 5",
                "m_i{} 0 5",
                "m_j{} 0 5",
            ],
        );
        check(
            "m a=-1.5e3,b=.5,c=-0,d=+3,e=-9223372036854775808i,f=1E2 -1",
            &[
                "m_a{} -1500 -1",
                "m_b{} 0.5 -1",
                "m_c{} -0 -1",
                "m_d{} 3 -1",
                "m_e{} -9223372036854776000 -1",
                "m_f{} 100 -1",
            ],
        );
    }

    #[test]
    fn escapes_blank_lines_comments_and_crlf() {
        check(
            concat!(
                "# a comment\r\n",
                "\r\n",
                "   \n",
                "  # indented comment\n",
                r#"my\ meas\,ure,tag\ key=a\=b\,c\ d,k=back\slash f\=x=1 1000000"#,
                "\r\n",
                "m,t=1 v=2\r\n",
                "m v=3",
            ),
            &[
                r#"my_meas_ure_f_x{k="back\\slash",tag_key="a=b,c d"} 1 1"#,
                r#"m_v{t="1"} 2 1700000000000"#,
                r#"m_v{} 3 1700000000000"#,
            ],
        );
    }

    #[test]
    fn names_are_sanitized() {
        check(
            "cpu.load,host-name=a,9x=b,é=c disk-io=1,3d=2,a:b=3 1000000",
            &[
                r#"cpu_load_disk_io{_="c",_9x="b",host_name="a"} 1 1"#,
                r#"cpu_load_3d{_="c",_9x="b",host_name="a"} 2 1"#,
                r#"cpu_load_a:b{_="c",_9x="b",host_name="a"} 3 1"#,
            ],
        );
        check("9lives x=1 0", &["_9lives_x{} 1 0"]);
    }

    #[test]
    fn strings_are_skipped_and_counted() {
        let body = concat!(
            "m s=\"a \\\"quoted\\\" value, with = signs\",v=1,t=\"multi\nline\",e=\"\" 2000000\n",
            "m only=\"string\"\n",
            "m back=\"\\\\\"\n",
        );
        let batch = ok_with(body, &options());
        assert_eq!(render(&batch.parsed), ["m_v{} 1 2"]);
        assert_eq!(batch.strings_skipped, 5);
        assert_eq!(batch.parsed.rows, 1);
    }

    #[test]
    fn db_label_unless_the_line_has_one() {
        let options = Options {
            db: "telegraf".into(),
            ..options()
        };
        let batch = ok_with("m,host=a v=1 0\nm,db=mine v=2 0\n", &options);
        assert_eq!(
            render(&batch.parsed),
            [
                r#"m_v{db="telegraf",host="a"} 1 0"#,
                r#"m_v{db="mine"} 2 0"#
            ]
        );
    }

    #[test]
    fn precisions_convert_to_milliseconds() {
        let check = |precision: &str, ts: &str, want: i64| {
            let options = Options {
                precision: Precision::from_param(precision).expect(precision),
                ..options()
            };
            let batch = ok_with(&format!("m v=1 {ts}"), &options);
            assert_eq!(
                batch.parsed.series[0].samples[0].timestamp, want,
                "{precision}"
            );
        };
        check("n", "1700000000123999999", 1_700_000_000_123);
        check("ns", "-1", -1);
        check("u", "1700000000123999", 1_700_000_000_123);
        check("us", "1700000000123999", 1_700_000_000_123);
        check("ms", "1700000000123", 1_700_000_000_123);
        check("s", "1700000000", 1_700_000_000_000);
        check("m", "2", 120_000);
        check("h", "1", 3_600_000);
        assert_eq!(Precision::from_param("d"), None);
    }

    #[test]
    fn bad_lines_name_line_column_and_problem() {
        let check = |bad: &str, want: &str, reason: &str| {
            // The bad line is line 3, after a good line and a blank line.
            let body = format!("m v=1\n\n{bad}\nm v=2\n");
            let failure = parse(body.as_bytes(), &options()).expect_err(bad);
            assert_eq!(failure.error.to_string(), want, "{bad}");
            assert_eq!(failure.error.problem.reason(), reason, "{bad}");
        };
        check(
            "m",
            r#"line 3 column 2: missing fields after measurement "m""#,
            "missing_fields",
        );
        check(
            "m ",
            r#"line 3 column 3: missing fields after measurement "m""#,
            "missing_fields",
        );
        check(
            "m,t=a",
            r#"line 3 column 6: missing fields after measurement "m""#,
            "missing_fields",
        );
        check(
            ",t=a v=1",
            "line 3 column 1: missing measurement",
            "missing_measurement",
        );
        check(
            "m,t v=1",
            r#"line 3 column 4: tag "t" has no '=value'"#,
            "invalid_tag",
        );
        check("m,=a v=1", "line 3 column 3: empty tag key", "invalid_tag");
        check(
            "m,t= v=1",
            r#"line 3 column 5: empty value of tag "t""#,
            "invalid_tag",
        );
        check("m =1", "line 3 column 3: empty field key", "invalid_field");
        check(
            "m v",
            r#"line 3 column 4: field "v" has no '=value'"#,
            "invalid_field",
        );
        check(
            "m v=1,",
            "line 3 column 7: empty field key",
            "invalid_field",
        );
        check(
            "m v=",
            r#"line 3 column 5: invalid value of field "v": """#,
            "invalid_value",
        );
        check(
            "m v=abc",
            r#"line 3 column 5: invalid value of field "v": "abc""#,
            "invalid_value",
        );
        check(
            "m v=1x",
            r#"line 3 column 5: invalid value of field "v": "1x""#,
            "invalid_value",
        );
        check(
            "m v=inf",
            r#"line 3 column 5: invalid value of field "v": "inf""#,
            "invalid_value",
        );
        check(
            "m v=NaN",
            r#"line 3 column 5: invalid value of field "v": "NaN""#,
            "invalid_value",
        );
        check(
            "m v=1.5i",
            r#"line 3 column 5: invalid value of field "v": "1.5i""#,
            "invalid_value",
        );
        check(
            "m v=-1u",
            r#"line 3 column 5: invalid value of field "v": "-1u""#,
            "invalid_value",
        );
        check(
            "m v=yes",
            r#"line 3 column 5: invalid value of field "v": "yes""#,
            "invalid_value",
        );
        check(
            "m v=1 12a",
            r#"line 3 column 7: invalid timestamp "12a": want an integer"#,
            "invalid_timestamp",
        );
        check(
            "m v=1 1.5",
            r#"line 3 column 7: invalid timestamp "1.5": want an integer"#,
            "invalid_timestamp",
        );
        check(
            "m v=1 1 2",
            r#"line 3 column 9: unexpected "2" after the timestamp"#,
            "trailing_data",
        );
        check(
            r#"m v="x"y"#,
            r#"line 3 column 8: unexpected "y" after the timestamp"#,
            "trailing_data",
        );
        check(
            "m v=\"open",
            r#"line 3 column 5: unterminated string value of field "v""#,
            "invalid_value",
        );
        let seconds = Options {
            precision: Precision::Hours,
            ..options()
        };
        let failure = parse(b"m v=1 9223372036854775807", &seconds).expect_err("overflow");
        assert_eq!(
            failure.error.to_string(),
            "line 1 column 7: timestamp 9223372036854775807 is out of range for its precision"
        );
    }

    #[test]
    fn failure_counts_every_row_and_stores_nothing() {
        let body = "m a=1,b=2\nm a=oops,b=1\nm x=1,y=2,z=3 0\nm s=\"str\"\n";
        let failure = parse(body.as_bytes(), &options()).expect_err("bad");
        assert_eq!(failure.error.line, 2);
        assert_eq!(failure.rows, 2 + 1 + 3 + 1);
        let failure = parse(b"m v=1\n\xff\n", &options()).expect_err("bad utf-8");
        assert_eq!(failure.error.to_string(), "line 2 column 1: invalid UTF-8");
    }

    #[test]
    fn empty_body_is_valid() {
        assert_eq!(ok_with("", &options()), Batch::default());
        assert_eq!(ok_with("\n\r\n# c\n", &options()), Batch::default());
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let body = format!("m v={}", "x".repeat(100));
        let msg = parse(body.as_bytes(), &options())
            .expect_err("bad")
            .error
            .to_string();
        assert!(msg.ends_with("...\"") && msg.len() < 100, "{msg}");
    }
}
