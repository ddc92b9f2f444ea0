//! The objects a `StrataCluster` turns into, as pure functions of its spec:
//! the storage StatefulSet (one volume per pod, `OnDelete` updates so that
//! the operator replaces pods one at a time) and its headless Service, the
//! insert Deployment and Service, one Deployment and Service per select
//! pool, the alert Deployment and Service, the topology and rule
//! ConfigMaps, and a PodDisruptionBudget per component. Every object carries
//! the cluster as its controlling owner, so deleting the cluster deletes
//! them (the storage volumes are kept: see [`storage_statefulset`]).
//!
//! Container arguments follow the role flags of docs/cluster.md.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Probe, ProjectedVolumeSource, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use strata_crds::StrataClusterSpec;
use strata_crds::cluster::{AlertSpec, SelectPool};
use strata_storage::cluster::topology::Topology;

use crate::labels;

pub const STORAGE_HTTP_PORT: i32 = 8482;
pub const STORAGE_RPC_PORT: i32 = 8400;
pub const INSERT_PORT: i32 = 8480;
pub const SELECT_PORT: i32 = 8481;
pub const ALERT_PORT: i32 = 8880;

/// The key of the topology file in its ConfigMap.
pub const TOPOLOGY_KEY: &str = "topology.yaml";
pub const TOPOLOGY_DIR: &str = "/etc/strata/topology";
pub const RULES_DIR: &str = "/etc/strata/rules";
pub const DATA_DIR: &str = "/data";
pub const HANDOFF_DIR: &str = "/handoff";

/// Component names, as in the `app.kubernetes.io/component` label.
pub const STORAGE: &str = "storage";
pub const INSERT: &str = "insert";
pub const SELECT: &str = "select";
pub const ALERT: &str = "alert";
/// The component label of rule ConfigMaps.
pub const RULES: &str = "rules";
/// The component label of the topology ConfigMap.
pub const TOPOLOGY: &str = "topology";

/// One cluster's identity and spec: everything the objects derive from.
#[derive(Clone, Debug)]
pub struct Cluster<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub spec: &'a StrataClusterSpec,
    pub owner: OwnerReference,
    /// `image:tag` every container runs.
    pub image: String,
}

impl Cluster<'_> {
    pub fn storage(&self) -> String {
        format!("{}-storage", self.name)
    }

    pub fn storage_pod(&self, ordinal: i32) -> String {
        format!("{}-storage-{ordinal}", self.name)
    }

    /// RPC address of storage pod `ordinal`, as listed in the topology.
    pub fn storage_addr(&self, ordinal: i32) -> String {
        format!(
            "{}.{}.{}.svc:{STORAGE_RPC_PORT}",
            self.storage_pod(ordinal),
            self.storage(),
            self.namespace
        )
    }

    pub fn insert(&self) -> String {
        format!("{}-insert", self.name)
    }

    pub fn select(&self, pool: &str) -> String {
        format!("{}-select-{pool}", self.name)
    }

    pub fn alert(&self) -> String {
        format!("{}-alert", self.name)
    }

    pub fn topology(&self) -> String {
        format!("{}-topology", self.name)
    }

    pub fn rules(&self, index: usize) -> String {
        format!("{}-rules-{index}", self.name)
    }

    /// The version label of pods: the image tag.
    pub fn version(&self) -> &str {
        self.image.rsplit_once(':').map_or("", |(_, tag)| tag)
    }

    fn meta(&self, name: String, component: &str, pool: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_string()),
            labels: Some(labels::object(self.name, component, pool)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    fn pod_labels(&self, component: &str, pool: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = labels::object(self.name, component, pool);
        labels.insert(labels::VERSION.to_string(), self.version().to_string());
        labels
    }
}

/// Hex xxh3 of the JSON form of `value`: the template and spec hashes.
pub fn hash<T: Serialize>(value: &T) -> String {
    // Serializing k8s-openapi types to JSON cannot fail (no non-string map
    // keys, no custom serializers that error).
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

fn http_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(port.to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

/// The `strata <role>` container with its probes on the `http` port.
fn container(
    cluster: &Cluster,
    role: &str,
    args: Vec<String>,
    ports: Vec<ContainerPort>,
    resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let mut all_args = vec![role.to_string()];
    all_args.extend(args);
    Container {
        name: role.to_string(),
        image: Some(cluster.image.clone()),
        image_pull_policy: cluster.spec.image_pull_policy.clone(),
        args: Some(all_args),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/ready", "http", 5, 3)),
        // Generous: a storage node replaying a long log is alive but not
        // ready, and must not be killed for it.
        liveness_probe: Some(http_probe("/health", "http", 10, 6)),
        resources: resources.cloned(),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    }
}

fn pod_template(
    cluster: &Cluster,
    component: &str,
    pool: Option<&str>,
    container: Container,
    volumes: Vec<Volume>,
    grace_seconds: i64,
) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(cluster.pod_labels(component, pool)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: (!volumes.is_empty()).then_some(volumes),
            image_pull_secrets: (!cluster.spec.image_pull_secrets.is_empty())
                .then(|| cluster.spec.image_pull_secrets.clone()),
            termination_grace_period_seconds: Some(grace_seconds),
            ..PodSpec::default()
        }),
    }
}

fn with_template_hash(meta: &mut ObjectMeta, template: &PodTemplateSpec) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::TEMPLATE_HASH.to_string(), hash(template));
}

/// The storage pods' `strata storage` arguments.
pub fn storage_args(spec: &StrataClusterSpec) -> Vec<String> {
    let storage = &spec.storage;
    let mut args = vec![
        format!("--listen=0.0.0.0:{STORAGE_HTTP_PORT}"),
        format!("--rpc.listen=0.0.0.0:{STORAGE_RPC_PORT}"),
        format!("--data-dir={DATA_DIR}"),
        format!("--retention={}", storage.retention),
    ];
    if let Some(interval) = &storage.dedup_min_scrape_interval {
        args.push(format!("--dedup.min-scrape-interval={interval}"));
    }
    args.extend(storage.extra_args.iter().cloned());
    args
}

/// The storage StatefulSet with `replicas` pods. Updates are `OnDelete`:
/// the operator deletes one old pod at a time once the others are healthy.
/// Volumes are retained when the cluster is deleted or scaled, because
/// they hold the only copy of data.
pub fn storage_statefulset(cluster: &Cluster, replicas: i32) -> StatefulSet {
    let spec = &cluster.spec.storage;
    let container = container(
        cluster,
        STORAGE,
        storage_args(cluster.spec),
        vec![
            port("http", STORAGE_HTTP_PORT),
            port("rpc", STORAGE_RPC_PORT),
        ],
        spec.resources.as_ref(),
        vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        }],
    );
    // Storage flushes in-memory rows at stop.
    let template = pod_template(cluster, STORAGE, None, container, Vec::new(), 120);
    let mut meta = cluster.meta(cluster.storage(), STORAGE, None);
    with_template_hash(&mut meta, &template);
    StatefulSet {
        metadata: meta,
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(cluster.storage()),
            selector: LabelSelector {
                match_labels: Some(labels::selector(cluster.name, STORAGE, None)),
                match_expressions: None,
            },
            // Pods start and stop together at creation and scale-out; the
            // one-at-a-time order that matters (upgrades) is the operator's.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template,
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(labels::selector(cluster.name, STORAGE, None)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.volume.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            spec.volume.size.clone(),
                        )])),
                        limits: None,
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            }]),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The headless Service giving each storage pod its DNS name. Not-ready
/// pods are published too: a starting node must be reachable by name for
/// insert's hand-off replay and for the operator's probe.
pub fn storage_service(cluster: &Cluster) -> Service {
    Service {
        metadata: cluster.meta(cluster.storage(), STORAGE, None),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels::selector(cluster.name, STORAGE, None)),
            ports: Some(vec![
                service_port("http", STORAGE_HTTP_PORT),
                service_port("rpc", STORAGE_RPC_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn topology_volume(cluster: &Cluster) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "topology".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cluster.topology(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: "topology".into(),
            mount_path: TOPOLOGY_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}

fn deployment(
    cluster: &Cluster,
    name: String,
    component: &str,
    pool: Option<&str>,
    replicas: i32,
    template: PodTemplateSpec,
) -> Deployment {
    let mut meta = cluster.meta(name, component, pool);
    with_template_hash(&mut meta, &template);
    Deployment {
        metadata: meta,
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector(cluster.name, component, pool)),
                match_expressions: None,
            },
            template,
            // Stuck rollouts surface as ProgressDeadlineExceeded after this.
            progress_deadline_seconds: Some(600),
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn topology_file() -> String {
    format!("--topology-file={TOPOLOGY_DIR}/{TOPOLOGY_KEY}")
}

/// `strata insert` arguments.
pub fn insert_args(spec: &StrataClusterSpec) -> Vec<String> {
    let mut args = vec![
        format!("--listen=0.0.0.0:{INSERT_PORT}"),
        topology_file(),
        format!("--replication-factor={}", spec.storage.replication_factor),
        format!("--handoff.dir={HANDOFF_DIR}"),
    ];
    args.extend(spec.insert.extra_args.iter().cloned());
    args
}

/// The insert Deployment. Its hand-off queue lives in an emptyDir: writes
/// for an unreachable node survive container restarts, not rescheduling.
pub fn insert_deployment(cluster: &Cluster) -> Deployment {
    let (topology, topology_mount) = topology_volume(cluster);
    let handoff = Volume {
        name: "handoff".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let container = container(
        cluster,
        INSERT,
        insert_args(cluster.spec),
        vec![port("http", INSERT_PORT)],
        cluster.spec.insert.resources.as_ref(),
        vec![
            topology_mount,
            VolumeMount {
                name: "handoff".into(),
                mount_path: HANDOFF_DIR.into(),
                ..VolumeMount::default()
            },
        ],
    );
    let template = pod_template(
        cluster,
        INSERT,
        None,
        container,
        vec![topology, handoff],
        30,
    );
    deployment(
        cluster,
        cluster.insert(),
        INSERT,
        None,
        cluster.spec.insert.replicas,
        template,
    )
}

fn service(
    cluster: &Cluster,
    name: String,
    component: &str,
    pool: Option<&str>,
    port: i32,
) -> Service {
    Service {
        metadata: cluster.meta(name, component, pool),
        spec: Some(ServiceSpec {
            selector: Some(labels::selector(cluster.name, component, pool)),
            ports: Some(vec![service_port("http", port)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn insert_service(cluster: &Cluster) -> Service {
    service(cluster, cluster.insert(), INSERT, None, INSERT_PORT)
}

/// `strata select` arguments of one pool.
pub fn select_args(spec: &StrataClusterSpec, pool: &SelectPool) -> Vec<String> {
    let mut args = vec![
        format!("--listen=0.0.0.0:{SELECT_PORT}"),
        topology_file(),
        format!("--replication-factor={}", spec.storage.replication_factor),
    ];
    args.extend(pool.extra_args.iter().cloned());
    args
}

pub fn select_deployment(cluster: &Cluster, pool: &SelectPool) -> Deployment {
    let (topology, topology_mount) = topology_volume(cluster);
    let container = container(
        cluster,
        SELECT,
        select_args(cluster.spec, pool),
        vec![port("http", SELECT_PORT)],
        pool.resources.as_ref(),
        vec![topology_mount],
    );
    let name = Some(pool.name.as_str());
    let template = pod_template(cluster, SELECT, name, container, vec![topology], 30);
    deployment(
        cluster,
        cluster.select(&pool.name),
        SELECT,
        name,
        pool.replicas,
        template,
    )
}

pub fn select_service(cluster: &Cluster, pool: &SelectPool) -> Service {
    service(
        cluster,
        cluster.select(&pool.name),
        SELECT,
        Some(&pool.name),
        SELECT_PORT,
    )
}

/// `strata alert` arguments: queries go to the chosen select pool, results
/// and alert state to insert, both per rule group's tenant.
pub fn alert_args(cluster: &Cluster, alert: &AlertSpec) -> Vec<String> {
    let ns = cluster.namespace;
    let mut args = vec![
        format!("--listen=0.0.0.0:{ALERT_PORT}"),
        format!(
            "--datasource.url=http://{}.{ns}.svc:{SELECT_PORT}/select/{{tenant}}/prometheus",
            cluster.select(&alert.select_pool)
        ),
        format!(
            "--remote-write.url=http://{}.{ns}.svc:{INSERT_PORT}/insert/{{tenant}}/prometheus/api/v1/write",
            cluster.insert()
        ),
        format!("--rule={RULES_DIR}/*.yaml"),
    ];
    if let Some(interval) = &alert.evaluation_interval {
        args.push(format!("--evaluation-interval={interval}"));
    }
    for notifier in &alert.notifiers {
        args.push(format!("--notifier.url={}", notifier.url));
    }
    args.extend(alert.extra_args.iter().cloned());
    args
}

/// The alert Deployment, mounting every rule ConfigMap into one directory.
pub fn alert_deployment(cluster: &Cluster, alert: &AlertSpec, rule_maps: &[String]) -> Deployment {
    let rules = Volume {
        name: "rules".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(
                rule_maps
                    .iter()
                    .map(|name| VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: name.clone(),
                            optional: Some(true),
                            ..ConfigMapProjection::default()
                        }),
                        ..VolumeProjection::default()
                    })
                    .collect(),
            ),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    };
    let container = container(
        cluster,
        ALERT,
        alert_args(cluster, alert),
        vec![port("http", ALERT_PORT)],
        alert.resources.as_ref(),
        vec![VolumeMount {
            name: "rules".into(),
            mount_path: RULES_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }],
    );
    let template = pod_template(cluster, ALERT, None, container, vec![rules], 30);
    deployment(
        cluster,
        cluster.alert(),
        ALERT,
        None,
        alert.replicas,
        template,
    )
}

pub fn alert_service(cluster: &Cluster) -> Service {
    service(cluster, cluster.alert(), ALERT, None, ALERT_PORT)
}

/// At most one pod of a component down at a time by voluntary disruption
/// (node drains); for storage this keeps every series readable with a
/// replication factor of 2 or more.
pub fn pdb(
    cluster: &Cluster,
    name: String,
    component: &str,
    pool: Option<&str>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: cluster.meta(name, component, pool),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(cluster.name, component, pool)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The topology ConfigMap insert and select read their storage nodes from.
pub fn topology_config_map(cluster: &Cluster, topology: &Topology) -> Result<ConfigMap, String> {
    let text = serde_saphyr::to_string(topology).map_err(|e| e.to_string())?;
    Ok(ConfigMap {
        metadata: cluster.meta(cluster.topology(), TOPOLOGY, None),
        data: Some(BTreeMap::from([(TOPOLOGY_KEY.to_string(), text)])),
        ..ConfigMap::default()
    })
}

/// Rule ConfigMap `index` holding `files` (file name -> rule file text).
pub fn rule_config_map(
    cluster: &Cluster,
    index: usize,
    files: BTreeMap<String, String>,
) -> ConfigMap {
    ConfigMap {
        metadata: cluster.meta(cluster.rules(index), RULES, None),
        data: Some(files),
        ..ConfigMap::default()
    }
}

/// Sets the spec-hash annotation of an object's metadata: the hash of the
/// object as it is before the annotation is added.
pub fn stamp<T: Serialize>(meta_of: impl Fn(&mut T) -> &mut ObjectMeta, mut object: T) -> T {
    let digest = hash(&object);
    meta_of(&mut object)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::SPEC_HASH.to_string(), digest);
    object
}
