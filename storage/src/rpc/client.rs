//! [`RpcClient`]: a [`Node`] on the other end of a TCP connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::codec::CodecError;
use super::conn::{Conn, Pending};
use super::frame::{Frame, FrameError, Kind, encode_frame};
use super::messages::{self, Method, Request};
use super::metrics::ClientMetrics;
use super::pool::{Checkout, Pool};
use crate::cluster::{
    BoxFuture, KeyedBatches, Node, NodeError, NodeStatus, SeriesBatches, SeriesQuery,
};
use crate::config::{humantime_serde_compat, parse_duration};
use crate::{AddOutcome, Cardinality, Label, Matcher, SeriesSamples, Tenant, TimeRange};

/// Batches a search may have in flight towards the caller: the server
/// sends up to this many ahead of what the caller took.
const STREAM_CREDIT: u32 = 4;

/// How insert and select reach storage nodes. Every field states its default.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Longest wait to connect to a storage node and exchange hellos; a
    /// node that does not answer in time is unavailable (a refused
    /// connection fails at once). Default: 1s.
    #[arg(long = "rpc.connect-timeout", env = "STRATA_RPC_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,

    /// Connections to each storage node; calls share them, and wait for a
    /// free slot when all are busy. Default: 2.
    #[arg(
        long = "rpc.max-connections-per-node",
        env = "STRATA_RPC_MAX_CONNECTIONS_PER_NODE",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_connections_per_node: u16,

    /// Largest frame accepted from a storage node (its length field, and
    /// its body once decompressed). Default: 67108864 (64 MiB).
    #[arg(
        long = "rpc.max-frame-bytes",
        env = "STRATA_RPC_MAX_FRAME_BYTES",
        default_value_t = 64 << 20,
        value_parser = clap::value_parser!(u32).range(1024..)
    )]
    pub max_frame_bytes: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            max_connections_per_node: 2,
            max_frame_bytes: 64 << 20,
        }
    }
}

/// A storage node reached over the RPC. Cheap to clone (clones share the
/// connections); connects lazily on the first call, so a client for a node
/// that is down is created without error.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    pool: Pool,
    metrics: ClientMetrics,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pool.close_all();
    }
}

/// Removes a call from its connection unless it finished: a call dropped
/// early (deadline, caller gone) tells the server to stop with a cancel.
/// A connection that sent nothing since such a call started is presumed
/// stuck and closed, so the next call connects afresh.
struct CallGuard {
    conn: Arc<Conn>,
    id: u32,
    /// The call's slot on the connection; an abandoned call keeps it until
    /// its cancel frame is queued, so that the server sees the cancel before
    /// a request that reuses the slot.
    permit: Option<OwnedSemaphorePermit>,
    sent: Instant,
    deadline: Instant,
    finished: bool,
}

impl CallGuard {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.conn.forget(self.id);
        if Instant::now() >= self.deadline && !self.conn.received_since(self.sent) {
            self.conn
                .close("no answer from the node before a call's deadline", false);
            return;
        }
        let Ok(frame) = encode_frame(Kind::Cancel, self.id, &[], self.conn.peer_max_frame) else {
            return;
        };
        let (conn, permit) = (self.conn.clone(), self.permit.take());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = conn.send(frame).await;
                    drop(permit);
                });
            }
            Err(_) => conn.try_send(frame),
        }
    }
}

/// Milliseconds left until `deadline`, rounded up: a call with any time
/// left does not reach the server as already expired.
fn remaining_ms(deadline: Instant) -> u32 {
    let left = deadline.saturating_duration_since(Instant::now());
    left.as_micros().div_ceil(1000).min(u128::from(u32::MAX)) as u32
}

impl RpcClient {
    /// A client for the node at `addr` (`host:port`, as in the topology).
    /// Connections open on the first call.
    pub fn new(
        addr: impl Into<String>,
        config: &ClientConfig,
        metrics: ClientMetrics,
    ) -> RpcClient {
        let addr = addr.into();
        let pool = Pool::new(
            addr.clone(),
            config.connect_timeout,
            usize::from(config.max_connections_per_node),
            config.max_frame_bytes,
            metrics.connections(&addr),
        );
        RpcClient {
            inner: Arc::new(Inner {
                addr,
                pool,
                metrics,
            }),
        }
    }

    fn addr_string(&self) -> String {
        self.inner.addr.clone()
    }

    fn protocol(&self, detail: String) -> NodeError {
        NodeError::Protocol {
            addr: self.addr_string(),
            detail,
        }
    }

    fn malformed(&self, e: CodecError) -> NodeError {
        self.protocol(format!("reply: {e}"))
    }

    fn deadline_exceeded(&self) -> NodeError {
        NodeError::DeadlineExceeded {
            addr: self.addr_string(),
        }
    }

    /// Runs `work` within `deadline`, counting its duration and failure.
    async fn timed<T>(
        &self,
        method: Method,
        deadline: Instant,
        work: impl std::future::Future<Output = Result<T, NodeError>>,
    ) -> Result<T, NodeError> {
        let started = Instant::now();
        let result = if started >= deadline {
            Err(self.deadline_exceeded())
        } else {
            match tokio::time::timeout_at(deadline.into(), work).await {
                Ok(result) => result,
                Err(_) => Err(self.deadline_exceeded()),
            }
        };
        self.observe(method, started, &result);
        result
    }

    fn observe<T>(&self, method: Method, started: Instant, result: &Result<T, NodeError>) {
        let m = &self.inner.metrics;
        m.call(
            &self.inner.addr,
            method.name(),
            started.elapsed().as_secs_f64(),
        );
        if let Err(e) = result {
            m.error(&self.inner.addr, e.reason());
        }
    }

    /// Takes a slot, registers the call and sends its request frame.
    async fn start(
        &self,
        method: Method,
        mut body: Vec<u8>,
        pending: Pending,
        deadline: Instant,
    ) -> Result<CallGuard, NodeError> {
        let Checkout { conn, permit } = self.inner.pool.checkout(deadline).await?;
        let id = conn.next_id();
        conn.register(id, pending);
        let guard = CallGuard {
            conn: conn.clone(),
            id,
            permit: Some(permit),
            sent: Instant::now(),
            deadline,
            finished: false,
        };
        messages::set_timeout(&mut body, remaining_ms(deadline));
        let frame = encode_frame(Kind::Request(method), id, &body, conn.peer_max_frame).map_err(
            |e| match e {
                FrameError::TooLarge { len, max, .. } => self.protocol(format!(
                    "the request takes {len} bytes, over the node's maximum frame of {max} bytes"
                )),
                e => self.protocol(e.to_string()),
            },
        )?;
        conn.send(frame).await?;
        Ok(guard)
    }

    /// One request, one final frame; the body of a reply.
    async fn unary(
        &self,
        method: Method,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<Vec<u8>, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let guard = self
            .start(method, body, Pending::Unary(tx), deadline)
            .await?;
        let frame = rx.await.map_err(|_| NodeError::Unavailable {
            addr: self.addr_string(),
            detail: "connection closed".into(),
        })??;
        guard.finish();
        self.reply_body(frame)
    }

    fn reply_body(&self, frame: Frame) -> Result<Vec<u8>, NodeError> {
        match frame.kind {
            Kind::Reply => Ok(frame.body),
            Kind::Error => Err(messages::decode_error(&self.inner.addr, &frame.body)
                .map_err(|e| self.malformed(e))?),
            kind => Err(self.protocol(format!("unexpected frame kind {:#04x}", kind.to_u8()))),
        }
    }

    async fn query<T>(
        &self,
        req: Request,
        deadline: Instant,
        decode: fn(&[u8]) -> Result<T, CodecError>,
    ) -> Result<T, NodeError> {
        let method = req.method();
        self.timed(method, deadline, async {
            let body = self
                .unary(method, messages::encode_request(&req), deadline)
                .await?;
            decode(&body).map_err(|e| self.malformed(e))
        })
        .await
    }

    async fn write_rows(
        &self,
        tenant: Tenant,
        rows: Vec<SeriesSamples>,
        deadline: Instant,
    ) -> Result<AddOutcome, NodeError> {
        let peer_max = match self.inner.pool.peer_max_frame() {
            Some(max) => max,
            // The split needs the node's limit: connect first.
            None => {
                self.inner
                    .pool
                    .checkout(deadline)
                    .await?
                    .conn
                    .peer_max_frame
            }
        };
        // Room for the frame header.
        let max_body = (peer_max as usize).saturating_sub(16);
        let (bodies, largest) = messages::encode_write(tenant, &rows, max_body);
        drop(rows);
        if largest > max_body {
            return Err(self.protocol(format!(
                "a series of the write takes {largest} bytes, over the node's maximum frame of {max_body} bytes"
            )));
        }
        let mut total = AddOutcome::default();
        for body in bodies {
            let reply = self.unary(Method::Write, body, deadline).await?;
            let o = messages::decode_outcome(&reply).map_err(|e| self.malformed(e))?;
            merge_outcome(&mut total, o);
        }
        Ok(total)
    }

    async fn start_search<T: Send + 'static>(
        &self,
        req: Request,
        decode: Decode<T>,
        deadline: Instant,
        started: Instant,
    ) -> Result<Batches<T>, NodeError> {
        let (tx, mut frames) = mpsc::unbounded_channel();
        let method = req.method();
        let body = messages::encode_request(&req);
        let guard = self
            .start(method, body, Pending::Stream(tx), deadline)
            .await?;
        // The first frame tells a failed search (bad matcher) from a stream.
        let first = frames.recv().await.ok_or_else(|| NodeError::Unavailable {
            addr: self.addr_string(),
            detail: "connection closed".into(),
        })??;
        if first.kind == Kind::Error {
            guard.finish();
            return Err(self
                .reply_body(first)
                .err()
                .unwrap_or_else(|| self.protocol("empty error".into())));
        }
        let (out, batches) = mpsc::channel(1);
        let stream = Stream {
            client: self.clone(),
            method,
            decode,
            guard,
            frames,
            out,
            deadline,
            started,
        };
        tokio::spawn(stream.forward(first));
        Ok(batches)
    }
}

impl RpcClient {
    /// Starts a search stream by `deadline`.
    async fn open_search<T: Send + 'static>(
        &self,
        req: Request,
        decode: Decode<T>,
        deadline: Instant,
    ) -> Result<Batches<T>, NodeError> {
        let method = req.method();
        let started = Instant::now();
        if started >= deadline {
            let e = self.deadline_exceeded();
            self.observe(method, started, &Err::<(), _>(e));
            return Err(self.deadline_exceeded());
        }
        let opened = tokio::time::timeout_at(
            deadline.into(),
            self.start_search(req, decode, deadline, started),
        )
        .await
        .unwrap_or_else(|_| Err(self.deadline_exceeded()));
        if let Err(e) = &opened {
            // Counted here only when the stream never started; a started
            // stream counts itself when it ends.
            self.inner.metrics.call(
                &self.inner.addr,
                method.name(),
                started.elapsed().as_secs_f64(),
            );
            self.inner.metrics.error(&self.inner.addr, e.reason());
        }
        opened
    }
}

fn merge_outcome(total: &mut AddOutcome, o: AddOutcome) {
    total.accepted += o.accepted;
    total.rejected += o.rejected;
    for (reason, n) in o.rejected_by_reason {
        match total
            .rejected_by_reason
            .iter_mut()
            .find(|(r, _)| *r == reason)
        {
            Some((_, m)) => *m += n,
            None => total.rejected_by_reason.push((reason, n)),
        }
    }
    total.rejected_by_reason.sort_by_key(|(r, _)| r.as_str());
    if total.first_rejection.is_none() {
        total.first_rejection = o.first_rejection;
    }
}

/// Decodes a batch frame's body.
type Decode<T> = fn(&[u8]) -> Result<Vec<T>, CodecError>;

/// What a search hands its caller.
type Batches<T> = mpsc::Receiver<Result<Vec<T>, NodeError>>;

/// Moves a search's batches from the connection to the caller, granting
/// the server one batch of credit per batch the caller takes.
struct Stream<T> {
    client: RpcClient,
    method: Method,
    decode: Decode<T>,
    guard: CallGuard,
    frames: mpsc::UnboundedReceiver<Result<Frame, NodeError>>,
    out: mpsc::Sender<Result<Vec<T>, NodeError>>,
    deadline: Instant,
    started: Instant,
}

impl<T> Stream<T> {
    async fn forward(mut self, first: Frame) {
        let result = self.run(first).await;
        self.client.observe(self.method, self.started, &result);
        let Stream { guard, out, .. } = self;
        // Cancels an unfinished call and gives its slot back before waiting
        // on the caller.
        drop(guard);
        if let Err(e) = result {
            // Delivered even to a slow caller: a stream that just ended
            // would read as complete.
            let _ = out.send(Err(e)).await;
        }
    }

    async fn run(&mut self, first: Frame) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let mut next = Some(first);
        loop {
            let frame = match next.take() {
                Some(frame) => frame,
                None => match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                    Err(_) => return Err(self.client.deadline_exceeded()),
                    Ok(None) => {
                        return Err(NodeError::Unavailable {
                            addr: self.client.addr_string(),
                            detail: "connection closed".into(),
                        });
                    }
                    Ok(Some(frame)) => frame?,
                },
            };
            match frame.kind {
                Kind::Batch => {
                    let batch = (self.decode)(&frame.body).map_err(|e| self.client.malformed(e))?;
                    match tokio::time::timeout_at(deadline, self.out.send(Ok(batch))).await {
                        Err(_) => return Err(self.client.deadline_exceeded()),
                        // The caller stopped reading: the guard cancels the call.
                        Ok(Err(_)) => return Ok(()),
                        Ok(Ok(())) => {}
                    }
                    let credit = encode_frame(
                        Kind::Credit,
                        self.guard.id,
                        &messages::encode_credit(1),
                        self.guard.conn.peer_max_frame,
                    )
                    .map_err(|e| self.client.protocol(e.to_string()))?;
                    // A closed connection may still have delivered the rest
                    // of the stream: the next frame tells.
                    let _ = self.guard.conn.send(credit).await;
                }
                Kind::Reply => {
                    self.guard.finished = true;
                    return Ok(());
                }
                _ => {
                    self.guard.finished = true;
                    return Err(self.client.reply_body(frame).err().unwrap_or_else(|| {
                        self.client.protocol("unexpected frame in a stream".into())
                    }));
                }
            }
        }
    }
}

impl Node for RpcClient {
    fn addr(&self) -> &str {
        &self.inner.addr
    }

    fn write(
        &self,
        tenant: Tenant,
        rows: Vec<SeriesSamples>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<AddOutcome, NodeError>> {
        Box::pin(self.timed(
            Method::Write,
            deadline,
            self.write_rows(tenant, rows, deadline),
        ))
    }

    fn search(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SeriesBatches, NodeError>> {
        let req = Request::Search {
            query,
            credit: STREAM_CREDIT,
            ordered: false,
        };
        Box::pin(self.open_search(req, messages::decode_batch, deadline))
    }

    fn search_ordered(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<KeyedBatches, NodeError>> {
        let req = Request::Search {
            query,
            credit: STREAM_CREDIT,
            ordered: true,
        };
        Box::pin(self.open_search(req, messages::decode_keyed_batch, deadline))
    }

    fn series(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Vec<Label>>, NodeError>> {
        Box::pin(self.query(
            Request::Series(query),
            deadline,
            messages::decode_label_sets,
        ))
    }

    fn label_names(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        Box::pin(self.query(
            Request::LabelNames(query),
            deadline,
            messages::decode_strings,
        ))
    }

    fn label_values(
        &self,
        name: String,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        Box::pin(self.query(
            Request::LabelValues { name, query },
            deadline,
            messages::decode_strings,
        ))
    }

    fn cardinality(
        &self,
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Cardinality, NodeError>> {
        Box::pin(self.query(
            Request::Cardinality {
                tenant,
                range,
                limit,
            },
            deadline,
            messages::decode_cardinality,
        ))
    }

    fn delete_series(
        &self,
        tenant: Tenant,
        matchers: Vec<Matcher>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<u64, NodeError>> {
        Box::pin(self.query(
            Request::DeleteSeries { tenant, matchers },
            deadline,
            messages::decode_count,
        ))
    }

    fn tenants(
        &self,
        range: TimeRange,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Tenant>, NodeError>> {
        Box::pin(self.query(
            Request::Tenants { range },
            deadline,
            messages::decode_tenants,
        ))
    }

    fn status(&self, deadline: Instant) -> BoxFuture<'_, Result<NodeStatus, NodeError>> {
        Box::pin(self.query(Request::Status, deadline, messages::decode_status))
    }
}
