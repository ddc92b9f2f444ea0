//! Prometheus remote write ingestion, 1.0 and 2.0, on `POST /api/v1/write`
//! and `POST /prometheus/api/v1/write`.
//!
//! The message is chosen by `Content-Type`: `application/x-protobuf` (or no
//! header, or `;proto=prometheus.WriteRequest`) is 1.0,
//! `application/x-protobuf;proto=io.prometheus.write.v2.Request` is 2.0;
//! anything else is 415. The body is snappy (block format) when
//! `Content-Encoding` says so or is absent (both versions mandate snappy);
//! `zstd`, `gzip` and `identity` are accepted too. Status codes are those of
//! [`crate::http`]. Native histogram samples are not stored: they are counted
//! as rejected (reason `native_histogram`) and the answer is 400 naming the
//! first such series, with the float samples of the request stored.
//! Exemplars and metadata are accepted and dropped (counted in
//! `strata_insert_ignored_total`).
//!
//! 2.0 answers carry `X-Prometheus-Remote-Write-Samples-Written`,
//! `-Histograms-Written` and `-Exemplars-Written` on every status: what this
//! request stored (histograms and exemplars: always 0).

pub mod inplace;
pub mod parse;
pub mod proto;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::post;

pub use self::parse::{Decoded, Skipped, parse_v1, parse_v2};
use crate::http::{IngestError, IngestState, finish, ingest_body_with, respond};
use crate::ingest::Report;

/// The `protocol` label of remote write 1.0.
pub const PROTOCOL_V1: &str = "remote_write_v1";
/// The `protocol` label of remote write 2.0.
pub const PROTOCOL_V2: &str = "remote_write_v2";

/// The `proto` parameter of a 1.0 `Content-Type`.
pub const PROTO_V1: &str = "prometheus.WriteRequest";
/// The `proto` parameter of a 2.0 `Content-Type`.
pub const PROTO_V2: &str = "io.prometheus.write.v2.Request";
/// `Content-Type` of a 2.0 request.
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

pub const HEADER_SAMPLES_WRITTEN: &str = "x-prometheus-remote-write-samples-written";
pub const HEADER_HISTOGRAMS_WRITTEN: &str = "x-prometheus-remote-write-histograms-written";
pub const HEADER_EXEMPLARS_WRITTEN: &str = "x-prometheus-remote-write-exemplars-written";

/// The `reason` of rejected native histogram samples.
pub const REASON_NATIVE_HISTOGRAM: &str = "native_histogram";

/// Which message a request holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// From the `Content-Type` header, per the 2.0 specification.
    pub fn from_content_type(value: Option<&str>) -> Result<Version, String> {
        let Some(value) = value else {
            return Ok(Version::V1);
        };
        let mut parts = value.split(';');
        let media_type = parts.next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(value.to_string());
        }
        let mut version = Version::V1;
        for param in parts {
            let Some((name, proto)) = param.split_once('=') else {
                continue;
            };
            if !name.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            version = match proto.trim().trim_matches('"') {
                PROTO_V1 => Version::V1,
                PROTO_V2 => Version::V2,
                _ => return Err(value.to_string()),
            };
        }
        Ok(version)
    }

    fn protocol(self) -> &'static str {
        match self {
            Version::V1 => PROTOCOL_V1,
            Version::V2 => PROTOCOL_V2,
        }
    }
}

/// The remote write routes, merged into [`crate::http::router`].
pub fn routes() -> Router<IngestState> {
    Router::new()
        .route("/api/v1/write", post(write))
        .route("/prometheus/api/v1/write", post(write))
}

async fn write(
    State(state): State<IngestState>,
    mut headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let version = match Version::from_content_type(content_type.as_deref()) {
        Ok(version) => version,
        Err(value) => {
            let result = Err(IngestError::ContentType(value));
            finish(&state.metrics, PROTOCOL_V1, &result);
            return respond(result);
        }
    };
    let protocol = version.protocol();
    if !headers.contains_key(header::CONTENT_ENCODING) {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    }
    let skipped = Arc::new(OnceLock::new());
    let out = skipped.clone();
    let result = ingest_body_with(&state, protocol, &headers, body, move |body, pipeline| {
        if version == Version::V1
            && let Some(series) = inplace::parse(body)
        {
            return Ok(pipeline.ingest_borrowed(protocol, &series));
        }
        let decoded = match version {
            Version::V1 => parse_v1(body)?,
            Version::V2 => parse_v2(body)?,
        };
        let _ = out.set(decoded.skipped);
        Ok(pipeline.ingest(protocol, decoded.parsed))
    })
    .await;
    let skipped = skipped.get().cloned().unwrap_or_default();
    state
        .metrics
        .ignored(protocol, "exemplar", skipped.exemplars);
    state
        .metrics
        .ignored(protocol, "metadata", skipped.metadata);
    let result = result.map(|report| reject_histograms(report, &skipped));
    if let Ok(report) = &result {
        state.metrics.rows_rejected(
            protocol,
            REASON_NATIVE_HISTOGRAM,
            report
                .rejected_by_reason
                .get(REASON_NATIVE_HISTOGRAM)
                .copied()
                .unwrap_or(0),
        );
    }
    finish(&state.metrics, protocol, &result);
    let written = result.as_ref().map(|r| r.accepted).unwrap_or(0);
    let mut response = respond(result);
    if version == Version::V2 {
        let headers = response.headers_mut();
        headers.insert(HEADER_SAMPLES_WRITTEN, HeaderValue::from(written));
        headers.insert(HEADER_HISTOGRAMS_WRITTEN, HeaderValue::from(0u64));
        headers.insert(HEADER_EXEMPLARS_WRITTEN, HeaderValue::from(0u64));
    }
    response
}

/// Adds the request's native histogram samples to the rejected ones.
fn reject_histograms(mut report: Report, skipped: &Skipped) -> Report {
    if skipped.histograms == 0 {
        return report;
    }
    report.rejected += skipped.histograms;
    *report
        .rejected_by_reason
        .entry(REASON_NATIVE_HISTOGRAM)
        .or_default() += skipped.histograms;
    if report.first_rejection.is_none() {
        report.first_rejection = Some(format!(
            "series {}: native histogram samples are not supported (float samples only)",
            skipped.first_histogram_series.as_deref().unwrap_or("{}")
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_selects_the_message() {
        let check = |value: Option<&str>, want: Result<Version, ()>| {
            assert_eq!(
                Version::from_content_type(value).map_err(|_| ()),
                want,
                "{value:?}"
            );
        };
        check(None, Ok(Version::V1));
        check(Some("application/x-protobuf"), Ok(Version::V1));
        check(
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            Ok(Version::V1),
        );
        check(Some(CONTENT_TYPE_V2), Ok(Version::V2));
        check(
            Some("Application/X-Protobuf; proto=\"io.prometheus.write.v2.Request\""),
            Ok(Version::V2),
        );
        check(
            Some("application/x-protobuf;proto=io.prometheus.write.v3.Request"),
            Err(()),
        );
        check(Some("application/json"), Err(()));
        check(Some("text/plain"), Err(()));
    }

    #[test]
    fn histograms_are_reported_as_rejected() {
        let report = Report {
            accepted: 5,
            ..Report::default()
        };
        let skipped = Skipped {
            histograms: 2,
            first_histogram_series: Some("h{job=\"a\"}".into()),
            ..Skipped::default()
        };
        let got = reject_histograms(report, &skipped);
        assert_eq!(
            got.summary(),
            "stored 5 of 7 samples; rejected 2; first rejected: series h{job=\"a\"}: \
             native histogram samples are not supported (float samples only)"
        );
    }
}
