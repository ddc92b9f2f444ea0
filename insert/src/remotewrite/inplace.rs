//! Remote write 1.0 decoded in place: label names and values stay borrowed
//! from the decompressed body, so a request of known series allocates a few
//! flat vectors instead of two strings per label.
//!
//! Protobuf layout walked here (field number: wire type, contents):
//! - `WriteRequest`: 1: length-delimited `TimeSeries`, 3: `MetricMetadata`;
//! - `TimeSeries`: 1: `Label`, 2: `Sample`, 3: `Exemplar`, 4: `Histogram`;
//! - `Label`: 1: name (UTF-8 bytes), 2: value (UTF-8 bytes);
//! - `Sample`: 1: 64-bit double value, 2: varint int64 timestamp.
//!
//! A field repeated in a `Label` or `Sample` keeps its last value, unknown
//! fields are skipped, as in any protobuf decoder. This is the common-case
//! path only: a body with metadata, exemplars, histograms, groups or anything
//! malformed yields `None`, and the caller decodes it with
//! [`super::parse_v1`], whose result or error is then the answer. So both
//! paths accept exactly the same requests with the same outcome.

use std::ops::Range;

use strata_storage::{LabelRef, Sample};

/// A request's series, borrowed from its body. Series without samples are
/// left out, as in [`super::parse_v1`].
#[derive(Debug, Default, PartialEq)]
pub struct Series<'a> {
    /// The labels of every series, one after the other.
    pub labels: Vec<LabelRef<'a>>,
    /// The samples of every series, one after the other.
    pub samples: Vec<Sample>,
    /// Per series: its ranges in `labels` and `samples`.
    pub spans: Vec<(Range<usize>, Range<usize>)>,
}

impl Series<'_> {
    /// Samples in the request.
    pub fn rows(&self) -> u64 {
        self.samples.len() as u64
    }
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const BYTES: u64 = 2;
const FIXED32: u64 = 5;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may carry one bit only.
                if i == 9 && b > 1 {
                    return None;
                }
                self.buf = &self.buf[i + 1..];
                return Some(value);
            }
        }
        None
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> Option<(u64, u64)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return None;
        }
        Some((key >> 3, key & 7))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }

    fn skip(&mut self, wire_type: u64) -> Option<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            BYTES => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The series of a remote write 1.0 body, or `None` when the body needs
/// the complete decoder (see the module doc).
pub fn parse(body: &[u8]) -> Option<Series<'_>> {
    let mut out = Series::default();
    let mut r = Reader { buf: body };
    while !r.is_empty() {
        match r.key()? {
            (1, BYTES) => series(r.bytes()?, &mut out)?,
            (1 | 3, _) => return None,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Some(out)
}

fn series<'a>(body: &'a [u8], out: &mut Series<'a>) -> Option<()> {
    let labels_start = out.labels.len();
    let samples_start = out.samples.len();
    let mut r = Reader { buf: body };
    while !r.is_empty() {
        match r.key()? {
            (1, BYTES) => out.labels.push(label(r.bytes()?)?),
            (2, BYTES) => out.samples.push(sample(r.bytes()?)?),
            (1..=4, _) => return None,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    if out.samples.len() == samples_start {
        out.labels.truncate(labels_start);
    } else {
        out.spans.push((
            labels_start..out.labels.len(),
            samples_start..out.samples.len(),
        ));
    }
    Some(())
}

fn label(body: &[u8]) -> Option<LabelRef<'_>> {
    let mut label = LabelRef::new("", "");
    let mut r = Reader { buf: body };
    while !r.is_empty() {
        match r.key()? {
            (1, BYTES) => label.name = std::str::from_utf8(r.bytes()?).ok()?,
            (2, BYTES) => label.value = std::str::from_utf8(r.bytes()?).ok()?,
            (1 | 2, _) => return None,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Some(label)
}

fn sample(body: &[u8]) -> Option<Sample> {
    let mut sample = Sample::new(0, 0.0);
    let mut r = Reader { buf: body };
    while !r.is_empty() {
        match r.key()? {
            (1, FIXED64) => {
                let bytes: [u8; 8] = r.take(8)?.try_into().ok()?;
                sample.value = f64::from_le_bytes(bytes);
            }
            (2, VARINT) => sample.timestamp = r.varint()? as i64,
            (1 | 2, _) => return None,
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Some(sample)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use strata_storage::Label;

    use super::*;
    use crate::remotewrite::{parse_v1, proto};

    /// Series as labels and (timestamp, value bits): NaN compares equal.
    type Flat = Vec<(Vec<Label>, Vec<(i64, u64)>)>;

    fn owned(series: &Series<'_>) -> Flat {
        series
            .spans
            .iter()
            .map(|(l, s)| {
                (
                    series.labels[l.clone()]
                        .iter()
                        .map(|l| l.to_label())
                        .collect(),
                    series.samples[s.clone()]
                        .iter()
                        .map(|s| (s.timestamp, s.value.to_bits()))
                        .collect(),
                )
            })
            .collect()
    }

    /// What the complete decoder makes of `body`, in the same shape.
    fn reference(body: &[u8]) -> Option<Flat> {
        let decoded = parse_v1(body).ok()?;
        Some(
            decoded
                .parsed
                .series
                .into_iter()
                .map(|s| {
                    (
                        s.labels,
                        s.samples
                            .iter()
                            .map(|s| (s.timestamp, s.value.to_bits()))
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    fn label(name: &str, value: &str) -> proto::Label {
        proto::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn request() -> proto::WriteRequest {
        proto::WriteRequest {
            timeseries: vec![
                proto::TimeSeries {
                    labels: vec![label("__name__", "up"), label("job", "é")],
                    samples: vec![
                        proto::Sample {
                            value: 1.5,
                            timestamp: -3,
                        },
                        proto::Sample {
                            value: f64::NAN,
                            timestamp: i64::MAX,
                        },
                    ],
                    ..Default::default()
                },
                proto::TimeSeries {
                    labels: vec![label("a", "")],
                    ..Default::default()
                },
                proto::TimeSeries {
                    labels: vec![],
                    samples: vec![proto::Sample::default()],
                    ..Default::default()
                },
            ],
            metadata: vec![],
        }
    }

    #[test]
    fn agrees_with_the_complete_decoder() {
        let body = request().encode_to_vec();
        let fast = parse(&body).expect("common case");
        assert_eq!(Some(owned(&fast)), reference(&body));
        assert_eq!(fast.rows(), 3);
        assert_eq!(fast.spans.len(), 2);
    }

    #[test]
    fn leaves_the_rare_and_the_malformed_to_the_complete_decoder() {
        let check = |body: &[u8], what: &str| {
            assert_eq!(parse(body), None, "{what}");
        };
        let mut with_metadata = request();
        with_metadata.metadata = vec![proto::MetricMetadata::default()];
        check(&with_metadata.encode_to_vec(), "metadata");
        let mut with_histogram = request();
        with_histogram.timeseries[0].histograms = vec![proto::Histogram::default()];
        check(&with_histogram.encode_to_vec(), "histogram");
        let mut with_exemplar = request();
        with_exemplar.timeseries[0].exemplars = vec![proto::Exemplar::default()];
        check(&with_exemplar.encode_to_vec(), "exemplar");
        let body = request().encode_to_vec();
        check(&body[..body.len() - 1], "truncated");
        check(
            &[0x0a, 0x04, 0x0a, 0x02, 0x0a, 0x05],
            "label name missing bytes",
        );
        check(&[0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff], "invalid utf-8");
        check(&[0x08, 0x01], "timeseries as varint");
        check(&[0x0b], "group");
    }

    /// Every prefix and every single-byte change of a valid body: whatever
    /// the fast path accepts, the complete decoder accepts the same way.
    #[test]
    fn never_disagrees_on_damaged_bodies() {
        let body = request().encode_to_vec();
        let mut bodies: Vec<Vec<u8>> = (0..body.len()).map(|n| body[..n].to_vec()).collect();
        for i in 0..body.len() {
            for b in [0x00, 0x01, 0x07, 0x0a, 0x12, 0x7f, 0x80, 0xff] {
                let mut damaged = body.clone();
                damaged[i] = b;
                bodies.push(damaged);
            }
        }
        for damaged in &bodies {
            if let Some(fast) = parse(damaged) {
                assert_eq!(Some(owned(&fast)), reference(damaged), "{damaged:02x?}");
            }
        }
    }
}
