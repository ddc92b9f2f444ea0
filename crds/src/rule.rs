//! `StrataRule`: Prometheus rule groups for one tenant. `spec.groups` has the
//! fields and spelling of a Prometheus rule file (and of a `PrometheusRule`'s
//! `spec.groups`: snake_case `query_offset`, `keep_firing_for`, an `expr`
//! that may be a bare number), so a `PrometheusRule` moves over by changing
//! its `apiVersion` and `kind` only.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prometheus durations: units `y`, `w`, `d`, `h`, `m`, `s`, `ms` in that
/// order, e.g. `5m`, `1h30m`; `0` alone means zero.
pub const PROMETHEUS_DURATION_PATTERN: &str =
    r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$";

/// A metric name, as a recording rule's `record`.
pub const METRIC_NAME_PATTERN: &str = "^[a-zA-Z_:][a-zA-Z0-9_:]*$";

/// A tenant: `account` or `account:project`, both u32.
pub const TENANT_PATTERN: &str = r"^[0-9]{1,10}(:[0-9]{1,10})?$";

/// Prometheus rule groups, evaluated by every `StrataCluster` whose alert
/// component selects this object.
// Each `printcolumn(...)` repeats `type_`, which clippy mistakes for a
// repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "StrataRule",
    namespaced,
    status = "StrataRuleStatus",
    derive = "PartialEq",
    shortname = "str",
    category = "strata",
    doc = "Prometheus rule groups for one tenant; invalid PromQL is rejected in status.",
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status",
        description = "whether every rule parsed"
    ),
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".spec.tenant",
        description = "tenant the rules query and write"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StrataRuleSpec {
    /// Tenant the rules query and write their results to, `account` or
    /// `account:project`. Default `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TENANT_PATTERN))]
    pub tenant: Option<String>,
    /// Rule groups, as in a Prometheus rule file. Group names are unique.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub groups: Vec<RuleGroup>,
}

/// A rule group: rules evaluated in order, at one interval.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RuleGroup {
    /// Group name, unique within the object.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Evaluation interval. Default: the alert component's
    /// `--evaluation-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PROMETHEUS_DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Evaluate at this long before the evaluation time, for late data.
    /// Default `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PROMETHEUS_DURATION_PATTERN))]
    pub query_offset: Option<String>,
    /// Most alerts an alerting rule, or series a recording rule, may
    /// produce; over it the evaluation fails. Default 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub limit: Option<i64>,
    /// Labels added to every rule's results, overridden by the rule's own.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Accepted so that `PrometheusRule` bodies written for Thanos apply
    /// unchanged; ignored (select always answers partial results per its
    /// `--deny-partial-response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_response_strategy: Option<String>,
    /// The rules, evaluated in order.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub rules: Vec<Rule>,
}

/// A recording rule (`record`) or an alerting rule (`alert`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("has(self.record) != has(self.alert)")
    .message("a rule has exactly one of record and alert"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.record) || (!has(self.__for__) && !has(self.keep_firing_for) && !has(self.annotations))"
).message("a recording rule cannot have for, keep_firing_for or annotations"))]
pub struct Rule {
    /// Name of the series a recording rule writes; a valid metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = METRIC_NAME_PATTERN))]
    pub record: Option<String>,
    /// Name of the alert an alerting rule raises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub alert: Option<String>,
    /// The PromQL expression. A bare number (`expr: 1`) is accepted as in
    /// Prometheus.
    pub expr: IntOrString,
    /// How long an alert condition must hold before the alert fires.
    /// Default `0`.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PROMETHEUS_DURATION_PATTERN))]
    pub for_: Option<String>,
    /// How long a firing alert keeps firing after its condition cleared.
    /// Default `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = PROMETHEUS_DURATION_PATTERN))]
    pub keep_firing_for: Option<String>,
    /// Labels added to (or replacing those of) the rule's results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Alert annotations; values are templates (`{{ $labels.instance }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl StrataRuleSpec {
    /// The groups as a Prometheus rule file, the format `strata alert
    /// --rule` reads: each group carries the object's tenant (if set), a
    /// numeric `expr` becomes its text, and `partial_response_strategy` is
    /// dropped.
    pub fn to_rule_file(&self) -> Result<String, serde_saphyr::ser::Error> {
        let groups = self
            .groups
            .iter()
            .map(|g| FileGroup {
                name: &g.name,
                interval: g.interval.as_deref(),
                query_offset: g.query_offset.as_deref(),
                limit: g.limit,
                labels: g.labels.as_ref(),
                tenant: self.tenant.as_deref(),
                rules: g
                    .rules
                    .iter()
                    .map(|r| FileRule {
                        record: r.record.as_deref(),
                        alert: r.alert.as_deref(),
                        expr: r.expr_text(),
                        for_: r.for_.as_deref(),
                        keep_firing_for: r.keep_firing_for.as_deref(),
                        labels: r.labels.as_ref(),
                        annotations: r.annotations.as_ref(),
                    })
                    .collect(),
            })
            .collect();
        serde_saphyr::to_string(&File { groups })
    }
}

#[derive(Serialize)]
struct File<'a> {
    groups: Vec<FileGroup<'a>>,
}

#[derive(Serialize)]
struct FileGroup<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_offset: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    rules: Vec<FileRule<'a>>,
}

#[derive(Serialize)]
struct FileRule<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<&'a str>,
    expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_firing_for: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

impl Rule {
    /// The expression text (a bare number as written).
    pub fn expr_text(&self) -> String {
        match &self.expr {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s.clone(),
        }
    }

    /// `record` or `alert`, whichever is set.
    pub fn name(&self) -> Option<&str> {
        self.record.as_deref().or(self.alert.as_deref())
    }
}

/// What the operator found when it checked the rules; written only by the
/// operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StrataRuleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (False with the first error's group, rule and parse error
    /// in its message), `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Every rule that was rejected; empty when `Accepted` is True. An
    /// object with any rejected rule is not loaded at all, so a half-valid
    /// group never evaluates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_rules: Vec<RejectedRule>,
}

/// One rule the operator would not load.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RejectedRule {
    /// Group name.
    pub group: String,
    /// Position of the rule in the group, from 0.
    pub index: i32,
    /// `record` or `alert` of the rule, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why, e.g. the PromQL parse error.
    pub error: String,
}
