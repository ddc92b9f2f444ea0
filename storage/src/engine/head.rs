//! The head: rows acknowledged since the last flush, in memory.
//!
//! Writers append to one of several shards (round-robin per batch) so they
//! rarely contend. A flush takes every shard at once; readers copy out the
//! rows of the series they want.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::types::{SeriesId, TimeRange};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    pub id: SeriesId,
    pub ts: i64,
    pub value: f64,
}

/// Samples of several series gathered from in-memory rows, by series id.
pub type Gathered = HashMap<SeriesId, (Vec<i64>, Vec<f64>)>;

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
    pub fn gather(&self, wanted: &dyn Fn(SeriesId) -> bool, range: TimeRange, out: &mut Gathered) {
        for shard in self.shards.iter() {
            gather_rows(&shard.lock(), wanted, range, out);
        }
    }
}

pub fn gather_rows(
    rows: &[Row],
    wanted: &dyn Fn(SeriesId) -> bool,
    range: TimeRange,
    out: &mut Gathered,
) {
    for r in rows {
        if range.contains(r.ts) && wanted(r.id) {
            let entry = out.entry(r.id).or_default();
            entry.0.push(r.ts);
            entry.1.push(r.value);
        }
    }
}
