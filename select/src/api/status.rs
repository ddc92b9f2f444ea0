//! `status/buildinfo`, `status/tsdb` and `metadata`.
//!
//! `status/buildinfo` reports the Prometheus version whose API this one
//! follows as `version`, because clients pick features by it (Grafana
//! reads it to choose how to query); Strata's own version is in
//! `strataVersion`:
//!
//! ```text
//! {"version":"2.53.0","revision":"","branch":"","buildUser":"","buildDate":"",
//!  "goVersion":"","strataVersion":"0.1.0"}
//! ```
//!
//! `status/tsdb` reports the cardinality of the current day:
//!
//! ```text
//! {"headStats":{"numSeries":508,"numLabelPairs":1234,"chunkCount":0,
//!   "minTime":1700006400000,"maxTime":1700050000000},
//!  "seriesCountByMetricName":[{"name":"up","value":20}],
//!  "labelValueCountByLabelName":[{"name":"__name__","value":211}],
//!  "memoryInBytesByLabelName":[{"name":"__name__","value":8266}],
//!  "seriesCountByLabelValuePair":[{"name":"job=node","value":425}]}
//! ```
//!
//! `memoryInBytesByLabelName` is the total length of the label's distinct
//! values; there are no chunks, so `chunkCount` is 0.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use strata_storage::TimeRange;

use super::json;
use super::query::now_ms;
use super::{Answer, ApiError, ApiState};
use crate::source::Found;

/// The Prometheus release whose HTTP API this one follows.
pub const PROMETHEUS_VERSION: &str = "2.53.0";
/// Default of the `limit` parameter of `status/tsdb`.
const DEFAULT_TSDB_LIMIT: usize = 10;
const MS_PER_DAY: i64 = 86_400_000;

pub async fn buildinfo(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let mut data = String::from("{\"version\":");
    json::push_str(&mut data, PROMETHEUS_VERSION);
    data.push_str(
        ",\"revision\":\"\",\"branch\":\"\",\"buildUser\":\"\",\"buildDate\":\"\",\
         \"goVersion\":\"\",\"strataVersion\":",
    );
    json::push_str(&mut data, env!("CARGO_PKG_VERSION"));
    data.push('}');
    state
        .finish("buildinfo", started, &headers, Ok(Answer::new(data)))
        .await
}

/// No metric metadata is stored yet: a valid request gets `{}`.
pub async fn metadata(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .serve("metadata", query, headers, body, async |params, _| {
            for name in ["limit", "limit_per_metric"] {
                if let Some(text) = params.get(name)
                    && text.parse::<i64>().is_err()
                {
                    return Err(ApiError::bad_data(format!("{name} must be a number")));
                }
            }
            Ok(Answer::new("{}".to_string()))
        })
        .await
}

pub async fn tsdb(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .serve(
            "tsdb_status",
            query,
            headers,
            body,
            async |params, started| {
                let limit = match params.get("limit") {
                    None => DEFAULT_TSDB_LIMIT,
                    Some(text) => match text.parse::<usize>() {
                        Ok(n) if n >= 1 => n,
                        _ => return Err(ApiError::bad_data("limit must be a positive number")),
                    },
                };
                let now = now_ms();
                let source = state.source.clone();
                let deadline = started + state.config.timeout;
                // All entries, to count label pairs and value bytes; top `limit` after.
                let Found {
                    found: cardinality,
                    warnings,
                    partial,
                } = state
                    .blocking(move || {
                        source
                            .cardinality(TimeRange::new(now, now), 0, deadline)
                            .map_err(|e| ApiError::storage(&e))
                    })
                    .await?;

                let mut bytes_by_name: BTreeMap<&str, u64> = BTreeMap::new();
                for (pair, _) in &cardinality.series_by_label_pair {
                    if let Some((name, value)) = pair.split_once('=') {
                        *bytes_by_name.entry(name).or_default() += value.len() as u64;
                    }
                }
                let bytes_by_name: Vec<(String, u64)> = bytes_by_name
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();

                let mut data = String::from("{\"headStats\":{\"numSeries\":");
                data.push_str(&cardinality.total_series.to_string());
                data.push_str(",\"numLabelPairs\":");
                data.push_str(&cardinality.series_by_label_pair.len().to_string());
                data.push_str(",\"chunkCount\":0,\"minTime\":");
                data.push_str(&(now.div_euclid(MS_PER_DAY) * MS_PER_DAY).to_string());
                data.push_str(",\"maxTime\":");
                data.push_str(&now.to_string());
                data.push('}');
                for (field, stats) in [
                    (
                        "seriesCountByMetricName",
                        &cardinality.series_by_metric_name,
                    ),
                    (
                        "labelValueCountByLabelName",
                        &cardinality.values_by_label_name,
                    ),
                    ("memoryInBytesByLabelName", &bytes_by_name),
                    (
                        "seriesCountByLabelValuePair",
                        &cardinality.series_by_label_pair,
                    ),
                ] {
                    data.push_str(",\"");
                    data.push_str(field);
                    data.push_str("\":");
                    push_top(&mut data, stats, limit);
                }
                data.push('}');
                Ok(Answer {
                    data,
                    warnings,
                    partial,
                })
            },
        )
        .await
}

/// `[{"name":..,"value":..}]` of the `limit` largest, largest first, ties by name.
fn push_top(out: &mut String, stats: &[(String, u64)], limit: usize) {
    let mut sorted: Vec<&(String, u64)> = stats.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.push('[');
    for (i, (name, value)) in sorted.into_iter().take(limit).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json::push_str(out, name);
        out.push_str(",\"value\":");
        out.push_str(&value.to_string());
        out.push('}');
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_entries_largest_first() {
        let stats = vec![
            ("b".to_string(), 2),
            ("a".to_string(), 2),
            ("c".to_string(), 5),
        ];
        let mut out = String::new();
        push_top(&mut out, &stats, 2);
        assert_eq!(out, r#"[{"name":"c","value":5},{"name":"a","value":2}]"#);
        out.clear();
        push_top(&mut out, &[], 10);
        assert_eq!(out, "[]");
    }
}
