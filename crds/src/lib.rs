//! Strata's Kubernetes custom resources (API group `strata.dev`, version
//! `v1alpha1`, category `strata`): the Rust types the operator reconciles, the
//! OpenAPI schema with validation rules the API server enforces, the same
//! rules checked in Rust ([`validate`]) where no API server runs, and the CRD
//! YAML that `strata crdgen` writes ([`crdgen`]).
//!
//! - [`StrataCluster`]: a storage StatefulSet, insert, select pools and alert.
//! - [`StrataRule`]: Prometheus rule groups; the body of a `PrometheusRule`'s
//!   `spec` is accepted unchanged.

pub mod cluster;
pub mod crdgen;
pub mod rule;
pub mod status;
pub mod validate;

pub use cluster::{StrataCluster, StrataClusterSpec, StrataClusterStatus};
pub use rule::{StrataRule, StrataRuleSpec, StrataRuleStatus};

/// The API group of every Strata custom resource.
pub const GROUP: &str = "strata.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get strata` lists every Strata object.
pub const CATEGORY: &str = "strata";
