//! The `StrataRule` controller: validates each rule object and writes its
//! status (`Accepted`, `Ready`, `Progressing`, `Degraded`, the rejected
//! rules). What the alert components load is decided by the cluster
//! controller, which validates the same way ([`super::compile`]).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use strata_crds::StrataRule;
use strata_crds::rule::{RejectedRule, StrataRuleStatus};
use strata_crds::status::{self, ACCEPTED, DEGRADED, FALSE, PROGRESSING, READY, TRUE};

use super::compile::{Compiled, compile};
use crate::client::Kube;
use crate::cluster::Note;
use crate::error::{Error, Result};
use crate::metrics::{ControllerLabels, ErrorLabels, Metrics};

const CONTROLLER: &str = "rule";

/// What the rule controller shares between reconciles.
pub struct Context {
    pub kube: Kube,
    pub metrics: Metrics,
    /// As the cluster controller's: a rule too large to fit is rejected.
    pub rule_config_map_max_bytes: usize,
    pub requeue_error: std::time::Duration,
}

/// `group "g", rule 2 ("HighLatency"): <error>`.
pub fn describe(rejected: &RejectedRule) -> String {
    let mut out = String::new();
    if !rejected.group.is_empty() {
        out.push_str(&format!("group {:?}", rejected.group));
    }
    if rejected.index >= 0 {
        out.push_str(&format!(", rule {}", rejected.index));
        if let Some(name) = &rejected.name {
            out.push_str(&format!(" ({name:?})"));
        }
    }
    if !out.is_empty() {
        out.push_str(": ");
    }
    out.push_str(&rejected.error);
    out
}

/// The status of `rule` after validation, and the event to publish when
/// acceptance changed.
pub fn status_of(
    rule: &StrataRule,
    result: &Result<Compiled, Vec<RejectedRule>>,
    now: Timestamp,
) -> (StrataRuleStatus, Option<Note>) {
    let generation = rule.metadata.generation;
    let previous = rule.status.clone().unwrap_or_default();
    let mut status = StrataRuleStatus {
        observed_generation: generation,
        conditions: previous.conditions.clone(),
        rejected_rules: Vec::new(),
    };
    let condition = |type_: &str, value: &str, reason: &str, message: String| {
        status::condition(type_, value, reason, message, generation, Time(now))
    };
    let groups = rule.spec.groups.len();
    let rules: usize = rule.spec.groups.iter().map(|g| g.rules.len()).sum();
    let conditions = match result {
        Ok(compiled) => {
            let message = format!(
                "{groups} groups, {rules} rules in {} files",
                compiled.files.len()
            );
            [
                condition(ACCEPTED, TRUE, "Valid", message.clone()),
                condition(
                    READY,
                    TRUE,
                    "Accepted",
                    "compiled for the alert components that select it".into(),
                ),
                condition(PROGRESSING, FALSE, "Stable", String::new()),
                condition(DEGRADED, FALSE, "AsExpected", String::new()),
            ]
        }
        Err(rejected) => {
            status.rejected_rules = rejected.clone();
            let mut message = rejected.first().map(describe).unwrap_or_default();
            if rejected.len() > 1 {
                message.push_str(&format!(" (and {} more)", rejected.len() - 1));
            }
            [
                condition(ACCEPTED, FALSE, "InvalidRule", message.clone()),
                condition(
                    READY,
                    FALSE,
                    "Rejected",
                    "not loaded; the last accepted version, if any, keeps being evaluated".into(),
                ),
                condition(PROGRESSING, FALSE, "Rejected", String::new()),
                condition(DEGRADED, TRUE, "InvalidRule", message),
            ]
        }
    };
    for c in conditions {
        status::set_condition(&mut status.conditions, c);
    }
    let before = status::find(&previous.conditions, ACCEPTED);
    let after = status::find(&status.conditions, ACCEPTED);
    let note = match (before, after) {
        (Some(b), Some(a)) if b.status == a.status && b.message == a.message => None,
        (_, Some(a)) if a.status == TRUE => {
            Some(Note::normal("RuleAccepted", "Validate", a.message.clone()))
        }
        (_, Some(a)) => Some(Note::warning("RuleRejected", "Validate", a.message.clone())),
        _ => None,
    };
    (status, note)
}

/// Reconciles one `StrataRule`: validates it and writes its status.
pub async fn reconcile(rule: Arc<StrataRule>, ctx: Arc<Context>) -> Result<Action> {
    let labels = ControllerLabels {
        controller: CONTROLLER,
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let start = Instant::now();
    let result = reconcile_inner(&rule, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(rule: &StrataRule, ctx: &Context) -> Result<Action> {
    let namespace = rule
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let result = compile(rule, ctx.rule_config_map_max_bytes);
    let (status, note) = status_of(rule, &result, Timestamp::now());
    if rule.status.as_ref() != Some(&status) {
        let body = json!({
            "apiVersion": StrataRule::api_version(&()),
            "kind": StrataRule::kind(&()),
            "status": status,
        });
        ctx.kube
            .apply_status::<StrataRule>(namespace, &rule.name_any(), &body)
            .await?;
        ctx.metrics.action(CONTROLLER, "status");
    }
    if let Some(note) = note {
        ctx.kube.event(&rule.object_ref(&()), &note).await;
    }
    // Only a change to the object changes the verdict.
    Ok(Action::await_change())
}

/// The requeue after a failed reconcile; counts the failure by reason.
pub fn error_policy(rule: Arc<StrataRule>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: CONTROLLER,
            reason: error.metric_label(),
        })
        .inc();
    tracing::warn!(rule = %rule.name_any(), namespace = ?rule.namespace(), %error, "Rule reconcile failed; retrying.");
    Action::requeue(ctx.requeue_error)
}
