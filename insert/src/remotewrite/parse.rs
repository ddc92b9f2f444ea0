//! Remote write bodies (already decompressed) to [`Parsed`] series, as pure
//! functions: nothing here touches storage or HTTP.
//!
//! What is not stored is counted in [`Skipped`] for the handler to report:
//! native histogram samples (rejected: storage holds floats only), exemplars
//! and metadata (accepted and dropped). A body that is not a valid message
//! (truncated, wrong wire types, invalid UTF-8 in a string, a 2.0 symbol
//! reference out of range) rejects the whole request.

use prost::Message;
use strata_storage::{Label, Sample, SeriesSamples};

use super::proto;
use crate::http::ParseFailure;
use crate::ingest::{Parsed, format_series};

/// A parsed request: the float series to store and what is not stored.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub parsed: Parsed,
    pub skipped: Skipped,
}

/// Parts of a request that are not stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Skipped {
    /// Native histogram samples (rejected, reason `native_histogram`).
    pub histograms: u64,
    /// The first series with histogram samples, for the response.
    pub first_histogram_series: Option<String>,
    /// Exemplars (dropped).
    pub exemplars: u64,
    /// Metadata entries (dropped).
    pub metadata: u64,
}

impl Skipped {
    fn histograms(&mut self, n: usize, labels: impl FnOnce() -> Vec<Label>) {
        if n == 0 {
            return;
        }
        self.histograms += n as u64;
        if self.first_histogram_series.is_none() {
            self.first_histogram_series = Some(format_series(&labels()));
        }
    }
}

fn invalid_protobuf(error: prost::DecodeError) -> ParseFailure {
    ParseFailure {
        reason: "invalid_protobuf",
        message: format!("cannot decode remote write request: {error}"),
        rows: 0,
    }
}

/// Remote write 1.0: a `prometheus.WriteRequest`.
pub fn parse_v1(body: &[u8]) -> Result<Decoded, ParseFailure> {
    let request = proto::WriteRequest::decode(body).map_err(invalid_protobuf)?;
    let mut out = Decoded::default();
    out.skipped.metadata = request.metadata.len() as u64;
    out.parsed.series.reserve(request.timeseries.len());
    for series in request.timeseries {
        out.skipped.exemplars += series.exemplars.len() as u64;
        out.skipped.histograms(series.histograms.len(), || {
            series.labels.iter().map(to_label).collect()
        });
        if series.samples.is_empty() {
            continue;
        }
        out.parsed.rows += series.samples.len() as u64;
        out.parsed.series.push(SeriesSamples {
            labels: series
                .labels
                .into_iter()
                .map(|l| Label {
                    name: l.name,
                    value: l.value,
                })
                .collect(),
            samples: series.samples.iter().map(to_sample).collect(),
        });
    }
    Ok(out)
}

fn to_label(l: &proto::Label) -> Label {
    Label::new(l.name.as_str(), l.value.as_str())
}

fn to_sample(s: &proto::Sample) -> Sample {
    Sample {
        timestamp: s.timestamp,
        value: s.value,
    }
}

/// Remote write 2.0: an `io.prometheus.write.v2.Request`. Every symbol
/// reference is checked; one out of range rejects the request.
pub fn parse_v2(body: &[u8]) -> Result<Decoded, ParseFailure> {
    let request = proto::v2::Request::decode(body).map_err(invalid_protobuf)?;
    let symbols = &request.symbols;
    let mut out = Decoded::default();
    out.parsed.series.reserve(request.timeseries.len());
    for (index, series) in request.timeseries.iter().enumerate() {
        let fail = |message: String| ParseFailure {
            reason: "invalid_symbol_ref",
            message: format!("timeseries[{index}]: {message}"),
            rows: request
                .timeseries
                .iter()
                .map(|s| (s.samples.len() + s.histograms.len()) as u64)
                .sum(),
        };
        let labels = resolve_labels(symbols, &series.labels_refs).map_err(&fail)?;
        for (e, exemplar) in series.exemplars.iter().enumerate() {
            resolve_labels(symbols, &exemplar.labels_refs)
                .map_err(|m| fail(format!("exemplars[{e}]: {m}")))?;
        }
        if let Some(metadata) = &series.metadata {
            for (what, r) in [("help", metadata.help_ref), ("unit", metadata.unit_ref)] {
                symbol(symbols, r).map_err(|m| fail(format!("metadata {what}: {m}")))?;
            }
            out.skipped.metadata += 1;
        }
        out.skipped.exemplars += series.exemplars.len() as u64;
        out.skipped
            .histograms(series.histograms.len(), || labels.clone());
        if series.samples.is_empty() {
            continue;
        }
        out.parsed.rows += series.samples.len() as u64;
        out.parsed.series.push(SeriesSamples {
            labels,
            samples: series.samples.iter().map(to_sample).collect(),
        });
    }
    Ok(out)
}

fn symbol(symbols: &[String], r: u32) -> Result<&str, String> {
    symbols
        .get(r as usize)
        .map(String::as_str)
        .ok_or_else(|| format!("label ref {r} out of range of {} symbols", symbols.len()))
}

fn resolve_labels(symbols: &[String], refs: &[u32]) -> Result<Vec<Label>, String> {
    if !refs.len().is_multiple_of(2) {
        return Err(format!(
            "odd number of label refs ({}): want name, value pairs",
            refs.len()
        ));
    }
    refs.chunks_exact(2)
        .map(|pair| {
            Ok(Label::new(
                symbol(symbols, pair[0])?,
                symbol(symbols, pair[1])?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotewrite::proto::v2;

    fn label(name: &str, value: &str) -> proto::Label {
        proto::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn sample(timestamp: i64, value: f64) -> proto::Sample {
        proto::Sample { value, timestamp }
    }

    #[test]
    fn v1_series_samples_and_skipped_parts() {
        let request = proto::WriteRequest {
            timeseries: vec![
                proto::TimeSeries {
                    labels: vec![label("__name__", "up"), label("job", "a")],
                    samples: vec![sample(1000, 1.0), sample(2000, f64::NAN)],
                    exemplars: vec![proto::Exemplar {
                        labels: vec![label("trace_id", "x")],
                        value: 1.0,
                        timestamp: 1000,
                    }],
                    ..Default::default()
                },
                proto::TimeSeries {
                    labels: vec![label("__name__", "h")],
                    histograms: vec![proto::Histogram::default(); 3],
                    ..Default::default()
                },
            ],
            metadata: vec![proto::MetricMetadata::default(); 2],
        };
        let got = parse_v1(&request.encode_to_vec()).expect("parse");
        assert_eq!(got.parsed.rows, 2);
        assert_eq!(got.parsed.series.len(), 1);
        let series = &got.parsed.series[0];
        assert_eq!(
            series.labels,
            vec![Label::new("__name__", "up"), Label::new("job", "a")]
        );
        assert_eq!(series.samples[0], Sample::new(1000, 1.0));
        assert!(series.samples[1].value.is_nan());
        assert_eq!(
            got.skipped,
            Skipped {
                histograms: 3,
                first_histogram_series: Some("h{}".into()),
                exemplars: 1,
                metadata: 2,
            }
        );
    }

    #[test]
    fn v2_resolves_symbols() {
        let request = v2::Request {
            symbols: ["", "__name__", "up", "job", "a", "help"]
                .map(String::from)
                .to_vec(),
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![sample(5, 2.5)],
                metadata: Some(v2::Metadata {
                    r#type: proto::MetricType::Gauge as i32,
                    help_ref: 5,
                    unit_ref: 0,
                }),
                ..Default::default()
            }],
        };
        let got = parse_v2(&request.encode_to_vec()).expect("parse");
        assert_eq!(
            got.parsed,
            Parsed {
                series: vec![SeriesSamples {
                    labels: vec![Label::new("__name__", "up"), Label::new("job", "a")],
                    samples: vec![Sample::new(5, 2.5)],
                }],
                rows: 1,
            }
        );
        assert_eq!(got.skipped.metadata, 1);
    }

    #[test]
    fn v2_bad_references_name_the_series() {
        let check = |series: v2::TimeSeries, want: &str| {
            let request = v2::Request {
                symbols: ["", "a", "b"].map(String::from).to_vec(),
                timeseries: vec![
                    v2::TimeSeries {
                        labels_refs: vec![1, 2],
                        samples: vec![sample(1, 1.0)],
                        ..Default::default()
                    },
                    series,
                ],
            };
            let failure = parse_v2(&request.encode_to_vec()).expect_err(want);
            assert_eq!(failure.message, want);
            assert_eq!(failure.reason, "invalid_symbol_ref");
            assert_eq!(failure.rows, 3);
        };
        let samples = vec![sample(1, 1.0), sample(2, 1.0)];
        check(
            v2::TimeSeries {
                labels_refs: vec![1, 17],
                samples: samples.clone(),
                ..Default::default()
            },
            "timeseries[1]: label ref 17 out of range of 3 symbols",
        );
        check(
            v2::TimeSeries {
                labels_refs: vec![1, 2, 1],
                samples: samples.clone(),
                ..Default::default()
            },
            "timeseries[1]: odd number of label refs (3): want name, value pairs",
        );
        check(
            v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: samples.clone(),
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![3, 1],
                    ..Default::default()
                }],
                ..Default::default()
            },
            "timeseries[1]: exemplars[0]: label ref 3 out of range of 3 symbols",
        );
        check(
            v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples,
                metadata: Some(v2::Metadata {
                    r#type: 0,
                    help_ref: 9,
                    unit_ref: 0,
                }),
                ..Default::default()
            },
            "timeseries[1]: metadata help: label ref 9 out of range of 3 symbols",
        );
    }

    /// Malformed bodies are parse errors, never panics.
    #[test]
    fn malformed_bodies_are_rejected() {
        let valid = proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: vec![label("__name__", "up")],
                samples: vec![sample(1, 1.0)],
                ..Default::default()
            }],
            metadata: vec![],
        }
        .encode_to_vec();
        type Parse = fn(&[u8]) -> Result<Decoded, ParseFailure>;
        let check = |parse: Parse, body: &[u8], want: &str| {
            let failure = parse(body).expect_err(want);
            assert_eq!(failure.reason, "invalid_protobuf", "{want}");
            assert!(
                failure
                    .message
                    .starts_with("cannot decode remote write request: "),
                "{}",
                failure.message
            );
            assert!(failure.message.contains(want), "{}", failure.message);
        };
        // Truncated inside the sample: in 2.0 an unknown field cut short.
        check(parse_v1, &valid[..valid.len() - 3], "");
        check(parse_v2, &valid[..valid.len() - 3], "");
        // timeseries as a varint instead of a message.
        check(parse_v1, &[0x08, 0x01], "invalid wire type");
        check(parse_v2, &[0x28, 0x01], "invalid wire type");
        // A symbol as a fixed64.
        check(
            parse_v2,
            &[0x21, 0, 0, 0, 0, 0, 0, 0, 0],
            "invalid wire type",
        );
        // Length prefix far beyond the body.
        check(
            parse_v1,
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            "buffer underflow",
        );
        check(
            parse_v2,
            &[0x2a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            "buffer underflow",
        );
        // Varint longer than ten bytes.
        let long_varint = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        check(parse_v1, &long_varint, "varint");
        // Wire type 7 does not exist.
        check(parse_v1, &[0x0f], "wire type");
        check(parse_v2, &[0x0f], "wire type");
        // Invalid UTF-8 in a label name (v1) / symbol (v2).
        let bad_utf8 = [0x0a, 6, 0x0a, 4, 0x0a, 2, 0xc3, 0x28];
        let failure = parse_v1(&bad_utf8).expect_err("invalid UTF-8");
        assert!(failure.message.contains("UTF-8"), "{}", failure.message);
        let failure = parse_v2(&[0x22, 2, 0xc3, 0x28]).expect_err("invalid UTF-8");
        assert!(failure.message.contains("UTF-8"), "{}", failure.message);
    }

    #[test]
    fn empty_bodies_are_empty_requests() {
        assert_eq!(parse_v1(&[]).expect("empty"), Decoded::default());
        assert_eq!(parse_v2(&[]).expect("empty"), Decoded::default());
    }
}
