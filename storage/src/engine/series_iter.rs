//! The series of a search, read from parts in batches spread over the
//! machine's cores, handed out one at a time in storage order.
//!
//! Reading is decoding: a query over thousands of series spends most of its
//! time turning blocks back into samples, and one caller thread would leave
//! the other cores idle. A batch of neighbouring series is cut into one
//! contiguous run per worker (neighbours share pages, so each run finds its
//! pages once) and read on rayon's pool, and while the caller takes one
//! batch's series the next batch is being read. Batches start small and in
//! line on the caller's thread, so a query that reads little waits for
//! little, and grow while they stay under `BATCH_SAMPLES`, which bounds what
//! is read ahead of the caller (two batches at most).
//!
//! An ordered search (`Storage::search_ordered`) hands series out in
//! `labels_key` order, which is unrelated to where they lie. Each batch is
//! still read in id order (sorted before reading, put back after), so
//! neighbours within a batch share pages; across batches pages are found
//! again, through the part caches.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};

use rayon::prelude::*;
use tracing::error;

use super::head::Gathered;
use super::{KeyedSeries, SeriesData, StorageError};
use super::{SeriesGroup, format_series};
use crate::dedup::sort_and_dedup;
use crate::metrics::StorageMetrics;
use crate::part::{Part, ReadCache};
use crate::types::TimeRange;

/// Series in the first batch.
const FIRST_BATCH_SERIES: usize = 32;
/// Most series in one batch.
const MAX_BATCH_SERIES: usize = 4096;
/// Batches grow while they decode fewer samples than this (2 MiB of
/// timestamps and values) and shrink when they decode more than twice it.
/// Small enough that a batch is still in the caches when the caller takes
/// it: at 16 MiB a 1 h range query over 9,600 series took 10% more CPU.
const BATCH_SAMPLES: usize = 1 << 17;
/// A batch expected to return fewer samples than this, of fewer series
/// than `PARALLEL_MIN_SERIES`, stays on the caller's thread: handing it to
/// the pool would cost more than it saves.
const PARALLEL_MIN_SAMPLES: usize = 32 * 1024;
/// Every series costs at least a block decoded (a few hundred samples,
/// whatever the range keeps of them), so this many are worth the pool.
const PARALLEL_MIN_SERIES: usize = 128;

/// Streams the series of a search; samples are read in batches ahead of the
/// caller (see the module doc).
pub struct SeriesIter {
    /// Label sets with every id each had (see `evict_inactive_series`), in
    /// order of their first id (parts are laid out by id, so neighbouring
    /// series share pages), or in key order when `ordered`.
    series: std::vec::IntoIter<SeriesGroup>,
    /// Series are handed out in the order of `series` rather than of ids.
    ordered: bool,
    /// Samples of the head and of rows being flushed, by series id.
    gathered: Gathered,
    ctx: Arc<BatchContext>,
    warnings: Vec<String>,
    /// Series of the last batch not handed out yet, in order, their label
    /// sets still shared with the cache.
    ready: VecDeque<KeyedSeries>,
    /// One per worker; worker `i` reads the `i`-th run of every batch. With
    /// the batch being read on the pool while one is in flight.
    readers: Option<Vec<Reader>>,
    /// The batch being read on the pool while the caller takes the last one.
    in_flight: Option<mpsc::Receiver<std::thread::Result<Read>>>,
    /// Series in the batch in flight.
    in_flight_len: usize,
    /// A batch taken but too small for the pool, read in line when needed.
    unread: Option<Vec<Pending>>,
    /// Series in the next batch.
    batch: usize,
    /// Samples per series of the last batch, to guess the next one's work.
    samples_per_series: Option<usize>,
}

/// What every worker of a batch shares.
struct BatchContext {
    parts: Vec<Arc<Part>>,
    range: TimeRange,
    dedup_interval_ms: i64,
    metrics: StorageMetrics,
}

/// A worker's read state: one `ReadCache` per part, kept between batches.
struct Reader {
    caches: Vec<ReadCache>,
    warnings: Vec<String>,
}

/// One series of a batch: its labels, ids, and the samples read so far.
struct Pending {
    group: SeriesGroup,
    /// Place in the batch as taken (an ordered batch is read in id order).
    at: usize,
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

/// A batch read, and the readers that read it.
struct Read {
    batch: Vec<Pending>,
    readers: Vec<Reader>,
}

impl SeriesIter {
    pub(super) fn new(
        series: Vec<SeriesGroup>,
        gathered: Gathered,
        parts: Vec<Arc<Part>>,
        range: TimeRange,
        dedup_interval_ms: i64,
        metrics: StorageMetrics,
        warnings: Vec<String>,
    ) -> SeriesIter {
        let readers = (0..rayon::current_num_threads().max(1))
            .map(|_| Reader {
                caches: parts.iter().map(|_| ReadCache::default()).collect(),
                warnings: Vec::new(),
            })
            .collect();
        SeriesIter {
            series: series.into_iter(),
            ordered: false,
            gathered,
            ctx: Arc::new(BatchContext {
                parts,
                range,
                dedup_interval_ms,
                metrics,
            }),
            warnings,
            ready: VecDeque::new(),
            readers: Some(readers),
            in_flight: None,
            in_flight_len: 0,
            unread: None,
            batch: FIRST_BATCH_SERIES,
            samples_per_series: None,
        }
    }

    /// Hands the series out in `labels_key` order (ties by label set)
    /// rather than storage order.
    pub(super) fn in_key_order(mut self) -> SeriesIter {
        let series: Vec<SeriesGroup> = std::mem::take(&mut self.series).collect();
        // Sorting places, not the groups themselves, moves each group once.
        let mut order: Vec<usize> = (0..series.len()).collect();
        order.sort_unstable_by(|&a, &b| {
            let (a, b) = (&series[a], &series[b]);
            a.key()
                .cmp(&b.key())
                .then_with(|| a.labels().cmp(b.labels()))
        });
        let mut series: Vec<Option<SeriesGroup>> = series.into_iter().map(Some).collect();
        self.series = order
            .into_iter()
            .filter_map(|at| series[at].take())
            .collect::<Vec<_>>()
            .into_iter();
        self.ordered = true;
        // A cluster merges nothing before every node's first batch came, so
        // a tiny first batch saves no wait; a larger one finds its pages
        // with fewer jumps.
        self.batch = FIRST_BATCH_SERIES * 8;
        self
    }

    /// Problems met so far (corrupted blocks skipped); results are partial when not empty.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Series left to read (an upper bound: series without samples are skipped).
    pub fn remaining(&self) -> usize {
        self.series.len()
            + self.ready.len()
            + self.in_flight_len
            + self.unread.as_ref().map_or(0, Vec::len)
    }

    /// The next batch's series with their head samples (taken out of the
    /// shared map here, on the caller's thread), and whether reading it is
    /// worth the pool.
    fn take_batch(&mut self) -> (Vec<Pending>, bool) {
        let take = self.batch.min(self.series.len());
        let mut batch: Vec<Pending> = Vec::with_capacity(take);
        let gathered = &mut self.gathered;
        let mut push = |at: usize, group: SeriesGroup| {
            let (mut timestamps, mut values) = (Vec::new(), Vec::new());
            for id in group.ids() {
                if let Some((t, v)) = gathered.remove(&id) {
                    timestamps.extend(t);
                    values.extend(v);
                }
            }
            batch.push(Pending {
                group,
                at,
                timestamps,
                values,
            });
        };
        if self.ordered {
            // Read in id order: neighbours share pages.
            let groups: Vec<SeriesGroup> = self.series.by_ref().take(take).collect();
            let mut by_id: Vec<usize> = (0..groups.len()).collect();
            by_id.sort_unstable_by_key(|&at| groups[at].first);
            let mut groups: Vec<Option<SeriesGroup>> = groups.into_iter().map(Some).collect();
            for at in by_id {
                if let Some(group) = groups[at].take() {
                    push(at, group);
                }
            }
        } else {
            for (at, group) in self.series.by_ref().take(take).enumerate() {
                push(at, group);
            }
        }
        let expected = self.samples_per_series.map_or(0, |n| n * take);
        let parallel = self.samples_per_series.is_some()
            && (expected >= PARALLEL_MIN_SAMPLES || take >= PARALLEL_MIN_SERIES);
        (batch, parallel)
    }

    /// Takes a finished batch: its warnings, the next batch's size, its
    /// series into `ready`.
    fn finish(&mut self, read: Read) {
        let Read { batch, mut readers } = read;
        for reader in &mut readers {
            self.warnings.append(&mut reader.warnings);
        }
        self.readers = Some(readers);
        let samples: usize = batch.iter().map(|p| p.timestamps.len()).sum();
        self.samples_per_series = Some(samples / batch.len().max(1));
        if samples < BATCH_SAMPLES {
            self.batch = (self.batch * 2).min(MAX_BATCH_SERIES);
        } else if samples > 2 * BATCH_SAMPLES {
            self.batch = (self.batch / 2).max(1);
        }
        // Label sets stay shared: `next` copies them on the caller's thread
        // (which usually frees them too, the allocator's fast path), and an
        // ordered search's caller may not need them at all.
        let series = batch
            .into_iter()
            .filter(|p| !p.timestamps.is_empty())
            .map(|p| {
                let series =
                    KeyedSeries::shared(p.group.key(), &p.group.set, p.timestamps, p.values);
                (p.at, series)
            });
        if self.ordered {
            // Back to the order taken.
            let mut taken: Vec<Option<KeyedSeries>> = Vec::new();
            for (at, series) in series {
                if taken.len() <= at {
                    taken.resize_with(at + 1, || None);
                }
                taken[at] = Some(series);
            }
            self.ready.extend(taken.into_iter().flatten());
        } else {
            self.ready.extend(series.map(|(_, series)| series));
        }
    }

    /// Starts reading the next batch on the pool when it is big enough to
    /// be worth it; a small one is read in line when it is needed.
    fn start_next(&mut self) {
        if self.series.len() == 0 || self.in_flight.is_some() || self.unread.is_some() {
            return;
        }
        let Some(readers) = self.readers.take() else {
            return;
        };
        let (batch, parallel) = self.take_batch();
        if !parallel {
            // Back into line: put nothing in flight.
            self.readers = Some(readers);
            self.unread = Some(batch);
            return;
        }
        let (sender, receiver) = mpsc::sync_channel(1);
        let ctx = Arc::clone(&self.ctx);
        self.in_flight_len = batch.len();
        rayon::spawn(move || {
            let read = std::panic::catch_unwind(AssertUnwindSafe(|| {
                read_batch(&ctx, batch, readers, true)
            }));
            // The iterator may be gone: then nobody wants the batch.
            let _ = sender.send(read);
        });
        self.in_flight = Some(receiver);
    }
}

/// Reads `batch` with `readers`: on the pool in one run per reader when
/// `parallel`, else on this thread.
fn read_batch(
    ctx: &BatchContext,
    mut batch: Vec<Pending>,
    mut readers: Vec<Reader>,
    parallel: bool,
) -> Read {
    if parallel && readers.len() > 1 {
        let run = batch.len().div_ceil(readers.len()).max(1);
        batch
            .par_chunks_mut(run)
            .zip(readers.par_iter_mut())
            .for_each(|(run, reader)| reader.read(ctx, run));
    } else if let Some(reader) = readers.first_mut() {
        reader.read(ctx, &mut batch);
    }
    Read { batch, readers }
}

impl Reader {
    /// Adds the samples of `run`'s series from every part, then sorts and
    /// deduplicates each series.
    fn read(&mut self, ctx: &BatchContext, run: &mut [Pending]) {
        for p in run {
            for id in p.group.ids() {
                for (part, cache) in ctx.parts.iter().zip(&mut self.caches) {
                    let m = part.meta();
                    if id < m.min_series_id || id > m.max_series_id {
                        continue;
                    }
                    if let Err(e) = part.read_series_cached(
                        cache,
                        id,
                        ctx.range,
                        &mut p.timestamps,
                        &mut p.values,
                    ) {
                        error!(error = %e, series = %format_series(p.group.labels()), "Skipping a corrupted block.");
                        ctx.metrics
                            .corrupted_blocks
                            .get_or_create(&vec![("kind", "data".to_string())])
                            .inc();
                        self.warnings.push(e.to_string());
                    }
                }
            }
            sort_and_dedup(&mut p.timestamps, &mut p.values, ctx.dedup_interval_ms);
        }
    }
}

impl SeriesIter {
    /// The next series with its `labels_key` and shared label set: in key
    /// order from `Storage::search_ordered`.
    pub fn next_keyed(&mut self) -> Option<Result<KeyedSeries, StorageError>> {
        loop {
            if let Some(keyed) = self.ready.pop_front() {
                return Some(Ok(keyed));
            }
            let read = if let Some(in_flight) = self.in_flight.take() {
                self.in_flight_len = 0;
                match in_flight.recv() {
                    Ok(Ok(read)) => read,
                    Ok(Err(panic)) => std::panic::resume_unwind(panic),
                    // The task catches panics, so it always sends before
                    // dropping its sender.
                    Err(mpsc::RecvError) => unreachable!("a batch task ended without an answer"),
                }
            } else {
                let (batch, parallel) = match self.unread.take() {
                    Some(batch) => (batch, false),
                    None if self.series.len() == 0 => return None,
                    None => self.take_batch(),
                };
                let readers = self.readers.take()?;
                read_batch(&self.ctx, batch, readers, parallel)
            };
            self.finish(read);
            // The next batch is read while the caller takes this one.
            self.start_next();
        }
    }
}

impl Iterator for SeriesIter {
    type Item = Result<SeriesData, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_keyed().map(|r| r.map(KeyedSeries::into_series))
    }
}
