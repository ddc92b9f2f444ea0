//! Status shared by every Strata resource: the standard `metav1.Condition`
//! list (types [`READY`], [`PROGRESSING`], [`DEGRADED`], and [`ACCEPTED`] on
//! rules) and the helper that updates it the way `kubectl wait` and other
//! controllers expect.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Everything the resource asks for is running and serving.
pub const READY: &str = "Ready";
/// The operator is changing something: creating, scaling, upgrading.
pub const PROGRESSING: &str = "Progressing";
/// Something is wrong that the operator cannot fix alone (a crashlooping pod,
/// a rejected spec); the message says what.
pub const DEGRADED: &str = "Degraded";
/// On rules: every group parsed and every expression is valid PromQL. When
/// False, the message names the group, the rule and the parse error.
pub const ACCEPTED: &str = "Accepted";

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Sets condition `type_` in `conditions`, keeping its `lastTransitionTime`
/// when the status does not change, so that the time tells when the state
/// last flipped rather than when it was last written. Returns whether
/// anything changed (callers skip the status write when nothing did).
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            let new = Condition {
                last_transition_time,
                ..new
            };
            if *old == new {
                return false;
            }
            *old = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// A condition with the given fields, timestamped `now`.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// The condition of type `type_`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            condition(READY, FALSE, "Creating", "", Some(1), at(10))
        ));
        // Same status, new message: changed, but the transition time stays.
        assert!(set_condition(
            &mut conditions,
            condition(READY, FALSE, "Creating", "2/3 ready", Some(1), at(20))
        ));
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "2/3 ready");
        // Identical apart from the time: nothing to write.
        assert!(!set_condition(
            &mut conditions,
            condition(READY, FALSE, "Creating", "2/3 ready", Some(1), at(30))
        ));
        assert!(set_condition(
            &mut conditions,
            condition(READY, TRUE, "Ready", "", Some(1), at(40))
        ));
        assert_eq!(conditions[0].last_transition_time, at(40));
        assert!(set_condition(
            &mut conditions,
            condition(DEGRADED, FALSE, "Healthy", "", Some(1), at(40))
        ));
        assert_eq!(conditions.len(), 2);
        assert_eq!(
            find(&conditions, READY).map(|c| c.status.as_str()),
            Some(TRUE)
        );
        assert!(find(&conditions, PROGRESSING).is_none());
    }
}
