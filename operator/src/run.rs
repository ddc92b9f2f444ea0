//! `strata operator`: serve `/health` and `/metrics`, wait to lead, run the
//! cluster and rule controllers until shutdown or lost leadership, then
//! release the Lease and stop serving (components stop in reverse order).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use strata_crds::{StrataCluster, StrataRule};
use tokio::sync::watch;

use crate::client::Kube;
use crate::cluster::reconcile::{self as cluster_reconcile, Probe};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::leader::Elector;
use crate::metrics::Metrics;
use crate::rule::reconcile as rule_reconcile;
use crate::{cluster, labels};

/// How long `/health` and `/metrics` may take to finish at stop.
const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the operator until `shutdown` completes or leadership is lost (an
/// error: the process should exit and be restarted as a follower).
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = crate::http::router(Arc::new(registry));
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });
    tracing::info!(addr = %config.listen, "Strata operator serves /health, /ready and /metrics.");

    let result = lead(&config, &metrics, shutdown).await;

    let start = Instant::now();
    let _ = http_stop.send(());
    match tokio::time::timeout(HTTP_STOP_TIMEOUT, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "HTTP server failed."),
        Ok(Err(error)) => tracing::warn!(%error, "HTTP server task failed."),
        Err(_) => tracing::warn!("HTTP server did not stop in time."),
    }
    tracing::info!(
        took_ms = start.elapsed().as_millis() as u64,
        "Stopped HTTP."
    );
    result
}

fn identity() -> String {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    var("POD_NAME")
        .or_else(|| var("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "strata-operator".to_string())
}

async fn lead(
    config: &Config,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let client = Client::try_default().await.map_err(Error::Client)?;
    let identity = if config.identity.is_empty() {
        identity()
    } else {
        config.identity.clone()
    };
    let lease_namespace = if config.lease_namespace.is_empty() {
        client.default_namespace().to_string()
    } else {
        config.lease_namespace.clone()
    };
    let kube = Kube::new(client, Some(identity.clone()));
    let elector = Elector::new(
        kube.clone(),
        lease_namespace,
        config.lease_name.clone(),
        identity,
        config.lease_duration,
        config.renew_interval,
    );
    let mut shutdown = pin!(shutdown);
    if config.leader_election {
        tokio::select! {
            () = elector.acquire() => {}
            () = &mut shutdown => return Ok(()),
        }
    }
    metrics.leader.set(1);
    let (stop, stopped) = watch::channel(false);
    let controllers = tokio::spawn(controllers(config.clone(), kube, metrics.clone(), stopped));
    let hold = async {
        if config.leader_election {
            elector.hold().await
        } else {
            std::future::pending().await
        }
    };
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        lost = hold => Err(lost),
    };
    // In-flight reconciles finish; no new ones start.
    let start = Instant::now();
    let _ = stop.send(true);
    if let Err(error) = controllers.await {
        tracing::warn!(%error, "Controller task failed.");
    }
    tracing::info!(
        took_ms = start.elapsed().as_millis() as u64,
        "Stopped controllers."
    );
    metrics.leader.set(0);
    if outcome.is_ok()
        && config.leader_election
        && let Err(error) = elector.release().await
    {
        tracing::warn!(%error, "Cannot release the lease; a successor waits for it to expire.");
    }
    outcome
}

fn api<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    if namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// One set of controllers per watched namespace (a Role per namespace
/// grants nothing cluster-wide), or one set for all namespaces.
async fn controllers(config: Config, kube: Kube, metrics: Metrics, stop: watch::Receiver<bool>) {
    let namespaces = if config.watch_namespaces.is_empty() {
        vec![String::new()]
    } else {
        config.watch_namespaces.clone()
    };
    let cluster_ctx = Arc::new(cluster_reconcile::Context {
        kube: kube.clone(),
        settings: cluster::Settings {
            default_version: config.default_version.clone(),
            pod_ready_timeout: config.pod_ready_timeout,
            rule_config_map_max_bytes: config.rule_config_map_max_bytes,
        },
        probe: Probe::new(config.probe_timeout, config.probe_nodes),
        metrics: metrics.clone(),
        requeue_progressing: config.requeue_progressing,
        requeue_settled: config.requeue_settled,
        rule_namespaces: config.watch_namespaces.clone(),
    });
    let rule_ctx = Arc::new(rule_reconcile::Context {
        kube: kube.clone(),
        metrics,
        rule_config_map_max_bytes: config.rule_config_map_max_bytes,
        requeue_error: config.requeue_progressing,
    });
    let sets = namespaces.iter().map(|ns| {
        namespace_controllers(
            kube.client().clone(),
            ns.clone(),
            cluster_ctx.clone(),
            rule_ctx.clone(),
            stop.clone(),
        )
    });
    futures_util::future::join_all(sets).await;
}

async fn namespace_controllers(
    client: Client,
    ns: String,
    cluster_ctx: Arc<cluster_reconcile::Context>,
    rule_ctx: Arc<rule_reconcile::Context>,
    stop: watch::Receiver<bool>,
) {
    let ns = ns.as_str();
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        crate::FIELD_MANAGER
    ));
    let controller = Controller::new(
        api::<StrataCluster>(&client, ns),
        watcher::Config::default(),
    );
    let store = controller.store();
    let clusters = controller
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone())
        // Pods belong to StatefulSets and ReplicaSets, not to the cluster:
        // their instance label names it. A pod turning ready or
        // crashlooping moves a rollout on at once.
        .watches(api::<Pod>(&client, ns), owned, |pod| {
            let instance = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::INSTANCE))
                .cloned();
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            instance.map(|name| ObjectRef::<StrataCluster>::new(&name).within(&namespace))
        })
        // A rule may be selected by any cluster with an alert component.
        .watches(
            api::<StrataRule>(&client, ns),
            watcher::Config::default(),
            move |_rule| {
                store
                    .state()
                    .into_iter()
                    .filter(|c| c.spec.alert.is_some())
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(
            cluster_reconcile::reconcile,
            cluster_reconcile::error_policy,
            cluster_ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "Cluster controller event.");
            }
        });
    let rules = Controller::new(api::<StrataRule>(&client, ns), watcher::Config::default())
        .graceful_shutdown_on(stopped(stop))
        .run(
            rule_reconcile::reconcile,
            rule_reconcile::error_policy,
            rule_ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "Rule controller event.");
            }
        });
    tracing::info!(namespace = %if ns.is_empty() { "*" } else { ns }, "Controllers started.");
    futures_util::future::join(clusters, rules).await;
}
