//! `strata alert`: evaluates rule files against a Prometheus-compatible query
//! URL, writes results through remote write, notifies Alertmanagers, and
//! serves the rules API; `strata alert test <files>` runs rule unit tests.
//!
//! [`Evaluation`] is the part `strata single --rule` shares: the rule
//! manager, the notifier task, and reloading on SIGHUP or file change.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use prometheus_client::registry::Registry;
use strata_alert::config::{Config, EvalConfig};
use strata_alert::eval::{Context, Manager, SystemClock};
use strata_alert::metrics::Metrics;
use strata_alert::notifier::Notifier;
use strata_alert::querier::{HttpQuerier, Querier};
use strata_alert::writer::{RemoteWriter, Writer};
use strata_storage::Tenant;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::{self, HttpMetrics, Phase, Readiness, Registries};

/// `strata alert [flags]` or `strata alert test <files>`.
#[derive(Clone, Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<AlertCommand>,

    #[command(flatten)]
    pub config: Config,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum AlertCommand {
    /// Runs rule unit test files (promtool's `test rules` format).
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--datasource.url is required")]
    NoDatasource,
    #[error("invalid --tenant {0:?}: want account or account:project")]
    Tenant(String),
    #[error("cannot load rules: {0}")]
    Load(#[from] strata_alert::eval::LoadError),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("rule unit tests failed")]
    TestsFailed,
}

/// Runs the rule unit tests of `files`, printing to stdout.
pub fn test(files: &[PathBuf]) -> Result<(), AlertError> {
    let mut out = std::io::stdout();
    if strata_alert::unittest::run(files, &mut out) {
        Ok(())
    } else {
        Err(AlertError::TestsFailed)
    }
}

/// Running rule evaluation: groups, notifier and reloader.
pub struct Evaluation {
    pub manager: Arc<Manager>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Evaluation {
    /// Loads the rule files and starts evaluating them with `querier` and
    /// `writer`. `external_url` is used when `--external-url` is empty.
    pub fn start(
        config: &EvalConfig,
        querier: Arc<dyn Querier>,
        writer: Option<Arc<dyn Writer>>,
        metrics: Metrics,
        external_url: String,
    ) -> Result<Evaluation, AlertError> {
        let tenant = Tenant::from_str(&config.tenant)
            .map_err(|_| AlertError::Tenant(config.tenant.clone()))?;
        let notifier = Notifier::new(
            config.notifier_url.clone(),
            config.notifier_queue_capacity,
            config.notifier_timeout,
            metrics.clone(),
        );
        let ctx = Arc::new(Context {
            querier,
            writer,
            notifier: notifier.clone(),
            clock: Arc::new(SystemClock),
            metrics,
            external_labels: config.external_labels(),
            external_url: if config.external_url.is_empty() {
                external_url
            } else {
                config.external_url.clone()
            },
            default_interval: config.evaluation_interval,
            default_query_offset: config.query_offset,
            default_tenant: tenant,
            resend_delay: config.resend_delay,
            for_grace_period: config.for_grace_period,
            outage_tolerance: config.outage_tolerance,
        });
        let manager = Manager::new(ctx, config.rule.clone());
        let groups = manager.load()?;
        tracing::info!(groups, files = ?config.rule, "Rules loaded.");
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut notifier_stop = stopped.clone();
        tasks.push(tokio::spawn(notifier.run(async move {
            let _ = notifier_stop.wait_for(|s| *s).await;
        })));
        tasks.push(tokio::spawn(reload_loop(
            manager.clone(),
            config.reload_check_interval,
            stopped,
        )));
        Ok(Evaluation {
            manager,
            stop,
            tasks,
        })
    }

    /// Stops the groups, then sends the queued alerts once and stops.
    pub async fn stop(self) {
        self.manager.stop().await;
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Reloads the rules on SIGHUP and when the files change; a failed reload
/// keeps the rules running.
async fn reload_loop(manager: Arc<Manager>, check: Duration, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};

    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGHUP; rules reload only on file change.");
            None
        }
    };
    let check = if check.is_zero() {
        Duration::from_secs(u64::MAX / 4)
    } else {
        check
    };
    loop {
        let by_signal = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
            () = tokio::time::sleep(check) => false,
        };
        if !by_signal && !manager.changed() {
            continue;
        }
        match manager.load() {
            Ok(groups) => tracing::info!(groups, by_signal, "Rules reloaded."),
            Err(e) => {
                tracing::error!(error = %e, "Cannot reload rules; the previous rules keep running.")
            }
        }
    }
}

#[derive(Clone)]
struct AppState {
    readiness: Readiness,
    registries: Arc<Registries>,
}

/// Runs `strata alert` until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AlertError> {
    if config.datasource_url.is_empty() {
        return Err(AlertError::NoDatasource);
    }
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    let metrics = Metrics::register(&mut registry);
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| AlertError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.listen.clone(), |a| a.to_string());
    let querier = Arc::new(HttpQuerier::new(
        &config.datasource_url,
        config.datasource_timeout,
    ));
    let writer: Option<Arc<dyn Writer>> = if config.remote_write_url.is_empty() {
        None
    } else {
        Some(Arc::new(RemoteWriter::new(
            &config.remote_write_url,
            config.datasource_timeout,
        )))
    };
    let evaluation = Evaluation::start(
        &config.eval,
        querier,
        writer,
        metrics,
        format!("http://{addr}"),
    )?;
    let state = AppState {
        readiness: Readiness::default(),
        registries: Arc::new(Registries {
            process: registry,
            storage: Default::default(),
        }),
    };
    let app = Router::new()
        .route("/health", get(http::health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_handler))
        .with_state(state.clone())
        .merge(strata_alert::api::router(evaluation.manager.clone()))
        .route_layer(axum::middleware::from_fn(http::tag_route))
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            http::count_requests,
        ));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stopped.await;
            })
            .await
    });
    state.readiness.set(Phase::Ready);
    tracing::info!(%addr, "Strata alert is ready.");
    let failed = tokio::select! {
        () = shutdown => None,
        result = &mut server => Some(result),
    };
    state.readiness.set(Phase::Stopping);
    evaluation.stop().await;
    match failed {
        None => {
            let _ = stop_http.send(());
            let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
            tracing::info!("Strata alert stopped.");
            Ok(())
        }
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(AlertError::Serve(e)),
        Some(Err(e)) => Err(AlertError::Serve(std::io::Error::other(e))),
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    http::ready_response(&state.readiness)
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    http::metrics_response(&state.registries)
}
