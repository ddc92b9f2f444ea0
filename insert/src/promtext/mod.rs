//! Prometheus text exposition and OpenMetrics text ingestion:
//! `POST /api/v1/import/prometheus` (and under `/prometheus`).
//!
//! The `timestamp` query parameter (integer Unix milliseconds, as
//! VictoriaMetrics reads it) is the timestamp of samples written without
//! one; without it, the receive time.
//! The format is OpenMetrics when `Content-Type` is
//! `application/openmetrics-text` or the body ends with `# EOF`, the text
//! format 0.0.4 otherwise (see [`Format::detect`]). Status codes are the
//! shared ones of [`crate::http`].

mod parse;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::post;

pub use parse::{Format, ParseError, ParseFailure, Problem, parse, seconds_to_millis};

use crate::http::{
    IngestError, IngestState, ParseFailure as HttpParseFailure, finish, ingest_body, respond,
};

/// The `protocol` label of both text formats.
pub const PROTOCOL: &str = "promtext";

/// The text formats' routes, state still to be given by the caller.
pub fn routes() -> Router<IngestState> {
    Router::new()
        .route("/api/v1/import/prometheus", post(import))
        .route("/prometheus/api/v1/import/prometheus", post(import))
}

async fn import(
    State(state): State<IngestState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let default_timestamp_ms = match params.get("timestamp").map(String::as_str) {
        None | Some("") => now_ms(),
        Some(text) => match text.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => {
                let result = Err(IngestError::Parse(HttpParseFailure {
                    reason: "invalid_timestamp",
                    message: format!(
                        "invalid timestamp parameter {text:?}: want integer Unix milliseconds, \
                         e.g. 1700000000000"
                    ),
                    rows: 0,
                }));
                finish(&state.metrics, PROTOCOL, &result);
                return respond(result);
            }
        },
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let result = ingest_body(&state, PROTOCOL, &headers, body, move |body| {
        let format = Format::detect(content_type.as_deref(), body);
        parse(body, default_timestamp_ms, format).map_err(|failure| HttpParseFailure {
            reason: failure.error.problem.reason(),
            message: failure.error.to_string(),
            rows: failure.rows,
        })
    })
    .await;
    finish(&state.metrics, PROTOCOL, &result);
    respond(result)
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
