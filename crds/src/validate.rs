//! The CRD schema's validation (bounds, patterns, uniqueness and the CEL
//! rules) checked in Rust, for places where no API server has checked an
//! object: tests of the examples, and the operator defending against objects
//! written before a schema change. Each check names the schema rule it
//! mirrors; the crate's tests run the real CEL rules over the same inputs so
//! the two cannot drift apart silently.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use crate::cluster::{
    DNS_LABEL_PATTERN, DURATION_PATTERN, MAX_NOTIFIERS, MAX_SELECT_POOLS, StrataClusterSpec,
};
use crate::rule::{PROMETHEUS_DURATION_PATTERN, StrataRuleSpec, TENANT_PATTERN};

/// One violated rule; `field` is the JSON path under the object, e.g.
/// `spec.storage.replicas`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field} is {value}, must be at least {min}")]
    TooSmall { field: String, value: i64, min: i64 },
    #[error("{field} has {len} entries, at most {max} allowed")]
    TooMany {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field} must not be empty")]
    Empty { field: String },
    #[error("{field} {value:?} is not {what}")]
    Invalid {
        field: String,
        value: String,
        what: &'static str,
    },
    #[error("{field} {value:?} appears more than once")]
    Duplicate { field: String, value: String },
    #[error(
        "spec.storage.replicationFactor {replication_factor} must not exceed spec.storage.replicas {replicas}"
    )]
    ReplicationFactorAboveReplicas {
        replication_factor: i32,
        replicas: i32,
    },
    #[error("spec.alert.selectPool {0:?} must name one of spec.select.pools")]
    UnknownSelectPool(String),
    #[error("{field} has both record and alert, or neither: a rule has exactly one")]
    RuleKind { field: String },
    #[error("{field} is a recording rule and cannot have {key}")]
    RecordingRuleField { field: String, key: &'static str },
}

static DURATION: LazyLock<Regex> = LazyLock::new(|| compile(DURATION_PATTERN));
static PROMETHEUS_DURATION: LazyLock<Regex> =
    LazyLock::new(|| compile(PROMETHEUS_DURATION_PATTERN));
static DNS_LABEL: LazyLock<Regex> = LazyLock::new(|| compile(DNS_LABEL_PATTERN));
static TENANT: LazyLock<Regex> = LazyLock::new(|| compile(TENANT_PATTERN));
static METRIC_NAME: LazyLock<Regex> = LazyLock::new(|| compile(crate::rule::METRIC_NAME_PATTERN));
static URL: LazyLock<Regex> = LazyLock::new(|| compile(crate::cluster::URL_PATTERN));

fn compile(pattern: &str) -> Regex {
    // The patterns are constants of this crate, covered by its tests.
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("schema pattern compiles")
}

/// Every rule of the `StrataCluster` schema `spec` violates; empty when valid.
pub fn cluster(spec: &StrataClusterSpec) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    let storage = &spec.storage;
    at_least(&mut errors, "spec.storage.replicas", storage.replicas, 1);
    at_least(
        &mut errors,
        "spec.storage.replicationFactor",
        storage.replication_factor,
        1,
    );
    matches(
        &mut errors,
        "spec.storage.retention",
        &storage.retention,
        &DURATION,
        "a duration like 31d or 1h30m",
    );
    if let Some(interval) = &storage.dedup_min_scrape_interval {
        matches(
            &mut errors,
            "spec.storage.dedupMinScrapeInterval",
            interval,
            &DURATION,
            "a duration like 30s",
        );
    }
    // CEL: self.storage.replicationFactor <= self.storage.replicas
    if storage.replication_factor > storage.replicas {
        errors.push(ValidationError::ReplicationFactorAboveReplicas {
            replication_factor: storage.replication_factor,
            replicas: storage.replicas,
        });
    }
    at_least(&mut errors, "spec.insert.replicas", spec.insert.replicas, 1);

    let pools = &spec.select.pools;
    if pools.is_empty() {
        errors.push(ValidationError::Empty {
            field: "spec.select.pools".into(),
        });
    }
    at_most(
        &mut errors,
        "spec.select.pools",
        pools.len(),
        MAX_SELECT_POOLS,
    );
    // x-kubernetes-list-type: map keyed by name
    let mut names = HashSet::new();
    for (i, pool) in pools.iter().enumerate() {
        let field = format!("spec.select.pools[{i}].name");
        if !names.insert(pool.name.as_str()) {
            errors.push(ValidationError::Duplicate {
                field: "spec.select.pools[].name".into(),
                value: pool.name.clone(),
            });
        }
        if pool.name.is_empty() || pool.name.len() > 32 || !DNS_LABEL.is_match(&pool.name) {
            errors.push(ValidationError::Invalid {
                field,
                value: pool.name.clone(),
                what: "a DNS label of at most 32 characters",
            });
        }
        at_least(
            &mut errors,
            &format!("spec.select.pools[{i}].replicas"),
            pool.replicas,
            1,
        );
    }

    if let Some(alert) = &spec.alert {
        at_least(&mut errors, "spec.alert.replicas", alert.replicas, 1);
        at_most(
            &mut errors,
            "spec.alert.notifiers",
            alert.notifiers.len(),
            MAX_NOTIFIERS,
        );
        for (i, notifier) in alert.notifiers.iter().enumerate() {
            matches(
                &mut errors,
                &format!("spec.alert.notifiers[{i}].url"),
                &notifier.url,
                &URL,
                "an http:// or https:// URL",
            );
        }
        if alert.select_pool.is_empty() {
            errors.push(ValidationError::Empty {
                field: "spec.alert.selectPool".into(),
            });
        }
        // CEL: self.select.pools.exists(p, p.name == self.alert.selectPool)
        else if !pools.iter().any(|p| p.name == alert.select_pool) {
            errors.push(ValidationError::UnknownSelectPool(
                alert.select_pool.clone(),
            ));
        }
        if let Some(interval) = &alert.evaluation_interval {
            matches(
                &mut errors,
                "spec.alert.evaluationInterval",
                interval,
                &DURATION,
                "a duration like 1m",
            );
        }
    }
    errors
}

/// Every rule of the `StrataRule` schema `spec` violates; empty when valid.
/// PromQL is not parsed here: that is the alert component's loader's job.
pub fn rule(spec: &StrataRuleSpec) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    if let Some(tenant) = &spec.tenant {
        matches(
            &mut errors,
            "spec.tenant",
            tenant,
            &TENANT,
            "a tenant like 0 or 12:3",
        );
    }
    let mut names = HashSet::new();
    for (g, group) in spec.groups.iter().enumerate() {
        let group_field = format!("spec.groups[{g}]");
        if group.name.is_empty() {
            errors.push(ValidationError::Empty {
                field: format!("{group_field}.name"),
            });
        } else if !names.insert(group.name.as_str()) {
            // x-kubernetes-list-type: map keyed by name
            errors.push(ValidationError::Duplicate {
                field: "spec.groups[].name".into(),
                value: group.name.clone(),
            });
        }
        for (key, value) in [
            ("interval", &group.interval),
            ("query_offset", &group.query_offset),
        ] {
            if let Some(value) = value {
                matches(
                    &mut errors,
                    &format!("{group_field}.{key}"),
                    value,
                    &PROMETHEUS_DURATION,
                    "a duration like 1m",
                );
            }
        }
        if let Some(limit) = group.limit {
            at_least(&mut errors, &format!("{group_field}.limit"), limit, 0);
        }
        for (r, rule) in group.rules.iter().enumerate() {
            let field = format!("{group_field}.rules[{r}]");
            // CEL: has(self.record) != has(self.alert)
            if rule.record.is_some() == rule.alert.is_some() {
                errors.push(ValidationError::RuleKind {
                    field: field.clone(),
                });
            }
            if let Some(record) = &rule.record {
                matches(
                    &mut errors,
                    &format!("{field}.record"),
                    record,
                    &METRIC_NAME,
                    "a metric name",
                );
                // CEL: !has(self.record) || (!has(self.__for__) && ...)
                for (key, set) in [
                    ("for", rule.for_.is_some()),
                    ("keep_firing_for", rule.keep_firing_for.is_some()),
                    ("annotations", rule.annotations.is_some()),
                ] {
                    if set {
                        errors.push(ValidationError::RecordingRuleField {
                            field: field.clone(),
                            key,
                        });
                    }
                }
            }
            if rule.alert.as_deref() == Some("") {
                errors.push(ValidationError::Empty {
                    field: format!("{field}.alert"),
                });
            }
            for (key, value) in [
                ("for", &rule.for_),
                ("keep_firing_for", &rule.keep_firing_for),
            ] {
                if let Some(value) = value {
                    matches(
                        &mut errors,
                        &format!("{field}.{key}"),
                        value,
                        &PROMETHEUS_DURATION,
                        "a duration like 5m",
                    );
                }
            }
        }
    }
    errors
}

fn at_least(errors: &mut Vec<ValidationError>, field: &str, value: impl Into<i64>, min: i64) {
    let value = value.into();
    if value < min {
        errors.push(ValidationError::TooSmall {
            field: field.to_string(),
            value,
            min,
        });
    }
}

fn at_most(errors: &mut Vec<ValidationError>, field: &str, len: usize, max: usize) {
    if len > max {
        errors.push(ValidationError::TooMany {
            field: field.to_string(),
            len,
            max,
        });
    }
}

fn matches(
    errors: &mut Vec<ValidationError>,
    field: &str,
    value: &str,
    pattern: &Regex,
    what: &'static str,
) {
    if !pattern.is_match(value) {
        errors.push(ValidationError::Invalid {
            field: field.to_string(),
            value: value.to_string(),
            what,
        });
    }
}
