//! The storage engine: ties the log, the head, partitions, parts and the
//! index together behind one API. (Signatures fixed; body being written.)

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::types::{Label, Matcher, Sample, Tenant, TimeRange};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    #[error(transparent)]
    Index(#[from] crate::mergeset::MergesetError),
    #[error(transparent)]
    Part(#[from] crate::part::PartError),
    #[error("storage i/o on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("series {series} has an empty label set")]
    EmptyLabels { series: String },
    #[error("storage is closed")]
    Closed,
}

/// Samples of one series to add, labels in any order (they are sorted).
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub labels: Vec<Label>,
    pub samples: Vec<Sample>,
}

/// Why a sample was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooOld,
    TooNew,
}

impl RejectReason {
    /// The `reason` label of the rejected-rows counter.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooOld => "too_old",
            RejectReason::TooNew => "too_new",
        }
    }
}

/// The first rejected sample of a batch, for error messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// The series in Prometheus text notation, e.g. `up{job="x"}`.
    pub series: String,
    pub timestamp: i64,
}

/// Result of `Storage::add`: accepted samples are durable when it returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddOutcome {
    pub accepted: u64,
    pub rejected: u64,
    pub first_rejection: Option<Rejection>,
}

/// One series found by a search with its samples in the searched range.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesData {
    pub labels: Vec<Label>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// Cardinality of one tenant over the days of a time range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cardinality {
    pub total_series: u64,
    /// (metric name, series count), largest first.
    pub series_by_metric_name: Vec<(String, u64)>,
    /// (label name, distinct values), largest first.
    pub values_by_label_name: Vec<(String, u64)>,
    /// (`name=value`, series count), largest first.
    pub series_by_label_pair: Vec<(String, u64)>,
}

pub struct Storage {}

/// Streams the series of a search; samples are read when the series is reached.
pub struct SeriesIter {}

impl Iterator for SeriesIter {
    type Item = Result<SeriesData, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        unimplemented!("engine")
    }
}

impl Storage {
    /// Opens the data directory, replaying the log.
    pub fn open(config: Config, registry: &mut Registry) -> Result<Arc<Storage>, StorageError> {
        let _ = (config, registry);
        unimplemented!("engine")
    }

    /// Adds samples; returns when every accepted sample is durable per the sync mode.
    pub fn add(&self, tenant: Tenant, batch: &[SeriesSamples]) -> Result<AddOutcome, StorageError> {
        let _ = (tenant, batch);
        unimplemented!("engine")
    }

    /// Series matching every matcher with samples in `range`.
    pub fn search(
        &self,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
    ) -> Result<SeriesIter, StorageError> {
        let _ = (tenant, matchers, range);
        unimplemented!("engine")
    }

    /// Label names of series matching `matchers` (all series when empty), sorted,
    /// at most `limit` (0: no limit).
    pub fn label_names(
        &self,
        tenant: Tenant,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let _ = (tenant, matchers, range, limit);
        unimplemented!("engine")
    }

    /// Values of label `name` of series matching `matchers`, sorted, at most
    /// `limit` (0: no limit).
    pub fn label_values(
        &self,
        tenant: Tenant,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let _ = (tenant, name, matchers, range, limit);
        unimplemented!("engine")
    }

    /// Cardinality statistics, top `limit` entries of each list.
    pub fn cardinality(
        &self,
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
    ) -> Result<Cardinality, StorageError> {
        let _ = (tenant, range, limit);
        unimplemented!("engine")
    }

    /// Deletes every series matching `matchers` (all of their samples); returns
    /// how many series were deleted. Later writes with the same labels start a new series.
    pub fn delete_series(&self, tenant: Tenant, matchers: &[Matcher]) -> Result<u64, StorageError> {
        let _ = (tenant, matchers);
        unimplemented!("engine")
    }

    /// Writes in-memory rows and index items to disk.
    pub fn flush(&self) -> Result<(), StorageError> {
        unimplemented!("engine")
    }

    /// Merges every partition into as few parts as possible.
    pub fn force_merge(&self) -> Result<(), StorageError> {
        unimplemented!("engine")
    }

    /// Flushes, stops background work and closes the log. Later calls fail with `Closed`.
    pub fn close(&self) -> Result<(), StorageError> {
        unimplemented!("engine")
    }
}
