//! Self-metrics of the query side. Counted once per request, never per sample.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointResultLabels {
    endpoint: &'static str,
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets from 1ms to about 2m (a query timeout).
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

/// Query-side counters; cheap to clone (the counters are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    export_requests: Family<ResultLabels, Counter>,
    export_series: Counter,
    export_samples: Counter,
    export_stale_markers_skipped: Counter,
    export_stream_errors: Family<ReasonLabels, Counter>,
    api_duration: HistogramFamily<EndpointLabels>,
    api_requests: Family<EndpointResultLabels, Counter>,
    queries_rejected: Family<ReasonLabels, Counter>,
    partial_responses: Family<EndpointResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            export_requests: Family::default(),
            export_series: Counter::default(),
            export_samples: Counter::default(),
            export_stale_markers_skipped: Counter::default(),
            export_stream_errors: Family::default(),
            api_duration: Family::new_with_constructor(duration_histogram),
            api_requests: Family::default(),
            queries_rejected: Family::default(),
            partial_responses: Family::default(),
        }
    }
}

/// What one export wrote, added to the counters at the end of the export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub series: u64,
    pub samples: u64,
    pub stale_markers_skipped: u64,
}

impl std::ops::AddAssign for ExportStats {
    fn add_assign(&mut self, other: ExportStats) {
        self.series += other.series;
        self.samples += other.samples;
        self.stale_markers_skipped += other.stale_markers_skipped;
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "strata_select_export_requests",
            "Export requests, by result (ok, or the error kind found before streaming)",
            m.export_requests.clone(),
        );
        registry.register(
            "strata_select_export_series",
            "Series written by exports",
            m.export_series.clone(),
        );
        registry.register(
            "strata_select_export_samples",
            "Samples written by exports",
            m.export_samples.clone(),
        );
        registry.register(
            "strata_select_export_stale_markers_skipped",
            "Staleness markers left out of exports (the export format cannot carry them)",
            m.export_stale_markers_skipped.clone(),
        );
        registry.register(
            "strata_select_export_stream_errors",
            "Exports cut short by a storage error after streaming began, by kind \
             (io, corrupted, closed, nodes_unavailable, other)",
            m.export_stream_errors.clone(),
        );
        registry.register(
            "strata_select_api_request_duration_seconds",
            "Time to answer a Prometheus API request (query, query_range, series, \
             labels, ...), queue wait included, by endpoint",
            m.api_duration.clone(),
        );
        registry.register(
            "strata_select_api_requests",
            "Prometheus API requests, by endpoint and result (ok, or the errorType)",
            m.api_requests.clone(),
        );
        registry.register(
            "strata_select_queries_rejected",
            "Queries refused or stopped by a limit, by reason (queue_full, \
             queue_timeout, timeout, max_points_per_series, max_series, engine_limit)",
            m.queries_rejected.clone(),
        );
        registry.register(
            "strata_select_partial_responses",
            "API answers missing data of storage nodes that did not answer, by endpoint \
             and result (answered with isPartial, or denied by deny_partial_response)",
            m.partial_responses.clone(),
        );
        m
    }

    /// One answered API request: how long it took and how it ended.
    pub fn api_request(&self, endpoint: &'static str, result: &'static str, seconds: f64) {
        self.api_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
        self.api_requests
            .get_or_create(&EndpointResultLabels { endpoint, result })
            .inc();
    }

    /// One partial answer, `answered` or `denied`.
    pub fn partial_response(&self, endpoint: &'static str, result: &'static str) {
        self.partial_responses
            .get_or_create(&EndpointResultLabels { endpoint, result })
            .inc();
    }

    pub fn query_rejected(&self, reason: &'static str) {
        self.queries_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn export_request(&self, result: &'static str) {
        self.export_requests
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn export_written(&self, stats: ExportStats) {
        self.export_series.inc_by(stats.series);
        self.export_samples.inc_by(stats.samples);
        self.export_stale_markers_skipped
            .inc_by(stats.stale_markers_skipped);
    }

    pub fn export_stream_error(&self, reason: &'static str) {
        self.export_stream_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}
