//! Payloads the engine writes into the write-ahead log.
//!
//! ```text
//! record  = kind u8 | body
//! kind 1 (series): count varint | (id u64 LE | account u32 LE | project u32 LE |
//!                  n varint | (name_len varint | name | value_len varint | value)^n)^count
//! kind 2 (rows):   n u32 LE | (id u64 LE | timestamp i64 LE | value bits u64 LE)^n
//! ```
//!
//! A `series` record precedes, in log order, every `rows` record that needs it
//! to be replayed (see `Storage::ensure_registered`). Fixed-width rows keep the
//! append path branch-free; the log is short-lived, so size matters less.

use crate::types::{Label, SeriesId, Tenant};

const KIND_SERIES: u8 = 1;
const KIND_ROWS: u8 = 2;
const ROW_BYTES: usize = 24;

#[derive(Debug, PartialEq)]
pub enum Record {
    Series(Vec<(SeriesId, Tenant, Vec<Label>)>),
    Rows(Vec<(SeriesId, i64, f64)>),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn get<const N: usize>(data: &[u8], at: &mut usize) -> Option<[u8; N]> {
    let bytes = data.get(*at..*at + N)?.try_into().ok()?;
    *at += N;
    Some(bytes)
}

fn get_str(data: &[u8], at: &mut usize) -> Option<String> {
    let len = usize::try_from(get_varint(data, at)?).ok()?;
    let bytes = data.get(*at..at.checked_add(len)?)?;
    *at += len;
    String::from_utf8(bytes.to_vec()).ok()
}

pub fn encode_series<'a>(
    series: impl ExactSizeIterator<Item = (SeriesId, Tenant, &'a [Label])>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + series.len() * 200);
    out.push(KIND_SERIES);
    put_varint(&mut out, series.len() as u64);
    for (id, tenant, labels) in series {
        put_series(&mut out, id, tenant, labels);
    }
    out
}

fn put_series(out: &mut Vec<u8>, id: SeriesId, tenant: Tenant, labels: &[Label]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&tenant.account_id.to_le_bytes());
    out.extend_from_slice(&tenant.project_id.to_le_bytes());
    put_varint(out, labels.len() as u64);
    for l in labels {
        put_varint(out, l.name.len() as u64);
        out.extend_from_slice(l.name.as_bytes());
        put_varint(out, l.value.len() as u64);
        out.extend_from_slice(l.value.as_bytes());
    }
}

/// Starts a rows record with room for `n` rows; append each row with
/// `push_row`, then store the final count with `set_row_count`.
pub fn begin_rows(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + n * ROW_BYTES);
    out.push(KIND_ROWS);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out
}

pub fn set_row_count(record: &mut [u8], n: usize) {
    record[1..5].copy_from_slice(&(n as u32).to_le_bytes());
}

pub fn push_row(out: &mut Vec<u8>, id: SeriesId, ts: i64, value: f64) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&value.to_bits().to_le_bytes());
}

pub fn decode(data: &[u8]) -> Option<Record> {
    let mut at = 1;
    match *data.first()? {
        KIND_SERIES => {
            let count = get_varint(data, &mut at)?;
            let mut series = Vec::with_capacity(count.min(4096) as usize);
            for _ in 0..count {
                let id = u64::from_le_bytes(get(data, &mut at)?);
                let account = u32::from_le_bytes(get(data, &mut at)?);
                let project = u32::from_le_bytes(get(data, &mut at)?);
                let n = get_varint(data, &mut at)?;
                let mut labels = Vec::with_capacity(n.min(256) as usize);
                for _ in 0..n {
                    let name = get_str(data, &mut at)?;
                    let value = get_str(data, &mut at)?;
                    labels.push(Label { name, value });
                }
                series.push((id, Tenant::new(account, project), labels));
            }
            (at == data.len()).then_some(Record::Series(series))
        }
        KIND_ROWS => {
            let n = u32::from_le_bytes(get(data, &mut at)?) as usize;
            if data.len() - at != n.checked_mul(ROW_BYTES)? {
                return None;
            }
            let rows = data[at..]
                .chunks_exact(ROW_BYTES)
                .map(|c| {
                    let word = |i: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&c[i * 8..i * 8 + 8]);
                        u64::from_le_bytes(b)
                    };
                    (word(0), word(1) as i64, f64::from_bits(word(2)))
                })
                .collect();
            Some(Record::Rows(rows))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let labels = vec![Label::new("__name__", "up"), Label::new("job", "ñ")];
        let rec = encode_series([(5, Tenant::new(1, 2), labels.as_slice())].into_iter());
        assert_eq!(
            decode(&rec),
            Some(Record::Series(vec![(5, Tenant::new(1, 2), labels)]))
        );
        let mut rows = begin_rows(2);
        push_row(&mut rows, 5, -3, 1.5);
        push_row(
            &mut rows,
            6,
            9,
            f64::from_bits(crate::types::STALE_NAN_BITS),
        );
        match decode(&rows) {
            Some(Record::Rows(r)) => {
                assert_eq!(r.len(), 2);
                assert_eq!((r[0].0, r[0].1, r[0].2), (5, -3, 1.5));
                assert_eq!(r[1].2.to_bits(), crate::types::STALE_NAN_BITS);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(decode(&rows[..rows.len() - 1]), None);
        assert_eq!(decode(&[9]), None);
    }

    #[test]
    fn format_guard() {
        let labels = [Label::new("a", "b")];
        let rec = encode_series([(1, Tenant::new(2, 3), labels.as_slice())].into_iter());
        assert_eq!(
            rec,
            [
                1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1, 1, b'a', 1, b'b'
            ]
        );
        let mut rows = begin_rows(1);
        push_row(&mut rows, 1, 2, 0.0);
        assert_eq!(rows.len(), 5 + 24);
        assert_eq!(&rows[..7], &[2, 1, 0, 0, 0, 1, 0]);
    }
}
