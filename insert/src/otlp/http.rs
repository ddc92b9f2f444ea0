//! `POST /opentelemetry/v1/metrics` and `POST /api/v1/otlp/v1/metrics`:
//! OTLP/HTTP with binary protobuf bodies (`Content-Type:
//! application/x-protobuf`; OTLP/JSON is answered 415), optionally gzip or
//! zstd compressed.
//!
//! Answers, as OTLP/HTTP asks:
//! - 200 with an `ExportMetricsServiceResponse`: everything stored (no
//!   `partial_success`), or some points not stored (`partial_success` with
//!   the count of rejected samples and skipped points, and a message naming
//!   the first one and why). Not retryable: the rest is stored.
//! - 400 (body does not decode; nothing stored), 413, 415: a
//!   `google.rpc.Status` protobuf whose `message` says what is wrong. Not
//!   retryable.
//! - 503 with `Retry-After` (overloaded, storage unavailable) and 500: a
//!   `google.rpc.Status` too; 503 is retryable.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Skipped;
use super::proto::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse, Status};
use crate::http::{
    IngestError, IngestState, ParseFailure, RETRY_AFTER_SECONDS, finish, ingest_body,
};
use crate::ingest::Report;

/// The `protocol` label of OTLP ingestion.
pub const PROTOCOL_OTLP: &str = "opentelemetry";

const PROTOBUF: &str = "application/x-protobuf";

/// gRPC status codes carried in `Status.code` (informative only).
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_INTERNAL: i32 = 13;
const CODE_UNAVAILABLE: i32 = 14;

/// The handler of both OTLP metrics paths.
pub async fn export(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = check_content_type(&headers) {
        let result = Err(e);
        finish(&state.metrics, PROTOCOL_OTLP, &result);
        return respond(result, Skipped::default());
    }
    let skipped = Arc::new(Mutex::new(Skipped::default()));
    let parse_skipped = skipped.clone();
    let max_series_bytes = state.max_body_bytes.saturating_mul(4);
    let result = ingest_body(&state, PROTOCOL_OTLP, &headers, body, move |body| {
        let translated =
            super::parse_limited(body, max_series_bytes).map_err(|e| ParseFailure {
                reason: e.reason(),
                message: e.to_string(),
                rows: 0,
            })?;
        if let Ok(mut slot) = parse_skipped.lock() {
            *slot = translated.skipped;
        }
        Ok(translated.parsed)
    })
    .await;
    let skipped = match skipped.lock() {
        Ok(mut slot) => std::mem::take(&mut *slot),
        Err(_) => Skipped::default(),
    };
    for (reason, points) in &skipped.by_reason {
        state.metrics.rows_rejected(PROTOCOL_OTLP, reason, *points);
    }
    match &result {
        Ok(report) if report.rejected == 0 && skipped.points > 0 => {
            state.metrics.request(PROTOCOL_OTLP, "partly_rejected")
        }
        _ => finish(&state.metrics, PROTOCOL_OTLP, &result),
    }
    respond(result, skipped)
}

/// Protobuf (or no type at all, as some senders do) passes; JSON and
/// anything else is 415.
fn check_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(()),
        "application/json" => Err(IngestError::ContentType(
            "application/json: OTLP/JSON is not supported; send binary protobuf \
             (Content-Type: application/x-protobuf)"
                .to_string(),
        )),
        _ => Err(IngestError::ContentType(format!(
            "{text}: want application/x-protobuf"
        ))),
    }
}

/// The OTLP/HTTP answer to a request's outcome.
pub fn respond(result: Result<Report, IngestError>, skipped: Skipped) -> Response {
    match result {
        Ok(report) => protobuf(StatusCode::OK, &export_response(&report, &skipped)),
        Err(e) => {
            let status = e.status();
            let code = match status {
                StatusCode::SERVICE_UNAVAILABLE => CODE_UNAVAILABLE,
                s if s.is_client_error() => CODE_INVALID_ARGUMENT,
                _ => CODE_INTERNAL,
            };
            let mut response = protobuf(
                status,
                &Status {
                    code,
                    message: e.to_string(),
                },
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            response
        }
    }
}

/// `partial_success` only when something was not stored, as the
/// specification asks (an empty one would read as a warning).
pub fn export_response(report: &Report, skipped: &Skipped) -> ExportMetricsServiceResponse {
    let rejected = report.rejected + skipped.points;
    if rejected == 0 {
        return ExportMetricsServiceResponse::default();
    }
    let mut parts = Vec::with_capacity(2);
    if report.rejected > 0 {
        parts.push(report.summary());
    }
    if skipped.points > 0 {
        parts.push(skipped.summary());
    }
    ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: parts.join("; "),
        }),
    }
}

fn protobuf(status: StatusCode, message: &impl prost::Message) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))],
        message.encode_to_vec(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use strata_storage::StorageError;

    use super::*;

    fn decode<M: prost::Message + Default>(response: Response) -> M {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let body = runtime
            .block_on(to_bytes(response.into_body(), usize::MAX))
            .expect("body");
        M::decode(body).expect("protobuf body")
    }

    #[test]
    fn content_types() {
        let check = |value: Option<&str>, want: Result<(), &str>| {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_str(v).expect("ascii"),
                );
            }
            match (check_content_type(&headers), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(want)) => {
                    assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
                    assert!(e.to_string().contains(want), "{e}");
                }
                (got, want) => panic!("{value:?}: got {got:?}, want {want:?}"),
            }
        };
        check(None, Ok(()));
        check(Some("application/x-protobuf"), Ok(()));
        check(Some("Application/X-Protobuf; charset=binary"), Ok(()));
        check(Some("application/protobuf"), Ok(()));
        check(Some("application/json"), Err("OTLP/JSON is not supported"));
        check(Some("text/plain"), Err("want application/x-protobuf"));
    }

    #[test]
    fn full_success_has_no_partial_success() {
        let report = Report {
            accepted: 5,
            ..Report::default()
        };
        let response = respond(Ok(report), Skipped::default());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static(PROTOBUF))
        );
        let body: ExportMetricsServiceResponse = decode(response);
        assert_eq!(body, ExportMetricsServiceResponse::default());
    }

    #[test]
    fn rejections_are_a_partial_success() {
        let mut report = Report {
            accepted: 5,
            rejected: 2,
            ..Report::default()
        };
        report.rejected_by_reason.insert("too_old", 2);
        report.first_rejection = Some("series up{} at timestamp 1: too old".into());
        let mut skipped = Skipped::default();
        skipped.add("exponential_histogram", 3, || "metric \"x\": nope".into());
        let response = respond(Ok(report), skipped);
        assert_eq!(response.status(), StatusCode::OK);
        let body: ExportMetricsServiceResponse = decode(response);
        let partial = body.partial_success.expect("partial success");
        assert_eq!(partial.rejected_data_points, 5);
        assert_eq!(
            partial.error_message,
            "stored 5 of 7 samples; rejected 2; first rejected: series up{} at timestamp 1: \
             too old; skipped 3 data points; first skipped: metric \"x\": nope"
        );
    }

    #[test]
    fn failures_are_a_status_message() {
        let check = |e: IngestError, status: StatusCode, code: i32, retry: bool| {
            let message = e.to_string();
            let response = respond(Err(e), Skipped::default());
            assert_eq!(response.status(), status, "{message}");
            assert_eq!(response.headers().contains_key(header::RETRY_AFTER), retry);
            let body: Status = decode(response);
            assert_eq!(body, Status { code, message });
        };
        check(
            IngestError::Parse(ParseFailure {
                reason: "invalid_protobuf",
                message: "cannot decode".into(),
                rows: 0,
            }),
            StatusCode::BAD_REQUEST,
            CODE_INVALID_ARGUMENT,
            false,
        );
        check(
            IngestError::ContentType("application/json".into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            CODE_INVALID_ARGUMENT,
            false,
        );
        check(
            IngestError::Storage(StorageError::Closed.into()),
            StatusCode::SERVICE_UNAVAILABLE,
            CODE_UNAVAILABLE,
            true,
        );
        check(
            IngestError::Internal("boom".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            CODE_INTERNAL,
            false,
        );
    }
}
