//! The `StrataCluster` controller: desired objects ([`desired`]), topology
//! ([`topology`]), the rolling-upgrade state machine ([`rollout`]), the
//! whole decision of one reconcile ([`plan`]) and the reconcile that
//! carries it out ([`reconcile`]).

pub mod desired;
pub mod object;
pub mod plan;
pub mod reconcile;
pub mod rollout;
mod rules;
mod status;
pub mod topology;

pub use object::{Kind, Object};
pub use plan::{Observed, Plan, Settings, plan};
pub use rules::selected_rules;

/// An event to publish about the reconciled object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// PascalCase, e.g. `Created`, `ReplacingPod`, `ScaleInRefused`.
    pub reason: String,
    /// What the operator did, e.g. `Apply`, `DeletePod`.
    pub action: String,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &str, action: &str, message: String) -> Note {
        Note {
            warning: false,
            reason: reason.into(),
            action: action.into(),
            message,
        }
    }

    pub fn warning(reason: &str, action: &str, message: String) -> Note {
        Note {
            warning: true,
            reason: reason.into(),
            action: action.into(),
            message,
        }
    }
}
