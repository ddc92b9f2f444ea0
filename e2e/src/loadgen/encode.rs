//! Remote write 1.0 request bodies: a `prometheus.WriteRequest` (the
//! messages of `strata_insert::remotewrite::proto`) compressed with the
//! snappy block format (no framing), as `/api/v1/write` expects.
//!
//! ```text
//! WriteRequest  0x0A len TimeSeries   0x0A len TimeSeries   ...   (field 1, repeated)
//! TimeSeries    0x0A len Label ... (field 1, labels sorted by name)   0x12 len Sample (field 2)
//! Sample        0x09 f64-le value   0x10 varint timestamp-ms   (each omitted when 0)
//! ```
//!
//! A series' labels are encoded once, by prost from the shared structs, and
//! copied into every request; only the sample is encoded per request.
//! Building `String`-owning structs for every sample would cost the
//! generator about as much CPU as a server spends ingesting the sample, and
//! the generator shares the machine with the server it measures. Repeated
//! fields may be written piece by piece, so the bytes decode to exactly the
//! `WriteRequest` built from the structs (the tests check that).

use prost::Message;
use strata_insert::remotewrite::proto::{Label, Sample, TimeSeries};

/// Key of a length-delimited field 1 (`WriteRequest.timeseries`).
const KEY_TIMESERIES: u8 = (1 << 3) | 2;
/// Key of a length-delimited field 2 (`TimeSeries.samples`).
const KEY_SAMPLES: u8 = (2 << 3) | 2;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode a remote write message: {0}")]
    Protobuf(#[from] prost::EncodeError),
    #[error("cannot compress a body of {raw_bytes} bytes with snappy: {source}")]
    Snappy {
        raw_bytes: usize,
        #[source]
        source: snap::Error,
    },
}

/// Appends the encoded labels of a series (the `labels` field of its
/// `TimeSeries`), sorted by name as remote write requires.
pub fn encode_labels(labels: &[(String, String)], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut labels: Vec<Label> = labels
        .iter()
        .map(|(name, value)| Label {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries {
        labels,
        ..TimeSeries::default()
    }
    .encode(out)?;
    Ok(())
}

/// A compressed request body ready to send.
#[derive(Clone, Debug)]
pub struct Body {
    pub bytes: bytes::Bytes,
    pub samples: u64,
    /// Size before compression.
    pub raw_bytes: u64,
}

/// Builds one request body at a time, reusing its buffers.
pub struct BodyBuilder {
    raw: Vec<u8>,
    samples: u64,
    encoder: snap::raw::Encoder,
}

impl Default for BodyBuilder {
    fn default() -> BodyBuilder {
        BodyBuilder::new()
    }
}

impl BodyBuilder {
    pub fn new() -> BodyBuilder {
        BodyBuilder {
            raw: Vec::new(),
            samples: 0,
            encoder: snap::raw::Encoder::new(),
        }
    }

    /// Appends one series with one sample; `labels` from `encode_labels`.
    pub fn push(&mut self, labels: &[u8], timestamp: i64, value: f64) -> Result<(), EncodeError> {
        let sample = Sample { value, timestamp };
        let sample_len = sample.encoded_len();
        let series_len = labels.len() + 1 + prost::length_delimiter_len(sample_len) + sample_len;
        self.raw.push(KEY_TIMESERIES);
        prost::encode_length_delimiter(series_len, &mut self.raw)?;
        self.raw.extend_from_slice(labels);
        self.raw.push(KEY_SAMPLES);
        sample.encode_length_delimited(&mut self.raw)?;
        self.samples += 1;
        Ok(())
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The uncompressed `WriteRequest` so far.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Compresses what was pushed and starts a new body.
    pub fn finish(&mut self) -> Result<Body, EncodeError> {
        let raw_bytes = self.raw.len();
        let mut out = vec![0; snap::raw::max_compress_len(raw_bytes)];
        let n = self
            .encoder
            .compress(&self.raw, &mut out)
            .map_err(|source| EncodeError::Snappy { raw_bytes, source })?;
        out.truncate(n);
        let body = Body {
            bytes: out.into(),
            samples: self.samples,
            raw_bytes: raw_bytes as u64,
        };
        self.raw.clear();
        self.samples = 0;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_insert::remotewrite::proto::WriteRequest;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn proto_labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    #[test]
    fn bodies_decode_to_the_request_built_from_structs() {
        let a = [("__name__", "up"), ("job", "node"), ("instance", "h:9100")];
        let b = [("__name__", "x"), ("a", "")];
        let mut la = Vec::new();
        encode_labels(&labels(&a), &mut la).expect("encode labels");
        let mut lb = Vec::new();
        encode_labels(&labels(&b), &mut lb).expect("encode labels");
        // Zero values and timestamps are omitted on the wire; NaN and
        // negative timestamps take the longest forms.
        let samples = [
            (1_700_000_000_123, 1.5),
            (0, 0.0),
            (-1, f64::NAN),
            (i64::MAX, f64::NEG_INFINITY),
        ];
        let mut builder = BodyBuilder::new();
        let mut want = WriteRequest::default();
        for (i, (t, v)) in samples.into_iter().enumerate() {
            let (encoded, pairs) = if i % 2 == 0 {
                (&la, &a[..])
            } else {
                (&lb, &b[..])
            };
            builder.push(encoded, t, v).expect("push");
            let mut sorted = proto_labels(pairs);
            sorted.sort_by(|x, y| x.name.cmp(&y.name));
            want.timeseries.push(TimeSeries {
                labels: sorted,
                samples: vec![Sample {
                    value: v,
                    timestamp: t,
                }],
                ..TimeSeries::default()
            });
        }
        assert_eq!(builder.raw(), want.encode_to_vec().as_slice());
        let body = builder.finish().expect("finish");
        assert_eq!(body.samples, 4);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body.bytes)
            .expect("snappy block");
        assert_eq!(raw.len() as u64, body.raw_bytes);
        let got = WriteRequest::decode(raw.as_slice()).expect("decode");
        assert_eq!(got.timeseries.len(), 4);
        assert_eq!(got.timeseries[0].labels[0].name, "__name__");
        assert_eq!(got.timeseries[0].labels[1].name, "instance");
        assert!(got.timeseries[2].samples[0].value.is_nan());
        // The builder starts over after `finish`.
        assert_eq!(builder.samples(), 0);
        assert!(builder.raw().is_empty());
    }
}
