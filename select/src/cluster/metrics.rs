//! Self-metrics of the fan-out to storage nodes. Counted once per node call
//! or per read, never per sample.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeCallLabels {
    node: String,
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeReasonLabels {
    node: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms to about 2 minutes (a query timeout).
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

/// Counters of the fan-out; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    node_duration: HistogramFamily<NodeCallLabels>,
    node_errors: Family<NodeReasonLabels, Counter>,
    missing_reads: Family<ResultLabels, Counter>,
    duplicate_samples: Counter,
    conflicting_samples: Counter,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        ClusterMetrics {
            node_duration: Family::new_with_constructor(duration_histogram),
            node_errors: Family::default(),
            missing_reads: Family::default(),
            duplicate_samples: Counter::default(),
            conflicting_samples: Counter::default(),
        }
    }
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> ClusterMetrics {
        let m = ClusterMetrics::default();
        registry.register_with_unit(
            "strata_select_cluster_node_request_duration",
            "Time a storage node took to answer a read (search streams until their last \
             batch), by node and call (search, series, label_names, label_values, cardinality)",
            Unit::Seconds,
            m.node_duration.clone(),
        );
        registry.register(
            "strata_select_cluster_node_errors",
            "Reads a storage node did not answer, by node and reason (unavailable, \
             deadline, read_only, remote, protocol)",
            m.node_errors.clone(),
        );
        registry.register(
            "strata_select_cluster_missing_node_reads",
            "Reads that some storage nodes did not answer, by result: complete (fewer \
             missing than --replication-factor, every series has a replica), partial \
             (answered with isPartial or denied), failed (no node answered)",
            m.missing_reads.clone(),
        );
        registry.register(
            "strata_select_cluster_duplicate_samples",
            "Samples dropped while merging because another node held the same series and \
             timestamp (replicas)",
            m.duplicate_samples.clone(),
        );
        registry.register(
            "strata_select_cluster_conflicting_samples",
            "Timestamps at which replicas of a series held different values (the greater \
             is answered)",
            m.conflicting_samples.clone(),
        );
        m
    }

    /// One node call that ended, successfully or not, after `seconds`.
    pub fn node_call(&self, node: &str, call: &'static str, seconds: f64) {
        self.node_duration
            .get_or_create(&NodeCallLabels {
                node: node.to_string(),
                call,
            })
            .observe(seconds);
    }

    pub fn node_error(&self, node: &str, reason: &'static str) {
        self.node_errors
            .get_or_create(&NodeReasonLabels {
                node: node.to_string(),
                reason,
            })
            .inc();
    }

    /// A read with missing nodes: `complete`, `partial` or `failed`.
    pub fn missing_read(&self, result: &'static str) {
        self.missing_reads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn merged(&self, stats: super::merge::MergeStats) {
        self.duplicate_samples.inc_by(stats.duplicates);
        self.conflicting_samples.inc_by(stats.conflicts);
    }
}
