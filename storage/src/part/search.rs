//! Finding a series in a part's sorted lists (index entries, block
//! references) with few cache misses.
//!
//! A binary search over a header page's 512 block references touches about
//! nine cache lines, each a miss when a query jumps from series to series
//! (one series per host of a metric lies hundreds of series apart). Series
//! ids are handed out in sequence, so within a list they are spread nearly
//! evenly: a guess by linear interpolation lands within a few entries, and a
//! gallop from there finds the exact place in one or two lines.

use crate::types::SeriesId;

/// The index of the first item whose `key` is `>= target` in `items`, which
/// are sorted by `key` (the same answer as `partition_point(|i| key(i) <
/// target)`).
pub(super) fn first_at_or_above<T>(
    items: &[T],
    key: impl Fn(&T) -> SeriesId,
    target: SeriesId,
) -> usize {
    let (Some(first), Some(last)) = (items.first(), items.last()) else {
        return 0;
    };
    let (low, high) = (key(first), key(last));
    if target <= low {
        return 0;
    }
    if target > high {
        return items.len();
    }
    // low < target <= high, so high > low. Rounding only moves the guess,
    // which the gallop corrects; the clamp keeps it in bounds.
    let fraction = (target - low) as f64 / (high - low) as f64;
    let guess = ((fraction * (items.len() - 1) as f64) as usize).min(items.len() - 1);
    if key(&items[guess]) < target {
        // The answer lies in guess+1..=len: gallop forward.
        let mut from = guess + 1;
        let mut step = 1;
        loop {
            let probe = from + step - 1;
            if probe >= items.len() {
                return from + items[from..].partition_point(|i| key(i) < target);
            }
            if key(&items[probe]) >= target {
                return from + items[from..probe].partition_point(|i| key(i) < target);
            }
            from = probe + 1;
            step *= 2;
        }
    } else {
        // The answer lies in 0..=guess: gallop backward.
        let mut to = guess;
        let mut step = 1;
        loop {
            if to < step {
                return items[..to].partition_point(|i| key(i) < target);
            }
            let probe = to - step;
            if key(&items[probe]) < target {
                return probe + 1 + items[probe + 1..to].partition_point(|i| key(i) < target);
            }
            to = probe;
            step *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::first_at_or_above;

    fn check(keys: &[u64], target: u64) {
        let want = keys.partition_point(|k| *k < target);
        assert_eq!(
            first_at_or_above(keys, |k| *k, target),
            want,
            "{target} in {keys:?}"
        );
    }

    #[test]
    fn edges() {
        check(&[], 5);
        check(&[5], 4);
        check(&[5], 5);
        check(&[5], 6);
        check(&[1, 1, 1, 9, 9, 9], 1);
        check(&[1, 1, 1, 9, 9, 9], 2);
        check(&[1, 1, 1, 9, 9, 9], 9);
        check(&[1, 1, 1, 9, 9, 9], 10);
        check(&[0, u64::MAX], u64::MAX);
        check(&[0, u64::MAX], u64::MAX - 1);
        // Uneven: the guess lands far from the answer.
        check(&[1, 2, 3, 4, 5, 6, 7, 8, 1_000_000], 9);
        check(&[1, 999_990, 999_991, 999_992, 999_993, 1_000_000], 999_992);
    }

    proptest! {
        #[test]
        fn agrees_with_a_binary_search(
            mut keys in proptest::collection::vec(0u64..2_000, 0..600),
            target in 0u64..2_100,
        ) {
            keys.sort_unstable();
            check(&keys, target);
        }

        #[test]
        fn agrees_on_dense_runs(
            start in 0u64..1_000_000,
            repeats in proptest::collection::vec(1usize..4, 1..600),
            offset in 0u64..700,
        ) {
            // Ids in sequence, each repeated like a series' blocks.
            let keys: Vec<u64> = repeats
                .iter()
                .enumerate()
                .flat_map(|(i, r)| std::iter::repeat_n(start + i as u64, *r))
                .collect();
            check(&keys, start + offset);
        }
    }
}
