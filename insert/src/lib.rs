//! Ingestion: protocol parsers, validation, and writing rows to storage.
//!
//! Each protocol has a parser module that turns a request body into
//! `SeriesSamples` without touching storage, so that a malformed request is
//! rejected whole before anything is written. `ingest` then validates each
//! series against the limits and writes the valid ones through a `RowSink`;
//! `http` holds what every protocol's handler shares (admission gate, body
//! decoding, status codes, counters).

pub mod cluster;
pub mod config;
pub mod decode;
pub mod http;
pub mod influx;
pub mod ingest;
pub mod metrics;
pub mod otlp;
pub mod promtext;
pub mod remotewrite;
mod textparse;
pub mod vmimport;

pub use config::Config;
pub use http::router;
pub use ingest::{RowSink, SinkError};
pub use metrics::Metrics;
