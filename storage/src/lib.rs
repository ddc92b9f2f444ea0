//! Strata storage engine.
//!
//! A storage instance owns a data directory:
//!
//! ```text
//! <data-dir>/
//!   wal/                 write-ahead log segments (see `wal`)
//!   partitions/YYYY_MM/  one monthly partition
//!     index/             per-partition inverted index (see `mergeset`, `index`)
//!     parts/             immutable data parts (see `part`)
//!   deleted              ids of deleted series
//! ```

pub mod dedup;
pub mod encoding;
pub mod mergeset;
pub mod metrics;
pub mod part;
pub mod types;
pub mod wal;

pub use types::{
    Label, METRIC_NAME_LABEL, MatchOp, Matcher, MatcherError, STALE_NAN_BITS, Sample, SeriesId,
    Tenant, TimeRange, is_stale_nan,
};

pub mod config;
pub mod engine;

pub use config::Config;
pub use engine::{
    AddOutcome, Cardinality, RejectReason, Rejection, SeriesData, SeriesIter, SeriesSamples,
    Storage, StorageError,
};
