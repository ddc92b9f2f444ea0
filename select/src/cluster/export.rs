//! Raw sample export over a cluster: `/api/v1/export`, the same request and
//! line format as `single` (see `crate::export`), merged across nodes.
//!
//! Raw data is only exported complete: when the missing nodes could hold
//! series nobody else has (as many as the replication factor), the export
//! fails (503) instead of answering part of the data, as users of raw
//! exports expect (backups, migrations). Found before the first byte, that
//! is an error status naming the nodes; found later, the response is cut
//! without its final chunk, so the client sees a broken transfer.
//!
//! Memory: series of one metric name are merged at a time (nodes stream in
//! their own order, so a series' replicas meet only once every node has
//! answered), bounded by `--query.max-series` and `--query.max-samples`; a
//! single metric over them fails the export with a message naming them.
//! Each metric's merge gets `--query.timeout`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strata_storage::{Label, METRIC_NAME_LABEL, Matcher, StorageError};
use tokio::sync::{mpsc, oneshot};

use super::ClusterSource;
use crate::config::flag;
use crate::export::{ExportError, ExportRequest, parse_request, stream_error, write_series_line};
use crate::metrics::{ExportStats, Metrics};
use crate::source::Source;

/// Size at which a chunk of lines is handed to the HTTP body.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the merger and the client.
const CHANNEL_CHUNKS: usize = 4;

#[derive(Clone)]
struct ExportState {
    source: ClusterSource,
    timeout: Duration,
    metrics: Metrics,
}

/// Routes of the export endpoint reading `source`'s tenant; each metric's
/// merge may take `timeout`.
pub fn router(source: ClusterSource, timeout: Duration, metrics: Metrics) -> Router {
    Router::new()
        .route("/api/v1/export", get(export).post(export))
        .with_state(ExportState {
            source,
            timeout,
            metrics,
        })
}

async fn export(
    State(state): State<ExportState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let metrics = state.metrics.clone();
    match start(state, query, &headers, body).await {
        Ok(response) => {
            metrics.export_request("ok");
            response
        }
        Err(e) => {
            metrics.export_request(e.metric_label());
            if e.status().is_server_error() {
                tracing::warn!(error = %e, "Export failed.");
            }
            e.into_response()
        }
    }
}

async fn start(
    state: ExportState,
    query: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ExportError> {
    let request = parse_request(query.as_deref(), headers, &body)?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (chunks_tx, mut chunks_rx) = mpsc::channel(CHANNEL_CHUNKS);
    let task = tokio::task::spawn_blocking(move || produce(&state, &request, ready_tx, &chunks_tx));
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let why = match task.await {
                Err(e) => e.to_string(),
                Ok(()) => "export task ended early".to_string(),
            };
            return Err(ExportError::Internal(why));
        }
    }
    let stream = futures_util::stream::poll_fn(move |cx| chunks_rx.poll_recv(cx));
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The matcher sets to merge one after the other: each alternative of the
/// request narrowed to one metric name, plus the series without a name
/// where the alternative allows them.
fn plan(state: &ExportState, request: &ExportRequest) -> Result<Vec<Vec<Matcher>>, ExportError> {
    let mut plan = Vec::new();
    for matchers in &request.matchers {
        let deadline = Instant::now() + state.timeout;
        let names = state
            .source
            .label_values(METRIC_NAME_LABEL, matchers, request.range, 0, deadline)
            .map_err(ExportError::Storage)?;
        if names.partial {
            return Err(incomplete(&names.warnings));
        }
        for name in names.found {
            let mut narrowed = matchers.clone();
            narrowed.push(Matcher::eq(METRIC_NAME_LABEL, name));
            plan.push(narrowed);
        }
        let nameless_possible = matchers
            .iter()
            .filter(|m| m.name == METRIC_NAME_LABEL)
            .all(Matcher::matches_empty);
        if nameless_possible {
            let mut nameless = matchers.clone();
            nameless.push(Matcher::eq(METRIC_NAME_LABEL, ""));
            plan.push(nameless);
        }
    }
    Ok(plan)
}

fn incomplete(warnings: &[String]) -> ExportError {
    ExportError::Storage(StorageError::NodesUnavailable(format!(
        "raw exports are only answered complete: {}",
        warnings.join("; ")
    )))
}

/// Plans, reports whether the export can start, then merges and streams
/// one matcher set after the other.
fn produce(
    state: &ExportState,
    request: &ExportRequest,
    ready: oneshot::Sender<Result<(), ExportError>>,
    chunks: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let plan = match plan(state, request) {
        Ok(plan) => plan,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (tenant, metrics) = (state.source.tenant(), &state.metrics);
    let cluster = state.source.cluster();
    let union = request.matchers.len() > 1;
    let mut seen: HashSet<Vec<Label>> = HashSet::new();
    let mut stats = ExportStats::default();
    let mut buf = String::with_capacity(CHUNK_BYTES * 2);
    let mut ready = Some(ready);
    for matchers in plan {
        let deadline = Instant::now() + state.timeout;
        let failure = match cluster.search(tenant, &matchers, request.range, deadline) {
            Err(e) => Some(ExportError::Storage(e)),
            Ok(merged) if merged.partial => Some(incomplete(&merged.warnings)),
            Ok(merged) if merged.over_limit => Some(ExportError::TooLarge(format!(
                "cannot export the series matching {}: more than the query limits allow \
                 at once ({}, {}); export a shorter time range",
                render(&matchers),
                flag::MAX_SERIES,
                flag::MAX_SAMPLES
            ))),
            Ok(merged) => {
                // The first merge decides the status: an error before any
                // byte is an error status, not a cut stream.
                if let Some(ready) = ready.take()
                    && ready.send(Ok(())).is_err()
                {
                    return;
                }
                for series in merged.series {
                    if union && !seen.insert(series.labels.clone()) {
                        continue;
                    }
                    stats += write_series_line(&mut buf, &series);
                    if buf.len() >= CHUNK_BYTES {
                        let chunk =
                            std::mem::replace(&mut buf, String::with_capacity(CHUNK_BYTES * 2));
                        if chunks.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                            tracing::debug!(%tenant, "Export client went away.");
                            metrics.export_written(stats);
                            return;
                        }
                    }
                }
                None
            }
        };
        if let Some(e) = failure {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(e));
                return;
            }
            match &e {
                ExportError::Storage(storage) => stream_error(metrics, tenant, storage),
                _ => {
                    tracing::warn!(%tenant, error = %e, "Export cut short.");
                    metrics.export_stream_error("too_large");
                }
            }
            metrics.export_written(stats);
            if !buf.is_empty() && chunks.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
            let _ = chunks.blocking_send(Err(std::io::Error::other(e.to_string())));
            return;
        }
    }
    if let Some(ready) = ready.take() {
        // Nothing matched: an empty export.
        let _ = ready.send(Ok(()));
    }
    if !buf.is_empty() {
        let _ = chunks.blocking_send(Ok(Bytes::from(buf)));
    }
    metrics.export_written(stats);
}

/// `{a="1",b=~"2"}` for messages.
fn render(matchers: &[Matcher]) -> String {
    let parts: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    format!("{{{}}}", parts.join(","))
}
