//! The connections of a client to one node: calls spread over up to
//! `--rpc.max-connections-per-node` connections, a call waits for a free
//! slot when all are busy, and a failed connect is remembered briefly so
//! that calls to a dead node fail at once instead of each trying again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::conn::Conn;
use crate::cluster::NodeError;

/// After a failed connect, calls fail with the same error this long
/// without connecting again.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// A connection and a slot on it for one call.
pub(super) struct Checkout {
    pub conn: Arc<Conn>,
    pub permit: OwnedSemaphorePermit,
}

struct Failure {
    at: Instant,
    is_protocol: bool,
    detail: String,
}

struct State {
    conns: Vec<Arc<Conn>>,
    /// Connects under way (they count against the limit).
    connecting: usize,
    failure: Option<Failure>,
    /// The node's frame limit from its last hello; None before any.
    peer_max_frame: Option<u32>,
}

pub(super) struct Pool {
    addr: String,
    connect_timeout: Duration,
    max_connections: usize,
    max_frame_bytes: u32,
    gauge: Gauge,
    state: Mutex<State>,
    /// Wakes callers waiting for a connect to finish.
    connected: Notify,
}

enum Next {
    Got(Checkout),
    Connect,
    Wait(Arc<Conn>),
    WaitConnect,
}

/// Ends a connect attempt in the books, also when the call is dropped.
struct Connecting<'a>(&'a Pool);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.state.lock().connecting -= 1;
        self.0.connected.notify_waiters();
    }
}

impl Pool {
    pub fn new(
        addr: String,
        connect_timeout: Duration,
        max_connections: usize,
        max_frame_bytes: u32,
        gauge: Gauge,
    ) -> Pool {
        Pool {
            addr,
            connect_timeout,
            max_connections: max_connections.max(1),
            max_frame_bytes,
            gauge,
            state: Mutex::new(State {
                conns: Vec::new(),
                connecting: 0,
                failure: None,
                peer_max_frame: None,
            }),
            connected: Notify::new(),
        }
    }

    /// The node's frame limit as last heard; None before the first connect.
    pub fn peer_max_frame(&self) -> Option<u32> {
        self.state.lock().peer_max_frame
    }

    /// A slot for one call; the caller bounds the wait by its deadline.
    pub async fn checkout(&self, deadline: Instant) -> Result<Checkout, NodeError> {
        loop {
            let notified = self.connected.notified();
            tokio::pin!(notified);
            let next = {
                let mut state = self.state.lock();
                // Registered under the lock: a connect ending after it wakes us.
                notified.as_mut().enable();
                state.conns.retain(|c| c.usable());
                let best = state
                    .conns
                    .iter()
                    .max_by_key(|c| c.slots.available_permits())
                    .cloned();
                match best {
                    Some(conn) if conn.slots.available_permits() > 0 => {
                        match conn.slots.clone().try_acquire_owned() {
                            Ok(permit) => Next::Got(Checkout { conn, permit }),
                            Err(_) => Next::Wait(conn),
                        }
                    }
                    best if state.conns.len() + state.connecting < self.max_connections => {
                        if let Some(f) = &state.failure
                            && f.at.elapsed() < RECONNECT_BACKOFF
                            && best.is_none()
                        {
                            return Err(self.failure_error(f));
                        }
                        state.connecting += 1;
                        Next::Connect
                    }
                    Some(conn) => Next::Wait(conn),
                    None => Next::WaitConnect,
                }
            };
            match next {
                Next::Got(checkout) => return Ok(checkout),
                Next::Connect => {
                    let _books = Connecting(self);
                    let opened = Conn::connect(
                        &self.addr,
                        self.connect_timeout,
                        self.max_frame_bytes,
                        deadline,
                        self.gauge.clone(),
                    )
                    .await;
                    let mut state = self.state.lock();
                    match opened {
                        Ok(conn) => {
                            state.peer_max_frame = Some(conn.peer_max_frame);
                            state.failure = None;
                            state.conns.push(conn);
                        }
                        Err(e) => {
                            let failure = match &e {
                                NodeError::Unavailable { detail, .. } => Some((false, detail)),
                                NodeError::Protocol { detail, .. } => Some((true, detail)),
                                _ => None,
                            };
                            if let Some((is_protocol, detail)) = failure {
                                state.failure = Some(Failure {
                                    at: Instant::now(),
                                    is_protocol,
                                    detail: detail.clone(),
                                });
                            }
                            return Err(e);
                        }
                    }
                }
                Next::Wait(conn) => {
                    if let Ok(permit) = conn.slots.clone().acquire_owned().await
                        && conn.usable()
                    {
                        return Ok(Checkout { conn, permit });
                    }
                }
                Next::WaitConnect => notified.await,
            }
        }
    }

    fn failure_error(&self, f: &Failure) -> NodeError {
        let addr = self.addr.clone();
        let detail = f.detail.clone();
        if f.is_protocol {
            NodeError::Protocol { addr, detail }
        } else {
            NodeError::Unavailable { addr, detail }
        }
    }

    /// Closes every connection (the client is going away).
    pub fn close_all(&self) {
        let conns = std::mem::take(&mut self.state.lock().conns);
        for conn in conns {
            conn.close("the client was dropped", false);
        }
    }
}
