//! `labels` and `label/<name>/values`: sorted names or values of the series
//! matching any `match[]` (all series without one) in `[start, end]`:
//!
//! ```text
//! ["__name__","instance","job"]
//! ```

use std::collections::BTreeSet;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use strata_storage::{Matcher, TimeRange};

use super::json;
use super::params::Params;
use super::query::TRUNCATED_WARNING;
use super::{Answer, ApiError, ApiState};
use crate::source::Found;

pub async fn names(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .serve("labels", query, headers, body, async |params, started| {
            let lookup = Lookup::from_params(&params)?;
            let source = state.source.clone();
            let deadline = started + state.config.timeout;
            state
                .blocking(move || {
                    lookup
                        .union(|matchers, limit| {
                            source.label_names(matchers, lookup.range, limit, deadline)
                        })
                        .map(|items| lookup.answer(items))
                })
                .await
        })
        .await
}

pub async fn values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = async {
        if !is_valid_label_name(&name) {
            return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
        }
        let params = Params::from_request(query.as_deref(), &headers, &body)?;
        let deny = state.denies_partial(&params)?;
        let lookup = Lookup::from_params(&params)?;
        let source = state.source.clone();
        let deadline = started + state.config.timeout;
        let answer = state
            .blocking(move || {
                lookup
                    .union(|matchers, limit| {
                        source.label_values(&name, matchers, lookup.range, limit, deadline)
                    })
                    .map(|items| lookup.answer(items))
            })
            .await?;
        state.check_partial("label_values", deny, answer)
    }
    .await;
    state
        .finish("label_values", started, &headers, result)
        .await
}

/// The common parameters of both lookups.
struct Lookup {
    matcher_sets: Vec<Vec<Matcher>>,
    range: TimeRange,
    limit: Option<usize>,
}

impl Lookup {
    fn from_params(params: &Params) -> Result<Lookup, ApiError> {
        // Prometheus' order of checks: limit, start, end, match[].
        let limit = params.limit()?;
        let range = params.range()?;
        let matcher_sets = params.matchers()?;
        Ok(Lookup {
            matcher_sets,
            range,
            limit,
        })
    }

    /// Runs `lookup` once per matcher set (once with none when there is no
    /// `match[]`) and merges. One more item than the limit is asked for, to
    /// know whether the answer was cut.
    fn union(
        &self,
        lookup: impl Fn(&[Matcher], usize) -> Result<Found<Vec<String>>, strata_storage::StorageError>,
    ) -> Result<Found<BTreeSet<String>>, ApiError> {
        let storage_limit = self.limit.map_or(0, |l| l.saturating_add(1));
        let mut items = Found::complete(BTreeSet::new());
        let mut add = |found: Found<Vec<String>>| {
            items.found.extend(found.found);
            items.warnings.extend(found.warnings);
            items.partial |= found.partial;
        };
        if self.matcher_sets.is_empty() {
            add(lookup(&[], storage_limit).map_err(|e| ApiError::storage(&e))?);
        }
        for matchers in &self.matcher_sets {
            add(lookup(matchers, storage_limit).map_err(|e| ApiError::storage(&e))?);
        }
        Ok(items)
    }

    fn answer(&self, items: Found<BTreeSet<String>>) -> Answer {
        let Found {
            found: items,
            mut warnings,
            partial,
        } = items;
        let mut items: Vec<String> = items.into_iter().collect();
        if let Some(limit) = self.limit
            && items.len() > limit
        {
            items.truncate(limit);
            warnings.push(TRUNCATED_WARNING.to_string());
        }
        let mut data = String::new();
        json::push_str_array(&mut data, &items);
        Answer {
            data,
            warnings,
            partial,
        }
    }
}

/// Prometheus' classic label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names() {
        for (name, want) in [
            ("job", true),
            ("__name__", true),
            ("_a1", true),
            ("A_b", true),
            ("", false),
            ("1a", false),
            ("a-b", false),
            ("a.b", false),
            ("é", false),
        ] {
            assert_eq!(is_valid_label_name(name), want, "{name}");
        }
    }
}
