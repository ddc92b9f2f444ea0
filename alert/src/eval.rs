//! Rule group evaluation: scheduling, queries, recording results, alert
//! state, notification, and reloading rule files without losing state.
//!
//! Every group runs in its own task; its rules run in order, each seeing the
//! results its predecessors wrote. Evaluation times are aligned like
//! Prometheus: a group with interval `i` evaluates at `k * i + offset`, the
//! offset derived from a hash of the group's file and name, so that groups
//! spread over the interval and a restart keeps the same times. An iteration
//! that starts more than one interval late skips the missed slots (counted).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use strata_select::promql::Value;
use strata_storage::{Label, METRIC_NAME_LABEL, MatchOp, Matcher, Sample, SeriesSamples, Tenant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::{FailureLabels, GroupLabels, Metrics};
use crate::notifier::{Notifier, generator_url, to_am_alert};
use crate::querier::Querier;
use crate::rules::{Rule, RuleGroup, RuleKind, load_files};
use crate::state::{
    ALERT_NAME_LABEL, ALERTS_FOR_STATE_METRIC, AlertingRule, Firing, Labels, insert_sorted, millis,
};
use crate::template::{Data, Template};
use crate::writer::Writer;

/// Wall time in milliseconds; a trait so that tests choose the time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, millis)
    }
}

/// A clock tests set by hand.
#[derive(Default)]
pub struct ManualClock(pub std::sync::atomic::AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Query(#[from] crate::querier::QueryError),
    #[error("rule result of {0:?} is a {1}, not a vector or scalar")]
    ResultType(String, &'static str),
    #[error("vector contains metrics with the same labelset after applying rule labels: {0}")]
    DuplicateSeries(String),
    #[error("exceeded limit of {limit} with {count} series")]
    Limit { limit: usize, count: usize },
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    #[error("{0}")]
    Write(#[from] crate::writer::WriteError),
    #[error("template expansion failed: {0}")]
    Expand(String),
}

impl EvalError {
    fn reason(&self) -> &'static str {
        match self {
            EvalError::Query(_) => "query",
            EvalError::Write(_) => "write",
            _ => "rule",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

/// What the evaluator shares with every group.
pub struct Context {
    pub querier: Arc<dyn Querier>,
    /// None: results are not written and alert state is not restored.
    pub writer: Option<Arc<dyn Writer>>,
    pub notifier: Arc<Notifier>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
    pub default_interval: Duration,
    pub default_query_offset: Duration,
    pub default_tenant: Tenant,
    pub resend_delay: Duration,
    pub for_grace_period: Duration,
    pub outage_tolerance: Duration,
}

/// One rule and what its evaluations left behind.
pub struct RuleRuntime {
    pub rule: Rule,
    /// The group's labels overridden by the rule's.
    merged_labels: BTreeMap<String, String>,
    labels: Vec<(String, Template)>,
    annotations: Vec<(String, Template)>,
    /// The alert state, for alerting rules.
    pub alert: Option<AlertingRule>,
    pub health: Health,
    pub last_error: String,
    /// Wall time the last evaluation of the rule started (ms), as
    /// Prometheus reports it; 0 before the first.
    pub last_evaluation: i64,
    pub evaluation_seconds: f64,
    /// Series written by the last evaluation, to mark the vanished stale.
    previous: HashSet<Labels>,
}

impl RuleRuntime {
    fn new(rule: Rule, group_labels: &BTreeMap<String, String>) -> RuleRuntime {
        let mut all = group_labels.clone();
        all.extend(rule.labels.clone());
        let compile = |kind: &str, (name, text): (&String, &String)| {
            let template = Template::parse(&format!("{kind}.{name}"), text).unwrap_or_else(|e| {
                // Loading validated the templates already; a failure here
                // shows in the expanded value rather than stopping the rule.
                Template::parse(name, &format!("<error parsing template: {e}>"))
                    .unwrap_or_else(|_| unreachable_template())
            });
            (name.clone(), template)
        };
        let labels = all.iter().map(|kv| compile("label", kv)).collect();
        let annotations = rule
            .annotations
            .iter()
            .map(|kv| compile("annotation", kv))
            .collect();
        let alert = match &rule.kind {
            RuleKind::Alert(name) => Some(AlertingRule::new(name, rule.for_, rule.keep_firing_for)),
            RuleKind::Record(_) => None,
        };
        RuleRuntime {
            rule,
            merged_labels: all,
            labels,
            annotations,
            alert,
            health: Health::Unknown,
            last_error: String::new(),
            last_evaluation: 0,
            evaluation_seconds: 0.0,
            previous: HashSet::new(),
        }
    }

    /// What identifies a rule across reloads: kind, name and labels.
    fn identity(&self) -> (bool, String, Vec<(String, String)>) {
        let labels = self
            .rule
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (self.rule.is_alert(), self.rule.name().to_string(), labels)
    }
}

fn unreachable_template() -> Template {
    // A literal text always parses.
    Template::parse("error", "<error>").unwrap_or_else(|_| unreachable_template())
}

/// One group: its settings, its rules, and when it last ran.
pub struct GroupRuntime {
    pub file: PathBuf,
    pub name: String,
    pub interval: Duration,
    pub limit: usize,
    pub query_offset: Duration,
    pub tenant: Tenant,
    pub rules: Vec<RuleRuntime>,
    /// Wall time the last evaluation started (ms); 0 before the first.
    pub last_evaluation: i64,
    pub evaluation_seconds: f64,
    /// Evaluations still to run before alert state is restored from
    /// `ALERTS_FOR_STATE`; None when no restore is due. Like Prometheus, the
    /// restore follows the second evaluation, so that recording rules the
    /// alerts read have been evaluated once in time.
    restore_after: Option<u32>,
    /// Series of rules a reload removed, marked stale after the next
    /// evaluation unless a rule of the group wrote them again.
    stale_series: Vec<Labels>,
}

pub type SharedGroup = Arc<Mutex<GroupRuntime>>;

impl GroupRuntime {
    /// A group as loaded from `file`. `restore`: whether its alert state is
    /// restored (groups of the first load); otherwise its alerts write
    /// `ALERTS` from the first evaluation, as Prometheus does for groups that
    /// a reload adds.
    pub fn new(
        file: &Path,
        group: RuleGroup,
        ctx: &Context,
        restore: bool,
    ) -> Result<GroupRuntime, String> {
        let tenant = match &group.tenant {
            Some(t) => Tenant::from_str(t)
                .map_err(|_| format!("group {:?}: invalid tenant {t:?}", group.name))?,
            None => ctx.default_tenant,
        };
        let mut rules: Vec<RuleRuntime> = group
            .rules
            .into_iter()
            .map(|r| RuleRuntime::new(r, &group.labels))
            .collect();
        if !restore {
            for alert in rules.iter_mut().filter_map(|r| r.alert.as_mut()) {
                alert.restored = true;
            }
        }
        Ok(GroupRuntime {
            file: file.to_path_buf(),
            name: group.name,
            interval: group
                .interval
                .filter(|i| !i.is_zero())
                .unwrap_or(ctx.default_interval),
            limit: usize::try_from(group.limit).unwrap_or(usize::MAX),
            query_offset: group.query_offset.unwrap_or(ctx.default_query_offset),
            tenant,
            rules,
            last_evaluation: 0,
            evaluation_seconds: 0.0,
            restore_after: restore.then_some(2),
            stale_series: Vec::new(),
        })
    }

    /// Where this group's evaluations fall within its interval (ms).
    pub fn offset(&self) -> i64 {
        group_offset(&self.file.to_string_lossy(), &self.name, self.interval)
    }

    /// Takes over the state of `old` for rules with the same identity; the
    /// series of its other rules are to be marked stale.
    fn adopt(&mut self, old: &mut GroupRuntime) {
        let mut by_identity: HashMap<_, Vec<&mut RuleRuntime>> = HashMap::new();
        for rule in &mut old.rules {
            by_identity.entry(rule.identity()).or_default().push(rule);
        }
        for rule in &mut self.rules {
            let Some(olds) = by_identity.get_mut(&rule.identity()) else {
                continue;
            };
            if olds.is_empty() {
                continue;
            }
            let old = olds.remove(0);
            if let (Some(new), Some(previous)) = (rule.alert.as_mut(), old.alert.take()) {
                new.active = previous.active;
                new.restored = previous.restored;
            }
            rule.previous = std::mem::take(&mut old.previous);
            rule.health = old.health;
            rule.last_error = std::mem::take(&mut old.last_error);
            rule.last_evaluation = old.last_evaluation;
            rule.evaluation_seconds = old.evaluation_seconds;
        }
        for unmatched in by_identity.into_values().flatten() {
            self.stale_series.extend(unmatched.previous.drain());
        }
        self.stale_series.append(&mut old.stale_series);
        self.restore_after = old.restore_after;
        self.last_evaluation = old.last_evaluation;
        self.evaluation_seconds = old.evaluation_seconds;
    }
}

/// Where the evaluations of group `name` of `file` fall within `interval`
/// (ms), the way Prometheus places them so that both evaluate a group at
/// the same times: the xxHash64 of the label set `{file, name}` as
/// Prometheus hashes labels (each name and value followed by `0xff`, names
/// in order), modulo the interval in nanoseconds, truncated to milliseconds
/// (Prometheus' evaluation times carry nanoseconds; its queries and samples
/// the truncated milliseconds).
pub fn group_offset(file: &str, name: &str, interval: Duration) -> i64 {
    let mut key = Vec::with_capacity(file.len() + name.len() + 12);
    for (label, value) in [("file", file), ("name", name)] {
        key.extend_from_slice(label.as_bytes());
        key.push(0xff);
        key.extend_from_slice(value.as_bytes());
        key.push(0xff);
    }
    let interval_ns = u64::try_from(interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    ((xxhash_rust::xxh64::xxh64(&key, 0) % interval_ns) / 1_000_000) as i64
}

/// The first evaluation time of a group after `now`: the next `k * interval
/// + offset`.
pub fn next_eval_time(now: i64, interval: i64, offset: i64) -> i64 {
    let interval = interval.max(1);
    let adjusted = now - offset;
    let base = adjusted - adjusted.rem_euclid(interval);
    base + offset + interval
}

/// Evaluates every rule of `group` at `ts` (ms), in order.
pub async fn evaluate_group(group: &SharedGroup, ctx: &Context, ts: i64) {
    let started = Instant::now();
    let started_at = ctx.clock.now_ms();
    let (count, tenant, query_offset, limit, interval, name) = {
        let g = group.lock();
        (
            g.rules.len(),
            g.tenant,
            millis(g.query_offset),
            g.limit,
            g.interval,
            g.name.clone(),
        )
    };
    let group_labels = GroupLabels {
        group: name.clone(),
    };
    let query_ts = ts - query_offset;
    let mut written = 0u64;
    for index in 0..count {
        let rule_started = Instant::now();
        let rule_started_at = ctx.clock.now_ms();
        let Some(expr) = group.lock().rules.get(index).map(|r| r.rule.expr.clone()) else {
            break;
        };
        let result = ctx.querier.query(tenant, &expr, query_ts).await;
        let expansion = group.lock().rules.get(index).and_then(Expansion::of);
        let result = match (result, expansion) {
            (Ok(value), Some(expansion)) => match samples_of(&expr, value) {
                Ok(samples) => expansion
                    .run(ctx, tenant, query_ts, samples)
                    .await
                    .map(Evaluated::Alerts),
                Err(e) => Err(e),
            },
            (Ok(value), None) => samples_of(&expr, value).map(Evaluated::Samples),
            (Err(e), _) => Err(e.into()),
        };
        let outcome = {
            let mut g = group.lock();
            let Some(rule) = g.rules.get_mut(index) else {
                break;
            };
            apply(rule, ctx, result, ts, query_ts, limit, interval)
        };
        let outcome = match (outcome, &ctx.writer) {
            (Ok(series), Some(writer)) => {
                let n: usize = series.iter().map(|s| s.samples.len()).sum();
                match writer.write(tenant, series).await {
                    Ok(()) => {
                        written += n as u64;
                        Ok(())
                    }
                    Err(e) => Err(EvalError::from(e)),
                }
            }
            (Ok(_), None) => Ok(()),
            (Err(e), _) => Err(e),
        };
        let mut g = group.lock();
        let Some(rule) = g.rules.get_mut(index) else {
            break;
        };
        rule.last_evaluation = rule_started_at;
        rule.evaluation_seconds = rule_started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                rule.health = Health::Ok;
                rule.last_error.clear();
            }
            Err(e) => {
                ctx.metrics
                    .evaluation_failures
                    .get_or_create(&FailureLabels {
                        group: name.clone(),
                        reason: e.reason(),
                    })
                    .inc();
                tracing::warn!(group = %name, rule = %rule.rule.name(), error = %e, "Rule evaluation failed.");
                rule.health = Health::Err;
                rule.last_error = e.to_string();
            }
        }
    }

    written += mark_removed_stale(group, ctx, tenant, query_ts).await;

    let restore = {
        let mut g = group.lock();
        g.restore_after = g.restore_after.and_then(|n| n.checked_sub(1));
        g.restore_after == Some(0)
    };
    if restore {
        restore_group(group, ctx).await;
        group.lock().restore_after = None;
    }

    let elapsed = started.elapsed().as_secs_f64();
    {
        let mut g = group.lock();
        g.last_evaluation = started_at;
        g.evaluation_seconds = elapsed;
    }
    ctx.metrics.evaluations.get_or_create(&group_labels).inc();
    ctx.metrics
        .last_evaluation
        .get_or_create(&group_labels)
        .set(ts as f64 / 1000.0);
    ctx.metrics
        .evaluation_duration
        .get_or_create(&group_labels)
        .observe(elapsed);
    ctx.metrics
        .samples_written
        .get_or_create(&group_labels)
        .inc_by(written);
}

/// Writes staleness markers at `query_ts` for the series of rules a reload
/// removed from `group`, except those its rules wrote again; returns how
/// many. On a failed write they are kept for the next evaluation.
async fn mark_removed_stale(
    group: &SharedGroup,
    ctx: &Context,
    tenant: Tenant,
    query_ts: i64,
) -> u64 {
    let Some(writer) = &ctx.writer else {
        return 0;
    };
    let series = {
        let mut g = group.lock();
        if g.stale_series.is_empty() {
            return 0;
        }
        let pending = std::mem::take(&mut g.stale_series);
        let current: HashSet<&Labels> = g.rules.iter().flat_map(|r| r.previous.iter()).collect();
        let gone: Vec<Labels> = pending
            .into_iter()
            .filter(|l| !current.contains(l))
            .collect();
        gone
    };
    let n = series.len() as u64;
    match writer.write(tenant, stale_markers(&series, query_ts)).await {
        Ok(()) => n,
        Err(e) => {
            tracing::warn!(error = %e, series = n, "Cannot mark the series of removed rules stale; retrying next evaluation.");
            group.lock().stale_series.extend(series);
            0
        }
    }
}

/// One staleness marker at `ts` for each of `series`.
fn stale_markers(series: &[Labels], ts: i64) -> Vec<SeriesSamples> {
    series
        .iter()
        .map(|labels| SeriesSamples {
            labels: labels.clone(),
            samples: vec![Sample {
                timestamp: ts,
                value: f64::from_bits(strata_storage::STALE_NAN_BITS),
            }],
        })
        .collect()
}

/// After a reload removed `group` (stopped at `stopped_at`), waits two of
/// its intervals, so that a renamed group writes its series first, then
/// marks stale every series the group wrote that no running group writes,
/// as Prometheus does.
async fn retire_group(
    group: SharedGroup,
    ctx: Arc<Context>,
    running: Arc<Mutex<Vec<Running>>>,
    stopped_at: i64,
) {
    let (interval, tenant, query_offset, series) = {
        let mut g = group.lock();
        let mut series: Vec<Labels> = std::mem::take(&mut g.stale_series);
        for rule in &mut g.rules {
            series.extend(rule.previous.drain());
        }
        (g.interval, g.tenant, millis(g.query_offset), series)
    };
    let Some(writer) = &ctx.writer else {
        return;
    };
    if series.is_empty() {
        return;
    }
    tokio::time::sleep(interval * 2).await;
    let live: HashSet<Labels> = running
        .lock()
        .iter()
        .flat_map(|r| {
            let g = r.group.lock();
            if g.tenant != tenant {
                return Vec::new();
            }
            g.rules
                .iter()
                .flat_map(|rule| rule.previous.iter().cloned())
                .collect()
        })
        .collect();
    let gone: Vec<Labels> = series.into_iter().filter(|l| !live.contains(l)).collect();
    if gone.is_empty() {
        return;
    }
    let n = gone.len();
    match writer
        .write(tenant, stale_markers(&gone, stopped_at - query_offset))
        .await
    {
        Ok(()) => tracing::info!(series = n, "Series of a removed rule group marked stale."),
        Err(e) => {
            tracing::warn!(error = %e, series = n, "Cannot mark the series of a removed rule group stale.")
        }
    }
}

/// A query result as (labels, value) pairs; a scalar is one element
/// without labels, like Prometheus.
fn samples_of(expr: &str, value: Value) -> Result<Vec<(Labels, f64)>, EvalError> {
    match value {
        Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        Value::Scalar { v, .. } => Ok(vec![(Vec::new(), v)]),
        other => Err(EvalError::ResultType(expr.to_string(), other.type_name())),
    }
}

/// What an evaluation produced before it meets the rule's state.
enum Evaluated {
    /// A recording rule's result.
    Samples(Vec<(Labels, f64)>),
    /// An alerting rule's result, labels and annotations expanded.
    Alerts(Vec<Firing>),
}

/// The templates of an alerting rule, copied out of the group so that the
/// expansion (whose `query` function runs queries) holds no lock.
struct Expansion {
    name: String,
    labels: Vec<(String, Template)>,
    annotations: Vec<(String, Template)>,
}

impl Expansion {
    fn of(rule: &RuleRuntime) -> Option<Expansion> {
        let RuleKind::Alert(name) = &rule.rule.kind else {
            return None;
        };
        Some(Expansion {
            name: name.clone(),
            labels: rule.labels.clone(),
            annotations: rule.annotations.clone(),
        })
    }

    /// Expands every element on the blocking pool, where the templates'
    /// `query` function can wait for the querier.
    async fn run(
        self,
        ctx: &Context,
        tenant: Tenant,
        time: i64,
        samples: Vec<(Labels, f64)>,
    ) -> Result<Vec<Firing>, EvalError> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let querier = TemplateQuerier {
            querier: ctx.querier.clone(),
            runtime: tokio::runtime::Handle::current(),
            tenant,
            time,
        };
        let external_labels = ctx.external_labels.clone();
        let external_url = ctx.external_url.clone();
        tokio::task::spawn_blocking(move || {
            samples
                .into_iter()
                .map(|(labels, value)| {
                    self.expand(&querier, &external_labels, &external_url, labels, value)
                })
                .collect()
        })
        .await
        .map_err(|e| EvalError::Expand(e.to_string()))
    }

    /// An alert's labels (the sample's without `__name__`, then the rule's
    /// expanded, then `alertname`) and expanded annotations.
    fn expand(
        &self,
        querier: &TemplateQuerier,
        external_labels: &BTreeMap<String, String>,
        external_url: &str,
        mut labels: Labels,
        value: f64,
    ) -> Firing {
        // Templates see `__name__` in `$labels` (as in Prometheus); the
        // alert's own labels do not keep it.
        let data = Data {
            labels: labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect(),
            value,
            external_labels: external_labels.clone(),
            external_url: external_url.to_string(),
        };
        labels.retain(|l| l.name != METRIC_NAME_LABEL);
        let expand = |template: &Template| match template.expand(&data, Some(querier)) {
            Ok(text) => text,
            Err(e) => format!("<error expanding template: {e}>"),
        };
        for (name, template) in &self.labels {
            set_or_remove(&mut labels, name, expand(template));
        }
        insert_sorted(
            &mut labels,
            Label::new(ALERT_NAME_LABEL, self.name.as_str()),
        );
        let annotations = self
            .annotations
            .iter()
            .map(|(name, template)| Label::new(name.as_str(), expand(template)))
            .collect();
        Firing {
            labels,
            annotations,
            value,
        }
    }
}

/// The templates' `query` function: an instant query at the evaluation time.
struct TemplateQuerier {
    querier: Arc<dyn Querier>,
    runtime: tokio::runtime::Handle,
    tenant: Tenant,
    time: i64,
}

impl crate::template::QueryFn for TemplateQuerier {
    fn query(&self, query: &str) -> Result<Vec<crate::template::Sample>, String> {
        let value = self
            .runtime
            .block_on(self.querier.query(self.tenant, query, self.time))
            .map_err(|e| e.to_string())?;
        let samples = samples_of(query, value).map_err(|e| e.to_string())?;
        Ok(samples
            .into_iter()
            .map(|(labels, value)| crate::template::Sample {
                labels: labels.into_iter().map(|l| (l.name, l.value)).collect(),
                value,
            })
            .collect())
    }
}

/// Turns one rule's evaluated result into series to write (and, for alerts,
/// state changes and notifications).
fn apply(
    rule: &mut RuleRuntime,
    ctx: &Context,
    result: Result<Evaluated, EvalError>,
    ts: i64,
    query_ts: i64,
    limit: usize,
    interval: Duration,
) -> Result<Vec<SeriesSamples>, EvalError> {
    let mut series = match (&rule.rule.kind, result?) {
        (RuleKind::Record(record), Evaluated::Samples(samples)) => {
            let mut out = Vec::with_capacity(samples.len());
            let mut seen = HashSet::with_capacity(samples.len());
            for (mut labels, value) in samples {
                insert_sorted(&mut labels, Label::new(METRIC_NAME_LABEL, record.as_str()));
                // Recording rule labels are not templates: the text is the value.
                for (name, value) in &rule.merged_labels {
                    set_or_remove(&mut labels, name, value.clone());
                }
                if !seen.insert(labels.clone()) {
                    return Err(EvalError::DuplicateSeries(crate::state::format_labels(
                        &labels,
                    )));
                }
                out.push(SeriesSamples {
                    labels,
                    samples: vec![Sample {
                        timestamp: query_ts,
                        value,
                    }],
                });
            }
            if limit > 0 && out.len() > limit {
                return Err(EvalError::Limit {
                    limit,
                    count: out.len(),
                });
            }
            out
        }
        (RuleKind::Alert(_), Evaluated::Alerts(firing)) => {
            let Some(state) = rule.alert.as_mut() else {
                return Ok(Vec::new());
            };
            let mut out = state.eval(ts, firing, limit)?;
            for s in &mut out {
                for sample in &mut s.samples {
                    sample.timestamp = query_ts;
                }
            }
            let to_send = state.to_send(ts, ctx.resend_delay, interval);
            if !to_send.is_empty() {
                let url = generator_url(&ctx.external_url, &rule.rule.expr);
                ctx.notifier.send(
                    to_send
                        .iter()
                        .map(|a| to_am_alert(a, &ctx.external_labels, &url))
                        .collect(),
                );
            }
            out
        }
        // Evaluation picks the variant from the same rule kind.
        _ => return Ok(Vec::new()),
    };
    // Series written last time and not now get a staleness marker, so that
    // queries stop seeing them at once rather than after the lookback.
    let current: HashSet<Labels> = series.iter().map(|s| s.labels.clone()).collect();
    let mut gone: Vec<Labels> = rule.previous.difference(&current).cloned().collect();
    gone.sort();
    series.extend(stale_markers(&gone, query_ts));
    rule.previous = current;
    Ok(series)
}

fn set_or_remove(labels: &mut Labels, name: &str, value: String) {
    if value.is_empty() {
        labels.retain(|l| l.name != name);
    } else {
        insert_sorted(labels, Label::new(name, value));
    }
}

/// Restores `active_at` of every alerting rule of `group` from the newest
/// `ALERTS_FOR_STATE` sample of each alert within `--outage-tolerance`
/// before now (Prometheus restores at the wall time, not at an evaluation
/// time). A newest sample that is a staleness marker means the alert had
/// resolved: it starts over.
async fn restore_group(group: &SharedGroup, ctx: &Context) {
    let now = ctx.clock.now_ms();
    let (tenant, rules) = {
        let g = group.lock();
        let rules: Vec<(usize, String, bool)> = g
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let alert = r.alert.as_ref()?;
                let restorable = alert.hold >= ctx.for_grace_period && !alert.active.is_empty();
                Some((i, alert.name.clone(), restorable))
            })
            .collect();
        (g.tenant, rules)
    };
    for (index, name, restorable) in rules {
        let mut newest: HashMap<Labels, (i64, f64)> = HashMap::new();
        if restorable && ctx.writer.is_some() {
            match for_state_matchers(&name) {
                Ok(matchers) => match ctx
                    .querier
                    .newest_samples(tenant, &matchers, now, ctx.outage_tolerance)
                    .await
                {
                    Ok(samples) => {
                        newest.extend(samples.into_iter().map(|n| (n.labels, (n.t, n.v))));
                    }
                    Err(e) => {
                        tracing::warn!(alert = %name, error = %e, "Cannot restore alert state; alerts start over.")
                    }
                },
                Err(e) => {
                    tracing::warn!(alert = %name, error = %e, "Cannot restore alert state; alerts start over.")
                }
            }
        }
        let mut g = group.lock();
        if let Some(alert) = g.rules.get_mut(index).and_then(|r| r.alert.as_mut()) {
            let restored = alert.restore(now, ctx.for_grace_period, |labels| {
                newest.get(labels).copied()
            });
            if restorable {
                tracing::info!(alert = %name, restored, "Alert state restored.");
            }
        }
    }
}

/// Selects the `ALERTS_FOR_STATE` series of alerting rule `name`.
fn for_state_matchers(name: &str) -> Result<[Matcher; 2], strata_storage::MatcherError> {
    Ok([
        Matcher::new(MatchOp::Equal, METRIC_NAME_LABEL, ALERTS_FOR_STATE_METRIC)?,
        Matcher::new(MatchOp::Equal, ALERT_NAME_LABEL, name)?,
    ])
}

/// Runs `group` until `stop` turns true.
pub async fn run_group(group: SharedGroup, ctx: Arc<Context>, stop: watch::Receiver<bool>) {
    let (interval, offset) = {
        let g = group.lock();
        (millis(g.interval).max(1), g.offset())
    };
    let first = next_eval_time(ctx.clock.now_ms(), interval, offset);
    run_group_from(group, ctx, stop, first).await;
}

/// Runs `group` from its evaluation time `next` until `stop` turns true.
async fn run_group_from(
    group: SharedGroup,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
    mut next: i64,
) {
    let (interval, name) = {
        let g = group.lock();
        (millis(g.interval).max(1), g.name.clone())
    };
    loop {
        let wait = (next - ctx.clock.now_ms()).max(0) as u64;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let now = ctx.clock.now_ms();
        let missed = (now - next) / interval;
        if missed > 0 {
            ctx.metrics
                .missed_iterations
                .get_or_create(&GroupLabels {
                    group: name.clone(),
                })
                .inc_by(missed as u64);
            tracing::warn!(group = %name, missed, "Group evaluation ran late; iterations skipped.");
            next += missed * interval;
        }
        evaluate_group(&group, &ctx, next).await;
        next += interval;
    }
}

struct Running {
    group: SharedGroup,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The groups of the rule files, their tasks, and reloading.
pub struct Manager {
    ctx: Arc<Context>,
    patterns: Vec<String>,
    running: Arc<Mutex<Vec<Running>>>,
    /// Tasks marking the series of removed groups stale; aborted at stop.
    retiring: Mutex<Vec<JoinHandle<()>>>,
    /// Modification time and length of every loaded file, to notice changes.
    seen: Mutex<BTreeMap<PathBuf, Option<(SystemTime, u64)>>>,
    /// Whether a load succeeded already.
    loaded: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read rule file pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Rules(Vec<crate::rules::RuleError>),
    #[error("{0}")]
    Group(String),
}

impl Manager {
    pub fn new(ctx: Arc<Context>, patterns: Vec<String>) -> Arc<Manager> {
        Arc::new(Manager {
            ctx,
            patterns,
            running: Arc::new(Mutex::new(Vec::new())),
            retiring: Mutex::new(Vec::new()),
            seen: Mutex::new(BTreeMap::new()),
            loaded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The groups, in file and then file order.
    pub fn groups(&self) -> Vec<SharedGroup> {
        self.running
            .lock()
            .iter()
            .map(|r| r.group.clone())
            .collect()
    }

    /// Loads the rule files and (re)starts the groups, carrying alert state
    /// over to rules of the same group (file and name) with the same
    /// identity. On error the running groups are kept.
    pub fn load(&self) -> Result<usize, LoadError> {
        let paths = expand_patterns(&self.patterns)?;
        let files = load_files(&paths).map_err(LoadError::Rules)?;
        // Only the groups of the first load restore alert state.
        let restore = !self.loaded.load(std::sync::atomic::Ordering::Relaxed);
        let mut groups = Vec::new();
        for (path, file) in files {
            for group in file.groups {
                groups.push(
                    GroupRuntime::new(&path, group, &self.ctx, restore)
                        .map_err(LoadError::Group)?,
                );
            }
        }
        let count = groups.len();
        let mut running = self.running.lock();
        let mut old: HashMap<(PathBuf, String), Running> = running
            .drain(..)
            .map(|r| {
                let key = {
                    let g = r.group.lock();
                    (g.file.clone(), g.name.clone())
                };
                (key, r)
            })
            .collect();
        for mut group in groups {
            if let Some(previous) = old.remove(&(group.file.clone(), group.name.clone())) {
                let _ = previous.stop.send(true);
                previous.task.abort();
                group.adopt(&mut previous.group.lock());
            }
            let shared = Arc::new(Mutex::new(group));
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(run_group(shared.clone(), self.ctx.clone(), stopped));
            running.push(Running {
                group: shared,
                stop,
                task,
            });
        }
        let stopped_at = self.ctx.clock.now_ms();
        let mut retiring = self.retiring.lock();
        retiring.retain(|task| !task.is_finished());
        for (_, gone) in old {
            let _ = gone.stop.send(true);
            gone.task.abort();
            retiring.push(tokio::spawn(retire_group(
                gone.group,
                self.ctx.clone(),
                self.running.clone(),
                stopped_at,
            )));
        }
        *self.seen.lock() = paths.iter().map(|p| (p.clone(), file_stamp(p))).collect();
        self.loaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(count)
    }

    /// Whether the files matching the patterns changed since the last load.
    pub fn changed(&self) -> bool {
        let Ok(paths) = expand_patterns(&self.patterns) else {
            return true;
        };
        let now: BTreeMap<PathBuf, Option<(SystemTime, u64)>> =
            paths.iter().map(|p| (p.clone(), file_stamp(p))).collect();
        *self.seen.lock() != now
    }

    /// Stops every group task (series of removed groups are not marked
    /// stale then: the evaluator is going away, not the rules).
    pub async fn stop(&self) {
        for task in self.retiring.lock().drain(..) {
            task.abort();
        }
        let running: Vec<Running> = self.running.lock().drain(..).collect();
        for r in &running {
            let _ = r.stop.send(true);
        }
        for r in running {
            let _ = tokio::time::timeout(Duration::from_secs(5), r.task).await;
        }
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Expands `*` and `?` in the file name part of each pattern, sorted.
pub fn expand_patterns(patterns: &[String]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for pattern in patterns {
        let path = Path::new(pattern);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(['*', '?']) {
            out.push(path.to_path_buf());
            continue;
        }
        // A match is named like the pattern (`rules/*.yml` gives
        // `rules/a.yml`, `*.yml` gives `a.yml`): the name is part of the
        // group's identity and of its evaluation offset, as in Prometheus.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let entries = std::fs::read_dir(parent.unwrap_or(Path::new("."))).map_err(|e| {
            LoadError::Pattern {
                pattern: pattern.clone(),
                message: e.to_string(),
            }
        })?;
        let mut matched: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| wildcard_match(&name, &e.file_name().to_string_lossy()))
            .map(|e| match parent {
                Some(dir) => dir.join(e.file_name()),
                None => PathBuf::from(e.file_name()),
            })
            .collect();
        matched.sort();
        out.extend(matched);
    }
    Ok(out)
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::querier::{BoxFuture, QueryError};
    use crate::writer::WriteError;
    use strata_select::promql::Sample as QuerySample;

    /// Answers each expression from a table the test changes between
    /// evaluations.
    #[derive(Default)]
    struct Scripted(Mutex<HashMap<String, Vec<(Labels, f64)>>>);

    impl Querier for Scripted {
        fn query<'a>(
            &'a self,
            _tenant: Tenant,
            query: &'a str,
            time: i64,
        ) -> BoxFuture<'a, Result<Value, QueryError>> {
            let rows = self.0.lock().get(query).cloned().unwrap_or_default();
            Box::pin(async move {
                if query.starts_with(ALERTS_FOR_STATE_METRIC) {
                    return Ok(Value::Matrix(Vec::new()));
                }
                Ok(Value::Vector(
                    rows.into_iter()
                        .map(|(labels, v)| QuerySample { labels, t: time, v })
                        .collect(),
                ))
            })
        }
    }

    #[derive(Default)]
    struct Captured(Mutex<Vec<SeriesSamples>>);

    impl Writer for Captured {
        fn write(
            &self,
            _tenant: Tenant,
            series: Vec<SeriesSamples>,
        ) -> BoxFuture<'_, Result<(), WriteError>> {
            self.0.lock().extend(series);
            Box::pin(async { Ok(()) })
        }
    }

    const RULES: &str = r#"
groups:
  - name: g
    labels:
      team: db
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: up == 0
        for: 10s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} down ({{ $value }})"
"#;

    fn series_names(written: &[SeriesSamples]) -> Vec<String> {
        written
            .iter()
            .map(|s| {
                let stale = s
                    .samples
                    .iter()
                    .any(|p| strata_storage::is_stale_nan(p.value));
                format!(
                    "{}{}",
                    crate::state::format_labels(&s.labels),
                    if stale { " stale" } else { "" }
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn group_writes_records_alerts_and_staleness() {
        let querier = Arc::new(Scripted::default());
        let writer = Arc::new(Captured::default());
        let metrics = Metrics::default();
        let ctx = Context {
            querier: querier.clone(),
            writer: Some(writer.clone()),
            notifier: Notifier::new(Vec::new(), 10, Duration::from_secs(1), metrics.clone()),
            clock: Arc::new(ManualClock::default()),
            metrics,
            external_labels: BTreeMap::new(),
            external_url: "http://x".into(),
            default_interval: Duration::from_secs(5),
            default_query_offset: Duration::ZERO,
            default_tenant: Tenant::DEFAULT,
            resend_delay: Duration::from_secs(60),
            for_grace_period: Duration::from_secs(600),
            outage_tolerance: Duration::from_secs(3600),
        };
        let file = crate::rules::parse_rule_file(Path::new("r.yml"), RULES).expect("rules");
        let group = file.groups.into_iter().next().expect("group");
        let group: SharedGroup = Arc::new(Mutex::new(
            GroupRuntime::new(Path::new("r.yml"), group, &ctx, true).expect("group"),
        ));
        let up = |instance: &str| {
            vec![
                Label::new("__name__", "up"),
                Label::new("instance", instance),
                Label::new("job", "node"),
            ]
        };
        querier.0.lock().insert(
            "sum by (job) (up)".into(),
            vec![(vec![Label::new("job", "node")], 1.0)],
        );
        querier
            .0
            .lock()
            .insert("up == 0".into(), vec![(up("a"), 0.0)]);

        // t=0 and 3s: pending; nothing of ALERTS before the restore, which
        // follows the second evaluation.
        for t in [0, 3_000] {
            evaluate_group(&group, &ctx, t).await;
            assert_eq!(
                series_names(&std::mem::take(&mut *writer.0.lock())),
                [r#"{__name__="job:up:sum", job="node", team="db"}"#]
            );
        }
        // t=5s: still pending, now written; t=10s: firing.
        evaluate_group(&group, &ctx, 5_000).await;
        writer.0.lock().clear();
        evaluate_group(&group, &ctx, 10_000).await;
        assert_eq!(
            series_names(&std::mem::take(&mut *writer.0.lock())),
            [
                r#"{__name__="job:up:sum", job="node", team="db"}"#,
                r#"{__name__="ALERTS", alertname="Down", alertstate="firing", instance="a", job="node", severity="page", team="db"}"#,
                r#"{__name__="ALERTS_FOR_STATE", alertname="Down", instance="a", job="node", severity="page", team="db"}"#,
                r#"{__name__="ALERTS", alertname="Down", alertstate="pending", instance="a", job="node", severity="page", team="db"} stale"#,
            ]
        );
        {
            let g = group.lock();
            let alert = g.rules[1].alert.as_ref().expect("alerting");
            let a = alert.active.values().next().expect("alert");
            assert_eq!(a.annotations, [Label::new("summary", "a down (0)")]);
            assert_eq!(a.active_at, 0);
        }
        // t=15s: resolved; its series go stale.
        querier.0.lock().insert("up == 0".into(), Vec::new());
        evaluate_group(&group, &ctx, 15_000).await;
        assert_eq!(
            series_names(&std::mem::take(&mut *writer.0.lock()))[1..],
            [
                r#"{__name__="ALERTS", alertname="Down", alertstate="firing", instance="a", job="node", severity="page", team="db"} stale"#,
                r#"{__name__="ALERTS_FOR_STATE", alertname="Down", instance="a", job="node", severity="page", team="db"} stale"#,
            ]
        );
        let g = group.lock();
        assert_eq!(g.rules[1].health, Health::Ok);
        assert_eq!(
            g.last_evaluation, 0,
            "the wall time, which the test clock keeps at 0"
        );
    }

    fn context(querier: Arc<Scripted>, writer: Arc<Captured>, clock: Arc<dyn Clock>) -> Context {
        let metrics = Metrics::default();
        Context {
            querier,
            writer: Some(writer),
            notifier: Notifier::new(Vec::new(), 10, Duration::from_secs(1), metrics.clone()),
            clock,
            metrics,
            external_labels: BTreeMap::new(),
            external_url: "http://x".into(),
            default_interval: Duration::from_millis(100),
            default_query_offset: Duration::ZERO,
            default_tenant: Tenant::DEFAULT,
            resend_delay: Duration::from_secs(60),
            for_grace_period: Duration::from_secs(600),
            outage_tolerance: Duration::from_secs(3600),
        }
    }

    /// Reloads mark stale what removed rules and groups wrote (as Prometheus:
    /// a group's removed rules after its next evaluation, a removed group
    /// two intervals later), never what a kept rule still writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reload_marks_series_of_removed_rules_and_groups_stale() {
        let querier = Arc::new(Scripted::default());
        for expr in ["vector(1)", "vector(2)", "vector(3)"] {
            querier
                .0
                .lock()
                .insert(expr.into(), vec![(Vec::new(), 1.0)]);
        }
        let writer = Arc::new(Captured::default());
        let ctx = Arc::new(context(querier, writer.clone(), Arc::new(SystemClock)));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.yml");
        let both = "groups:\n  - name: a\n    rules:\n      - record: kept\n        expr: vector(1)\n      - record: dropped\n        expr: vector(2)\n  - name: b\n    rules:\n      - record: other\n        expr: vector(3)\n";
        std::fs::write(&path, both).expect("write rules");
        let manager = Manager::new(ctx, vec![path.display().to_string()]);
        manager.load().expect("load");
        tokio::time::sleep(Duration::from_millis(350)).await;
        let first = series_names(&std::mem::take(&mut *writer.0.lock()));
        for name in ["kept", "dropped", "other"] {
            let series = format!(r#"{{__name__="{name}"}}"#);
            assert!(first.contains(&series), "{name} not written: {first:?}");
        }
        std::fs::write(
            &path,
            "groups:\n  - name: a\n    rules:\n      - record: kept\n        expr: vector(1)\n",
        )
        .expect("write rules");
        manager.load().expect("reload");
        tokio::time::sleep(Duration::from_millis(450)).await;
        manager.stop().await;
        let after: HashSet<String> = series_names(&writer.0.lock()).into_iter().collect();
        let want: HashSet<String> = [
            r#"{__name__="kept"}"#,
            r#"{__name__="dropped"} stale"#,
            r#"{__name__="other"} stale"#,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(after, want);
    }

    /// A group that wakes up more than an interval late skips the missed
    /// slots, counts them, and evaluates at the latest slot passed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn late_wakeup_skips_and_counts_missed_iterations() {
        let querier = Arc::new(Scripted::default());
        querier
            .0
            .lock()
            .insert("vector(1)".into(), vec![(Vec::new(), 1.0)]);
        let writer = Arc::new(Captured::default());
        let clock = Arc::new(ManualClock::default());
        let ctx = Arc::new(context(querier, writer.clone(), clock.clone()));
        let rules =
            "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: vector(1)\n";
        let file = crate::rules::parse_rule_file(Path::new("r.yml"), rules).expect("rules");
        let group = file.groups.into_iter().next().expect("group");
        let group: SharedGroup = Arc::new(Mutex::new(
            GroupRuntime::new(Path::new("r.yml"), group, &ctx, true).expect("group"),
        ));
        let offset = group.lock().offset();
        let start = 1_000_000;
        clock.0.store(start, std::sync::atomic::Ordering::Relaxed);
        let first = next_eval_time(start, 100, offset);
        // The group wakes up for `first` 3.5 intervals late.
        clock
            .0
            .store(first + 350, std::sync::atomic::Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_group_from(group.clone(), ctx.clone(), stopped, first));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = stop.send(true);
        let _ = task.await;
        let missed = ctx
            .metrics
            .missed_iterations
            .get_or_create(&GroupLabels { group: "g".into() })
            .get();
        assert_eq!(missed, 3);
        let times: Vec<i64> = writer
            .0
            .lock()
            .iter()
            .map(|s| s.samples[0].timestamp)
            .collect();
        assert_eq!(times.first(), Some(&(first + 300)), "{times:?}");
    }

    #[test]
    fn aligned_eval_times() {
        // (now, interval, offset, want)
        for (now, interval, offset, want) in [
            (0, 1000, 0, 1000),
            (999, 1000, 0, 1000),
            (1000, 1000, 0, 2000),
            (1000, 1000, 300, 1300),
            (1300, 1000, 300, 2300),
            (1299, 1000, 300, 1300),
            (61_000, 60_000, 59_000, 119_000),
        ] {
            assert_eq!(next_eval_time(now, interval, offset), want, "now={now}");
        }
    }

    #[test]
    fn wildcards() {
        for (pattern, text, want) in [
            ("*.yml", "a.yml", true),
            ("*.yml", "a.yaml", false),
            ("rules-?.yml", "rules-1.yml", true),
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ] {
            assert_eq!(wildcard_match(pattern, text), want, "{pattern} {text}");
        }
    }
}
