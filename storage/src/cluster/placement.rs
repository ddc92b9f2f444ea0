//! Which storage nodes own a series: rendezvous (highest random weight)
//! hashing of the series key over the topology's active nodes.
//!
//! A series key is a hash of the tenant and the series' sorted labels
//! ([`series_key`]). Each active node gets a weight per key, a hash of the
//! key and of the node's address; the `replication_factor` nodes with the
//! highest weights own the series, highest first. So:
//! - placement depends only on the key and the set of active addresses, not
//!   on their order in the topology nor on the process computing it: insert,
//!   select and a draining storage node agree on owners without talking;
//! - adding a node moves to it only the series for which it now ranks among
//!   the owners (about RF/N of them) and changes no other series; removing
//!   a node changes only the series it owned, each of which gains the next
//!   node in its ranking;
//! - the first owner is a stable "primary" of the series.

use xxhash_rust::xxh3::xxh3_64;

use super::Topology;
use crate::Tenant;

/// Separates label names and values in the hashed bytes: a byte that never
/// occurs in UTF-8, so `{a="bc"}` and `{ab="c"}` hash apart.
const SEPARATOR: u8 = 0xff;

/// The key of a series for placement: a hash of the tenant and the labels,
/// which must be sorted by name (as insert normalizes them). `scratch` is a
/// reusable buffer, so hashing many series allocates once.
pub fn series_key<'a>(
    tenant: Tenant,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    scratch: &mut Vec<u8>,
) -> u64 {
    scratch.clear();
    scratch.extend_from_slice(&tenant.account_id.to_le_bytes());
    scratch.extend_from_slice(&tenant.project_id.to_le_bytes());
    for (name, value) in labels {
        scratch.extend_from_slice(name.as_bytes());
        scratch.push(SEPARATOR);
        scratch.extend_from_slice(value.as_bytes());
        scratch.push(SEPARATOR);
    }
    xxh3_64(scratch)
}

/// A 64-bit finalizer with full avalanche: every input bit flips each
/// output bit with probability about 1/2, so the weights of one key on
/// different nodes behave as independent draws.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Owners of series over one topology's active nodes.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Active node addresses, in topology order.
    nodes: Vec<String>,
    /// Hash of each node's address, the seed of its weights.
    seeds: Vec<u64>,
    /// Owners per series: the replication factor, at most the node count.
    owners: usize,
}

impl Placement {
    /// Placement over `topology`'s active nodes with `replication_factor`
    /// owners per series (fewer when fewer nodes are active; none when
    /// none is).
    pub fn new(topology: &Topology, replication_factor: usize) -> Placement {
        let nodes: Vec<String> = topology.active().map(|n| n.addr.clone()).collect();
        Placement::over(nodes, replication_factor)
    }

    /// Placement over `nodes` (distinct addresses).
    pub fn over(nodes: Vec<String>, replication_factor: usize) -> Placement {
        let seeds = nodes.iter().map(|a| xxh3_64(a.as_bytes())).collect();
        let owners = replication_factor.min(nodes.len());
        Placement {
            nodes,
            seeds,
            owners,
        }
    }

    /// The active nodes, in topology order; [`Placement::owners`] answers
    /// indexes into this.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Owners per series: the replication factor, or the number of active
    /// nodes when that is smaller.
    pub fn owners_per_series(&self) -> usize {
        self.owners
    }

    /// The owners of the series with `key`, as indexes into
    /// [`Placement::nodes`], highest weight first, into `out` (cleared).
    pub fn owners(&self, key: u64, out: &mut Vec<usize>) {
        out.clear();
        if self.owners == 0 {
            return;
        }
        // `out` holds the best nodes so far, highest weight first, and
        // `weights` their weights: an insertion list, since the replication
        // factor is small; on the stack when it is small enough.
        let mut inline = [0u64; 8];
        let mut spilled = Vec::new();
        let weights: &mut [u64] = if self.owners <= inline.len() {
            &mut inline
        } else {
            spilled.resize(self.owners, 0);
            &mut spilled
        };
        for (i, seed) in self.seeds.iter().enumerate() {
            let w = mix(key ^ seed);
            let mut at = out.len();
            while at > 0 && weights[at - 1] < w {
                at -= 1;
            }
            if at == self.owners {
                continue;
            }
            if out.len() < self.owners {
                out.push(i);
            }
            for j in (at + 1..out.len()).rev() {
                weights[j] = weights[j - 1];
                out[j] = out[j - 1];
            }
            weights[at] = w;
            out[at] = i;
        }
    }

    /// [`Placement::owners`] as addresses.
    pub fn owner_addrs(&self, key: u64) -> Vec<&str> {
        let mut out = Vec::with_capacity(self.owners);
        self.owners(key, &mut out);
        out.iter().map(|i| self.nodes[*i].as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::cluster::{NodeState, TopologyNode};

    fn addrs(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("strata-storage-{i}.strata-storage:8400"))
            .collect()
    }

    /// Keys of `count` realistic series of one tenant.
    fn keys(count: usize) -> Vec<u64> {
        let mut scratch = Vec::new();
        (0..count)
            .map(|i| {
                let instance = format!("10.0.{}.{}:9100", i / 250, i % 250);
                let labels = [
                    ("__name__", "node_cpu_seconds_total"),
                    ("instance", instance.as_str()),
                    ("job", "node"),
                ];
                series_key(Tenant::new(1, 0), labels, &mut scratch)
            })
            .collect()
    }

    fn owners_of(p: &Placement, keys: &[u64]) -> Vec<Vec<String>> {
        keys.iter()
            .map(|k| p.owner_addrs(*k).into_iter().map(String::from).collect())
            .collect()
    }

    #[test]
    fn owners_are_distinct_and_bounded_by_the_nodes() {
        let check = |nodes: usize, rf: usize, want: usize| {
            let p = Placement::over(addrs(nodes), rf);
            assert_eq!(p.owners_per_series(), want, "{nodes} nodes, rf {rf}");
            for key in keys(200) {
                let mut owners = Vec::new();
                p.owners(key, &mut owners);
                assert_eq!(owners.len(), want);
                let mut distinct = owners.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), want, "{owners:?}");
            }
        };
        check(0, 1, 0);
        check(1, 1, 1);
        check(1, 3, 1);
        check(3, 2, 2);
        check(5, 3, 3);
        check(2, 5, 2);
    }

    #[test]
    fn owners_come_from_active_nodes_whatever_the_order() {
        let node = |addr: &str, state| TopologyNode {
            addr: addr.to_string(),
            state,
        };
        let forward = Topology {
            version: 1,
            nodes: vec![
                node("a:1", NodeState::Active),
                node("b:1", NodeState::Draining),
                node("c:1", NodeState::Active),
                node("d:1", NodeState::Removed),
                node("e:1", NodeState::Active),
            ],
        };
        let mut backward = forward.clone();
        backward.nodes.reverse();
        let (p, q) = (Placement::new(&forward, 2), Placement::new(&backward, 2));
        assert_eq!(p.nodes(), ["a:1", "c:1", "e:1"]);
        for key in keys(500) {
            let owners = p.owner_addrs(key);
            assert!(owners.iter().all(|a| ["a:1", "c:1", "e:1"].contains(a)));
            assert_eq!(owners, q.owner_addrs(key), "order of the topology matters");
        }
    }

    #[test]
    fn keys_follow_tenant_and_every_label_byte() {
        let key = |tenant, labels: &[(&str, &str)]| {
            series_key(tenant, labels.iter().copied(), &mut Vec::new())
        };
        let base = key(Tenant::new(1, 0), &[("__name__", "up"), ("job", "a")]);
        let mut reused = b"left over".to_vec();
        assert_eq!(
            base,
            series_key(
                Tenant::new(1, 0),
                [("__name__", "up"), ("job", "a")],
                &mut reused
            ),
            "the scratch buffer's content does not matter"
        );
        for other in [
            key(Tenant::new(0, 1), &[("__name__", "up"), ("job", "a")]),
            key(Tenant::new(1, 0), &[("__name__", "up"), ("job", "b")]),
            key(Tenant::new(1, 0), &[("__name__", "up"), ("jo", "ba")]),
            key(Tenant::new(1, 0), &[("__name__", "up")]),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn series_spread_evenly() {
        let keys = keys(100_000);
        for (nodes, rf) in [(3, 1), (3, 2), (7, 1), (10, 3), (16, 2)] {
            let p = Placement::over(addrs(nodes), rf);
            let mut per_node = vec![0usize; nodes];
            let mut primaries = vec![0usize; nodes];
            let mut owners = Vec::new();
            for key in &keys {
                p.owners(*key, &mut owners);
                for i in &owners {
                    per_node[*i] += 1;
                }
                primaries[owners[0]] += 1;
            }
            let even = |counts: &[usize], per: usize, what: &str| {
                let mean = (keys.len() * per) as f64 / nodes as f64;
                for (i, n) in counts.iter().enumerate() {
                    let off = (*n as f64 - mean).abs() / mean;
                    assert!(
                        off < 0.05,
                        "{nodes} nodes rf {rf}: node {i} has {n} {what}, {:.1}% off the mean {mean}",
                        off * 100.0
                    );
                }
            };
            even(&per_node, rf, "series");
            even(&primaries, 1, "primaries");
        }
    }

    /// Fraction of series whose owner sets differ, and a check that every
    /// change is the one rendezvous hashing allows.
    fn moved(before: &[Vec<String>], after: &[Vec<String>], changed_node: &str) -> f64 {
        let mut moved = 0;
        for (b, a) in before.iter().zip(after) {
            if b == a {
                continue;
            }
            moved += 1;
            // Only the changed node enters or leaves an owner set; every
            // other owner stays, in the same relative order.
            let keep = |owners: &Vec<String>| -> Vec<String> {
                owners
                    .iter()
                    .filter(|o| o.as_str() != changed_node)
                    .cloned()
                    .collect()
            };
            let (kb, ka) = (keep(b), keep(a));
            let common = kb.len().min(ka.len());
            assert_eq!(kb[..common], ka[..common], "{b:?} -> {a:?}");
            assert!(
                b.iter().any(|o| o == changed_node) || a.iter().any(|o| o == changed_node),
                "{b:?} -> {a:?} without {changed_node}"
            );
        }
        moved as f64 / before.len() as f64
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Adding or removing one node of N changes the owners of about
        /// RF/N of the series (the share of the node that came or went),
        /// and nothing else.
        #[test]
        fn one_node_more_or_less_moves_only_its_share(
            nodes in 2usize..12,
            rf in 1usize..4,
            removed in 0usize..12,
        ) {
            let keys = keys(20_000);
            let all = addrs(nodes + 1);
            let full = Placement::over(all.clone(), rf);
            let removed = removed % (nodes + 1);
            let mut fewer_addrs = all.clone();
            let gone = fewer_addrs.remove(removed);
            let fewer = Placement::over(fewer_addrs, rf);

            let (a, b) = (owners_of(&full, &keys), owners_of(&fewer, &keys));
            // Adding `gone` to `fewer` and removing it from `full` are the
            // same change seen both ways.
            let share = moved(&b, &a, &gone);
            prop_assert_eq!(share, moved(&a, &b, &gone));
            let want = (rf.min(nodes + 1)) as f64 / (nodes + 1) as f64;
            prop_assert!(
                (share - want).abs() < 0.02 + want * 0.08,
                "{} -> {} nodes, rf {}: {:.3} of series moved, want about {:.3}",
                nodes, nodes + 1, rf, share, want
            );
        }
    }

    #[test]
    fn addresses_not_positions_decide() {
        // The same node set under other names would place differently; the
        // same names in any order place the same.
        let keys = keys(1000);
        let p = Placement::over(addrs(4), 2);
        let mut shuffled = addrs(4);
        shuffled.rotate_left(1);
        let q = Placement::over(shuffled, 2);
        let count = |p: &Placement| {
            let mut c: HashMap<String, usize> = HashMap::new();
            for k in &keys {
                for a in p.owner_addrs(*k) {
                    *c.entry(a.to_string()).or_default() += 1;
                }
            }
            c
        };
        assert_eq!(count(&p), count(&q));
    }
}
