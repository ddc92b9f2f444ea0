//! Simulated rule evaluation of one test group: input series in a real
//! storage, rule groups evaluated in order at every evaluation step, alert
//! state kept by the evaluator's own state machine ([`crate::state`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use strata_select::promql::{Engine, QueryOptions, Value};
use strata_select::promqltest::TestStorage;
use strata_select::promqltest::parse::{SeqValue, parse_labels, parse_values};
use strata_storage::{
    Label, METRIC_NAME_LABEL, STALE_NAN_BITS, Sample as StorageSample, SeriesSamples, Tenant,
};

use super::{AlertView, Failure, TestFile, TestGroup};
use crate::rules::{Rule, RuleFile, RuleKind};
use crate::state::{AlertState, AlertingRule, Firing};
use crate::template::{self, Data, QueryFn, Template};

type LabelMap = BTreeMap<String, String>;

struct RuleState<'a> {
    rule: &'a Rule,
    /// Group labels overlaid with the rule's own.
    label_values: LabelMap,
    /// The same parsed as templates (alerting rules only).
    labels: Vec<(String, Template)>,
    annotations: Vec<(String, Template)>,
    /// Alert state (alerting rules only).
    alerts: AlertingRule,
    /// Series written by the previous evaluation, to end the missing ones
    /// with stale markers.
    written: BTreeSet<LabelMap>,
}

struct GroupState<'a> {
    query_offset: i64,
    limit: u64,
    rules: Vec<RuleState<'a>>,
}

/// The storage and engine of one test group.
struct Db {
    test: TestStorage,
    engine: Engine,
    /// Input series, written into `test` step by step.
    input: Vec<SeriesSamples>,
    /// Per input series, how many of its samples are written.
    loaded: Vec<usize>,
    // Dropped last: the storage lives in it.
    _dir: tempfile::TempDir,
}

impl Db {
    /// Writes the input samples up to `t` (inclusive) not written yet. An
    /// evaluation at `t` must not see later samples (a negative offset or
    /// `@` could reach them), and the ones after the last evaluation step
    /// are never loaded, as in the reference runner.
    fn load_until(&mut self, t: i64) -> Result<(), String> {
        let mut batch = Vec::new();
        for (series, loaded) in self.input.iter().zip(self.loaded.iter_mut()) {
            let rest = &series.samples[*loaded..];
            let n = rest.iter().take_while(|s| s.timestamp <= t).count();
            if n > 0 {
                batch.push(SeriesSamples {
                    labels: series.labels.clone(),
                    samples: rest[..n].to_vec(),
                });
                *loaded += n;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let outcome = self
            .test
            .storage
            .add(Tenant::DEFAULT, &batch)
            .map_err(|e| format!("cannot load input series: {e}"))?;
        if outcome.rejected > 0 {
            return Err(format!(
                "storage rejected {} input samples",
                outcome.rejected
            ));
        }
        Ok(())
    }

    fn query(&self, expr: &str, t: i64) -> Result<Vec<(LabelMap, f64)>, String> {
        let result = self
            .engine
            .instant(&self.test.source, expr, t, &QueryOptions::default())
            .map_err(|e| e.to_string())?;
        match result.value {
            Value::Vector(samples) => Ok(samples
                .into_iter()
                .map(|s| (to_map(&s.labels), s.v))
                .collect()),
            Value::Scalar { v, .. } => Ok(vec![(LabelMap::new(), v)]),
            _ => Err("rule result is not a vector or scalar".to_string()),
        }
    }

    fn write(&self, t: i64, series: Vec<(LabelMap, f64)>) -> Result<(), String> {
        if series.is_empty() {
            return Ok(());
        }
        let batch: Vec<SeriesSamples> = series
            .into_iter()
            .map(|(labels, v)| SeriesSamples {
                labels: to_labels(&labels),
                samples: vec![StorageSample::new(t, v)],
            })
            .collect();
        let outcome = self
            .test
            .storage
            .add(Tenant::DEFAULT, &batch)
            .map_err(|e| format!("cannot write rule results: {e}"))?;
        if outcome.rejected > 0 {
            return Err(format!(
                "storage rejected {} rule result samples",
                outcome.rejected
            ));
        }
        Ok(())
    }
}

/// Serves the `query` template function at one evaluation time.
struct TemplateQuery<'a> {
    db: &'a Db,
    t: i64,
}

impl QueryFn for TemplateQuery<'_> {
    fn query(&self, query: &str) -> Result<Vec<template::Sample>, String> {
        Ok(self
            .db
            .query(query, self.t)?
            .into_iter()
            .map(|(labels, value)| template::Sample { labels, value })
            .collect())
    }
}

fn to_map(labels: &[Label]) -> LabelMap {
    labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn to_labels(map: &LabelMap) -> Vec<Label> {
    map.iter().map(|(k, v)| Label::new(k, v)).collect()
}

fn invalid(message: String) -> Vec<Failure> {
    vec![Failure::Invalid(message)]
}

/// Runs one test group; no failures means it passed.
pub(super) fn run_group(
    file: &TestFile,
    rule_files: &[(PathBuf, RuleFile)],
    tg: &TestGroup,
) -> Vec<Failure> {
    let mut db = match open_db(tg) {
        Ok(db) => db,
        Err(message) => return invalid(message),
    };
    let mut groups = match build_groups(file, rule_files) {
        Ok(g) => g,
        Err(message) => return invalid(message),
    };
    for a in &tg.alert_tests {
        if a.alertname.is_empty() {
            return invalid(format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}",
                super::duration_text(a.eval_time)
            ));
        }
    }
    let alert_times: Vec<i64> = tg
        .alert_tests
        .iter()
        .map(|a| a.eval_time)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let max_time = tg
        .alert_tests
        .iter()
        .map(|a| a.eval_time)
        .chain(tg.expr_tests.iter().map(|e| e.eval_time))
        .max()
        .unwrap_or(0);
    let interval = file.evaluation_interval;
    let mut failures = Vec::new();
    let mut next_alert_time = 0;
    let mut ts = 0;
    while ts <= max_time {
        if let Err(message) = db.load_until(ts) {
            failures.push(Failure::Invalid(message));
            return failures;
        }
        let mut eval_failures = Vec::new();
        for group in &mut groups {
            eval_failures.extend(eval_group(&db, tg, group, ts));
        }
        if !eval_failures.is_empty() {
            failures.extend(eval_failures);
            return failures;
        }
        // Alert tests whose time falls in [ts, ts + interval) see this step.
        while next_alert_time < alert_times.len()
            && alert_times[next_alert_time] >= ts
            && alert_times[next_alert_time] < ts + interval
        {
            let t = alert_times[next_alert_time];
            for test in tg.alert_tests.iter().filter(|a| a.eval_time == t) {
                let mut got: Vec<AlertView> = groups
                    .iter()
                    .flat_map(|g| &g.rules)
                    .filter(|r| r.rule.kind == RuleKind::Alert(test.alertname.clone()))
                    .flat_map(|r| r.alerts.active.values())
                    .filter(|a| a.state == AlertState::Firing)
                    .map(|a| AlertView {
                        labels: to_map(&a.labels),
                        annotations: to_map(&a.annotations),
                    })
                    .collect();
                let mut expected: Vec<AlertView> = test
                    .exp_alerts
                    .iter()
                    .map(|e| {
                        let mut labels = e.exp_labels.clone();
                        labels.insert("alertname".to_string(), test.alertname.clone());
                        AlertView {
                            labels,
                            annotations: e.exp_annotations.clone(),
                        }
                    })
                    .collect();
                got.sort();
                expected.sort();
                if got != expected {
                    failures.push(Failure::Alerts {
                        test: tg.name.clone(),
                        alertname: test.alertname.clone(),
                        eval_time: t,
                        expected,
                        got,
                    });
                }
            }
            next_alert_time += 1;
        }
        ts += interval;
    }
    for test in &tg.expr_tests {
        if let Some(f) = check_expr(&db, test) {
            failures.push(f);
        }
    }
    failures
}

fn check_expr(db: &Db, test: &super::ExprTest) -> Option<Failure> {
    let error = |error: String| Failure::ExprError {
        expr: test.expr.clone(),
        eval_time: test.eval_time,
        error,
    };
    let mut got = match db.query(&test.expr, test.eval_time) {
        Ok(got) => got,
        Err(e) => return Some(error(e)),
    };
    let mut expected = Vec::new();
    for s in &test.exp_samples {
        if !s.histogram.is_empty() {
            return Some(error(format!(
                "labels {:?}: native histogram samples are not supported",
                s.labels
            )));
        }
        match parse_labels(&s.labels) {
            Ok((labels, rest)) if rest.trim().is_empty() => {
                expected.push((to_map(&labels), s.value));
            }
            Ok((_, rest)) => {
                return Some(error(format!(
                    "labels {:?}: unexpected {rest:?} after the series",
                    s.labels
                )));
            }
            Err(e) => return Some(error(format!("labels {:?}: {e}", s.labels))),
        }
    }
    let by_labels = |a: &(LabelMap, f64), b: &(LabelMap, f64)| a.0.cmp(&b.0);
    got.sort_by(by_labels);
    expected.sort_by(by_labels);
    // Exact comparison, NaN unequal to everything, like the reference runner.
    let equal = got.len() == expected.len()
        && got
            .iter()
            .zip(&expected)
            .all(|(g, e)| g.0 == e.0 && g.1 == e.1);
    if equal {
        return None;
    }
    Some(Failure::Samples {
        expr: test.expr.clone(),
        eval_time: test.eval_time,
        expected,
        got,
    })
}

fn open_db(tg: &TestGroup) -> Result<Db, String> {
    let dir = tempfile::Builder::new()
        .prefix("strata-alert-test")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let test = TestStorage::open(dir.path().join("storage"))
        .map_err(|e| format!("cannot open the test storage: {e}"))?;
    // A series given twice keeps its last values.
    let mut series: BTreeMap<Vec<Label>, Vec<SeqValue>> = BTreeMap::new();
    for input in &tg.input_series {
        let (labels, rest) = parse_labels(&input.series)
            .map_err(|e| format!("invalid series {:?}: {e}", input.series))?;
        if !rest.trim().is_empty() {
            return Err(format!(
                "invalid series {:?}: unexpected {rest:?}",
                input.series
            ));
        }
        let values = parse_values(&input.values)
            .map_err(|e| format!("invalid values {:?}: {e}", input.values))?;
        series.insert(labels, values);
    }
    let input: Vec<SeriesSamples> = series
        .into_iter()
        .map(|(labels, values)| SeriesSamples {
            labels,
            samples: values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| match v {
                    SeqValue::Float(f) => Some(StorageSample::new(i as i64 * tg.interval, *f)),
                    SeqValue::Omitted => None,
                })
                .collect(),
        })
        .collect();
    Ok(Db {
        test,
        engine: Engine::default(),
        loaded: vec![0; input.len()],
        input,
        _dir: dir,
    })
}

fn build_groups<'a>(
    file: &TestFile,
    rule_files: &'a [(PathBuf, RuleFile)],
) -> Result<Vec<GroupState<'a>>, String> {
    let mut groups = Vec::new();
    for (_, rf) in rule_files {
        for g in &rf.groups {
            let mut rules = Vec::new();
            for rule in &g.rules {
                let mut labels = g.labels.clone();
                labels.extend(rule.labels.clone());
                let parse =
                    |kind: &str, map: &LabelMap| -> Result<Vec<(String, Template)>, String> {
                        map.iter()
                            .map(|(k, v)| {
                                Template::parse(&format!("__alert_{}", rule.name()), v)
                                    .map(|t| (k.clone(), t))
                                    .map_err(|e| format!("rule {}: {kind} {k}: {e}", rule.name()))
                            })
                            .collect()
                    };
                let (templates, annotations) = if rule.is_alert() {
                    (
                        parse("label", &labels)?,
                        parse("annotation", &rule.annotations)?,
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                rules.push(RuleState {
                    rule,
                    label_values: labels,
                    labels: templates,
                    annotations,
                    alerts: {
                        let mut machine =
                            AlertingRule::new(rule.name(), rule.for_, rule.keep_firing_for);
                        // No restore in unit tests: ALERTS series from the start.
                        machine.restored = true;
                        machine
                    },
                    written: BTreeSet::new(),
                });
            }
            // Groups not in group_eval_order sort like the first one listed.
            let order = file.group_order.get(&g.name).copied().unwrap_or(0);
            groups.push((
                order,
                GroupState {
                    query_offset: g.query_offset.map_or(0, |d| d.as_millis() as i64),
                    limit: g.limit,
                    rules,
                },
            ));
        }
    }
    groups.sort_by_key(|(order, _)| *order);
    Ok(groups.into_iter().map(|(_, g)| g).collect())
}

/// Evaluates every rule of `group` at `ts`, in order, writing results.
fn eval_group(db: &Db, tg: &TestGroup, group: &mut GroupState<'_>, ts: i64) -> Vec<Failure> {
    let mut failures = Vec::new();
    let qt = ts - group.query_offset;
    for state in &mut group.rules {
        let result = match &state.rule.kind {
            RuleKind::Record(name) => eval_record(db, state, name, group.limit, qt),
            RuleKind::Alert(name) => eval_alert(db, tg, state, name, group.limit, ts, qt),
        };
        let written = match result {
            Ok(series) => series,
            Err(error) => {
                failures.push(Failure::Eval {
                    rule: state.rule.name().to_string(),
                    time: ts,
                    error,
                });
                continue;
            }
        };
        // Series of the previous step missing now end with a stale marker,
        // so queries stop seeing them at once rather than after the lookback.
        let now: BTreeSet<LabelMap> = written.iter().map(|(l, _)| l.clone()).collect();
        let stale: Vec<(LabelMap, f64)> = state
            .written
            .difference(&now)
            .map(|l| (l.clone(), f64::from_bits(STALE_NAN_BITS)))
            .collect();
        state.written = now;
        if let Err(error) = db.write(qt, written.into_iter().chain(stale).collect()) {
            failures.push(Failure::Eval {
                rule: state.rule.name().to_string(),
                time: ts,
                error,
            });
        }
    }
    failures
}

fn eval_record(
    db: &Db,
    state: &RuleState<'_>,
    name: &str,
    limit: u64,
    qt: i64,
) -> Result<Vec<(LabelMap, f64)>, String> {
    let samples = db.query(&state.rule.expr, qt)?;
    let mut out = Vec::with_capacity(samples.len());
    let mut seen = BTreeSet::new();
    for (mut labels, v) in samples {
        labels.insert(METRIC_NAME_LABEL.to_string(), name.to_string());
        // Recording rule labels are plain strings, not templates.
        for (k, value) in &state.label_values {
            if value.is_empty() {
                labels.remove(k);
            } else {
                labels.insert(k.clone(), value.clone());
            }
        }
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels"
                    .to_string(),
            );
        }
        out.push((labels, v));
    }
    if limit > 0 && out.len() as u64 > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

fn eval_alert(
    db: &Db,
    tg: &TestGroup,
    state: &mut RuleState<'_>,
    name: &str,
    limit: u64,
    ts: i64,
    qt: i64,
) -> Result<Vec<(LabelMap, f64)>, String> {
    let samples = db.query(&state.rule.expr, qt)?;
    let query = TemplateQuery { db, t: qt };
    let mut current: BTreeMap<LabelMap, (LabelMap, f64)> = BTreeMap::new();
    for (metric, v) in samples {
        let data = Data {
            labels: metric.clone(),
            value: v,
            external_labels: tg.external_labels.clone(),
            external_url: tg.external_url.clone(),
        };
        let expand = |t: &Template| {
            t.expand(&data, Some(&query))
                .unwrap_or_else(|e| format!("<error expanding template: {e}>"))
        };
        let mut labels = metric.clone();
        labels.remove(METRIC_NAME_LABEL);
        for (k, t) in &state.labels {
            let value = expand(t);
            if value.is_empty() {
                labels.remove(k);
            } else {
                labels.insert(k.clone(), value);
            }
        }
        labels.insert("alertname".to_string(), name.to_string());
        let annotations: LabelMap = state
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), expand(t)))
            .collect();
        if current.contains_key(&labels) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels"
                    .to_string(),
            );
        }
        current.insert(labels, (annotations, v));
    }
    let firing = current
        .into_iter()
        .map(|(labels, (annotations, value))| Firing {
            labels: to_labels(&labels),
            annotations: to_labels(&annotations),
            value,
        })
        .collect();
    let series = state
        .alerts
        .eval(ts, firing, usize::try_from(limit).unwrap_or(usize::MAX))
        .map_err(|e| e.to_string())?;
    // eval_group writes these at the query time, like recording results.
    Ok(series
        .into_iter()
        .flat_map(|s| {
            let labels = to_map(&s.labels);
            s.samples
                .into_iter()
                .map(move |sample| (labels.clone(), sample.value))
        })
        .collect())
}
