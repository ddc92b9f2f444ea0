//! Self-metrics of rule evaluation and notification. Counted per evaluation
//! or per batch, never per sample.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub group: String,
    /// `query`, `write`, `rule` (duplicate labels, limit, template).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifierLabels {
    pub alertmanager: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub alertmanager: String,
    /// `queue_full`.
    pub reason: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 4.0, 10))
}

/// Counters shared by every group and the notifier; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    pub evaluations: Family<GroupLabels, Counter>,
    pub evaluation_failures: Family<FailureLabels, Counter>,
    pub missed_iterations: Family<GroupLabels, Counter>,
    /// Evaluation time (slot, seconds) of each group's last evaluation: an
    /// evaluator that stops evaluating shows here first.
    pub last_evaluation: Family<GroupLabels, Gauge<f64, AtomicU64>>,
    pub evaluation_duration: Family<GroupLabels, Histogram, fn() -> Histogram>,
    pub samples_written: Family<GroupLabels, Counter>,
    pub notifications_sent: Family<NotifierLabels, Counter>,
    pub notifications_failed: Family<NotifierLabels, Counter>,
    pub notifications_dropped: Family<DropLabels, Counter>,
    pub queue_length: Family<NotifierLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            evaluations: Family::default(),
            evaluation_failures: Family::default(),
            missed_iterations: Family::default(),
            last_evaluation: Family::default(),
            evaluation_duration: Family::new_with_constructor(duration_histogram),
            samples_written: Family::default(),
            notifications_sent: Family::default(),
            notifications_failed: Family::default(),
            notifications_dropped: Family::default(),
            queue_length: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "strata_alert_group_evaluations",
            "Group evaluations, by group",
            m.evaluations.clone(),
        );
        registry.register(
            "strata_alert_rule_evaluation_failures",
            "Rule evaluations that failed, by group and reason (query, write, rule)",
            m.evaluation_failures.clone(),
        );
        registry.register(
            "strata_alert_group_missed_iterations",
            "Group evaluations skipped because the previous one ran too long, by group",
            m.missed_iterations.clone(),
        );
        registry.register(
            "strata_alert_group_last_evaluation_timestamp_seconds",
            "Time of the last evaluation of a group (the evaluation time its results carry), by group",
            m.last_evaluation.clone(),
        );
        registry.register(
            "strata_alert_group_evaluation_duration_seconds",
            "Time one evaluation of a group took, by group",
            m.evaluation_duration.clone(),
        );
        registry.register(
            "strata_alert_samples_written",
            "Samples written (recording results, ALERTS, ALERTS_FOR_STATE, staleness markers), by group",
            m.samples_written.clone(),
        );
        registry.register(
            "strata_alert_notifications_sent",
            "Alerts delivered, by Alertmanager",
            m.notifications_sent.clone(),
        );
        registry.register(
            "strata_alert_notifications_failed",
            "Alerts not delivered after every retry, by Alertmanager",
            m.notifications_failed.clone(),
        );
        registry.register(
            "strata_alert_notifications_dropped",
            "Alerts dropped before sending, by Alertmanager and reason (queue_full)",
            m.notifications_dropped.clone(),
        );
        registry.register(
            "strata_alert_notification_queue_length",
            "Alerts waiting to be sent, by Alertmanager",
            m.queue_length.clone(),
        );
        m
    }
}
