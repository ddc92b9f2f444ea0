//! Self-metrics of cluster ingestion: per storage node write latency,
//! errors and health, and the hand-off queues. Counted per node call or per
//! queued batch, never per sample.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::handoff::Backlog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeReasonLabels {
    node: String,
    reason: &'static str,
}

type HistogramFamily = Family<NodeLabels, Histogram, fn() -> Histogram>;

/// Cluster ingestion metrics; cheap to clone (the series are shared).
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    write_duration: HistogramFamily,
    write_errors: Family<NodeReasonLabels, Counter>,
    node_up: Family<NodeLabels, Gauge>,
    backlog_rows: Family<NodeLabels, Gauge>,
    backlog_bytes: Family<NodeLabels, Gauge>,
    queued_rows: Family<NodeLabels, Counter>,
    replayed_rows: Family<NodeLabels, Counter>,
    rerouted_rows: Family<NodeLabels, Counter>,
    dropped_rows: Family<NodeReasonLabels, Counter>,
    corrupted_records: Family<NodeLabels, Counter>,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        ClusterMetrics {
            // 1 ms .. ~16 s.
            write_duration: HistogramFamily::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            write_errors: Family::default(),
            node_up: Family::default(),
            backlog_rows: Family::default(),
            backlog_bytes: Family::default(),
            queued_rows: Family::default(),
            replayed_rows: Family::default(),
            rerouted_rows: Family::default(),
            dropped_rows: Family::default(),
            corrupted_records: Family::default(),
        }
    }
}

fn node(addr: &str) -> NodeLabels {
    NodeLabels {
        node: addr.to_string(),
    }
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> ClusterMetrics {
        let m = ClusterMetrics::default();
        registry.register_with_unit(
            "strata_insert_node_write_duration",
            "Time of write calls to a storage node, failed ones included",
            Unit::Seconds,
            m.write_duration.clone(),
        );
        registry.register(
            "strata_insert_node_write_errors",
            "Failed write calls to a storage node, by reason (unavailable, deadline, \
             read_only, remote, protocol)",
            m.write_errors.clone(),
        );
        registry.register(
            "strata_insert_node_up",
            "1 when a storage node takes writes, 0 while it is known down (its rows go \
             to hand-off without being tried)",
            m.node_up.clone(),
        );
        registry.register(
            "strata_insert_handoff_backlog_rows",
            "Samples queued on insert's disk for a storage node, not yet replayed",
            m.backlog_rows.clone(),
        );
        registry.register_with_unit(
            "strata_insert_handoff_backlog",
            "Bytes queued on insert's disk for a storage node, not yet replayed",
            Unit::Bytes,
            m.backlog_bytes.clone(),
        );
        registry.register(
            "strata_insert_handoff_queued_rows",
            "Samples queued for a storage node that did not take them",
            m.queued_rows.clone(),
        );
        registry.register(
            "strata_insert_handoff_replayed_rows",
            "Queued samples a storage node took on replay",
            m.replayed_rows.clone(),
        );
        registry.register(
            "strata_insert_handoff_rerouted_rows",
            "Queued samples of a node that left the topology, written to the series' \
             current owners instead",
            m.rerouted_rows.clone(),
        );
        registry.register(
            "strata_insert_handoff_dropped_rows",
            "Samples that were to be queued or replayed for a storage node and never \
             will be, by reason (queue_full, corrupted, refused)",
            m.dropped_rows.clone(),
        );
        registry.register(
            "strata_insert_handoff_corrupted_records",
            "Damaged or incomplete hand-off records skipped",
            m.corrupted_records.clone(),
        );
        m
    }

    pub fn write(&self, addr: &str, seconds: f64, error: Option<&'static str>) {
        self.write_duration
            .get_or_create(&node(addr))
            .observe(seconds);
        if let Some(reason) = error {
            self.write_error(addr, reason);
        }
    }

    pub fn write_error(&self, addr: &str, reason: &'static str) {
        self.write_errors
            .get_or_create(&NodeReasonLabels {
                node: addr.to_string(),
                reason,
            })
            .inc();
    }

    pub fn up(&self, addr: &str, up: bool) {
        self.node_up.get_or_create(&node(addr)).set(i64::from(up));
    }

    pub fn backlog(&self, addr: &str, backlog: Backlog) {
        let labels = node(addr);
        self.backlog_rows
            .get_or_create(&labels)
            .set(i64::try_from(backlog.rows).unwrap_or(i64::MAX));
        self.backlog_bytes
            .get_or_create(&labels)
            .set(i64::try_from(backlog.bytes).unwrap_or(i64::MAX));
    }

    /// Drops the series of a node that is gone for good.
    pub fn forget(&self, addr: &str) {
        let labels = node(addr);
        self.backlog_rows.remove(&labels);
        self.backlog_bytes.remove(&labels);
        self.node_up.remove(&labels);
    }

    pub fn queued(&self, addr: &str, rows: u64) {
        if rows > 0 {
            self.queued_rows.get_or_create(&node(addr)).inc_by(rows);
        }
    }

    pub fn replayed(&self, addr: &str, rows: u64) {
        if rows > 0 {
            self.replayed_rows.get_or_create(&node(addr)).inc_by(rows);
        }
    }

    pub fn rerouted(&self, addr: &str, rows: u64) {
        if rows > 0 {
            self.rerouted_rows.get_or_create(&node(addr)).inc_by(rows);
        }
    }

    pub fn dropped(&self, addr: &str, reason: &'static str, rows: u64) {
        if rows > 0 {
            self.dropped_rows
                .get_or_create(&NodeReasonLabels {
                    node: addr.to_string(),
                    reason,
                })
                .inc_by(rows);
        }
    }

    pub fn corrupted(&self, addr: &str) {
        self.corrupted_records.get_or_create(&node(addr)).inc();
    }

    /// Samples dropped for `addr` with `reason` so far (for tests and status).
    pub fn dropped_rows(&self, addr: &str, reason: &'static str) -> u64 {
        self.dropped_rows
            .get_or_create(&NodeReasonLabels {
                node: addr.to_string(),
                reason,
            })
            .get()
    }

    /// Damaged records skipped for `addr` so far.
    pub fn corrupted_records(&self, addr: &str) -> u64 {
        self.corrupted_records.get_or_create(&node(addr)).get()
    }

    /// Queued samples `addr` took on replay so far.
    pub fn replayed_rows(&self, addr: &str) -> u64 {
        self.replayed_rows.get_or_create(&node(addr)).get()
    }
}
