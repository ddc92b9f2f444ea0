//! Query: PromQL engine, Prometheus HTTP API, and raw export.
//!
//! - `promql`: the PromQL engine.
//! - `promqltest`: runner of PromQL `.test` files over the real storage.
//! - `source`: where series are read from (local storage, later a cluster).
//! - `export`: raw sample export, with series selectors (`selector`) and
//!   time parameters (`time`).

use std::sync::Arc;

use strata_storage::{Storage, Tenant};

pub mod export;
pub mod metrics;
pub mod promql;
pub mod promqltest;
pub mod selector;
pub mod source;
pub mod time;

pub use metrics::Metrics;

/// Routes of the query endpoints reading `tenant`.
pub fn router(storage: Arc<Storage>, tenant: Tenant, metrics: Metrics) -> axum::Router {
    export::router(storage, tenant, metrics)
}
