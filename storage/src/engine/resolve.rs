//! Label matchers -> series ids over one day of one partition's index.
//!
//! Prometheus semantics: a missing label equals the empty value. Matchers that
//! reject the empty value select series that have the label with a matching
//! value (intersection of postings); matchers that accept it remove the series
//! that have the label with a non-matching value. With no matcher of the
//! first kind, the day's whole series set is the starting point.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rayon::prelude::*;
use roaring::RoaringTreemap;
use tracing::error;

use super::keys;
use crate::cache::Cache;
use crate::mergeset::{MergesetError, Search, Table};
use crate::types::{Label, MatchOp, Matcher, SeriesId, Tenant};

/// Counts index errors met while resolving, to report them once.
#[derive(Default)]
pub struct IndexErrors {
    pub count: u64,
    pub first: Option<String>,
}

impl IndexErrors {
    /// Adds what another search met.
    fn absorb(&mut self, other: IndexErrors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    fn record(&mut self, e: MergesetError) {
        error!(error = %e, "Index block unreadable; results may miss series.");
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(e.to_string());
        }
    }
}

/// Calls `f` with every item starting with `prefix`, in order.
pub fn scan_prefix(
    s: &mut Search,
    prefix: &[u8],
    errs: &mut IndexErrors,
    mut f: impl FnMut(&[u8]),
) {
    s.seek(prefix);
    while let Some(item) = s.next_item() {
        match item {
            Ok(item) if item.starts_with(prefix) => f(item),
            Ok(_) => break,
            Err(e) => errs.record(e),
        }
    }
}

fn ids_with_prefix(s: &mut Search, prefix: &[u8], errs: &mut IndexErrors) -> RoaringTreemap {
    let mut ids = RoaringTreemap::new();
    scan_prefix(s, prefix, errs, |item| {
        if let Some(id) = keys::trailing_id(item) {
            ids.insert(id);
        }
    });
    ids
}

/// Walks the distinct values of label `name`; for values where `want` is true
/// collects the series ids. Skips the ids of unwanted values with one seek.
fn ids_by_value(
    s: &mut Search,
    tenant: Tenant,
    day: i64,
    name: &str,
    errs: &mut IndexErrors,
    want: &dyn Fn(&str) -> bool,
) -> RoaringTreemap {
    let prefix = keys::postings_name_prefix(tenant, day, name);
    let mut ids = RoaringTreemap::new();
    s.seek(&prefix);
    let mut current: Option<(Vec<u8>, bool)> = None;
    loop {
        let skip_to = match s.next_item() {
            None => break,
            Some(Err(e)) => {
                errs.record(e);
                continue;
            }
            Some(Ok(item)) => {
                if !item.starts_with(&prefix) {
                    break;
                }
                let rest = &item[prefix.len()..];
                let value_len = match rest.len().checked_sub(9) {
                    Some(n) => n,
                    None => continue,
                };
                let raw_value = &rest[..value_len];
                let wanted = match &current {
                    Some((v, w)) if v.as_slice() == raw_value => *w,
                    _ => {
                        let w = keys::unescape(raw_value)
                            .and_then(|v| String::from_utf8(v).ok())
                            .is_some_and(|v| want(&v));
                        current = Some((raw_value.to_vec(), w));
                        w
                    }
                };
                if wanted {
                    if let Some(id) = keys::trailing_id(item) {
                        ids.insert(id);
                    }
                    None
                } else {
                    // Past every id of this value: prefix | value | 0x01.
                    let mut next = prefix.clone();
                    next.extend_from_slice(raw_value);
                    next.push(0x01);
                    Some(next)
                }
            }
        };
        if let Some(key) = skip_to {
            s.seek(&key);
        }
    }
    ids
}

/// Literal alternatives of a regex like `a|b|c`, when it is nothing more.
fn literal_alternatives(pattern: &str) -> Option<Vec<String>> {
    const META: &[char] = &[
        '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$', '|',
    ];
    let alts: Vec<String> = pattern.split('|').map(str::to_string).collect();
    alts.iter()
        .all(|a| !a.contains(META) && !a.is_empty())
        .then_some(alts)
}

/// Series of `tenant` on `day` that match every matcher.
pub fn resolve(
    s: &mut Search,
    tenant: Tenant,
    day: i64,
    matchers: &[Matcher],
    errs: &mut IndexErrors,
) -> RoaringTreemap {
    let (mut selecting, excluding): (Vec<&Matcher>, Vec<&Matcher>) =
        matchers.iter().partition(|m| !m.matches_empty());
    // Cheapest first: exact lookups, then literal alternatives, then scans.
    selecting.sort_by_key(|m| match m.op {
        MatchOp::Equal => 0,
        MatchOp::RegexMatch if literal_alternatives(&m.value).is_some() => 1,
        _ => 2,
    });
    let mut result: Option<RoaringTreemap> = None;
    for m in selecting {
        let ids = match m.op {
            MatchOp::Equal => ids_with_prefix(
                s,
                &keys::postings_pair_prefix(tenant, day, &m.name, &m.value),
                errs,
            ),
            MatchOp::RegexMatch if literal_alternatives(&m.value).is_some() => {
                let mut ids = RoaringTreemap::new();
                for v in literal_alternatives(&m.value).unwrap_or_default() {
                    ids |= ids_with_prefix(
                        s,
                        &keys::postings_pair_prefix(tenant, day, &m.name, &v),
                        errs,
                    );
                }
                ids
            }
            _ => ids_by_value(s, tenant, day, &m.name, errs, &|v| m.matches(v)),
        };
        result = Some(match result {
            Some(r) => r & ids,
            None => ids,
        });
        if result.as_ref().is_some_and(|r| r.is_empty()) {
            return RoaringTreemap::new();
        }
    }
    let mut result = match result {
        Some(r) => r,
        None => ids_with_prefix(s, &keys::day_prefix(tenant, day), errs),
    };
    for m in excluding {
        if result.is_empty() {
            break;
        }
        result -= ids_by_value(s, tenant, day, &m.name, errs, &|v| !m.matches(v));
    }
    result
}

/// Distinct label names of a tenant on a day (see `distinct_components`).
pub fn label_names(
    s: &mut Search,
    tenant: Tenant,
    day: i64,
    deleted: &RoaringTreemap,
    errs: &mut IndexErrors,
    out: &mut BTreeSet<String>,
) {
    let prefix = keys::postings_day_prefix(tenant, day);
    // After the day prefix: name | 0x00 | value | 0x00 | id.
    let name_len = |rest: &[u8]| rest.iter().position(|&b| b == 0);
    distinct_components(s, &prefix, deleted, errs, &name_len, out);
}

/// Distinct values of label `name` of a tenant on a day (see `distinct_components`).
pub fn label_values(
    s: &mut Search,
    tenant: Tenant,
    day: i64,
    name: &str,
    deleted: &RoaringTreemap,
    errs: &mut IndexErrors,
    out: &mut BTreeSet<String>,
) {
    let prefix = keys::postings_name_prefix(tenant, day, name);
    // After the name prefix: value | 0x00 | id (8 bytes).
    let value_len = |rest: &[u8]| rest.len().checked_sub(9);
    distinct_components(s, &prefix, deleted, errs, &value_len, out);
}

/// Collects the distinct escaped components that start the posting items under
/// `prefix` (`component_len` tells where one ends). A component counts when one
/// of its items belongs to a live series; then the rest of its items are
/// skipped with one seek (`prefix | component | 0x01` sorts after all of them).
fn distinct_components(
    s: &mut Search,
    prefix: &[u8],
    deleted: &RoaringTreemap,
    errs: &mut IndexErrors,
    component_len: &dyn Fn(&[u8]) -> Option<usize>,
    out: &mut BTreeSet<String>,
) {
    s.seek(prefix);
    loop {
        let next = match s.next_item() {
            None => break,
            Some(Err(e)) => {
                errs.record(e);
                continue;
            }
            Some(Ok(item)) => {
                if !item.starts_with(prefix) {
                    break;
                }
                if keys::trailing_id(item).is_none_or(|id| deleted.contains(id)) {
                    continue;
                }
                let rest = &item[prefix.len()..];
                let Some(len) = component_len(rest) else {
                    continue;
                };
                if let Some(c) =
                    keys::unescape(&rest[..len]).and_then(|c| String::from_utf8(c).ok())
                {
                    out.insert(c);
                }
                let mut next = prefix.to_vec();
                next.extend_from_slice(&rest[..len]);
                next.push(0x01);
                next
            }
        };
        s.seek(&next);
    }
}

/// Adds to `out` the tenants with a live series on a day of `days`: one
/// seek per tenant to its first day item in range, then one seek past it.
pub fn tenants_on_days(
    s: &mut Search,
    days: std::ops::RangeInclusive<i64>,
    deleted: &RoaringTreemap,
    errs: &mut IndexErrors,
    out: &mut BTreeSet<Tenant>,
) {
    if days.is_empty() {
        return;
    }
    let mut tenant_seek = vec![keys::KIND_DAY];
    loop {
        s.seek(&tenant_seek);
        let tenant = match s.next_item() {
            Some(Ok(item)) => match keys::day_item_tenant(item) {
                Some(t) => t,
                None => return,
            },
            Some(Err(e)) => {
                errs.record(e);
                return;
            }
            None => return,
        };
        let first = keys::day_prefix(tenant, *days.start());
        let last = keys::day_prefix(tenant, *days.end());
        s.seek(&first);
        while let Some(item) = s.next_item() {
            match item {
                // Day prefixes of one tenant sort like their days, so an
                // item past the last day's prefix (and not in it) is past the range.
                Ok(item) if item.starts_with(&last) || item < last.as_slice() => {
                    if keys::trailing_id(item).is_some_and(|id| !deleted.contains(id)) {
                        out.insert(tenant);
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => errs.record(e),
            }
        }
        match keys::prefix_end(&first[..9]) {
            Some(next) => tenant_seek = next,
            None => return,
        }
    }
}

/// Labels of a series from its `series` item.
pub fn lookup_series(
    s: &mut Search,
    id: SeriesId,
    errs: &mut IndexErrors,
) -> Option<(Tenant, Vec<Label>)> {
    lookup_series_keyed(s, id, errs).map(|(t, l, _)| (t, l))
}

/// `lookup_series` with a hash of the encoded labels: equal for equal label
/// sets, so series can be grouped by label set without comparing labels.
pub fn lookup_series_keyed(
    s: &mut Search,
    id: SeriesId,
    errs: &mut IndexErrors,
) -> Option<(Tenant, Vec<Label>, u128)> {
    let prefix = keys::series_prefix(id);
    s.seek(&prefix);
    loop {
        match s.next_item()? {
            Ok(item) if item.starts_with(&prefix) => {
                let key = xxhash_rust::xxh3::xxh3_128(keys::series_item_labels(item));
                return keys::parse_series_item(item).map(|(_, t, l)| (t, l, key));
            }
            Ok(_) => return None,
            Err(e) => errs.record(e),
        }
    }
}

/// Series looked up by one search of `lookup_all`: enough that a search's
/// setup is noise, few enough that a query over thousands of series keeps
/// every core busy.
const LOOKUP_RUN: usize = 1024;

/// Label sets (with their `lookup_series_keyed` key) by series id, shared
/// by every partition. An id names one label set for as long as it exists,
/// so entries never go stale; a dashboard's refreshes find its series'
/// label sets here instead of seeking the index for each.
pub type LabelSetCache = Cache<SeriesId, KeyedLabels>;

/// A label set with its `lookup_series_keyed` key, as the cache shares it.
pub type KeyedLabels = Arc<(u128, Vec<Label>)>;

/// `lookup_series_keyed` of every id in `ids` that has a label set, as
/// (id, (key, labels)) in the order of `ids`, through `cache`: shared with
/// the cache, so a caller copies only the label sets it hands out. Many ids are
/// looked up in runs on rayon's pool, one search per run: each lookup is a
/// seek and a parse, and a query over thousands of series would otherwise
/// wait for them on one core.
pub fn lookup_all(
    index: &Table,
    cache: &LabelSetCache,
    ids: &[SeriesId],
    errs: &mut IndexErrors,
) -> Vec<(SeriesId, KeyedLabels)> {
    let run = |ids: &[SeriesId], errs: &mut IndexErrors| {
        let mut s = index.search();
        ids.iter()
            .filter_map(|&id| {
                if let Some(hit) = cache.get(id) {
                    return Some((id, hit));
                }
                let (_, labels, key) = lookup_series_keyed(&mut s, id, errs)?;
                let bytes = std::mem::size_of::<(u128, Vec<Label>)>()
                    + labels
                        .iter()
                        .map(|l| std::mem::size_of::<Label>() + l.name.len() + l.value.len())
                        .sum::<usize>();
                let set = Arc::new((key, labels));
                cache.insert(id, Arc::clone(&set), bytes);
                Some((id, set))
            })
            .collect::<Vec<_>>()
    };
    if ids.len() <= LOOKUP_RUN {
        return run(ids, errs);
    }
    let runs: Vec<(Vec<_>, IndexErrors)> = ids
        .par_chunks(LOOKUP_RUN)
        .map(|ids| {
            let mut errs = IndexErrors::default();
            (run(ids, &mut errs), errs)
        })
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    for (found, run_errs) in runs {
        out.extend(found);
        errs.absorb(run_errs);
    }
    out
}

/// Per-day cardinality: series count per label pair and distinct values per name.
#[derive(Default)]
pub struct DayCardinality {
    pub total_series: u64,
    pub series_by_pair: BTreeMap<(String, String), u64>,
}

pub fn day_cardinality(
    s: &mut Search,
    tenant: Tenant,
    day: i64,
    errs: &mut IndexErrors,
    deleted: &RoaringTreemap,
) -> DayCardinality {
    let mut out = DayCardinality::default();
    let day_ids = ids_with_prefix(s, &keys::day_prefix(tenant, day), errs);
    out.total_series = (day_ids - deleted).len();
    let prefix = keys::postings_day_prefix(tenant, day);
    let mut last: Option<(Vec<u8>, (String, String))> = None;
    scan_prefix(s, &prefix, errs, |item| {
        let rest = &item[prefix.len()..];
        let Some(pair_len) = rest.len().checked_sub(8) else {
            return;
        };
        if keys::trailing_id(item).is_some_and(|id| deleted.contains(id)) {
            return;
        }
        let raw = &rest[..pair_len];
        let key = match &last {
            Some((r, k)) if r.as_slice() == raw => k.clone(),
            _ => match keys::parse_posting_suffix(rest) {
                Some((n, v, _)) => {
                    last = Some((raw.to_vec(), (n.clone(), v.clone())));
                    (n, v)
                }
                None => return,
            },
        };
        *out.series_by_pair.entry(key).or_default() += 1;
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_alternatives_table() {
        assert_eq!(
            literal_alternatives("a|b"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            literal_alternatives("node_cpu"),
            Some(vec!["node_cpu".into()])
        );
        assert_eq!(literal_alternatives("a.*"), None);
        assert_eq!(literal_alternatives("a||b"), None);
        assert_eq!(literal_alternatives(""), None);
        assert_eq!(literal_alternatives("(a|b)"), None);
    }
}
