//! Raw sample export: `GET|POST /api/v1/export?match[]=<selector>&start=&end=`.
//!
//! The response is one JSON line per series in the import format, so that an
//! export can be imported back unchanged:
//!
//! ```text
//! {"metric":{"__name__":"up","job":"x"},"values":[1,2.5,"NaN"],"timestamps":[1700000000000,1700000015000,1700000030000]}
//! ```
//!
//! - Finite values are written in the shortest form that parses back to the
//!   same float; integers below 1e15 without a fraction (`1`, not `1.0`).
//! - Non-finite values are the strings `"NaN"`, `"Inf"`, `"-Inf"`, which keeps
//!   every line valid JSON.
//! - Staleness markers are left out (and counted): parsing `"NaN"` back gives
//!   an ordinary NaN, so writing them would turn "series ended" into a value.
//!   A series whose samples in range are all markers is left out.
//! - Several `match[]` are a union: a series matching more than one is
//!   written once.
//!
//! The body is streamed: a blocking task walks the storage search and sends
//! chunks of about `CHUNK_BYTES` over a channel of `CHANNEL_CHUNKS`, so memory
//! stays bounded whatever the export size (except the set of exported label
//! sets kept for the union when there is more than one selector). A storage
//! error found after streaming began is logged, counted, and ends the
//! response without its final chunk, so the client sees a truncated
//! transfer rather than a short but well-formed export.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strata_storage::mergeset::MergesetError;
use strata_storage::part::PartError;
use strata_storage::wal::WalError;
use strata_storage::{
    Label, Matcher, SeriesData, Storage, StorageError, Tenant, TimeRange, is_stale_nan,
};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{ExportStats, Metrics};
use crate::selector::{SelectorError, parse_series_selector};
use crate::time::{TimeParseError, parse_time};

/// Size at which a chunk of lines is handed to the HTTP body.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the storage reader and the client.
pub(crate) const CHANNEL_CHUNKS: usize = 4;
/// Seconds a client should wait before retrying when storage is unavailable.
const RETRY_AFTER_SECONDS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("missing match[] parameter: give at least one series selector")]
    MissingMatch,
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error(transparent)]
    Time(#[from] TimeParseError),
    #[error("end {end} ms is before start {start} ms")]
    EmptyRange { start: i64, end: i64 },
    #[error("request body must be application/x-www-form-urlencoded, got {0:?}")]
    BodyType(String),
    #[error("cannot search storage: {0}")]
    Storage(StorageError),
    #[error("internal error while searching storage: {0}")]
    Internal(String),
}

impl ExportError {
    pub fn status(&self) -> StatusCode {
        match self {
            ExportError::MissingMatch
            | ExportError::Selector(_)
            | ExportError::Time(_)
            | ExportError::EmptyRange { .. } => StatusCode::BAD_REQUEST,
            ExportError::BodyType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ExportError::Storage(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ExportError::Storage(_) | ExportError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `result` label of the export requests counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ExportError::MissingMatch
            | ExportError::Selector(_)
            | ExportError::Time(_)
            | ExportError::EmptyRange { .. }
            | ExportError::BodyType(_) => "bad_request",
            ExportError::Storage(e) if e.is_transient() => "storage_unavailable",
            ExportError::Storage(_) => "storage_error",
            ExportError::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for ExportError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// The `reason` label of the stream errors counter.
fn error_kind(e: &StorageError) -> &'static str {
    match e {
        StorageError::Closed | StorageError::Wal(WalError::Closed) => "closed",
        StorageError::Io { .. }
        | StorageError::Wal(WalError::Io { .. })
        | StorageError::Index(MergesetError::Io { .. })
        | StorageError::Part(PartError::Io { .. }) => "io",
        StorageError::Wal(WalError::Corrupted { .. })
        | StorageError::Index(MergesetError::Corrupted { .. })
        | StorageError::Part(PartError::Corrupted { .. }) => "corrupted",
        StorageError::NodesUnavailable(_) => "nodes_unavailable",
        _ => "other",
    }
}

/// A validated export request.
#[derive(Debug)]
pub struct ExportRequest {
    /// Alternatives of every selector; a series matching any one is exported.
    pub matchers: Vec<Vec<Matcher>>,
    pub range: TimeRange,
}

impl ExportRequest {
    /// Builds the request from URL-decoded parameters. Of repeated `start`
    /// or `end`, the first counts.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ExportRequest, ExportError> {
        let mut matchers = Vec::new();
        let mut start = None;
        let mut end = None;
        for (name, value) in params {
            match name {
                "match[]" => matchers.extend(parse_series_selector(value)?),
                "start" if start.is_none() => start = Some(parse_time("start", value)?),
                "end" if end.is_none() => end = Some(parse_time("end", value)?),
                _ => {}
            }
        }
        if matchers.is_empty() {
            return Err(ExportError::MissingMatch);
        }
        let range = TimeRange::new(
            start.unwrap_or(TimeRange::ALL.start),
            end.unwrap_or(TimeRange::ALL.end),
        );
        if range.end < range.start {
            return Err(ExportError::EmptyRange {
                start: range.start,
                end: range.end,
            });
        }
        Ok(ExportRequest { matchers, range })
    }
}

#[derive(Clone)]
struct ExportState {
    storage: Arc<Storage>,
    tenant: Tenant,
    metrics: Metrics,
}

/// Routes of the export endpoint reading `tenant`.
pub fn router(storage: Arc<Storage>, tenant: Tenant, metrics: Metrics) -> Router {
    Router::new()
        .route("/api/v1/export", get(export).post(export))
        .with_state(ExportState {
            storage,
            tenant,
            metrics,
        })
}

async fn export(
    State(state): State<ExportState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let metrics = state.metrics.clone();
    match start_export(state, query, &headers, body).await {
        Ok(response) => {
            metrics.export_request("ok");
            response
        }
        Err(e) => {
            metrics.export_request(e.metric_label());
            if e.status().is_server_error() {
                tracing::warn!(error = %e, "Export failed.");
            }
            e.into_response()
        }
    }
}

async fn start_export(
    state: ExportState,
    query: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ExportError> {
    let request = parse_request(query.as_deref(), headers, &body)?;

    let (ready_tx, ready_rx) = oneshot::channel();
    let (chunks_tx, mut chunks_rx) = mpsc::channel(CHANNEL_CHUNKS);
    let task = tokio::task::spawn_blocking(move || {
        produce(
            &state.storage,
            state.tenant,
            &request,
            ready_tx,
            &chunks_tx,
            &state.metrics,
        )
    });
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ExportError::Storage(e)),
        // The task ended without a word: it panicked.
        Err(_) => {
            let why = match task.await {
                Err(e) => e.to_string(),
                Ok(()) => "export task ended early".to_string(),
            };
            return Err(ExportError::Internal(why));
        }
    }
    let stream = futures_util::stream::poll_fn(move |cx| chunks_rx.poll_recv(cx));
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The request from the URL query and a form body.
pub fn parse_request(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ExportRequest, ExportError> {
    if !body.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(ExportError::BodyType(content_type));
        }
    }
    // Prometheus merges URL and form parameters; URL ones come first.
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .chain(form_urlencoded::parse(body))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    ExportRequest::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The `reason` label of a stream error, logged at the level it deserves.
fn stream_error(metrics: &Metrics, tenant: Tenant, e: &StorageError) {
    let kind = error_kind(e);
    if kind == "corrupted" {
        tracing::error!(%tenant, error = %e, "Export cut short by corrupted data.");
    } else {
        tracing::warn!(%tenant, error = %e, "Export cut short by a storage error.");
    }
    metrics.export_stream_error(kind);
}

/// Runs the searches, reports whether they started, then streams the lines.
fn produce(
    storage: &Storage,
    tenant: Tenant,
    request: &ExportRequest,
    ready: oneshot::Sender<Result<(), StorageError>>,
    chunks: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    metrics: &Metrics,
) {
    let mut searches = Vec::with_capacity(request.matchers.len());
    for matchers in &request.matchers {
        match storage.search(tenant, matchers, request.range) {
            Ok(series) => searches.push(series),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    if ready.send(Ok(())).is_err() {
        return;
    }
    let mut out = LineWriter::new(tenant, metrics, chunks, searches.len() > 1);
    for item in searches.into_iter().flatten() {
        match item {
            Ok(series) => {
                if !out.write(&series) {
                    return;
                }
            }
            Err(e) => return out.fail(&e),
        }
    }
    out.finish();
}

/// The body of an export being written: series as JSON lines, handed to
/// the client in chunks of about `CHUNK_BYTES`, and the counts of what was
/// written.
pub(crate) struct LineWriter<'a> {
    tenant: Tenant,
    metrics: &'a Metrics,
    chunks: &'a mpsc::Sender<Result<Bytes, std::io::Error>>,
    /// Several selectors: a series matching more than one is written once.
    union: bool,
    seen: HashSet<Vec<Label>>,
    stats: ExportStats,
    buf: String,
}

impl<'a> LineWriter<'a> {
    pub(crate) fn new(
        tenant: Tenant,
        metrics: &'a Metrics,
        chunks: &'a mpsc::Sender<Result<Bytes, std::io::Error>>,
        union: bool,
    ) -> LineWriter<'a> {
        LineWriter {
            tenant,
            metrics,
            chunks,
            union,
            seen: HashSet::new(),
            stats: ExportStats::default(),
            buf: String::with_capacity(CHUNK_BYTES * 2),
        }
    }

    /// Writes `series` (once per label set in a union). False when the
    /// client went away: what was written is counted, and the export ends.
    pub(crate) fn write(&mut self, series: &SeriesData) -> bool {
        if self.union && !self.seen.insert(series.labels.clone()) {
            return true;
        }
        self.stats += write_series_line(&mut self.buf, series);
        if self.buf.len() < CHUNK_BYTES {
            return true;
        }
        let chunk = std::mem::replace(&mut self.buf, String::with_capacity(CHUNK_BYTES * 2));
        if self.chunks.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            tracing::debug!(tenant = %self.tenant, "Export client went away.");
            self.metrics.export_written(self.stats);
            return false;
        }
        true
    }

    /// Ends the export on a storage error found after it started: what
    /// was written goes out, then the transfer is cut.
    pub(crate) fn fail(self, e: &StorageError) {
        stream_error(self.metrics, self.tenant, e);
        self.metrics.export_written(self.stats);
        if !self.buf.is_empty()
            && self
                .chunks
                .blocking_send(Ok(Bytes::from(self.buf)))
                .is_err()
        {
            return;
        }
        let _ = self
            .chunks
            .blocking_send(Err(std::io::Error::other(e.to_string())));
    }

    /// Ends a complete export.
    pub(crate) fn finish(self) {
        if !self.buf.is_empty() {
            let _ = self.chunks.blocking_send(Ok(Bytes::from(self.buf)));
        }
        self.metrics.export_written(self.stats);
    }
}

/// Appends one JSON line for `series` to `out`; writes nothing when no sample
/// remains once staleness markers are left out.
fn write_series_line(out: &mut String, series: &SeriesData) -> ExportStats {
    let mut stats = ExportStats::default();
    let kept = series
        .values
        .iter()
        .zip(&series.timestamps)
        .filter(|(v, _)| !is_stale_nan(**v));
    let (values, timestamps): (Vec<f64>, Vec<i64>) = kept.map(|(v, t)| (*v, *t)).unzip();
    stats.stale_markers_skipped = (series.values.len() - values.len()) as u64;
    if values.is_empty() {
        return stats;
    }
    stats.series = 1;
    stats.samples = values.len() as u64;

    out.push_str("{\"metric\":{");
    for (i, label) in series.labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, &label.name);
        out.push(':');
        push_json_string(out, &label.value);
    }
    out.push_str("},\"values\":[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_value(out, *v);
    }
    out.push_str("],\"timestamps\":[");
    for (i, t) in timestamps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{t}");
    }
    out.push_str("]}\n");
    stats
}

/// Writes `v` so that parsing it back gives the same bits (NaN payloads
/// aside, which is why staleness markers are never passed here).
pub fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v == f64::INFINITY {
        out.push_str("\"Inf\"");
    } else if v == f64::NEG_INFINITY {
        out.push_str("\"-Inf\"");
    } else if v.fract() == 0.0 && v.abs() < 1e15 && v != 0.0 {
        // Display has no exponent and no ".0" for integers in this range.
        let _ = write!(out, "{v}");
    } else {
        // Debug is the shortest repr that round-trips, with an exponent for
        // very large or small magnitudes, and keeps the sign of -0.0.
        let _ = write!(out, "{v:?}");
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use strata_storage::{MatchOp, STALE_NAN_BITS};

    use super::*;

    fn value_text(v: f64) -> String {
        let mut s = String::new();
        push_value(&mut s, v);
        s
    }

    /// What the import side does with a value: JSON numbers parse as floats,
    /// strings through Rust's float grammar.
    fn parse_back(text: &str) -> f64 {
        match serde_json::from_str::<serde_json::Value>(text).expect("valid JSON") {
            serde_json::Value::Number(n) => n.as_f64().expect("f64"),
            serde_json::Value::String(s) => s.parse().expect("float string"),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn values_have_a_fixed_text_form() {
        let check = |v: f64, want: &str| assert_eq!(value_text(v), want, "{v:?}");
        check(1.0, "1");
        check(-42.0, "-42");
        check(2.5, "2.5");
        check(0.1, "0.1");
        check(0.0, "0.0");
        check(-0.0, "-0.0");
        check(1e300, "1e300");
        check(-1.5e-7, "-1.5e-7");
        check(999_999_999_999_999.0, "999999999999999");
        check(1e15, "1000000000000000.0");
        check(1e17, "1e17");
        check(f64::NAN, "\"NaN\"");
        check(f64::INFINITY, "\"Inf\"");
        check(f64::NEG_INFINITY, "\"-Inf\"");
        check(f64::MIN_POSITIVE, "2.2250738585072014e-308");
        check(5e-324, "5e-324");
        check(f64::MAX, "1.7976931348623157e308");
    }

    #[test]
    fn values_round_trip_bit_for_bit() {
        // A fixed xorshift sequence of arbitrary bit patterns plus edge cases.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut values = vec![0.0, -0.0, 1.0, 0.1, 1e300, -1e-300, 123456.789, 1e15, 1e16];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f64::from_bits(x));
            values.push((x % 1_000_000) as f64 / 1000.0);
        }
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let text = value_text(v);
            let back = parse_back(&text);
            assert_eq!(back.to_bits(), v.to_bits(), "{v:?} written as {text}");
        }
        assert!(parse_back(&value_text(f64::NAN)).is_nan());
        assert_eq!(parse_back(&value_text(f64::INFINITY)), f64::INFINITY);
        assert_eq!(
            parse_back(&value_text(f64::NEG_INFINITY)),
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn series_line_is_import_format_without_stale_markers() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let series = SeriesData {
            labels: vec![
                Label::new("__name__", "up"),
                Label::new("path", "C:\\x \"q\"\n\u{1}é"),
            ],
            timestamps: vec![1, 2, 3, 4],
            values: vec![1.0, stale, f64::NAN, -2.5],
        };
        let mut out = String::new();
        let stats = write_series_line(&mut out, &series);
        assert_eq!(
            out,
            concat!(
                r#"{"metric":{"__name__":"up","path":"C:\\x \"q\"\n\u0001é"},"#,
                r#""values":[1,"NaN",-2.5],"timestamps":[1,3,4]}"#,
                "\n"
            )
        );
        assert_eq!(
            stats,
            ExportStats {
                series: 1,
                samples: 3,
                stale_markers_skipped: 1
            }
        );
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(parsed["metric"]["path"], "C:\\x \"q\"\n\u{1}é");

        let only_stale = SeriesData {
            labels: vec![Label::new("__name__", "gone")],
            timestamps: vec![1, 2],
            values: vec![stale, stale],
        };
        let mut out = String::new();
        let stats = write_series_line(&mut out, &only_stale);
        assert_eq!(out, "");
        assert_eq!(stats.series, 0);
        assert_eq!(stats.stale_markers_skipped, 2);
    }

    #[test]
    fn request_params_are_validated() {
        let ok = |params: &[(&str, &str)]| {
            ExportRequest::from_params(params.iter().copied()).expect("valid request")
        };
        let r = ok(&[("match[]", "up"), ("match[]", r#"{job=~"a|b"}"#)]);
        assert_eq!(r.matchers.len(), 2);
        assert_eq!(r.matchers[1][0].op, MatchOp::RegexMatch);
        assert_eq!(r.range, TimeRange::ALL);
        let r = ok(&[
            ("start", "1700000000"),
            ("match[]", "up"),
            ("end", "2023-11-14T22:13:21Z"),
            ("start", "garbage is ignored after the first"),
        ]);
        assert_eq!(
            r.range,
            TimeRange::new(1_700_000_000_000, 1_700_000_001_000)
        );

        let bad = |params: &[(&str, &str)], want: &str| {
            let err = ExportRequest::from_params(params.iter().copied()).expect_err(want);
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(err.to_string().contains(want), "{err}");
        };
        bad(&[], "missing match[]");
        bad(&[("start", "1")], "missing match[]");
        bad(&[("match[]", "up{")], "cannot parse series selector");
        bad(&[("match[]", "sum(up)")], "is not a series selector");
        bad(
            &[("match[]", "up"), ("start", "yesterday")],
            "cannot parse start",
        );
        bad(&[("match[]", "up"), ("end", "x")], "cannot parse end");
        bad(
            &[("match[]", "up"), ("start", "10"), ("end", "5")],
            "end 5000 ms is before start 10000 ms",
        );
    }
}
