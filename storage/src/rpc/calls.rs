//! Running one call on the server: decode, ask the [`crate::cluster::LocalNode`],
//! reply; a search (plain or ordered) streams its series in batches as the
//! client grants credit.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::codec::put_uvarint;
use super::frame::{FrameError, Kind, encode_frame};
use super::messages::{self, MessageError, Method, Request};
use super::metrics::ServerMetrics;
use super::serve_conn::{Outbox, remote};
use super::server::Shared;
use crate::cluster::{Node, NodeError, SeriesQuery};
use crate::engine::SeriesIter;

/// Uncompressed bytes of series per search batch: big enough that framing
/// and compression amortize, small enough that a stream's credit window
/// stays a few MiB.
const BATCH_TARGET_BYTES: usize = 256 * 1024;
/// Most credit a client may grant at once.
const MAX_CREDIT: u32 = 64;

pub(super) struct Call {
    pub method: Method,
    pub id: u32,
    pub body: Vec<u8>,
    pub received: Instant,
    pub deadline: Instant,
    /// Held while working; a search gives it back between batches.
    pub worker: OwnedSemaphorePermit,
    /// The call's place among the connection's open calls; given back
    /// before the final frame is queued, so that a client that saw the end
    /// of a call never finds its slot still taken.
    pub slot: OwnedSemaphorePermit,
    pub credit: Option<Arc<Semaphore>>,
    pub outbox: Outbox,
    pub shared: Arc<Shared>,
}

/// Counts the call once it ends; a call aborted by a cancel frame (or a
/// closed connection) counts as `cancelled`.
struct Recorder {
    metrics: ServerMetrics,
    method: Method,
    received: Instant,
    outcome: &'static str,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics.call(
            self.method.name(),
            self.outcome,
            self.received.elapsed().as_secs_f64(),
        );
    }
}

fn outcome<T>(result: &Result<T, NodeError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    }
}

/// Runs the call to its end; returns its request id.
pub(super) async fn run(call: Call) -> u32 {
    let id = call.id;
    call.shared.metrics.in_flight.inc();
    let mut recorder = Recorder {
        metrics: call.shared.metrics.clone(),
        method: call.method,
        received: call.received,
        outcome: "cancelled",
    };
    recorder.outcome = match call.method {
        method if method.is_stream() => search(call).await,
        _ => unary(call).await,
    };
    id
}

fn decode_failure(e: MessageError) -> NodeError {
    match e {
        // A bad regex is the query's fault, not the protocol's.
        MessageError::Matcher(e) => remote(e.to_string()),
        MessageError::Codec(e) => NodeError::Protocol {
            addr: String::new(),
            detail: e.to_string(),
        },
    }
}

async fn decode(method: Method, body: Vec<u8>) -> Result<Request, NodeError> {
    let decoded = if method == Method::Write {
        // Write bodies run to megabytes: off the async threads.
        tokio::task::spawn_blocking(move || messages::decode_request(method, &body))
            .await
            .map_err(|e| remote(format!("decoding task failed: {e}")))?
    } else {
        messages::decode_request(method, &body)
    };
    decoded.map(|(_, req)| req).map_err(decode_failure)
}

async fn unary(call: Call) -> &'static str {
    let Call {
        method,
        id,
        body,
        deadline,
        worker,
        slot,
        outbox,
        shared,
        ..
    } = call;
    let node = &shared.node;
    let result = match decode(method, body).await {
        Err(e) => Err(e),
        Ok(req) => match req {
            Request::Write { tenant, rows } => node
                .write(tenant, rows, deadline)
                .await
                .map(|o| messages::encode_outcome(&o)),
            Request::Series(q) => node
                .series(q, deadline)
                .await
                .map(|v| messages::encode_label_sets(&v)),
            Request::LabelNames(q) => node
                .label_names(q, deadline)
                .await
                .map(|v| messages::encode_strings(&v)),
            Request::LabelValues { name, query } => node
                .label_values(name, query, deadline)
                .await
                .map(|v| messages::encode_strings(&v)),
            Request::Cardinality {
                tenant,
                range,
                limit,
            } => node
                .cardinality(tenant, range, limit, deadline)
                .await
                .map(|c| messages::encode_cardinality(&c)),
            Request::DeleteSeries { tenant, matchers } => node
                .delete_series(tenant, matchers, deadline)
                .await
                .map(messages::encode_count),
            Request::Tenants { range } => node
                .tenants(range, deadline)
                .await
                .map(|t| messages::encode_tenants(&t)),
            Request::Status => node
                .status(deadline)
                .await
                .map(|s| messages::encode_status(&s)),
            Request::Search { .. } => Err(remote("search is a streamed call".into())),
        },
    };
    drop(worker);
    drop(slot);
    let outcome = outcome(&result);
    match result {
        Ok(body) => outbox.send(Kind::Reply, id, &body).await,
        Err(e) => outbox.send_error(id, &e).await,
    };
    outcome
}

async fn search(call: Call) -> &'static str {
    let Call {
        method,
        id,
        body,
        deadline,
        worker,
        slot,
        credit,
        outbox,
        shared,
        ..
    } = call;
    let result = stream(method, id, body, deadline, worker, credit, &outbox, &shared).await;
    drop(slot);
    let outcome = outcome(&result);
    match result {
        Ok(()) => outbox.send(Kind::Reply, id, &[]).await,
        Err(e) => outbox.send_error(id, &e).await,
    };
    outcome
}

fn deadline_exceeded() -> NodeError {
    NodeError::DeadlineExceeded {
        addr: String::new(),
    }
}

/// Sends the batches of a search; the caller sends the final frame.
#[allow(clippy::too_many_arguments)]
async fn stream(
    method: Method,
    id: u32,
    body: Vec<u8>,
    deadline: Instant,
    worker: OwnedSemaphorePermit,
    credit: Option<Arc<Semaphore>>,
    outbox: &Outbox,
    shared: &Shared,
) -> Result<(), NodeError> {
    let (query, granted, ordered) = match messages::decode_request(method, &body) {
        Ok((
            _,
            Request::Search {
                query,
                credit,
                ordered,
            },
        )) => (query, credit, ordered),
        Ok(_) => return Err(remote("not a search request".into())),
        Err(e) => return Err(decode_failure(e)),
    };
    let credit = credit.unwrap_or_else(|| Arc::new(Semaphore::new(0)));
    credit.add_permits(granted.min(MAX_CREDIT) as usize);
    let deadline_at = tokio::time::Instant::from_std(deadline);
    let storage = shared.node.storage().clone();
    let SeriesQuery {
        tenant,
        matchers,
        range,
        limit,
    } = query;
    let started = tokio::task::spawn_blocking(move || {
        if ordered {
            storage.search_ordered(tenant, &matchers, range)
        } else {
            storage.search(tenant, &matchers, range)
        }
    });
    let mut iter = match tokio::time::timeout_at(deadline_at, started).await {
        Err(_) => return Err(deadline_exceeded()),
        Ok(Err(e)) => return Err(remote(format!("search task failed: {e}"))),
        Ok(Ok(Err(e))) => return Err(remote(e.to_string())),
        Ok(Ok(Ok(iter))) => iter,
    };
    drop(worker);
    let mut left = if limit == 0 { usize::MAX } else { limit };
    let max_frame = outbox.max_frame_bytes;
    let target = BATCH_TARGET_BYTES.min(max_frame as usize / 2);
    loop {
        // Credit first: a client that does not take batches costs no work.
        match tokio::time::timeout_at(deadline_at, credit.acquire()).await {
            Err(_) => return Err(deadline_exceeded()),
            Ok(Err(_)) => return Err(remote("stream closed".into())),
            Ok(Ok(permit)) => permit.forget(),
        }
        let worker = match tokio::time::timeout_at(
            deadline_at,
            shared.workers.clone().acquire_owned(),
        )
        .await
        {
            Err(_) => return Err(deadline_exceeded()),
            Ok(Err(_)) => return Err(remote("the server is stopping".into())),
            Ok(Ok(worker)) => worker,
        };
        let batch = tokio::task::spawn_blocking(move || {
            let batch = fill_batch(&mut iter, ordered, left, target, id, max_frame);
            (iter, batch)
        });
        let (back, batch) = match tokio::time::timeout_at(deadline_at, batch).await {
            Err(_) => return Err(deadline_exceeded()),
            Ok(Err(e)) => return Err(remote(format!("search task failed: {e}"))),
            Ok(Ok(produced)) => produced,
        };
        drop(worker);
        iter = back;
        let Batch {
            frame,
            series,
            done,
        } = batch?;
        left -= series;
        if let Some(frame) = frame
            && outbox.frames.send(frame).await.is_err()
        {
            return Err(remote("connection closed".into()));
        }
        if done {
            return Ok(());
        }
    }
}

struct Batch {
    /// None when no series was left.
    frame: Option<Vec<u8>>,
    series: usize,
    /// No series follow.
    done: bool,
}

/// Reads series until about `target` bytes or `left` series, and frames
/// them (compressing on this blocking thread, not an async one); each with
/// its key when `ordered`.
fn fill_batch(
    iter: &mut SeriesIter,
    ordered: bool,
    left: usize,
    target: usize,
    id: u32,
    max_frame: u32,
) -> Result<Batch, NodeError> {
    let mut rest = Vec::with_capacity(target + target / 4);
    let mut series = 0;
    let mut done = false;
    while rest.len() < target {
        if series == left {
            done = true;
            break;
        }
        match iter.next_keyed() {
            None => {
                done = true;
                break;
            }
            Some(Err(e)) => return Err(remote(e.to_string())),
            Some(Ok(s)) => {
                if ordered {
                    messages::put_keyed_series(&mut rest, &s);
                } else {
                    // Encoded from the shared label set: no copy.
                    messages::put_series_parts(&mut rest, s.labels(), &s.timestamps, &s.values);
                }
                series += 1;
            }
        }
    }
    if series == 0 {
        return Ok(Batch {
            frame: None,
            series,
            done: true,
        });
    }
    let mut body = Vec::with_capacity(rest.len() + 10);
    put_uvarint(&mut body, series as u64);
    body.extend_from_slice(&rest);
    let frame = encode_frame(Kind::Batch, id, &body, max_frame).map_err(|e| match e {
        FrameError::TooLarge { len, max, .. } => remote(format!(
            "a series of the search takes {len} bytes, over the client's maximum frame of {max} bytes; narrow the time range"
        )),
        e => remote(e.to_string()),
    })?;
    Ok(Batch {
        frame: Some(frame),
        series,
        done,
    })
}
