//! Merging what several storage nodes answered into one answer.
//!
//! Series: every node answers an ordered search (`Node::search_ordered`)
//! ascending by `labels_key` (ties, hash collisions, by label set), the
//! same order on every node, so [`KeyMerge`] merges the nodes' streams as
//! they come, k-way: the series with the smallest key among the nodes'
//! next ones goes out as soon as every node still streaming has shown its
//! next one, so a series waits for no node that is past it. A label set
//! several nodes answer (replicas, or a series that moved between nodes)
//! becomes one series whose samples are the union by timestamp: a sample
//! every replica holds counts once, a sample one replica lacks is taken
//! from the other. When two nodes hold different values at one timestamp
//! (a replica that took a different write), the greater in
//! `f64::total_cmp` order is kept, the rule the storage engine applies to
//! duplicate samples of one series, so a cluster answers what one engine
//! holding every write would; such timestamps are counted as conflicts.
//!
//! Memory is bounded by the nodes' batches in flight, not by the data: the
//! merger holds the batch each node is at, and nodes send a few batches
//! ahead at most (credit).
//!
//! Label sets, names and values: a sorted union, the limit applied after
//! the union (each node applied it to its own sorted list, so the union's
//! first `limit` entries are all there). Cardinality: see [`cardinality`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use strata_storage::cluster::KeyedSeries;
use strata_storage::{Cardinality, SeriesData};

/// What merging found, for self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Samples dropped because another node had the same timestamp.
    pub duplicates: u64,
    /// Timestamps at which nodes held different values.
    pub conflicts: u64,
}

impl std::ops::AddAssign for MergeStats {
    fn add_assign(&mut self, other: MergeStats) {
        self.duplicates += other.duplicates;
        self.conflicts += other.conflicts;
    }
}

/// A node's stream broke the order every node must answer in: its series
/// cannot be merged with the others'.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the node answered series out of key order (key {key:032x} after {after:032x})")]
pub struct OutOfOrder {
    pub key: u128,
    pub after: u128,
}

/// What [`KeyMerge::step`] found.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// The next merged series.
    Series(SeriesData),
    /// Node `i` (by its place in [`KeyMerge::new`]) has nothing queued and
    /// has not ended: feed it its next batch ([`KeyMerge::feed`]) or end it
    /// ([`KeyMerge::end`]), then step again.
    Feed(usize),
    /// Every node ended and every series went out.
    Done,
}

/// One node's stream as the merger sees it.
#[derive(Default)]
struct Queue {
    /// Series received and not merged yet, in order.
    series: VecDeque<KeyedSeries>,
    /// No more batches come: the stream ended or failed.
    ended: bool,
    /// Key of the last series received, to check the order.
    last: Option<u128>,
}

/// Merges ordered node streams into one stream of series, each label set
/// once, replicas unioned as they meet (see the module doc).
pub struct KeyMerge {
    nodes: Vec<Queue>,
    stats: MergeStats,
}

/// The order of ordered searches: by key, then (hash collisions) by labels.
fn order(a: &KeyedSeries, b: &KeyedSeries) -> Ordering {
    a.key()
        .cmp(&b.key())
        .then_with(|| a.labels().cmp(b.labels()))
}

impl KeyMerge {
    /// A merge of `nodes` streams, none fed yet.
    pub fn new(nodes: usize) -> KeyMerge {
        KeyMerge {
            nodes: (0..nodes).map(|_| Queue::default()).collect(),
            stats: MergeStats::default(),
        }
    }

    /// Queues the next batch of node `node`. A batch out of order is
    /// refused whole (the node is then to be ended as failed).
    pub fn feed(&mut self, node: usize, batch: Vec<KeyedSeries>) -> Result<(), OutOfOrder> {
        let queue = &mut self.nodes[node];
        let mut last = queue.last;
        for s in &batch {
            if let Some(after) = last
                && s.key() < after
            {
                return Err(OutOfOrder {
                    key: s.key(),
                    after,
                });
            }
            last = Some(s.key());
        }
        queue.last = last;
        if queue.series.is_empty() {
            queue.series = VecDeque::from(batch);
        } else {
            queue.series.extend(batch);
        }
        Ok(())
    }

    /// Node `node` sends no more: it finished, or failed (what it sent
    /// still merges: those are real data).
    pub fn end(&mut self, node: usize) {
        self.nodes[node].ended = true;
    }

    /// The next merged series, or which node must be fed first.
    pub fn step(&mut self) -> Step {
        // The smallest key first (ties: the first node has it).
        let mut first: Option<(usize, u128)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            match node.series.front() {
                Some(head) if first.is_none_or(|(_, key)| head.key() < key) => {
                    first = Some((i, head.key()));
                }
                Some(_) => {}
                None if !node.ended => return Step::Feed(i),
                None => {}
            }
        }
        let Some((mut first, key)) = first else {
            return Step::Done;
        };
        // Another label set under the same key (a hash collision, which
        // practically never happens) may sort before it.
        for i in first + 1..self.nodes.len() {
            if let (Some(head), Some(held)) = (
                self.nodes[i].series.front(),
                self.nodes[first].series.front(),
            ) && head.key() == key
                && head.labels() != held.labels()
                && order(head, held) == Ordering::Less
            {
                first = i;
            }
        }
        let Some(head) = self.nodes[first].series.pop_front() else {
            return Step::Done;
        };
        let mut series = head.into_series();
        // The same label set from the other nodes: each answers it at most
        // once, as its next series. Their labels go uncopied.
        for node in &mut self.nodes {
            let same = node
                .series
                .front()
                .is_some_and(|s| s.key() == key && s.labels() == series.labels.as_slice());
            if same && let Some(replica) = node.series.pop_front() {
                union(
                    &mut series,
                    replica.timestamps,
                    replica.values,
                    &mut self.stats,
                );
            }
        }
        Step::Series(series)
    }

    /// What merging found so far.
    pub fn stats(&self) -> MergeStats {
        self.stats
    }
}

/// Merges `timestamps`/`values` (sorted, each timestamp once) into `held`
/// (the same), keeping each timestamp once.
fn union(held: &mut SeriesData, timestamps: Vec<i64>, values: Vec<f64>, stats: &mut MergeStats) {
    if held.timestamps == timestamps {
        // Replicas that both took every write: the common case.
        stats.duplicates += timestamps.len() as u64;
        for (have, other) in held.values.iter_mut().zip(values) {
            resolve(have, other, stats);
        }
        return;
    }
    if timestamps.is_empty() {
        return;
    }
    if held.timestamps.is_empty() {
        held.timestamps = timestamps;
        held.values = values;
        return;
    }
    let (held_first, held_last) = (
        held.timestamps[0],
        held.timestamps[held.timestamps.len() - 1],
    );
    if held_last < timestamps[0] {
        held.timestamps.extend(timestamps);
        held.values.extend(values);
        return;
    }
    if timestamps[timestamps.len() - 1] < held_first {
        let (mut ts, mut vs) = (timestamps, values);
        ts.append(&mut held.timestamps);
        vs.append(&mut held.values);
        held.timestamps = ts;
        held.values = vs;
        return;
    }
    let mut ts = Vec::with_capacity(held.timestamps.len().max(timestamps.len()));
    let mut vs = Vec::with_capacity(ts.capacity());
    let (mut i, mut j) = (0, 0);
    while i < held.timestamps.len() && j < timestamps.len() {
        match held.timestamps[i].cmp(&timestamps[j]) {
            Ordering::Less => {
                ts.push(held.timestamps[i]);
                vs.push(held.values[i]);
                i += 1;
            }
            Ordering::Greater => {
                ts.push(timestamps[j]);
                vs.push(values[j]);
                j += 1;
            }
            Ordering::Equal => {
                let mut v = held.values[i];
                resolve(&mut v, values[j], stats);
                stats.duplicates += 1;
                ts.push(timestamps[j]);
                vs.push(v);
                i += 1;
                j += 1;
            }
        }
    }
    ts.extend_from_slice(&held.timestamps[i..]);
    vs.extend_from_slice(&held.values[i..]);
    ts.extend_from_slice(&timestamps[j..]);
    vs.extend_from_slice(&values[j..]);
    held.timestamps = ts;
    held.values = vs;
}

/// Two nodes' values at one timestamp: the greater in `total_cmp` order
/// wins (the engine's rule for duplicate samples: a staleness marker beats
/// every number).
fn resolve(have: &mut f64, other: f64, stats: &mut MergeStats) {
    if have.to_bits() != other.to_bits() {
        stats.conflicts += 1;
        if other.total_cmp(have) == Ordering::Greater {
            *have = other;
        }
    }
}

/// The sorted union of sorted lists, at most `limit` (0: no limit). Nodes
/// answer sorted lists, so this is a merge of a few sorted runs; a list
/// that is not sorted is sorted first.
pub fn union_sorted<T: Ord>(lists: impl IntoIterator<Item = Vec<T>>, limit: usize) -> Vec<T> {
    let take = if limit == 0 { usize::MAX } else { limit };
    let mut runs: Vec<std::vec::IntoIter<T>> = lists
        .into_iter()
        .map(|mut list| {
            if !list.is_sorted() {
                list.sort();
            }
            list.into_iter()
        })
        .collect();
    let mut heads: Vec<Option<T>> = runs.iter_mut().map(Iterator::next).collect();
    let mut out = Vec::new();
    while out.len() < take {
        // Few runs (one per node): a scan for the smallest head beats a heap.
        let mut smallest: Option<usize> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some(head) = head
                && smallest.is_none_or(|s| heads[s].as_ref().is_some_and(|h| head < h))
            {
                smallest = Some(i);
            }
        }
        let Some(s) = smallest else {
            break;
        };
        let Some(item) = heads[s].take() else {
            break;
        };
        heads[s] = runs[s].next();
        for (head, run) in heads.iter_mut().zip(&mut runs) {
            while head.as_ref() == Some(&item) {
                *head = run.next();
            }
        }
        out.push(item);
    }
    out
}

/// Cardinality of a tenant across nodes. Per-node figures cannot be added:
/// with replication factor R every series is counted on R nodes. Reported:
///
/// - series counts (total, per metric name, per label pair): the sum over
///   nodes divided by R (rounded), but never less than the largest single
///   node's count (a lower bound that always holds). Exact when every
///   series has its R copies on nodes that answered; while a node is
///   missing or series move between nodes (hand-off), an estimate;
/// - distinct values per label name: the number of distinct `name=value`
///   pairs across nodes (exact when the per-pair lists are complete, i.e.
///   asked without a limit, as `status/tsdb` asks), never less than the
///   largest single node's count.
///
/// Lists are sorted largest first (ties by name) and cut to `limit` (0: all).
pub fn cardinality(nodes: &[Cardinality], replication_factor: usize, limit: usize) -> Cardinality {
    let rf = replication_factor.max(1) as u64;
    let spread = |sum: u64, max: u64| sum.div_ceil(rf).max(max);
    let merge_counts = |pick: &dyn Fn(&Cardinality) -> &Vec<(String, u64)>| {
        let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for node in nodes {
            for (key, n) in pick(node) {
                let entry = sums.entry(key.as_str()).or_default();
                entry.0 += n;
                entry.1 = entry.1.max(*n);
            }
        }
        sums.into_iter()
            .map(|(key, (sum, max))| (key.to_string(), spread(sum, max)))
            .collect::<Vec<_>>()
    };
    let total_sum: u64 = nodes.iter().map(|n| n.total_series).sum();
    let total_max = nodes.iter().map(|n| n.total_series).max().unwrap_or(0);

    // Distinct values per label name from the union of pairs, or the
    // largest node's own figure when that is higher (lists cut by a limit).
    let mut pairs_by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for node in nodes {
        for (pair, _) in &node.series_by_label_pair {
            if let Some((name, value)) = pair.split_once('=') {
                pairs_by_name.entry(name).or_default().insert(value);
            }
        }
    }
    let mut values: BTreeMap<String, u64> = pairs_by_name
        .into_iter()
        .map(|(name, values)| (name.to_string(), values.len() as u64))
        .collect();
    for node in nodes {
        for (name, n) in &node.values_by_label_name {
            let entry = values.entry(name.clone()).or_default();
            *entry = (*entry).max(*n);
        }
    }
    let by_metric = merge_counts(&|c| &c.series_by_metric_name);
    let by_pair = merge_counts(&|c| &c.series_by_label_pair);
    Cardinality {
        total_series: spread(total_sum, total_max),
        series_by_metric_name: top(by_metric, limit),
        values_by_label_name: top(values.into_iter().collect(), limit),
        series_by_label_pair: top(by_pair, limit),
    }
}

fn top(mut v: Vec<(String, u64)>, limit: usize) -> Vec<(String, u64)> {
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if limit > 0 {
        v.truncate(limit);
    }
    v
}
