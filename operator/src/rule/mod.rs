//! `StrataRule`s: validated with the rule loader `strata alert` uses
//! ([`strata_alert::rules::parse_rule_file`]), compiled into rule files, and
//! packed into the rule ConfigMaps of the alert components that select them.
//! A rule object with any invalid rule is not compiled at all; the cluster
//! keeps its last good files (see [`crate::cluster::plan`]).

mod compile;
pub mod reconcile;

pub use compile::{
    Compiled, FILE_SEPARATOR, compile, file_prefix, owns_file, pack, rule_file_text,
};
