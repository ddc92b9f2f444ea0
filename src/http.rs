//! HTTP pieces every Strata process serves: `/health`, `/ready`, `/metrics`,
//! request counters by route and status, and the storage maintenance
//! endpoints under `/internal/`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use strata_storage::{Storage, StorageError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where the process is in its life; drives `/ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Stopping = 2,
}

/// The shared, changing phase of the process.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicU8>);

impl Readiness {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::SeqCst);
    }

    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Stopping,
        }
    }
}

/// A running HTTP server and the switch that starts its graceful stop.
pub struct HttpServer {
    pub task: JoinHandle<std::io::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl HttpServer {
    pub fn start(listener: TcpListener, router: Router) -> HttpServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        HttpServer {
            task,
            stop: Some(stop),
        }
    }

    /// Waits `delay` (load balancers notice `/ready` turned 503), stops
    /// accepting connections and waits for open requests, at most
    /// `timeout`; requests still open then are cut.
    pub async fn stop(&mut self, delay: Duration, timeout: Duration) {
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "Not ready; waiting before closing the HTTP listener."
            );
            tokio::time::sleep(delay).await;
        }
        let stopping = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let elapsed_ms = || stopping.elapsed().as_millis() as u64;
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(Ok(Ok(()))) => tracing::info!(elapsed_ms = elapsed_ms(), "HTTP server stopped."),
            Ok(Ok(Err(e))) => {
                tracing::warn!(elapsed_ms = elapsed_ms(), error = %e, "HTTP server stopped with an error.")
            }
            Ok(Err(e)) => {
                tracing::warn!(elapsed_ms = elapsed_ms(), error = %e, "HTTP server task failed.")
            }
            Err(_) => {
                self.task.abort();
                tracing::warn!(
                    elapsed_ms = elapsed_ms(),
                    "HTTP requests still open after --http.shutdown-timeout were cut."
                );
            }
        }
    }
}

/// The metrics a process exposes: its own, there from the start, and those of
/// storage, which exist once storage is open (opening needs the registry
/// mutably, while `/metrics` must answer during a long log replay).
#[derive(Debug, Default)]
pub struct Registries {
    pub process: Registry,
    pub storage: OnceLock<Registry>,
}

impl Registries {
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode_registry(&mut out, &self.process)?;
        if let Some(storage) = self.storage.get() {
            encode_registry(&mut out, storage)?;
        }
        encode_eof(&mut out)?;
        Ok(out)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    path: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
}

type HistogramFamily = Family<PathLabels, Histogram, fn() -> Histogram>;

/// Request counters by route template (never the raw path, which would let
/// clients create unbounded series) and status code.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let m = HttpMetrics {
            requests: Family::default(),
            // 1 ms .. ~33 s.
            duration: HistogramFamily::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
        };
        registry.register(
            "strata_http_requests",
            "HTTP requests by route and status code; unknown routes are path=\"other\"",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "strata_http_request_duration",
            "Time to the response head by route (streamed bodies continue after it)",
            Unit::Seconds,
            m.duration.clone(),
        );
        m
    }

    fn observe(&self, path: &str, status: StatusCode, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                path: path.to_string(),
                status: status.as_u16(),
            })
            .inc();
        self.duration
            .get_or_create(&PathLabels {
                path: path.to_string(),
            })
            .observe(seconds);
    }
}

/// The route template a request matched, carried on the response: the
/// counting layer sits outside routing (it must see every request, routed or
/// not), so it cannot read `MatchedPath` itself.
#[derive(Clone, Debug)]
struct RouteLabel(String);

/// Route layer: records the matched route template on the response.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

/// Outermost layer: counts every request by route and status.
pub async fn count_requests(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let response = next.run(request).await;
    let path = response
        .extensions()
        .get::<RouteLabel>()
        .map_or("other", |r| r.0.as_str());
    metrics.observe(path, response.status(), start.elapsed().as_secs_f64());
    response
}

/// `/health`: the process is alive and serving HTTP.
pub async fn health() -> &'static str {
    "OK"
}

/// `/ready`: 200 only between the end of start-up and the start of shutdown.
pub fn ready_response(readiness: &Readiness) -> Response {
    match readiness.phase() {
        Phase::Ready => (StatusCode::OK, "OK").into_response(),
        Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
        Phase::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response(),
    }
}

/// `/metrics` in the OpenMetrics text format.
pub fn metrics_response(registries: &Registries) -> Response {
    match registries.encode() {
        Ok(body) => {
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot encode metrics.");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

/// `POST /internal/flush` and `POST /internal/force_merge`: maintenance an
/// operator or a benchmark triggers by hand. Both answer when the work is
/// done, so a caller can measure disk usage right after.
pub fn admin_router(storage: Arc<Storage>) -> Router {
    Router::new()
        .route("/internal/flush", post(flush))
        .route("/internal/force_merge", post(force_merge))
        .with_state(storage)
}

async fn flush(State(storage): State<Arc<Storage>>) -> Response {
    maintenance("flush", move || storage.flush()).await
}

async fn force_merge(State(storage): State<Arc<Storage>>) -> Response {
    maintenance("force merge", move || storage.force_merge()).await
}

/// Runs storage work off the async threads (a merge reads and writes every
/// part). A client that hangs up does not stop the work.
async fn maintenance(
    what: &'static str,
    work: impl FnOnce() -> Result<(), StorageError> + Send + 'static,
) -> Response {
    let started = Instant::now();
    tracing::info!(what, "Storage maintenance requested.");
    let result = tokio::task::spawn_blocking(work).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(Ok(())) => {
            tracing::info!(what, elapsed_ms, "Storage maintenance done.");
            StatusCode::OK.into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(what, elapsed_ms, error = %e, "Storage maintenance failed.");
            let message = format!("cannot {what}: {e}\n");
            if e.is_transient() {
                let mut response = (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
            }
        }
        Err(e) => {
            tracing::warn!(what, elapsed_ms, error = %e, "Storage maintenance task failed.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{what} task failed: {e}\n"),
            )
                .into_response()
        }
    }
}

/// What the router of a role process serves from: readiness, metrics, and
/// the role's own routes once what they need is open.
#[derive(Clone)]
pub struct ProcessState {
    pub readiness: Readiness,
    pub registries: Arc<Registries>,
    /// The role's routes; until they are set every other path answers 503
    /// with `Retry-After` and `starting` as the body.
    pub routes: Arc<OnceLock<Router>>,
    /// E.g. `"storage is starting\n"`.
    pub starting: &'static str,
}

impl ProcessState {
    pub fn new(
        readiness: Readiness,
        registries: Arc<Registries>,
        starting: &'static str,
    ) -> ProcessState {
        ProcessState {
            readiness,
            registries,
            routes: Arc::new(OnceLock::new()),
            starting,
        }
    }
}

/// The process router of a role: `/health`, `/ready` and `/metrics` always;
/// everything else goes to the role's routes once they are set.
pub fn process_router(state: ProcessState, http_metrics: HttpMetrics) -> Router {
    Router::new()
        .route("/health", axum::routing::get(health))
        .route("/ready", axum::routing::get(process_ready))
        .route("/metrics", axum::routing::get(process_metrics))
        .route_layer(axum::middleware::from_fn(tag_route))
        .fallback(process_routes)
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            count_requests,
        ))
        .with_state(state)
}

async fn process_ready(State(state): State<ProcessState>) -> Response {
    ready_response(&state.readiness)
}

async fn process_metrics(State(state): State<ProcessState>) -> Response {
    metrics_response(&state.registries)
}

async fn process_routes(State(state): State<ProcessState>, request: Request) -> Response {
    use tower::ServiceExt;
    match state.routes.get() {
        Some(routes) => match routes.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => {
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, state.starting).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}
