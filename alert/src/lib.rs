//! Recording and alerting rules with Prometheus semantics: rule files, templates,
//! evaluation, alert state, notification and the HTTP API of `strata alert`.

pub mod api;
pub mod config;
pub mod eval;
pub mod metrics;
pub mod notifier;
pub mod querier;
pub mod rules;
pub mod state;
pub mod template;
pub mod unittest;
pub mod writer;
