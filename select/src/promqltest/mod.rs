//! Runner of PromQL test files (`*.test`, the format of Prometheus' own
//! PromQL tests), evaluating through the real storage engine and the PromQL
//! engine.
//!
//! A file is a sequence of blocks separated by blank lines; `#` starts a
//! comment line, which also ends a block. Blocks:
//!
//! ```text
//! load <interval>                      series, one per line; the i-th value is at
//!   <series> <values>                  i * interval ms since the epoch
//! clear                                drops every series
//! eval instant at <time> <query>       instant query at <time> (a duration since 0)
//!   <series> <value>                   an expected vector element, or
//!   <number>                           the expected scalar
//! eval range from <t> to <t> step <d> <query>
//!   <series> <values>                  expected points at from, from+step, ...
//! eval_fail ...                        the query must fail; optional next line
//!   expected_fail_message <text>       (exact message) or
//!   expected_fail_regexp <re>          (a regular expression matching it)
//! eval_ordered instant ...             vector elements in the listed order
//! eval_warn / eval_info ...            the query must warn
//! expect fail|ordered|warn|info|no_warn|no_info [msg: <text>|regex: <re>]
//!                                      modifiers of the newer format, under an eval
//! ```
//!
//! `<series>` is `name{label="value", ...}`, `name` or `{...}`. `<values>` is
//! the expanding notation of [`parse::parse_values`]: `_` (no sample), `_xN`,
//! `v`, `vxN` (N+1 times v), `a+bxN` / `a-bxN` (N+1 values stepping by b);
//! values are numbers, `Inf`, `NaN` and `stale` (a stale marker).
//!
//! Native histogram samples (`{{...}}`) are not supported: a section that
//! loads them has its evals skipped until the next `clear`, with the reason.
//!
//! Results compare like the reference runner: floats within a relative error
//! of 1e-6 ([`compare::almost_equal`]), NaN equal to NaN, label sets exact,
//! order only for `eval_ordered`. Every instant eval is also run as a range
//! query over `[t-1m, t+1m]` by 1m whose middle step must give the same answer.

pub mod compare;
pub mod parse;
pub mod run;

#[cfg(test)]
mod tests;

pub use parse::{Command, ParseError, parse_file};
pub use run::{CaseResult, Outcome, RunError, Runner};
