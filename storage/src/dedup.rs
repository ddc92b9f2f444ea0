//! Sample deduplication, shared by merges and reads so both give the same answer.
//!
//! Rule: among samples of one series with the same timestamp, the one with the
//! greatest value in `f64::total_cmp` order is kept (the staleness marker, a
//! positive NaN, beats every number). With a dedup interval `d > 0`, time is cut
//! into buckets `[k*d, (k+1)*d)` and only the latest sample of each bucket is
//! kept (ties broken as above). Keeping a maximum per bucket is associative and
//! idempotent, so deduplicating parts separately and then together gives the
//! same result as deduplicating everything at once.

/// Sorts samples by timestamp and applies the dedup rule in place.
/// `interval_ms == 0` collapses exact duplicate timestamps only.
pub fn sort_and_dedup(timestamps: &mut Vec<i64>, values: &mut Vec<f64>, interval_ms: i64) {
    debug_assert_eq!(timestamps.len(), values.len());
    let sorted = timestamps.windows(2).all(|w| w[0] < w[1]);
    if sorted && interval_ms <= 0 {
        return;
    }
    if !sorted {
        let mut pairs: Vec<(i64, f64)> = timestamps
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        timestamps.clear();
        values.clear();
        for (t, v) in pairs {
            timestamps.push(t);
            values.push(v);
        }
    }
    // Sorted by (timestamp, value): the last entry of each key group wins.
    let key = |t: i64| {
        if interval_ms > 0 {
            t.div_euclid(interval_ms)
        } else {
            t
        }
    };
    let mut w = 0;
    for r in 0..timestamps.len() {
        let last_of_group =
            r + 1 == timestamps.len() || key(timestamps[r + 1]) != key(timestamps[r]);
        if last_of_group {
            timestamps[w] = timestamps[r];
            values[w] = values[r];
            w += 1;
        }
    }
    timestamps.truncate(w);
    values.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[(i64, f64)], interval: i64, want: &[(i64, f64)]) {
        let mut ts: Vec<i64> = input.iter().map(|p| p.0).collect();
        let mut vs: Vec<f64> = input.iter().map(|p| p.1).collect();
        sort_and_dedup(&mut ts, &mut vs, interval);
        let got: Vec<(i64, u64)> = ts.iter().zip(&vs).map(|(t, v)| (*t, v.to_bits())).collect();
        let want: Vec<(i64, u64)> = want.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        assert_eq!(got, want, "input {input:?} interval {interval}");
    }

    #[test]
    fn dedup_table() {
        check(&[], 0, &[]);
        check(&[(1, 1.0), (2, 2.0)], 0, &[(1, 1.0), (2, 2.0)]);
        check(&[(2, 2.0), (1, 1.0)], 0, &[(1, 1.0), (2, 2.0)]);
        check(&[(1, 1.0), (1, 3.0), (1, 2.0)], 0, &[(1, 3.0)]);
        let stale = f64::from_bits(crate::types::STALE_NAN_BITS);
        check(&[(1, 5.0), (1, stale)], 0, &[(1, stale)]);
        check(
            &[(0, 1.0), (5, 2.0), (10, 3.0), (19, 4.0)],
            10,
            &[(5, 2.0), (19, 4.0)],
        );
        check(
            &[(-5, 1.0), (-1, 2.0), (0, 3.0)],
            10,
            &[(-1, 2.0), (0, 3.0)],
        );
    }

    #[test]
    fn dedup_is_associative() {
        let a = [(1, 1.0), (7, 2.0), (13, 0.5)];
        let b = [(7, 3.0), (9, 1.0), (25, 2.0)];
        for interval in [0, 5, 10] {
            let mut all: Vec<(i64, f64)> = a.iter().chain(b.iter()).copied().collect();
            let (mut t1, mut v1): (Vec<i64>, Vec<f64>) = all.iter().copied().unzip();
            sort_and_dedup(&mut t1, &mut v1, interval);
            let (mut ta, mut va): (Vec<i64>, Vec<f64>) = a.iter().copied().unzip();
            sort_and_dedup(&mut ta, &mut va, interval);
            all = ta.into_iter().zip(va).chain(b.iter().copied()).collect();
            let (mut t2, mut v2): (Vec<i64>, Vec<f64>) = all.into_iter().unzip();
            sort_and_dedup(&mut t2, &mut v2, interval);
            assert_eq!((t1, v1), (t2, v2));
        }
    }
}
