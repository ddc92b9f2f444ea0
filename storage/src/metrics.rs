//! Self-metrics of the storage engine, registered under `strata_storage_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct StorageMetrics {
    pub rows_added: Family<Labels, Counter>,
    pub rows_rejected: Family<Labels, Counter>,
    pub new_series: Family<Labels, Counter>,
    pub ingestion_delay_seconds: Family<Labels, Histogram>,
    pub deleted_series: Counter,
    pub corrupted_blocks: Family<Labels, Counter>,
    pub flushes: Counter,
    pub flush_duration_seconds: Histogram,
    pub merges: Family<Labels, Counter>,
    pub merge_errors: Family<Labels, Counter>,
    pub head_rows: Gauge,
    pub partitions: Gauge,
    pub parts: Gauge,
    pub data_bytes: Gauge,
    pub index_bytes: Gauge,
    pub wal_bytes: Gauge,
    pub wal_replayed_rows: Counter,
    pub replay_lost_rows: Counter,
    pub partitions_dropped: Counter,
    pub cache_requests: Family<Labels, Counter>,
    pub cache_bytes: Family<Labels, Gauge>,
}

impl StorageMetrics {
    pub fn new(registry: &mut Registry) -> StorageMetrics {
        let m = StorageMetrics {
            rows_added: Family::default(),
            rows_rejected: Family::default(),
            new_series: Family::default(),
            ingestion_delay_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 2.0, 16))
            }),
            deleted_series: Counter::default(),
            corrupted_blocks: Family::default(),
            flushes: Counter::default(),
            flush_duration_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            merges: Family::default(),
            merge_errors: Family::default(),
            head_rows: Gauge::default(),
            partitions: Gauge::default(),
            parts: Gauge::default(),
            data_bytes: Gauge::default(),
            index_bytes: Gauge::default(),
            wal_bytes: Gauge::default(),
            wal_replayed_rows: Counter::default(),
            replay_lost_rows: Counter::default(),
            partitions_dropped: Counter::default(),
            cache_requests: Family::default(),
            cache_bytes: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("strata_storage");
        r.register(
            "rows_added",
            "Samples stored, by tenant",
            m.rows_added.clone(),
        );
        r.register(
            "rows_rejected",
            "Samples not stored, by reason",
            m.rows_rejected.clone(),
        );
        r.register(
            "new_series",
            "Series created, by tenant (churn)",
            m.new_series.clone(),
        );
        r.register(
            "ingestion_delay_seconds",
            "Receive time minus the time of the newest sample of each batch, by tenant",
            m.ingestion_delay_seconds.clone(),
        );
        r.register(
            "deleted_series",
            "Series deleted through the delete API",
            m.deleted_series.clone(),
        );
        r.register(
            "corrupted_blocks",
            "Blocks that failed their checksum on read, by kind (data, index)",
            m.corrupted_blocks.clone(),
        );
        r.register(
            "flushes",
            "Flushes of in-memory rows to parts",
            m.flushes.clone(),
        );
        r.register(
            "flush_duration_seconds",
            "Time per flush",
            m.flush_duration_seconds.clone(),
        );
        r.register(
            "merges",
            "Merges done, by kind (data, index)",
            m.merges.clone(),
        );
        r.register(
            "merge_errors",
            "Merges failed, by kind (data, index)",
            m.merge_errors.clone(),
        );
        r.register(
            "head_rows",
            "Rows in memory waiting for the next flush",
            m.head_rows.clone(),
        );
        r.register(
            "partitions",
            "Monthly partitions open",
            m.partitions.clone(),
        );
        r.register("parts", "Data parts across partitions", m.parts.clone());
        r.register(
            "data_bytes",
            "Bytes of data parts on disk",
            m.data_bytes.clone(),
        );
        r.register(
            "index_bytes",
            "Bytes of index parts on disk",
            m.index_bytes.clone(),
        );
        r.register(
            "wal_bytes",
            "Bytes of write-ahead log on disk",
            m.wal_bytes.clone(),
        );
        r.register(
            "wal_replayed_rows",
            "Rows replayed from the log at start",
            m.wal_replayed_rows.clone(),
        );
        r.register(
            "replay_lost_rows",
            "Rows in the log whose series could not be resolved at replay",
            m.replay_lost_rows.clone(),
        );
        r.register(
            "partitions_dropped",
            "Partitions deleted by retention",
            m.partitions_dropped.clone(),
        );
        r.register(
            "cache_requests",
            "Lookups in the read caches, by cache (index, labels, headers, pages) and result (hit, miss)",
            m.cache_requests.clone(),
        );
        r.register(
            "cache_bytes",
            "Memory held by the read caches, by cache (index, labels, headers, pages)",
            m.cache_bytes.clone(),
        );
        m
    }
}
