//! A byte-bounded cache of decoded things (index blocks, block headers,
//! data pages) shared by concurrent readers.
//!
//! Eviction works per shard in two generations: hits in the old generation
//! move to the new one, and when the new one holds half the shard's budget
//! the old one is dropped whole. That approximates LRU with O(1) work under
//! a short lock; shards keep concurrent readers apart. Hits and misses are
//! counted under the same lock and read out by `take_counts`, for metrics.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

use parking_lot::Mutex;

const SHARDS: usize = 16;

/// Hits, misses and bytes of a cache, since the last `take_counts`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// A sharded key-value cache bounded by the bytes its values take.
pub(crate) struct Cache<K, V> {
    hasher: RandomState,
    shard_budget: usize,
    shards: Box<[Mutex<Generations<K, V>>]>,
}

struct Generations<K, V> {
    young: HashMap<K, (V, usize)>,
    young_bytes: usize,
    old: HashMap<K, (V, usize)>,
    old_bytes: usize,
    hits: u64,
    misses: u64,
}

impl<K: Hash + Eq + Copy, V: Clone> Cache<K, V> {
    /// A cache of about `budget` bytes; 0 disables it.
    pub(crate) fn new(budget: usize) -> Cache<K, V> {
        Cache::sharded(budget, SHARDS)
    }

    fn sharded(budget: usize, shards: usize) -> Cache<K, V> {
        Cache {
            hasher: RandomState::new(),
            shard_budget: budget / shards,
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Generations {
                        young: HashMap::new(),
                        young_bytes: 0,
                        old: HashMap::new(),
                        old_bytes: 0,
                        hits: 0,
                        misses: 0,
                    })
                })
                .collect(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.shard_budget > 0
    }

    pub(crate) fn budget(&self) -> usize {
        self.shard_budget * self.shards.len()
    }

    fn shard(&self, key: K) -> &Mutex<Generations<K, V>> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h >> 32) as usize % self.shards.len()]
    }

    pub(crate) fn get(&self, key: K) -> Option<V> {
        if self.shard_budget == 0 {
            return None;
        }
        let mut g = self.shard(key).lock();
        if let Some((v, _)) = g.young.get(&key) {
            let v = v.clone();
            g.hits += 1;
            return Some(v);
        }
        match g.old.remove(&key) {
            Some((v, bytes)) => {
                g.hits += 1;
                g.old_bytes -= bytes;
                g.insert(key, v.clone(), bytes, self.shard_budget);
                Some(v)
            }
            None => {
                g.misses += 1;
                None
            }
        }
    }

    /// Keeps `v`, which takes about `bytes` of memory.
    pub(crate) fn insert(&self, key: K, v: V, bytes: usize) {
        if self.shard_budget == 0 || bytes > self.shard_budget / 2 {
            return;
        }
        self.shard(key)
            .lock()
            .insert(key, v, bytes, self.shard_budget);
    }

    /// Hits and misses since the last call, and the bytes held now.
    pub(crate) fn take_counts(&self) -> CacheCounts {
        let mut c = CacheCounts::default();
        for s in self.shards.iter() {
            let mut g = s.lock();
            c.hits += std::mem::take(&mut g.hits);
            c.misses += std::mem::take(&mut g.misses);
            c.bytes += (g.young_bytes + g.old_bytes) as u64;
        }
        c
    }
}

impl<K: Hash + Eq, V> Generations<K, V> {
    fn insert(&mut self, key: K, v: V, bytes: usize, budget: usize) {
        self.young_bytes += bytes;
        if let Some((_, prev)) = self.young.insert(key, (v, bytes)) {
            self.young_bytes -= prev;
        }
        if self.young_bytes > budget / 2 {
            self.old = std::mem::take(&mut self.young);
            self.old_bytes = std::mem::take(&mut self.young_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn keeps_within_budget_and_counts() {
        let cache: Cache<(u64, u64), Arc<Vec<u8>>> = Cache::new(SHARDS * 1000);
        assert_eq!(cache.get((1, 0)), None);
        cache.insert((1, 0), Arc::new(vec![7; 100]), 100);
        assert_eq!(cache.get((1, 0)).map(|v| v[0]), Some(7));
        assert_eq!(cache.get((2, 0)), None, "another part's page");
        // Far more than the budget: memory stays bounded.
        for off in 0..10_000 {
            cache.insert((3, off), Arc::new(Vec::new()), 100);
        }
        let c = cache.take_counts();
        assert_eq!((c.hits, c.misses), (1, 2));
        assert!(c.bytes <= (SHARDS * 1000) as u64, "{} bytes held", c.bytes);
        assert_eq!(cache.take_counts().hits, 0, "counts restart");
        // Too large for a shard: not kept.
        cache.insert((4, 0), Arc::new(Vec::new()), 1000);
        assert_eq!(cache.get((4, 0)), None);
    }

    #[test]
    fn hits_survive_generation_turns() {
        // One shard of 1000 bytes: the young generation turns over past 500.
        let cache: Cache<(u64, u64), u32> = Cache::sharded(1000, 1);
        let fill = |from: u64| {
            for off in from..from + 6 {
                cache.insert((2, off), 0, 100);
            }
        };
        cache.insert((1, 0), 1, 100);
        cache.insert((1, 1), 2, 100);
        fill(0); // both now in the old generation
        assert_eq!(
            cache.get((1, 0)),
            Some(1),
            "a hit moves it to the young one"
        );
        fill(100); // the old generation, with (1, 1), is dropped
        assert_eq!(cache.get((1, 0)), Some(1));
        assert_eq!(cache.get((1, 1)), None);
        let disabled: Cache<(u64, u64), u32> = Cache::new(0);
        disabled.insert((1, 0), 1, 1);
        assert_eq!(disabled.get((1, 0)), None);
    }
}
