//! Strata storage engine.
//!
//! A storage instance owns a data directory:
//!
//! ```text
//! <data-dir>/
//!   lock                 held while open (one process per directory)
//!   deleted              ids of deleted series (`engine::tombstones`)
//!   wal/                 write-ahead log segments (`wal`)
//!   partitions/YYYY_MM/  one monthly partition (`engine::partition`)
//!     index/             the partition's inverted index (`mergeset`, items in `engine::keys`)
//!     parts/             immutable data parts (`part`, blocks in `encoding`)
//!     parts.json         manifest of the published parts
//! ```
//!
//! `Storage` (in `engine`) is the entry point; `docs/storage.md` is the map.

mod cache;
pub mod cluster;
pub mod config;
pub mod dedup;
pub mod encoding;
pub mod engine;
pub mod mergeset;
pub mod metrics;
pub mod part;
pub mod rpc;
pub mod types;
pub mod wal;

pub use cache::CacheCounts;
pub use config::Config;
pub use engine::{
    AddOutcome, Cardinality, KeyedSeries, RejectReason, Rejection, SeriesData, SeriesIter,
    SeriesRef, SeriesSamples, Storage, StorageError, labels_key,
};
pub use types::{
    Label, LabelRef, METRIC_NAME_LABEL, MatchOp, Matcher, MatcherError, STALE_NAN_BITS, Sample,
    SeriesId, Tenant, TimeRange, is_stale_nan,
};
