//! InfluxDB line protocol ingestion: `POST /write`, `/influx/write`,
//! `/api/v2/write`, and the probes clients send first (`/ping`, `/query`).
//!
//! Parameters: `precision` (v1 `n`, `u`, `ms`, `s`, `m`, `h`; v2 `ns`, `us`,
//! `ms`, `s`; default nanoseconds), `db` (v1) or `bucket` (v2) becomes the
//! `db` label of lines without a `db` tag; `org`, `rp`, `u`, `p` and
//! authorization headers are accepted and ignored. See [`parse`] for the
//! format and naming, and `docs/http-api.md`.
//!
//! Status codes are the shared ones of [`crate::http`]. String fields are not
//! numbers: they are skipped and counted in the rejected-rows counter with
//! reason `string_field`; a request whose only problem is string fields is
//! still answered 204, because InfluxDB clients treat anything else as a
//! failure and would retry or drop the numeric fields of the same points.

mod parse;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use parse::{Batch, Options, ParseError, ParseFailure, Precision, Problem, parse};

use crate::http::{IngestError, IngestState, ParseFailure as HttpParseFailure, finish, respond};

/// The `protocol` label of the line protocol.
pub const PROTOCOL: &str = "influx";

/// The `reason` label of skipped string fields.
pub const STRING_FIELD_REASON: &str = "string_field";

/// The line protocol's routes, state still to be given by the caller.
pub fn routes() -> Router<IngestState> {
    Router::new()
        .route("/write", post(write))
        .route("/influx/write", post(write))
        .route("/api/v2/write", post(write))
        .route("/influx/api/v2/write", post(write))
        .route("/ping", get(ping).head(ping))
        .route("/influx/ping", get(ping).head(ping))
        .route("/query", get(query).post(query))
        .route("/influx/query", get(query).post(query))
}

async fn write(
    State(state): State<IngestState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let precision = match params.get("precision").map(String::as_str) {
        None | Some("") => Precision::Nanoseconds,
        Some(text) => match Precision::from_param(text) {
            Some(p) => p,
            None => {
                let result = Err(IngestError::Parse(HttpParseFailure {
                    reason: "invalid_precision",
                    message: format!(
                        "invalid precision {text:?}: want ns, us, ms or s (v2), n, u, ms, s, m or h (v1)"
                    ),
                    rows: 0,
                }));
                finish(&state.metrics, PROTOCOL, &result);
                return respond(result);
            }
        },
    };
    let db = params
        .get("db")
        .or_else(|| params.get("bucket"))
        .cloned()
        .unwrap_or_default();
    let options = Options {
        precision,
        default_timestamp_ms: now_ms(),
        db,
    };
    let metrics = state.metrics.clone();
    let result = crate::http::ingest_body(&state, PROTOCOL, &headers, body, move |body| {
        let batch = parse(body, &options).map_err(|failure| HttpParseFailure {
            reason: failure.error.problem.reason(),
            message: failure.error.to_string(),
            rows: failure.rows,
        })?;
        metrics.rows_rejected(PROTOCOL, STRING_FIELD_REASON, batch.strings_skipped);
        Ok(batch.parsed)
    })
    .await;
    finish(&state.metrics, PROTOCOL, &result);
    respond(result)
}

/// Clients probe `/ping` before writing; 204 with a version header as
/// InfluxDB answers.
async fn ping() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        "X-Influxdb-Version",
        HeaderValue::from_static("1.8-compatible"),
    );
    response
}

/// Some v1 clients send `CREATE DATABASE` to `/query` at start and stop on
/// an error; nothing needs creating here, so every statement succeeds with
/// an empty result.
async fn query() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"results":[{"statement_id":0}]}"#,
    )
        .into_response()
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
