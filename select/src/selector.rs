//! Series selectors (`up{job="x"}`, `{__name__=~"a|b"}`) as accepted by the
//! `match[]` parameter of the Prometheus API, turned into storage matchers.

use promql_parser::label::{MatchOp as PromMatchOp, Matcher as PromMatcher};
use promql_parser::parser::Expr;
use strata_storage::{METRIC_NAME_LABEL, MatchOp, Matcher, MatcherError};

#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error("cannot parse series selector {selector:?}: {message}")]
    Parse { selector: String, message: String },
    #[error("{selector:?} is not a series selector: want a form like up{{job=\"x\"}}")]
    NotSelector { selector: String },
    #[error("series selector {selector:?} must not have offset or @ modifiers")]
    Modifier { selector: String },
    #[error("series selector {selector:?}: {source}")]
    Matcher {
        selector: String,
        #[source]
        source: MatcherError,
    },
}

/// Parses one selector into alternatives: a series matches the selector when
/// it matches every matcher of at least one alternative. There is more than
/// one alternative only when the selector uses `or` inside the braces.
pub fn parse_series_selector(selector: &str) -> Result<Vec<Vec<Matcher>>, SelectorError> {
    let expr = crate::promql::syntax::parse(selector).map_err(|e| SelectorError::Parse {
        selector: selector.to_string(),
        message: e.to_string(),
    })?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(SelectorError::NotSelector {
            selector: selector.to_string(),
        });
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(SelectorError::Modifier {
            selector: selector.to_string(),
        });
    }
    let groups: Vec<&[PromMatcher]> = if vs.matchers.or_matchers.is_empty() {
        vec![&vs.matchers.matchers]
    } else {
        vs.matchers.or_matchers.iter().map(Vec::as_slice).collect()
    };
    let convert = |m: &PromMatcher| {
        let op = match m.op {
            PromMatchOp::Equal => MatchOp::Equal,
            PromMatchOp::NotEqual => MatchOp::NotEqual,
            PromMatchOp::Re(_) => MatchOp::RegexMatch,
            PromMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
        };
        Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|source| SelectorError::Matcher {
            selector: selector.to_string(),
            source,
        })
    };
    let mut alternatives = Vec::with_capacity(groups.len());
    for group in groups {
        // Matchers outside the `or` groups apply to every group.
        let shared = if vs.matchers.or_matchers.is_empty() {
            &[][..]
        } else {
            &vs.matchers.matchers[..]
        };
        let mut matchers = group
            .iter()
            .chain(shared)
            .map(convert)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(name) = &vs.name
            && !matchers
                .iter()
                .any(|m| m.name == METRIC_NAME_LABEL && m.op == MatchOp::Equal && &m.value == name)
        {
            matchers.insert(0, Matcher::eq(METRIC_NAME_LABEL, name.clone()));
        }
        alternatives.push(matchers);
    }
    Ok(alternatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders alternatives as `a="1",b=~"2" | c="3"`, matchers sorted.
    fn render(alternatives: &[Vec<Matcher>]) -> String {
        alternatives
            .iter()
            .map(|ms| {
                let mut parts: Vec<String> = ms.iter().map(ToString::to_string).collect();
                parts.sort();
                parts.join(",")
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    #[test]
    fn selectors_become_matchers() {
        let check = |selector: &str, want: &str| {
            let got = parse_series_selector(selector).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(render(&got), want, "{selector}");
        };
        check("up", r#"__name__="up""#);
        check(r#"up{job="x"}"#, r#"__name__="up",job="x""#);
        check(
            r#"{__name__=~"a|b", job!="y"}"#,
            r#"__name__=~"a|b",job!="y""#,
        );
        check(r#"{job!~"a.*",x="1"}"#, r#"job!~"a.*",x="1""#);
        check(
            r#"up{job="a" or job="b"}"#,
            r#"__name__="up",job="a" | __name__="up",job="b""#,
        );
        check(r#"{a="\"quoted\"\n"}"#, r#"a="\"quoted\"\n""#);
    }

    #[test]
    fn non_selectors_are_rejected() {
        let check = |selector: &str, want: &str| {
            let err = parse_series_selector(selector).expect_err(selector);
            let msg = err.to_string();
            assert!(msg.contains(want), "{selector}: {msg}");
        };
        // Placed and worded as Prometheus does.
        check(
            "up{",
            r#"cannot parse series selector "up{": 1:4: parse error: unexpected end of input inside braces"#,
        );
        check("", "1:1: parse error: no expression found in input");
        check(
            r#"{job=~".*"}"#,
            "1:1: parse error: vector selector must contain at least one non-empty matcher",
        );
        check("rate(up[5m])", "is not a series selector");
        check("up[5m]", "is not a series selector");
        check("up + 1", "is not a series selector");
        check("up offset 5m", "must not have offset or @");
        check("up @ 100", "must not have offset or @");
    }
}
