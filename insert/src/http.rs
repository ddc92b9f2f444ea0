//! HTTP endpoints of ingestion and the mapping of their errors to status
//! codes and metric labels.
//!
//! `POST /api/v1/import` (JSON lines, see `vmimport`):
//! - 204: every sample is stored (durable per the storage sync mode);
//! - 400: a bad line (nothing stored), or some samples rejected by storage
//!   (too old or too new; the others are stored and the message says how many);
//! - 413: body over `--insert.max-body-bytes` (nothing stored);
//! - 415: unknown `Content-Encoding` (nothing stored);
//! - 503 with `Retry-After`: storage unavailable for now (closed, i/o error);
//! - 500: anything else.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use strata_storage::{AddOutcome, RejectReason, Rejection, Storage, StorageError, Tenant};

use crate::config::Config;
use crate::decode::{DecodeError, decode_body};
use crate::metrics::Metrics;
use crate::vmimport::{self, ParseError};

/// The `protocol` label of the JSON-lines import.
pub const PROTOCOL_VMIMPORT: &str = "vmimport";

/// Seconds a client should wait before retrying when storage is unavailable.
const RETRY_AFTER_SECONDS: &str = "5";

/// Why an import request failed, with the status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read request body: {0}")]
    Body(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Parse(ParseError),
    #[error(
        "stored {accepted} of {total} samples; rejected {rejected}; first rejected: \
         series {series} at timestamp {timestamp} is {why}",
        total = accepted + rejected,
        series = first.series,
        timestamp = first.timestamp,
        why = describe(first.reason)
    )]
    PartlyRejected {
        accepted: u64,
        rejected: u64,
        first: Rejection,
    },
    #[error("cannot store samples: {0}")]
    Storage(StorageError),
    #[error("internal error while storing samples: {0}")]
    Internal(String),
}

fn describe(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::TooOld => "too old: before the retention period",
        RejectReason::TooNew => "too new: further in the future than --max-future allows",
        RejectReason::EmptyLabels => "no label with a non-empty value",
    }
}

impl ImportError {
    pub fn status(&self) -> StatusCode {
        match self {
            ImportError::Body(_) | ImportError::Parse(_) | ImportError::PartlyRejected { .. } => {
                StatusCode::BAD_REQUEST
            }
            ImportError::Decode(DecodeError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ImportError::Decode(DecodeError::UnsupportedEncoding(_)) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ImportError::Decode(DecodeError::Corrupt { .. }) => StatusCode::BAD_REQUEST,
            ImportError::Storage(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ImportError::Storage(_) | ImportError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `result` label of the requests counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ImportError::Body(_) => "bad_body",
            ImportError::Decode(DecodeError::TooLarge { .. }) => "too_large",
            ImportError::Decode(DecodeError::UnsupportedEncoding(_)) => "unsupported_encoding",
            ImportError::Decode(DecodeError::Corrupt { .. }) => "bad_compression",
            ImportError::Parse(_) => "parse_error",
            ImportError::PartlyRejected { .. } => "partly_rejected",
            ImportError::Storage(e) if e.is_transient() => "storage_unavailable",
            ImportError::Storage(_) => "storage_error",
            ImportError::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for ImportError {
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

#[derive(Clone)]
struct ImportState {
    storage: Arc<Storage>,
    tenant: Tenant,
    max_body_bytes: u64,
    metrics: Metrics,
}

/// Routes of the ingestion endpoints writing to `tenant`.
pub fn router(storage: Arc<Storage>, tenant: Tenant, config: &Config, metrics: Metrics) -> Router {
    let state = ImportState {
        storage,
        tenant,
        max_body_bytes: config.max_body_bytes,
        metrics,
    };
    let raw_limit = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/api/v1/import", post(import))
        .layer(DefaultBodyLimit::max(raw_limit))
        .with_state(state)
}

async fn import(
    State(state): State<ImportState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let metrics = state.metrics.clone();
    match import_body(state, &headers, body).await {
        Ok(()) => {
            metrics.request(PROTOCOL_VMIMPORT, "ok");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            metrics.request(PROTOCOL_VMIMPORT, e.metric_label());
            match &e {
                ImportError::Storage(_) | ImportError::Internal(_) => {
                    tracing::warn!(error = %e, "Import failed.")
                }
                _ => tracing::debug!(error = %e, "Import rejected."),
            }
            e.into_response()
        }
    }
}

async fn import_body(
    state: ImportState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), ImportError> {
    let raw = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ImportError::Decode(DecodeError::too_large(state.max_body_bytes))
        } else {
            ImportError::Body(rejection.body_text())
        }
    })?;
    let encoding = match headers.get(header::CONTENT_ENCODING) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    DecodeError::UnsupportedEncoding(String::from_utf8_lossy(v.as_bytes()).into())
                })?
                .to_string(),
        ),
    };
    let metrics = state.metrics.clone();
    // Decompression, parsing and the durable write all block: keep them off
    // the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
        let body = decode_body(encoding.as_deref(), &raw, state.max_body_bytes)?;
        drop(raw);
        let parsed = vmimport::parse(&body).map_err(|failure| {
            let reason = failure.error.problem.reason();
            metrics.rows_rejected(PROTOCOL_VMIMPORT, reason, failure.rows);
            ImportError::Parse(failure.error)
        })?;
        drop(body);
        if parsed.series.is_empty() {
            return Ok(AddOutcome::default());
        }
        state
            .storage
            .add(state.tenant, &parsed.series)
            .map_err(|e| {
                metrics.rows_rejected(PROTOCOL_VMIMPORT, "storage", parsed.rows);
                ImportError::Storage(e)
            })
    })
    .await
    .map_err(|e| ImportError::Internal(e.to_string()))??;

    let metrics = &state.metrics;
    metrics.rows_stored(PROTOCOL_VMIMPORT, outcome.accepted);
    if outcome.rejected == 0 {
        return Ok(());
    }
    let first = outcome.first_rejection.unwrap_or_else(|| Rejection {
        reason: RejectReason::TooOld,
        series: "(not reported by storage)".to_string(),
        timestamp: 0,
    });
    for (reason, rows) in &outcome.rejected_by_reason {
        metrics.rows_rejected(PROTOCOL_VMIMPORT, reason.as_str(), *rows);
    }
    Err(ImportError::PartlyRejected {
        accepted: outcome.accepted,
        rejected: outcome.rejected,
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_status_and_label() {
        let check = |e: ImportError, status: StatusCode, label: &str| {
            assert_eq!(e.status(), status, "{e}");
            assert_eq!(e.metric_label(), label, "{e}");
        };
        check(
            ImportError::Decode(DecodeError::too_large(10)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        );
        check(
            ImportError::Decode(DecodeError::UnsupportedEncoding("br".into())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        );
        check(
            ImportError::Storage(StorageError::Closed),
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
        );
        check(
            ImportError::Storage(StorageError::Wal(strata_storage::wal::WalError::Io {
                path: "wal/1".into(),
                source: std::io::Error::other("disk full"),
            })),
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
        );
        check(
            ImportError::Storage(StorageError::Part(
                strata_storage::part::PartError::Corrupted {
                    path: "p".into(),
                    offset: 7,
                    what: "bad checksum".into(),
                },
            )),
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
        );
        check(
            ImportError::Internal("panicked".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
        );
    }

    #[test]
    fn transient_errors_ask_for_a_retry() {
        let response = ImportError::Storage(StorageError::Closed).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static(RETRY_AFTER_SECONDS))
        );
    }

    #[test]
    fn partial_rejection_says_what_was_stored() {
        let e = ImportError::PartlyRejected {
            accepted: 3,
            rejected: 2,
            first: Rejection {
                reason: RejectReason::TooOld,
                series: r#"up{job="x"}"#.into(),
                timestamp: 1_000,
            },
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.to_string(),
            r#"stored 3 of 5 samples; rejected 2; first rejected: series up{job="x"} at timestamp 1000 is too old: before the retention period"#
        );
    }
}
