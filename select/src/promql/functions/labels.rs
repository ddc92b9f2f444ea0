//! `label_replace` and `label_join` on one label set.
//!
//! Label sets are sorted by name; a label set to the empty string is
//! removed, as PromQL has no empty labels. Both functions only rewrite
//! labels: checking that the output vector has no two equal label sets is
//! the evaluator's job ("vector cannot contain metrics with the same
//! labelset").
//!
//! The regular expression of `label_replace` follows RE2 syntax as Go reads
//! it: it is anchored at both ends, and the Perl classes `\d`, `\w`, `\s`
//! and `\b` are ASCII-only (the `regex` crate makes them Unicode-aware,
//! so they are rewritten to ASCII classes first).

use regex::{Regex, RegexBuilder};
use strata_storage::Label;

use crate::promql::value::Labels;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("invalid regular expression in label_replace(): {regex}: {source}")]
    InvalidRegex {
        regex: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("invalid destination label name in {function}(): {name}")]
    InvalidDestination {
        function: &'static str,
        name: String,
    },
    #[error("invalid source label name in label_join(): {0}")]
    InvalidSource(String),
}

/// A compiled `label_replace(v, dst, replacement, src, regex)`, to apply to
/// every series of `v`.
#[derive(Clone, Debug)]
pub struct Replace {
    dst: String,
    replacement: String,
    src: String,
    regex: Regex,
}

impl Replace {
    /// Fails on an invalid regular expression or destination label name
    /// (also when the vector is empty: the query fails either way).
    pub fn new(dst: &str, replacement: &str, src: &str, regex: &str) -> Result<Self, LabelError> {
        let anchored = format!("^(?:{})$", ascii_perl_classes(regex));
        // RE2 reads `\101` as an octal escape.
        let compiled = RegexBuilder::new(&anchored)
            .octal(true)
            .build()
            .map_err(|e| LabelError::InvalidRegex {
                regex: regex.to_owned(),
                source: Box::new(e),
            })?;
        if !is_valid_label_name(dst) {
            return Err(LabelError::InvalidDestination {
                function: "label_replace",
                name: dst.to_owned(),
            });
        }
        Ok(Replace {
            dst: dst.to_owned(),
            replacement: replacement.to_owned(),
            src: src.to_owned(),
            regex: compiled,
        })
    }

    /// The label set with `dst` set to the expanded replacement when the
    /// value of `src` (empty when absent) matches the whole regex; the label
    /// set unchanged otherwise.
    pub fn apply(&self, labels: &[Label]) -> Labels {
        let value = label_value(labels, &self.src);
        match self.regex.captures(value) {
            Some(captures) => {
                let expanded = expand(&self.regex, &captures, &self.replacement);
                with_label(labels, &self.dst, &expanded)
            }
            None => labels.to_vec(),
        }
    }
}

/// `label_replace` on one label set; see [`Replace`], which compiles
/// the regex once for a whole vector.
pub fn label_replace(
    labels: &[Label],
    dst: &str,
    replacement: &str,
    src: &str,
    regex: &str,
) -> Result<Labels, LabelError> {
    Ok(Replace::new(dst, replacement, src, regex)?.apply(labels))
}

/// Checks the label names of `label_join(v, dst, separator, srcs...)`; the
/// query fails on `Err` even when `v` is empty.
pub fn validate_label_join<S: AsRef<str>>(dst: &str, srcs: &[S]) -> Result<(), LabelError> {
    if let Some(src) = srcs.iter().find(|s| !is_valid_label_name(s.as_ref())) {
        return Err(LabelError::InvalidSource(src.as_ref().to_owned()));
    }
    if !is_valid_label_name(dst) {
        return Err(LabelError::InvalidDestination {
            function: "label_join",
            name: dst.to_owned(),
        });
    }
    Ok(())
}

/// `label_join` on one label set: [`validate_label_join`], then [`join`].
pub fn label_join(
    labels: &[Label],
    dst: &str,
    separator: &str,
    srcs: &[&str],
) -> Result<Labels, LabelError> {
    validate_label_join(dst, srcs)?;
    Ok(join(labels, dst, separator, srcs))
}

/// `label_join` without the name checks (done once per call by
/// [`validate_label_join`]): `dst` becomes the values of `srcs` (empty when
/// absent) joined by `separator`, or is removed when that is empty.
pub fn join<S: AsRef<str>>(labels: &[Label], dst: &str, separator: &str, srcs: &[S]) -> Labels {
    let joined = srcs
        .iter()
        .map(|src| label_value(labels, src.as_ref()))
        .collect::<Vec<_>>()
        .join(separator);
    with_label(labels, dst, &joined)
}

/// Whether `name` is a legal label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn label_value<'a>(labels: &'a [Label], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

/// A copy of the sorted `labels` with `name` set to `value`, or removed when
/// `value` is empty.
fn with_label(labels: &[Label], name: &str, value: &str) -> Labels {
    let mut out = labels.to_vec();
    match out.binary_search_by(|l| l.name.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            out.remove(i);
        }
        Ok(i) => out[i].value = value.to_owned(),
        Err(_) if value.is_empty() => {}
        Err(i) => out.insert(i, Label::new(name, value)),
    }
    out
}

/// Expands `$1`, `${1}`, `$name`, `${name}` and `$$` in `template` the way
/// Go's `Regexp.Expand` does: a name is the longest run of letters, digits
/// and `_`; all digits (without a leading zero) is a group number; unknown
/// or unmatched groups expand to nothing; a `$` not starting a reference
/// stays literal.
fn expand(regex: &Regex, captures: &regex::Captures<'_>, template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some((name, after)) = reference(rest) else {
            out.push('$');
            continue;
        };
        rest = after;
        let group = match group_number(name) {
            Some(n) => captures.get(n),
            None => regex
                .capture_names()
                .position(|n| n == Some(name))
                .and_then(|i| captures.get(i)),
        };
        if let Some(m) = group {
            out.push_str(m.as_str());
        }
    }
    out.push_str(rest);
    out
}

/// The reference name at the start of `s` (just after a `$`) and the text
/// after it, braces included.
fn reference(s: &str) -> Option<(&str, &str)> {
    let (body, braced) = match s.strip_prefix('{') {
        Some(body) => (body, true),
        None => (s, false),
    };
    let end = body
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if braced {
        let after = body[end..].strip_prefix('}')?;
        Some((name, after))
    } else {
        Some((name, &body[end..]))
    }
}

/// A group number: ASCII digits without a leading zero, below 10^8.
fn group_number(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit())
        || (name.len() > 1 && name.starts_with('0'))
        || name.len() > 8
    {
        return None;
    }
    name.parse().ok()
}

/// Rewrites `\d`, `\w`, `\s` (and their negations) to ASCII classes and
/// `\b`, `\B` to ASCII word boundaries, inside and outside bracket classes,
/// leaving every other part of the pattern as written.
fn ascii_perl_classes(pattern: &str) -> String {
    const DIGIT: &str = "0-9";
    const WORD: &str = "0-9A-Za-z_";
    const SPACE: &str = r"\t\n\x0C\r ";
    let mut out = String::with_capacity(pattern.len());
    let mut in_class = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(escaped) = chars.next() else {
                    out.push(c);
                    break;
                };
                let (class, negated) = match escaped {
                    'd' => (DIGIT, false),
                    'D' => (DIGIT, true),
                    'w' => (WORD, false),
                    'W' => (WORD, true),
                    's' => (SPACE, false),
                    'S' => (SPACE, true),
                    'b' | 'B' if !in_class => {
                        out.push_str(if escaped == 'b' {
                            r"(?-u:\b)"
                        } else {
                            r"(?-u:\B)"
                        });
                        continue;
                    }
                    _ => {
                        out.push(c);
                        out.push(escaped);
                        continue;
                    }
                };
                match (in_class, negated) {
                    (false, false) => out.push_str(&format!("[{class}]")),
                    (false, true) => out.push_str(&format!("[^{class}]")),
                    (true, false) => out.push_str(class),
                    // A negated class inside a class: a nested class keeps
                    // the meaning.
                    (true, true) => out.push_str(&format!("[^{class}]")),
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // `^` and a leading `]` belong to the class syntax.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str(r"\]");
                    chars.next();
                }
            }
            '[' if in_class && chars.peek() == Some(&':') => {
                // `[:alpha:]` is ASCII already; copy through its `:]`.
                out.push(c);
                let mut prev = ' ';
                for n in chars.by_ref() {
                    out.push(n);
                    if prev == ':' && n == ']' {
                        break;
                    }
                    prev = n;
                }
            }
            // Literal in RE2; nesting and set operators in the `regex` crate.
            '[' if in_class => out.push_str(r"\["),
            '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels from `name=value` pairs, sorted.
    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut out: Labels = pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    #[test]
    fn label_replace_table() {
        fn check(
            input: &[(&str, &str)],
            (dst, repl, src, re): (&str, &str, &str, &str),
            want: Result<&[(&str, &str)], &str>,
        ) {
            let got = label_replace(&labels(input), dst, repl, src, re);
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, labels(want), "{input:?} {dst} {repl} {src} {re}")
                }
                (Err(e), Err(prefix)) => assert!(e.to_string().starts_with(prefix), "{e}"),
                (got, want) => {
                    panic!("{input:?} {dst} {repl} {src} {re}: got {got:?}, want {want:?}")
                }
            }
        }
        let m = &[
            ("__name__", "testmetric"),
            ("src", "source-value-10"),
            ("dst", "original"),
        ];
        check(
            m,
            ("dst", "destination-value-$1", "src", "source-value-(.*)"),
            Ok(&[
                ("__name__", "testmetric"),
                ("src", "source-value-10"),
                ("dst", "destination-value-10"),
            ]),
        );
        // No substring match: the regex is anchored.
        check(m, ("dst", "x-$1", "src", "value-(.*)"), Ok(m));
        check(
            m,
            ("dst", "$1-value-$2", "src", "(.*)-value-(.*)"),
            Ok(&[
                ("__name__", "testmetric"),
                ("src", "source-value-10"),
                ("dst", "source-value-10"),
            ]),
        );
        // Absent source label: its value is empty, which `(.*)` matches.
        check(
            m,
            ("dst", "value-$1", "nonexistent", "source-value-(.*)"),
            Ok(m),
        );
        check(
            m,
            ("dst", "value-$1", "nonexistent", "(.*)"),
            Ok(&[
                ("__name__", "testmetric"),
                ("src", "source-value-10"),
                ("dst", "value-"),
            ]),
        );
        check(m, ("dst", "value-$1", "src", "non-matching-regex"), Ok(m));
        // An empty result removes the label; a new label is inserted sorted.
        check(
            m,
            ("dst", "", "dst", ".*"),
            Ok(&[("__name__", "testmetric"), ("src", "source-value-10")]),
        );
        check(
            m,
            ("a", "$1", "src", "source-(.*)-10"),
            Ok(&[
                ("__name__", "testmetric"),
                ("a", "value"),
                ("src", "source-value-10"),
                ("dst", "original"),
            ]),
        );
        check(m, ("new", "", "src", ".*"), Ok(m));
        // Named groups, braces, `$$`, malformed and unknown references.
        let n = &[("src", "ab12")];
        check(
            n,
            ("d", "${x}-$y", "src", "(?P<x>[a-z]+)(?P<y>[0-9]+)"),
            Ok(&[("src", "ab12"), ("d", "ab-12")]),
        );
        check(n, ("d", "$1x", "src", "([a-z]+).*"), Ok(n));
        check(
            n,
            ("d", "${1}x", "src", "([a-z]+).*"),
            Ok(&[("src", "ab12"), ("d", "abx")]),
        );
        check(
            n,
            ("d", "$$1", "src", "([a-z]+).*"),
            Ok(&[("src", "ab12"), ("d", "$1")]),
        );
        check(
            n,
            ("d", "$-$", "src", ".*"),
            Ok(&[("src", "ab12"), ("d", "$-$")]),
        );
        check(
            n,
            ("d", "${1", "src", "(.*)"),
            Ok(&[("src", "ab12"), ("d", "${1")]),
        );
        check(
            n,
            ("d", "<$01>", "src", "(.*)"),
            Ok(&[("src", "ab12"), ("d", "<>")]),
        );
        check(
            n,
            ("d", "<$2>", "src", "(.*)"),
            Ok(&[("src", "ab12"), ("d", "<>")]),
        );
        check(
            n,
            ("d", "<$0>", "src", "b(.*)|a(.*)"),
            Ok(&[("src", "ab12"), ("d", "<ab12>")]),
        );
        check(
            n,
            ("d", "<$1>", "src", "b(.*)|a(.*)"),
            Ok(&[("src", "ab12"), ("d", "<>")]),
        );
        // All of the above at once, as promtool expands it.
        check(
            n,
            (
                "d",
                "<$1x|${1}x|$$1|$-$|${1|$01|$2|$0>",
                "src",
                "([a-z]+)(.*)",
            ),
            Ok(&[("src", "ab12"), ("d", "<|abx|$1|$-$|${1||12|ab12>")]),
        );
        check(
            n,
            ("d", "$1", "src", "a([&&[~b]+)12"),
            Ok(&[("src", "ab12"), ("d", "b")]),
        );
        // ASCII-only Perl classes: the Arabic-Indic digit is not `\d`.
        let u = &[("src", "x٣")];
        check(u, ("d", "$1", "src", r"x(\d)"), Ok(u));
        check(
            u,
            ("d", "$1", "src", r"x(\D)"),
            Ok(&[("src", "x٣"), ("d", "٣")]),
        );
        check(
            u,
            ("d", "$1", "src", r"x([\d٣])"),
            Ok(&[("src", "x٣"), ("d", "٣")]),
        );
        check(
            n,
            ("d", "$1", "src", r"\b([a-z]+)\d+\b"),
            Ok(&[("src", "ab12"), ("d", "ab")]),
        );
        check(n, ("d", "$1", "src", r"[\w]+(\s?)"), Ok(n));
        check(
            &[("src", "a]b")],
            ("d", "$1", "src", r"a([]x])b"),
            Ok(&[("src", "a]b"), ("d", "]")]),
        );
        check(
            &[("src", "a-b")],
            ("d", "$1", "src", r"a([^[:alpha:]])b"),
            Ok(&[("src", "a-b"), ("d", "-")]),
        );
        check(
            &[("src", "a&[b")],
            ("d", "$1", "src", r"a([&&[~]+)b"),
            Ok(&[("src", "a&[b"), ("d", "&[")]),
        );
        check(
            &[("src", "A1")],
            ("d", "$1", "src", r"\101(\d)"),
            Ok(&[("src", "A1"), ("d", "1")]),
        );
        // Errors.
        check(
            m,
            ("dst", "value-$1", "src", "(.*"),
            Err("invalid regular expression in label_replace(): (.*"),
        );
        check(
            m,
            ("invalid-label-name", "", "src", "(.*)"),
            Err("invalid destination label name in label_replace(): invalid-label-name"),
        );
        check(
            m,
            ("1dst", "", "src", "(.*)"),
            Err("invalid destination label name"),
        );
    }

    #[test]
    fn label_join_table() {
        fn check(
            input: &[(&str, &str)],
            (dst, sep, srcs): (&str, &str, &[&str]),
            want: Result<&[(&str, &str)], &str>,
        ) {
            let got = label_join(&labels(input), dst, sep, srcs);
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, labels(want), "{input:?} {dst} {sep} {srcs:?}")
                }
                (Err(e), Err(message)) => assert_eq!(e.to_string(), message),
                (got, want) => panic!("{input:?} {dst} {sep} {srcs:?}: got {got:?}, want {want:?}"),
            }
        }
        let m = &[("src", "a"), ("src1", "b"), ("src2", "c")];
        check(
            m,
            ("dst", "-", &["src", "src1", "src2"]),
            Ok(&[("src", "a"), ("src1", "b"), ("src2", "c"), ("dst", "a-b-c")]),
        );
        check(
            m,
            ("dst", "", &["src", "src1"]),
            Ok(&[("src", "a"), ("src1", "b"), ("src2", "c"), ("dst", "ab")]),
        );
        // Absent sources are empty strings.
        check(
            m,
            ("dst", "-", &["src", "nope", "src2"]),
            Ok(&[("src", "a"), ("src1", "b"), ("src2", "c"), ("dst", "a--c")]),
        );
        // Overwrites, and removes the label when the result is empty.
        check(
            m,
            ("src", "-", &["src1"]),
            Ok(&[("src", "b"), ("src1", "b"), ("src2", "c")]),
        );
        check(
            m,
            ("src", "", &["nope"]),
            Ok(&[("src1", "b"), ("src2", "c")]),
        );
        check(m, ("src", "", &[]), Ok(&[("src1", "b"), ("src2", "c")]));
        check(
            m,
            ("__name__", "_", &["src", "src1"]),
            Ok(&[
                ("__name__", "a_b"),
                ("src", "a"),
                ("src1", "b"),
                ("src2", "c"),
            ]),
        );
        check(
            m,
            ("dst", "-", &["bad-name"]),
            Err("invalid source label name in label_join(): bad-name"),
        );
        check(
            m,
            ("bad-dst", "-", &["src"]),
            Err("invalid destination label name in label_join(): bad-dst"),
        );
    }

    #[test]
    fn join_takes_owned_names_and_does_not_validate() {
        let input = labels(&[("a", "1"), ("b", "2")]);
        let srcs = vec!["b".to_owned(), "a".to_owned()];
        assert_eq!(
            join(&input, "c", "+", &srcs),
            labels(&[("a", "1"), ("b", "2"), ("c", "2+1")])
        );
        assert_eq!(
            join(&input, "bad-name", "", &srcs),
            labels(&[("a", "1"), ("b", "2"), ("bad-name", "21")])
        );
    }

    #[test]
    fn label_names() {
        for (name, want) in [
            ("a", true),
            ("_a1", true),
            ("__name__", true),
            ("", false),
            ("1a", false),
            ("a-b", false),
            ("ä", false),
        ] {
            assert_eq!(is_valid_label_name(name), want, "{name}");
        }
    }
}
