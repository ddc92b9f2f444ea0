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
//! Memory: the nodes' ordered streams are merged as they come (the same
//! k-way merge queries use), so an export holds a few batches per node and
//! the chunks in flight to the client, whatever its size (plus the label
//! sets already written when several selectors make a union). Metrics are
//! merged one after the other, each within `--query.timeout`, which counts
//! the time the client takes to read it: a stuck node cannot hold an
//! export forever.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strata_storage::{METRIC_NAME_LABEL, Matcher, StorageError, TimeRange};
use tokio::sync::{mpsc, oneshot};

use super::ClusterSource;
use crate::export::{CHANNEL_CHUNKS, ExportError, ExportRequest, LineWriter, parse_request};
use crate::metrics::Metrics;
use crate::source::Source;

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
            return Err(ExportError::Storage(incomplete(&names.warnings)));
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

fn incomplete(warnings: &[String]) -> StorageError {
    StorageError::NodesUnavailable(format!(
        "raw exports are only answered complete: {}",
        warnings.join("; ")
    ))
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
    let mut export = Export {
        out: LineWriter::new(
            state.source.tenant(),
            &state.metrics,
            chunks,
            request.matchers.len() > 1,
        ),
        ready: Some(ready),
    };
    for matchers in plan {
        let deadline = Instant::now() + state.timeout;
        match export.merge(state, &matchers, request.range, deadline) {
            Ok(Flow::Continue) => {}
            Ok(Flow::ClientGone) => return,
            Err(e) => return export.fail(e),
        }
    }
    if let Some(ready) = export.ready.take() {
        // Nothing matched: an empty export.
        let _ = ready.send(Ok(()));
    }
    export.out.finish();
}

/// Whether the export goes on after a matcher set.
enum Flow {
    Continue,
    ClientGone,
}

/// An export being written, and whether its status is decided yet.
struct Export<'a> {
    out: LineWriter<'a>,
    /// Taken when the status is decided: by the first merge that starts,
    /// or by a failure before any.
    ready: Option<oneshot::Sender<Result<(), ExportError>>>,
}

impl Export<'_> {
    /// Streams the merged series of `matchers` as the nodes send them.
    /// Nodes lost before the first series fail it before a byte of it is
    /// written; nodes lost later are only known at its end, when its lines
    /// are already on their way (the caller then cuts the response).
    fn merge(
        &mut self,
        state: &ExportState,
        matchers: &[Matcher],
        range: TimeRange,
        deadline: Instant,
    ) -> Result<Flow, StorageError> {
        let cluster = state.source.cluster();
        let mut stream = cluster.stream(state.source.tenant(), matchers, range, deadline)?;
        let (warnings, partial) = stream.notes();
        if partial {
            return Err(incomplete(&warnings));
        }
        let late = stream.late();
        // The first merge decides the status: an error before any byte is
        // an error status, not a cut stream.
        if let Some(ready) = self.ready.take()
            && ready.send(Ok(())).is_err()
        {
            return Ok(Flow::ClientGone);
        }
        for series in stream {
            if !self.out.write(&series?) {
                return Ok(Flow::ClientGone);
            }
        }
        let (warnings, partial) = late.take();
        if partial {
            return Err(incomplete(&warnings));
        }
        Ok(Flow::Continue)
    }

    /// Ends the export with `e`: an error status when nothing was sent
    /// yet, else what was gathered and then a cut.
    fn fail(mut self, e: StorageError) {
        match self.ready.take() {
            Some(ready) => {
                let _ = ready.send(Err(ExportError::Storage(e)));
            }
            None => self.out.fail(&e),
        }
    }
}
