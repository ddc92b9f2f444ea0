//! HTTP API of rule evaluation, in Prometheus' JSON shape:
//! `GET /api/v1/rules` (groups with their rules, health and alerts; `type=alert`
//! or `type=record` filter) and `GET /api/v1/alerts` (pending and firing alerts).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};

use crate::eval::{GroupRuntime, Manager, RuleRuntime};
use crate::notifier::rfc3339;
use crate::state::{Alert, AlertState, Labels};

/// Routes of the rules API over `manager`'s groups.
pub fn router(manager: Arc<Manager>) -> Router {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .with_state(manager)
}

#[derive(serde::Deserialize)]
struct RulesParams {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn rules(State(manager): State<Arc<Manager>>, Query(params): Query<RulesParams>) -> Response {
    let (want_alerts, want_records) = match params.kind.as_deref() {
        None | Some("") => (true, true),
        Some("alert") => (true, false),
        Some("record") => (false, true),
        Some(other) => {
            return error(&format!("invalid type {other:?}: want alert or record"));
        }
    };
    let groups: Vec<Json> = manager
        .groups()
        .iter()
        .map(|g| group_json(&g.lock(), want_alerts, want_records))
        .collect();
    success(json!({ "groups": groups }))
}

async fn alerts(State(manager): State<Arc<Manager>>) -> Response {
    let mut out = Vec::new();
    for group in manager.groups() {
        let g = group.lock();
        for rule in &g.rules {
            if let Some(state) = &rule.alert {
                out.extend(
                    state
                        .active
                        .values()
                        .filter(|a| a.state != AlertState::Inactive)
                        .map(alert_json),
                );
            }
        }
    }
    success(json!({ "alerts": out }))
}

fn group_json(g: &GroupRuntime, want_alerts: bool, want_records: bool) -> Json {
    let rules: Vec<Json> = g
        .rules
        .iter()
        .filter(|r| {
            if r.rule.is_alert() {
                want_alerts
            } else {
                want_records
            }
        })
        .map(rule_json)
        .collect();
    json!({
        "name": g.name,
        "file": g.file.display().to_string(),
        "rules": rules,
        "interval": g.interval.as_secs_f64(),
        "limit": g.limit,
        "evaluationTime": g.evaluation_seconds,
        "lastEvaluation": time_or_zero(g.last_evaluation),
    })
}

fn rule_json(r: &RuleRuntime) -> Json {
    let mut out = json!({
        "name": r.rule.name(),
        "query": r.rule.expr,
        "labels": r.rule.labels,
        "health": r.health,
        "evaluationTime": r.evaluation_seconds,
        "lastEvaluation": time_or_zero(r.last_evaluation),
    });
    if !r.last_error.is_empty() {
        out["lastError"] = json!(r.last_error);
    }
    match &r.alert {
        Some(state) => {
            out["type"] = json!("alerting");
            out["state"] = json!(state.state().as_str());
            out["duration"] = json!(r.rule.for_.as_secs_f64());
            out["keepFiringFor"] = json!(r.rule.keep_firing_for.as_secs_f64());
            out["annotations"] = json!(r.rule.annotations);
            let alerts: Vec<Json> = state
                .active
                .values()
                .filter(|a| a.state != AlertState::Inactive)
                .map(alert_json)
                .collect();
            out["alerts"] = json!(alerts);
        }
        None => out["type"] = json!("recording"),
    }
    out
}

fn alert_json(a: &Alert) -> Json {
    let mut out = json!({
        "labels": label_map(&a.labels),
        "annotations": label_map(&a.annotations),
        "state": a.state.as_str(),
        "activeAt": rfc3339(a.active_at),
        "value": go_float(a.value),
    });
    if let Some(since) = a.keep_firing_since {
        out["keepFiringSince"] = json!(rfc3339(since));
    }
    out
}

fn label_map(labels: &Labels) -> BTreeMap<&str, &str> {
    labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect()
}

fn time_or_zero(ms: i64) -> String {
    if ms == 0 {
        "0001-01-01T00:00:00Z".into()
    } else {
        rfc3339(ms)
    }
}

/// A value the way Prometheus prints alert values: `%e` with the shortest
/// mantissa, e.g. `1e+00`, `2.5e-01`.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let text = format!("{v:e}");
    let Some((mantissa, exponent)) = text.split_once('e') else {
        return text;
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

fn success(data: Json) -> Response {
    axum::Json(json!({ "status": "success", "data": data })).into_response()
}

fn error(message: &str) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        axum::Json(json!({ "status": "error", "errorType": "bad_data", "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_floats() {
        for (v, want) in [
            (1.0, "1e+00"),
            (0.25, "2.5e-01"),
            (1234.5, "1.2345e+03"),
            (0.0, "0e+00"),
            (-3.0, "-3e+00"),
            (1e100, "1e+100"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_float(v), want);
        }
    }
}
