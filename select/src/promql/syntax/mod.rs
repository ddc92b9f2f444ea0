//! Parsing a query, with errors placed and worded as Prometheus places and
//! words them: `1:4: parse error: unexpected <op:+>`, where `1:4` is the
//! line and column (1-based, the column in bytes) of the token or
//! construct at fault.
//!
//! The `promql-parser` crate builds the syntax tree, but its errors are
//! bare messages: no position, and every syntax error reads "invalid
//! promql query". So when it refuses a query, `check` walks the query again
//! the way Prometheus' own parser does and reports the first error there,
//! with its position. When that walk finds nothing (the crate refuses
//! something Prometheus accepts, or something the walk does not model),
//! the crate's message stands, without a position. One thing the crate
//! accepts and Prometheus refuses, a range without a unit (`x[1]`), is
//! refused here after the crate's parse.

mod check;
mod functions;
mod lex;
mod quote;
#[cfg(test)]
mod tests;

use promql_parser::parser::{self, Expr, value::ValueType};

/// The units of a Prometheus duration (`1h30m`), longest first, in
/// milliseconds: each may appear once, in this order.
pub(crate) const DURATION_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// A query that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}parse error: {message}", position_prefix(*.position))]
pub struct ParseError {
    /// 1-based line and byte column of the fault, when known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

fn position_prefix(position: Option<(usize, usize)>) -> String {
    position.map_or_else(String::new, |(line, column)| format!("{line}:{column}: "))
}

/// Parses `query` into the crate's syntax tree.
pub fn parse(query: &str) -> Result<Expr, ParseError> {
    register_extra_functions();
    match parser::parse(query) {
        Ok(expr) => match unitless_range(query) {
            Some(error) => Err(error),
            None => Ok(expr),
        },
        Err(refusal) => Err(match check::first_error(query) {
            Some(found) => ParseError {
                position: Some(line_column(query, found.position)),
                message: found.message,
            },
            None => ParseError {
                position: None,
                message: refusal,
            },
        }),
    }
}

/// The message Prometheus' lexer gives a range without a unit.
const MISSING_UNIT: &str = "missing unit character in duration";

/// The refusal of a range written without a unit (`x[1]`): the crate reads
/// it as seconds, Prometheus (2.42 to 2.53) refuses it.
fn unitless_range(query: &str) -> Option<ParseError> {
    if !query.contains('[') {
        return None;
    }
    let last = lex::tokens(query).pop()?;
    (last.kind == lex::Kind::Error && last.text == MISSING_UNIT).then(|| ParseError {
        position: Some(line_column(query, last.start)),
        message: MISSING_UNIT.to_string(),
    })
}

/// Teaches the parser the functions Prometheus 2.53 has that it does not
/// (`holt_winters`, the older name of `double_exponential_smoothing`).
fn register_extra_functions() {
    static EXTRA: std::sync::Once = std::sync::Once::new();
    EXTRA.call_once(|| {
        let holt_winters = parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        );
        // Only fails when the parser already knows the name, which is fine.
        let _ = parser::register_extra_functions(vec![holt_winters]);
    });
}

/// Line and column of byte `position`, counted as Prometheus counts them:
/// lines from 1, columns in bytes from 1 after the last newline before it.
fn line_column(query: &str, position: usize) -> (usize, usize) {
    let before = &query.as_bytes()[..position.min(query.len())];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let column = match before.iter().rposition(|b| *b == b'\n') {
        Some(newline) => position - newline,
        None => position + 1,
    };
    (line, column)
}
