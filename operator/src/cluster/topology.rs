//! The topology the operator writes for insert and select: which storage
//! nodes exist, in a stable order, with a version that grows on every
//! change (docs/cluster.md, `storage/src/cluster/topology.rs`).
//!
//! The first topology lists every initial node at once (insert queues
//! writes for nodes still starting). Later, a node is appended only once
//! its pod is ready, so scale-out never routes series to a node that
//! cannot take them. Nodes are never dropped here: scale-in needs data
//! hand-off, which the operator refuses until it exists.

use std::collections::BTreeSet;

use strata_storage::cluster::topology::{NodeState, Topology, TopologyNode};

/// The topology to write, given the one in the ConfigMap (if any), the
/// addresses of ordinals `0..n` and the ordinals whose pods are ready.
/// Returns `current` unchanged (same version) when nothing changes.
pub fn next(current: Option<&Topology>, addrs: &[String], ready: &BTreeSet<i32>) -> Topology {
    let Some(current) = current else {
        return Topology {
            version: 1,
            nodes: addrs
                .iter()
                .map(|addr| TopologyNode {
                    addr: addr.clone(),
                    state: NodeState::Active,
                })
                .collect(),
        };
    };
    let mut next = current.clone();
    for (ordinal, addr) in addrs.iter().enumerate() {
        let listed = next.nodes.iter().any(|n| n.addr == *addr);
        let ordinal = i32::try_from(ordinal).unwrap_or(i32::MAX);
        if !listed && ready.contains(&ordinal) {
            next.nodes.push(TopologyNode {
                addr: addr.clone(),
                state: NodeState::Active,
            });
        }
    }
    if next.nodes != current.nodes {
        next.version = current.version + 1;
    }
    next
}

/// Nodes that count against the storage replicas: all but `removed`.
pub fn live_nodes(topology: &Topology) -> usize {
    topology
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Removed)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s-{i}:8400")).collect()
    }

    fn topo(version: u64, n: usize) -> Topology {
        Topology {
            version,
            nodes: addrs(n)
                .into_iter()
                .map(|addr| TopologyNode {
                    addr,
                    state: NodeState::Active,
                })
                .collect(),
        }
    }

    fn check(current: Option<Topology>, want_addrs: usize, ready: &[i32], want: Topology) {
        let ready: BTreeSet<i32> = ready.iter().copied().collect();
        assert_eq!(
            next(current.as_ref(), &addrs(want_addrs), &ready),
            want,
            "current {current:?}, {want_addrs} wanted, ready {ready:?}"
        );
    }

    #[test]
    fn nodes_join_when_ready() {
        // Creation: every initial node, ready or not.
        check(None, 3, &[], topo(1, 3));
        // Nothing new: same version.
        check(Some(topo(4, 3)), 3, &[0, 1, 2], topo(4, 3));
        // Scale-out 3 -> 5, nothing ready yet: unchanged.
        check(Some(topo(4, 3)), 5, &[0, 1, 2], topo(4, 3));
        // Node 3 ready: appended, version bumped.
        check(Some(topo(4, 3)), 5, &[0, 1, 2, 3], topo(5, 4));
        // Both ready at once: one bump.
        check(Some(topo(4, 3)), 5, &[0, 1, 2, 3, 4], topo(5, 5));
        // Only node 4 ready: it joins alone (order of joining, not ordinal).
        let mut want = topo(5, 3);
        want.nodes.push(TopologyNode {
            addr: "s-4:8400".into(),
            state: NodeState::Active,
        });
        check(Some(topo(4, 3)), 5, &[4], want);
        // Fewer wanted than listed: nodes are never dropped here.
        check(Some(topo(2, 3)), 2, &[0, 1], topo(2, 3));
    }
}
