//! A sorted, deduplicated list of items stored back to back in one buffer.
//!
//! Used for in-memory runs (one per `add_items` call, merged over time) and for
//! decoded on-disk blocks, so the merge iterator sees one shape for both.

/// Items in strictly ascending byte order. One allocation for the bytes and
/// one for the end offsets keeps millions of small items cheap.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ItemRun {
    data: Vec<u8>,
    /// `ends[i]` is the end offset of item `i` in `data`; item `i` starts
    /// where item `i - 1` ends.
    ends: Vec<usize>,
}

impl ItemRun {
    pub(crate) fn with_capacity(items: usize, bytes: usize) -> ItemRun {
        ItemRun {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(items),
        }
    }

    /// Sorts and deduplicates a batch.
    pub(crate) fn from_unsorted(mut items: Vec<&[u8]>) -> ItemRun {
        items.sort_unstable();
        items.dedup();
        let bytes = items.iter().map(|i| i.len()).sum();
        let mut run = ItemRun::with_capacity(items.len(), bytes);
        for item in items {
            run.push(item);
        }
        run
    }

    /// Appends an item; the caller keeps the order strictly ascending.
    pub(crate) fn push(&mut self, item: &[u8]) {
        debug_assert!(self.last().is_none_or(|last| last < item));
        self.data.extend_from_slice(item);
        self.ends.push(self.data.len());
    }

    /// Appends the last item's first `shared` bytes followed by `suffix`;
    /// the caller checked `shared` against the last item's length and the
    /// order.
    pub(crate) fn push_extending_last(&mut self, shared: usize, suffix: &[u8]) {
        let start = self.last_start();
        self.data.extend_from_within(start..start + shared);
        self.data.extend_from_slice(suffix);
        self.ends.push(self.data.len());
    }

    /// Appends a copy of the last item and returns it for patching in place.
    pub(crate) fn push_copy_of_last(&mut self) -> Option<&mut [u8]> {
        let end = *self.ends.last()?;
        let start = self.last_start();
        self.data.extend_from_within(start..end);
        self.ends.push(self.data.len());
        Some(&mut self.data[end..])
    }

    fn last_start(&self) -> usize {
        match self.ends.len() {
            0 | 1 => 0,
            n => self.ends[n - 2],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Total item bytes.
    pub(crate) fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Memory held, for cache accounting.
    pub(crate) fn mem_bytes(&self) -> usize {
        self.data.capacity() + self.ends.capacity() * size_of::<usize>()
    }

    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.data.get(start..end)
    }

    pub(crate) fn last(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    /// Index of the first item `>= key` (`len()` when there is none).
    pub(crate) fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).is_some_and(|item| item < key) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.data.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}
