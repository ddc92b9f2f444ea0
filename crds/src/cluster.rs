//! `StrataCluster`: one Strata cluster, i.e. a storage StatefulSet, an insert
//! Deployment, one Deployment and Service per select pool, and optionally an
//! alert Deployment evaluating the `StrataRule`s it selects. Every component
//! runs the same image as `strata <role> [flags]` (docs/cluster.md lists the
//! flags each field turns into).

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Durations on a cluster: units `w`, `d`, `h`, `m`, `s`, `ms` in that order,
/// e.g. `30d`, `1h30m`; `0` alone means zero. (No `y`: a year's length
/// differs between Prometheus and the storage flags' parser.)
pub const DURATION_PATTERN: &str =
    r"^(0|([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$";

/// The image components run when `spec.image` is not set.
pub const DEFAULT_IMAGE: &str = "ghcr.io/strata-dev/strata";

/// Most select pools a cluster may have (bounds the cost of the CEL rules
/// that iterate over pools).
pub const MAX_SELECT_POOLS: usize = 16;
/// Most notifiers of the alert component.
pub const MAX_NOTIFIERS: usize = 16;

/// Desired state of a Strata cluster: storage, insert, select pools and
/// alert, all running one image.
// Each `printcolumn(...)` repeats `type_`, which clippy mistakes for a
// repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "StrataCluster",
    namespaced,
    status = "StrataClusterStatus",
    derive = "PartialEq",
    shortname = "stc",
    category = "strata",
    doc = "A Strata cluster: a storage StatefulSet, insert, select pools and alert.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Progressing, Ready, Degraded or Paused"
    ),
    printcolumn(
        name = "Storage-Ready",
        type_ = "integer",
        json_path = ".status.storage.readyReplicas",
        description = "storage pods ready"
    ),
    printcolumn(
        name = "Storage-Desired",
        type_ = "integer",
        json_path = ".status.storage.desiredReplicas",
        description = "storage pods wanted"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        priority = 1,
        description = "image tag every component runs once upgrades finish"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new(
    "self.storage.replicationFactor <= self.storage.replicas"
).message("storage.replicationFactor must not exceed storage.replicas").field_path(".storage.replicationFactor"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.alert) || self.select.pools.exists(p, p.name == self.alert.selectPool)"
).message("alert.selectPool must name one of select.pools").field_path(".alert.selectPool"))]
#[serde(rename_all = "camelCase")]
pub struct StrataClusterSpec {
    /// Container image repository every component runs. Default
    /// `ghcr.io/strata-dev/strata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image tag; changing it starts a rolling upgrade (storage one pod at a
    /// time, then insert, select and alert). Default: the operator's own
    /// version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`. Default: Kubernetes' default for
    /// the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    /// Secrets for pulling the image. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Storage nodes: a StatefulSet with one volume per pod.
    pub storage: StorageSpec,
    /// Ingestion: a stateless Deployment. Default one replica.
    #[serde(default)]
    pub insert: InsertSpec,
    /// Query: one Deployment and Service per pool. Default one pool named
    /// `default`.
    #[serde(default)]
    pub select: SelectSpec,
    /// Rule evaluation; absent means no alert component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertSpec>,
    /// While true the operator changes nothing it owns (for manual
    /// maintenance); status still updates. Default false.
    #[serde(default)]
    pub paused: bool,
}

/// Storage nodes (`strata storage`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Storage pods. Scaling in drains the highest-numbered node first
    /// (its series are handed off before its volume is released).
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// CPU and memory of each storage pod. Default none (best effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The data volume of each pod.
    #[serde(default)]
    pub volume: VolumeSpec,
    /// How long samples are kept (`--retention`). Default `31d`.
    #[serde(default = "default_retention")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub retention: String,
    /// Storage nodes each series is written to, at most `replicas`
    /// (`--replication-factor` of insert and select). Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub replication_factor: i32,
    /// Keep one sample per series per this interval
    /// (`--dedup.min-scrape-interval`). Default `0`: only exact duplicates
    /// collapse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub dedup_min_scrape_interval: Option<String>,
    /// Flags appended to `strata storage`, e.g. `--sync=interval:1s`.
    /// Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

/// The persistent volume of each storage pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Requested size. Default `10Gi`.
    #[serde(default = "default_volume_size")]
    pub size: Quantity,
    /// StorageClass of the claim. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for VolumeSpec {
    fn default() -> Self {
        Self {
            size: default_volume_size(),
            storage_class_name: None,
        }
    }
}

/// Ingestion (`strata insert`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InsertSpec {
    /// Insert pods. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// CPU and memory of each insert pod. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Flags appended to `strata insert`. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

impl Default for InsertSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            resources: None,
            extra_args: Vec::new(),
        }
    }
}

/// Query (`strata select`), split into pools so that, e.g., rule evaluation
/// never competes with dashboards.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SelectSpec {
    /// The pools; each is its own Deployment and Service
    /// (`<cluster>-select-<pool>`). Names are unique. Default one pool named
    /// `default` with one replica.
    #[serde(default = "default_pools")]
    #[schemars(length(min = 1, max = MAX_SELECT_POOLS))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub pools: Vec<SelectPool>,
}

impl Default for SelectSpec {
    fn default() -> Self {
        Self {
            pools: default_pools(),
        }
    }
}

/// One select pool.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SelectPool {
    /// Pool name, part of the Deployment and Service names: a DNS label of
    /// at most 32 characters.
    #[schemars(length(min = 1, max = 32), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// Select pods of this pool. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// CPU and memory of each pod of this pool. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Flags appended to `strata select`, e.g. `--deny-partial-response`.
    /// Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

/// An http or https URL.
pub const URL_PATTERN: &str = "^https?://[^/?#]+";

/// A lowercase RFC 1123 label.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Rule evaluation (`strata alert`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertSpec {
    /// Alert pods. Each evaluates every rule; Alertmanager deduplicates
    /// their notifications. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// CPU and memory of each alert pod. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Alertmanagers notified of firing and resolved alerts
    /// (`--notifier.url`, one per entry). Default none: alerts are evaluated
    /// and visible at `/api/v1/alerts` but sent nowhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NOTIFIERS))]
    pub notifiers: Vec<Notifier>,
    /// The select pool rule queries go to (`--datasource.url`). Must name a
    /// pool of `select.pools`.
    #[schemars(length(min = 1))]
    pub select_pool: String,
    /// Which `StrataRule`s to evaluate, by label. Default: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_selector: Option<LabelSelector>,
    /// Namespaces whose `StrataRule`s are considered, by label. Default:
    /// only the cluster's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_namespace_selector: Option<LabelSelector>,
    /// Interval of groups that set none (`--evaluation-interval`). Default
    /// `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub evaluation_interval: Option<String>,
    /// Flags appended to `strata alert`, e.g. `--external-label=dc=eu`.
    /// Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

/// An Alertmanager.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notifier {
    /// Alertmanager base URL, e.g. `http://alertmanager.monitoring:9093`.
    #[schemars(regex(pattern = URL_PATTERN))]
    pub url: String,
}

/// What the operator observed; written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StrataClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One-word summary for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Image tag every component runs once the current upgrade finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Storage StatefulSet replicas.
    #[serde(default)]
    pub storage: ComponentStatus,
    /// Insert Deployment replicas.
    #[serde(default)]
    pub insert: ComponentStatus,
    /// Per select pool, in `spec.select.pools` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub select: Vec<PoolStatus>,
    /// Alert Deployment replicas, when `spec.alert` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<ComponentStatus>,
    /// The rolling upgrade in progress; absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
}

/// One-word state of a cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterPhase {
    /// Objects created, pods not ready yet.
    Pending,
    /// Scaling or upgrading.
    Progressing,
    /// Every component has its desired replicas ready and updated.
    Ready,
    /// Something needs a human (see the `Degraded` condition).
    Degraded,
    /// `spec.paused` is set.
    Paused,
}

/// Replica counts of one component, as its StatefulSet or Deployment reports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Replicas the spec asks for.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Replicas passing their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Replicas running the current pod template (image and flags).
    #[serde(default)]
    pub updated_replicas: i32,
}

/// Replica counts of one select pool.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Pool name, as in `spec.select.pools`.
    pub name: String,
    #[serde(flatten)]
    pub replicas: ComponentStatus,
}

/// Progress of a rolling upgrade. Storage goes first, one pod at a time;
/// insert, select and alert follow once storage is healthy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// The component being upgraded.
    pub step: UpgradeStep,
    /// Tag being rolled out.
    pub target_version: String,
    /// The storage pod being replaced, during the `Storage` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// What the step is waiting for, e.g. `strata-storage-1 not ready`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Steps of a rolling upgrade, in order.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeStep {
    Storage,
    Insert,
    Select,
    Alert,
}

fn one() -> i32 {
    1
}

fn default_retention() -> String {
    "31d".to_string()
}

fn default_volume_size() -> Quantity {
    Quantity("10Gi".to_string())
}

fn default_pools() -> Vec<SelectPool> {
    vec![SelectPool {
        name: "default".to_string(),
        replicas: 1,
        resources: None,
        extra_args: Vec::new(),
    }]
}

impl StrataClusterSpec {
    /// The image reference components run: `spec.image:spec.version`, with
    /// `default_version` (the operator's own) when no version is set.
    pub fn image_ref(&self, default_version: &str) -> String {
        let image = self.image.as_deref().unwrap_or(DEFAULT_IMAGE);
        let version = self.version.as_deref().unwrap_or(default_version);
        format!("{image}:{version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ref_falls_back_to_defaults() {
        let check = |image: Option<&str>, version: Option<&str>, want: &str| {
            let spec = StrataClusterSpec {
                image: image.map(str::to_string),
                version: version.map(str::to_string),
                image_pull_policy: None,
                image_pull_secrets: Vec::new(),
                storage: StorageSpec {
                    replicas: 1,
                    resources: None,
                    volume: VolumeSpec::default(),
                    retention: default_retention(),
                    replication_factor: 1,
                    dedup_min_scrape_interval: None,
                    extra_args: Vec::new(),
                },
                insert: InsertSpec::default(),
                select: SelectSpec::default(),
                alert: None,
                paused: false,
            };
            assert_eq!(spec.image_ref("0.9.0"), want);
        };
        check(None, None, "ghcr.io/strata-dev/strata:0.9.0");
        check(None, Some("1.0.0"), "ghcr.io/strata-dev/strata:1.0.0");
        check(
            Some("registry.local/strata"),
            None,
            "registry.local/strata:0.9.0",
        );
        check(
            Some("registry.local/strata"),
            Some("dev"),
            "registry.local/strata:dev",
        );
    }
}
