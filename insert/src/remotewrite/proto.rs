//! Protobuf messages of Prometheus remote write, as plain `prost` structs
//! (no code generation step), public so that senders (tests, the load
//! generator) encode with the same definitions the receiver decodes.
//!
//! Remote write 1.0 (`prometheus.WriteRequest`, package `prometheus`):
//!
//! ```text
//! WriteRequest   1: repeated TimeSeries timeseries   3: repeated MetricMetadata metadata
//!                (2 is reserved)
//! TimeSeries     1: repeated Label labels            2: repeated Sample samples
//!                3: repeated Exemplar exemplars      4: repeated Histogram histograms
//! Label          1: string name                      2: string value
//! Sample         1: double value                     2: int64 timestamp (ms)
//! Exemplar       1: repeated Label labels  2: double value  3: int64 timestamp
//! MetricMetadata 1: enum type  2: string metric_family_name  4: string help  5: string unit
//! ```
//!
//! Remote write 2.0 (`io.prometheus.write.v2.Request`), in [`v2`]: strings
//! live once in `symbols` (which starts with `""`) and are referenced by index:
//!
//! ```text
//! Request     4: repeated string symbols             5: repeated TimeSeries timeseries
//!             (1 to 3 are reserved, so a 1.0 body decodes as an empty Request)
//! TimeSeries  1: repeated uint32 labels_refs (name, value, name, value, ...)
//!             2: repeated Sample samples   3: repeated Histogram histograms
//!             4: repeated Exemplar exemplars   5: Metadata metadata
//!             6: int64 created_timestamp
//! Exemplar    1: repeated uint32 labels_refs  2: double value  3: int64 timestamp
//! Metadata    1: enum type  3: uint32 help_ref  4: uint32 unit_ref
//! ```
//!
//! Both versions share `Sample`'s layout and the native [`Histogram`] message
//! (fields 1 to 16, `BucketSpan` 1: sint32 offset, 2: uint32 length).
//! Field numbers must never change: they are the wire format.

/// Remote write 1.0 request body (before snappy compression).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// One series of a 1.0 request with its samples.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A float sample; the same layout in 1.0 and 2.0.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// Metadata of a metric family (1.0: sent in requests of its own).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// The metric types of both versions (2.0 names them `METRIC_TYPE_*`, same numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    GaugeHistogram = 4,
    Summary = 5,
    Info = 6,
    StateSet = 7,
}

/// A native histogram sample (integer or float counts); same message in 1.0 and 2.0.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    #[prost(enumeration = "histogram::ResetHint", tag = "14")]
    pub reset_hint: i32,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

/// The oneofs and enum of [`Histogram`].
pub mod histogram {
    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Count {
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum ZeroCount {
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ResetHint {
        Unknown = 0,
        Yes = 1,
        No = 2,
        Gauge = 3,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// Remote write 2.0 messages (`io.prometheus.write.v2`).
pub mod v2 {
    pub use super::{BucketSpan, Histogram, MetricType, Sample, histogram};

    /// Remote write 2.0 request body (before compression).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// Every string of the request once; index 0 must be `""`.
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Pairs of indexes into `Request::symbols`: name, value, name, value, ...
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<Histogram>,
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        /// Milliseconds; 0 means unset.
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    #[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
    pub struct Metadata {
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Hand-encoded bytes pin the field numbers and wire types: a change to
    /// a tag breaks this test, not senders in the field.
    #[test]
    fn wire_layout_is_stable() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 2,
                }],
                ..TimeSeries::default()
            }],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "x".into(),
                help: "h".into(),
                unit: "u".into(),
            }],
        };
        let want: Vec<u8> = [
            &[0x0a, 21][..],                          // timeseries, 21 bytes
            &[0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b'], // labels
            &[0x12, 11, 0x09],                        // samples, value: fixed64
            &1.0f64.to_le_bytes(),
            &[0x10, 2], // timestamp varint
            &[
                0x1a, 11, 0x08, 1, 0x12, 1, b'x', 0x22, 1, b'h', 0x2a, 1, b'u',
            ], // metadata
        ]
        .concat();
        assert_eq!(request.encode_to_vec(), want);
        assert_eq!(WriteRequest::decode(&want[..]).expect("decode"), request);

        let v2 = v2::Request {
            symbols: vec![String::new(), "a".into()],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 1],
                created_timestamp: 5,
                ..v2::TimeSeries::default()
            }],
        };
        let want: Vec<u8> = [
            &[0x22, 0, 0x22, 1, b'a'][..],      // symbols
            &[0x2a, 6, 0x0a, 2, 1, 1, 0x30, 5], // timeseries: packed refs, created_timestamp
        ]
        .concat();
        assert_eq!(v2.encode_to_vec(), want);
    }
}
