//! Where queries read series from: the local storage engine in `single`, a
//! fan-out over storage nodes in a cluster (`cluster`). The PromQL engine and
//! the HTTP API only see this trait, so both modes share every line above it.
//!
//! Every read carries the deadline of the request it serves: a source that
//! waits on other processes stops waiting then and answers what it has,
//! marked `partial`, with warnings naming what is missing. The local engine
//! never waits on anything and ignores it (the engine checks its own
//! deadline between series).
//!
//! Order: [`Source::select`] streams series in an order of the source's
//! choosing (storage order on one engine, key order in a cluster); callers
//! that need another order sort.

use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    fn select(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        deadline: Instant,
    ) -> Result<Selected, StorageError>;

    /// Label sets of series matching every matcher in `range`, sorted, each
    /// once, at most `limit` (0: no limit), without reading samples where
    /// the source can (the default reads them through [`Source::select`]).
    fn series(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<LabelSets, StorageError> {
        let selected = self.select(matchers, range, deadline)?;
        let mut found = std::collections::BTreeSet::new();
        for series in selected.series {
            found.insert(series?.labels);
        }
        let take = if limit == 0 { usize::MAX } else { limit };
        let (mut warnings, late_partial) = selected.late.take();
        warnings.splice(0..0, selected.warnings);
        Ok(LabelSets {
            labels: found.into_iter().take(take).collect(),
            warnings,
            partial: selected.partial || late_partial,
        })
    }

    /// Label names of series matching `matchers` (all series when empty) in
    /// `range`, sorted, at most `limit` (0: no limit).
    fn label_names(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Found<Vec<String>>, StorageError>;

    /// Values of label `name` over series matching `matchers` in `range`,
    /// sorted, at most `limit` (0: no limit).
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Found<Vec<String>>, StorageError>;

    /// Cardinality statistics of the day containing `range.end`.
    fn cardinality(
        &self,
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> Result<Found<Cardinality>, StorageError>;
}

/// The result of [`Source::select`]: the series and warnings about what could
/// not be read (corrupted blocks, missing nodes).
pub struct Selected {
    pub series: SeriesStream,
    pub warnings: Vec<String>,
    /// Some series or samples may be missing: storage nodes that hold them
    /// did not answer (the warnings name them).
    pub partial: bool,
    /// What the source learns while `series` streams: read once it ended.
    pub late: LateNotes,
}

/// Warnings and partiality a source learns only while its series stream,
/// after [`Source::select`] answered (a storage node that fails midway).
/// Complete once the stream ended; a stream given up early may leave them
/// unsaid (its query failed anyway). Clones share the notes.
#[derive(Clone, Debug, Default)]
pub struct LateNotes(Arc<Mutex<(Vec<String>, bool)>>);

impl LateNotes {
    /// Adds `warnings`, and marks the answer partial when `partial`.
    pub fn add(&self, warnings: Vec<String>, partial: bool) {
        let mut notes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        notes.0.extend(warnings);
        notes.1 |= partial;
    }

    /// The warnings and whether the answer is partial, leaving none.
    pub fn take(&self) -> (Vec<String>, bool) {
        let mut notes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut notes.0), std::mem::take(&mut notes.1))
    }
}

/// The result of [`Source::series`].
pub struct LabelSets {
    pub labels: Vec<Vec<Label>>,
    pub warnings: Vec<String>,
    /// As [`Selected::partial`].
    pub partial: bool,
}

/// What a lookup found, with warnings about what could not be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found<T> {
    pub found: T,
    pub warnings: Vec<String>,
    /// As [`Selected::partial`].
    pub partial: bool,
}

impl<T> Found<T> {
    /// A complete answer without warnings.
    pub fn complete(found: T) -> Found<T> {
        Found {
            found,
            warnings: Vec::new(),
            partial: false,
        }
    }
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
    fn select(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        _deadline: Instant,
    ) -> Result<Selected, StorageError> {
        let iter: SeriesIter = self.storage.search(self.tenant, matchers, range)?;
        let warnings = iter.warnings().to_vec();
        Ok(Selected {
            series: Box::new(iter),
            warnings,
            partial: false,
            late: LateNotes::default(),
        })
    }

    fn series(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        _deadline: Instant,
    ) -> Result<LabelSets, StorageError> {
        Ok(LabelSets {
            labels: self.storage.series(self.tenant, matchers, range, limit)?,
            warnings: Vec::new(),
            partial: false,
        })
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        _deadline: Instant,
    ) -> Result<Found<Vec<String>>, StorageError> {
        self.storage
            .label_names(self.tenant, matchers, range, limit)
            .map(Found::complete)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        range: TimeRange,
        limit: usize,
        _deadline: Instant,
    ) -> Result<Found<Vec<String>>, StorageError> {
        self.storage
            .label_values(self.tenant, name, matchers, range, limit)
            .map(Found::complete)
    }

    fn cardinality(
        &self,
        range: TimeRange,
        limit: usize,
        _deadline: Instant,
    ) -> Result<Found<Cardinality>, StorageError> {
        self.storage
            .cardinality(self.tenant, range, limit)
            .map(Found::complete)
    }
}
