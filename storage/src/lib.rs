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
pub mod part;
pub mod types;
pub mod wal;

pub use types::{
    is_stale_nan, Label, MatchOp, Matcher, MatcherError, Sample, SeriesId, Tenant, TimeRange,
    METRIC_NAME_LABEL, STALE_NAN_BITS,
};
