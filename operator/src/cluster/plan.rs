//! The whole decision of one cluster reconcile, as a pure function of the
//! `StrataCluster` and what was observed: which objects to apply or delete,
//! which storage pod to replace, the status to write and the events to
//! publish. [`super::reconcile`] only reads the API, calls [`plan`] and
//! carries the result out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use strata_crds::cluster::{
    ClusterPhase, ComponentStatus, PoolStatus, StrataClusterStatus, UpgradeStep,
};
use strata_crds::status::{self, DEGRADED, FALSE, PROGRESSING, READY, TRUE};
use strata_crds::{StrataCluster, StrataRule};
use strata_storage::cluster::topology::Topology;

use super::Note;
use super::desired::{self, ALERT, Cluster, INSERT, SELECT, STORAGE};
use super::object::changes;
pub use super::object::{Kind, Object};
use super::rollout::{self, DeploymentState, PodView, StorageState, StorageStep};
use super::rules::{rule_files, selected_rules};
use super::status::{
    counts, incomplete, set_conditions, upgrade_status, wait_message, warn_on_change,
};
use super::topology;
use crate::error::{Error, Result};
use crate::rule;

/// Operator-wide settings the plan depends on.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image tag of clusters without `spec.version`.
    pub default_version: String,
    /// How long a pod may take to become ready before the rollout stops.
    pub pod_ready_timeout: Duration,
    /// Most bytes of rule files per rule ConfigMap.
    pub rule_config_map_max_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_version: env!("CARGO_PKG_VERSION").into(),
            pod_ready_timeout: Duration::from_secs(600),
            rule_config_map_max_bytes: 900_000,
        }
    }
}

/// What the reconcile read: the cluster's own objects (by its labels), its
/// pods, the storage nodes that answered `/ready`, and the rules and
/// namespaces the alert component may select from.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub config_maps: Vec<ConfigMap>,
    pub pods: Vec<PodView>,
    /// Storage pods whose node answered `/ready` with 200.
    pub healthy: BTreeSet<String>,
    pub rules: Vec<StrataRule>,
    /// Labels of each namespace; filled only when the alert component has
    /// a `ruleNamespaceSelector`.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// What one reconcile does.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Objects to server-side apply, in this order (storage first).
    pub apply: Vec<Object>,
    /// Owned objects no longer wanted (a removed select pool, old rule
    /// ConfigMaps).
    pub delete: Vec<(Kind, String)>,
    /// A storage pod to delete so it comes back at the new revision:
    /// `(name, uid)`.
    pub replace_pod: Option<(String, String)>,
    pub status: StrataClusterStatus,
    /// Events to publish about the cluster.
    pub notes: Vec<Note>,
    /// Nothing is changing: the next check can wait.
    pub settled: bool,
}

/// The storage ordinal an address of the topology belongs to.
fn ordinal_of(cluster: &Cluster, addr: &str) -> Option<i32> {
    let prefix = format!("{}-", cluster.storage());
    let rest = addr.strip_prefix(&prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let ordinal: i32 = digits.parse().ok()?;
    (cluster.storage_addr(ordinal) == addr).then_some(ordinal)
}

fn now_time(now: Timestamp) -> Time {
    Time(now)
}

fn storage_floor(cluster: &Cluster, current: Option<&Topology>, sts: Option<&StatefulSet>) -> i32 {
    match current {
        // Pods that never joined the topology hold no data: the StatefulSet
        // may shrink down to the highest node that did.
        Some(topology) => topology
            .readable()
            .filter_map(|n| ordinal_of(cluster, &n.addr))
            .map(|o| o + 1)
            .max()
            .unwrap_or(0),
        None => sts.and_then(|s| s.spec.replicas).unwrap_or(0),
    }
}

/// The plan of one reconcile of `object`.
pub fn plan(
    object: &StrataCluster,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Result<Plan> {
    let name = object
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    let namespace = object
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let owner = object
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let spec = &object.spec;
    let generation = object.metadata.generation;
    let previous = object.status.clone().unwrap_or_default();
    let cluster = Cluster {
        name,
        namespace,
        spec,
        owner,
        image: spec.image_ref(&settings.default_version),
    };
    let mut notes = Vec::new();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        status::condition(type_, status, reason, message, generation, now_time(now))
    };

    // What is running, whatever the spec says.
    let sts = observed
        .stateful_sets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(cluster.storage().as_str()));
    let deployment = |name: &str| {
        observed
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
    };
    let pods_of = |component: &str, pool: Option<&str>| -> Vec<&PodView> {
        observed
            .pods
            .iter()
            .filter(|p| p.component == component && p.pool.as_deref() == pool)
            .collect()
    };
    let mut status = StrataClusterStatus {
        observed_generation: generation,
        version: Some(cluster.version().to_string()),
        conditions: previous.conditions.clone(),
        storage: ComponentStatus {
            desired_replicas: spec.storage.replicas,
            ready_replicas: sts
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            updated_replicas: sts
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.updated_replicas)
                .unwrap_or(0),
        },
        insert: counts(deployment(&cluster.insert()), spec.insert.replicas),
        select: spec
            .select
            .pools
            .iter()
            .map(|pool| PoolStatus {
                name: pool.name.clone(),
                replicas: counts(deployment(&cluster.select(&pool.name)), pool.replicas),
            })
            .collect(),
        alert: spec
            .alert
            .as_ref()
            .map(|alert| counts(deployment(&cluster.alert()), alert.replicas)),
        ..StrataClusterStatus::default()
    };

    // Being deleted (foreground deletion removes the children first):
    // re-creating them would fight the garbage collector.
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Plan {
            apply: Vec::new(),
            delete: Vec::new(),
            replace_pod: None,
            status: previous,
            notes,
            settled: true,
        });
    }
    let invalid = strata_crds::validate::cluster(spec);
    if !invalid.is_empty() {
        let message = invalid
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        set_conditions(
            &mut status,
            [
                condition(READY, FALSE, "InvalidSpec", message.clone()),
                condition(
                    PROGRESSING,
                    FALSE,
                    "InvalidSpec",
                    "nothing is applied until the spec is valid".into(),
                ),
                condition(DEGRADED, TRUE, "InvalidSpec", message.clone()),
            ],
        );
        status.phase = Some(ClusterPhase::Degraded);
        warn_on_change(&previous, &status, &mut notes, "InvalidSpec", message);
        return Ok(Plan {
            apply: Vec::new(),
            delete: Vec::new(),
            replace_pod: None,
            status,
            notes,
            settled: true,
        });
    }
    if spec.paused {
        set_conditions(
            &mut status,
            [condition(
                PROGRESSING,
                FALSE,
                "Paused",
                "spec.paused is true: nothing is changed".into(),
            )],
        );
        status.phase = Some(ClusterPhase::Paused);
        return Ok(Plan {
            apply: Vec::new(),
            delete: Vec::new(),
            replace_pod: None,
            status,
            notes,
            settled: true,
        });
    }

    // Storage size: never below the nodes that may hold data.
    let topology_map = observed
        .config_maps
        .iter()
        .find(|cm| cm.metadata.name.as_deref() == Some(cluster.topology().as_str()));
    let current_topology = topology_map
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get(desired::TOPOLOGY_KEY))
        .and_then(|text| Topology::parse(text, Path::new(desired::TOPOLOGY_KEY)).ok());
    let floor = storage_floor(&cluster, current_topology.as_ref(), sts);
    let refused = (spec.storage.replicas < floor).then(|| {
        format!(
            "spec.storage.replicas {} is below the {floor} storage nodes that hold data; \
             removing a node needs data hand-off, which is not available yet: \
             set spec.storage.replicas back to {floor}",
            spec.storage.replicas
        )
    });
    let storage_replicas = spec.storage.replicas.max(floor);

    // Topology: new nodes join once ready.
    let addrs: Vec<String> = (0..storage_replicas)
        .map(|i| cluster.storage_addr(i))
        .collect();
    let ready_ordinals: BTreeSet<i32> = observed
        .pods
        .iter()
        .filter(|p| p.component == STORAGE && p.ready && !p.terminating)
        .filter_map(|p| p.ordinal)
        .collect();
    let mut next_topology = topology::next(current_topology.as_ref(), &addrs, &ready_ordinals);
    // A ConfigMap that no longer parses (edited by hand): insert and select
    // ignore a lower version, so the rewrite must go above the old one.
    let unparsed_version = topology_map
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get(desired::TOPOLOGY_KEY))
        .filter(|_| current_topology.is_none())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("version:")?.trim().parse::<u64>().ok())
        });
    if let Some(version) = unparsed_version {
        next_topology.version = version + 1;
    }
    if let Some(current) = &current_topology {
        for node in &next_topology.nodes {
            if !current.nodes.iter().any(|n| n.addr == node.addr) {
                notes.push(Note::normal(
                    "NodeJoined",
                    "UpdateTopology",
                    format!(
                        "storage node {} joined the topology (version {})",
                        node.addr, next_topology.version
                    ),
                ));
            }
        }
    }
    let topology_complete = addrs
        .iter()
        .all(|a| next_topology.nodes.iter().any(|n| n.addr == *a));

    // Rules.
    let selected = selected_rules(&cluster, &observed.rules, &observed.namespaces);
    let files = rule_files(&selected, observed, settings.rule_config_map_max_bytes);
    let mut rule_maps = rule::pack(&files, settings.rule_config_map_max_bytes);
    if rule_maps.is_empty() && spec.alert.is_some() {
        // The evaluator's rule directory must exist even with no rules.
        rule_maps.push(BTreeMap::new());
    }
    let rule_map_names: Vec<String> = (0..rule_maps.len()).map(|i| cluster.rules(i)).collect();

    // Desired objects.
    let storage_set = desired::storage_statefulset(&cluster, storage_replicas);
    let insert = desired::insert_deployment(&cluster);
    let pools: Vec<(String, Deployment)> = spec
        .select
        .pools
        .iter()
        .map(|p| (p.name.clone(), desired::select_deployment(&cluster, p)))
        .collect();
    let alert = spec
        .alert
        .as_ref()
        .map(|a| desired::alert_deployment(&cluster, a, &rule_map_names));

    // Rollout: where each component stands against its wanted template.
    let want = |meta: &ObjectMeta| rollout::template_hash(meta).unwrap_or_default().to_string();
    let storage_want = want(&storage_set.metadata);
    let insert_want = want(&insert.metadata);
    let pool_wants: Vec<String> = pools.iter().map(|(_, d)| want(&d.metadata)).collect();
    let alert_want = alert.as_ref().map(|d| want(&d.metadata));
    let sts_current = sts.is_some_and(|s| {
        rollout::template_hash(&s.metadata) == Some(storage_want.as_str())
            && s.spec.replicas == Some(storage_replicas)
    });
    let update_revision = sts.filter(|_| sts_current).and_then(|s| {
        let st = s.status.as_ref()?;
        let observed_gen = st.observed_generation.unwrap_or(0);
        (observed_gen >= s.metadata.generation.unwrap_or(0))
            .then_some(st.update_revision.as_deref()?)
    });
    let storage_pods = pods_of(STORAGE, None);
    let storage_step = rollout::storage_step(
        &StorageState {
            replicas: storage_replicas,
            update_revision,
            pods: storage_pods,
            healthy: &observed.healthy,
        },
        now,
        settings.pod_ready_timeout,
    );
    let storage_done = sts_current && storage_step == StorageStep::Settled;
    let insert_state = rollout::deployment_state(
        deployment(&cluster.insert()),
        &want(&insert.metadata),
        &pods_of(INSERT, None),
    );
    let pool_states: Vec<(String, DeploymentState)> = pools
        .iter()
        .map(|(pool, d)| {
            (
                pool.clone(),
                rollout::deployment_state(
                    deployment(&cluster.select(pool)),
                    &want(&d.metadata),
                    &pods_of(SELECT, Some(pool)),
                ),
            )
        })
        .collect();
    let alert_state = alert.as_ref().map(|d| {
        rollout::deployment_state(
            deployment(&cluster.alert()),
            &want(&d.metadata),
            &pods_of(ALERT, None),
        )
    });
    let insert_done = storage_done && insert_state == DeploymentState::Complete;
    let select_done = insert_done
        && pool_states
            .iter()
            .all(|(_, s)| *s == DeploymentState::Complete);

    // A component's template changes only once those before it run theirs:
    // an existing Deployment with another template keeps it until then.
    let gated = |existing: Option<&Deployment>, d: &Deployment, open: bool| {
        let changes_template = existing.is_some_and(|e| {
            rollout::template_hash(&e.metadata) != rollout::template_hash(&d.metadata)
        });
        changes_template && !open
    };

    let mut wanted: Vec<Object> = vec![
        Object::ConfigMap(Box::new(
            desired::topology_config_map(&cluster, &next_topology).map_err(|detail| {
                Error::Serialize {
                    what: "topology".into(),
                    detail,
                }
            })?,
        )),
        Object::Service(Box::new(desired::storage_service(&cluster))),
        Object::StatefulSet(Box::new(storage_set)),
        Object::PodDisruptionBudget(Box::new(desired::pdb(
            &cluster,
            cluster.storage(),
            STORAGE,
            None,
        ))),
    ];
    let mut held_back = Vec::new();
    let mut push_deployment = |wanted: &mut Vec<Object>, d: Deployment, open: bool| {
        let name = d.metadata.name.clone().unwrap_or_default();
        if gated(deployment(&name), &d, open) {
            held_back.push(name);
        } else {
            wanted.push(Object::Deployment(Box::new(d)));
        }
    };
    push_deployment(&mut wanted, insert, storage_done);
    wanted.push(Object::Service(Box::new(desired::insert_service(&cluster))));
    wanted.push(Object::PodDisruptionBudget(Box::new(desired::pdb(
        &cluster,
        cluster.insert(),
        INSERT,
        None,
    ))));
    for ((pool_name, d), pool) in pools.into_iter().zip(&spec.select.pools) {
        push_deployment(&mut wanted, d, insert_done);
        wanted.push(Object::Service(Box::new(desired::select_service(
            &cluster, pool,
        ))));
        wanted.push(Object::PodDisruptionBudget(Box::new(desired::pdb(
            &cluster,
            cluster.select(&pool_name),
            SELECT,
            Some(&pool_name),
        ))));
    }
    if let Some(d) = alert {
        for (i, files) in rule_maps.into_iter().enumerate() {
            wanted.push(Object::ConfigMap(Box::new(desired::rule_config_map(
                &cluster, i, files,
            ))));
        }
        push_deployment(&mut wanted, d, select_done);
        wanted.push(Object::Service(Box::new(desired::alert_service(&cluster))));
        wanted.push(Object::PodDisruptionBudget(Box::new(desired::pdb(
            &cluster,
            cluster.alert(),
            ALERT,
            None,
        ))));
    }
    let wanted: Vec<Object> = wanted.into_iter().map(Object::stamped).collect();

    let uid = object.metadata.uid.as_deref().unwrap_or_default();
    let (apply, delete) = changes(&wanted, &held_back, observed, uid, &mut notes);

    // Storage pod replacement, only against a StatefulSet that is current.
    let mut replace_pod = None;
    if let StorageStep::Replace { pod, uid, why } = &storage_step {
        notes.push(Note::normal(
            "ReplacingPod",
            "DeletePod",
            format!("Deleting {pod} to start it at the new revision: {why}"),
        ));
        replace_pod = Some((pod.clone(), uid.clone()));
    }

    // Status.
    let stuck: Option<(&'static str, String)> = match &storage_step {
        StorageStep::Stuck {
            reason, message, ..
        } => Some((*reason, message.clone())),
        _ => None,
    }
    .or_else(|| match &insert_state {
        DeploymentState::Stuck { reason, message } => Some((*reason, message.clone())),
        _ => None,
    })
    .or_else(|| {
        pool_states.iter().find_map(|(_, s)| match s {
            DeploymentState::Stuck { reason, message } => Some((*reason, message.clone())),
            _ => None,
        })
    })
    .or_else(|| match &alert_state {
        Some(DeploymentState::Stuck { reason, message }) => Some((*reason, message.clone())),
        _ => None,
    });

    // An upgrade stays in progress until its last pod serves; the
    // StatefulSet's currentRevision cannot tell (it does not move under
    // OnDelete), so the step recorded in the status carries over.
    let was_upgrading = |step: UpgradeStep| {
        previous
            .upgrade
            .as_ref()
            .is_some_and(|u| u.step == step && u.target_version == cluster.version())
    };
    let old_pods = observed.pods.iter().any(|p| {
        p.component == STORAGE && update_revision.is_some_and(|r| p.revision.as_deref() != Some(r))
    });
    let storage_behind = sts.is_some_and(|s| {
        rollout::template_hash(&s.metadata) != Some(storage_want.as_str())
            || old_pods
            || (was_upgrading(UpgradeStep::Storage) && !storage_done)
    });
    let upgrade = upgrade_status(
        &cluster,
        storage_behind,
        &storage_step,
        [(
            UpgradeStep::Insert,
            &insert_state,
            deployment(&cluster.insert()),
            insert_want.clone(),
        )]
        .into_iter()
        .chain(
            pool_states
                .iter()
                .zip(&pool_wants)
                .map(|((pool, s), want)| {
                    (
                        UpgradeStep::Select,
                        s,
                        deployment(&cluster.select(pool)),
                        want.clone(),
                    )
                }),
        )
        .chain(alert_state.iter().map(|s| {
            (
                UpgradeStep::Alert,
                s,
                deployment(&cluster.alert()),
                alert_want.clone().unwrap_or_default(),
            )
        })),
        was_upgrading,
    );
    status.upgrade = upgrade;

    let not_ready: Option<(&str, String)> = if !storage_done {
        Some(("StorageNotReady", wait_message(&storage_step, sts_current)))
    } else if !topology_complete {
        Some((
            "TopologyIncomplete",
            "storage nodes are waiting to join the topology".into(),
        ))
    } else if let Some(message) = incomplete(&insert_state) {
        Some(("InsertNotReady", message))
    } else if let Some(message) = pool_states.iter().find_map(|(_, s)| incomplete(s)) {
        Some(("SelectNotReady", message))
    } else if let Some(message) = alert_state.as_ref().and_then(incomplete) {
        Some(("AlertNotReady", message))
    } else if let Some(o) = apply
        .iter()
        .find(|o| matches!(o.kind(), Kind::StatefulSet | Kind::Deployment))
    {
        // Other objects (Services, ConfigMaps, budgets) change nothing
        // about what is serving.
        Some((
            "Applying",
            format!("{} {} is being updated", o.kind().as_str(), o.name()),
        ))
    } else {
        None
    };
    let ready = not_ready.is_none();
    let ready_condition = match &not_ready {
        None => condition(
            READY,
            TRUE,
            "Serving",
            format!("every component serves {}", cluster.image),
        ),
        Some((reason, message)) => condition(READY, FALSE, reason, message.clone()),
    };
    let degraded = match (&stuck, &refused) {
        (Some((reason, message)), _) => condition(DEGRADED, TRUE, reason, message.clone()),
        (None, Some(message)) => condition(DEGRADED, TRUE, "ScaleInRefused", message.clone()),
        (None, None) => condition(DEGRADED, FALSE, "AsExpected", String::new()),
    };
    let progressing = if ready {
        condition(PROGRESSING, FALSE, "Stable", String::new())
    } else if stuck.is_some() {
        condition(
            PROGRESSING,
            FALSE,
            "RolloutStopped",
            "a pod will not become ready; fix the spec to continue".into(),
        )
    } else if status.upgrade.is_some() {
        let message = not_ready
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        condition(PROGRESSING, TRUE, "Upgrading", message)
    } else {
        let message = not_ready
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        condition(PROGRESSING, TRUE, "Reconciling", message)
    };
    if degraded.status == TRUE {
        warn_on_change(
            &previous,
            &StrataClusterStatus {
                conditions: vec![degraded.clone()],
                ..Default::default()
            },
            &mut notes,
            &degraded.reason.clone(),
            degraded.message.clone(),
        );
    }
    set_conditions(
        &mut status,
        [ready_condition, progressing, degraded.clone()],
    );
    status.phase = Some(if degraded.status == TRUE {
        ClusterPhase::Degraded
    } else if ready {
        ClusterPhase::Ready
    } else if sts.is_none() || status.storage.ready_replicas == 0 {
        ClusterPhase::Pending
    } else {
        ClusterPhase::Progressing
    });

    Ok(Plan {
        apply,
        delete,
        replace_pod,
        status,
        notes,
        settled: ready || (stuck.is_some() && replace_pod_is_none(&storage_step)),
    })
}

fn replace_pod_is_none(step: &StorageStep) -> bool {
    !matches!(step, StorageStep::Replace { .. })
}
