//! `strata single`: storage, insert and select in one process, on one port.
//!
//! Start order: bind the listener (so a port conflict fails fast), serve
//! `/health`, `/ready` (503) and `/metrics` while storage opens (a log replay
//! can take a while), open storage, then route the API and turn ready.
//!
//! Stop order, the reverse: `/ready` turns 503, wait `--http.shutdown-delay`
//! for load balancers to notice, stop accepting and wait for open requests up
//! to `--http.shutdown-timeout`, then close storage (flushes and closes the
//! log). Each step logs how long it took.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::middleware;
use prometheus_client::registry::Registry;
use strata_storage::config::parse_duration;
use strata_storage::{Storage, StorageError, Tenant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{self, HttpMetrics, Phase, ProcessState, Readiness, Registries};
use crate::tenant_routes::{MakeRouter, tenant_routes};

/// Flags of `strata single`. Every field states its default.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "single")]
pub struct Config {
    /// Address to serve HTTP on (every ingestion protocol, the Prometheus
    /// query API, export, tenant paths, health and metrics). Default:
    /// 127.0.0.1:8428.
    #[arg(
        long = "listen",
        env = "STRATA_LISTEN",
        default_value = "127.0.0.1:8428"
    )]
    pub listen: String,

    /// Time between `/ready` turning 503 and the HTTP server refusing new
    /// connections, so that load balancers stop sending first. 0 stops at once.
    /// Default: 0s.
    #[arg(long = "http.shutdown-delay", env = "STRATA_HTTP_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub http_shutdown_delay: Duration,

    /// Longest wait for open HTTP requests at shutdown; requests still open
    /// then are cut. Default: 3s.
    #[arg(long = "http.shutdown-timeout", env = "STRATA_HTTP_SHUTDOWN_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub http_shutdown_timeout: Duration,

    #[command(flatten)]
    pub storage: strata_storage::Config,

    #[command(flatten)]
    pub insert: strata_insert::Config,

    #[command(flatten)]
    pub select: strata_select::Config,

    /// Rule evaluation (`--rule`, `--notifier.url`, ...): with rule files,
    /// rules are evaluated in-process and results written to storage.
    #[command(flatten)]
    pub rules: strata_alert::config::EvalConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum SingleError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open storage in {dir}: {source}")]
    OpenStorage {
        dir: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("cannot close storage: {0}")]
    CloseStorage(#[source] StorageError),
    #[error("storage task failed: {0}")]
    StorageTask(#[source] tokio::task::JoinError),
    #[error("HTTP server stopped unexpectedly: {0}")]
    Serve(String),
    #[error("cannot start rule evaluation: {0}")]
    Rules(#[source] crate::alert::AlertError),
}

/// Ingestion for tenant 0 on the plain paths and for every tenant on
/// `/insert/<tenant>/...`, behind one admission gate.
fn insert_routes(
    storage: &Arc<Storage>,
    config: &strata_insert::Config,
    metrics: strata_insert::Metrics,
) -> Router {
    let sink = storage.clone() as Arc<dyn strata_insert::RowSink>;
    let plain = strata_insert::http::routes(sink.clone(), Tenant::DEFAULT, config, metrics.clone());
    let tenant_config = config.clone();
    let make: MakeRouter = Arc::new(move |tenant| {
        strata_insert::http::routes(sink.clone(), tenant, &tenant_config, metrics.clone())
    });
    strata_insert::http::with_admission(
        plain.merge(tenant_routes("/insert", "/prometheus", make)),
        config,
    )
}

/// Queries of tenant 0 on the plain paths and of every tenant on
/// `/select/<tenant>/prometheus/...`, sharing the query slots.
fn select_routes(
    storage: &Arc<Storage>,
    config: &strata_select::Config,
    metrics: strata_select::Metrics,
) -> Router {
    let gate = strata_select::api::limits::Gate::new(config);
    let plain = strata_select::router_with_gate(
        storage.clone(),
        Tenant::DEFAULT,
        config,
        metrics.clone(),
        gate.clone(),
    );
    let (storage, config) = (storage.clone(), config.clone());
    let make: MakeRouter = Arc::new(move |tenant| {
        strata_select::router_with_gate(
            storage.clone(),
            tenant,
            &config,
            metrics.clone(),
            gate.clone(),
        )
    });
    plain.merge(tenant_routes("/select", "/prometheus", make))
}

/// Runs until `shutdown` completes, then stops gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), SingleError> {
    let started = Instant::now();
    let mut process_registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut process_registry);
    let insert_metrics = strata_insert::Metrics::register(&mut process_registry);
    let select_metrics = strata_select::Metrics::register(&mut process_registry);
    let alert_metrics = (!config.rules.rule.is_empty())
        .then(|| strata_alert::metrics::Metrics::register(&mut process_registry));
    let state = ProcessState::new(
        Readiness::default(),
        Arc::new(Registries {
            process: process_registry,
            storage: OnceLock::new(),
        }),
        "storage is starting\n",
    );

    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| SingleError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.listen.clone(), |a| a.to_string());
    let mut server = Server::start(listener, http::process_router(state.clone(), http_metrics));
    tracing::info!(%addr, "Serving HTTP.");

    tokio::pin!(shutdown);
    let dir = config.storage.data_dir.clone();
    tracing::info!(data_dir = %dir.display(), "Opening storage.");
    let opening = Instant::now();
    let storage_config = config.storage.clone();
    let mut open = tokio::task::spawn_blocking(move || {
        let mut registry = Registry::default();
        let storage = Storage::open(storage_config, &mut registry);
        (storage, registry)
    });
    let opened = tokio::select! {
        opened = &mut open => opened,
        () = &mut shutdown => {
            tracing::info!("Stop requested while storage opens; waiting for it to open, then closing it.");
            state.readiness.set(Phase::Stopping);
            server.stop(&config).await;
            return match open.await {
                Ok((Ok(storage), _)) => close_storage(storage).await,
                Ok((Err(source), _)) => Err(SingleError::OpenStorage { dir, source }),
                Err(e) => Err(SingleError::StorageTask(e)),
            };
        }
    };
    let storage = match opened {
        Ok((Ok(storage), registry)) => {
            let _ = state.registries.storage.set(registry);
            storage
        }
        Ok((Err(source), _)) => {
            server.stop(&config).await;
            return Err(SingleError::OpenStorage { dir, source });
        }
        Err(e) => {
            server.stop(&config).await;
            return Err(SingleError::StorageTask(e));
        }
    };
    tracing::info!(
        elapsed_ms = opening.elapsed().as_millis() as u64,
        "Storage opened."
    );

    // Rules evaluate on their own tasks, queries and writes on the blocking
    // pool, so that evaluation never holds up ingestion or queries.
    let evaluation = match alert_metrics {
        Some(metrics) => match start_rules(&config, &storage, metrics, &addr) {
            Ok(evaluation) => Some(evaluation),
            Err(e) => {
                server.stop(&config).await;
                close_storage(storage).await?;
                return Err(e);
            }
        },
        None => None,
    };
    let mut api = Router::new()
        .merge(insert_routes(&storage, &config.insert, insert_metrics))
        .merge(select_routes(&storage, &config.select, select_metrics))
        .merge(http::admin_router(storage.clone()));
    if let Some(evaluation) = &evaluation {
        api = api.merge(strata_alert::api::router(evaluation.manager.clone()));
    }
    let api = api.route_layer(middleware::from_fn(http::tag_route));
    let _ = state.routes.set(api);
    state.readiness.set(Phase::Ready);
    tracing::info!(
        %addr,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Strata single is ready."
    );

    let failure = tokio::select! {
        () = &mut shutdown => None,
        result = &mut server.task => Some(match result {
            Ok(Ok(())) => "server ended".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        }),
    };
    let stopping = Instant::now();
    state.readiness.set(Phase::Stopping);
    if failure.is_none() {
        server.stop(&config).await;
    }
    if let Some(evaluation) = evaluation {
        evaluation.stop().await;
    }
    close_storage(storage).await?;
    tracing::info!(
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "Strata single stopped."
    );
    match failure {
        None => Ok(()),
        Some(why) => Err(SingleError::Serve(why)),
    }
}

/// Starts evaluating `--rule` files over the local engine and storage.
fn start_rules(
    config: &Config,
    storage: &Arc<Storage>,
    metrics: strata_alert::metrics::Metrics,
    addr: &str,
) -> Result<crate::alert::Evaluation, SingleError> {
    use strata_alert::querier::{EngineQuerier, SourceFor};
    use strata_select::source::{Source, StorageSource};

    let source_storage = storage.clone();
    let source_for: SourceFor = Arc::new(move |tenant: Tenant| {
        Arc::new(StorageSource::new(source_storage.clone(), tenant)) as Arc<dyn Source>
    });
    let engine = strata_select::promql::Engine::new(config.select.engine_options());
    let querier = Arc::new(EngineQuerier::new(engine, source_for));
    let writer = Arc::new(strata_alert::writer::SinkWriter::new(
        storage.clone() as Arc<dyn strata_insert::RowSink>
    ));
    crate::alert::Evaluation::start(
        &config.rules,
        querier,
        Some(writer),
        metrics,
        format!("http://{addr}"),
    )
    .map_err(SingleError::Rules)
}

/// The running HTTP server and the switch that starts its graceful stop.
pub(crate) struct Server {
    pub(crate) task: JoinHandle<std::io::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    pub(crate) fn start(listener: TcpListener, router: Router) -> Server {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Server {
            task,
            stop: Some(stop),
        }
    }

    /// Stops accepting connections and waits for open requests, at most the
    /// configured timeout; requests still open then are cut.
    async fn stop(&mut self, config: &Config) {
        self.stop_after(config.http_shutdown_delay, config.http_shutdown_timeout)
            .await
    }

    /// [`Server::stop`] with the delay and timeout given.
    pub(crate) async fn stop_after(&mut self, delay: Duration, timeout: Duration) {
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

async fn close_storage(storage: Arc<Storage>) -> Result<(), SingleError> {
    let closing = Instant::now();
    let closed = tokio::task::spawn_blocking(move || storage.close()).await;
    let elapsed_ms = closing.elapsed().as_millis() as u64;
    match closed {
        Ok(Ok(())) => {
            tracing::info!(elapsed_ms, "Storage closed.");
            Ok(())
        }
        Ok(Err(e)) => Err(SingleError::CloseStorage(e)),
        Err(e) => Err(SingleError::StorageTask(e)),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn test_state() -> (ProcessState, HttpMetrics) {
        let mut registry = Registry::default();
        let http_metrics = HttpMetrics::register(&mut registry);
        let state = ProcessState::new(
            Readiness::default(),
            Arc::new(Registries {
                process: registry,
                storage: OnceLock::new(),
            }),
            "storage is starting\n",
        );
        (state, http_metrics)
    }

    async fn fetch(router: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn readiness_follows_the_phase_and_health_stays_ok() {
        let (state, http_metrics) = test_state();
        let app = http::process_router(state.clone(), http_metrics);
        assert_eq!(
            fetch(&app, "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(fetch(&app, "/health").await, (StatusCode::OK, "OK".into()));
        state.readiness.set(Phase::Ready);
        assert_eq!(fetch(&app, "/ready").await.0, StatusCode::OK);
        state.readiness.set(Phase::Stopping);
        assert_eq!(
            fetch(&app, "/ready").await,
            (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into())
        );
        assert_eq!(fetch(&app, "/health").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn api_waits_for_storage_then_routes() {
        let (state, http_metrics) = test_state();
        let app = http::process_router(state.clone(), http_metrics);
        assert_eq!(
            fetch(&app, "/api/v1/export").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage is starting\n".into()
            )
        );
        let api = Router::new()
            .route("/api/v1/thing", get(|| async { "thing" }))
            .route_layer(middleware::from_fn(http::tag_route));
        state.routes.set(api).expect("set once");
        assert_eq!(
            fetch(&app, "/api/v1/thing").await,
            (StatusCode::OK, "thing".into())
        );
        assert_eq!(fetch(&app, "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route_and_status() {
        let (state, http_metrics) = test_state();
        let app = http::process_router(state.clone(), http_metrics);
        let api = Router::new()
            .route("/api/v1/thing/{id}", get(|| async { "thing" }))
            .route_layer(middleware::from_fn(http::tag_route));
        state.routes.set(api).expect("set once");
        fetch(&app, "/health").await;
        fetch(&app, "/health").await;
        fetch(&app, "/api/v1/thing/1").await;
        fetch(&app, "/api/v1/thing/2").await;
        fetch(&app, "/random/path").await;
        let (status, text) = fetch(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for want in [
            r#"strata_http_requests_total{path="/health",status="200"} 2"#,
            r#"strata_http_requests_total{path="/api/v1/thing/{id}",status="200"} 2"#,
            r#"strata_http_requests_total{path="other",status="404"} 1"#,
            r#"strata_http_request_duration_seconds_count{path="/health"} 2"#,
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[tokio::test]
    async fn metrics_include_storage_registry_once_open() {
        use prometheus_client::metrics::counter::Counter;

        let (state, http_metrics) = test_state();
        let app = http::process_router(state.clone(), http_metrics);
        let (_, before) = fetch(&app, "/metrics").await;
        assert!(!before.contains("strata_storage_test"));
        let mut storage_registry = Registry::default();
        let counter = Counter::<u64>::default();
        counter.inc();
        storage_registry.register("strata_storage_test", "test", counter);
        state
            .registries
            .storage
            .set(storage_registry)
            .expect("set once");
        let (_, after) = fetch(&app, "/metrics").await;
        assert!(after.contains("strata_storage_test_total 1"), "{after}");
        assert_eq!(after.matches("# EOF").count(), 1, "{after}");
    }
}
