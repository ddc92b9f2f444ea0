//! Self-metrics of ingestion. Counted once per request, never per sample.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    protocol: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IgnoredLabels {
    protocol: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    result: &'static str,
}

/// Ingestion counters; cheap to clone (the counters are shared).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    rows: Family<ProtocolLabels, Counter>,
    rows_rejected: Family<RejectedLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    ignored: Family<IgnoredLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "strata_insert_rows",
            "Samples stored, by protocol",
            m.rows.clone(),
        );
        registry.register(
            "strata_insert_rows_rejected",
            "Samples not stored, by protocol and reason (parse error kind, too_old, too_new, \
             too_large, unsupported_encoding, storage)",
            m.rows_rejected.clone(),
        );
        registry.register(
            "strata_insert_requests",
            "Ingestion requests, by protocol and result (ok, or the error kind)",
            m.requests.clone(),
        );
        registry.register(
            "strata_insert_ignored",
            "Items accepted but not stored, by protocol and kind (exemplar, metadata)",
            m.ignored.clone(),
        );
        m
    }

    pub fn ignored(&self, protocol: &'static str, kind: &'static str, n: u64) {
        if n > 0 {
            self.ignored
                .get_or_create(&IgnoredLabels { protocol, kind })
                .inc_by(n);
        }
    }

    pub fn rows_stored(&self, protocol: &'static str, n: u64) {
        if n > 0 {
            self.rows
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(n);
        }
    }

    pub fn rows_rejected(&self, protocol: &'static str, reason: &'static str, n: u64) {
        if n > 0 {
            self.rows_rejected
                .get_or_create(&RejectedLabels { protocol, reason })
                .inc_by(n);
        }
    }

    pub fn request(&self, protocol: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { protocol, result })
            .inc();
    }
}
