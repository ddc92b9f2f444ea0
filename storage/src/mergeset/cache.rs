//! Decoded-block cache of the index, shared by every search of the tables
//! that hold it (the storage engine gives one to all its partitions).
//!
//! Index lookups seek into the same hot blocks over and over (every query
//! touches the blocks of its label names, and one `series` item per series
//! it reads); decoding a block costs a zstd frame plus prefix expansion, so
//! decoded blocks are kept. Keys are (part uid, block number); part uids
//! are unique in the process, so tables can share a cache.

use std::sync::Arc;

use super::run::ItemRun;
use crate::cache::{Cache, CacheCounts};

pub struct IndexCache {
    blocks: Cache<(u64, u32), Arc<ItemRun>>,
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexCache")
            .field("budget", &self.blocks.budget())
            .finish()
    }
}

impl IndexCache {
    /// A cache of about `bytes` of decoded blocks; 0 disables it.
    pub fn new(bytes: usize) -> Arc<IndexCache> {
        Arc::new(IndexCache {
            blocks: Cache::new(bytes),
        })
    }

    /// Hits and misses since the last call, and the bytes held now.
    pub fn take_counts(&self) -> CacheCounts {
        self.blocks.take_counts()
    }

    pub(crate) fn get(&self, key: (u64, u32)) -> Option<Arc<ItemRun>> {
        self.blocks.get(key)
    }

    pub(crate) fn insert(&self, key: (u64, u32), run: Arc<ItemRun>) {
        let bytes = run.mem_bytes();
        self.blocks.insert(key, run, bytes);
    }
}
