//! Decoded-block cache shared by the searches of one table.
//!
//! Index lookups seek into the same hot blocks over and over (every query
//! touches the blocks of its label names); decoding a block costs a zstd
//! frame plus prefix expansion, so decoded blocks are kept. Eviction is by
//! two generations: hits in the old generation move to the new one, and when
//! the new one fills half the budget the old one is dropped whole. That is
//! an LRU approximation with O(1) bookkeeping under one short lock.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::run::ItemRun;

/// (part id, block number).
type Key = (u64, u32);

pub(crate) struct BlockCache {
    budget: usize,
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<Key, Arc<ItemRun>>,
    young_bytes: usize,
    old: HashMap<Key, Arc<ItemRun>>,
}

impl BlockCache {
    pub(crate) fn new(budget: usize) -> BlockCache {
        BlockCache {
            budget,
            inner: Mutex::new(Generations::default()),
        }
    }

    pub(crate) fn get(&self, key: Key) -> Option<Arc<ItemRun>> {
        if self.budget == 0 {
            return None;
        }
        let mut g = self.inner.lock();
        if let Some(run) = g.young.get(&key) {
            return Some(run.clone());
        }
        let run = g.old.remove(&key)?;
        g.insert(key, run.clone(), self.budget);
        Some(run)
    }

    pub(crate) fn insert(&self, key: Key, run: Arc<ItemRun>) {
        if self.budget == 0 {
            return;
        }
        self.inner.lock().insert(key, run, self.budget);
    }
}

impl Generations {
    fn insert(&mut self, key: Key, run: Arc<ItemRun>, budget: usize) {
        self.young_bytes += run.mem_bytes();
        if let Some(prev) = self.young.insert(key, run) {
            self.young_bytes -= prev.mem_bytes();
        }
        if self.young_bytes > budget / 2 {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
    }
}
