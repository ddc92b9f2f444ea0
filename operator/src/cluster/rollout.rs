//! The rolling-upgrade state machine, as pure functions of what was
//! observed: which storage pod to replace next, what the rollout waits for,
//! and when it is stuck (a pod that never becomes ready).
//!
//! Storage goes one pod at a time: a pod whose revision is old is deleted
//! (the StatefulSet recreates it from the new template) only when every
//! other pod is ready and its node answers `/ready`. A pod at the new
//! revision that crashloops, cannot pull its image, or is not ready within
//! the timeout stops the rollout. An old-revision pod that is not ready is
//! replaced first: it serves nothing, and this is how a crashlooping pod
//! recovers once the spec is fixed.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::labels;

/// Container waiting reasons that will not resolve by waiting.
const FAILING: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What the rollout needs to know of one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    pub component: String,
    pub pool: Option<String>,
    /// Storage pods: the StatefulSet ordinal.
    pub ordinal: Option<i32>,
    /// The StatefulSet revision the pod was created from.
    pub revision: Option<String>,
    pub ready: bool,
    pub terminating: bool,
    pub created: Option<Timestamp>,
    /// When the pod's Ready condition last changed: a long-running pod that
    /// turns unready gets the full timeout from then, not from its start.
    pub ready_changed: Option<Timestamp>,
    /// Why the pod will not become ready without a change, e.g.
    /// `container storage: CrashLoopBackOff (5 restarts): back-off 5m0s`.
    pub failure: Option<String>,
    pub ip: Option<String>,
}

impl PodView {
    pub fn from_pod(pod: &Pod) -> PodView {
        let meta = &pod.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
        let status = pod.status.as_ref();
        let ready_condition = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        let ready = ready_condition.is_some_and(|c| c.status == "True");
        let failure = status.and_then(|s| {
            if s.phase.as_deref() == Some("Failed") {
                return Some(format!(
                    "pod failed: {}",
                    s.reason.clone().or(s.message.clone()).unwrap_or_default()
                ));
            }
            s.container_statuses.iter().flatten().find_map(|c| {
                let waiting = c.state.as_ref()?.waiting.as_ref()?;
                let reason = waiting.reason.as_deref()?;
                // Only what stays the same while the pod keeps failing (not
                // the restart count or back-off), so that the condition and
                // its event do not churn.
                FAILING.contains(&reason).then(|| {
                    let mut text = format!("container {}: {reason}", c.name);
                    let last = c.last_state.as_ref().and_then(|l| l.terminated.as_ref());
                    if let Some(last) = last {
                        text.push_str(&format!(", last exit code {}", last.exit_code));
                        if let Some(why) = last.reason.as_deref() {
                            text.push_str(&format!(" ({why})"));
                        }
                    } else if let Some(message) =
                        waiting.message.as_deref().filter(|m| !m.is_empty())
                    {
                        // Image pulls: the message names the image.
                        if reason != "CrashLoopBackOff" {
                            text.push_str(": ");
                            text.push_str(message);
                        }
                    }
                    text
                })
            })
        });
        PodView {
            ordinal: name
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse().ok())
                .filter(|_| label(labels::COMPONENT).as_deref() == Some(super::desired::STORAGE)),
            uid: meta.uid.clone().unwrap_or_default(),
            component: label(labels::COMPONENT).unwrap_or_default(),
            pool: label(labels::POOL),
            revision: label(labels::REVISION),
            ready,
            terminating: meta.deletion_timestamp.is_some(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            ready_changed: ready_condition
                .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0)),
            failure,
            ip: status.and_then(|s| s.pod_ip.clone()),
            name,
        }
    }

    /// How long the pod has been in its current readiness state.
    fn age(&self, now: Timestamp) -> Duration {
        let since = match (self.created, self.ready_changed) {
            (Some(c), Some(r)) => Some(c.max(r)),
            (c, r) => c.or(r),
        };
        since
            .map(|t| Duration::try_from(now.duration_since(t)).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// What the storage rollout does now.
#[derive(Clone, Debug, PartialEq)]
pub enum StorageStep {
    /// Every pod runs the update revision, is ready and healthy.
    Settled,
    /// Nothing to do but wait; the text says for what.
    Wait {
        pod: Option<String>,
        message: String,
    },
    /// Delete this pod so that it comes back at the update revision.
    Replace {
        pod: String,
        uid: String,
        why: String,
    },
    /// A pod will not become ready: the rollout stops until the spec changes.
    Stuck {
        pod: String,
        reason: &'static str,
        message: String,
    },
}

/// The storage StatefulSet as the rollout sees it.
#[derive(Clone, Debug)]
pub struct StorageState<'a> {
    /// Pods wanted (ordinals `0..replicas`).
    pub replicas: i32,
    /// The StatefulSet's update revision, `None` while the StatefulSet
    /// controller has not yet observed the latest spec.
    pub update_revision: Option<&'a str>,
    pub pods: Vec<&'a PodView>,
    /// Ready pods whose node answered `/ready` with 200.
    pub healthy: &'a BTreeSet<String>,
}

/// The next step of the storage rollout.
pub fn storage_step(state: &StorageState, now: Timestamp, timeout: Duration) -> StorageStep {
    let Some(revision) = state.update_revision else {
        return StorageStep::Wait {
            pod: None,
            message: "storage StatefulSet not yet observed by its controller".into(),
        };
    };
    let mut pods: Vec<&PodView> = state
        .pods
        .iter()
        .copied()
        .filter(|p| p.ordinal.is_some_and(|o| o < state.replicas))
        .collect();
    pods.sort_by_key(|p| p.ordinal);
    if let Some(p) = pods.iter().find(|p| p.terminating) {
        return StorageStep::Wait {
            pod: Some(p.name.clone()),
            message: format!("{} terminating", p.name),
        };
    }
    let old = |p: &&&PodView| p.revision.as_deref() != Some(revision);
    // Not serving anyway: replacing it costs nothing, and recovers a pod
    // stuck at a bad revision once the spec is fixed.
    if let Some(p) = pods.iter().filter(old).rfind(|p| !p.ready) {
        return StorageStep::Replace {
            pod: p.name.clone(),
            uid: p.uid.clone(),
            why: format!("{} is not ready at an old revision", p.name),
        };
    }
    for p in pods.iter().filter(|p| !old(p)) {
        if let Some(failure) = &p.failure {
            return StorageStep::Stuck {
                pod: p.name.clone(),
                reason: "StoragePodFailing",
                message: format!("{} will not become ready: {failure}", p.name),
            };
        }
        let serving = p.ready && state.healthy.contains(&p.name);
        if !serving {
            let what = if p.ready {
                "ready but its node does not answer /ready"
            } else {
                "not ready"
            };
            if p.age(now) > timeout {
                return StorageStep::Stuck {
                    pod: p.name.clone(),
                    reason: "StoragePodNotReady",
                    message: format!(
                        "{} has been {what} for more than {}s",
                        p.name,
                        timeout.as_secs()
                    ),
                };
            }
            return StorageStep::Wait {
                pod: Some(p.name.clone()),
                message: format!("{} {what}", p.name),
            };
        }
    }
    let present = pods.len();
    if present < state.replicas as usize {
        return StorageStep::Wait {
            pod: None,
            message: format!("{present}/{} storage pods created", state.replicas),
        };
    }
    // Highest ordinal first, as the StatefulSet controller itself would.
    if let Some(p) = pods.iter().rfind(old) {
        return StorageStep::Replace {
            pod: p.name.clone(),
            uid: p.uid.clone(),
            why: format!("{} runs an old revision", p.name),
        };
    }
    StorageStep::Settled
}

/// Where a Deployment is relative to the template the operator wants.
#[derive(Clone, Debug, PartialEq)]
pub enum DeploymentState {
    /// Not created yet.
    Missing,
    /// Every replica runs the wanted template and is available.
    Complete,
    /// Rolling or scaling; the text says how far.
    Progressing(String),
    /// A pod will not become ready.
    Stuck {
        reason: &'static str,
        message: String,
    },
}

/// Replica counts of a Deployment: (desired, ready, updated).
pub fn deployment_counts(deployment: &Deployment) -> (i32, i32, i32) {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    (
        desired,
        status.ready_replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
    )
}

/// The template hash the operator last applied to an object.
pub fn template_hash(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(labels::TEMPLATE_HASH))
        .map(String::as_str)
}

/// The state of `deployment` against the wanted template hash; `pods` are
/// the component's pods (any failing one means stuck).
pub fn deployment_state(
    deployment: Option<&Deployment>,
    want_hash: &str,
    pods: &[&PodView],
) -> DeploymentState {
    let Some(deployment) = deployment else {
        return DeploymentState::Missing;
    };
    let name = deployment.metadata.name.clone().unwrap_or_default();
    if let Some(p) = pods.iter().find(|p| p.failure.is_some() && !p.terminating) {
        return DeploymentState::Stuck {
            reason: "PodFailing",
            message: format!(
                "{} will not become ready: {}",
                p.name,
                p.failure.as_deref().unwrap_or_default()
            ),
        };
    }
    let status = deployment.status.clone().unwrap_or_default();
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_exceeded {
        return DeploymentState::Stuck {
            reason: "ProgressDeadlineExceeded",
            message: format!("{name} made no progress within its deadline"),
        };
    }
    if template_hash(&deployment.metadata) != Some(want_hash) {
        return DeploymentState::Progressing(format!("{name} waits for its new template"));
    }
    let observed =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let (desired, ready, updated) = deployment_counts(deployment);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if observed
        && updated == desired
        && ready == desired
        && available == desired
        && total == desired
    {
        DeploymentState::Complete
    } else {
        DeploymentState::Progressing(format!(
            "{name}: {ready}/{desired} ready, {updated}/{desired} updated"
        ))
    }
}
