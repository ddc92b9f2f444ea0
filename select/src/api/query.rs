//! `query`, `query_range`: PromQL evaluation, with the admission gate, the
//! timeout and the per-request parameters (`limit`, `stats`,
//! `lookback_delta`, `timeout`). Also `format_query` and `query_exemplars`.
//!
//! `data` of a query, with `stats` when the `stats` parameter is not empty:
//!
//! ```text
//! {"resultType":"vector","result":[...],"stats":{"timings":{"evalTotalTime":0.01,
//!   "resultSortTime":0,"queryPreparationTime":0,"innerEvalTime":0.01,
//!   "execQueueTime":0.001,"execTotalTime":0.011},
//!   "samples":{"totalQueryableSamples":120,"peakSamples":40}}}
//! ```

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use promql_parser::parser::Expr;

use super::json;
use super::params::{ParamError, Params};
use super::{Answer, ApiError, ApiState, ErrorType};
use crate::config::flag;
use crate::promql::{QueryError, QueryOptions, QueryResult, Value};

/// Warning added when `limit` cut the result.
pub const TRUNCATED_WARNING: &str = "results truncated due to limit";

/// What to evaluate.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Instant { time: i64 },
    Range { start: i64, end: i64, step: i64 },
}

/// A validated query request.
struct QueryRequest {
    kind: Kind,
    query: String,
    options: QueryOptions,
    limit: Option<usize>,
    stats: bool,
    timeout: Duration,
}

pub async fn instant(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .serve("query", query, headers, body, async |params, started| {
            let limit = params.limit()?;
            let time = params.time_or("time", now_ms())?;
            let request = finish_request(&state, &params, Kind::Instant { time }, limit)?;
            evaluate(&state, request, started).await
        })
        .await
}

pub async fn range(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .serve(
            "query_range",
            query,
            headers,
            body,
            async |params, started| {
                let limit = params.limit()?;
                let start = params.time("start")?;
                let end = params.time("end")?;
                if end < start {
                    return Err(ParamError::invalid(
                        "end",
                        "end timestamp must not be before start time",
                    )
                    .into());
                }
                let step = params.duration("step")?.unwrap_or_default();
                if step.is_zero() {
                    // `duration` reads negative steps as zero.
                    if params.get("step").is_none() {
                        return Err(ParamError::invalid(
                            "step",
                            "cannot parse \"\" to a valid duration",
                        )
                        .into());
                    }
                    return Err(ParamError::invalid(
                        "step",
                        "zero or negative query resolution step widths are not accepted. \
                 Try a positive integer",
                    )
                    .into());
                }
                let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
                if step_ms == 0 {
                    return Err(ParamError::invalid(
                        "step",
                        "step widths below 1ms are not supported",
                    )
                    .into());
                }
                check_points(&state, start, end, step).inspect_err(|_| {
                    state.metrics.query_rejected("max_points_per_series");
                })?;
                let kind = Kind::Range {
                    start,
                    end,
                    step: step_ms,
                };
                let request = finish_request(&state, &params, kind, limit)?;
                evaluate(&state, request, started).await
            },
        )
        .await
}

/// Refuses range queries with more points per series than the limit.
fn check_points(state: &ApiState, start: i64, end: i64, step: Duration) -> Result<(), ApiError> {
    let max = state.config.max_points_per_series;
    if max == 0 {
        return Ok(());
    }
    // As Prometheus: whole steps in the range, in nanoseconds.
    let points = (i128::from(end) - i128::from(start)) * 1_000_000 / step.as_nanos().max(1) as i128;
    if points > max as i128 {
        // Prometheus' exact words at its fixed limit; naming the flag once
        // an operator has changed it.
        let flag_note = if max == crate::config::DEFAULT_MAX_POINTS_PER_SERIES {
            String::new()
        } else {
            format!(" (set by {})", flag::MAX_POINTS_PER_SERIES)
        };
        return Err(ApiError::bad_data(format!(
            "exceeded maximum resolution of {} points per timeseries{flag_note}. Try \
             decreasing the query resolution (?step=XX)",
            with_thousands(max),
        )));
    }
    Ok(())
}

/// `11000` as `11,000`.
fn with_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The parameters after the time ones, in Prometheus' order of checking.
fn finish_request(
    state: &ApiState,
    params: &Params,
    kind: Kind,
    limit: Option<usize>,
) -> Result<QueryRequest, ApiError> {
    let timeout = match params.duration("timeout")? {
        Some(t) => t.min(state.config.timeout),
        None => state.config.timeout,
    };
    let lookback_delta = params
        .get("lookback_delta")
        .map(|text| {
            super::params::parse_duration(text).map_err(|e| {
                ApiError::bad_data(format!("error parsing lookback delta duration: {e}"))
            })
        })
        .transpose()?
        .filter(|d| !d.is_zero());
    let query = params.get("query").unwrap_or_default().to_string();
    // Parse errors are refused here, before the query takes a slot; the
    // engine parses again (cheap next to evaluation).
    crate::promql::syntax::parse(&query)
        .map_err(|e| ParamError::invalid("query", e.to_string()))?;
    Ok(QueryRequest {
        kind,
        query,
        options: QueryOptions {
            lookback_delta,
            timeout: Some(timeout),
        },
        limit,
        stats: params.get("stats").is_some(),
        timeout,
    })
}

/// Waits for a slot, evaluates on a blocking thread, renders the answer.
async fn evaluate(
    state: &ApiState,
    mut request: QueryRequest,
    started: Instant,
) -> Result<Answer, ApiError> {
    let deadline = started + request.timeout;
    let permit = state
        .gate
        .admit(deadline.saturating_duration_since(Instant::now()))
        .await
        .map_err(|e| {
            state.metrics.query_rejected(e.reason());
            let kind = match e {
                super::limits::AdmitError::Timeout => ErrorType::Timeout,
                _ => ErrorType::Unavailable,
            };
            ApiError::new(kind, e.to_string())
        })?;
    let queued = started.elapsed();
    let remaining = deadline.saturating_duration_since(Instant::now());
    request.options.timeout = Some(remaining);

    let source = state.source.clone();
    let engine = state.engine.clone();
    let task = tokio::task::spawn_blocking(move || {
        // The slot stays taken until evaluation really ends, even when the
        // client was answered at the timeout.
        let _permit = permit;
        let evaluating = Instant::now();
        let result = match request.kind {
            Kind::Instant { time } => {
                engine.instant(&*source, &request.query, time, &request.options)
            }
            Kind::Range { start, end, step } => {
                engine.range(&*source, &request.query, start, end, step, &request.options)
            }
        };
        let timings = Timings {
            queue: queued,
            eval: evaluating.elapsed(),
            started,
        };
        result.map(|r| render(r, request.limit, request.stats.then_some(timings)))
    });
    match tokio::time::timeout(remaining, task).await {
        Err(_) => {
            state.metrics.query_rejected("timeout");
            Err(ApiError::new(
                ErrorType::Timeout,
                "query timed out in expression evaluation",
            ))
        }
        Ok(Err(e)) => Err(ApiError::internal(format!("query task failed: {e}"))),
        Ok(Ok(Err(e))) => Err(query_error(state, e)),
        Ok(Ok(Ok(answer))) => Ok(answer),
    }
}

/// Maps an engine error to its `errorType` (as Prometheus does).
fn query_error(state: &ApiState, e: QueryError) -> ApiError {
    match e {
        QueryError::BadData(message) => ParamError::invalid("query", message).into(),
        QueryError::Execution(message) => ApiError::new(ErrorType::Execution, message),
        QueryError::Limit(message) => {
            state.metrics.query_rejected("engine_limit");
            ApiError::new(ErrorType::Execution, message)
        }
        QueryError::Timeout(_) => {
            state.metrics.query_rejected("timeout");
            ApiError::new(ErrorType::Timeout, e.to_string())
        }
        QueryError::Storage(strata_storage::StorageError::LimitExceeded(message)) => {
            state.metrics.query_rejected("engine_limit");
            ApiError::new(ErrorType::Execution, message)
        }
        QueryError::Storage(e) => ApiError::storage(&e),
    }
}

struct Timings {
    queue: Duration,
    eval: Duration,
    started: Instant,
}

/// Applies `limit` and writes `data`.
fn render(result: QueryResult, limit: Option<usize>, timings: Option<Timings>) -> Answer {
    let QueryResult {
        mut value,
        mut warnings,
        stats,
        partial,
    } = result;
    if let Some(limit) = limit {
        let truncated = match &mut value {
            Value::Vector(v) if v.len() > limit => {
                v.truncate(limit);
                true
            }
            Value::Matrix(m) if m.len() > limit => {
                m.truncate(limit);
                true
            }
            _ => false,
        };
        if truncated {
            warnings.push(TRUNCATED_WARNING.to_string());
        }
    }
    let mut data = String::with_capacity(256);
    data.push('{');
    json::push_result(&mut data, &value);
    if let Some(t) = timings {
        let eval = t.eval.as_secs_f64();
        data.push_str(",\"stats\":{\"timings\":{\"evalTotalTime\":");
        push_number(&mut data, eval);
        data.push_str(",\"resultSortTime\":0,\"queryPreparationTime\":0,\"innerEvalTime\":");
        push_number(&mut data, eval);
        data.push_str(",\"execQueueTime\":");
        push_number(&mut data, t.queue.as_secs_f64());
        data.push_str(",\"execTotalTime\":");
        push_number(&mut data, t.started.elapsed().as_secs_f64());
        data.push_str("},\"samples\":{\"totalQueryableSamples\":");
        data.push_str(&stats.samples_loaded.to_string());
        data.push_str(",\"peakSamples\":");
        data.push_str(&stats.peak_samples.to_string());
        data.push_str("}}");
    }
    data.push('}');
    Answer {
        data,
        warnings,
        partial,
    }
}

/// A float as a JSON number, the way Go's encoder writes one.
fn push_number(out: &mut String, v: f64) {
    if v != 0.0 && v.abs() < 1e-6 {
        out.push_str(&format!("{v:e}"));
    } else {
        json::push_float(out, v);
    }
}

pub async fn format(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .serve("format_query", query, headers, body, async |params, _| {
            let expr = crate::promql::syntax::parse(params.get("query").unwrap_or_default())
                .map_err(|e| ParamError::invalid("query", e.to_string()))?;
            let mut data = String::new();
            json::push_str(&mut data, &expr.prettify());
            Ok(Answer::new(data))
        })
        .await
}

/// No exemplars are stored: a valid request gets an empty list.
pub async fn exemplars(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = (|| {
        let params = Params::from_request(query.as_deref(), &headers, &body)?;
        let range = params.range()?;
        if range.end < range.start {
            return Err(ApiError::bad_data(
                "end timestamp must not be before start timestamp",
            ));
        }
        let expr = crate::promql::syntax::parse(params.get("query").unwrap_or_default())
            .map_err(|e| ApiError::bad_data(e.to_string()))?;
        Ok(has_selector(&expr))
    })();
    match result {
        // As Prometheus: a query without selectors has no exemplars to
        // look for, answered with an empty 204.
        Ok(false) => {
            let seconds = started.elapsed().as_secs_f64();
            state.metrics.api_request("query_exemplars", "ok", seconds);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(true) => {
            let answer = Ok(Answer::new("[]".to_string()));
            state
                .finish("query_exemplars", started, &headers, answer)
                .await
        }
        Err(e) => {
            state
                .finish("query_exemplars", started, &headers, Err(e))
                .await
        }
    }
}

/// Whether `expr` reads any series.
fn has_selector(expr: &Expr) -> bool {
    match expr {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) => true,
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => false,
        Expr::Aggregate(a) => has_selector(&a.expr) || a.param.as_deref().is_some_and(has_selector),
        Expr::Unary(u) => has_selector(&u.expr),
        Expr::Binary(b) => has_selector(&b.lhs) || has_selector(&b.rhs),
        Expr::Paren(p) => has_selector(&p.expr),
        Expr::Subquery(q) => has_selector(&q.expr),
        Expr::Call(c) => c.args.args.iter().any(|a| has_selector(a)),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use strata_storage::Label;

    use super::*;
    use crate::promql::{QueryStats, Sample};

    #[test]
    fn thousands() {
        for (n, want) in [
            (0, "0"),
            (999, "999"),
            (11_000, "11,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(with_thousands(n), want);
        }
    }

    #[test]
    fn limit_truncates_vectors_with_a_warning() {
        let sample = |v: f64| Sample {
            labels: vec![Label::new("i", v.to_string())],
            t: 1_000,
            v,
        };
        let result = QueryResult {
            value: Value::Vector(vec![sample(1.0), sample(2.0), sample(3.0)]),
            warnings: vec!["w".into()],
            stats: QueryStats::default(),
            partial: false,
        };
        let answer = render(result.clone(), Some(2), None);
        assert_eq!(
            answer.data,
            r#"{"resultType":"vector","result":[{"metric":{"i":"1"},"value":[1,"1"]},{"metric":{"i":"2"},"value":[1,"2"]}]}"#
        );
        assert_eq!(answer.warnings, vec!["w", TRUNCATED_WARNING]);
        assert_eq!(render(result, Some(3), None).warnings, vec!["w"]);
    }

    #[test]
    fn stats_have_prometheus_fields() {
        let result = QueryResult {
            value: Value::Scalar { t: 0, v: 1.0 },
            warnings: vec![],
            stats: QueryStats {
                samples_loaded: 12,
                peak_samples: 4,
                series_loaded: 3,
            },
            partial: false,
        };
        let timings = Timings {
            queue: Duration::ZERO,
            eval: Duration::from_millis(5),
            started: Instant::now(),
        };
        let data = render(result, None, Some(timings)).data;
        let parsed: serde_json::Value = serde_json::from_str(&data).expect("json");
        let stats = &parsed["stats"];
        for field in [
            "evalTotalTime",
            "resultSortTime",
            "queryPreparationTime",
            "innerEvalTime",
            "execQueueTime",
            "execTotalTime",
        ] {
            assert!(stats["timings"][field].is_number(), "{field} in {data}");
        }
        assert_eq!(stats["timings"]["evalTotalTime"], 0.005);
        assert_eq!(stats["samples"]["totalQueryableSamples"], 12);
        assert_eq!(stats["samples"]["peakSamples"], 4);
    }
}
