//! Query: PromQL engine, Prometheus HTTP API, and raw export.
//!
//! - `promql`: the PromQL engine.
//! - `promqltest`: runner of PromQL `.test` files over the real storage.
//! - `source`: where series are read from (local storage, or a cluster
//!   through `cluster`, which fans out to storage nodes and merges).
//! - `export`: raw sample export, with series selectors (`selector`) and
//!   time parameters (`time`).
//! - `api`: the Prometheus HTTP API (query, series, labels, status).
//! - `config`: query limits and their flags.

use std::sync::Arc;

use strata_storage::{Storage, Tenant};

pub mod api;
pub mod cluster;
pub mod config;
pub mod export;
pub mod metrics;
pub mod promql;
pub mod promqltest;
pub mod selector;
pub mod source;
pub mod time;

pub use config::Config;
pub use metrics::Metrics;

/// Routes of the query endpoints reading `tenant`.
pub fn router(
    storage: Arc<Storage>,
    tenant: Tenant,
    config: &Config,
    metrics: Metrics,
) -> axum::Router {
    router_with_gate(
        storage,
        tenant,
        config,
        metrics,
        api::limits::Gate::new(config),
    )
}

/// Like [`router`], with query slots shared with other routers (one gate
/// for every tenant of a process).
pub fn router_with_gate(
    storage: Arc<Storage>,
    tenant: Tenant,
    config: &Config,
    metrics: Metrics,
    gate: api::limits::Gate,
) -> axum::Router {
    let source = Arc::new(source::StorageSource::new(storage.clone(), tenant));
    export::router(storage, tenant, metrics.clone())
        .merge(api::router_with_gate(source, config, metrics, gate))
}
