//! Pieces of a cluster's status: replica counts, what a component waits
//! for, the upgrade step in progress, conditions and the warning event when
//! `Degraded` changes.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use strata_crds::cluster::{ComponentStatus, StrataClusterStatus, UpgradeStatus, UpgradeStep};
use strata_crds::status::{self, DEGRADED};

use super::Note;
use super::desired::Cluster;
use super::rollout::{self, DeploymentState, StorageStep};

pub(super) fn counts(deployment: Option<&Deployment>, desired: i32) -> ComponentStatus {
    let (_, ready, updated) = deployment
        .map(rollout::deployment_counts)
        .unwrap_or_default();
    ComponentStatus {
        desired_replicas: desired,
        ready_replicas: ready,
        updated_replicas: updated,
    }
}

pub(super) fn incomplete(state: &DeploymentState) -> Option<String> {
    match state {
        DeploymentState::Complete => None,
        DeploymentState::Missing => Some("not created yet".into()),
        DeploymentState::Progressing(m) => Some(m.clone()),
        DeploymentState::Stuck { message, .. } => Some(message.clone()),
    }
}

pub(super) fn wait_message(step: &StorageStep, sts_current: bool) -> String {
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
pub(super) fn upgrade_status<'a>(
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

pub(super) fn set_conditions<const N: usize>(
    status: &mut StrataClusterStatus,
    conditions: [Condition; N],
) {
    for c in conditions {
        status::set_condition(&mut status.conditions, c);
    }
}

/// A warning event when the Degraded condition's reason or message is new.
pub(super) fn warn_on_change(
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
