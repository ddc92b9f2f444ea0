//! What a server acknowledged, sample by sample, and the check that an
//! export answers exactly that: every acknowledged sample once, with its
//! value, and nothing else.
//!
//! [`Acked::observer`] plugs into the load generator
//! ([`crate::loadgen::run_observed`]); the bodies of accepted requests are
//! kept compressed and decoded with insert's own remote write parser when
//! the samples are asked for.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::loadgen::Observer;
use crate::loadgen::encode::Body;

/// A label set as an export prints it.
pub type Labels = BTreeMap<String, String>;

/// Collects the bodies the server answered 2xx.
#[derive(Clone, Default)]
pub struct Acked {
    bodies: Arc<Mutex<Vec<bytes::Bytes>>>,
    rejected: Arc<Mutex<u64>>,
}

impl Acked {
    pub fn new() -> Acked {
        Acked::default()
    }

    /// For [`crate::loadgen::run_observed`].
    pub fn observer(&self) -> Observer {
        let acked = self.clone();
        Arc::new(move |body: &Body, accepted: bool| {
            if accepted {
                lock(&acked.bodies).push(body.bytes.clone());
            } else {
                *lock(&acked.rejected) += 1;
            }
        })
    }

    /// Requests that were not acknowledged (non-2xx or no answer).
    pub fn unacknowledged_requests(&self) -> u64 {
        *lock(&self.rejected)
    }

    /// Every acknowledged sample by series, sorted by timestamp. Panics if
    /// one series got two samples at one timestamp (the load generator
    /// never sends that, so the comparison would be meaningless).
    pub fn samples(&self) -> BTreeMap<Labels, Vec<(i64, f64)>> {
        let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for compressed in lock(&self.bodies).iter() {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(compressed)
                .expect("a body the load generator compressed");
            let decoded = strata_insert::remotewrite::parse_v1(&raw)
                .unwrap_or_else(|e| panic!("a load generator body does not parse: {e:?}"));
            for series in decoded.parsed.series {
                let labels: Labels = series
                    .labels
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect();
                out.entry(labels)
                    .or_default()
                    .extend(series.samples.iter().map(|s| (s.timestamp, s.value)));
            }
        }
        for (labels, samples) in &mut out {
            samples.sort_by_key(|(t, _)| *t);
            let before = samples.len();
            samples.dedup_by_key(|(t, _)| *t);
            assert_eq!(
                before,
                samples.len(),
                "{labels:?} was sent twice at one time"
            );
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compares an export body with what was acknowledged; returns the
/// differences, at most `limit` of them, each naming the series and the
/// sample (empty: exactly the acknowledged samples, each once).
pub fn export_differences(
    want: &BTreeMap<Labels, Vec<(i64, f64)>>,
    export: &str,
    limit: usize,
) -> Vec<String> {
    let mut got: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    let mut problems = Vec::new();
    for series in crate::parse_export(export) {
        let entry = got.entry(series.labels.clone()).or_default();
        if !entry.is_empty() {
            problems.push(format!("{:?} exported on two lines", series.labels));
        }
        entry.extend(series.timestamps.into_iter().zip(series.values));
    }
    for (labels, want_samples) in want {
        let Some(got_samples) = got.get(labels) else {
            problems.push(format!(
                "{labels:?}: missing, {} samples acknowledged",
                want_samples.len()
            ));
            continue;
        };
        if got_samples.len() != want_samples.len() {
            problems.push(format!(
                "{labels:?}: {} samples exported, {} acknowledged",
                got_samples.len(),
                want_samples.len()
            ));
        }
        for (g, w) in got_samples.iter().zip(want_samples) {
            let same_value = g.1 == w.1 || (g.1.is_nan() && w.1.is_nan());
            if g.0 != w.0 || !same_value {
                problems.push(format!(
                    "{labels:?}: exported {g:?} where {w:?} was acknowledged"
                ));
                break;
            }
        }
    }
    for labels in got.keys().filter(|l| !want.contains_key(*l)) {
        problems.push(format!("{labels:?}: exported, never acknowledged"));
    }
    problems.truncate(limit);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_differences_name_missing_extra_and_repeated_samples() {
        let series = |job: &str| -> Labels {
            [("__name__", "up"), ("job", job)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let want = BTreeMap::from([
            (series("a"), vec![(1, 1.0), (2, 2.0)]),
            (series("b"), vec![(1, f64::NAN)]),
        ]);
        let line = |job: &str, values: &str, ts: &str| {
            format!(
                r#"{{"metric":{{"__name__":"up","job":"{job}"}},"values":[{values}],"timestamps":[{ts}]}}"#
            )
        };
        let check = |export: String, want_problems: usize| {
            let got = export_differences(&want, &export, 10);
            assert_eq!(got.len(), want_problems, "{export}: {got:?}");
        };
        check(
            format!(
                "{}\n{}\n",
                line("a", "1,2", "1,2"),
                line("b", "\"NaN\"", "1")
            ),
            0,
        );
        check(line("a", "1,2", "1,2"), 1);
        check(
            format!(
                "{}\n{}\n",
                line("a", "1,2,2", "1,2,2"),
                line("b", "\"NaN\"", "1")
            ),
            1,
        );
        check(
            format!(
                "{}\n{}\n",
                line("a", "1,3", "1,2"),
                line("b", "\"NaN\"", "1")
            ),
            1,
        );
        check(
            format!(
                "{}\n{}\n{}\n",
                line("a", "1,2", "1,2"),
                line("b", "\"NaN\"", "1"),
                line("c", "1", "1")
            ),
            1,
        );
    }
}
