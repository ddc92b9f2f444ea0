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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::HeaderPage;
use crate::cache::{Cache, CacheCounts};

/// Source of part uids.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A uid no other part of this process has.
pub(super) fn next_uid() -> u64 {
    NEXT_UID.fetch_add(1, Ordering::Relaxed)
}

/// (part uid, offset of the page in its file).
type Key = (u64, u64);

/// The header page and data page caches of a storage instance.
pub struct PageCache {
    pub(super) headers: Cache<Key, Arc<HeaderPage>>,
    pub(super) pages: Cache<Key, Arc<Vec<u8>>>,
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
            headers: Cache::new(header_bytes),
            pages: Cache::new(page_bytes),
        })
    }

    /// (header pages, data pages) counts since the last call.
    pub fn take_counts(&self) -> (CacheCounts, CacheCounts) {
        (self.headers.take_counts(), self.pages.take_counts())
    }
}
