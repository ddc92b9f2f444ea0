//! The Kubernetes operator: reconciles `StrataCluster` into a storage
//! StatefulSet, insert, select pools and alert (with rolling upgrades one
//! storage pod at a time), and `StrataRule` into validated rule ConfigMaps.
//! Runs only while it holds a `coordination.k8s.io` Lease; serves `/health`
//! and `/metrics` on port 8080.
//!
//! Every decision is a pure function of the spec and what was observed
//! ([`cluster::plan`], [`rule::validate`]); the reconcilers only read the
//! API, call those functions and carry out what they return through
//! [`client::Kube`], the one place API calls go through.

pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod rule;
mod run;

pub use config::Config;
pub use error::{Error, Result};
pub use run::run;

/// The field manager of every server-side apply, and the events' reporter.
pub const FIELD_MANAGER: &str = "strata-operator";
