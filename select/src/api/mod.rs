//! The Prometheus HTTP API (`/api/v1/...`), with Prometheus' JSON shapes,
//! status codes and `errorType`s, so that Grafana, promtool and the Go and
//! Python clients work unchanged.
//!
//! - `query`: `query`, `query_range`, `format_query`, `query_exemplars`.
//! - `series`: `series`.
//! - `labels`: `labels`, `label/<name>/values`.
//! - `status`: `status/buildinfo`, `status/tsdb`, `metadata`.
//! - `params`: parameter parsing; `json`: response encoding; `limits`:
//!   admission of queries.
//!
//! Every endpoint answers GET and POST (form body). Queries evaluate on a
//! blocking thread (so a timeout can answer while evaluation winds down);
//! lookups read storage in place on the request's thread, which hands its
//! other tasks on while it blocks (`ApiState::blocking`). Answers of 1 KiB
//! and more are gzip-compressed when the client accepts it (Grafana and the
//! Go client do), as Prometheus does: query results compress about
//! tenfold.
//!
//! Error types and their status codes (as Prometheus): `bad_data` 400,
//! `execution` 422, `canceled` 499, `timeout` 503, `internal` 500,
//! `not_found` 404; `unavailable` is 503 here (Prometheus answers 500), with
//! `Retry-After`, because it always means "try again later": a query refused
//! by the admission limits or storage that is shutting down.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strata_storage::StorageError;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::promql::Engine;
use crate::source::Source;

pub mod json;
pub mod labels;
pub mod limits;
pub mod params;
pub mod query;
pub mod series;
pub mod status;

use params::{ParamError, Params};

/// Seconds a client should wait before retrying an `unavailable` answer.
const RETRY_AFTER_SECONDS: &str = "5";
/// How storage failures begin, to tell them from admission refusals.
const STORAGE_ERROR_PREFIX: &str = "cannot read series: ";
/// How refusals of partial answers begin; the missing nodes follow.
pub const PARTIAL_DENIED_PREFIX: &str = "partial response denied (deny_partial_response): ";
/// Shorter answers are sent as they are: compressing saves less than it costs.
const GZIP_MIN_BYTES: usize = 1024;
/// Longer answers are compressed on a blocking thread.
const GZIP_BLOCKING_BYTES: usize = 256 * 1024;

/// Prometheus' `errorType`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Canceled,
    Timeout,
    Internal,
    Unavailable,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Canceled => "canceled",
            ErrorType::Timeout => "timeout",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            // nginx's "client closed request", as Prometheus uses.
            ErrorType::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ErrorType::Timeout | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error: its type and the message clients show.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorType,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorType::BadData, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorType::Internal, message)
    }

    /// Storage errors: retryable ones are `unavailable`, the rest `internal`.
    pub fn storage(e: &StorageError) -> ApiError {
        let kind = if e.is_transient() {
            ErrorType::Unavailable
        } else {
            ErrorType::Internal
        };
        ApiError::new(kind, format!("{STORAGE_ERROR_PREFIX}{e}"))
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> ApiError {
        ApiError::bad_data(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_response(
            self.kind.status(),
            json::error(self.kind.as_str(), &self.message),
        );
        if self.kind == ErrorType::Unavailable {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// A successful answer: `data` (already JSON) and warnings.
pub struct Answer {
    pub data: String,
    pub warnings: Vec<String>,
    /// Storage nodes holding some of the data did not answer: the answer
    /// carries `"isPartial":true` (or is refused when partial responses are
    /// denied).
    pub partial: bool,
}

impl Answer {
    pub fn new(data: String) -> Answer {
        Answer {
            data,
            warnings: Vec::new(),
            partial: false,
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What every API handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub source: Arc<dyn Source>,
    pub engine: Engine,
    pub config: Arc<Config>,
    pub gate: limits::Gate,
    pub metrics: Metrics,
    /// Refuse partial answers (503 `unavailable`) instead of answering them
    /// with `isPartial`; the `deny_partial_response` parameter overrides it.
    pub deny_partial_response: bool,
}

/// Whether the request's `Accept-Encoding` allows gzip.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

/// A 200 answer, compressed when allowed and worth it.
async fn success_response(body: String, gzip_allowed: bool) -> Response {
    if !gzip_allowed || body.len() < GZIP_MIN_BYTES {
        return json_response(StatusCode::OK, body);
    }
    let (body, compressed) = if body.len() >= GZIP_BLOCKING_BYTES {
        let compressing = tokio::task::spawn_blocking(move || {
            let compressed = gzip(body.as_bytes());
            (body, compressed)
        });
        match compressing.await {
            Ok(done) => done,
            Err(e) => {
                return ApiError::internal(format!("compression task failed: {e}")).into_response();
            }
        }
    } else {
        let compressed = gzip(body.as_bytes());
        (body, compressed)
    };
    let Ok(compressed) = compressed else {
        return json_response(StatusCode::OK, body);
    };
    let mut response = (StatusCode::OK, compressed).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

impl ApiState {
    /// Serves one API request timed under `endpoint`: parses its parameters,
    /// runs `handle` on them (with the start instant, which deadlines count
    /// from), and answers through [`ApiState::finish`].
    pub async fn serve(
        &self,
        endpoint: &'static str,
        query: Option<String>,
        headers: HeaderMap,
        body: Bytes,
        handle: impl AsyncFnOnce(Params, Instant) -> Result<Answer, ApiError>,
    ) -> Response {
        let started = Instant::now();
        let result = match Params::from_request(query.as_deref(), &headers, &body) {
            Ok(params) => match self.denies_partial(&params) {
                Ok(deny) => match handle(params, started).await {
                    Ok(answer) => self.check_partial(endpoint, deny, answer),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        };
        self.finish(endpoint, started, &headers, result).await
    }

    /// Whether this request refuses partial answers: its
    /// `deny_partial_response` parameter, else the process default.
    pub fn denies_partial(&self, params: &Params) -> Result<bool, ApiError> {
        Ok(params
            .flag("deny_partial_response")?
            .unwrap_or(self.deny_partial_response))
    }

    /// Counts a partial answer and refuses it when `deny` says so, with the
    /// warnings (which name the missing storage nodes) as the message.
    pub fn check_partial(
        &self,
        endpoint: &'static str,
        deny: bool,
        answer: Answer,
    ) -> Result<Answer, ApiError> {
        if !answer.partial {
            return Ok(answer);
        }
        if deny {
            self.metrics.partial_response(endpoint, "denied");
            return Err(ApiError::new(
                ErrorType::Unavailable,
                format!("{PARTIAL_DENIED_PREFIX}{}", answer.warnings.join("; ")),
            ));
        }
        self.metrics.partial_response(endpoint, "answered");
        Ok(answer)
    }

    /// Counts the request, logs server-side failures, and renders the answer
    /// (gzip-compressed when `headers` allow it).
    pub async fn finish(
        &self,
        endpoint: &'static str,
        started: Instant,
        headers: &HeaderMap,
        result: Result<Answer, ApiError>,
    ) -> Response {
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(answer) => {
                self.metrics.api_request(endpoint, "ok", seconds);
                let body = json::success(&answer.data, &answer.warnings, answer.partial);
                success_response(body, accepts_gzip(headers)).await
            }
            Err(e) => {
                self.metrics.api_request(endpoint, e.kind.as_str(), seconds);
                // Refusals by the admission limits are counted, not logged:
                // under overload they would flood the log.
                // Denied partial answers are counted by `check_partial`.
                let storage_down =
                    e.kind == ErrorType::Unavailable && e.message.starts_with(STORAGE_ERROR_PREFIX);
                if e.kind == ErrorType::Internal || storage_down {
                    tracing::warn!(endpoint, error = %e, "API request failed.");
                }
                e.into_response()
            }
        }
    }

    /// Runs `work` where it may block; a panic becomes an `internal` error.
    ///
    /// On a multi-threaded runtime the request's own thread runs it and
    /// hands its other tasks to another worker (`block_in_place`): a label
    /// lookup of a tenth of a millisecond would otherwise spend a fifth of
    /// its time waking a blocking thread and being woken back.
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let multi_threaded = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        if multi_threaded {
            let run = std::panic::AssertUnwindSafe(work);
            return tokio::task::block_in_place(|| std::panic::catch_unwind(run))
                .unwrap_or_else(|panic| Err(ApiError::internal(panic_message(&*panic))));
        }
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(e) => Err(ApiError::internal(format!("request task failed: {e}"))),
        }
    }
}

/// The text a panic was raised with, for the error it becomes.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("request task panicked: {text}")
}

/// Routes of the Prometheus API over `source`.
pub fn router(source: Arc<dyn Source>, config: &Config, metrics: Metrics) -> Router {
    router_with_gate(source, config, metrics, limits::Gate::new(config))
}

/// Like [`router`], with query slots shared with other routers (one gate
/// for every tenant of a process).
pub fn router_with_gate(
    source: Arc<dyn Source>,
    config: &Config,
    metrics: Metrics,
    gate: limits::Gate,
) -> Router {
    router_with_policy(source, config, metrics, gate, false)
}

/// Like [`router_with_gate`], refusing partial answers by default when
/// `deny_partial_response` is set (a cluster's `--deny-partial-response`).
pub fn router_with_policy(
    source: Arc<dyn Source>,
    config: &Config,
    metrics: Metrics,
    gate: limits::Gate,
    deny_partial_response: bool,
) -> Router {
    let state = ApiState {
        source,
        engine: Engine::new(config.engine_options()),
        config: Arc::new(config.clone()),
        gate,
        metrics,
        deny_partial_response,
    };
    Router::new()
        .route("/api/v1/query", get(query::instant).post(query::instant))
        .route("/api/v1/query_range", get(query::range).post(query::range))
        .route(
            "/api/v1/format_query",
            get(query::format).post(query::format),
        )
        .route(
            "/api/v1/query_exemplars",
            get(query::exemplars).post(query::exemplars),
        )
        .route("/api/v1/series", get(series::series).post(series::series))
        .route("/api/v1/labels", get(labels::names).post(labels::names))
        .route(
            "/api/v1/label/{name}/values",
            get(labels::values).post(labels::values),
        )
        .route(
            "/api/v1/metadata",
            get(status::metadata).post(status::metadata),
        )
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route("/api/v1/status/tsdb", get(status::tsdb))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::Duration;

    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use strata_storage::{Cardinality, Matcher, TimeRange};
    use tower::ServiceExt;

    use super::*;
    use crate::source::{Found, Selected};

    /// A source whose `select` waits until the test lets it go, so a query
    /// holds its slot for as long as the test wants.
    struct BlockingSource {
        entered: Mutex<Sender<()>>,
        release: Mutex<Receiver<()>>,
        names: Vec<String>,
        /// Label name lookups panic.
        panics: bool,
    }

    fn blocking_source(names: Vec<String>) -> (Arc<BlockingSource>, Receiver<()>, Sender<()>) {
        let (entered_tx, entered) = channel();
        let (release, release_rx) = channel();
        let source = Arc::new(BlockingSource {
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
            names,
            panics: false,
        });
        (source, entered, release)
    }

    impl Source for BlockingSource {
        fn select(
            &self,
            _: &[Matcher],
            _: TimeRange,
            _: Instant,
        ) -> Result<Selected, StorageError> {
            let _ = self.entered.lock().expect("lock").send(());
            let _ = self.release.lock().expect("lock").recv();
            Ok(Selected {
                series: Box::new(std::iter::empty()),
                warnings: Vec::new(),
                partial: false,
                late: Default::default(),
            })
        }
        fn label_names(
            &self,
            _: &[Matcher],
            _: TimeRange,
            _: usize,
            _: Instant,
        ) -> Result<Found<Vec<String>>, StorageError> {
            assert!(!self.panics, "index page out of bounds");
            Ok(Found::complete(self.names.clone()))
        }
        fn label_values(
            &self,
            _: &str,
            _: &[Matcher],
            _: TimeRange,
            _: usize,
            _: Instant,
        ) -> Result<Found<Vec<String>>, StorageError> {
            Ok(Found::default())
        }
        fn cardinality(
            &self,
            _: TimeRange,
            _: usize,
            _: Instant,
        ) -> Result<Found<Cardinality>, StorageError> {
            Ok(Found::default())
        }
    }

    async fn fetch(router: &Router, uri: &str) -> (StatusCode, String) {
        let request = Request::get(uri).body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_slots_refuse_and_timeouts_answer_while_evaluation_runs_on() {
        let (source, entered, release) = blocking_source(Vec::new());
        let config = Config {
            max_concurrent_queries: 1,
            max_queued_queries: 0,
            ..Config::default()
        };
        let router = router(source, &config, Metrics::default());

        // The first query times out while its selector is still reading.
        let (status, body) = fetch(&router, "/api/v1/query?query=up&timeout=0.2").await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#
            )
        );
        entered
            .recv_timeout(Duration::from_secs(5))
            .expect("selector entered");

        // Its slot is still taken until the evaluation really ends.
        let (status, body) = fetch(&router, "/api/v1/query?query=up").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body.starts_with(
                r#"{"status":"error","errorType":"unavailable","error":"too many queries"#
            ) && body.contains("--query.max-queued-queries"),
            "{body}"
        );
        // Lookups that evaluate nothing are not held back.
        let (status, body) = fetch(&router, "/api/v1/labels").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"status":"success","data":[]}"#)
        );

        release.send(()).expect("release");
        // The slot comes back once the blocked evaluation returns.
        let started = Instant::now();
        loop {
            let next = {
                let router = router.clone();
                tokio::spawn(async move { fetch(&router, "/api/v1/query?query=1").await })
            };
            // A second select would block again: answer it at once.
            let _ = release.send(());
            let (status, body) = next.await.expect("join");
            if status == StatusCode::OK {
                assert!(body.contains(r#""resultType":"scalar""#), "{body}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "slot never freed: {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn gzip_acceptance() {
        let check = |value: &str, want: bool| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, value.parse().expect("header"));
            assert_eq!(accepts_gzip(&headers), want, "{value}");
        };
        check("gzip", true);
        check("gzip, deflate, br", true);
        check("br;q=1.0, GZIP;q=0.5", true);
        check("*", true);
        check("deflate", false);
        check("gzip;q=0", false);
        check("identity", false);
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn large_answers_are_gzipped_when_accepted() {
        use std::io::Read as _;

        let names: Vec<String> = (0..500).map(|i| format!("label_{i:04}")).collect();
        let (source, _entered, _release) = blocking_source(names.clone());
        let router = router(source, &Config::default(), Metrics::default());
        let plain = fetch(&router, "/api/v1/labels").await.1;
        assert!(plain.len() > GZIP_MIN_BYTES, "{}", plain.len());

        let request = Request::get("/api/v1/labels")
            .header(header::ACCEPT_ENCODING, "gzip, deflate")
            .body(Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(
            headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()),
            Some(&b"gzip"[..])
        );
        assert_eq!(
            headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        assert!(
            body.len() < plain.len() / 2,
            "{} vs {}",
            body.len(),
            plain.len()
        );
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut unzipped)
            .expect("gunzip");
        assert_eq!(unzipped, plain);

        // Small answers stay plain.
        let request = Request::get("/api/v1/status/buildinfo")
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[tokio::test]
    async fn a_changed_points_limit_names_its_flag() {
        let (source, _entered, _release) = blocking_source(Vec::new());
        let config = Config {
            max_points_per_series: 10,
            ..Config::default()
        };
        let router = router(source, &config, Metrics::default());
        let (status, body) = fetch(
            &router,
            "/api/v1/query_range?query=1&start=0&end=150&step=10",
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::BAD_REQUEST,
                r#"{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of 10 points per timeseries (set by --query.max-points-per-series). Try decreasing the query resolution (?step=XX)"}"#
            )
        );
        let (status, _) = fetch(
            &router,
            "/api/v1/query_range?query=1&start=0&end=100&step=10",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    /// Lookups run in place on a multi-threaded runtime and on a blocking
    /// thread on a single-threaded one; either way a panic is an `internal`
    /// error naming it, and the next request is served.
    async fn a_panicking_lookup_is_an_internal_error() {
        let (source, _entered, _release) = blocking_source(Vec::new());
        let panicking = Arc::new(BlockingSource {
            panics: true,
            ..Arc::into_inner(source).expect("one owner")
        });
        let router = router(panicking, &Config::default(), Metrics::default());
        let (status, body) = fetch(&router, "/api/v1/labels").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.contains(r#""errorType":"internal""#) && body.contains("index page out of bounds"),
            "{body}"
        );
        let (status, body) = fetch(&router, "/api/v1/label/job/values").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"status":"success","data":[]}"#)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn panics_in_place_are_internal_errors() {
        a_panicking_lookup_is_an_internal_error().await;
    }

    #[tokio::test]
    async fn panics_on_blocking_threads_are_internal_errors() {
        a_panicking_lookup_is_an_internal_error().await;
    }
}
