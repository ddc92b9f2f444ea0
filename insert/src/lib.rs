//! Ingestion: protocol parsers, validation, and writing rows to storage.
//!
//! Each protocol has a parser module that turns a request body into
//! `SeriesSamples` without touching storage, so that a request is validated
//! whole before anything is written, and an HTTP module that maps the outcome
//! to a status code and the counters in `metrics`.

pub mod config;
pub mod decode;
pub mod http;
pub mod metrics;
pub mod vmimport;

pub use config::Config;
pub use http::router;
pub use metrics::Metrics;
