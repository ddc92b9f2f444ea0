//! Time parameters of the HTTP API: Unix seconds (fractions allowed) or RFC 3339.

#[derive(Debug, PartialEq, thiserror::Error)]
#[error(
    "cannot parse {param} {value:?}: want Unix seconds (e.g. 1700000000.5) \
     or RFC 3339 (e.g. 2023-11-14T22:13:20Z) within the 64-bit millisecond range"
)]
pub struct TimeParseError {
    pub param: &'static str,
    pub value: String,
}

/// Parses the value of time parameter `param` into milliseconds since the epoch.
pub fn parse_time(param: &'static str, value: &str) -> Result<i64, TimeParseError> {
    let err = || TimeParseError {
        param,
        value: value.to_string(),
    };
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        let ms = (seconds * 1000.0).round();
        // `as` saturates; reject instead of silently clamping.
        if !ms.is_finite() || ms < i64::MIN as f64 || ms >= i64::MAX as f64 {
            return Err(err());
        }
        return Ok(ms as i64);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_rfc3339() {
        let check = |s: &str, want: i64| assert_eq!(parse_time("start", s), Ok(want), "{s}");
        check("1700000000", 1_700_000_000_000);
        check("1700000000.123", 1_700_000_000_123);
        check("1700000000.1236", 1_700_000_000_124);
        check("-1.5", -1_500);
        check("0", 0);
        check("2023-11-14T22:13:20Z", 1_700_000_000_000);
        check("2023-11-14T22:13:20.5Z", 1_700_000_000_500);
        check("2023-11-15T00:13:20+02:00", 1_700_000_000_000);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "soon",
            "NaN",
            "inf",
            "1e300",
            "2023-11-14",
            "2023-11-14 22:13:20",
        ] {
            let err = parse_time("end", s).expect_err(s);
            assert!(err.to_string().starts_with("cannot parse end"), "{err}");
        }
    }
}
