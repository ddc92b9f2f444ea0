//! One test body, two targets: `strata single` or a [`Cluster`]. Both are
//! reached on the tenant paths (`/insert/<tenant>/prometheus/...`,
//! `/select/<tenant>/prometheus/...`), which `single` serves too.
//!
//! Fault steps that only a cluster has (a storage node stopping, insert's
//! hand-off draining) are no-ops on `single`, so a body reads as the
//! cluster scenario and still checks, on `single`, that what the client
//! was acknowledged is answered exactly once.

use std::path::Path;
use std::time::Duration;

use crate::cluster::{Cluster, ClusterConfig};
use crate::{Response, Single};

pub enum Target {
    Single(Single),
    Cluster(Box<Cluster>),
}

impl Target {
    pub fn single(bin: impl AsRef<Path>) -> Target {
        Target::Single(Single::start(bin))
    }

    /// 3 storage nodes, insert and select, replication factor 2.
    pub fn cluster(bin: impl AsRef<Path>) -> Target {
        Target::Cluster(Box::new(Cluster::start(bin, &ClusterConfig::default())))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Single(_) => "single",
            Target::Cluster(_) => "cluster",
        }
    }

    pub fn cluster_ref(&self) -> Option<&Cluster> {
        match self {
            Target::Single(_) => None,
            Target::Cluster(c) => Some(c),
        }
    }

    pub fn cluster_mut(&mut self) -> Option<&mut Cluster> {
        match self {
            Target::Single(_) => None,
            Target::Cluster(c) => Some(c),
        }
    }

    /// `http://host:port` ingestion is served on.
    pub fn insert_base(&self) -> String {
        match self {
            Target::Single(s) => s.base_url(),
            Target::Cluster(c) => c.insert_url(),
        }
    }

    /// The remote write URL of `tenant` (`<account>[:<project>]`).
    pub fn write_url(&self, tenant: &str) -> String {
        format!(
            "{}/insert/{tenant}/prometheus/api/v1/write",
            self.insert_base()
        )
    }

    /// `POST /insert/<tenant>/prometheus<path>`.
    pub fn insert(&self, tenant: &str, path: &str, body: &str) -> Response {
        let path = format!("/insert/{tenant}/prometheus{path}");
        let body = body.as_bytes().to_vec();
        match self {
            Target::Single(s) => s.post(&path, body, &[]),
            Target::Cluster(c) => c.insert.post(&path, body, &[]),
        }
    }

    /// `GET /select/<tenant>/prometheus<path_and_query>`.
    pub fn select(&self, tenant: &str, path_and_query: &str) -> Response {
        let path = format!("/select/{tenant}/prometheus{path_and_query}");
        match self {
            Target::Single(s) => s.get(&path),
            Target::Cluster(c) => c.select.get(&path),
        }
    }

    /// Storage nodes that can be stopped one at a time (0 for `single`).
    pub fn storage_nodes(&self) -> usize {
        match self {
            Target::Single(_) => 0,
            Target::Cluster(c) => c.storage.len(),
        }
    }

    /// Waits until insert's hand-off queues are empty (cluster only).
    pub fn wait_handoff_drained(&self, timeout: Duration) {
        if let Target::Cluster(c) = self {
            c.wait_handoff_drained(timeout);
        }
    }

    /// Stops the ingestion process gracefully and starts it again on the
    /// same port and state (insert with its hand-off queues; `single` with
    /// its data).
    pub fn restart_insert(&mut self) {
        match self {
            Target::Single(s) => {
                s.sigterm();
                s.wait_exit(Duration::from_secs(30))
                    .expect("single exits within 30s of SIGTERM");
                s.restart();
            }
            Target::Cluster(c) => {
                c.insert.stop();
                c.insert.restart();
            }
        }
    }
}
