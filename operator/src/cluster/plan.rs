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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use strata_crds::cluster::{
    ClusterPhase, ComponentStatus, PoolStatus, StrataClusterStatus, UpgradeStatus, UpgradeStep,
};
use strata_crds::status::{self, DEGRADED, FALSE, PROGRESSING, READY, TRUE};
use strata_crds::{StrataCluster, StrataRule};
use strata_storage::cluster::topology::Topology;

use super::Note;
use super::desired::{self, ALERT, Cluster, INSERT, RULES, SELECT, STORAGE};
use super::rollout::{self, DeploymentState, PodView, StorageState, StorageStep};
use super::topology;
use crate::error::{Error, Result};
use crate::labels;
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

/// An object to server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    StatefulSet(Box<StatefulSet>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    ConfigMap(Box<ConfigMap>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
}

/// Kinds the operator owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    StatefulSet,
    Deployment,
    Service,
    ConfigMap,
    PodDisruptionBudget,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StatefulSet => "StatefulSet",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::ConfigMap => "ConfigMap",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::StatefulSet(_) => Kind::StatefulSet,
            Object::Deployment(_) => Kind::Deployment,
            Object::Service(_) => Kind::Service,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::StatefulSet(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::PodDisruptionBudget(o) => &o.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::StatefulSet(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::PodDisruptionBudget(o) => &mut o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    fn digest(&self) -> String {
        match self {
            Object::StatefulSet(o) => desired::hash(o),
            Object::Deployment(o) => desired::hash(o),
            Object::Service(o) => desired::hash(o),
            Object::ConfigMap(o) => desired::hash(o),
            Object::PodDisruptionBudget(o) => desired::hash(o),
        }
    }

    /// Sets the spec-hash annotation from the object's content.
    fn stamped(mut self) -> Object {
        let digest = self.digest();
        self.meta_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(labels::SPEC_HASH.to_string(), digest);
        self
    }
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

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn component_of(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(labels::COMPONENT))
        .map(String::as_str)
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

/// The rules the alert component of `cluster` evaluates, in namespace and
/// name order.
pub fn selected_rules<'a>(
    cluster: &Cluster,
    rules: &'a [StrataRule],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<&'a StrataRule> {
    let Some(alert) = &cluster.spec.alert else {
        return Vec::new();
    };
    let empty = BTreeMap::new();
    let mut selected: Vec<&StrataRule> = rules
        .iter()
        .filter(|r| {
            let ns = r.metadata.namespace.as_deref().unwrap_or_default();
            match &alert.rule_namespace_selector {
                None => ns == cluster.namespace,
                Some(selector) => namespaces
                    .get(ns)
                    .is_some_and(|labels| labels::matches(selector, labels)),
            }
        })
        .filter(|r| match &alert.rule_selector {
            None => true,
            Some(selector) => {
                labels::matches(selector, r.metadata.labels.as_ref().unwrap_or(&empty))
            }
        })
        .collect();
    selected.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    selected
}

/// The rule files of the selected rules: each valid rule compiled, each
/// rejected one with the files it had before (its last good version), if
/// any.
fn rule_files(
    selected: &[&StrataRule],
    observed: &Observed,
    max_bytes: usize,
) -> BTreeMap<String, String> {
    let previous: BTreeMap<&String, &String> = observed
        .config_maps
        .iter()
        .filter(|cm| component_of(&cm.metadata) == Some(RULES))
        .flat_map(|cm| cm.data.iter().flatten())
        .collect();
    let mut files = BTreeMap::new();
    for rule_object in selected {
        let ns = rule_object
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default();
        let name = rule_object.metadata.name.as_deref().unwrap_or_default();
        match rule::compile(rule_object, max_bytes) {
            Ok(compiled) => files.extend(compiled.files),
            Err(_) => {
                let prefix = rule::file_prefix(ns, name);
                for (file, text) in &previous {
                    if rule::owns_file(&prefix, file) {
                        files.insert((*file).clone(), (*text).clone());
                    }
                }
            }
        }
    }
    files
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
    let next_topology = topology::next(current_topology.as_ref(), &addrs, &ready_ordinals);
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

    // Apply only what differs from what is there.
    let existing: BTreeMap<(Kind, &str), &ObjectMeta> = observed
        .stateful_sets
        .iter()
        .map(|o| (Kind::StatefulSet, &o.metadata))
        .chain(
            observed
                .deployments
                .iter()
                .map(|o| (Kind::Deployment, &o.metadata)),
        )
        .chain(
            observed
                .services
                .iter()
                .map(|o| (Kind::Service, &o.metadata)),
        )
        .chain(
            observed
                .config_maps
                .iter()
                .map(|o| (Kind::ConfigMap, &o.metadata)),
        )
        .chain(
            observed
                .pdbs
                .iter()
                .map(|o| (Kind::PodDisruptionBudget, &o.metadata)),
        )
        .filter_map(|(kind, meta)| Some(((kind, meta.name.as_deref()?), meta)))
        .collect();
    let mut apply = Vec::new();
    for object in wanted.iter() {
        let found = existing.get(&(object.kind(), object.name()));
        let same = found.is_some_and(|meta| {
            annotation(meta, labels::SPEC_HASH) == annotation(object.meta(), labels::SPEC_HASH)
        });
        if !same {
            let verb = if found.is_some() {
                "Updated"
            } else {
                "Created"
            };
            notes.push(Note::normal(
                verb,
                "Apply",
                format!("{verb} {} {}", object.kind().as_str(), object.name()),
            ));
            apply.push(object.clone());
        }
    }
    let wanted_names: BTreeSet<(Kind, &str)> = wanted
        .iter()
        .map(|o| (o.kind(), o.name()))
        .chain(held_back.iter().map(|n| (Kind::Deployment, n.as_str())))
        .collect();
    let delete: Vec<(Kind, String)> = existing
        .iter()
        .filter(|(key, meta)| {
            // Only what this operator made for this cluster.
            !wanted_names.contains(key)
                && key.0 != Kind::StatefulSet
                && meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::MANAGED_BY))
                    .map(String::as_str)
                    == Some(crate::FIELD_MANAGER)
                && meta
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| Some(&o.uid) == object.metadata.uid.as_ref())
        })
        .map(|((kind, name), _)| (*kind, name.to_string()))
        .collect();
    for (kind, name) in &delete {
        notes.push(Note::normal(
            "Deleted",
            "Delete",
            format!("Deleted {} {name}", kind.as_str()),
        ));
    }

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

fn counts(deployment: Option<&Deployment>, desired: i32) -> ComponentStatus {
    let (_, ready, updated) = deployment
        .map(rollout::deployment_counts)
        .unwrap_or_default();
    ComponentStatus {
        desired_replicas: desired,
        ready_replicas: ready,
        updated_replicas: updated,
    }
}

fn incomplete(state: &DeploymentState) -> Option<String> {
    match state {
        DeploymentState::Complete => None,
        DeploymentState::Missing => Some("not created yet".into()),
        DeploymentState::Progressing(m) => Some(m.clone()),
        DeploymentState::Stuck { message, .. } => Some(message.clone()),
    }
}

fn wait_message(step: &StorageStep, sts_current: bool) -> String {
    if !sts_current {
        return "storage StatefulSet is being updated".into();
    }
    match step {
        StorageStep::Settled => String::new(),
        StorageStep::Wait { message, .. } => message.clone(),
        StorageStep::Replace { why, .. } => why.clone(),
        StorageStep::Stuck { message, .. } => message.clone(),
    }
}

/// The upgrade in progress: the first component, in rollout order, whose
/// pods do not all run the wanted template yet. A component being created
/// or scaled is not upgrading.
fn upgrade_status<'a>(
    cluster: &Cluster,
    storage_behind: bool,
    storage_step: &StorageStep,
    deployments: impl Iterator<
        Item = (
            UpgradeStep,
            &'a DeploymentState,
            Option<&'a Deployment>,
            String,
        ),
    >,
    was_upgrading: impl Fn(UpgradeStep) -> bool,
) -> Option<UpgradeStatus> {
    let target_version = cluster.version().to_string();
    if storage_behind {
        let (pod, message) = match storage_step {
            StorageStep::Wait { pod, message } => (pod.clone(), message.clone()),
            StorageStep::Replace { pod, why, .. } => (Some(pod.clone()), why.clone()),
            StorageStep::Stuck { pod, message, .. } => (Some(pod.clone()), message.clone()),
            StorageStep::Settled => (None, "storage StatefulSet is being updated".into()),
        };
        return Some(UpgradeStatus {
            step: UpgradeStep::Storage,
            target_version,
            pod,
            message,
        });
    }
    for (step, state, existing, want) in deployments {
        let Some(existing) = existing else {
            continue;
        };
        let (desired, _, updated) = rollout::deployment_counts(existing);
        let template_differs = rollout::template_hash(&existing.metadata) != Some(want.as_str());
        let behind = *state != DeploymentState::Complete
            && (template_differs || updated < desired || was_upgrading(step));
        if behind {
            return Some(UpgradeStatus {
                step,
                target_version,
                pod: None,
                message: incomplete(state).unwrap_or_default(),
            });
        }
    }
    None
}

fn set_conditions<const N: usize>(status: &mut StrataClusterStatus, conditions: [Condition; N]) {
    for c in conditions {
        status::set_condition(&mut status.conditions, c);
    }
}

/// A warning event when the Degraded condition's reason or message is new.
fn warn_on_change(
    previous: &StrataClusterStatus,
    next: &StrataClusterStatus,
    notes: &mut Vec<Note>,
    reason: &str,
    message: String,
) {
    let before = status::find(&previous.conditions, DEGRADED);
    let after = status::find(&next.conditions, DEGRADED);
    let same = match (before, after) {
        (Some(b), Some(a)) => {
            b.status == a.status && b.reason == a.reason && b.message == a.message
        }
        _ => false,
    };
    if !same {
        notes.push(Note::warning(reason, "Reconcile", message));
    }
}
