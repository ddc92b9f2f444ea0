//! The head: rows acknowledged since the last flush, in memory.
//!
//! Writers append to one of several shards (round-robin per batch) so they
//! rarely contend. A flush takes every shard at once; readers copy out the
//! rows of the series they want.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use roaring::RoaringTreemap;

use crate::types::{SeriesId, TimeRange};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    pub id: SeriesId,
    pub ts: i64,
    pub value: f64,
}

/// Samples of several series gathered from in-memory rows, by series id.
pub type Gathered = HashMap<SeriesId, (Vec<i64>, Vec<f64>)>;

/// The series a read wants, tested once per head row: a bitmap over the
/// span of the ids (a shift and a mask per row) unless the ids are too
/// sparse for one, then the treemap.
pub enum IdSet {
    Dense { base: SeriesId, words: Vec<u64> },
    Sparse(RoaringTreemap),
}

impl IdSet {
    pub fn new(ids: &RoaringTreemap) -> IdSet {
        let (Some(min), Some(max)) = (ids.min(), ids.max()) else {
            return IdSet::Dense {
                base: 0,
                words: Vec::new(),
            };
        };
        let words = (max - min) / 64 + 1;
        // At most 1 MiB, or two words per id.
        if words > (1 << 17).max(2 * ids.len()) {
            return IdSet::Sparse(ids.clone());
        }
        let mut bits = vec![0u64; words as usize];
        for id in ids {
            let at = id - min;
            bits[(at / 64) as usize] |= 1 << (at % 64);
        }
        IdSet::Dense {
            base: min,
            words: bits,
        }
    }

    #[inline]
    pub fn contains(&self, id: SeriesId) -> bool {
        match self {
            IdSet::Dense { base, words } => {
                let at = id.wrapping_sub(*base);
                words
                    .get((at / 64) as usize)
                    .is_some_and(|w| w & (1 << (at % 64)) != 0)
            }
            IdSet::Sparse(ids) => ids.contains(id),
        }
    }
}

pub struct Head {
    shards: Box<[Mutex<Vec<Row>>]>,
    next_shard: AtomicUsize,
    rows: AtomicUsize,
}

impl Head {
    pub fn new(shards: usize) -> Head {
        Head {
            shards: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            next_shard: AtomicUsize::new(0),
            rows: AtomicUsize::new(0),
        }
    }

    pub fn push(&self, rows: &[Row]) {
        if rows.is_empty() {
            return;
        }
        let i = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[i].lock().extend_from_slice(rows);
        self.rows.fetch_add(rows.len(), Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.rows.load(Ordering::Relaxed)
    }

    /// Takes every row out of the head.
    pub fn take_all(&self) -> Vec<Row> {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let mut rows = std::mem::take(&mut *shard.lock());
            self.rows.fetch_sub(rows.len(), Ordering::Relaxed);
            all.append(&mut rows);
        }
        all
    }

    /// Copies the rows of `wanted` series within `range` into `out`.
    pub fn gather(&self, wanted: &IdSet, range: TimeRange, out: &mut Gathered) {
        for shard in self.shards.iter() {
            gather_rows(&shard.lock(), wanted, range, out);
        }
    }
}

pub fn gather_rows(rows: &[Row], wanted: &IdSet, range: TimeRange, out: &mut Gathered) {
    for r in rows {
        if range.contains(r.ts) && wanted.contains(r.id) {
            let entry = out.entry(r.id).or_default();
            entry.0.push(r.ts);
            entry.1.push(r.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_set_matches_the_treemap() {
        for ids in [
            vec![],
            vec![7],
            vec![1, 2, 3, 64, 65, 1000],
            // Too sparse for a bitmap.
            vec![5, 1 << 40, u64::MAX - 1],
        ] {
            let tree: RoaringTreemap = ids.iter().copied().collect();
            let set = IdSet::new(&tree);
            let dense = matches!(set, IdSet::Dense { .. });
            assert_eq!(dense, ids.len() < 3 || ids[2] < 1 << 20, "{ids:?}");
            let probes = ids
                .iter()
                .flat_map(|&id| [id, id.wrapping_sub(1), id.wrapping_add(1)])
                .chain([0, 63, 64, 128, u64::MAX]);
            for id in probes {
                assert_eq!(set.contains(id), tree.contains(id), "{id} in {ids:?}");
            }
        }
    }
}
