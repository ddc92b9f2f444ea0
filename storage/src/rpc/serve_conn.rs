//! One client connection on the server: the handshake, then a reader that
//! parses frames, a dispatcher that starts calls and routes credit and
//! cancel frames to them, and a writer that sends what calls produce.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, warn};

use super::calls::{self, Call};
use super::frame::{
    FrameError, HELLO_LEN, Hello, Kind, OLDEST_CLIENT_VERSION, PROTOCOL_VERSION, encode_frame,
    read_frame, write_frames,
};
use super::messages::{self, TIMEOUT_BYTES};
use super::server::Shared;
use crate::cluster::NodeError;

/// A client must say hello this soon after connecting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames queued for the writer; calls wait beyond it (a client that does
/// not read holds up only its own calls).
const OUTGOING_FRAMES: usize = 64;
/// How long a request over the connection's call limit waits for a
/// cancelled call to give its slot back before it is refused.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// How long the writer may take to flush the last frames of a closing connection.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Frames a call sends; shared by the calls of one connection.
#[derive(Clone)]
pub(super) struct Outbox {
    pub frames: mpsc::Sender<Vec<u8>>,
    /// The client's limit, from its hello.
    pub max_frame_bytes: u32,
}

impl Outbox {
    /// Encodes and queues a frame; false when the connection is gone.
    pub async fn send(&self, kind: Kind, id: u32, body: &[u8]) -> bool {
        match encode_frame(kind, id, body, self.max_frame_bytes) {
            Ok(frame) => self.frames.send(frame).await.is_ok(),
            Err(FrameError::TooLarge { len, max, .. }) => {
                // Only a reply can be this large; tell the client why it gets none.
                let message = format!(
                    "the reply takes {len} bytes, over the client's maximum frame of {max} bytes; narrow the query or set a limit"
                );
                self.send_error(id, &remote(message)).await
            }
            Err(e) => self.send_error(id, &remote(e.to_string())).await,
        }
    }

    pub async fn send_error(&self, id: u32, e: &NodeError) -> bool {
        match encode_frame(
            Kind::Error,
            id,
            &messages::encode_error(e),
            self.max_frame_bytes,
        ) {
            Ok(frame) => self.frames.send(frame).await.is_ok(),
            Err(_) => false,
        }
    }
}

/// The server names no address in errors it sends: the client puts its own.
pub(super) fn remote(message: String) -> NodeError {
    NodeError::Remote {
        addr: String::new(),
        message,
    }
}

fn protocol(detail: String) -> NodeError {
    NodeError::Protocol {
        addr: String::new(),
        detail,
    }
}

fn unavailable(detail: &str) -> NodeError {
    NodeError::Unavailable {
        addr: String::new(),
        detail: detail.to_string(),
    }
}

/// The reader and writer of a connection end with it, also when the
/// connection's task is aborted (a server stopped without grace).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Decrements a gauge when dropped.
struct GaugeGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(super) async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    shared.metrics.connections.inc();
    let _open = GaugeGuard(shared.metrics.connections.clone());
    let _ = stream.set_nodelay(true);
    let client =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, &shared)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err((reason, e))) => {
                shared.metrics.refused(reason);
                warn!(%peer, error = %e, "RPC handshake failed; connection closed.");
                return;
            }
            Err(_) => {
                shared.metrics.refused("handshake_timeout");
                debug!(%peer, "No RPC hello in time; connection closed.");
                return;
            }
        };
    let (rd, wr) = stream.into_split();
    let (frames_tx, frames_rx) = mpsc::channel(OUTGOING_FRAMES);
    let sent = shared.metrics.sent_bytes.clone();
    let mut writer = AbortOnDrop(tokio::spawn(write_frames(wr, frames_rx, move |n| {
        sent.inc_by(n as u64);
    })));
    let outbox = Outbox {
        frames: frames_tx,
        max_frame_bytes: client.max_frame_bytes,
    };
    // One frame read ahead at most: while the dispatcher waits for a
    // worker, the reader stops and TCP pushes back on the client.
    let (parsed_tx, parsed_rx) = mpsc::channel(1);
    let max = shared.max_frame_bytes;
    let received = shared.metrics.received_bytes.clone();
    let reader = AbortOnDrop(tokio::spawn(async move {
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        loop {
            let frame = read_frame(&mut rd, max).await;
            let end = !matches!(frame, Ok(Some(_)));
            if let Ok(Some(f)) = &frame {
                received.inc_by(f.wire_len as u64);
            }
            if parsed_tx.send(frame).await.is_err() || end {
                return;
            }
        }
    }));
    let mut conn = Connection {
        shared: shared.clone(),
        outbox: outbox.clone(),
        slots: Arc::new(Semaphore::new(usize::from(shared.max_in_flight))),
        calls: HashMap::new(),
        tasks: JoinSet::new(),
        draining: false,
        peer,
    };
    let ended = conn.dispatch(parsed_rx, &mut stopped).await;
    drop(reader);
    if let Ended::PeerGone = ended {
        // Nobody is left to read the results.
        conn.tasks.shutdown().await;
    } else {
        while conn.tasks.join_next().await.is_some() {}
    }
    drop(conn);
    drop(outbox);
    if tokio::time::timeout(FLUSH_TIMEOUT, &mut writer.0)
        .await
        .is_err()
    {
        writer.0.abort();
    }
    debug!(%peer, "RPC connection closed.");
}

/// Exchanges hellos; the server answers with the version the connection
/// speaks (the client's when it is one the server answers, else its own),
/// so that a client of another version can say which versions differ.
async fn handshake(
    stream: &mut TcpStream,
    shared: &Shared,
) -> Result<Hello, (&'static str, String)> {
    let mut theirs = [0u8; HELLO_LEN];
    stream
        .read_exact(&mut theirs)
        .await
        .map_err(|e| ("io", e.to_string()))?;
    let decoded = Hello::decode(&theirs);
    // An older client is answered in its own version (every call it knows
    // is unchanged since); anything else hears ours and is refused.
    let version = match &decoded {
        Ok(h) if (OLDEST_CLIENT_VERSION..=PROTOCOL_VERSION).contains(&h.version) => h.version,
        _ => PROTOCOL_VERSION,
    };
    let ours = Hello {
        version,
        max_frame_bytes: shared.max_frame_bytes,
        max_in_flight: shared.max_in_flight,
    };
    stream
        .write_all(&ours.encode())
        .await
        .map_err(|e| ("io", e.to_string()))?;
    let hello = decoded.map_err(|e| ("magic", e.to_string()))?;
    if hello.version != version {
        return Err((
            "version",
            format!(
                "protocol version mismatch: the client speaks version {}, this node speaks version {PROTOCOL_VERSION}",
                hello.version
            ),
        ));
    }
    Ok(hello)
}

enum Ended {
    /// The client closed the connection or broke the protocol.
    PeerGone,
    /// Shutdown: every call finished.
    Drained,
}

/// An open call, as the dispatcher tracks it.
struct OpenCall {
    task: tokio::task::Id,
    abort: AbortHandle,
    /// Search streams: batches the client lets the server send.
    credit: Option<Arc<Semaphore>>,
}

struct Connection {
    shared: Arc<Shared>,
    outbox: Outbox,
    /// One permit per open call.
    slots: Arc<Semaphore>,
    calls: HashMap<u32, OpenCall>,
    /// Call tasks; each returns its request id.
    tasks: JoinSet<u32>,
    draining: bool,
    peer: SocketAddr,
}

impl Connection {
    async fn dispatch(
        &mut self,
        mut parsed: mpsc::Receiver<Result<Option<super::frame::Frame>, FrameError>>,
        stopped: &mut watch::Receiver<bool>,
    ) -> Ended {
        let max_in_flight = u32::from(self.shared.max_in_flight);
        let slots = self.slots.clone();
        loop {
            let idle = slots.acquire_many(max_in_flight);
            tokio::select! {
                biased;
                changed = stopped.changed(), if !self.draining => {
                    // A dropped sender means the server task is gone: stop too.
                    if changed.is_err() || *stopped.borrow() {
                        self.draining = true;
                        if !self.outbox.send(Kind::GoAway, 0, &[]).await {
                            return Ended::PeerGone;
                        }
                    }
                }
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    if let Ok((task, id)) = done
                        && self.calls.get(&id).is_some_and(|c| c.task == task)
                    {
                        self.calls.remove(&id);
                    }
                }
                _ = idle, if self.draining => return Ended::Drained,
                frame = parsed.recv() => match frame {
                    None | Some(Ok(None)) => return Ended::PeerGone,
                    Some(Err(e)) => {
                        self.protocol_error(e).await;
                        return Ended::PeerGone;
                    }
                    Some(Ok(Some(frame))) => {
                        if !self.handle(frame).await {
                            return Ended::PeerGone;
                        }
                    }
                },
            }
        }
    }

    async fn protocol_error(&self, e: FrameError) {
        self.shared.metrics.refused("protocol");
        warn!(peer = %self.peer, error = %e, "RPC protocol error; connection closed.");
        if let FrameError::TooLarge { id, .. } = e {
            self.outbox.send_error(id, &protocol(e.to_string())).await;
        }
    }

    /// Acts on one frame; false ends the connection.
    async fn handle(&mut self, frame: super::frame::Frame) -> bool {
        let id = frame.id;
        match frame.kind {
            Kind::Request(method) => self.start_call(method, id, frame.body).await,
            Kind::Credit => {
                let Ok(n) = messages::decode_credit(&frame.body) else {
                    self.protocol_error_text("malformed credit frame").await;
                    return false;
                };
                if let Some(credit) = self.calls.get(&id).and_then(|c| c.credit.as_ref()) {
                    credit.add_permits((n as usize).min(Semaphore::MAX_PERMITS / 2));
                }
                true
            }
            Kind::Cancel => {
                if let Some(call) = self.calls.remove(&id) {
                    call.abort.abort();
                }
                true
            }
            Kind::Reply | Kind::Batch | Kind::Error | Kind::GoAway => {
                self.protocol_error_text("client sent a server frame kind")
                    .await;
                false
            }
        }
    }

    async fn protocol_error_text(&self, what: &str) {
        self.shared.metrics.refused("protocol");
        warn!(peer = %self.peer, error = what, "RPC protocol error; connection closed.");
    }

    /// Starts a call once a worker is free; false ends the connection.
    async fn start_call(
        &mut self,
        method: super::messages::Method,
        id: u32,
        body: Vec<u8>,
    ) -> bool {
        let received = Instant::now();
        let name = method.name();
        let refuse = |outcome| {
            self.shared
                .metrics
                .call(name, outcome, received.elapsed().as_secs_f64())
        };
        if self.draining {
            refuse("unavailable");
            return self
                .outbox
                .send_error(id, &unavailable("the node is shutting down"))
                .await;
        }
        // A client may start a call as soon as it cancelled another; the
        // cancelled task gives its slot back when it next runs.
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(slot) = slot else {
            refuse("protocol");
            let detail = format!(
                "more than {} calls in flight on one connection",
                self.shared.max_in_flight
            );
            return self.outbox.send_error(id, &protocol(detail)).await;
        };
        let Some(timeout) = body.get(..TIMEOUT_BYTES) else {
            refuse("protocol");
            return self
                .outbox
                .send_error(id, &protocol("request without a timeout".into()))
                .await;
        };
        let timeout_ms = u32::from_be_bytes([timeout[0], timeout[1], timeout[2], timeout[3]]);
        let deadline = received + Duration::from_millis(u64::from(timeout_ms));
        // Wait for a worker without reading further: the client's writes
        // wait on TCP meanwhile. A call whose time runs out here is not run.
        let worker = tokio::select! {
            permit = self.shared.workers.clone().acquire_owned() => permit.ok(),
            () = tokio::time::sleep_until(deadline.into()) => None,
        };
        let Some(worker) = worker.filter(|_| timeout_ms > 0) else {
            refuse("deadline");
            return self
                .outbox
                .send_error(
                    id,
                    &NodeError::DeadlineExceeded {
                        addr: String::new(),
                    },
                )
                .await;
        };
        let credit = method.is_stream().then(|| Arc::new(Semaphore::new(0)));
        let call = Call {
            method,
            id,
            body,
            received,
            deadline,
            worker,
            slot,
            credit: credit.clone(),
            outbox: self.outbox.clone(),
            shared: self.shared.clone(),
        };
        let abort = self.tasks.spawn(calls::run(call));
        if let Some(old) = self.calls.insert(
            id,
            OpenCall {
                task: abort.id(),
                abort,
                credit,
            },
        ) {
            // The client reused the id of a call that is ending: the old one
            // has nobody waiting for it any more.
            old.abort.abort();
        }
        true
    }
}
