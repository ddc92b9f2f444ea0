//! The data model shared by every Strata component: tenants, labels, samples,
//! time ranges and label matchers.

use std::fmt;
use std::str::FromStr;

use regex::Regex;

/// Identifies a series inside one storage instance. Ids are assigned in
/// increasing order and never reused while any data of the series exists.
pub type SeriesId = u64;

/// Bit pattern of the Prometheus staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Returns true when `v` is the Prometheus staleness marker.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// `account_id:project_id`; the project defaults to 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant {
    pub account_id: u32,
    pub project_id: u32,
}

impl Tenant {
    pub const DEFAULT: Tenant = Tenant {
        account_id: 0,
        project_id: 0,
    };

    pub fn new(account_id: u32, project_id: u32) -> Self {
        Tenant {
            account_id,
            project_id,
        }
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.account_id, self.project_id)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "cannot parse tenant {0:?}: want <account_id>[:<project_id>] with 32-bit unsigned integers"
)]
pub struct TenantParseError(pub String);

impl FromStr for Tenant {
    type Err = TenantParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TenantParseError(s.to_string());
        let (account, project) = match s.split_once(':') {
            Some((a, p)) => (a, p),
            None => (s, "0"),
        };
        Ok(Tenant {
            account_id: account.parse().map_err(|_| err())?,
            project_id: project.parse().map_err(|_| err())?,
        })
    }
}

/// One label pair. A series is identified by its label set sorted by name,
/// which includes the metric name as `__name__`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: String,
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A label pair borrowed from a request buffer: the write path looks a
/// known series up without allocating its labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelRef<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

impl<'a> LabelRef<'a> {
    pub fn new(name: &'a str, value: &'a str) -> Self {
        LabelRef { name, value }
    }

    pub fn to_label(self) -> Label {
        Label::new(self.name, self.value)
    }
}

impl<'a> From<&'a Label> for LabelRef<'a> {
    fn from(l: &'a Label) -> Self {
        LabelRef::new(&l.name, &l.value)
    }
}

/// Name of the label that carries the metric name.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// One sample: milliseconds since the Unix epoch and a float value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub timestamp: i64,
    pub value: f64,
}

impl Sample {
    pub fn new(timestamp: i64, value: f64) -> Self {
        Sample { timestamp, value }
    }
}

/// An inclusive time range in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        start: i64::MIN,
        end: i64::MAX,
    };

    pub fn new(start: i64, end: i64) -> Self {
        TimeRange { start, end }
    }

    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts <= self.end
    }

    pub fn overlaps(&self, min: i64, max: i64) -> bool {
        self.start <= max && min <= self.end
    }
}

/// The four Prometheus label matcher operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid regex {pattern:?} for label {name:?}: {source}")]
pub struct MatcherError {
    pub name: String,
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

/// A label matcher. Regexes are fully anchored like in Prometheus: `foo=~"a|b"`
/// matches exactly `a` or `b`, and `.` also matches a newline. A missing label
/// is treated as the empty value.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        let regex = match op {
            MatchOp::Equal | MatchOp::NotEqual => None,
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => {
                let anchored = format!("^(?s:{value})$");
                Some(Regex::new(&anchored).map_err(|source| MatcherError {
                    name: name.clone(),
                    pattern: value.clone(),
                    source,
                })?)
            }
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// Shorthand for an equality matcher, which cannot fail.
    pub fn eq(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            regex: None,
        }
    }

    /// Does the label value (empty when the label is missing) match?
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::RegexMatch, Some(re)) => re.is_match(value),
            (MatchOp::RegexNoMatch, Some(re)) => !re.is_match(value),
            (_, None) => false,
        }
    }

    /// Matchers that accept the empty value also select series that lack the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Does the whole label set match? A missing label counts as empty.
    pub fn matches_labels(&self, labels: &[Label]) -> bool {
        let value = labels
            .iter()
            .find(|l| l.name == self.name)
            .map_or("", |l| l.value.as_str());
        self.matches(value)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_parses_both_forms() {
        assert_eq!("7".parse::<Tenant>(), Ok(Tenant::new(7, 0)));
        assert_eq!("7:3".parse::<Tenant>(), Ok(Tenant::new(7, 3)));
        assert!("x".parse::<Tenant>().is_err());
        assert!("1:".parse::<Tenant>().is_err());
        assert!("4294967296".parse::<Tenant>().is_err());
    }

    #[test]
    fn regex_is_fully_anchored() {
        let check = |op, pattern: &str, value: &str, want: bool| {
            let m = Matcher::new(op, "l", pattern).expect("valid regex");
            assert_eq!(m.matches(value), want, "{m} on {value:?}");
        };
        check(MatchOp::RegexMatch, "a|b", "a", true);
        check(MatchOp::RegexMatch, "a|b", "ab", false);
        check(MatchOp::RegexMatch, "foo", "foobar", false);
        check(MatchOp::RegexMatch, ".*", "", true);
        check(MatchOp::RegexMatch, "a.b", "a\nb", true);
        check(MatchOp::RegexNoMatch, "a|b", "c", true);
        check(MatchOp::RegexNoMatch, "a|b", "b", false);
        check(MatchOp::Equal, "x", "x", true);
        check(MatchOp::NotEqual, "x", "", true);
    }

    #[test]
    fn missing_label_is_empty() {
        let labels = vec![Label::new("__name__", "up")];
        assert!(Matcher::eq("job", "").matches_labels(&labels));
        assert!(!Matcher::eq("job", "x").matches_labels(&labels));
        assert!(Matcher::eq("__name__", "up").matches_labels(&labels));
    }
}
