//! OpenTelemetry metrics over OTLP/HTTP: the protobuf
//! `ExportMetricsServiceRequest` (see [`proto`] for the fields read) turned
//! into Prometheus series.
//!
//! Series of one data point (naming rules in [`naming`]):
//! - labels: the resource attributes, then `otel_scope_name` and
//!   `otel_scope_version` (when set), then the point's attributes (which win
//!   over a resource label of the same name). `service.name` becomes `job`
//!   (`service.namespace/service.name` when a namespace is set) and
//!   `service.instance.id` becomes `instance`; these three are not kept
//!   under their own names. Attributes whose names sanitize to the same
//!   label are joined with `;` in key order. Non-string values are rendered:
//!   booleans and numbers as text, bytes as base64, arrays and maps as JSON.
//! - gauge -> one series; sum -> one series, a counter (`_total`) when
//!   monotonic, a gauge otherwise (up-down counters);
//! - histogram -> `_bucket{le=...}` with cumulative counts (bounds as the
//!   shortest decimal, last bucket `+Inf`), `_sum` (when the point has one)
//!   and `_count`; a point without buckets gives `_sum` and `_count` only;
//! - summary -> `{quantile=...}` per quantile, `_sum`, `_count`;
//! - exponential histogram: not stored; its points are skipped, counted
//!   under reason `exponential_histogram` and reported as rejected.
//!
//! Delta temporality (sums and histograms) is stored as sent: each sample is
//! the change over its own interval, so it is read with `sum_over_time`
//! rather than `rate` or `increase`. Nothing is accumulated
//! across requests (that would need per-series state that a restart or a
//! second insert node would lose).
//!
//! Timestamps: `time_unix_nano` truncated to milliseconds; a point without
//! one (0) is skipped (`missing_timestamp`), as the data model asks.
//! A point flagged `NO_RECORDED_VALUE` becomes the staleness marker on every
//! series it would have produced. A number point without a value is
//! skipped (`missing_value`); a histogram point whose bucket counts do not
//! match its bounds, or whose bounds do not increase, is skipped
//! (`invalid_histogram`); the points of a metric with an empty name are
//! skipped (`missing_metric_name`).
//!
//! A request whose series would hold more label text than a bound (4 x the
//! body limit from the HTTP handler) is rejected whole (`too_large_expanded`).

pub mod http;
pub mod naming;
pub mod proto;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost::Message as _;
use strata_storage::{Label, METRIC_NAME_LABEL, STALE_NAN_BITS, Sample, SeriesSamples};

use crate::ingest::Parsed;
use naming::{Kind, label_name, metric_name};
use proto::{
    AnyValue, Data, ExportMetricsServiceRequest, FLAG_NO_RECORDED_VALUE, HistogramDataPoint,
    KeyValue, NumberDataPoint, NumberValue, SummaryDataPoint, Value,
};

/// A request that decoded: the series to write, and the data points that
/// were skipped.
#[derive(Debug, Default, PartialEq)]
pub struct Translated {
    pub parsed: Parsed,
    pub skipped: Skipped,
}

/// Data points not turned into series, with why.
#[derive(Debug, Default, PartialEq)]
pub struct Skipped {
    pub points: u64,
    /// `reason` -> points.
    pub by_reason: BTreeMap<&'static str, u64>,
    /// The first skipped point: `metric "x": exponential histograms are not supported`.
    pub first: Option<String>,
}

impl Skipped {
    fn add(&mut self, reason: &'static str, points: u64, describe: impl FnOnce() -> String) {
        if points == 0 {
            return;
        }
        self.points += points;
        *self.by_reason.entry(reason).or_default() += points;
        if self.first.is_none() {
            self.first = Some(describe());
        }
    }

    /// `skipped 3 data points; first: metric "x": ...`
    pub fn summary(&self) -> String {
        let mut s = format!("skipped {} data points", self.points);
        if let Some(first) = &self.first {
            let _ = write!(s, "; first skipped: {first}");
        }
        s
    }
}

/// Bound on the label text one request may expand to, by default: 4 x the
/// default `--insert.max-body-bytes`.
pub const DEFAULT_MAX_SERIES_BYTES: u64 = 256 << 20;

/// Why a body is rejected whole.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("cannot decode OTLP ExportMetricsServiceRequest protobuf: {0}")]
    Decode(String),
    /// Every series repeats its resource and point labels, so a small body
    /// (one histogram point with thousands of buckets, or many points under
    /// long resource attributes) can expand a hundredfold in memory.
    #[error(
        "request expands to more than {limit} bytes of series labels; split it into smaller \
         requests (the limit is 4 x --insert.max-body-bytes)"
    )]
    TooLarge { limit: u64 },
}

impl ParseError {
    /// The `reason` label of the rejected-rows counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Decode(_) => "invalid_protobuf",
            ParseError::TooLarge { .. } => "too_large_expanded",
        }
    }
}

/// Decodes and translates a whole (decompressed) body, with the default
/// expansion bound.
pub fn parse(body: &[u8]) -> Result<Translated, ParseError> {
    parse_limited(body, DEFAULT_MAX_SERIES_BYTES)
}

/// Decodes and translates a whole (decompressed) body; fails when the
/// series' label text would exceed `max_series_bytes`.
pub fn parse_limited(body: &[u8], max_series_bytes: u64) -> Result<Translated, ParseError> {
    let request =
        ExportMetricsServiceRequest::decode(body).map_err(|e| ParseError::Decode(e.to_string()))?;
    translate(request, max_series_bytes)
}

/// Turns a decoded request into series, within `max_series_bytes` of label
/// text.
pub fn translate(
    request: ExportMetricsServiceRequest,
    max_series_bytes: u64,
) -> Result<Translated, ParseError> {
    let mut budget = Budget {
        left: max_series_bytes,
        exceeded: false,
    };
    let mut out = Translated::default();
    for resource_metrics in request.resource_metrics {
        let resource_labels = resource_labels(
            resource_metrics
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes[..]),
        );
        for scope_metrics in resource_metrics.scope_metrics {
            let mut base = resource_labels.clone();
            if let Some(scope) = &scope_metrics.scope {
                let scope_labels = [
                    Label::new("otel_scope_name", scope.name.as_str()),
                    Label::new("otel_scope_version", scope.version.as_str()),
                ];
                base = merge(
                    base,
                    scope_labels.into_iter().filter(|l| !l.value.is_empty()),
                );
            }
            for metric in scope_metrics.metrics {
                translate_metric(&base, metric, &mut out, &mut budget);
                if budget.exceeded {
                    return Err(ParseError::TooLarge {
                        limit: max_series_bytes,
                    });
                }
            }
        }
    }
    out.parsed.rows = out
        .parsed
        .series
        .iter()
        .map(|s| s.samples.len() as u64)
        .sum();
    Ok(out)
}

/// Label bytes a request may still produce.
struct Budget {
    left: u64,
    exceeded: bool,
}

fn translate_metric(
    base: &[Label],
    metric: proto::Metric,
    out: &mut Translated,
    budget: &mut Budget,
) {
    let Some(data) = metric.data else {
        return;
    };
    if metric.name.is_empty() {
        // An empty `__name__` would be dropped as "no such label", storing
        // the points as nameless series.
        let points = match &data {
            Data::Gauge(g) => g.data_points.len(),
            Data::Sum(s) => s.data_points.len(),
            Data::Histogram(h) => h.data_points.len(),
            Data::ExponentialHistogram(h) => h.data_points.len(),
            Data::Summary(s) => s.data_points.len(),
        };
        out.skipped.add("missing_metric_name", points as u64, || {
            "a metric has an empty name".to_string()
        });
        return;
    }
    let mut emitter = Emitter {
        base,
        metric_name: &metric.name,
        out,
        budget,
    };
    match data {
        Data::Gauge(gauge) => {
            let name = metric_name(&metric.name, &metric.unit, Kind::Gauge);
            for point in gauge.data_points {
                emitter.number(&name, point);
            }
        }
        Data::Sum(sum) => {
            let kind = if sum.is_monotonic {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let name = metric_name(&metric.name, &metric.unit, kind);
            for point in sum.data_points {
                emitter.number(&name, point);
            }
        }
        Data::Histogram(histogram) => {
            let name = metric_name(&metric.name, &metric.unit, Kind::Histogram);
            for point in histogram.data_points {
                emitter.histogram(&name, point);
            }
        }
        Data::Summary(summary) => {
            let name = metric_name(&metric.name, &metric.unit, Kind::Summary);
            for point in summary.data_points {
                emitter.summary(&name, point);
            }
        }
        Data::ExponentialHistogram(histogram) => {
            let points = histogram.data_points.len() as u64;
            emitter
                .out
                .skipped
                .add("exponential_histogram", points, || {
                    format!(
                        "metric {:?}: exponential histograms are not supported; \
                     configure an explicit-bucket histogram aggregation",
                        metric.name
                    )
                });
        }
    }
}

struct Emitter<'a> {
    base: &'a [Label],
    metric_name: &'a str,
    out: &'a mut Translated,
    budget: &'a mut Budget,
}

impl Emitter<'_> {
    fn number(&mut self, name: &str, point: NumberDataPoint) {
        let Some(timestamp) = self.timestamp(point.time_unix_nano) else {
            return;
        };
        let value = if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
            f64::from_bits(STALE_NAN_BITS)
        } else {
            match point.value {
                Some(NumberValue::AsDouble(v)) => v,
                Some(NumberValue::AsInt(v)) => v as f64,
                None => {
                    self.skip("missing_value", "a number point has no value");
                    return;
                }
            }
        };
        let labels = self.labels(&point.attributes);
        self.push(with_name(labels, name), timestamp, value);
    }

    fn histogram(&mut self, name: &str, point: HistogramDataPoint) {
        let Some(timestamp) = self.timestamp(point.time_unix_nano) else {
            return;
        };
        let stale = point.flags & FLAG_NO_RECORDED_VALUE != 0;
        if !point.bucket_counts.is_empty() {
            if point.bucket_counts.len() != point.explicit_bounds.len() + 1 {
                let (counts, bounds) = (point.bucket_counts.len(), point.explicit_bounds.len());
                self.skip("invalid_histogram", &format!(
                    "{counts} bucket counts for {bounds} bounds; want one more count than bounds"
                ));
                return;
            }
            if !point.explicit_bounds.windows(2).all(|w| w[0] < w[1])
                || point.explicit_bounds.iter().any(|b| b.is_nan())
            {
                self.skip("invalid_histogram", "bucket bounds do not increase");
                return;
            }
        }
        let value = |v: f64| {
            if stale {
                f64::from_bits(STALE_NAN_BITS)
            } else {
                v
            }
        };
        let labels = self.labels(&point.attributes);
        if !point.bucket_counts.is_empty() {
            let bucket_name = format!("{name}_bucket");
            let mut cumulative: u64 = 0;
            for (i, count) in point.bucket_counts.iter().enumerate() {
                cumulative = cumulative.saturating_add(*count);
                let le = match point.explicit_bounds.get(i) {
                    Some(bound) => format_float(*bound),
                    None => "+Inf".to_string(),
                };
                let series = with_extra(with_name(copy(&labels), &bucket_name), "le", le);
                self.push(series, timestamp, value(cumulative as f64));
            }
        }
        if let Some(sum) = point.sum {
            self.push(
                with_name(copy(&labels), &format!("{name}_sum")),
                timestamp,
                value(sum),
            );
        }
        self.push(
            with_name(labels, &format!("{name}_count")),
            timestamp,
            value(point.count as f64),
        );
    }

    fn summary(&mut self, name: &str, point: SummaryDataPoint) {
        let Some(timestamp) = self.timestamp(point.time_unix_nano) else {
            return;
        };
        let stale = point.flags & FLAG_NO_RECORDED_VALUE != 0;
        let value = |v: f64| {
            if stale {
                f64::from_bits(STALE_NAN_BITS)
            } else {
                v
            }
        };
        let labels = self.labels(&point.attributes);
        for q in &point.quantile_values {
            let series = with_extra(
                with_name(copy(&labels), name),
                "quantile",
                format_float(q.quantile),
            );
            self.push(series, timestamp, value(q.value));
        }
        self.push(
            with_name(copy(&labels), &format!("{name}_sum")),
            timestamp,
            value(point.sum),
        );
        self.push(
            with_name(labels, &format!("{name}_count")),
            timestamp,
            value(point.count as f64),
        );
    }

    fn timestamp(&mut self, time_unix_nano: u64) -> Option<i64> {
        if self.budget.exceeded {
            // The request is rejected anyway: stop building series.
            return None;
        }
        if time_unix_nano == 0 {
            self.skip("missing_timestamp", "time_unix_nano is 0");
            return None;
        }
        // u64 nanoseconds / 1e6 is below 2^45: always fits.
        Some((time_unix_nano / 1_000_000) as i64)
    }

    fn skip(&mut self, reason: &'static str, why: &str) {
        let metric = self.metric_name;
        self.out
            .skipped
            .add(reason, 1, || format!("metric {metric:?}: {why}"));
    }

    /// The base labels with the point's attributes over them.
    fn labels(&self, attributes: &[KeyValue]) -> Vec<Label> {
        let mut labels = Vec::with_capacity(self.base.len() + attributes.len() + 2);
        labels.extend_from_slice(self.base);
        merge(labels, attribute_labels(attributes))
    }

    fn push(&mut self, labels: Vec<Label>, timestamp: i64, value: f64) {
        let bytes: usize = labels.iter().map(|l| l.name.len() + l.value.len()).sum();
        match self.budget.left.checked_sub(bytes as u64) {
            Some(left) => self.budget.left = left,
            None => {
                self.budget.exceeded = true;
                return;
            }
        }
        self.out.parsed.series.push(SeriesSamples {
            labels,
            samples: vec![Sample::new(timestamp, value)],
        });
    }
}

/// A copy with room for `__name__` and `le`/`quantile`, so that adding them
/// does not grow the vector (allocation dominates translation time).
fn copy(labels: &[Label]) -> Vec<Label> {
    let mut out = Vec::with_capacity(labels.len() + 2);
    out.extend_from_slice(labels);
    out
}

fn with_name(labels: Vec<Label>, name: &str) -> Vec<Label> {
    // No attribute can produce `__name__` (see `naming::label_name`).
    with_extra(labels, METRIC_NAME_LABEL, name.to_string())
}

/// Sets label `name` in sorted `labels`. An attribute of the same name (`le`,
/// `quantile`) is overwritten: the bucket's own label must win.
fn with_extra(mut labels: Vec<Label>, name: &str, value: String) -> Vec<Label> {
    match labels.binary_search_by(|l| l.name.as_str().cmp(name)) {
        Ok(i) => labels[i].value = value,
        Err(i) => labels.insert(i, Label::new(name, value)),
    }
    labels
}

/// Resource attributes as labels, with `job` and `instance` from the
/// service attributes. Sorted by name, names unique.
fn resource_labels(attributes: &[KeyValue]) -> Vec<Label> {
    let mut service_name = None;
    let mut service_namespace = None;
    let mut instance = None;
    let mut rest = Vec::with_capacity(attributes.len());
    for kv in attributes {
        match kv.key.as_str() {
            "service.name" => service_name = Some(any_value_string(kv.value.as_ref())),
            "service.namespace" => service_namespace = Some(any_value_string(kv.value.as_ref())),
            "service.instance.id" => instance = Some(any_value_string(kv.value.as_ref())),
            _ => rest.push(kv.clone()),
        }
    }
    let job = match (service_namespace, service_name) {
        (Some(ns), Some(name)) if !ns.is_empty() => Some(format!("{ns}/{name}")),
        (_, name) => name,
    };
    let service = [
        job.map(|v| Label::new("job", v)),
        instance.map(|v| Label::new("instance", v)),
    ];
    merge(attribute_labels(&rest), service.into_iter().flatten())
}

/// Attributes as sorted, unique labels: sanitized names, values rendered;
/// keys that sanitize alike have their values joined with `;` in key order.
fn attribute_labels(attributes: &[KeyValue]) -> Vec<Label> {
    let mut pairs: Vec<(String, &str, String)> = attributes
        .iter()
        .filter_map(|kv| {
            let name = label_name(&kv.key)?;
            let value = any_value_string(kv.value.as_ref());
            // An empty value means "no such label" to PromQL.
            (!value.is_empty()).then_some((name, kv.key.as_str(), value))
        })
        .collect();
    pairs.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut labels: Vec<Label> = Vec::with_capacity(pairs.len());
    for (name, _, value) in pairs {
        match labels.last_mut() {
            Some(last) if last.name == name => {
                last.value.push(';');
                last.value.push_str(&value);
            }
            _ => labels.push(Label { name, value }),
        }
    }
    labels
}

/// `base` (sorted, unique) with `over` set on it, `over` winning on equal
/// names. `over` is sorted and unique, or short.
fn merge(mut base: Vec<Label>, over: impl IntoIterator<Item = Label>) -> Vec<Label> {
    for label in over {
        match base.binary_search_by(|l| l.name.cmp(&label.name)) {
            Ok(i) => base[i] = label,
            Err(i) => base.insert(i, label),
        }
    }
    base
}

/// How an attribute value reads as a label value.
fn any_value_string(value: Option<&AnyValue>) -> String {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return String::new();
    };
    match value {
        Value::StringValue(s) => s.clone(),
        other => {
            let mut out = String::new();
            render(other, &mut out);
            out
        }
    }
}

/// Renders a non-string value; inside arrays and maps strings are quoted
/// (JSON). Depth is bounded by the protobuf decoder's recursion limit.
fn render(value: &Value, out: &mut String) {
    match value {
        Value::StringValue(s) => out.push_str(&serde_json::Value::from(s.as_str()).to_string()),
        Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        Value::DoubleValue(d) => out.push_str(&format_float(*d)),
        Value::BytesValue(bytes) => base64(bytes, out),
        Value::ArrayValue(array) => {
            out.push('[');
            for (i, v) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_nested(v, out);
            }
            out.push(']');
        }
        Value::KvlistValue(list) => {
            out.push('{');
            for (i, kv) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(kv.key.as_str()).to_string());
                out.push(':');
                match &kv.value {
                    Some(v) => render_nested(v, out),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
    }
}

fn render_nested(value: &AnyValue, out: &mut String) {
    match &value.value {
        None => out.push_str("null"),
        Some(Value::BytesValue(bytes)) => {
            out.push('"');
            base64(bytes, out);
            out.push('"');
        }
        Some(Value::DoubleValue(d)) if !d.is_finite() => {
            let _ = write!(out, "\"{}\"", format_float(*d));
        }
        Some(v) => render(v, out),
    }
}

/// Shortest decimal that reads back as `v`; `+Inf`, `-Inf`, `NaN` as in
/// the Prometheus text format.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests;
