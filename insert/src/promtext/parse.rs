//! Parser of the Prometheus text exposition format (0.0.4) and of OpenMetrics
//! text (1.0), one sample per line:
//!
//! ```text
//! # HELP http_requests_total Requests served.
//! # TYPE http_requests_total counter
//! http_requests_total{method="post",code="200"} 1027 1395066363000
//! http_request_duration_seconds_bucket{le="+Inf"} 144320 # {trace_id="a"} 0.5 1395066363.1
//! # EOF
//! ```
//!
//! - Name: `[a-zA-Z_:][a-zA-Z0-9_:]*`; labels `{name="value",...}` with an
//!   optional trailing comma; blanks are allowed around names, `=`, `,` and
//!   the braces. In values `\\`, `\"` and `\n` are escaped; any other escape
//!   is an error. A label name may appear once.
//! - Value: a float, `NaN`, `+Inf`, `-Inf` (any case, as Go reads floats).
//! - Timestamp (optional): integer milliseconds in the text format, seconds
//!   (fractions allowed, see [`seconds_to_millis`]) in OpenMetrics.
//!   Absent: the request's default timestamp.
//! - An exemplar (` # {labels} value [timestamp]`) after the sample is ignored.
//! - `# HELP`, `# TYPE`, `# UNIT` and other `#` lines are accepted and not
//!   stored; histograms and summaries are their series (`_bucket`, `_sum`,
//!   `_count`, quantiles), `_created` series are stored as written.
//! - OpenMetrics ends at `# EOF`: anything but blank lines after it is an
//!   error. A missing `# EOF` is tolerated.
//! - Blank lines are skipped; `\r\n` line ends are fine.
//!
//! The whole body is checked before anything is returned: one bad line
//! rejects the request.

use strata_storage::{Label, METRIC_NAME_LABEL, Sample, SeriesSamples};

use crate::ingest::Parsed;
use crate::textparse::LineCursor;

/// Which of the two text formats a body is in; they differ in the unit of
/// timestamps and in `# EOF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: timestamps in milliseconds.
    Text,
    /// OpenMetrics: timestamps in seconds, `# EOF` ends the body.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the content type says so or the body's last
    /// non-blank line is `# EOF`; the text format otherwise.
    pub fn detect(content_type: Option<&str>, body: &[u8]) -> Format {
        let declared = content_type.is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/openmetrics-text")
        });
        let end = body
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |n| n + 1);
        let trimmed = &body[..end];
        let last_line = match trimmed.iter().rposition(|&b| b == b'\n') {
            Some(n) => &trimmed[n + 1..],
            None => trimmed,
        };
        if declared || last_line == b"# EOF" {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// The first bad line of a body, plus how many samples the whole body held
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
    #[error("expected a metric name, found {0:?}")]
    MissingName(String),
    #[error("expected a label name, found {0:?}")]
    MissingLabelName(String),
    #[error("expected {expected} after label {label:?}, found {found:?}")]
    Unexpected {
        expected: &'static str,
        label: String,
        found: String,
    },
    #[error("unterminated value of label {0:?}")]
    UnterminatedLabelValue(String),
    #[error("invalid escape {escape:?} in value of label {label:?}: want \\\\, \\\" or \\n")]
    InvalidEscape { label: String, escape: String },
    #[error("duplicate label name {0:?}")]
    DuplicateLabel(String),
    #[error("missing value")]
    MissingValue,
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    #[error("invalid timestamp {found:?}: want {want}")]
    InvalidTimestamp { found: String, want: &'static str },
    #[error("unexpected {0:?} after the sample")]
    TrailingData(String),
    #[error("content after \"# EOF\"")]
    AfterEof,
}

impl Problem {
    /// The `reason` label of the rejected-rows counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidUtf8 => "invalid_utf8",
            Problem::MissingName(_) => "invalid_metric_name",
            Problem::MissingLabelName(_)
            | Problem::Unexpected { .. }
            | Problem::UnterminatedLabelValue(_)
            | Problem::InvalidEscape { .. } => "invalid_labels",
            Problem::DuplicateLabel(_) => "duplicate_label_name",
            Problem::MissingValue | Problem::InvalidValue(_) => "invalid_value",
            Problem::InvalidTimestamp { .. } => "invalid_timestamp",
            Problem::TrailingData(_) | Problem::AfterEof => "trailing_data",
        }
    }
}

/// Parses a whole (decompressed) body; samples without a timestamp get
/// `default_timestamp_ms`.
pub fn parse(
    body: &[u8],
    default_timestamp_ms: i64,
    format: Format,
) -> Result<Parsed, ParseFailure> {
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            return Err(ParseFailure {
                error: locate(body, e.valid_up_to(), Problem::InvalidUtf8),
                rows: count_sample_lines(body),
            });
        }
    };
    let mut parser = Parser {
        text,
        bytes: body,
        pos: 0,
        default_timestamp_ms,
        format,
        eof_at: None,
    };
    let mut parsed = Parsed::default();
    let mut first_error: Option<(usize, Problem)> = None;
    while parser.pos < body.len() {
        let line_start = parser.pos;
        match parser.line() {
            Ok(None) => {}
            Ok(Some(series)) => {
                parsed.rows += 1;
                if first_error.is_none() {
                    parsed.series.push(series);
                }
            }
            Err((at, problem)) => {
                if problem != Problem::AfterEof {
                    parsed.rows += 1;
                }
                if first_error.is_none() {
                    first_error = Some((at, problem));
                    parsed.series = Vec::new();
                }
                // Resume at the next line, only to count the rejected rows.
                parser.pos = match body[line_start..].iter().position(|&b| b == b'\n') {
                    Some(n) => line_start + n + 1,
                    None => body.len(),
                };
            }
        }
    }
    match first_error {
        None => Ok(parsed),
        Some((at, problem)) => Err(ParseFailure {
            error: locate(body, at, problem),
            rows: parsed.rows,
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
        column: before.len() - line_start + 1,
        problem,
    }
}

fn count_sample_lines(body: &[u8]) -> u64 {
    body.split(|&b| b == b'\n')
        .filter(|l| {
            l.iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b != b'#')
        })
        .count() as u64
}

type LineResult<T> = Result<T, (usize, Problem)>;

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    default_timestamp_ms: i64,
    format: Format,
    /// Where `# EOF` was seen (OpenMetrics only).
    eof_at: Option<usize>,
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
    fn skip_rest_of_line(&mut self) -> &'a str {
        let start = self.pos;
        self.pos = match self.bytes[self.pos..].iter().position(|&b| b == b'\n') {
            Some(n) => self.pos + n + 1,
            None => self.bytes.len(),
        };
        &self.text[start..self.pos]
    }

    /// The text at the current position up to a blank or the line end, for
    /// messages.
    fn found(&self) -> String {
        let rest = &self.text[self.pos..];
        let end = rest.find([' ', '\t', '\r', '\n']).unwrap_or(rest.len());
        excerpt(&rest[..end])
    }

    /// A token up to a blank or the line end.
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        loop {
            match self.peek() {
                None | Some(b' ' | b'\t' | b'\n') => break,
                Some(b'\r') if self.at_line_end() => break,
                Some(_) => self.pos += 1,
            }
        }
        &self.text[start..self.pos]
    }

    /// A name of `[a-zA-Z_:][a-zA-Z0-9_:]*` (`colons`) or
    /// `[a-zA-Z_][a-zA-Z0-9_]*`; empty when none starts here.
    fn name(&mut self, colons: bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || b == b'_'
                || (colons && b == b':')
                || (self.pos > start && b.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// One line: `None` for blank and `#` lines.
    fn line(&mut self) -> LineResult<Option<SeriesSamples>> {
        self.skip_blanks();
        if self.at_line_end() {
            self.finish_line();
            return Ok(None);
        }
        if self.eof_at.is_some() {
            return Err((self.pos, Problem::AfterEof));
        }
        if self.peek() == Some(b'#') {
            let start = self.pos;
            let comment = self.skip_rest_of_line().trim_end();
            if self.format == Format::OpenMetrics && comment == "# EOF" {
                self.eof_at = Some(start);
            }
            return Ok(None);
        }

        let name_at = self.pos;
        let name = self.name(true);
        if name.is_empty() {
            return Err((name_at, Problem::MissingName(self.found())));
        }
        let mut labels = vec![Label::new(METRIC_NAME_LABEL, name)];
        let after_name = self.pos;
        self.skip_blanks();
        if self.peek() == Some(b'{') {
            self.pos += 1;
            self.labels(&mut labels)?;
        } else {
            self.pos = after_name;
        }

        if !matches!(self.peek(), Some(b' ' | b'\t')) {
            if self.at_line_end() {
                return Err((self.pos, Problem::MissingValue));
            }
            return Err((self.pos, Problem::InvalidValue(self.found())));
        }
        self.skip_blanks();
        if self.at_line_end() {
            return Err((self.pos, Problem::MissingValue));
        }
        let value_at = self.pos;
        let raw = self.word();
        let value: f64 = raw
            .parse()
            .map_err(|_| (value_at, Problem::InvalidValue(excerpt(raw))))?;

        self.skip_blanks();
        let mut timestamp = self.default_timestamp_ms;
        if !self.at_line_end() && self.peek() != Some(b'#') {
            let ts_at = self.pos;
            let raw = self.word();
            timestamp = self.timestamp(raw).ok_or_else(|| {
                (
                    ts_at,
                    Problem::InvalidTimestamp {
                        found: excerpt(raw),
                        want: match self.format {
                            Format::Text => "integer milliseconds",
                            Format::OpenMetrics => "seconds",
                        },
                    },
                )
            })?;
            self.skip_blanks();
        }
        if self.peek() == Some(b'#') {
            // An exemplar: not stored.
            self.skip_rest_of_line();
        } else if self.at_line_end() {
            self.finish_line();
        } else {
            return Err((self.pos, Problem::TrailingData(self.found())));
        }
        Ok(Some(SeriesSamples {
            labels,
            samples: vec![Sample::new(timestamp, value)],
        }))
    }

    /// Labels after `{`, through `}`.
    fn labels(&mut self, labels: &mut Vec<Label>) -> LineResult<()> {
        loop {
            self.skip_blanks();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            let name_at = self.pos;
            let name = self.name(false);
            if name.is_empty() {
                return Err((name_at, Problem::MissingLabelName(self.found())));
            }
            self.skip_blanks();
            self.expect(b'=', "'='", name)?;
            self.skip_blanks();
            self.expect(b'"', "'\"'", name)?;
            let value = self.label_value(name)?;
            if labels.iter().any(|l| l.name == name) {
                return Err((name_at, Problem::DuplicateLabel(name.to_string())));
            }
            labels.push(Label {
                name: name.to_string(),
                value,
            });
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => {
                    return Err((
                        self.pos,
                        Problem::Unexpected {
                            expected: "',' or '}'",
                            label: name.to_string(),
                            found: self.found(),
                        },
                    ));
                }
            }
        }
    }

    fn expect(&mut self, byte: u8, expected: &'static str, label: &str) -> LineResult<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            return Ok(());
        }
        Err((
            self.pos,
            Problem::Unexpected {
                expected,
                label: label.to_string(),
                found: self.found(),
            },
        ))
    }

    /// A label value after its opening quote, through the closing one.
    fn label_value(&mut self, label: &str) -> LineResult<String> {
        let start = self.pos;
        // Fast path: no escapes.
        loop {
            match self.peek() {
                Some(b'"') => {
                    let value = self.text[start..self.pos].to_string();
                    self.pos += 1;
                    return Ok(value);
                }
                Some(b'\\') => break,
                Some(b'\n') | None => {
                    return Err((
                        start - 1,
                        Problem::UnterminatedLabelValue(label.to_string()),
                    ));
                }
                Some(_) => self.pos += 1,
            }
        }
        let mut value = self.text[start..self.pos].to_string();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(value);
                }
                Some(b'\\') => {
                    let escaped = match self.bytes.get(self.pos + 1) {
                        Some(b'\\') => '\\',
                        Some(b'"') => '"',
                        Some(b'n') => '\n',
                        _ => {
                            let rest = &self.text[self.pos..];
                            let len = rest.chars().take(2).map(char::len_utf8).sum::<usize>();
                            return Err((
                                self.pos,
                                Problem::InvalidEscape {
                                    label: label.to_string(),
                                    escape: rest[..len].to_string(),
                                },
                            ));
                        }
                    };
                    value.push(escaped);
                    self.pos += 2;
                }
                Some(b'\n') | None => {
                    return Err((
                        start - 1,
                        Problem::UnterminatedLabelValue(label.to_string()),
                    ));
                }
                Some(_) => {
                    // Copy up to the next special byte at once.
                    let from = self.pos;
                    while !matches!(self.peek(), None | Some(b'"' | b'\\' | b'\n')) {
                        self.pos += 1;
                    }
                    value.push_str(&self.text[from..self.pos]);
                }
            }
        }
    }

    fn timestamp(&self, raw: &str) -> Option<i64> {
        match self.format {
            Format::Text => raw.parse().ok(),
            Format::OpenMetrics => seconds_to_millis(raw),
        }
    }
}

/// `1520879607.789` -> 1520879607789, exactly for plain decimals (a float
/// multiplication would be off by one for some), rounding down to the
/// millisecond. Exponent forms (`1.5e9`) go through a float and round to the
/// nearest millisecond, which absorbs the float's own error.
pub fn seconds_to_millis(raw: &str) -> Option<i64> {
    let (negative, digits) = match raw.as_bytes().first() {
        Some(b'-') => (true, &raw[1..]),
        Some(b'+') => (false, &raw[1..]),
        _ => (false, raw),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = (!int.is_empty() || !frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        let seconds: f64 = raw.parse().ok()?;
        let ms = (seconds * 1000.0).round();
        if !ms.is_finite() || ms.abs() >= 9.2e18 {
            return None;
        }
        return Some(ms as i64);
    }
    let whole: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut millis: i64 = 0;
    for b in frac.bytes().chain(std::iter::repeat(b'0')).take(3) {
        millis = millis * 10 + i64::from(b - b'0');
    }
    let below_ms = frac.len() > 3 && frac.as_bytes()[3..].iter().any(|&b| b != b'0');
    let magnitude = whole.checked_mul(1000)?.checked_add(millis)?;
    if negative {
        // Rounding down: -1.0005 s is -1001 ms.
        magnitude.checked_neg()?.checked_sub(i64::from(below_ms))
    } else {
        Some(magnitude)
    }
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

    fn render(parsed: &Parsed) -> Vec<String> {
        parsed
            .series
            .iter()
            .map(|s| {
                let sample = s.samples[0];
                format!(
                    "{} {} {}",
                    crate::ingest::format_series(&s.labels),
                    sample.value,
                    sample.timestamp
                )
            })
            .collect()
    }

    fn check(body: &str, format: Format, want: &[&str]) {
        let parsed = parse(body.as_bytes(), NOW, format)
            .unwrap_or_else(|f| panic!("{body:?} failed: {}", f.error));
        assert_eq!(render(&parsed), want, "{body:?}");
        assert_eq!(parsed.rows, want.len() as u64, "{body:?}");
    }

    #[test]
    fn text_format_samples() {
        check(
            concat!(
                "# HELP http_requests_total The total number of HTTP requests.\n",
                "# TYPE http_requests_total counter\n",
                "http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n",
                "http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\r\n",
                "\n",
                "# Escaping in label values:\n",
                "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n",
                "metric_without_timestamp_and_labels 12.47\n",
                "something_weird{problem=\"division by zero\"} +Inf -3982045\n",
                "  spaced { a = \"1\" , b=\"2\", } -Inf\n",
                "nan NaN\n",
                "colon:name{} 1e-3",
            ),
            Format::Text,
            &[
                r#"http_requests_total{method="post",code="200"} 1027 1395066363000"#,
                r#"http_requests_total{method="post",code="400"} 3 1395066363000"#,
                r#"msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1458255915 1700000000000"#,
                "metric_without_timestamp_and_labels{} 12.47 1700000000000",
                r#"something_weird{problem="division by zero"} inf -3982045"#,
                r#"spaced{a="1",b="2"} -inf 1700000000000"#,
                "nan{} NaN 1700000000000",
                "colon:name{} 0.001 1700000000000",
            ],
        );
    }

    #[test]
    fn histograms_and_summaries_are_their_series() {
        check(
            concat!(
                "# TYPE rpc_duration_seconds summary\n",
                "rpc_duration_seconds{quantile=\"0.5\"} 4773\n",
                "rpc_duration_seconds_sum 1.7560473e+07\n",
                "rpc_duration_seconds_count 2693\n",
                "# TYPE http_request_duration_seconds histogram\n",
                "http_request_duration_seconds_bucket{le=\"0.05\"} 24054\n",
                "http_request_duration_seconds_bucket{le=\"+Inf\"} 144320\n",
            ),
            Format::Text,
            &[
                r#"rpc_duration_seconds{quantile="0.5"} 4773 1700000000000"#,
                "rpc_duration_seconds_sum{} 17560473 1700000000000",
                "rpc_duration_seconds_count{} 2693 1700000000000",
                r#"http_request_duration_seconds_bucket{le="0.05"} 24054 1700000000000"#,
                r#"http_request_duration_seconds_bucket{le="+Inf"} 144320 1700000000000"#,
            ],
        );
    }

    #[test]
    fn openmetrics_seconds_exemplars_and_eof() {
        check(
            concat!(
                "# TYPE foo histogram\n",
                "# UNIT foo seconds\n",
                "foo_bucket{le=\"0.01\"} 0\n",
                "foo_bucket{le=\"0.1\"} 8 # {} 0.054\n",
                "foo_bucket{le=\"1\"} 11 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879607.789\n",
                "foo_bucket{le=\"+Inf\"} 17 1520879607.789 # {trace_id=\"x\"} 9.8\n",
                "foo_count 17 1520879607\n",
                "foo_sum 324789.3 1.5208796077e9\n",
                "foo_created 1520430000.123\n",
                "# EOF\n",
            ),
            Format::OpenMetrics,
            &[
                r#"foo_bucket{le="0.01"} 0 1700000000000"#,
                r#"foo_bucket{le="0.1"} 8 1700000000000"#,
                r#"foo_bucket{le="1"} 11 1700000000000"#,
                r#"foo_bucket{le="+Inf"} 17 1520879607789"#,
                "foo_count{} 17 1520879607000",
                "foo_sum{} 324789.3 1520879607700",
                "foo_created{} 1520430000.123 1700000000000",
            ],
        );
    }

    #[test]
    fn format_is_detected() {
        let check = |content_type: Option<&str>, body: &str, want: Format| {
            assert_eq!(
                Format::detect(content_type, body.as_bytes()),
                want,
                "{content_type:?} {body:?}"
            );
        };
        check(None, "a 1\n", Format::Text);
        check(
            Some("text/plain; version=0.0.4"),
            "a 1\n# EOF x\n",
            Format::Text,
        );
        check(None, "a 1\n# EOF\n\n", Format::OpenMetrics);
        check(None, "# EOF", Format::OpenMetrics);
        check(None, "a 1\r\n# EOF\r\n", Format::OpenMetrics);
        check(
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            "a 1\n",
            Format::OpenMetrics,
        );
        check(
            Some("Application/OpenMetrics-Text"),
            "",
            Format::OpenMetrics,
        );
    }

    #[test]
    fn seconds_convert_to_milliseconds_rounding_down() {
        let check = |raw: &str, want: Option<i64>| {
            assert_eq!(seconds_to_millis(raw), want, "{raw}");
        };
        check("1520879607.789", Some(1_520_879_607_789));
        check("1520879607.7899", Some(1_520_879_607_789));
        check("1520879607", Some(1_520_879_607_000));
        check("0.001", Some(1));
        check(".5", Some(500));
        check("5.", Some(5000));
        check("-1.5", Some(-1500));
        check("-1.0005", Some(-1001));
        check("-1.0000", Some(-1000));
        check("1.5e3", Some(1_500_000));
        check("", None);
        check(".", None);
        check("abc", None);
        check("NaN", None);
        check("9223372036854775807", None);
    }

    #[test]
    fn bad_lines_name_line_column_and_problem() {
        let check = |bad: &str, want: &str, reason: &str| {
            // The bad line is line 3, after a good line and a comment.
            let body = format!("a 1\n# c\n{bad}\nb 2\n");
            let failure = parse(body.as_bytes(), NOW, Format::Text).expect_err(bad);
            assert_eq!(failure.error.to_string(), want, "{bad}");
            assert_eq!(failure.error.problem.reason(), reason, "{bad}");
        };
        check(
            "1abc 1",
            r#"line 3 column 1: expected a metric name, found "1abc""#,
            "invalid_metric_name",
        );
        check(
            "{a=\"b\"} 1",
            r#"line 3 column 1: expected a metric name, found "{a=\"b\"}""#,
            "invalid_metric_name",
        );
        check("m", "line 3 column 2: missing value", "invalid_value");
        check("m ", "line 3 column 3: missing value", "invalid_value");
        check("m{} ", "line 3 column 5: missing value", "invalid_value");
        check(
            "m-x 1",
            r#"line 3 column 2: invalid value "-x""#,
            "invalid_value",
        );
        check(
            "m abc",
            r#"line 3 column 3: invalid value "abc""#,
            "invalid_value",
        );
        check(
            "m 1 2 3",
            r#"line 3 column 7: unexpected "3" after the sample"#,
            "trailing_data",
        );
        check(
            "m 1 1.5",
            r#"line 3 column 5: invalid timestamp "1.5": want integer milliseconds"#,
            "invalid_timestamp",
        );
        check(
            "m{a=\"1\",a=\"2\"} 1",
            r#"line 3 column 9: duplicate label name "a""#,
            "duplicate_label_name",
        );
        check(
            "m{__name__=\"x\"} 1",
            r#"line 3 column 3: duplicate label name "__name__""#,
            "duplicate_label_name",
        );
        check(
            "m{a=\"1\" b=\"2\"} 1",
            r#"line 3 column 9: expected ',' or '}' after label "a", found "b=\"2\"}""#,
            "invalid_labels",
        );
        check(
            "m{a} 1",
            r#"line 3 column 4: expected '=' after label "a", found "}""#,
            "invalid_labels",
        );
        check(
            "m{a=1} 1",
            r#"line 3 column 5: expected '"' after label "a", found "1}""#,
            "invalid_labels",
        );
        check(
            "m{a=\"1} 1",
            r#"line 3 column 5: unterminated value of label "a""#,
            "invalid_labels",
        );
        check(
            "m{a=\"x\\t\"} 1",
            r#"line 3 column 7: invalid escape "\\t" in value of label "a": want \\, \" or \n"#,
            "invalid_labels",
        );
        check(
            "m{9=\"1\"} 1",
            r#"line 3 column 3: expected a label name, found "9=\"1\"}""#,
            "invalid_labels",
        );
        check(
            "m{a=\"1\"",
            r#"line 3 column 8: expected ',' or '}' after label "a", found """#,
            "invalid_labels",
        );
    }

    #[test]
    fn content_after_eof_is_an_error() {
        let failure = parse(b"a 1\n# EOF\nb 2\n", NOW, Format::OpenMetrics).expect_err("after eof");
        assert_eq!(
            failure.error.to_string(),
            "line 3 column 1: content after \"# EOF\""
        );
        // The text format has no # EOF: it is a comment there.
        let parsed = parse(b"a 1\n# EOF\nb 2\n", NOW, Format::Text).expect("text");
        assert_eq!(parsed.rows, 2);
        let failure = parse(b"a 1 1.5\n", NOW, Format::OpenMetrics);
        assert!(failure.is_ok(), "seconds are fine in OpenMetrics");
        let failure = parse(b"a 1 x\n", NOW, Format::OpenMetrics).expect_err("bad ts");
        assert_eq!(
            failure.error.to_string(),
            r#"line 1 column 5: invalid timestamp "x": want seconds"#
        );
    }

    #[test]
    fn failure_counts_every_sample_and_stores_nothing() {
        let body = "a 1\nb{ 2\n# comment\nc 3\nd 4 5\n";
        let failure = parse(body.as_bytes(), NOW, Format::Text).expect_err("bad");
        assert_eq!(failure.error.line, 2);
        assert_eq!(failure.rows, 4);
        let failure = parse(b"a 1\n\xff 2\n# x\n", NOW, Format::Text).expect_err("utf-8");
        assert_eq!(failure.error.to_string(), "line 2 column 1: invalid UTF-8");
        assert_eq!(failure.rows, 2);
    }

    #[test]
    fn empty_body_is_valid() {
        assert_eq!(parse(b"", NOW, Format::Text), Ok(Parsed::default()));
        assert_eq!(
            parse(b"\n# only comments\r\n# EOF\n", NOW, Format::OpenMetrics),
            Ok(Parsed::default())
        );
    }
}
