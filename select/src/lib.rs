//! Query: PromQL engine, Prometheus HTTP API, and raw export.
//!
//! For now this holds the raw export (`export`) with the pieces it needs:
//! series selectors (`selector`) and time parameters (`time`).

use std::sync::Arc;

use strata_storage::{Storage, Tenant};

pub mod export;
pub mod metrics;
pub mod selector;
pub mod time;

pub use metrics::Metrics;

/// Routes of the query endpoints reading `tenant`.
pub fn router(storage: Arc<Storage>, tenant: Tenant, metrics: Metrics) -> axum::Router {
    export::router(storage, tenant, metrics)
}
