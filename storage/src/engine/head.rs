//! The head: rows acknowledged since the last flush, in memory.
//!
//! Writers append to one of several shards (round-robin per batch) so they
//! rarely contend. A flush takes every shard at once; readers copy out the
//! rows of the series they want.
//!
//! Reads: rows arrive in no order of series, so finding one series' rows
//! means looking at every row. Reads that want few series (few compared
//! with a shard's rows) build an index as they go: the positions of rows
//! not indexed yet, sorted by series, become a run; runs of similar length
//! merge, so every row is sorted O(log n) times until the flush, and a read
//! binary-searches each run for each series it wants and scans only the
//! rows after the index. Indexing rows costs about two scans of them, so a
//! shard indexes its newer rows once reads have scanned them
//! `SCANS_BEFORE_INDEX` times over: a lone read does not pay for an index,
//! the reads after it use one for all but the newest rows. Writers never
//! pay; the index goes with the rows at the flush.

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

/// The series a read wants: ascending, and as a set tested once per row
/// when rows are scanned (a bitmap over the span of the ids, a shift and a
/// mask per row, unless the ids are too sparse for one: then the treemap).
pub struct IdSet {
    ids: Vec<SeriesId>,
    set: IdBits,
}

enum IdBits {
    Dense { base: SeriesId, words: Vec<u64> },
    Sparse(RoaringTreemap),
}

impl IdSet {
    pub fn new(ids: &RoaringTreemap) -> IdSet {
        let list: Vec<SeriesId> = ids.iter().collect();
        let (Some(&min), Some(&max)) = (list.first(), list.last()) else {
            return IdSet {
                ids: list,
                set: IdBits::Dense {
                    base: 0,
                    words: Vec::new(),
                },
            };
        };
        let words = (max - min) / 64 + 1;
        // At most 1 MiB, or two words per id.
        if words > (1 << 17).max(2 * ids.len()) {
            return IdSet {
                ids: list,
                set: IdBits::Sparse(ids.clone()),
            };
        }
        let mut bits = vec![0u64; words as usize];
        for &id in &list {
            let at = id - min;
            bits[(at / 64) as usize] |= 1 << (at % 64);
        }
        IdSet {
            ids: list,
            set: IdBits::Dense {
                base: min,
                words: bits,
            },
        }
    }

    #[inline]
    pub fn contains(&self, id: SeriesId) -> bool {
        match &self.set {
            IdBits::Dense { base, words } => {
                let at = id.wrapping_sub(*base);
                words
                    .get((at / 64) as usize)
                    .is_some_and(|w| w & (1 << (at % 64)) != 0)
            }
            IdBits::Sparse(ids) => ids.contains(id),
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Rows of a shard and the read-built index over them.
#[derive(Default)]
struct Shard {
    rows: Vec<Row>,
    /// Positions in `rows` of the rows before `indexed`, in runs sorted by
    /// (series id, position); earlier runs hold earlier rows.
    runs: Vec<Vec<u32>>,
    indexed: usize,
    /// Rows after `indexed` that reads scanned since the last indexing.
    scanned: usize,
}

/// Reads that want fewer series than a shard's rows over this use (and
/// build) the index; others scan every row.
const INDEX_RATIO: usize = 32;

/// Indexing rows costs about two scans of them (callgrind: ~50 against ~26
/// instructions a row).
const SCANS_BEFORE_INDEX: usize = 1;

impl Shard {
    /// Indexes the rows not indexed yet; false when positions do not fit
    /// in u32 (the caller scans instead).
    fn index(&mut self) -> bool {
        if u32::try_from(self.rows.len()).is_err() {
            return false;
        }
        if self.indexed < self.rows.len() {
            self.runs.push(sorted_positions(&self.rows, self.indexed));
            self.indexed = self.rows.len();
        }
        // Merge while the newest run is at least half the one before: each
        // row is merged O(log n) times.
        while let [.., older, newer] = self.runs.as_slice()
            && newer.len() * 2 >= older.len()
        {
            let merged = merge_runs(&self.rows, older, newer);
            self.runs.truncate(self.runs.len() - 2);
            self.runs.push(merged);
        }
        true
    }

    fn gather(&mut self, wanted: &IdSet, range: TimeRange, out: &mut Gathered) {
        if wanted.len().saturating_mul(INDEX_RATIO) >= self.rows.len() {
            gather_rows(&self.rows, wanted, range, out);
            return;
        }
        let tail = self.rows.len() - self.indexed;
        if tail > 0 && self.scanned >= SCANS_BEFORE_INDEX * tail && self.index() {
            self.scanned = 0;
        }
        let rows = &self.rows;
        gather_rows(&rows[self.indexed..], wanted, range, out);
        self.scanned += rows.len() - self.indexed;
        for run in &self.runs {
            let mut at = 0;
            for &id in &wanted.ids {
                at += run[at..].partition_point(|&p| rows[p as usize].id < id);
                while let Some(&p) = run.get(at) {
                    let r = &rows[p as usize];
                    if r.id != id {
                        break;
                    }
                    if range.contains(r.ts) {
                        let entry = out.entry(r.id).or_default();
                        entry.0.push(r.ts);
                        entry.1.push(r.value);
                    }
                    at += 1;
                }
                if at == run.len() {
                    break;
                }
            }
        }
    }
}

/// Positions `from..` of `rows` sorted by (series id, position): a radix
/// sort on the id's distance from the smallest (three byte passes for
/// 16 M series), several times cheaper than comparison sorts.
fn sorted_positions(rows: &[Row], from: usize) -> Vec<u32> {
    let tail = &rows[from..];
    let (Some(min), Some(max)) = (
        tail.iter().map(|r| r.id).min(),
        tail.iter().map(|r| r.id).max(),
    ) else {
        return Vec::new();
    };
    let span = max - min;
    if span > u64::from(u32::MAX) {
        let mut pairs: Vec<(SeriesId, u32)> = tail
            .iter()
            .zip(from..)
            .map(|(r, at)| (r.id, at as u32))
            .collect();
        pairs.sort_unstable();
        return pairs.into_iter().map(|(_, at)| at).collect();
    }
    // (distance << 32) | position; positions fit in u32 (`index` checked).
    let mut keys: Vec<u64> = tail
        .iter()
        .zip(from..)
        .map(|(r, at)| ((r.id - min) << 32) | at as u64)
        .collect();
    let mut spare = vec![0u64; keys.len()];
    let digits = (u64::BITS - span.leading_zeros()).div_ceil(8);
    for digit in 0..digits {
        let shift = 32 + 8 * digit;
        let mut starts = [0usize; 256];
        for k in &keys {
            starts[((k >> shift) & 0xff) as usize] += 1;
        }
        let mut sum = 0;
        for s in starts.iter_mut() {
            (*s, sum) = (sum, sum + *s);
        }
        // Stable: equal digits keep their order, so positions stay ascending.
        for &k in &keys {
            let d = ((k >> shift) & 0xff) as usize;
            spare[starts[d]] = k;
            starts[d] += 1;
        }
        std::mem::swap(&mut keys, &mut spare);
    }
    keys.into_iter().map(|k| k as u32).collect()
}

/// Merges two runs ordered by (series id, position).
fn merge_runs(rows: &[Row], a: &[u32], b: &[u32]) -> Vec<u32> {
    let key = |p: u32| (rows[p as usize].id, p);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if key(a[i]) <= key(b[j]) {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

pub struct Head {
    shards: Box<[Mutex<Shard>]>,
    next_shard: AtomicUsize,
    rows: AtomicUsize,
}

impl Head {
    pub fn new(shards: usize) -> Head {
        Head {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            next_shard: AtomicUsize::new(0),
            rows: AtomicUsize::new(0),
        }
    }

    pub fn push(&self, rows: &[Row]) {
        if rows.is_empty() {
            return;
        }
        let i = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[i].lock().rows.extend_from_slice(rows);
        self.rows.fetch_add(rows.len(), Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.rows.load(Ordering::Relaxed)
    }

    /// Takes every row out of the head.
    pub fn take_all(&self) -> Vec<Row> {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let mut shard = std::mem::take(&mut *shard.lock());
            self.rows.fetch_sub(shard.rows.len(), Ordering::Relaxed);
            all.append(&mut shard.rows);
        }
        all
    }

    /// Copies the rows of `wanted` series within `range` into `out` (in no
    /// particular order: readers sort).
    pub fn gather(&self, wanted: &IdSet, range: TimeRange, out: &mut Gathered) {
        for shard in self.shards.iter() {
            shard.lock().gather(wanted, range, out);
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

    fn sorted(g: Gathered) -> std::collections::BTreeMap<SeriesId, Vec<(i64, u64)>> {
        g.into_iter()
            .map(|(id, (ts, vs))| {
                let mut rows: Vec<(i64, u64)> =
                    ts.into_iter().zip(vs.iter().map(|v| v.to_bits())).collect();
                rows.sort_unstable();
                (id, rows)
            })
            .collect()
    }

    #[test]
    fn sorted_positions_table() {
        fn check(ids: &[u64], from: usize) {
            let rows: Vec<Row> = ids
                .iter()
                .map(|&id| Row {
                    id,
                    ts: 0,
                    value: 0.0,
                })
                .collect();
            let mut want: Vec<(u64, u32)> =
                (from..ids.len()).map(|at| (ids[at], at as u32)).collect();
            want.sort_unstable();
            let want: Vec<u32> = want.into_iter().map(|(_, at)| at).collect();
            assert_eq!(sorted_positions(&rows, from), want, "{ids:?} from {from}");
        }
        check(&[], 0);
        check(&[5], 0);
        check(&[3, 1, 2, 1, 3], 0);
        check(&[3, 1, 2, 1, 3], 2);
        check(&[300, 7, 70_000, 7, 1 << 30, 300], 0);
        check(&[u64::MAX, 0, 1 << 40, 0], 0);
    }

    /// Head reads, indexed or scanned, against scanning every row pushed.
    #[test]
    fn gather_agrees_with_a_scan_of_every_row() {
        let head = Head::new(3);
        let mut all: Vec<Row> = Vec::new();
        let mut x = 7u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..40 {
            let batch: Vec<Row> = (0..50 + round * 20)
                .map(|i| Row {
                    id: next() % 300,
                    ts: (next() % 1000) as i64,
                    value: (round * 1000 + i) as f64,
                })
                .collect();
            head.push(&batch);
            all.extend_from_slice(&batch);
            // Few series (indexed), many (scanned), none, one.
            let wanted_sets: [Vec<u64>; 4] = [
                vec![next() % 300, next() % 300, 299],
                (0..300).filter(|i| i % 3 != 0).collect(),
                vec![],
                vec![next() % 300],
            ];
            for ids in wanted_sets {
                let wanted = IdSet::new(&ids.iter().copied().collect());
                let range = TimeRange::new(100, 900);
                let mut got = Gathered::new();
                head.gather(&wanted, range, &mut got);
                let mut want = Gathered::new();
                gather_rows(&all, &wanted, range, &mut want);
                assert_eq!(sorted(got), sorted(want), "round {round}, ids {ids:?}");
            }
        }
        assert_eq!(head.take_all().len(), all.len());
        let mut got = Gathered::new();
        head.gather(
            &IdSet::new(&[1u64].into_iter().collect()),
            TimeRange::ALL,
            &mut got,
        );
        assert!(got.is_empty(), "a flush takes the index with the rows");
    }

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
            let dense = matches!(set.set, IdBits::Dense { .. });
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
