//! Encoding of one hand-off record (the layout is drawn in the parent
//! module's doc) and of the segment header.

use strata_storage::{Label, Sample, SeriesSamples, Tenant};

/// First bytes of every segment file: the format and its version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"STRHOFF\x01";
/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;
/// First bytes of every record, to find the next record after damage.
pub const RECORD_MAGIC: &[u8; 4] = b"HREC";
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 20;
/// Largest compressed payload of one record.
pub const MAX_PAYLOAD_LEN: usize = 256 << 20;
/// zstd level of payloads: labels repeat a lot, and level 1 costs little.
const ZSTD_LEVEL: i32 = 1;

/// One queued write: the rows a node missed, for one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub tenant: Tenant,
    pub series: Vec<SeriesSamples>,
}

impl Record {
    /// Samples in the record.
    pub fn rows(&self) -> u64 {
        self.series.iter().map(|s| s.samples.len() as u64).sum()
    }
}

/// A record header that checked out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    pub payload_len: u32,
    pub rows: u32,
    pub payload_crc: u32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("record of {0} bytes compressed is over the limit of {MAX_PAYLOAD_LEN}")]
    TooLarge(usize),
    #[error("bad record header: {0}")]
    Header(&'static str),
    #[error("payload checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("cannot decompress the payload: {0}")]
    Decompress(String),
    #[error("payload is malformed at byte {offset}: {what}")]
    Body { offset: usize, what: &'static str },
}

/// The body: tenant and series, before compression.
pub fn encode_body(tenant: Tenant, series: &[&SeriesSamples]) -> Vec<u8> {
    let size: usize = series
        .iter()
        .map(|s| {
            8 + s
                .labels
                .iter()
                .map(|l| 8 + l.name.len() + l.value.len())
                .sum::<usize>()
                + 16 * s.samples.len()
        })
        .sum();
    let mut b = Vec::with_capacity(12 + size);
    b.extend_from_slice(&tenant.account_id.to_le_bytes());
    b.extend_from_slice(&tenant.project_id.to_le_bytes());
    b.extend_from_slice(&(series.len() as u32).to_le_bytes());
    for s in series {
        b.extend_from_slice(&(s.labels.len() as u32).to_le_bytes());
        for l in &s.labels {
            b.extend_from_slice(&(l.name.len() as u32).to_le_bytes());
            b.extend_from_slice(l.name.as_bytes());
            b.extend_from_slice(&(l.value.len() as u32).to_le_bytes());
            b.extend_from_slice(l.value.as_bytes());
        }
        b.extend_from_slice(&(s.samples.len() as u32).to_le_bytes());
        for sample in &s.samples {
            b.extend_from_slice(&sample.timestamp.to_le_bytes());
            b.extend_from_slice(&sample.value.to_bits().to_le_bytes());
        }
    }
    b
}

/// A whole record, header and compressed payload, ready to append.
pub fn encode(tenant: Tenant, series: &[&SeriesSamples]) -> Result<Vec<u8>, RecordError> {
    let rows: u64 = series.iter().map(|s| s.samples.len() as u64).sum();
    let body = encode_body(tenant, series);
    let payload = zstd::bulk::compress(&body, ZSTD_LEVEL)
        .map_err(|e| RecordError::Decompress(format!("compression failed: {e}")))?;
    if payload.len() > MAX_PAYLOAD_LEN || rows > u64::from(u32::MAX) {
        return Err(RecordError::TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[..16]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Checks a record header (`b` holds at least [`RECORD_HEADER_LEN`] bytes).
pub fn decode_header(b: &[u8]) -> Result<Header, RecordError> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Header("short"));
    }
    if &b[..4] != RECORD_MAGIC {
        return Err(RecordError::Header("no record magic"));
    }
    if crc32c::crc32c(&b[..16]) != u32_at(b, 16) {
        return Err(RecordError::Header("header checksum mismatch"));
    }
    let header = Header {
        payload_len: u32_at(b, 4),
        rows: u32_at(b, 8),
        payload_crc: u32_at(b, 12),
    };
    if header.payload_len as usize > MAX_PAYLOAD_LEN {
        return Err(RecordError::Header("payload length over the limit"));
    }
    Ok(header)
}

/// Checks and decodes the payload of a record whose header is `header`.
pub fn decode_payload(header: &Header, payload: &[u8]) -> Result<Record, RecordError> {
    let computed = crc32c::crc32c(payload);
    if computed != header.payload_crc {
        return Err(RecordError::Checksum {
            stored: header.payload_crc,
            computed,
        });
    }
    // The body is at most a few times the compressed size; the bound only
    // guards against a payload that claims absurd sizes.
    let capacity = payload.len().saturating_mul(64).max(1 << 16);
    let body = zstd::bulk::decompress(payload, capacity)
        .map_err(|e| RecordError::Decompress(e.to_string()))?;
    decode_body(&body)
}

/// The inverse of [`encode_body`].
pub fn decode_body(b: &[u8]) -> Result<Record, RecordError> {
    let mut r = Reader { b, at: 0 };
    let tenant = Tenant::new(r.u32()?, r.u32()?);
    let count = r.u32()? as usize;
    let mut series = Vec::with_capacity(count.min(b.len() / 8));
    for _ in 0..count {
        let labels_len = r.u32()? as usize;
        let mut labels = Vec::with_capacity(labels_len.min(b.len() / 8));
        for _ in 0..labels_len {
            let name = r.string()?;
            let value = r.string()?;
            labels.push(Label { name, value });
        }
        let samples_len = r.u32()? as usize;
        let mut samples = Vec::with_capacity(samples_len.min(b.len() / 16));
        for _ in 0..samples_len {
            let timestamp = r.u64()? as i64;
            let value = f64::from_bits(r.u64()?);
            samples.push(Sample { timestamp, value });
        }
        series.push(SeriesSamples { labels, samples });
    }
    if r.at != b.len() {
        return Err(RecordError::Body {
            offset: r.at,
            what: "bytes after the last series",
        });
    }
    Ok(Record { tenant, series })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let Some(end) = end else {
            return Err(RecordError::Body {
                offset: self.at,
                what: "truncated",
            });
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32_at(self.take(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut x = [0u8; 8];
        x.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(x))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let at = self.at;
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Body {
            offset: at,
            what: "label is not UTF-8",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(r: &Record) -> Vec<&SeriesSamples> {
        r.series.iter().collect()
    }

    fn sample_record() -> Record {
        Record {
            tenant: Tenant::new(7, 2),
            series: vec![
                SeriesSamples {
                    labels: vec![Label::new("__name__", "up"), Label::new("job", "a")],
                    samples: vec![Sample::new(1000, 1.0), Sample::new(2000, f64::NAN)],
                },
                SeriesSamples {
                    labels: vec![Label::new("__name__", "x")],
                    samples: vec![Sample::new(-5, -0.5)],
                },
            ],
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// The body bytes of `sample_record`, as the module doc draws them.
    /// A change here is a format change: bump the version in
    /// `SEGMENT_MAGIC` and keep reading the old one.
    const BODY_V1: &str = concat!(
        "07000000",
        "02000000",
        "02000000",
        // series 1: 2 labels
        "02000000",
        "08000000",
        "5f5f6e616d655f5f",
        "02000000",
        "7570",
        "03000000",
        "6a6f62",
        "01000000",
        "61",
        // 2 samples: (1000, 1.0), (2000, NaN)
        "02000000",
        "e803000000000000",
        "000000000000f03f",
        "d007000000000000",
        "000000000000f87f",
        // series 2
        "01000000",
        "08000000",
        "5f5f6e616d655f5f",
        "01000000",
        "78",
        "01000000",
        "fbffffffffffffff",
        "000000000000e0bf",
    );

    #[test]
    fn format_guard_body() {
        let r = sample_record();
        assert_eq!(hex(&encode_body(r.tenant, &refs(&r))), BODY_V1);
        assert_eq!(SEGMENT_MAGIC, b"STRHOFF\x01");
        assert_eq!(RECORD_MAGIC, b"HREC");
    }

    #[test]
    fn format_guard_header() {
        let r = sample_record();
        let bytes = encode(r.tenant, &refs(&r)).expect("encode");
        let payload = &bytes[RECORD_HEADER_LEN..];
        assert_eq!(&bytes[0..4], b"HREC");
        assert_eq!(u32_at(&bytes, 4) as usize, payload.len());
        assert_eq!(u32_at(&bytes, 8), 3, "rows");
        assert_eq!(u32_at(&bytes, 12), crc32c::crc32c(payload));
        assert_eq!(u32_at(&bytes, 16), crc32c::crc32c(&bytes[..16]));
        assert_eq!(
            zstd::bulk::decompress(payload, 1 << 16).expect("zstd frame"),
            unhex(BODY_V1)
        );
    }

    #[test]
    fn records_round_trip_nan_bits_included() {
        let r = sample_record();
        let bytes = encode(r.tenant, &refs(&r)).expect("encode");
        let header = decode_header(&bytes).expect("header");
        let got = decode_payload(&header, &bytes[RECORD_HEADER_LEN..]).expect("payload");
        assert_eq!(got.tenant, r.tenant);
        assert_eq!(got.series.len(), 2);
        let bits = |r: &Record| -> Vec<u64> {
            r.series
                .iter()
                .flat_map(|s| s.samples.iter().map(|x| x.value.to_bits()))
                .collect()
        };
        assert_eq!(bits(&got), bits(&r));
        assert_eq!(got.series[0].labels, r.series[0].labels);
        assert_eq!(got.rows(), 3);
    }

    #[test]
    fn damage_is_detected_where_it_is() {
        let r = sample_record();
        let good = encode(r.tenant, &refs(&r)).expect("encode");
        let check = |at: usize, want: &str| {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            let err = decode_header(&bad)
                .and_then(|h| decode_payload(&h, &bad[RECORD_HEADER_LEN..]))
                .expect_err("damaged");
            assert!(err.to_string().contains(want), "byte {at}: {err}");
        };
        check(0, "no record magic");
        check(5, "header checksum");
        check(9, "header checksum");
        check(17, "header checksum");
        check(RECORD_HEADER_LEN + 3, "payload checksum");
        check(good.len() - 1, "payload checksum");
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let r = sample_record();
        let body = encode_body(r.tenant, &refs(&r));
        for cut in 0..body.len() {
            assert!(decode_body(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = body.clone();
        long.push(0);
        assert!(decode_body(&long).is_err());
        // A huge count with no bytes behind it fails without allocating it.
        let mut huge = unhex("000000000000000000000000");
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_body(&huge).is_err());
    }
}
