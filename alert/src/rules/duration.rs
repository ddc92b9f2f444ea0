//! Prometheus durations: `1y2w3d4h5m6s7ms`, units in this order, each at most
//! once, integers only; `0` alone is allowed. A year is 365 days.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration string")]
    Empty,
    #[error("not a valid duration string: {0:?}")]
    Invalid(String),
    #[error("duration out of range: {0:?}")]
    Overflow(String),
}

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(text.to_string());
    let bytes = text.as_bytes();
    let mut pos = 0;
    // Index into UNITS of the next unit allowed: units must appear in order.
    let mut next_unit = 0;
    let mut total_ms: u64 = 0;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == digits_start {
            return Err(invalid());
        }
        let number: u64 = text[digits_start..pos]
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_string()))?;
        let rest = &text[pos..];
        // "ms" must be tried before "m".
        let unit = UNITS[next_unit..]
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| rest.starts_with(name))
            .max_by_key(|(_, (name, _))| name.len())
            .map(|(offset, unit)| (next_unit + offset, unit));
        let Some((index, (name, unit_ms))) = unit else {
            return Err(invalid());
        };
        next_unit = index + 1;
        pos += name.len();
        total_ms = number
            .checked_mul(*unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
    }
    // Prometheus keeps durations as int64 nanoseconds.
    if total_ms > (i64::MAX as u64) / 1_000_000 {
        return Err(DurationError::Overflow(text.to_string()));
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way Prometheus prints one (`1h30m`, `0s`).
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis() as u64;
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, unit_ms) in UNITS {
        // Years and weeks only when they divide exactly, like Prometheus.
        if (name == "y" || name == "w") && !ms.is_multiple_of(unit_ms) {
            continue;
        }
        let count = ms / unit_ms;
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            ms -= count * unit_ms;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, want: Result<u64, ()>) {
        let got = parse_duration(text)
            .map(|d| d.as_millis() as u64)
            .map_err(|_| ());
        assert_eq!(got, want, "parse_duration({text:?})");
    }

    #[test]
    fn parse() {
        check("0", Ok(0));
        check("0s", Ok(0));
        check("5m", Ok(300_000));
        check("1h30m", Ok(5_400_000));
        check("1d", Ok(86_400_000));
        check("1w", Ok(604_800_000));
        check("1y", Ok(31_536_000_000));
        check("1m500ms", Ok(60_500));
        check("500ms", Ok(500));
        check("", Err(()));
        check("5", Err(()));
        check("5M", Err(()));
        check("1.5h", Err(()));
        check("-5m", Err(()));
        check("30m1h", Err(()));
        check("1h1h", Err(()));
        check("5 m", Err(()));
        check("m", Err(()));
        check("99999999999999999999s", Err(()));
    }

    #[test]
    fn format() {
        for (ms, want) in [
            (0, "0s"),
            (300_000, "5m"),
            (5_400_000, "1h30m"),
            (604_800_000, "1w"),
            (691_200_000, "8d"),
            (60_500, "1m500ms"),
        ] {
            assert_eq!(format_duration(Duration::from_millis(ms)), want, "{ms}");
        }
    }
}
