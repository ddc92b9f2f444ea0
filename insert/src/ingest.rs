//! The path every protocol takes after parsing: series validation against the
//! limits, the write, and the report of what was stored and what was not.
//!
//! Parsing errors (a body that is not valid for its protocol) reject the whole
//! request before this point. Here a request is judged series by series: a
//! series that breaks a rule (bad name, too many labels, too long a value,
//! duplicate label) is dropped with a counted reason, the others are written,
//! and the [`Report`] says how many of each so the HTTP layer can answer 400
//! naming the first bad series (remote write 2.0 headers and OTLP
//! `partial_success` carry the counts).
//!
//! Rules applied to every series (each failure has a `reason` label):
//! - labels are sorted by name; labels with an empty value are dropped (an
//!   empty value means "no such label" to PromQL); labels listed in
//!   `--insert.replica-label` are dropped (HA pairs land in one series);
//! - `invalid_metric_name`: `__name__` must match `[a-zA-Z_:][a-zA-Z0-9_:]*`;
//! - `invalid_label_name`: names must match `[a-zA-Z_][a-zA-Z0-9_]*`;
//! - `duplicate_label`: a name may appear once;
//! - `too_many_labels`: at most `--insert.max-labels-per-series`;
//! - `label_name_too_long`, `label_value_too_long`: byte lengths;
//! - `no_labels`: nothing left after dropping empty values.
//!
//! Samples too old or too new are rejected by storage (`too_old`, `too_new`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use strata_storage::{
    AddOutcome, Label, LabelRef, METRIC_NAME_LABEL, RejectReason, SeriesRef, SeriesSamples,
    Storage, StorageError, Tenant,
};

use crate::config::Config;
use crate::metrics::Metrics;

/// A request body that parsed: the series to write and their sample count.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub series: Vec<SeriesSamples>,
    pub rows: u64,
}

/// Why a [`RowSink`] did not store a batch (all of it or part of it; see
/// the sink's documentation for what stays stored).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The local engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Too few storage nodes took the rows: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A storage node refused the rows as invalid: a retry fails the same.
    #[error("{0}")]
    Refused(String),
    /// A storage node failed in a way a retry may not fix.
    #[error("{0}")]
    Failed(String),
}

impl SinkError {
    /// Whether the same write may succeed later (the client should retry).
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Storage(e) => e.is_transient(),
            SinkError::Unavailable(_) => true,
            SinkError::Refused(_) | SinkError::Failed(_) => false,
        }
    }
}

/// Where validated rows go: the local engine in `single`, replicas on
/// storage nodes in a cluster.
pub trait RowSink: Send + Sync {
    /// Writes `batch`; returns once it is durable per the sink's guarantee.
    fn write(&self, tenant: Tenant, batch: &[SeriesSamples]) -> Result<AddOutcome, SinkError>;

    /// [`RowSink::write`] of borrowed series; copies them by default.
    fn write_refs(&self, tenant: Tenant, batch: &[SeriesRef<'_>]) -> Result<AddOutcome, SinkError> {
        let owned: Vec<SeriesSamples> = batch
            .iter()
            .map(|s| SeriesSamples {
                labels: s.labels.iter().map(|l| l.to_label()).collect(),
                samples: s.samples.to_vec(),
            })
            .collect();
        self.write(tenant, &owned)
    }
}

impl RowSink for Storage {
    fn write(&self, tenant: Tenant, batch: &[SeriesSamples]) -> Result<AddOutcome, SinkError> {
        Ok(self.add(tenant, batch)?)
    }

    fn write_refs(&self, tenant: Tenant, batch: &[SeriesRef<'_>]) -> Result<AddOutcome, SinkError> {
        Ok(self.add_refs(tenant, batch)?)
    }
}

/// Series whose labels are borrowed from a request body (see
/// [`crate::remotewrite::inplace`]): every series' labels and samples one
/// after the other, with each series' ranges in both.
pub type BorrowedSeries<'a> = crate::remotewrite::inplace::Series<'a>;

/// A label, owned or borrowed: validation works on both.
pub trait LabelPair {
    fn name(&self) -> &str;
    fn value(&self) -> &str;
}

impl LabelPair for Label {
    fn name(&self) -> &str {
        &self.name
    }
    fn value(&self) -> &str {
        &self.value
    }
}

impl LabelPair for LabelRef<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn value(&self) -> &str {
        self.value
    }
}

/// Limits a series must respect to be stored.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_labels_per_series: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
    /// Label names dropped from every series (sorted, for binary search).
    pub replica_labels: Vec<String>,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        let mut replica_labels = config.replica_labels.clone();
        replica_labels.sort();
        replica_labels.dedup();
        Limits {
            max_labels_per_series: config.max_labels_per_series,
            max_label_name_bytes: config.max_label_name_bytes,
            max_label_value_bytes: config.max_label_value_bytes,
            replica_labels,
        }
    }
}

/// Why one series was not stored.
#[derive(Debug, PartialEq)]
pub struct Invalid {
    /// The `reason` label of the rejected-rows counter.
    pub reason: &'static str,
    /// What is wrong, naming the offending label.
    pub detail: String,
}

/// What happened to a request's samples.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Samples stored.
    pub accepted: u64,
    /// Samples not stored, by validation or by storage.
    pub rejected: u64,
    /// Series stored (at least one sample of theirs).
    pub series_accepted: u64,
    /// `reason` -> samples rejected for it.
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// The first rejected series and why: `series up{job="x"}: too many labels (41 > 40)`.
    pub first_rejection: Option<String>,
}

impl Report {
    /// One line for a 400 response: what was stored, what was not, the first reason.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "stored {} of {} samples; rejected {}",
            self.accepted,
            self.accepted + self.rejected,
            self.rejected
        );
        if let Some(first) = &self.first_rejection {
            let _ = write!(s, "; first rejected: {first}");
        }
        s
    }

    fn reject(&mut self, reason: &'static str, rows: u64, describe: impl FnOnce() -> String) {
        if rows == 0 {
            return;
        }
        self.rejected += rows;
        *self.rejected_by_reason.entry(reason).or_default() += rows;
        if self.first_rejection.is_none() {
            self.first_rejection = Some(describe());
        }
    }
}

/// Validation and write for one tenant; shared by every protocol handler.
#[derive(Clone)]
pub struct Pipeline {
    pub sink: Arc<dyn RowSink>,
    pub tenant: Tenant,
    pub limits: Arc<Limits>,
    pub metrics: Metrics,
}

impl Pipeline {
    /// Validates `parsed`, writes the valid series, counts every sample under
    /// `protocol`. Blocks (the write waits for the log): call it from a
    /// blocking task. `Err` only when the write itself failed (nothing of this
    /// request is known to be stored then).
    pub fn ingest(&self, protocol: &'static str, parsed: Parsed) -> Result<Report, SinkError> {
        let mut report = Report::default();
        let mut valid = Vec::with_capacity(parsed.series.len());
        for mut series in parsed.series {
            let rows = series.samples.len() as u64;
            match normalize(&mut series.labels, &self.limits) {
                Ok(()) => valid.push(series),
                Err(invalid) => report.reject(invalid.reason, rows, || {
                    format!(
                        "series {}: {}",
                        format_series(&series.labels),
                        invalid.detail
                    )
                }),
            }
        }
        let rows = valid.iter().map(|s| s.samples.len() as u64).sum();
        let series = valid.len() as u64;
        self.write(protocol, report, series, rows, || {
            self.sink.write(self.tenant, &valid)
        })
    }

    /// [`Pipeline::ingest`] of series borrowed from the request body: the
    /// same rules, the same report, without copying labels.
    pub fn ingest_borrowed(
        &self,
        protocol: &'static str,
        parsed: &BorrowedSeries<'_>,
    ) -> Result<Report, SinkError> {
        let mut report = Report::default();
        let mut labels: Vec<LabelRef<'_>> = Vec::with_capacity(parsed.labels.len());
        let mut spans = Vec::with_capacity(parsed.spans.len());
        let mut scratch: Vec<LabelRef<'_>> = Vec::new();
        let mut rows = 0;
        for (label_range, sample_range) in &parsed.spans {
            scratch.clear();
            scratch.extend_from_slice(&parsed.labels[label_range.clone()]);
            let n = sample_range.len() as u64;
            match normalize(&mut scratch, &self.limits) {
                Ok(()) => {
                    let start = labels.len();
                    labels.extend_from_slice(&scratch);
                    spans.push((start..labels.len(), sample_range.clone()));
                    rows += n;
                }
                Err(invalid) => report.reject(invalid.reason, n, || {
                    format!("series {}: {}", format_series_of(&scratch), invalid.detail)
                }),
            }
        }
        let valid: Vec<SeriesRef<'_>> = spans
            .iter()
            .map(|(l, s)| SeriesRef {
                labels: &labels[l.clone()],
                samples: &parsed.samples[s.clone()],
            })
            .collect();
        self.write(protocol, report, valid.len() as u64, rows, || {
            self.sink.write_refs(self.tenant, &valid)
        })
    }

    /// Writes `series` valid series of `rows` samples with `write` (nothing
    /// when there are none) and completes and counts `report`.
    fn write(
        &self,
        protocol: &'static str,
        mut report: Report,
        series: u64,
        rows: u64,
        write: impl FnOnce() -> Result<AddOutcome, SinkError>,
    ) -> Result<Report, SinkError> {
        if series > 0 {
            let outcome = match write() {
                Ok(outcome) => outcome,
                Err(e) => {
                    self.metrics.rows_rejected(protocol, "storage", rows);
                    self.count(protocol, &report);
                    return Err(e);
                }
            };
            report.accepted = outcome.accepted;
            report.series_accepted = series;
            for (reason, rows) in &outcome.rejected_by_reason {
                let first = outcome.first_rejection.as_ref();
                report.reject(reason.as_str(), *rows, || match first {
                    Some(r) => format!(
                        "series {} at timestamp {}: {}",
                        r.series,
                        r.timestamp,
                        describe_storage_rejection(r.reason)
                    ),
                    None => describe_storage_rejection(*reason).to_string(),
                });
            }
        }
        self.count(protocol, &report);
        Ok(report)
    }

    fn count(&self, protocol: &'static str, report: &Report) {
        self.metrics.rows_stored(protocol, report.accepted);
        for (reason, rows) in &report.rejected_by_reason {
            self.metrics.rows_rejected(protocol, reason, *rows);
        }
    }
}

/// How storage's rejection reasons read in a response.
pub fn describe_storage_rejection(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::TooOld => "too old: before the retention period",
        RejectReason::TooNew => "too new: further in the future than --max-future allows",
        RejectReason::EmptyLabels => "no label with a non-empty value",
    }
}

/// Sorts, drops empty and replica labels, and checks every rule of the
/// module doc.
pub fn normalize<L: LabelPair>(labels: &mut Vec<L>, limits: &Limits) -> Result<(), Invalid> {
    labels.retain(|l| {
        !l.value().is_empty()
            && limits
                .replica_labels
                .binary_search_by(|r| r.as_str().cmp(l.name()))
                .is_err()
    });
    if labels.is_empty() {
        return Err(Invalid {
            reason: "no_labels",
            detail: "no label with a non-empty value".to_string(),
        });
    }
    if !labels.is_sorted_by(|a, b| a.name() <= b.name()) {
        labels.sort_unstable_by(|a, b| a.name().cmp(b.name()));
    }
    if labels.len() > limits.max_labels_per_series {
        return Err(Invalid {
            reason: "too_many_labels",
            detail: format!(
                "too many labels ({} > {}); raise --insert.max-labels-per-series or drop labels",
                labels.len(),
                limits.max_labels_per_series
            ),
        });
    }
    for (i, label) in labels.iter().enumerate() {
        if i > 0 && labels[i - 1].name() == label.name() {
            return Err(Invalid {
                reason: "duplicate_label",
                detail: format!("duplicate label name {:?}", label.name()),
            });
        }
        if label.name().len() > limits.max_label_name_bytes {
            return Err(Invalid {
                reason: "label_name_too_long",
                detail: format!(
                    "label name {:?}... is {} bytes, over --insert.max-label-name-bytes={}",
                    truncate(label.name(), 64),
                    label.name().len(),
                    limits.max_label_name_bytes
                ),
            });
        }
        if label.value().len() > limits.max_label_value_bytes {
            return Err(Invalid {
                reason: "label_value_too_long",
                detail: format!(
                    "value of label {:?} is {} bytes, over --insert.max-label-value-bytes={}",
                    label.name(),
                    label.value().len(),
                    limits.max_label_value_bytes
                ),
            });
        }
        if label.name() == METRIC_NAME_LABEL {
            if !is_valid_metric_name(label.value()) {
                return Err(Invalid {
                    reason: "invalid_metric_name",
                    detail: format!(
                        "invalid metric name {:?}: want [a-zA-Z_:][a-zA-Z0-9_:]*",
                        label.value()
                    ),
                });
            }
        } else if !is_valid_label_name(label.name()) {
            return Err(Invalid {
                reason: "invalid_label_name",
                detail: format!(
                    "invalid label name {:?}: want [a-zA-Z_][a-zA-Z0-9_]*",
                    label.name()
                ),
            });
        }
    }
    Ok(())
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `name{a="1",b="2"}` for messages; long values are shortened.
pub fn format_series(labels: &[Label]) -> String {
    format_series_of(labels)
}

/// [`format_series`] of owned or borrowed labels.
pub fn format_series_of<L: LabelPair>(labels: &[L]) -> String {
    let mut out = String::new();
    if let Some(name) = labels.iter().find(|l| l.name() == METRIC_NAME_LABEL) {
        out.push_str(truncate(name.value(), 200));
    }
    out.push('{');
    let mut first = true;
    for l in labels.iter().filter(|l| l.name() != METRIC_NAME_LABEL) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(
            out,
            "{}={:?}",
            truncate(l.name(), 100),
            truncate(l.value(), 100)
        );
    }
    out.push('}');
    out
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_labels_per_series: 4,
            max_label_name_bytes: 10,
            max_label_value_bytes: 12,
            replica_labels: vec!["replica".to_string()],
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
    }

    #[test]
    fn valid_series_are_sorted_and_trimmed() {
        let mut got = labels(&[
            ("job", "x"),
            ("__name__", "up"),
            ("empty", ""),
            ("replica", "a"),
        ]);
        normalize(&mut got, &limits()).expect("valid");
        assert_eq!(got, labels(&[("__name__", "up"), ("job", "x")]));
    }

    #[test]
    fn each_rule_has_its_reason() {
        let check = |pairs: &[(&str, &str)], reason: &str, detail: &str| {
            let err = normalize(&mut labels(pairs), &limits()).expect_err(reason);
            assert_eq!(err.reason, reason, "{pairs:?}");
            assert!(err.detail.contains(detail), "{}", err.detail);
        };
        check(&[("a", ""), ("replica", "1")], "no_labels", "no label");
        check(
            &[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")],
            "too_many_labels",
            "5 > 4",
        );
        check(&[("a", "1"), ("a", "2")], "duplicate_label", "\"a\"");
        check(&[("abcdefghijk", "1")], "label_name_too_long", "11 bytes");
        check(
            &[("a", "0123456789abc")],
            "label_value_too_long",
            "13 bytes",
        );
        check(&[("__name__", "1up")], "invalid_metric_name", "\"1up\"");
        check(&[("__name__", "a-b")], "invalid_metric_name", "\"a-b\"");
        check(&[("a:b", "1")], "invalid_label_name", "\"a:b\"");
        check(&[("1a", "1")], "invalid_label_name", "\"1a\"");
    }

    #[test]
    fn names_follow_prometheus_rules() {
        for ok in ["up", "_x", "a:b_c9", ":x"] {
            assert!(is_valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a.b", "é", "a b"] {
            assert!(!is_valid_metric_name(bad), "{bad}");
        }
        for ok in ["a", "_", "A_9", "__name__"] {
            assert!(is_valid_label_name(ok), "{ok}");
        }
        for bad in ["", ":a", "a:b", "9", "a-b"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn series_are_formatted_for_messages() {
        assert_eq!(
            format_series(&labels(&[("__name__", "up"), ("job", "x\"y")])),
            r#"up{job="x\"y"}"#
        );
        assert_eq!(format_series(&labels(&[("a", "1")])), r#"{a="1"}"#);
    }

    #[test]
    fn summary_states_counts_and_first_reason() {
        let mut r = Report {
            accepted: 3,
            ..Report::default()
        };
        r.reject("too_many_labels", 2, || "series up{}: too many".into());
        r.reject("too_old", 1, || "never used".into());
        assert_eq!(
            r.summary(),
            "stored 3 of 6 samples; rejected 3; first rejected: series up{}: too many"
        );
        assert_eq!(r.rejected_by_reason.get("too_old"), Some(&1));
    }
}
