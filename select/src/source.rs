//! Where queries read series from: the local storage engine in `single`, a
//! fan-out over storage nodes in a cluster (later). The PromQL engine and the
//! HTTP API only see this trait, so both modes share every line above it.

use std::sync::Arc;

use strata_storage::{
    Cardinality, Label, Matcher, SeriesData, SeriesIter, Storage, StorageError, Tenant, TimeRange,
};

/// A stream of series with samples in the requested range: labels sorted,
/// samples in time order, each label set at most once. Stale markers are
/// included (the engine needs them).
pub type SeriesStream = Box<dyn Iterator<Item = Result<SeriesData, StorageError>> + Send>;

/// Read access to one tenant's series.
pub trait Source: Send + Sync {
    /// Series matching every matcher that have samples in `range`.
    fn select(&self, matchers: &[Matcher], range: TimeRange) -> Result<Selected, StorageError>;

    /// Label sets of series matching every matcher in `range`, sorted, each
    /// once, at most `limit` (0: no limit), without reading samples where
    /// the source can (the default reads them through [`Source::select`]).
    fn series(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<LabelSets, StorageError> {
        let selected = self.select(matchers, range)?;
        let mut found = std::collections::BTreeSet::new();
        for series in selected.series {
            found.insert(series?.labels);
        }
        let take = if limit == 0 { usize::MAX } else { limit };
        Ok(LabelSets {
            labels: found.into_iter().take(take).collect(),
            warnings: selected.warnings,
        })
    }

    /// Label names of series matching `matchers` (all series when empty) in `range`.
    fn label_names(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StorageError>;

    /// Values of label `name` over series matching `matchers` in `range`.
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StorageError>;

    /// Cardinality statistics of the day containing `range.end`.
    fn cardinality(&self, range: TimeRange, limit: usize) -> Result<Cardinality, StorageError>;
}

/// The result of [`Source::select`]: the series and warnings about what could
/// not be read (corrupted blocks, missing nodes).
pub struct Selected {
    pub series: SeriesStream,
    pub warnings: Vec<String>,
}

/// The result of [`Source::series`].
pub struct LabelSets {
    pub labels: Vec<Vec<Label>>,
    pub warnings: Vec<String>,
}

/// A [`Source`] over the local storage engine.
#[derive(Clone)]
pub struct StorageSource {
    pub storage: Arc<Storage>,
    pub tenant: Tenant,
}

impl StorageSource {
    pub fn new(storage: Arc<Storage>, tenant: Tenant) -> StorageSource {
        StorageSource { storage, tenant }
    }
}

impl Source for StorageSource {
    fn select(&self, matchers: &[Matcher], range: TimeRange) -> Result<Selected, StorageError> {
        let iter: SeriesIter = self.storage.search(self.tenant, matchers, range)?;
        let warnings = iter.warnings().to_vec();
        Ok(Selected {
            series: Box::new(iter),
            warnings,
        })
    }

    fn series(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<LabelSets, StorageError> {
        Ok(LabelSets {
            labels: self.storage.series(self.tenant, matchers, range, limit)?,
            warnings: Vec::new(),
        })
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.storage
            .label_names(self.tenant, matchers, range, limit)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.storage
            .label_values(self.tenant, name, matchers, range, limit)
    }

    fn cardinality(&self, range: TimeRange, limit: usize) -> Result<Cardinality, StorageError> {
        self.storage.cardinality(self.tenant, range, limit)
    }
}
