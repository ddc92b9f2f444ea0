//! One reconcile of a `StrataCluster`: read the cluster's objects, pods,
//! the rules its alert component may select and the health of its storage
//! nodes; compute the [`Plan`]; apply, delete, replace the one storage pod,
//! write the status, publish the events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use strata_crds::{StrataCluster, StrataRule};

use super::desired::{STORAGE, STORAGE_HTTP_PORT};
use super::plan::{Kind, Object, Observed, Plan, Settings, plan};
use super::rollout::PodView;
use crate::client::Kube;
use crate::error::{Error, Result};
use crate::labels;
use crate::metrics::{ControllerLabels, ErrorLabels, Metrics};

const CONTROLLER: &str = "cluster";

/// Asks storage nodes whether they serve (`GET /ready` on their HTTP
/// port), beyond their pod's readiness.
#[derive(Clone, Debug)]
pub struct Probe {
    client: reqwest::Client,
    /// The nodes' HTTP port; 8482 in a cluster.
    pub port: u16,
    /// When false, a ready pod counts as healthy (for an operator outside
    /// the cluster network).
    pub enabled: bool,
}

impl Probe {
    pub fn new(timeout: Duration, enabled: bool) -> Probe {
        Probe {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            port: STORAGE_HTTP_PORT as u16,
            enabled,
        }
    }

    /// Names of the ready storage pods whose node answers `/ready` with 200.
    pub async fn healthy(&self, pods: &[PodView]) -> BTreeSet<String> {
        let ready = pods
            .iter()
            .filter(|p| p.component == STORAGE && p.ready && !p.terminating);
        if !self.enabled {
            return ready.map(|p| p.name.clone()).collect();
        }
        let checks = ready.filter_map(|p| {
            let ip = p.ip.as_deref()?;
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            let url = format!("http://{host}:{}/ready", self.port);
            let client = self.client.clone();
            let name = p.name.clone();
            Some(async move {
                match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => Some(name),
                    Ok(response) => {
                        tracing::debug!(pod = %name, status = %response.status(), "Storage node not ready.");
                        None
                    }
                    Err(error) => {
                        tracing::debug!(pod = %name, %error, "Storage node did not answer /ready.");
                        None
                    }
                }
            })
        });
        join_all(checks).await.into_iter().flatten().collect()
    }
}

/// What the cluster controller shares between reconciles.
pub struct Context {
    pub kube: Kube,
    pub settings: Settings,
    pub probe: Probe,
    pub metrics: Metrics,
    pub requeue_progressing: Duration,
    pub requeue_settled: Duration,
    /// The watched namespaces; empty means all. Rules selected by a
    /// namespace selector are read from these only.
    pub rule_namespaces: Vec<String>,
}

/// Reconciles one `StrataCluster`.
pub async fn reconcile(object: Arc<StrataCluster>, ctx: Arc<Context>) -> Result<Action> {
    let labels = ControllerLabels {
        controller: CONTROLLER,
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let start = Instant::now();
    let result = reconcile_inner(&object, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    result
}

/// The requeue after a failed reconcile; counts the failure by reason.
pub fn error_policy(object: Arc<StrataCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: CONTROLLER,
            reason: error.metric_label(),
        })
        .inc();
    tracing::warn!(cluster = %object.name_any(), namespace = ?object.namespace(), %error, "Reconcile failed; retrying.");
    Action::requeue(ctx.requeue_progressing)
}

async fn reconcile_inner(object: &StrataCluster, ctx: &Context) -> Result<Action> {
    let observed = observe(ctx, object).await?;
    let plan = plan(object, &observed, &ctx.settings, Timestamp::now())?;
    execute(ctx, object, &plan).await?;
    Ok(Action::requeue(if plan.settled {
        ctx.requeue_settled
    } else {
        ctx.requeue_progressing
    }))
}

/// Reads everything [`plan`] needs.
pub async fn observe(ctx: &Context, object: &StrataCluster) -> Result<Observed> {
    let namespace = object
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let selector = labels::cluster_query(&object.name_any());
    let kube = &ctx.kube;
    let sel = Some(selector.as_str());
    let mut observed = Observed {
        stateful_sets: kube.list::<StatefulSet>(namespace, sel).await?,
        deployments: kube.list::<Deployment>(namespace, sel).await?,
        services: kube.list::<Service>(namespace, sel).await?,
        pdbs: kube.list::<PodDisruptionBudget>(namespace, sel).await?,
        config_maps: kube.list::<ConfigMap>(namespace, sel).await?,
        pods: kube
            .list::<Pod>(namespace, sel)
            .await?
            .iter()
            .map(PodView::from_pod)
            .collect(),
        ..Observed::default()
    };
    if let Some(alert) = &object.spec.alert {
        if alert.rule_namespace_selector.is_some() {
            if ctx.rule_namespaces.is_empty() {
                observed.rules = kube.list_all::<StrataRule>(None).await?;
            } else {
                for ns in &ctx.rule_namespaces {
                    observed
                        .rules
                        .extend(kube.list::<StrataRule>(ns, None).await?);
                }
            }
            observed.namespaces = kube
                .list_all::<Namespace>(None)
                .await?
                .into_iter()
                .map(|ns| (ns.name_any(), ns.metadata.labels.unwrap_or_default()))
                .collect::<BTreeMap<_, _>>();
        } else {
            observed.rules = kube.list::<StrataRule>(namespace, None).await?;
        }
    }
    observed.healthy = ctx.probe.healthy(&observed.pods).await;
    Ok(observed)
}

/// Carries out `plan` for `object`.
pub async fn execute(ctx: &Context, object: &StrataCluster, plan: &Plan) -> Result<()> {
    let namespace = object
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let kube = &ctx.kube;
    for o in &plan.apply {
        match o {
            Object::StatefulSet(o) => drop(kube.apply(o.as_ref()).await?),
            Object::Deployment(o) => drop(kube.apply(o.as_ref()).await?),
            Object::Service(o) => drop(kube.apply(o.as_ref()).await?),
            Object::ConfigMap(o) => drop(kube.apply(o.as_ref()).await?),
            Object::PodDisruptionBudget(o) => drop(kube.apply(o.as_ref()).await?),
        }
        ctx.metrics.action(CONTROLLER, "apply");
    }
    for (kind, name) in &plan.delete {
        match kind {
            Kind::Deployment => kube.delete::<Deployment>(namespace, name).await?,
            Kind::Service => kube.delete::<Service>(namespace, name).await?,
            Kind::ConfigMap => kube.delete::<ConfigMap>(namespace, name).await?,
            Kind::PodDisruptionBudget => {
                kube.delete::<PodDisruptionBudget>(namespace, name).await?
            }
            // Never deleted by the operator: its volumes hold the data.
            Kind::StatefulSet => continue,
        }
        ctx.metrics.action(CONTROLLER, "delete");
    }
    if let Some((pod, uid)) = &plan.replace_pod {
        tracing::info!(cluster = %object.name_any(), %pod, "Replacing storage pod for the new revision.");
        kube.delete_pod(namespace, pod, uid).await?;
        ctx.metrics.action(CONTROLLER, "delete_pod");
    }
    if object.status.as_ref() != Some(&plan.status) {
        let body = json!({
            "apiVersion": StrataCluster::api_version(&()),
            "kind": StrataCluster::kind(&()),
            "status": plan.status,
        });
        kube.apply_status::<StrataCluster>(namespace, &object.name_any(), &body)
            .await?;
        ctx.metrics.action(CONTROLLER, "status");
    }
    let regarding = object.object_ref(&());
    for note in &plan.notes {
        kube.event(&regarding, note).await;
    }
    Ok(())
}
