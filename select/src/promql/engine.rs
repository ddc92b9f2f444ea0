//! Entry points of PromQL evaluation.
//!
//! An instant query evaluates at one timestamp and answers a scalar, string or
//! vector; a range query evaluates at every step of `[start, end]` and answers
//! a matrix (Prometheus semantics: one series per output label set, points at
//! the steps where it had a value).

use std::time::Duration;

use crate::source::Source;

use super::value::Value;

/// Engine-wide settings; the per-query knobs are in [`QueryOptions`].
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back a selector looks for the latest sample. Default 5m.
    pub lookback_delta: Duration,
    /// Most series one selector may load. 0: no limit.
    pub max_series: usize,
    /// Most samples a query may hold in memory at once (Prometheus
    /// `--query.max-samples`). 0: no limit.
    pub max_samples: usize,
    /// Most points (steps) of a range query. 0: no limit.
    pub max_points_per_series: usize,
    /// Longest a query may run.
    pub timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta: Duration::from_secs(300),
            max_series: 0,
            max_samples: 50_000_000,
            max_points_per_series: 11_000,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Per-query overrides (HTTP parameters `lookback_delta`, `timeout`).
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    pub lookback_delta: Option<Duration>,
    pub timeout: Option<Duration>,
}

/// What a query answered, and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// Warnings to pass to the client (e.g. corrupted blocks skipped).
    pub warnings: Vec<String>,
    pub stats: QueryStats,
}

/// Counters of one query, for `stats=all` and self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Samples read from storage.
    pub samples_loaded: u64,
    /// Largest number of samples held at once.
    pub peak_samples: u64,
    /// Series read from storage.
    pub series_loaded: u64,
}

/// Why a query failed. The HTTP layer maps each to Prometheus' `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query does not parse or does not type-check (`bad_data`, 400).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed, e.g. duplicate series after a label change
    /// (`execution`, 422).
    #[error("{0}")]
    Execution(String),
    /// A limit was hit; the message names the limit and its flag
    /// (`execution`, 422).
    #[error("{0}")]
    Limit(String),
    /// The query ran longer than its timeout (`timeout`, 503).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// Storage could not be read (`unavailable`, 503, or `internal`, 500).
    #[error("cannot read series: {0}")]
    Storage(#[from] strata_storage::StorageError),
}

/// Evaluates PromQL over a [`Source`].
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub options: EngineOptions,
}

impl Engine {
    pub fn new(options: EngineOptions) -> Engine {
        Engine { options }
    }

    /// Evaluates `query` at `time` (ms).
    pub fn instant(
        &self,
        source: &dyn Source,
        query: &str,
        time: i64,
        options: &QueryOptions,
    ) -> Result<QueryResult, QueryError> {
        let _ = (source, time, options);
        Err(QueryError::Execution(format!(
            "PromQL evaluation is not available yet: {query}"
        )))
    }

    /// Evaluates `query` at `start`, `start + step`, ... up to `end` (ms).
    /// `step` must be positive.
    pub fn range(
        &self,
        source: &dyn Source,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        options: &QueryOptions,
    ) -> Result<QueryResult, QueryError> {
        let _ = (source, start, end, step, options);
        Err(QueryError::Execution(format!(
            "PromQL evaluation is not available yet: {query}"
        )))
    }
}
