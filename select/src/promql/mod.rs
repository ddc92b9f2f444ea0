//! PromQL evaluation with Prometheus 2.53 semantics.
//!
//! - `value`: the four value types and the query result.
//! - `engine`: the entry points (instant and range queries), options, limits
//!   and errors.
//! - `functions`: the math of every float function, free of evaluation
//!   plumbing so it can be table-tested alone.

pub mod engine;
pub mod functions;
pub mod value;

pub use engine::{Engine, EngineOptions, QueryError, QueryOptions, QueryResult, QueryStats};
pub use value::{Point, Sample, Series, Value};
