//! Request parameters of the Prometheus API, parsed as Prometheus parses
//! them, with its error messages.
//!
//! Parameters come from the URL query and, for `POST`, from an
//! `application/x-www-form-urlencoded` body; body values come first, so for
//! a parameter given in both places the body wins (Go's `FormValue`). An
//! empty value counts as absent.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use strata_storage::{Matcher, TimeRange};

use crate::selector::parse_series_selector;

/// The RFC 3339 texts Prometheus clients send for "no start" and "no end";
/// years outside 0..9999 are beyond RFC 3339, so these are matched verbatim.
const MIN_TIME_TEXT: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_TEXT: &str = "292277025-08-18T07:12:54.999999999Z";

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// Prometheus' wording: `invalid parameter "start": ...`.
    #[error("invalid parameter {name:?}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("request body must be application/x-www-form-urlencoded, got {0:?}")]
    BodyType(String),
    #[error("no match[] parameter provided")]
    MissingMatch,
}

impl ParamError {
    pub fn invalid(name: &'static str, message: impl Into<String>) -> ParamError {
        ParamError::Invalid {
            name,
            message: message.into(),
        }
    }
}

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Merges the form body (when the content type says it is one) and the URL query.
    pub fn from_request(
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Params, ParamError> {
        let mut pairs = Vec::new();
        if !body.is_empty() {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            let mime = content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if mime != "application/x-www-form-urlencoded" {
                return Err(ParamError::BodyType(content_type));
            }
            pairs.extend(
                form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        if let Some(query) = query {
            pairs.extend(
                form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        Ok(Params { pairs })
    }

    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Params {
        Params {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The first non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Time parameter `name` in ms, or `default` when absent.
    pub fn time_or(&self, name: &'static str, default: i64) -> Result<i64, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_time(v).map_err(|message| {
                ParamError::invalid(name, format!("invalid time value for '{name}': {message}"))
            }),
        }
    }

    /// Time parameter `name` in ms; absent is an error (query_range).
    pub fn time(&self, name: &'static str) -> Result<i64, ParamError> {
        parse_time(self.get(name).unwrap_or_default())
            .map_err(|message| ParamError::invalid(name, message))
    }

    /// Duration parameter `name`, if present.
    pub fn duration(&self, name: &'static str) -> Result<Option<Duration>, ParamError> {
        self.get(name)
            .map(|v| parse_duration(v).map_err(|message| ParamError::invalid(name, message)))
            .transpose()
    }

    /// A boolean parameter (`1`, `true`, `0`, `false`, ... as Go's
    /// `strconv.ParseBool` reads them): `None` when absent.
    pub fn flag(&self, name: &'static str) -> Result<Option<bool>, ParamError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Some(true)),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Some(false)),
            _ => Err(ParamError::invalid(
                name,
                format!("cannot parse {text:?} as a boolean: want 1, true, 0 or false"),
            )),
        }
    }

    /// The `limit` parameter of series, labels and queries: `None` when absent.
    pub fn limit(&self) -> Result<Option<usize>, ParamError> {
        let Some(text) = self.get("limit") else {
            return Ok(None);
        };
        let n: i64 = text.parse().map_err(|_| {
            ParamError::invalid(
                "limit",
                format!("strconv.Atoi: parsing {text:?}: invalid syntax"),
            )
        })?;
        if n <= 0 {
            return Err(ParamError::invalid("limit", "limit must be positive"));
        }
        Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
    }

    /// `start` and `end` of series and label lookups, all time by default.
    pub fn range(&self) -> Result<TimeRange, ParamError> {
        let start = self.time_or("start", TimeRange::ALL.start)?;
        let end = self.time_or("end", TimeRange::ALL.end)?;
        Ok(TimeRange::new(start, end))
    }

    /// The `match[]` selectors, each alternative a matcher set.
    pub fn matchers(&self) -> Result<Vec<Vec<Matcher>>, ParamError> {
        let mut sets = Vec::new();
        for selector in self.all("match[]") {
            let alternatives = parse_series_selector(selector)
                .map_err(|e| ParamError::invalid("match[]", e.to_string()))?;
            sets.extend(alternatives);
        }
        Ok(sets)
    }
}

/// Unix seconds (fractions rounded to ms) or RFC 3339, as Prometheus reads times.
pub fn parse_time(text: &str) -> Result<i64, String> {
    match text {
        MIN_TIME_TEXT => return Ok(TimeRange::ALL.start),
        MAX_TIME_TEXT => return Ok(TimeRange::ALL.end),
        _ => {}
    }
    crate::time::parse_time("time", text)
        .map_err(|_| format!("cannot parse {text:?} to a valid timestamp"))
}

/// Seconds as a float (`15`, `0.5`) or a Prometheus duration (`1m30s`, `1h`,
/// `2d`, `100ms`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        let nanos = seconds * 1e9;
        if !nanos.is_finite() || nanos.abs() >= i64::MAX as f64 {
            return Err(format!(
                "cannot parse {text:?} to a valid duration. It overflows int64"
            ));
        }
        if nanos < 0.0 {
            // Negative steps are refused by the caller with Prometheus' message.
            return Ok(Duration::ZERO);
        }
        return Ok(Duration::from_nanos(nanos as u64));
    }
    parse_prometheus_duration(text)
        .ok_or_else(|| format!("cannot parse {text:?} to a valid duration"))
}

/// `[0-9]+(y|w|d|h|m|s|ms)` repeated, units in decreasing order, each at
/// most once; `0` alone is also accepted.
fn parse_prometheus_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut last_unit = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" before "m" so that "5ms" is not read as minutes.
        let (index, (unit, ms)) = crate::promql::syntax::DURATION_UNITS
            .iter()
            .enumerate()
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        if last_unit.is_some_and(|last| index <= last) {
            return None;
        }
        last_unit = Some(index);
        rest = &rest[unit.len()..];
        total_ms = total_ms.checked_add(n.checked_mul(*ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let check = |text: &str, want: Option<u64>| {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_millis() as u64),
                want,
                "{text}"
            );
        };
        check("15", Some(15_000));
        check("0.5", Some(500));
        check("1e3", Some(1_000_000));
        check("15s", Some(15_000));
        check("1m", Some(60_000));
        check("1m30s", Some(90_000));
        check("100ms", Some(100));
        check("1h5ms", Some(3_600_005));
        check("2d", Some(172_800_000));
        check("1w", Some(604_800_000));
        check("1y", Some(31_536_000_000));
        check("0", Some(0));
        check("-5", Some(0));
        check("", None);
        check("s", None);
        check("5x", None);
        check("1s1m", None);
        check("1m1m", None);
        check("1.5m", None);
        check("1e300", None);
        assert_eq!(
            parse_duration("x").expect_err("x"),
            r#"cannot parse "x" to a valid duration"#
        );
    }

    #[test]
    fn flags() {
        let check = |text: &str, want: Result<Option<bool>, ()>| {
            let params = Params::from_pairs(&[("deny_partial_response", text)]);
            assert_eq!(
                params.flag("deny_partial_response").map_err(|_| ()),
                want,
                "{text}"
            );
        };
        check("1", Ok(Some(true)));
        check("true", Ok(Some(true)));
        check("0", Ok(Some(false)));
        check("False", Ok(Some(false)));
        check("", Ok(None));
        check("yes", Err(()));
        assert_eq!(Params::from_pairs(&[]).flag("x"), Ok(None));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_time(MIN_TIME_TEXT), Ok(i64::MIN));
        assert_eq!(parse_time(MAX_TIME_TEXT), Ok(i64::MAX));
        assert_eq!(
            parse_time("soon").expect_err("soon"),
            r#"cannot parse "soon" to a valid timestamp"#
        );
    }

    #[test]
    fn param_errors_read_like_prometheus() {
        let params =
            Params::from_pairs(&[("time", "x"), ("start", ""), ("limit", "-1"), ("step", "y")]);
        let message = |e: ParamError| e.to_string();
        assert_eq!(
            message(params.time_or("time", 0).expect_err("time")),
            r#"invalid parameter "time": invalid time value for 'time': cannot parse "x" to a valid timestamp"#
        );
        assert_eq!(
            message(params.time("start").expect_err("start")),
            r#"invalid parameter "start": cannot parse "" to a valid timestamp"#
        );
        assert_eq!(
            message(params.limit().expect_err("limit")),
            r#"invalid parameter "limit": limit must be positive"#
        );
        assert_eq!(
            message(params.duration("step").expect_err("step")),
            r#"invalid parameter "step": cannot parse "y" to a valid duration"#
        );
        assert_eq!(
            Params::from_pairs(&[("limit", "a")])
                .limit()
                .map_err(message),
            Err(r#"invalid parameter "limit": strconv.Atoi: parsing "a": invalid syntax"#.into())
        );
        assert_eq!(Params::from_pairs(&[("limit", "7")]).limit(), Ok(Some(7)));
        assert_eq!(Params::from_pairs(&[]).limit(), Ok(None));
    }

    #[test]
    fn body_comes_before_query_and_needs_the_form_type() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .expect("header"),
        );
        let params = Params::from_request(
            Some("query=from_url&match[]=a"),
            &headers,
            b"query=from%20body&match[]=b",
        )
        .expect("params");
        assert_eq!(params.get("query"), Some("from body"));
        assert_eq!(params.all("match[]"), vec!["b", "a"]);

        headers.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
        assert_eq!(
            Params::from_request(None, &headers, b"{}")
                .expect_err("json")
                .to_string(),
            r#"request body must be application/x-www-form-urlencoded, got "application/json""#
        );
        // An empty body needs no content type.
        assert!(Params::from_request(Some("a=1"), &HeaderMap::new(), b"").is_ok());
    }
}
