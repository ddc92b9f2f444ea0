//! The Prometheus HTTP API (`/api/v1/...`), with Prometheus' JSON shapes,
//! status codes and `errorType`s, so that Grafana, promtool and the Go and
//! Python clients work unchanged.
//!
//! - `query`: `query`, `query_range`, `format_query`, `query_exemplars`.
//! - `series`: `series`.
//! - `labels`: `labels`, `label/<name>/values`.
//! - `status`: `status/buildinfo`, `status/tsdb`, `metadata`.
//! - `params`: parameter parsing; `json`: response encoding; `limits`:
//!   admission of queries.
//!
//! Every endpoint answers GET and POST (form body). Work that reads storage
//! or evaluates runs on a blocking thread.
//!
//! Error types and their status codes (as Prometheus): `bad_data` 400,
//! `execution` 422, `canceled` 499, `timeout` 503, `internal` 500,
//! `not_found` 404; `unavailable` is 503 here (Prometheus answers 500), with
//! `Retry-After`, because it always means "try again later": a query refused
//! by the admission limits or storage that is shutting down.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strata_storage::StorageError;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::promql::Engine;
use crate::source::Source;

pub mod json;
pub mod labels;
pub mod limits;
pub mod params;
pub mod query;
pub mod series;
pub mod status;

use params::ParamError;

/// Seconds a client should wait before retrying an `unavailable` answer.
const RETRY_AFTER_SECONDS: &str = "5";

/// Prometheus' `errorType`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Canceled,
    Timeout,
    Internal,
    Unavailable,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Canceled => "canceled",
            ErrorType::Timeout => "timeout",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            // nginx's "client closed request", as Prometheus uses.
            ErrorType::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ErrorType::Timeout | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error: its type and the message clients show.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorType,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorType::BadData, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorType::Internal, message)
    }

    /// Storage errors: retryable ones are `unavailable`, the rest `internal`.
    pub fn storage(e: &StorageError) -> ApiError {
        let kind = if e.is_transient() {
            ErrorType::Unavailable
        } else {
            ErrorType::Internal
        };
        ApiError::new(kind, format!("cannot read series: {e}"))
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> ApiError {
        ApiError::bad_data(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_response(
            self.kind.status(),
            json::error(self.kind.as_str(), &self.message),
        );
        if self.kind == ErrorType::Unavailable {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// A successful answer: `data` (already JSON) and warnings.
pub struct Answer {
    pub data: String,
    pub warnings: Vec<String>,
}

impl Answer {
    pub fn new(data: String) -> Answer {
        Answer {
            data,
            warnings: Vec::new(),
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What every API handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub source: Arc<dyn Source>,
    pub engine: Engine,
    pub config: Arc<Config>,
    pub gate: limits::Gate,
    pub metrics: Metrics,
}

impl ApiState {
    /// Counts the request, logs server-side failures, and renders the answer.
    pub fn finish(
        &self,
        endpoint: &'static str,
        started: Instant,
        result: Result<Answer, ApiError>,
    ) -> Response {
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(answer) => {
                self.metrics.api_request(endpoint, "ok", seconds);
                json_response(
                    StatusCode::OK,
                    json::success(&answer.data, &answer.warnings),
                )
            }
            Err(e) => {
                self.metrics.api_request(endpoint, e.kind.as_str(), seconds);
                if matches!(e.kind, ErrorType::Internal | ErrorType::Unavailable) {
                    tracing::warn!(endpoint, error = %e, "API request failed.");
                }
                e.into_response()
            }
        }
    }

    /// Runs `work` on a blocking thread; a panic becomes an `internal` error.
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(e) => Err(ApiError::internal(format!("request task failed: {e}"))),
        }
    }
}

/// Routes of the Prometheus API over `source`.
pub fn router(source: Arc<dyn Source>, config: &Config, metrics: Metrics) -> Router {
    let state = ApiState {
        source,
        engine: Engine::new(config.engine_options()),
        config: Arc::new(config.clone()),
        gate: limits::Gate::new(config),
        metrics,
    };
    Router::new()
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route(
            "/api/v1/format_query",
            get(query::format).post(query::format),
        )
        .route(
            "/api/v1/query_exemplars",
            get(query::exemplars).post(query::exemplars),
        )
        .route("/api/v1/series", get(series::series).post(series::series))
        .route("/api/v1/labels", get(labels::names).post(labels::names))
        .route(
            "/api/v1/label/{name}/values",
            get(labels::values).post(labels::values),
        )
        .route(
            "/api/v1/metadata",
            get(status::metadata).post(status::metadata),
        )
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route("/api/v1/status/tsdb", get(status::tsdb))
        .with_state(state)
}
