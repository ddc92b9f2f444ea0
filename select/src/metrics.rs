//! Self-metrics of the query side. Counted once per request, never per sample.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Query-side counters; cheap to clone (the counters are shared).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    export_requests: Family<ResultLabels, Counter>,
    export_series: Counter,
    export_samples: Counter,
    export_stale_markers_skipped: Counter,
    export_stream_errors: Family<ReasonLabels, Counter>,
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
             (io, corrupted, closed, other)",
            m.export_stream_errors.clone(),
        );
        m
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
