//! Fixtures shared by the plan and reconcile tests: clusters and rules from
//! JSON, and a [`World`] that stands for what the API server holds, which
//! tests move forward by hand (the StatefulSet controller's revision, a
//! pod becoming ready) between reconciles.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use strata_crds::{StrataCluster, StrataRule};
use strata_operator::cluster::rollout::PodView;
use strata_operator::cluster::{Object, Observed, Plan};
use strata_operator::labels;

pub const NS: &str = "obs";
pub const NAME: &str = "demo";
pub const UID: &str = "3f1c7a52-0000-4000-8000-000000000001";

/// A StrataCluster `obs/demo` with `spec` (JSON) at `generation`.
pub fn cluster(spec: Value, generation: i64) -> StrataCluster {
    serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "StrataCluster",
        "metadata": {
            "name": NAME, "namespace": NS, "uid": UID,
            "generation": generation, "resourceVersion": "100",
            "creationTimestamp": "2025-01-01T00:00:00Z"
        },
        "spec": spec,
    }))
    .expect("valid StrataCluster")
}

/// Three storage nodes, RF 2, one insert, pools `default` and `alerting`,
/// alert on `alerting`.
pub fn spec(version: &str, storage: i32) -> Value {
    json!({
        "version": version,
        "storage": {"replicas": storage, "replicationFactor": 2},
        "insert": {"replicas": 2},
        "select": {"pools": [{"name": "default", "replicas": 2}, {"name": "alerting"}]},
        "alert": {"selectPool": "alerting", "notifiers": [{"url": "http://am:9093"}]},
    })
}

/// A StrataRule `ns/name` with `groups` (JSON).
pub fn rule(ns: &str, name: &str, groups: Value, generation: i64) -> StrataRule {
    serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "StrataRule",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "generation": generation},
        "spec": {"groups": groups},
    }))
    .expect("valid StrataRule")
}

pub fn good_groups() -> Value {
    json!([{"name": "latency", "rules": [
        {"alert": "HighLatency", "expr": "histogram_quantile(0.99, rate(http_duration_seconds_bucket[5m])) > 0.5", "for": "5m",
         "labels": {"severity": "page"}, "annotations": {"summary": "p99 {{ $value }}"}},
        {"record": "job:up:sum", "expr": "sum by (job) (up)"},
    ]}])
}

pub fn bad_groups() -> Value {
    json!([{"name": "broken", "rules": [
        {"record": "job:up:sum", "expr": "sum by (job) (up)"},
        {"alert": "Oops", "expr": "rate(http_requests_total[5m] > 1"},
    ]}])
}

pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_735_689_600 + secs).expect("valid time")
}

/// What the API server holds, as far as one cluster's reconcile reads it.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub observed: Observed,
}

fn replace_or_push<T: Clone>(list: &mut Vec<T>, item: T, same: impl Fn(&T) -> bool) {
    match list.iter_mut().find(|x| same(x)) {
        Some(x) => *x = item,
        None => list.push(item),
    }
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

impl World {
    /// Stores what `plan` applied, bumping generations of changed specs.
    pub fn apply(&mut self, plan: &Plan) {
        let o = &mut self.observed;
        for object in &plan.apply {
            match object {
                Object::StatefulSet(s) => {
                    let mut s = (**s).clone();
                    let old = o
                        .stateful_sets
                        .iter()
                        .find(|x| name_of(&x.metadata) == name_of(&s.metadata));
                    s.metadata.generation =
                        Some(old.and_then(|x| x.metadata.generation).unwrap_or(0) + 1);
                    s.status = old.and_then(|x| x.status.clone());
                    let name = name_of(&s.metadata).to_string();
                    replace_or_push(&mut o.stateful_sets, s, |x| name_of(&x.metadata) == name);
                }
                Object::Deployment(d) => {
                    let mut d = (**d).clone();
                    let old = o
                        .deployments
                        .iter()
                        .find(|x| name_of(&x.metadata) == name_of(&d.metadata));
                    d.metadata.generation =
                        Some(old.and_then(|x| x.metadata.generation).unwrap_or(0) + 1);
                    d.status = old.and_then(|x| x.status.clone());
                    let name = name_of(&d.metadata).to_string();
                    replace_or_push(&mut o.deployments, d, |x| name_of(&x.metadata) == name);
                }
                Object::Service(s) => {
                    let name = name_of(&s.metadata).to_string();
                    replace_or_push(&mut o.services, (**s).clone(), |x| {
                        name_of(&x.metadata) == name
                    });
                }
                Object::ConfigMap(c) => {
                    let name = name_of(&c.metadata).to_string();
                    replace_or_push(&mut o.config_maps, (**c).clone(), |x| {
                        name_of(&x.metadata) == name
                    });
                }
                Object::PodDisruptionBudget(p) => {
                    let name = name_of(&p.metadata).to_string();
                    replace_or_push(&mut o.pdbs, (**p).clone(), |x| name_of(&x.metadata) == name);
                }
            }
        }
        for (kind, name) in &plan.delete {
            use strata_operator::cluster::Kind;
            match kind {
                Kind::Deployment => o.deployments.retain(|x| name_of(&x.metadata) != name),
                Kind::Service => o.services.retain(|x| name_of(&x.metadata) != name),
                Kind::ConfigMap => o.config_maps.retain(|x| name_of(&x.metadata) != name),
                Kind::PodDisruptionBudget => o.pdbs.retain(|x| name_of(&x.metadata) != name),
                Kind::StatefulSet => o.stateful_sets.retain(|x| name_of(&x.metadata) != name),
            }
        }
        if let Some((pod, _)) = &plan.replace_pod {
            o.pods.retain(|p| p.name != *pod);
            o.healthy.remove(pod);
        }
    }

    pub fn sts(&self) -> &StatefulSet {
        self.observed
            .stateful_sets
            .first()
            .expect("storage StatefulSet applied")
    }

    /// The StatefulSet controller has seen the latest spec: its update
    /// revision is `revision`; ready/updated counts follow the pods.
    pub fn sts_observed(&mut self, revision: &str) {
        let pods = self.observed.pods.clone();
        let sts = self
            .observed
            .stateful_sets
            .first_mut()
            .expect("storage StatefulSet applied");
        let generation = sts.metadata.generation;
        let storage: Vec<&PodView> = pods.iter().filter(|p| p.component == "storage").collect();
        let ready = storage.iter().filter(|p| p.ready).count() as i32;
        let updated = storage
            .iter()
            .filter(|p| p.revision.as_deref() == Some(revision))
            .count() as i32;
        let replicas = sts.spec.replicas.unwrap_or(0);
        let current = if updated == replicas {
            revision.to_string()
        } else {
            storage
                .iter()
                .find_map(|p| p.revision.clone().filter(|r| r != revision))
                .unwrap_or_else(|| revision.to_string())
        };
        sts.status = Some(StatefulSetStatus {
            observed_generation: generation,
            replicas: storage.len() as i32,
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            current_revision: Some(current),
            update_revision: Some(revision.to_string()),
            ..StatefulSetStatus::default()
        });
    }

    /// Storage pod `ordinal` exists at `revision`, ready (and healthy) or not.
    pub fn storage_pod(&mut self, ordinal: i32, revision: &str, ready: bool, created: i64) {
        let name = format!("{NAME}-storage-{ordinal}");
        self.observed.pods.retain(|p| p.name != name);
        self.observed.healthy.remove(&name);
        if ready {
            self.observed.healthy.insert(name.clone());
        }
        self.observed.pods.push(PodView {
            name: name.clone(),
            uid: format!("uid-{name}-{revision}"),
            component: "storage".into(),
            pool: None,
            ordinal: Some(ordinal),
            revision: Some(revision.into()),
            ready,
            terminating: false,
            created: Some(at(created)),
            ready_changed: None,
            failure: None,
            ip: Some(format!("10.0.0.{ordinal}")),
        });
    }

    pub fn pod_failing(&mut self, name: &str, failure: &str) {
        let pod = self
            .observed
            .pods
            .iter_mut()
            .find(|p| p.name == name)
            .expect("pod exists");
        pod.failure = Some(failure.into());
        pod.ready = false;
        self.observed.healthy.remove(name);
    }

    /// Every Deployment has rolled out its current template.
    pub fn deployments_complete(&mut self) {
        for d in &mut self.observed.deployments {
            let replicas = d.spec.replicas.unwrap_or(1);
            d.status = Some(DeploymentStatus {
                observed_generation: d.metadata.generation,
                replicas: Some(replicas),
                ready_replicas: Some(replicas),
                updated_replicas: Some(replicas),
                available_replicas: Some(replicas),
                ..DeploymentStatus::default()
            });
        }
    }

    /// The rule files currently in the rule ConfigMaps.
    pub fn rule_files(&self) -> BTreeMap<String, String> {
        self.observed
            .config_maps
            .iter()
            .filter(|c| name_of(&c.metadata).starts_with(&format!("{NAME}-rules-")))
            .flat_map(|c| c.data.clone().unwrap_or_default())
            .collect()
    }

    pub fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        self.observed
            .config_maps
            .iter()
            .find(|c| name_of(&c.metadata) == name)
    }

    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.observed
            .deployments
            .iter()
            .find(|d| name_of(&d.metadata) == name)
    }

    pub fn storage_names(&self) -> BTreeSet<String> {
        self.observed
            .pods
            .iter()
            .filter(|p| p.component == "storage")
            .map(|p| p.name.clone())
            .collect()
    }
}

/// A pod object as the API returns it, for [`PodView::from_pod`].
pub fn pod_object(
    name: &str,
    component: &str,
    revision: Option<&str>,
    ready: bool,
    waiting: Option<&str>,
) -> Pod {
    let mut pod_labels = labels::object(NAME, component, None);
    if let Some(r) = revision {
        pod_labels.insert(labels::REVISION.into(), r.into());
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(pod_labels),
            creation_timestamp: Some(Time(at(0))),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            pod_ip: Some("127.0.0.1".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            container_statuses: waiting.map(|reason| {
                vec![ContainerStatus {
                    name: component.into(),
                    restart_count: 4,
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some("back-off 1m20s restarting failed container".into()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]
            }),
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
    }
}

/// The pod object a [`PodView`] was read from (for the scripted API server).
pub fn pod_from_view(view: &PodView) -> Pod {
    let mut pod = pod_object(
        &view.name,
        &view.component,
        view.revision.as_deref(),
        view.ready,
        None,
    );
    pod.metadata.uid = Some(view.uid.clone());
    pod.metadata.creation_timestamp = view.created.map(Time);
    if let Some(conditions) = pod.status.as_mut().and_then(|s| s.conditions.as_mut()) {
        conditions[0].last_transition_time = view.ready_changed.map(Time);
    }
    if let Some(pool) = &view.pool {
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(labels::POOL.into(), pool.clone());
    }
    if let Some(status) = pod.status.as_mut() {
        status.pod_ip = view.ip.clone();
        if let Some(failure) = &view.failure {
            status.container_statuses = Some(vec![ContainerStatus {
                name: view.component.clone(),
                restart_count: 4,
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(failure.clone()),
                        message: None,
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]);
        }
    }
    pod
}
