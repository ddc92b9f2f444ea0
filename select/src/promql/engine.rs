//! Entry points of PromQL evaluation.
//!
//! An instant query evaluates at one timestamp and answers a scalar, string or
//! vector; a range query evaluates at every step of `[start, end]` and answers
//! a matrix (Prometheus semantics: one series per output label set, points at
//! the steps where it had a value).

use std::sync::Arc;
use std::time::{Duration, Instant};

use promql_parser::parser::{self, value::ValueType};

use crate::source::Source;

use super::eval::{Evaluator, Steps, Val};
use super::value::{Point, Sample, Series, Value};

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
    /// Step of subqueries written without one (`x[1h:]`), like Prometheus'
    /// global evaluation interval. Default 1m.
    pub subquery_step: Duration,
    /// Range functions of range queries read their selector's series on a
    /// second thread while evaluating the ones already read (storage
    /// decoding and window arithmetic overlap on two cores). Default true.
    pub read_ahead: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta: Duration::from_secs(300),
            max_series: 0,
            max_samples: 50_000_000,
            max_points_per_series: 11_000,
            timeout: Duration::from_secs(120),
            subquery_step: Duration::from_secs(60),
            read_ahead: true,
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
    /// Some series may be missing: storage nodes that hold them did not
    /// answer (the warnings name them).
    pub partial: bool,
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

/// Parses `query`; a refusal is `bad_data`, worded as Prometheus words it.
fn parse(query: &str) -> Result<parser::Expr, QueryError> {
    super::syntax::parse(query).map_err(|e| QueryError::BadData(e.to_string()))
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
        let expr = parse(query)?;
        let steps = Steps {
            start: time,
            end: time,
            step: 1,
        };
        let mut ev = self.evaluator(source, time, time, options);
        let val = ev.eval(&expr, steps)?;
        let value = match val {
            Val::Scalar(v) => Value::Scalar {
                t: time,
                v: v.first().copied().unwrap_or(f64::NAN),
            },
            Val::String(s) => Value::String { t: time, s },
            Val::Vector(series) => Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        let p = s.points.first()?;
                        Some(Sample {
                            labels: Arc::try_unwrap(s.labels)
                                .unwrap_or_else(|shared| (*shared).clone()),
                            t: time,
                            v: p.v,
                        })
                    })
                    .collect(),
            ),
            Val::Matrix(series) => Value::Matrix(
                series
                    .into_iter()
                    .map(|s| Series {
                        labels: Arc::try_unwrap(s.labels)
                            .unwrap_or_else(|shared| (*shared).clone()),
                        points: s.points,
                    })
                    .collect(),
            ),
        };
        Ok(QueryResult {
            value,
            warnings: ev.warnings,
            stats: ev.stats,
            partial: ev.partial,
        })
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
        if step <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. \
                 Try a positive integer"
                    .into(),
            ));
        }
        if end < start {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        let expr = parse(query)?;
        let kind = match expr.value_type() {
            ValueType::Matrix => Some("range vector"),
            ValueType::String => Some("string"),
            _ => None,
        };
        if let Some(kind) = kind {
            return Err(QueryError::BadData(format!(
                "invalid expression type \"{kind}\" for range query, must be Scalar or instant Vector"
            )));
        }
        let steps = Steps { start, end, step };
        let max_points = self.options.max_points_per_series;
        if max_points > 0 && steps.count() > max_points {
            return Err(QueryError::Limit(format!(
                "exceeded maximum resolution of {max_points} points per timeseries: the query \
                 has {} steps; try decreasing the query resolution (?step=XX) \
                 (limit --query.max-points-per-series)",
                steps.count()
            )));
        }
        let mut ev = self.evaluator(source, start, end, options);
        let val = ev.eval(&expr, steps)?;
        let mut series: Vec<Series> = match val {
            Val::Scalar(v) => vec![Series {
                labels: Vec::new(),
                points: v
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Point { t: steps.ts(i), v })
                    .collect(),
            }],
            Val::Vector(series) | Val::Matrix(series) => series
                .into_iter()
                .filter(|s| !s.points.is_empty())
                .map(|s| Series {
                    labels: Arc::try_unwrap(s.labels).unwrap_or_else(|shared| (*shared).clone()),
                    points: s.points,
                })
                .collect(),
            Val::String(_) => {
                return Err(QueryError::BadData(
                    "invalid expression type \"string\" for range query, must be Scalar or \
                     instant Vector"
                        .into(),
                ));
            }
        };
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(QueryResult {
            value: Value::Matrix(series),
            warnings: ev.warnings,
            stats: ev.stats,
            partial: ev.partial,
        })
    }

    fn evaluator<'s>(
        &self,
        source: &'s dyn Source,
        start: i64,
        end: i64,
        options: &QueryOptions,
    ) -> Evaluator<'s> {
        let lookback = options
            .lookback_delta
            .filter(|d| !d.is_zero())
            .unwrap_or(self.options.lookback_delta);
        let timeout = options.timeout.unwrap_or(self.options.timeout);
        Evaluator {
            source,
            lookback: lookback.as_millis() as i64,
            max_series: self.options.max_series,
            max_samples: self.options.max_samples,
            deadline: Instant::now() + timeout,
            query_start: start,
            query_end: end,
            subquery_step: self.options.subquery_step.as_millis() as i64,
            current_samples: 0,
            stats: QueryStats::default(),
            warnings: Vec::new(),
            partial: false,
            read_ahead: self.options.read_ahead,
        }
    }
}
