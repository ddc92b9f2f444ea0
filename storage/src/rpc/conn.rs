//! One client connection to a node: connect and handshake, a reader task
//! that routes frames to the calls waiting for them, a writer task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use super::frame::{
    Frame, FrameError, HELLO_LEN, Hello, Kind, PROTOCOL_VERSION, read_frame, write_frames,
};
use crate::cluster::NodeError;

/// Frames queued for the writer; callers wait beyond it.
const OUTGOING_FRAMES: usize = 64;

/// Where the reader delivers the frames of a call.
pub(super) enum Pending {
    /// The one final frame.
    Unary(oneshot::Sender<Result<Frame, NodeError>>),
    /// Batches, then the final frame.
    Stream(mpsc::UnboundedSender<Result<Frame, NodeError>>),
}

const OPEN: u8 = 0;
/// The server said goaway: open calls finish, no new ones start here.
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;

pub(super) struct Conn {
    addr: String,
    frames: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u32, Pending>>,
    next_id: AtomicU32,
    /// One permit per call the server lets be open on this connection.
    pub slots: Arc<Semaphore>,
    /// The server's limit, from its hello.
    pub peer_max_frame: u32,
    state: AtomicU8,
    opened: Instant,
    /// Milliseconds after `opened` of the last frame received.
    last_received_ms: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
    gauge: Gauge,
}

fn unavailable(addr: &str, detail: String) -> NodeError {
    NodeError::Unavailable {
        addr: addr.to_string(),
        detail,
    }
}

fn protocol(addr: &str, detail: String) -> NodeError {
    NodeError::Protocol {
        addr: addr.to_string(),
        detail,
    }
}

impl Conn {
    /// Connects and exchanges hellos, within `connect_timeout` and the
    /// call's deadline, whichever comes first.
    pub async fn connect(
        addr: &str,
        connect_timeout: Duration,
        max_frame_bytes: u32,
        deadline: Instant,
        gauge: Gauge,
    ) -> Result<Arc<Conn>, NodeError> {
        let by_timeout = Instant::now() + connect_timeout;
        let limit = by_timeout.min(deadline);
        let opening = async {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| unavailable(addr, format!("cannot connect: {e}")))?;
            let _ = stream.set_nodelay(true);
            let ours = Hello {
                version: PROTOCOL_VERSION,
                max_frame_bytes,
                // The server's value binds; the client announces none.
                max_in_flight: 0,
            };
            let mut theirs = [0u8; HELLO_LEN];
            let exchanged = async {
                stream.write_all(&ours.encode()).await?;
                stream.read_exact(&mut theirs).await
            };
            exchanged
                .await
                .map_err(|e| unavailable(addr, format!("handshake failed: {e}")))?;
            let hello = Hello::decode(&theirs).map_err(|e| protocol(addr, e.to_string()))?;
            if hello.version != PROTOCOL_VERSION {
                return Err(protocol(
                    addr,
                    format!(
                        "protocol version mismatch: this client speaks version {PROTOCOL_VERSION}, the node speaks version {}",
                        hello.version
                    ),
                ));
            }
            Ok((stream, hello))
        };
        let (stream, hello) = match tokio::time::timeout_at(limit.into(), opening).await {
            Ok(opened) => opened?,
            Err(_) if deadline <= by_timeout => {
                return Err(NodeError::DeadlineExceeded {
                    addr: addr.to_string(),
                });
            }
            Err(_) => {
                return Err(unavailable(
                    addr,
                    format!("no connection and hello within {connect_timeout:?}"),
                ));
            }
        };
        let (rd, wr) = stream.into_split();
        let (frames, queued) = mpsc::channel(OUTGOING_FRAMES);
        gauge.inc();
        let conn = Arc::new(Conn {
            addr: addr.to_string(),
            frames,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            slots: Arc::new(Semaphore::new(usize::from(hello.max_in_flight.max(1)))),
            peer_max_frame: hello.max_frame_bytes,
            state: AtomicU8::new(OPEN),
            opened: Instant::now(),
            last_received_ms: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            gauge,
        });
        let writer = {
            let conn = conn.clone();
            tokio::spawn(async move {
                if let Err(e) = write_frames(wr, queued, |_| {}).await {
                    conn.close(&format!("cannot send: {e}"), false);
                }
            })
        };
        let reader = tokio::spawn(conn.clone().read_loop(rd, max_frame_bytes));
        conn.tasks
            .lock()
            .extend([writer.abort_handle(), reader.abort_handle()]);
        // A close that raced with the spawns must not leave them running.
        if conn.state.load(Ordering::Acquire) == CLOSED {
            writer.abort();
            reader.abort();
        }
        debug!(node = addr, "RPC connection opened.");
        Ok(conn)
    }

    async fn read_loop(self: Arc<Conn>, rd: tokio::net::tcp::OwnedReadHalf, max_frame_bytes: u32) {
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        loop {
            match read_frame(&mut rd, max_frame_bytes).await {
                Ok(Some(frame)) => {
                    let ms = self.opened.elapsed().as_millis() as u64;
                    self.last_received_ms.store(ms, Ordering::Release);
                    if let Err(what) = self.route(frame) {
                        warn!(node = %self.addr, error = what, "RPC protocol error; connection closed.");
                        self.close(what, true);
                        return;
                    }
                }
                Ok(None) => {
                    self.close("the node closed the connection", false);
                    return;
                }
                Err(FrameError::Io(e)) => {
                    self.close(&format!("connection lost: {e}"), false);
                    return;
                }
                Err(e) => {
                    warn!(node = %self.addr, error = %e, "RPC protocol error; connection closed.");
                    self.close(&e.to_string(), true);
                    return;
                }
            }
        }
    }

    /// Hands a frame to its call.
    fn route(&self, frame: Frame) -> Result<(), &'static str> {
        match frame.kind {
            Kind::Reply | Kind::Error => {
                let pending = self.pending.lock().remove(&frame.id);
                match pending {
                    Some(Pending::Unary(tx)) => drop(tx.send(Ok(frame))),
                    Some(Pending::Stream(tx)) => drop(tx.send(Ok(frame))),
                    // The call gave up (deadline, cancel).
                    None => {}
                }
            }
            Kind::Batch => {
                let mut pending = self.pending.lock();
                match pending.get(&frame.id) {
                    Some(Pending::Stream(tx)) => {
                        let id = frame.id;
                        if tx.send(Ok(frame)).is_err() {
                            pending.remove(&id);
                        }
                    }
                    Some(Pending::Unary(_)) => {
                        return Err("the node streamed a reply to a unary call");
                    }
                    None => {}
                }
            }
            Kind::GoAway => {
                let _ = self.state.compare_exchange(
                    OPEN,
                    DRAINING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                debug!(node = %self.addr, "The node is stopping; no new calls on this connection.");
            }
            Kind::Request(_) | Kind::Credit | Kind::Cancel => {
                return Err("the node sent a client frame kind");
            }
        }
        Ok(())
    }

    /// Open and not draining: new calls may start here.
    pub fn usable(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    pub fn next_id(&self) -> u32 {
        loop {
            // 0 is the id of connection-level frames (goaway).
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    pub fn register(&self, id: u32, pending: Pending) {
        self.pending.lock().insert(id, pending);
    }

    pub fn forget(&self, id: u32) {
        self.pending.lock().remove(&id);
    }

    /// Queues a frame for the writer.
    pub async fn send(&self, frame: Vec<u8>) -> Result<(), NodeError> {
        self.frames
            .send(frame)
            .await
            .map_err(|_| unavailable(&self.addr, "connection closed".into()))
    }

    /// Queues a frame if there is room (cancel: best effort).
    pub fn try_send(&self, frame: Vec<u8>) {
        let _ = self.frames.try_send(frame);
    }

    /// Has a frame arrived since `t`?
    pub fn received_since(&self, t: Instant) -> bool {
        let last =
            self.opened + Duration::from_millis(self.last_received_ms.load(Ordering::Acquire));
        last >= t
    }

    /// Closes the connection; calls waiting on it fail with `Unavailable`
    /// (or `Protocol` when the node broke the protocol).
    pub fn close(&self, detail: &str, is_protocol: bool) {
        if self.state.swap(CLOSED, Ordering::AcqRel) == CLOSED {
            return;
        }
        self.gauge.dec();
        self.slots.close();
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        let pending: Vec<Pending> = self.pending.lock().drain().map(|(_, p)| p).collect();
        let error = || {
            if is_protocol {
                protocol(&self.addr, detail.to_string())
            } else {
                unavailable(&self.addr, detail.to_string())
            }
        };
        for p in pending {
            match p {
                Pending::Unary(tx) => drop(tx.send(Err(error()))),
                Pending::Stream(tx) => drop(tx.send(Err(error()))),
            }
        }
        debug!(node = %self.addr, reason = detail, "RPC connection closed.");
    }
}
