//! `series`: label sets of the series matching any `match[]` in
//! `[start, end]` (all time by default), sorted, each once:
//!
//! ```text
//! [{"__name__":"up","job":"a"},{"__name__":"up","job":"b"}]
//! ```

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use strata_storage::Label;

use super::json;
use super::params::ParamError;
use super::query::TRUNCATED_WARNING;
use super::{Answer, ApiError, ApiState, ErrorType};
use crate::config::flag;

pub async fn series(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .serve("series", query, headers, body, async |params, started| {
            if params.all("match[]").is_empty() {
                return Err(ParamError::MissingMatch.into());
            }
            let limit = params.limit()?;
            let range = params.range()?;
            let matcher_sets = params.matchers()?;
            let source = state.source.clone();
            let max_series = state.config.max_series;
            let deadline = started + state.config.timeout;
            // Gathered, sorted and rendered on the blocking thread, so the
            // label sets are freed by the thread that cloned them.
            let rendered = state
                .blocking(move || {
                    let mut found: Vec<Vec<Label>> = Vec::new();
                    let mut warnings = Vec::new();
                    let mut partial = false;
                    // One more than the limits allow, to tell "exactly at the
                    // limit" from "over it".
                    let want = match (limit, max_series) {
                        (Some(limit), 0) => limit.saturating_add(1),
                        (None, 0) => 0,
                        (Some(limit), max) => limit.min(max).saturating_add(1),
                        (None, max) => max.saturating_add(1),
                    };
                    for matchers in &matcher_sets {
                        let sets = source
                            .series(matchers, range, want, deadline)
                            .map_err(|e| ApiError::storage(&e))?;
                        warnings.extend(sets.warnings);
                        partial |= sets.partial;
                        found.extend(sets.labels);
                        // Selectors may match the same series.
                        found.sort_unstable();
                        found.dedup();
                        if max_series > 0 && found.len() > max_series {
                            return Err(ApiError::new(
                                ErrorType::Execution,
                                format!(
                                    "the selectors match more than {max_series} series; \
                                 narrow them, shorten the time range, or raise {}",
                                    flag::MAX_SERIES
                                ),
                            ));
                        }
                    }
                    let mut data = String::from("[");
                    for (i, labels) in found.iter().enumerate() {
                        if limit.is_some_and(|limit| i >= limit) {
                            warnings.push(TRUNCATED_WARNING.to_string());
                            break;
                        }
                        if i > 0 {
                            data.push(',');
                        }
                        json::push_labels(&mut data, labels);
                    }
                    data.push(']');
                    Ok((data, warnings, partial))
                })
                .await;
            let (data, warnings, partial) = rendered.inspect_err(|e| {
                if e.kind == ErrorType::Execution {
                    state.metrics.query_rejected("max_series");
                }
            })?;
            Ok(Answer {
                data,
                warnings,
                partial,
            })
        })
        .await
}
