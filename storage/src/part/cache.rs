//! Decoded header pages and decompressed data pages, kept between reads and
//! shared by every part of a storage instance under one memory budget.
//!
//! A query reads a block or two of each series it selects, but a block's
//! header sits in a header page of about `HEADER_PAGE_BLOCKS` blocks and its
//! bytes in a data page of about `PAGE_TARGET_BYTES` compressed as a whole.
//! Without a cache every query pays for those pages again: a dashboard
//! refreshing `node_load1` of 150 hosts decoded 270 header pages and
//! decompressed 150 data pages for 150 blocks.
//!
//! Entries are keyed by (part uid, offset in the part's file); uids come from
//! a process-wide counter, so no part ever sees another's entries, and the
//! entries of a part merged away age out. Only pages that passed their
//! checksum and decoded are cached, so a damaged page is read (and reported)
//! again by every read that needs it.
//!
//! Eviction works per shard in two generations: hits in the old generation
//! move to the new one, and when the new one holds half the shard's budget
//! the old one is dropped whole. That approximates LRU with O(1) work under
//! a short lock; shards keep concurrent readers apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::format::HeaderPage;

const SHARDS: usize = 16;

/// Source of part uids.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A uid no other part of this process has.
pub(super) fn next_uid() -> u64 {
    NEXT_UID.fetch_add(1, Ordering::Relaxed)
}

/// (part uid, offset of the page in its file).
type Key = (u64, u64);

/// Hits, misses and bytes of one of the caches, since the last `take_counts`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// The header page and data page caches of a storage instance.
pub struct PageCache {
    pub(super) headers: Shards<Arc<HeaderPage>>,
    pub(super) pages: Shards<Arc<Vec<u8>>>,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("header_budget", &self.headers.budget())
            .field("page_budget", &self.pages.budget())
            .finish()
    }
}

impl PageCache {
    /// Caches holding about `header_bytes` of decoded header pages and
    /// `page_bytes` of decompressed data pages; 0 disables either.
    pub fn new(header_bytes: usize, page_bytes: usize) -> Arc<PageCache> {
        Arc::new(PageCache {
            headers: Shards::new(header_bytes),
            pages: Shards::new(page_bytes),
        })
    }

    /// Splits a total budget: a quarter for header pages (every lookup
    /// needs one, and one covers hundreds of blocks), the rest for data pages.
    pub fn with_budget(bytes: usize) -> Arc<PageCache> {
        PageCache::new(bytes / 4, bytes - bytes / 4)
    }

    /// (header pages, data pages) counts since the last call.
    pub fn take_counts(&self) -> (CacheCounts, CacheCounts) {
        (self.headers.take_counts(), self.pages.take_counts())
    }
}

pub(super) struct Shards<V> {
    shard_budget: usize,
    shards: Box<[Mutex<Generations<V>>]>,
}

struct Generations<V> {
    young: HashMap<Key, (V, usize)>,
    young_bytes: usize,
    old: HashMap<Key, (V, usize)>,
    old_bytes: usize,
    hits: u64,
    misses: u64,
}

impl<V: Clone> Shards<V> {
    fn new(budget: usize) -> Shards<V> {
        Shards::sharded(budget, SHARDS)
    }

    fn sharded(budget: usize, shards: usize) -> Shards<V> {
        Shards {
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

    pub(super) fn enabled(&self) -> bool {
        self.shard_budget > 0
    }

    fn budget(&self) -> usize {
        self.shard_budget * self.shards.len()
    }

    fn shard(&self, key: Key) -> &Mutex<Generations<V>> {
        // Pages of one part are at distinct offsets: mixing both spreads
        // neighbouring pages over the shards.
        let h =
            key.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key.1.wrapping_mul(0xff51_afd7_ed55_8ccd);
        &self.shards[(h >> 32) as usize % self.shards.len()]
    }

    pub(super) fn get(&self, key: Key) -> Option<V> {
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
    pub(super) fn insert(&self, key: Key, v: V, bytes: usize) {
        if self.shard_budget == 0 || bytes > self.shard_budget / 2 {
            return;
        }
        self.shard(key)
            .lock()
            .insert(key, v, bytes, self.shard_budget);
    }

    fn take_counts(&self) -> CacheCounts {
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

impl<V> Generations<V> {
    fn insert(&mut self, key: Key, v: V, bytes: usize, budget: usize) {
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
    use super::*;

    #[test]
    fn keeps_within_budget_and_counts() {
        let cache: Shards<Arc<Vec<u8>>> = Shards::new(SHARDS * 1000);
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
        let cache: Shards<u32> = Shards::sharded(1000, 1);
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
        let disabled: Shards<u32> = Shards::new(0);
        disabled.insert((1, 0), 1, 1);
        assert_eq!(disabled.get((1, 0)), None);
    }
}
