//! The HTTP machinery every ingestion protocol shares: the admission gate,
//! body reading and decompression, the blocking parse-validate-write step,
//! and the mapping of errors to status codes and metric labels.
//!
//! Status codes, for every protocol unless its module says otherwise:
//! - 204: every sample is stored (durable per the storage sync mode);
//! - 400: the body does not parse (nothing stored), or some series or samples
//!   were rejected (the others are stored; the message says how many and
//!   names the first rejected series and why), or a storage node refused
//!   the rows as invalid;
//! - 413: body over `--insert.max-body-bytes`, before or after decompression
//!   (nothing stored);
//! - 415: unsupported `Content-Encoding` or `Content-Type` (nothing stored);
//! - 503 with `Retry-After`: retry later, nothing stored: the request waited
//!   longer than `--insert.max-queue-duration` for its turn, or storage is
//!   unavailable for now (closed, i/o error; in a cluster, too few storage
//!   nodes took the rows: see `cluster`). 503 rather than 429 because
//!   Prometheus drops a batch on 429 unless told otherwise;
//! - 500: anything else.
//!
//! `POST /api/v1/import` (JSON lines, see `vmimport`) is served here; OTLP
//! (`otlp::http`) answers in its own protocol's shapes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use strata_storage::Tenant;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::decode::{DecodeError, decode_body};
use crate::ingest::{Limits, Parsed, Pipeline, Report, RowSink, SinkError};
use crate::metrics::Metrics;
use crate::{otlp, vmimport};

/// The `protocol` label of the JSON-lines import.
pub const PROTOCOL_VMIMPORT: &str = "vmimport";

/// Seconds a client should wait before retrying when storage is unavailable.
pub const RETRY_AFTER_SECONDS: &str = "5";

/// A body that does not parse: nothing of it is stored.
#[derive(Debug, PartialEq)]
pub struct ParseFailure {
    /// The `reason` label of the rejected-rows counter.
    pub reason: &'static str,
    /// What is wrong and where (`line 3: ...`).
    pub message: String,
    /// Samples the body held, as far as they could be counted.
    pub rows: u64,
}

/// Why an ingestion request failed, with the status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read request body: {0}")]
    Body(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("unsupported content type {0:?}")]
    ContentType(String),
    #[error("{}", .0.message)]
    Parse(ParseFailure),
    #[error("{}", .0.summary())]
    PartlyRejected(Report),
    #[error(
        "too many concurrent ingestion requests: waited {waited:?} for one of \
         {limit} slots (--insert.max-concurrent-requests); retry later"
    )]
    Overloaded { waited: Duration, limit: usize },
    #[error("cannot store samples: {0}")]
    Storage(SinkError),
    #[error("internal error while storing samples: {0}")]
    Internal(String),
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Body(_) | IngestError::Parse(_) | IngestError::PartlyRejected(_) => {
                StatusCode::BAD_REQUEST
            }
            IngestError::Decode(DecodeError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Decode(DecodeError::UnsupportedEncoding(_))
            | IngestError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Decode(DecodeError::Corrupt { .. }) => StatusCode::BAD_REQUEST,
            IngestError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Storage(SinkError::Refused(_)) => StatusCode::BAD_REQUEST,
            IngestError::Storage(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Storage(_) | IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `result` label of the requests counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            IngestError::Body(_) => "bad_body",
            IngestError::Decode(DecodeError::TooLarge { .. }) => "too_large",
            IngestError::Decode(DecodeError::UnsupportedEncoding(_)) => "unsupported_encoding",
            IngestError::ContentType(_) => "unsupported_content_type",
            IngestError::Decode(DecodeError::Corrupt { .. }) => "bad_compression",
            IngestError::Parse(_) => "parse_error",
            IngestError::PartlyRejected(_) => "partly_rejected",
            IngestError::Overloaded { .. } => "overloaded",
            IngestError::Storage(SinkError::Refused(_)) => "storage_refused",
            IngestError::Storage(e) if e.is_transient() => "storage_unavailable",
            IngestError::Storage(_) => "storage_error",
            IngestError::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// What every ingestion handler shares.
#[derive(Clone)]
pub struct IngestState {
    pub pipeline: Pipeline,
    pub max_body_bytes: u64,
    pub metrics: Metrics,
}

/// Admission of requests: at most `limit` are read, parsed and written at
/// once, so memory stays bounded when storage is slower than the senders.
#[derive(Clone)]
struct Gate {
    slots: Arc<Semaphore>,
    limit: usize,
    max_wait: Duration,
}

/// Routes of the ingestion endpoints writing to `tenant` through `sink`,
/// behind their own admission gate.
pub fn router(sink: Arc<dyn RowSink>, tenant: Tenant, config: &Config, metrics: Metrics) -> Router {
    with_admission(routes(sink, tenant, config, metrics), config)
}

/// The ingestion endpoints of one tenant without an admission gate: for
/// callers that put several tenants behind one gate ([`with_admission`]).
pub fn routes(sink: Arc<dyn RowSink>, tenant: Tenant, config: &Config, metrics: Metrics) -> Router {
    let state = IngestState {
        pipeline: Pipeline {
            sink,
            tenant,
            limits: Arc::new(Limits::from_config(config)),
            metrics: metrics.clone(),
        },
        max_body_bytes: config.max_body_bytes,
        metrics,
    };
    Router::new()
        .route("/api/v1/import", post(import))
        .merge(crate::remotewrite::routes())
        .route("/opentelemetry/v1/metrics", post(otlp::http::export))
        .route("/api/v1/otlp/v1/metrics", post(otlp::http::export))
        .merge(crate::influx::routes())
        .merge(crate::promtext::routes())
        .with_state(state)
}

/// Puts `routes` behind one admission gate sized by `config`, and the raw
/// body limit.
pub fn with_admission(routes: Router, config: &Config) -> Router {
    let limit = config.concurrency();
    let gate = Gate {
        slots: Arc::new(Semaphore::new(limit)),
        limit,
        max_wait: config.max_queue_duration,
    };
    let raw_limit = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
    routes
        // Outermost: the body is read only after a slot is taken.
        .layer(DefaultBodyLimit::max(raw_limit))
        .layer(middleware::from_fn_with_state(gate, admit))
}

async fn admit(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let permit = tokio::time::timeout(gate.max_wait, gate.slots.clone().acquire_owned()).await;
    match permit {
        Ok(Ok(permit)) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        _ => IngestError::Overloaded {
            waited: started.elapsed(),
            limit: gate.limit,
        }
        .into_response(),
    }
}

/// The request's `Content-Encoding`, if any.
pub fn content_encoding(headers: &HeaderMap) -> Result<Option<String>, IngestError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            IngestError::Decode(DecodeError::UnsupportedEncoding(
                String::from_utf8_lossy(v.as_bytes()).into(),
            ))
        }),
    }
}

/// The request body, or why it could not be read (too large: the limit
/// named as a decode error; otherwise the rejection's text).
fn read_body(
    state: &IngestState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, IngestError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::Decode(DecodeError::too_large(state.max_body_bytes))
        } else {
            IngestError::Body(rejection.body_text())
        }
    })
}

/// Reads, decompresses, parses with `parse` and writes a request body, all
/// in a blocking task. The result is counted in the requests counter by
/// [`finish`].
pub async fn ingest_body<F>(
    state: &IngestState,
    protocol: &'static str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    parse: F,
) -> Result<Report, IngestError>
where
    F: FnOnce(&[u8]) -> Result<Parsed, ParseFailure> + Send + 'static,
{
    let raw = read_body(state, body)?;
    let encoding = content_encoding(headers)?;
    let state = state.clone();
    // Decompression, parsing and the durable write all block: keep them off
    // the async workers.
    tokio::task::spawn_blocking(move || {
        let body = decode_body(encoding.as_deref(), &raw, state.max_body_bytes)?;
        drop(raw);
        let parsed = parse(&body).map_err(|failure| {
            state
                .metrics
                .rows_rejected(protocol, failure.reason, failure.rows);
            IngestError::Parse(failure)
        })?;
        drop(body);
        state
            .pipeline
            .ingest(protocol, parsed)
            .map_err(IngestError::Storage)
    })
    .await
    .map_err(|e| IngestError::Internal(e.to_string()))?
}

/// [`ingest_body`] for a protocol that parses and writes in one step (the
/// written series may borrow from the decompressed body): `ingest` gets the
/// body and the pipeline.
pub async fn ingest_body_with<F>(
    state: &IngestState,
    protocol: &'static str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    ingest: F,
) -> Result<Report, IngestError>
where
    F: FnOnce(&[u8], &Pipeline) -> Result<Result<Report, SinkError>, ParseFailure> + Send + 'static,
{
    let raw = read_body(state, body)?;
    let encoding = content_encoding(headers)?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let body = decode_body(encoding.as_deref(), &raw, state.max_body_bytes)?;
        drop(raw);
        match ingest(&body, &state.pipeline) {
            Ok(written) => written.map_err(IngestError::Storage),
            Err(failure) => {
                state
                    .metrics
                    .rows_rejected(protocol, failure.reason, failure.rows);
                Err(IngestError::Parse(failure))
            }
        }
    })
    .await
    .map_err(|e| IngestError::Internal(e.to_string()))?
}

/// Counts the request and logs failures worth a look.
pub fn finish(metrics: &Metrics, protocol: &'static str, result: &Result<Report, IngestError>) {
    match result {
        Ok(report) if report.rejected == 0 => metrics.request(protocol, "ok"),
        Ok(_) => metrics.request(protocol, "partly_rejected"),
        Err(e) => {
            metrics.request(protocol, e.metric_label());
            match e {
                IngestError::Storage(_) | IngestError::Internal(_) => {
                    tracing::warn!(protocol, error = %e, "Ingestion failed.")
                }
                _ => tracing::debug!(protocol, error = %e, "Ingestion rejected."),
            }
        }
    }
}

/// The usual answer: 204 when everything was stored, 400 with the summary
/// when some series or samples were rejected, the error's status otherwise.
pub fn respond(result: Result<Report, IngestError>) -> Response {
    match result {
        Ok(report) if report.rejected == 0 => StatusCode::NO_CONTENT.into_response(),
        Ok(report) => IngestError::PartlyRejected(report).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn import(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = ingest_body(&state, PROTOCOL_VMIMPORT, &headers, body, |body| {
        vmimport::parse(body).map_err(|failure| ParseFailure {
            reason: failure.error.problem.reason(),
            message: failure.error.to_string(),
            rows: failure.rows,
        })
    })
    .await;
    finish(&state.metrics, PROTOCOL_VMIMPORT, &result);
    respond(result)
}

#[cfg(test)]
mod tests {
    use strata_storage::StorageError;

    use super::*;

    #[test]
    fn errors_map_to_status_and_label() {
        let check = |e: IngestError, status: StatusCode, label: &str| {
            assert_eq!(e.status(), status, "{e}");
            assert_eq!(e.metric_label(), label, "{e}");
        };
        check(
            IngestError::Decode(DecodeError::too_large(10)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        );
        check(
            IngestError::Decode(DecodeError::UnsupportedEncoding("br".into())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        );
        check(
            IngestError::Storage(StorageError::Closed.into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
        );
        check(
            IngestError::Storage(SinkError::Storage(StorageError::Wal(
                strata_storage::wal::WalError::Io {
                    path: "wal/1".into(),
                    source: std::io::Error::other("disk full"),
                },
            ))),
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
        );
        check(
            IngestError::Storage(SinkError::Storage(StorageError::Part(
                strata_storage::part::PartError::Corrupted {
                    path: "p".into(),
                    offset: 7,
                    what: "bad checksum".into(),
                },
            ))),
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
        );
        check(
            IngestError::Storage(SinkError::Unavailable("node a:1 is down".into())),
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
        );
        check(
            IngestError::Storage(SinkError::Refused("node a:1: bad series".into())),
            StatusCode::BAD_REQUEST,
            "storage_refused",
        );
        check(
            IngestError::Storage(SinkError::Failed("node a:1: protocol".into())),
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
        );
        check(
            IngestError::Internal("panicked".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
        );
    }

    #[test]
    fn transient_errors_ask_for_a_retry() {
        let response = IngestError::Storage(StorageError::Closed.into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static(RETRY_AFTER_SECONDS))
        );
    }

    #[test]
    fn partial_rejection_says_what_was_stored() {
        let mut report = Report {
            accepted: 3,
            rejected: 2,
            ..Report::default()
        };
        report.rejected_by_reason.insert("too_old", 2);
        report.first_rejection = Some(r#"series up{job="x"} at timestamp 1000: too old"#.into());
        let e = IngestError::PartlyRejected(report);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.to_string(),
            r#"stored 3 of 5 samples; rejected 2; first rejected: series up{job="x"} at timestamp 1000: too old"#
        );
    }

    #[test]
    fn overload_is_retryable() {
        let e = IngestError::Overloaded {
            waited: Duration::from_secs(10),
            limit: 4,
        };
        assert_eq!(e.metric_label(), "overloaded");
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }
}
