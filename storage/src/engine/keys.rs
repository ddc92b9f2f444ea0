//! Item layout of the per-partition inverted index, and calendar arithmetic.
//!
//! Every item is a byte string in one `mergeset::Table` per monthly partition;
//! lookups are prefix scans, so the order of fields is the order of lookups.
//!
//! ```text
//! series:   0x01 | series id u64 BE | account u32 BE | project u32 BE | labels
//! posting:  0x02 | account u32 BE | project u32 BE | day | name | 0x00 | value | 0x00 | series id u64 BE
//! day:      0x03 | account u32 BE | project u32 BE | day | series id u64 BE
//!
//! day    = days since 1970-01-01 as i32 with the sign bit flipped, BE (sorts like the number)
//! labels = (escaped name | 0x00 | escaped value | 0x00)*, sorted by name
//! escape: 0x00 -> 0x01 0x01, 0x01 -> 0x01 0x02 (keeps byte order, frees 0x00 as separator)
//! ```
//!
//! Invariants: a series has a `series` item in every partition it has samples
//! in; for every day it has samples on, one `day` item and one `posting` item per
//! label (including `__name__`). Items are never removed; deleted series are
//! filtered through the tombstone set and vanish with their partition.

use crate::types::{Label, SeriesId, Tenant};

pub const KIND_SERIES: u8 = 0x01;
pub const KIND_POSTING: u8 = 0x02;
pub const KIND_DAY: u8 = 0x03;

pub const MS_PER_DAY: i64 = 86_400_000;

/// Days since the epoch of a millisecond timestamp.
pub fn day_of(ts: i64) -> i64 {
    ts.div_euclid(MS_PER_DAY)
}

fn day_bytes(day: i64) -> [u8; 4] {
    let clamped = day.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    ((clamped as u32) ^ 0x8000_0000).to_be_bytes()
}

fn tenant_bytes(out: &mut Vec<u8>, tenant: Tenant) {
    out.extend_from_slice(&tenant.account_id.to_be_bytes());
    out.extend_from_slice(&tenant.project_id.to_be_bytes());
}

fn push_escaped(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            0x00 => out.extend_from_slice(&[0x01, 0x01]),
            0x01 => out.extend_from_slice(&[0x01, 0x02]),
            _ => out.push(b),
        }
    }
}

/// Reads an escaped string up to its 0x00 terminator; returns it and the rest
/// after the terminator.
fn take_escaped(data: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    // Escaping leaves no 0x00 inside a string: the first one ends it.
    let end = data.iter().position(|&b| b == 0x00)?;
    let (escaped, rest) = (&data[..end], &data[end + 1..]);
    if !escaped.contains(&0x01) {
        return Some((escaped.to_vec(), rest));
    }
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&b) = bytes.next() {
        out.push(match b {
            0x01 => match bytes.next()? {
                0x01 => 0x00,
                0x02 => 0x01,
                _ => return None,
            },
            b => b,
        });
    }
    Some((out, rest))
}

/// Unescapes a whole escaped string (no terminator).
pub fn unescape(data: &[u8]) -> Option<Vec<u8>> {
    let mut with_terminator = data.to_vec();
    with_terminator.push(0);
    let (out, rest) = take_escaped(&with_terminator)?;
    rest.is_empty().then_some(out)
}

fn take_string(data: &[u8]) -> Option<(String, &[u8])> {
    let (bytes, rest) = take_escaped(data)?;
    Some((String::from_utf8(bytes).ok()?, rest))
}

/// `series` item.
pub fn series_item(id: SeriesId, tenant: Tenant, labels: &[Label]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        17 + labels
            .iter()
            .map(|l| l.name.len() + l.value.len() + 2)
            .sum::<usize>(),
    );
    out.push(KIND_SERIES);
    out.extend_from_slice(&id.to_be_bytes());
    tenant_bytes(&mut out, tenant);
    push_labels(&mut out, labels);
    out
}

/// The `labels` field of a `series` item.
fn push_labels(out: &mut Vec<u8>, labels: &[Label]) {
    for l in labels {
        push_escaped(out, l.name.as_bytes());
        out.push(0);
        push_escaped(out, l.value.as_bytes());
        out.push(0);
    }
}

/// The 128-bit hash of a label set (sorted by name) by which searches
/// group series and ordered searches sort them: xxh3-128 of the labels'
/// `series` item encoding, so every node computes the same key for the
/// same labels, and the index hands it out with the labels
/// (`lookup_series_keyed` hashes the stored bytes).
pub fn labels_key(labels: &[Label]) -> u128 {
    let mut buf = Vec::with_capacity(
        labels
            .iter()
            .map(|l| l.name.len() + l.value.len() + 2)
            .sum::<usize>(),
    );
    push_labels(&mut buf, labels);
    xxhash_rust::xxh3::xxh3_128(&buf)
}

/// The labels part of a `series` item (after id and tenant): equal label
/// sets have equal bytes.
pub fn series_item_labels(item: &[u8]) -> &[u8] {
    item.get(17..).unwrap_or_default()
}

/// Prefix of the `series` item of `id`.
pub fn series_prefix(id: SeriesId) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = KIND_SERIES;
    out[1..].copy_from_slice(&id.to_be_bytes());
    out
}

/// Decodes a `series` item.
pub fn parse_series_item(item: &[u8]) -> Option<(SeriesId, Tenant, Vec<Label>)> {
    if item.len() < 17 || item[0] != KIND_SERIES {
        return None;
    }
    let id = u64::from_be_bytes(item[1..9].try_into().ok()?);
    let tenant = Tenant::new(
        u32::from_be_bytes(item[9..13].try_into().ok()?),
        u32::from_be_bytes(item[13..17].try_into().ok()?),
    );
    let mut rest = &item[17..];
    // Two terminators per label.
    let mut labels = Vec::with_capacity(rest.iter().filter(|&&b| b == 0x00).count() / 2);
    while !rest.is_empty() {
        let (name, r) = take_string(rest)?;
        let (value, r) = take_string(r)?;
        labels.push(Label { name, value });
        rest = r;
    }
    Some((id, tenant, labels))
}

/// `0x02 | tenant | day` — every posting of a tenant on a day.
pub fn postings_day_prefix(tenant: Tenant, day: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(KIND_POSTING);
    tenant_bytes(&mut out, tenant);
    out.extend_from_slice(&day_bytes(day));
    out
}

/// `... | name | 0x00` — every posting of a label name.
pub fn postings_name_prefix(tenant: Tenant, day: i64, name: &str) -> Vec<u8> {
    let mut out = postings_day_prefix(tenant, day);
    push_escaped(&mut out, name.as_bytes());
    out.push(0);
    out
}

/// `... | name | 0x00 | value | 0x00` — every posting of a label pair.
pub fn postings_pair_prefix(tenant: Tenant, day: i64, name: &str, value: &str) -> Vec<u8> {
    let mut out = postings_name_prefix(tenant, day, name);
    push_escaped(&mut out, value.as_bytes());
    out.push(0);
    out
}

/// Appends the posting items of a series on a day to `out`.
pub fn posting_items(
    tenant: Tenant,
    day: i64,
    labels: &[Label],
    id: SeriesId,
    out: &mut Vec<Vec<u8>>,
) {
    for l in labels {
        let mut item = postings_pair_prefix(tenant, day, &l.name, &l.value);
        item.extend_from_slice(&id.to_be_bytes());
        out.push(item);
    }
}

/// Splits the part of a posting item after `postings_day_prefix` into
/// (name, value, series id).
pub fn parse_posting_suffix(suffix: &[u8]) -> Option<(String, String, SeriesId)> {
    let (name, rest) = take_string(suffix)?;
    let (value, rest) = take_string(rest)?;
    let id = u64::from_be_bytes(rest.try_into().ok()?);
    Some((name, value, id))
}

/// Series id at the end of an item (postings and day items end with it).
pub fn trailing_id(item: &[u8]) -> Option<SeriesId> {
    let at = item.len().checked_sub(8)?;
    Some(u64::from_be_bytes(item[at..].try_into().ok()?))
}

/// `0x03 | tenant | day`
pub fn day_prefix(tenant: Tenant, day: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    out.push(KIND_DAY);
    tenant_bytes(&mut out, tenant);
    out.extend_from_slice(&day_bytes(day));
    out
}

pub fn day_item(tenant: Tenant, day: i64, id: SeriesId) -> Vec<u8> {
    let mut out = day_prefix(tenant, day);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// Tenant of a `day` item, to walk the tenants present in a partition.
pub fn day_item_tenant(item: &[u8]) -> Option<Tenant> {
    if item.len() < 9 || item[0] != KIND_DAY {
        return None;
    }
    Some(Tenant::new(
        u32::from_be_bytes(item[1..5].try_into().ok()?),
        u32::from_be_bytes(item[5..9].try_into().ok()?),
    ))
}

/// The smallest key greater than every key starting with `prefix`, or None
/// when no such key exists (prefix of all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A calendar month, the unit of partitioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    pub fn of_timestamp(ts: i64) -> Month {
        let (year, month, _) = civil_from_days(day_of(ts));
        Month { year, month }
    }

    /// First millisecond of the month.
    pub fn start_ms(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * MS_PER_DAY
    }

    /// First millisecond after the month.
    pub fn end_ms(self) -> i64 {
        self.next().start_ms()
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Directory name, `YYYY_MM`.
    pub fn dir_name(self) -> String {
        format!("{:04}_{:02}", self.year, self.month)
    }

    pub fn parse_dir_name(name: &str) -> Option<Month> {
        let (y, m) = name.split_once('_')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let month = Month {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
        };
        (1..=12).contains(&month.month).then_some(month)
    }
}

/// Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    // Era-based conversion: 400-year eras of 146097 days starting on March 1st.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for day in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let nov = Month::of_timestamp(1_763_700_000_000); // 2025-11-21
        assert_eq!(
            nov,
            Month {
                year: 2025,
                month: 11
            }
        );
        assert_eq!(nov.dir_name(), "2025_11");
        assert_eq!(Month::parse_dir_name("2025_11"), Some(nov));
        assert_eq!(Month::parse_dir_name("2025_13"), None);
        assert!(nov.start_ms() <= 1_763_700_000_000 && 1_763_700_000_000 < nov.end_ms());
        assert_eq!(
            Month {
                year: 2025,
                month: 12
            }
            .next(),
            Month {
                year: 2026,
                month: 1
            }
        );
    }

    #[test]
    fn series_item_round_trips_with_escapes() {
        let labels = vec![
            Label::new("__name__", "up"),
            Label::new("odd", "a\u{0}b\u{1}c"),
            Label::new("z", ""),
        ];
        let t = Tenant::new(7, 9);
        let item = series_item(42, t, &labels);
        assert!(item.starts_with(&series_prefix(42)));
        assert_eq!(parse_series_item(&item), Some((42, t, labels)));
    }

    #[test]
    fn labels_key_hashes_the_stored_labels() {
        let labels = vec![Label::new("__name__", "up"), Label::new("odd", "a\u{0}b")];
        let item = series_item(42, Tenant::new(7, 9), &labels);
        assert_eq!(
            labels_key(&labels),
            xxhash_rust::xxh3::xxh3_128(series_item_labels(&item))
        );
        assert_ne!(labels_key(&labels), labels_key(&labels[..1]));
        // Fixed for good: nodes of one cluster must agree on it.
        assert_eq!(
            labels_key(&[Label::new("__name__", "up")]),
            0xaaed_08d8_23aa_76e6_c980_cf01_d633_e3f5
        );
    }

    #[test]
    fn take_escaped_table() {
        fn check(input: &[u8], want: Option<(&[u8], &[u8])>) {
            let got = take_escaped(input);
            assert_eq!(
                got.as_ref().map(|(s, rest)| (s.as_slice(), *rest)),
                want,
                "{input:?}"
            );
        }
        check(b"abc\0rest", Some((b"abc", b"rest")));
        check(b"\0", Some((b"", b"")));
        check(b"a\x01\x01b\x01\x02\0x", Some((b"a\0b\x01", b"x")));
        check(b"abc", None);
        check(b"a\x01\x03\0", None);
        check(b"a\x01\0", None);
    }

    #[test]
    fn posting_items_sort_by_name_value_id() {
        let t = Tenant::new(1, 0);
        let mut items = Vec::new();
        posting_items(
            t,
            100,
            &[Label::new("a", "x\u{0}"), Label::new("a\u{0}", "")],
            5,
            &mut items,
        );
        posting_items(t, 100, &[Label::new("a", "x")], 9, &mut items);
        let suffixes: Vec<_> = items
            .iter()
            .map(|i| parse_posting_suffix(&i[postings_day_prefix(t, 100).len()..]).expect("parses"))
            .collect();
        assert_eq!(suffixes[0], ("a".into(), "x\u{0}".into(), 5));
        items.sort();
        let first = parse_posting_suffix(&items[0][13..]).expect("parses");
        assert_eq!(
            first,
            ("a".into(), "x".into(), 9),
            "shorter value sorts first"
        );
        assert!(prefix_end(&[1, 0xff]) == Some(vec![2]));
        assert!(prefix_end(&[0xff]).is_none());
    }

    /// Fails when the index item layout changes: existing indexes would no
    /// longer be readable, so a change needs a format version bump.
    #[test]
    fn format_guard() {
        let t = Tenant::new(1, 2);
        let labels = [Label::new("a", "b\u{0}")];
        assert_eq!(
            series_item(3, t, &labels),
            [
                1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, b'a', 0, b'b', 1, 1, 0
            ]
        );
        let mut postings = Vec::new();
        posting_items(t, 19_000, &labels, 3, &mut postings);
        assert_eq!(
            postings,
            vec![vec![
                2, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0, 0x4a, 0x38, b'a', 0, b'b', 1, 1, 0, 0, 0, 0, 0,
                0, 0, 0, 3
            ]]
        );
        assert_eq!(
            day_item(t, -1, 3),
            [
                3, 0, 0, 0, 1, 0, 0, 0, 2, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 3
            ]
        );
    }

    #[test]
    fn days_sort_like_numbers() {
        assert!(day_bytes(-1) < day_bytes(0));
        assert!(day_bytes(0) < day_bytes(1));
        assert!(day_bytes(20_000) < day_bytes(20_001));
    }
}
