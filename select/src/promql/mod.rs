//! PromQL evaluation with Prometheus 2.53 semantics.
//!
//! - `value`: the four value types and the query result.
//! - `engine`: the entry points (instant and range queries), options, limits
//!   and errors.
//! - `eval`: the evaluator over a grid of steps (selectors, subqueries,
//!   limits); `binary`, `aggregate` and `call` evaluate operators,
//!   aggregations and function calls on it.
//! - `functions`: the math of every float function, free of evaluation
//!   plumbing so it can be table-tested alone.
//! - `syntax`: parsing, with parse errors placed (`line:column`) and worded
//!   as Prometheus places and words them.
//!
//! Memory: selectors stream series from the source, and a range function
//! hands each result series on as soon as its windows are walked
//! (`Evaluator::eval_each`), so `sum`, `avg`, `count`, `min`, `max`,
//! `group`, `stddev` and `stdvar` over a range function fold their input
//! as it comes and hold only their groups. Over many steps, the windows of
//! 256 series at a time are walked on rayon's pool while the evaluation
//! gathers the next 256 from storage.

mod aggregate;
mod binary;
mod call;
pub mod engine;
mod eval;
pub mod functions;
mod hash;
pub mod syntax;
pub mod value;

pub use engine::{Engine, EngineOptions, QueryError, QueryOptions, QueryResult, QueryStats};
pub use syntax::ParseError;
pub use value::{Point, Sample, Series, Value};

#[cfg(test)]
mod tests;
