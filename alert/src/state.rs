//! The alert state machine of one alerting rule, with Prometheus semantics.
//!
//! Each evaluation hands the query result (one element per label set) to
//! [`AlertingRule::eval`], which moves every alert along
//! inactive -> pending -> firing:
//!
//! - a label set seen for the first time becomes pending, `active_at` = now;
//! - a pending alert becomes firing once it has been active for `for`;
//! - an alert missing from the result resolves (`resolved_at` = now), unless it
//!   fires and `keep_firing_for` has not passed since it went missing; pending
//!   alerts are forgotten at once, resolved ones after 15 minutes (kept so that
//!   Alertmanager hears of the resolution, even after a failed send).
//!
//! The state machine reads no clock: the evaluation time comes in as an
//! argument, so tests drive it with any sequence of timestamps.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use strata_storage::{Label, METRIC_NAME_LABEL, SeriesSamples};

/// A sorted label set.
pub type Labels = Vec<Label>;

/// How long a resolved alert is kept and resent.
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// Name of the series telling each active alert and its state.
pub const ALERTS_METRIC: &str = "ALERTS";
/// Name of the series holding each active alert's `active_at` (seconds), read
/// back at start to restore `for` progress.
pub const ALERTS_FOR_STATE_METRIC: &str = "ALERTS_FOR_STATE";
pub const ALERT_NAME_LABEL: &str = "alertname";
pub const ALERT_STATE_LABEL: &str = "alertstate";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert: a label set produced by the rule's expression. Times are
/// milliseconds since the epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub state: AlertState,
    pub labels: Labels,
    pub annotations: Labels,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    /// `endsAt` promised to Alertmanager for a firing alert.
    pub valid_until: i64,
    /// When a firing alert went missing while `keep_firing_for` holds it.
    pub keep_firing_since: Option<i64>,
}

impl Alert {
    /// Whether the notifier must send this alert at `now`: firing alerts
    /// every `resend_delay`, and every alert right after it resolved.
    pub fn needs_sending(&self, now: i64, resend_delay: Duration) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        let last_sent = self.last_sent_at.unwrap_or(i64::MIN);
        if self.resolved_at.is_some_and(|r| r > last_sent) {
            return true;
        }
        last_sent.saturating_add(millis(resend_delay)) < now
    }
}

/// One element of the expression's result, after template expansion: the
/// alert's labels (sorted, `alertname` included) and annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    pub labels: Labels,
    pub annotations: Labels,
    pub value: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("vector contains metrics with the same labelset after applying alert labels: {0}")]
    DuplicateLabels(String),
    #[error("exceeded limit of {limit} with {count} alerts")]
    Limit { limit: usize, count: usize },
}

/// The running state of one alerting rule.
#[derive(Clone, Debug)]
pub struct AlertingRule {
    pub name: String,
    pub hold: Duration,
    pub keep_firing_for: Duration,
    /// Alerts by label set.
    pub active: BTreeMap<Labels, Alert>,
    /// False until the start-up restore ran: ALERTS series are written only
    /// afterwards, so a restarted evaluator does not write a fresh
    /// `ALERTS_FOR_STATE` over the one it is about to read.
    pub restored: bool,
}

impl AlertingRule {
    pub fn new(name: &str, hold: Duration, keep_firing_for: Duration) -> AlertingRule {
        AlertingRule {
            name: name.to_string(),
            hold,
            keep_firing_for,
            active: BTreeMap::new(),
            restored: false,
        }
    }

    /// Applies the result of the evaluation at `ts` (ms). Returns the
    /// `ALERTS` and `ALERTS_FOR_STATE` series to write. `limit` 0 means no
    /// limit; over it, every alert is dropped and the evaluation fails.
    pub fn eval(
        &mut self,
        ts: i64,
        result: Vec<Firing>,
        limit: usize,
    ) -> Result<Vec<SeriesSamples>, StateError> {
        let mut seen = HashSet::with_capacity(result.len());
        for element in &result {
            if !seen.insert(element.labels.clone()) {
                return Err(StateError::DuplicateLabels(format_labels(&element.labels)));
            }
        }
        for element in result {
            match self.active.get_mut(&element.labels) {
                Some(alert) if alert.state != AlertState::Inactive => {
                    alert.value = element.value;
                    alert.annotations = element.annotations;
                }
                _ => {
                    let alert = Alert {
                        state: AlertState::Pending,
                        labels: element.labels.clone(),
                        annotations: element.annotations,
                        value: element.value,
                        active_at: ts,
                        fired_at: None,
                        resolved_at: None,
                        last_sent_at: None,
                        valid_until: 0,
                        keep_firing_since: None,
                    };
                    self.active.insert(element.labels, alert);
                }
            }
        }

        let hold = millis(self.hold);
        let keep_firing_for = millis(self.keep_firing_for);
        let retention = millis(RESOLVED_RETENTION);
        let mut out = Vec::new();
        let mut active_count = 0;
        self.active.retain(|labels, alert| {
            if seen.contains(labels) {
                alert.keep_firing_since = None;
            } else {
                let mut keep_firing = false;
                if alert.state == AlertState::Firing && keep_firing_for > 0 {
                    let since = *alert.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts - since < keep_firing_for;
                }
                if alert.state == AlertState::Pending
                    || alert.resolved_at.is_some_and(|r| ts - r > retention)
                {
                    return false;
                }
                if keep_firing {
                    // Still counts as firing below.
                } else {
                    if alert.state != AlertState::Inactive {
                        alert.state = AlertState::Inactive;
                        alert.resolved_at = Some(ts);
                    }
                    return true;
                }
            }
            active_count += 1;
            if alert.state == AlertState::Pending && ts - alert.active_at >= hold {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(ts);
            }
            true
        });
        if limit > 0 && active_count > limit {
            self.active.clear();
            return Err(StateError::Limit {
                limit,
                count: active_count,
            });
        }
        if self.restored {
            for alert in self.active.values() {
                if alert.state == AlertState::Inactive {
                    continue;
                }
                out.push(alerts_series(alert, ts));
                out.push(for_state_series(alert, ts));
            }
        }
        Ok(out)
    }

    /// Restores `active_at` of the alerts active at `ts` from the newest
    /// `ALERTS_FOR_STATE` sample of each `(t ms, active_at seconds)` (`newest`
    /// gives it by label set; a staleness marker there means the alert had
    /// resolved, and it starts over). A rule whose `for` is shorter than
    /// `grace` is not restored: it would otherwise wait `for + grace`.
    /// Returns how many alerts were restored.
    pub fn restore(
        &mut self,
        ts: i64,
        grace: Duration,
        newest: impl Fn(&Labels) -> Option<(i64, f64)>,
    ) -> usize {
        self.restored = true;
        if self.hold < grace {
            return 0;
        }
        let hold = millis(self.hold);
        let grace = millis(grace);
        let mut restored = 0;
        for alert in self.active.values_mut() {
            let Some((down_at, active_at_secs)) = newest(&alert.labels) else {
                continue;
            };
            if strata_storage::is_stale_nan(active_at_secs) || !active_at_secs.is_finite() {
                continue;
            }
            restored += 1;
            let mut active_at = (active_at_secs * 1000.0).round() as i64;
            let remaining = hold - (down_at - active_at);
            if remaining <= 0 {
                // Was firing: the next evaluation fires it again at once.
            } else if remaining < grace {
                active_at = ts + grace - hold;
            } else {
                // Pending while down: do not count the outage as pending time.
                active_at += ts - down_at;
            }
            alert.active_at = active_at;
        }
        restored
    }

    /// Marks the alerts to send at `now` as sent and returns them, with
    /// `valid_until` pushed out to allow two missed evaluations or sends.
    pub fn to_send(&mut self, now: i64, resend_delay: Duration, interval: Duration) -> Vec<Alert> {
        let delta = millis(resend_delay.max(interval));
        let mut out = Vec::new();
        for alert in self.active.values_mut() {
            if alert.needs_sending(now, resend_delay) {
                alert.last_sent_at = Some(now);
                alert.valid_until = now + 4 * delta;
                out.push(alert.clone());
            }
        }
        out
    }

    /// The rule's state: the most advanced of its alerts.
    pub fn state(&self) -> AlertState {
        let mut state = AlertState::Inactive;
        for alert in self.active.values() {
            match alert.state {
                AlertState::Firing => return AlertState::Firing,
                AlertState::Pending => state = AlertState::Pending,
                AlertState::Inactive => {}
            }
        }
        state
    }
}

fn alerts_series(alert: &Alert, ts: i64) -> SeriesSamples {
    let mut labels = with_name(&alert.labels, ALERTS_METRIC);
    insert_sorted(
        &mut labels,
        Label::new(ALERT_STATE_LABEL, alert.state.as_str()),
    );
    SeriesSamples {
        labels,
        samples: vec![strata_storage::Sample {
            timestamp: ts,
            value: 1.0,
        }],
    }
}

fn for_state_series(alert: &Alert, ts: i64) -> SeriesSamples {
    SeriesSamples {
        labels: with_name(&alert.labels, ALERTS_FOR_STATE_METRIC),
        samples: vec![strata_storage::Sample {
            timestamp: ts,
            // Seconds like Prometheus, with the milliseconds kept as the
            // fraction so that a restore gives back the exact `activeAt`
            // (readers that truncate to whole seconds still work).
            value: alert.active_at as f64 / 1000.0,
        }],
    }
}

/// `labels` with `__name__` set to `name`.
pub fn with_name(labels: &Labels, name: &str) -> Labels {
    let mut out: Labels = labels
        .iter()
        .filter(|l| l.name != METRIC_NAME_LABEL)
        .cloned()
        .collect();
    insert_sorted(&mut out, Label::new(METRIC_NAME_LABEL, name));
    out
}

/// Sets `label` in the sorted `labels`, replacing a label of the same name.
pub fn insert_sorted(labels: &mut Labels, label: Label) {
    match labels.binary_search_by(|l| l.name.as_str().cmp(&label.name)) {
        Ok(i) => labels[i] = label,
        Err(i) => labels.insert(i, label),
    }
}

/// `{a="1", b="2"}`, the way Prometheus prints a label set.
pub fn format_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut out: Labels = pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn firing(instance: &str, value: f64) -> Firing {
        Firing {
            labels: labels(&[("alertname", "Up"), ("instance", instance)]),
            annotations: Vec::new(),
            value,
        }
    }

    /// One step: evaluate at `t` seconds with `present` instances; `want`
    /// lists (instance, state) of every alert kept afterwards.
    struct Step {
        t: i64,
        present: &'static [&'static str],
        want: &'static [(&'static str, AlertState)],
    }

    fn check(hold: u64, keep: u64, steps: &[Step]) {
        let mut rule =
            AlertingRule::new("Up", Duration::from_secs(hold), Duration::from_secs(keep));
        rule.restored = true;
        for step in steps {
            let result = step.present.iter().map(|i| firing(i, 1.0)).collect();
            rule.eval(step.t * S, result, 0).expect("eval");
            let got: Vec<(String, AlertState)> = rule
                .active
                .values()
                .map(|a| (a.labels[1].value.clone(), a.state))
                .collect();
            let want: Vec<(String, AlertState)> =
                step.want.iter().map(|(i, s)| (i.to_string(), *s)).collect();
            assert_eq!(got, want, "at t={}s", step.t);
        }
    }

    use AlertState::{Firing as F, Inactive as I, Pending as P};

    #[test]
    fn state_transitions() {
        // for: 0 fires at once; a missing alert resolves and is kept 15 min.
        check(
            0,
            0,
            &[
                Step {
                    t: 0,
                    present: &["a"],
                    want: &[("a", F)],
                },
                Step {
                    t: 10,
                    present: &[],
                    want: &[("a", I)],
                },
                Step {
                    t: 10 + 900,
                    present: &[],
                    want: &[("a", I)],
                },
                Step {
                    t: 10 + 901,
                    present: &[],
                    want: &[],
                },
            ],
        );
        // for: 30s: pending until active 30s; pending alerts vanish at once.
        check(
            30,
            0,
            &[
                Step {
                    t: 0,
                    present: &["a", "b"],
                    want: &[("a", P), ("b", P)],
                },
                Step {
                    t: 15,
                    present: &["a"],
                    want: &[("a", P)],
                },
                Step {
                    t: 30,
                    present: &["a", "b"],
                    want: &[("a", F), ("b", P)],
                },
                Step {
                    t: 45,
                    present: &["b"],
                    want: &[("a", I), ("b", P)],
                },
                // A resolved alert that comes back starts over as pending.
                Step {
                    t: 60,
                    present: &["a", "b"],
                    want: &[("a", P), ("b", F)],
                },
            ],
        );
        // keep_firing_for: 20s holds a firing alert that went missing.
        check(
            0,
            20,
            &[
                Step {
                    t: 0,
                    present: &["a"],
                    want: &[("a", F)],
                },
                Step {
                    t: 10,
                    present: &[],
                    want: &[("a", F)],
                },
                Step {
                    t: 29,
                    present: &[],
                    want: &[("a", F)],
                },
                Step {
                    t: 30,
                    present: &[],
                    want: &[("a", I)],
                },
            ],
        );
        // A return inside keep_firing_for resets its clock.
        check(
            0,
            20,
            &[
                Step {
                    t: 0,
                    present: &["a"],
                    want: &[("a", F)],
                },
                Step {
                    t: 10,
                    present: &[],
                    want: &[("a", F)],
                },
                Step {
                    t: 20,
                    present: &["a"],
                    want: &[("a", F)],
                },
                Step {
                    t: 35,
                    present: &[],
                    want: &[("a", F)],
                },
                Step {
                    t: 55,
                    present: &[],
                    want: &[("a", I)],
                },
            ],
        );
    }

    #[test]
    fn series_written() {
        let mut rule = AlertingRule::new("Up", Duration::from_secs(10), Duration::ZERO);
        let out = rule.eval(100 * S, vec![firing("a", 3.0)], 0).expect("eval");
        assert!(out.is_empty(), "nothing before restore");
        rule.restored = true;
        let out = rule.eval(105 * S, vec![firing("a", 3.0)], 0).expect("eval");
        let names: Vec<String> = out.iter().map(|s| format_labels(&s.labels)).collect();
        assert_eq!(
            names,
            [
                r#"{__name__="ALERTS", alertname="Up", alertstate="pending", instance="a"}"#,
                r#"{__name__="ALERTS_FOR_STATE", alertname="Up", instance="a"}"#,
            ]
        );
        assert_eq!(out[1].samples[0].value, 100.0);
        let out = rule.eval(110 * S, vec![firing("a", 3.0)], 0).expect("eval");
        assert!(format_labels(&out[0].labels).contains(r#"alertstate="firing""#));
    }

    #[test]
    fn duplicates_and_limit_fail() {
        let mut rule = AlertingRule::new("Up", Duration::ZERO, Duration::ZERO);
        let err = rule
            .eval(0, vec![firing("a", 1.0), firing("a", 2.0)], 0)
            .expect_err("duplicate");
        assert!(matches!(err, StateError::DuplicateLabels(_)), "{err}");
        let err = rule
            .eval(0, vec![firing("a", 1.0), firing("b", 2.0)], 1)
            .expect_err("limit");
        assert_eq!(err.to_string(), "exceeded limit of 1 with 2 alerts");
        assert!(rule.active.is_empty());
        rule.eval(0, vec![firing("a", 1.0)], 1)
            .expect("within limit");
    }

    #[test]
    fn resend_and_ends_at() {
        let resend = Duration::from_secs(60);
        let interval = Duration::from_secs(15);
        let mut rule = AlertingRule::new("Up", Duration::from_secs(15), Duration::ZERO);
        rule.eval(0, vec![firing("a", 1.0)], 0).expect("eval");
        assert!(
            rule.to_send(0, resend, interval).is_empty(),
            "pending is not sent"
        );
        rule.eval(15 * S, vec![firing("a", 1.0)], 0).expect("eval");
        let sent = rule.to_send(15 * S, resend, interval);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].valid_until, 15 * S + 4 * 60 * S);
        rule.eval(30 * S, vec![firing("a", 1.0)], 0).expect("eval");
        assert!(
            rule.to_send(30 * S, resend, interval).is_empty(),
            "within resend delay"
        );
        rule.eval(76 * S, vec![firing("a", 1.0)], 0).expect("eval");
        assert_eq!(
            rule.to_send(76 * S, resend, interval).len(),
            1,
            "after resend delay"
        );
        rule.eval(80 * S, vec![], 0).expect("eval");
        let sent = rule.to_send(80 * S, resend, interval);
        assert_eq!(sent.len(), 1, "resolution is sent at once");
        assert_eq!(sent[0].resolved_at, Some(80 * S));
        assert!(rule.to_send(90 * S, resend, interval).is_empty());
        assert_eq!(
            rule.to_send(141 * S, resend, interval).len(),
            1,
            "resolved is resent"
        );
    }

    #[test]
    fn restore_keeps_for_progress() {
        // (for, grace, active_at s, down_at s, restart s, want active_at s)
        let cases = [
            // Was firing: active_at kept, fires at the next evaluation.
            (60, 10, 1000, 1100, 1200, 1000),
            // Pending 20s of 60 when down: resumes after the outage.
            (60, 10, 1000, 1020, 1200, 1180),
            // Pending with less than the grace period left: fires after grace.
            (60, 10, 1000, 1055, 1200, 1200 + 10 - 60),
            // for shorter than the grace period: not restored.
            (5, 10, 1000, 1100, 1200, 1200),
        ];
        for (hold, grace, active_at, down_at, restart, want) in cases {
            let mut rule = AlertingRule::new("Up", Duration::from_secs(hold), Duration::ZERO);
            rule.eval(restart * S, vec![firing("a", 1.0)], 0)
                .expect("eval");
            rule.restore(restart * S, Duration::from_secs(grace), |_| {
                Some((down_at * S, active_at as f64))
            });
            let got = rule.active.values().next().expect("alert").active_at;
            assert_eq!(got, want * S, "case for={hold} down_at={down_at}");
            rule.eval(restart * S + S, vec![firing("a", 1.0)], 0)
                .expect("eval");
        }
        // A firing alert restored fires again at the next evaluation.
        let mut rule = AlertingRule::new("Up", Duration::from_secs(60), Duration::ZERO);
        rule.eval(1200 * S, vec![firing("a", 1.0)], 0)
            .expect("eval");
        rule.restore(1200 * S, Duration::ZERO, |_| Some((1100 * S, 1000.0)));
        rule.eval(1201 * S, vec![firing("a", 1.0)], 0)
            .expect("eval");
        assert_eq!(rule.state(), AlertState::Firing);
    }
}
