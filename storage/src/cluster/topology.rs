//! The topology: the ordered, versioned list of storage nodes that insert
//! places series on and select reads from.
//!
//! It comes from `--storage-node` flags (every node `active`, version 0) or
//! from a YAML file (the operator writes it into a ConfigMap) that is
//! watched and reloaded without a restart:
//!
//! ```yaml
//! version: 7            # grows with every change; a lower one is ignored
//! nodes:
//!   - addr: strata-storage-0.strata-storage:8400
//!     state: active     # active | draining | removed
//!   - addr: strata-storage-1.strata-storage:8400
//!     state: draining
//! ```
//!
//! `active`: takes new series and serves reads. `draining`: takes no new
//! series, still serves reads while it hands its series over. `removed`:
//! neither (kept in the list so that its place in the order is stable).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// State of one node in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Active,
    Draining,
    Removed,
}

/// One storage node: its RPC address and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyNode {
    /// `host:port` of the node's RPC listener.
    pub addr: String,
    pub state: NodeState,
}

/// The ordered list of storage nodes and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub version: u64,
    pub nodes: Vec<TopologyNode>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read topology file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse topology file {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("invalid topology: {0}")]
    Invalid(String),
}

impl Topology {
    /// Every address `active`, in the given order, version 0.
    pub fn from_addrs(addrs: &[String]) -> Result<Topology, TopologyError> {
        let topology = Topology {
            version: 0,
            nodes: addrs
                .iter()
                .map(|addr| TopologyNode {
                    addr: addr.clone(),
                    state: NodeState::Active,
                })
                .collect(),
        };
        topology.validate()?;
        Ok(topology)
    }

    /// Parses the YAML form; `path` names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Topology, TopologyError> {
        let topology: Topology =
            serde_saphyr::from_str(text).map_err(|e| TopologyError::Parse {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        topology.validate()?;
        Ok(topology)
    }

    /// Reads and parses a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Topology::parse(&text, path)
    }

    /// At least one node, no address twice, no empty address.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.nodes.is_empty() {
            return Err(TopologyError::Invalid("no storage nodes".to_string()));
        }
        let mut seen = std::collections::HashSet::new();
        for node in &self.nodes {
            if node.addr.trim().is_empty() {
                return Err(TopologyError::Invalid("empty node address".to_string()));
            }
            if !seen.insert(node.addr.as_str()) {
                return Err(TopologyError::Invalid(format!(
                    "node {} is listed twice",
                    node.addr
                )));
            }
        }
        Ok(())
    }

    /// Nodes that take new series, in topology order.
    pub fn active(&self) -> impl Iterator<Item = &TopologyNode> {
        self.nodes.iter().filter(|n| n.state == NodeState::Active)
    }

    /// Nodes that serve reads (every node not `removed`), in topology order.
    pub fn readable(&self) -> impl Iterator<Item = &TopologyNode> {
        self.nodes.iter().filter(|n| n.state != NodeState::Removed)
    }
}

/// Where the topology comes from: fixed, or a file that is watched.
#[derive(Clone, Debug)]
pub enum TopologySource {
    Fixed(Topology),
    File(PathBuf),
}

impl TopologySource {
    /// From the `--storage-node` and `--topology-file` flags: exactly one of
    /// them must be given.
    pub fn from_flags(
        storage_nodes: &[String],
        topology_file: Option<&Path>,
    ) -> Result<TopologySource, TopologyError> {
        match (storage_nodes.is_empty(), topology_file) {
            (false, None) => Ok(TopologySource::Fixed(Topology::from_addrs(storage_nodes)?)),
            (true, Some(path)) => Ok(TopologySource::File(path.to_path_buf())),
            (true, None) => Err(TopologyError::Invalid(
                "give the storage nodes with --storage-node or --topology-file".to_string(),
            )),
            (false, Some(_)) => Err(TopologyError::Invalid(
                "--storage-node and --topology-file exclude each other".to_string(),
            )),
        }
    }

    /// The current topology and a receiver of every later version. A file
    /// is re-read every `poll` when its modification time or size changes;
    /// a file that cannot be read or parsed, or whose version is lower than
    /// the current one, is logged and ignored (the last good topology stays).
    /// The watch ends when every receiver is dropped.
    pub fn watch(self, poll: Duration) -> Result<watch::Receiver<Arc<Topology>>, TopologyError> {
        match self {
            TopologySource::Fixed(topology) => {
                let (tx, rx) = watch::channel(Arc::new(topology));
                // Keep the sender alive with the receivers: a closed channel
                // would read as "topology gone".
                tokio::spawn(async move { tx.closed().await });
                Ok(rx)
            }
            TopologySource::File(path) => {
                // Stamp before loading: a change in between is read again.
                let stamp = file_stamp(&path);
                let initial = Topology::load(&path)?;
                let (tx, rx) = watch::channel(Arc::new(initial));
                tokio::spawn(watch_file(path, stamp, poll, tx));
                Ok(rx)
            }
        }
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

async fn watch_file(
    path: PathBuf,
    mut stamp: Option<(SystemTime, u64)>,
    poll: Duration,
    tx: watch::Sender<Arc<Topology>>,
) {
    let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = ticker.tick() => {}
        }
        let now = file_stamp(&path);
        if now == stamp {
            continue;
        }
        stamp = now;
        match Topology::load(&path) {
            Ok(next) => {
                let current = tx.borrow().version;
                if next.version < current {
                    tracing::warn!(path = %path.display(), current, found = next.version,
                        "Topology file has an older version; keeping the current topology.");
                } else if *tx.borrow().as_ref() != next {
                    tracing::info!(path = %path.display(), version = next.version,
                        nodes = next.nodes.len(), "Topology reloaded.");
                    let _ = tx.send(Arc::new(next));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot reload the topology; keeping the current one.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invalid(text: &str, want: &str) {
        let err = Topology::parse(text, Path::new("t.yaml")).expect_err(text);
        assert!(
            err.to_string().contains(want),
            "{err} does not contain {want}"
        );
    }

    #[test]
    fn parses_states_in_order() {
        let t = Topology::parse(
            "version: 3\nnodes:\n  - {addr: a:1, state: active}\n  - {addr: b:1, state: draining}\n  - {addr: c:1, state: removed}\n",
            Path::new("t.yaml"),
        )
        .expect("valid");
        assert_eq!(t.version, 3);
        let active: Vec<&str> = t.active().map(|n| n.addr.as_str()).collect();
        let readable: Vec<&str> = t.readable().map(|n| n.addr.as_str()).collect();
        assert_eq!(active, ["a:1"]);
        assert_eq!(readable, ["a:1", "b:1"]);
    }

    #[test]
    fn rejects_bad_files() {
        check_invalid("nodes: []\n", "no storage nodes");
        check_invalid(
            "nodes:\n  - {addr: a:1, state: active}\n  - {addr: a:1, state: active}\n",
            "listed twice",
        );
        check_invalid("nodes:\n  - {addr: a:1, state: sleeping}\n", "t.yaml");
        check_invalid(
            "nodes:\n  - {addr: a:1, state: active, weight: 2}\n",
            "t.yaml",
        );
    }

    #[test]
    fn flags_need_exactly_one_source() {
        assert!(TopologySource::from_flags(&[], None).is_err());
        assert!(TopologySource::from_flags(&["a:1".into()], Some(Path::new("t"))).is_err());
        assert!(matches!(
            TopologySource::from_flags(&["a:1".into()], None),
            Ok(TopologySource::Fixed(_))
        ));
    }

    #[tokio::test]
    async fn file_changes_are_picked_up_and_older_versions_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("topology.yaml");
        std::fs::write(
            &path,
            "version: 1\nnodes:\n  - {addr: a:1, state: active}\n",
        )
        .expect("write");
        let mut rx = TopologySource::File(path.clone())
            .watch(Duration::from_millis(20))
            .expect("watch");
        assert_eq!(rx.borrow().version, 1);

        std::fs::write(&path, "version: 2\nnodes:\n  - {addr: a:1, state: draining}\n  - {addr: b:1, state: active}\n").expect("write");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("reload in time")
            .expect("open");
        assert_eq!(rx.borrow().version, 2);

        std::fs::write(
            &path,
            "version: 1\nnodes:\n  - {addr: z:1, state: active}\n",
        )
        .expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rx.borrow().version, 2, "an older version is ignored");
        std::fs::write(&path, "not: [valid").expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            rx.borrow().version,
            2,
            "older or broken files keep the current topology"
        );
    }
}
