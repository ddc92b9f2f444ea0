//! Ingestion configuration.

use std::time::Duration;

use strata_storage::config::parse_duration;

/// Default for [`Config::max_body_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default for [`Config::max_labels_per_series`].
pub const DEFAULT_MAX_LABELS_PER_SERIES: usize = 40;
/// Default for [`Config::max_label_name_bytes`].
pub const DEFAULT_MAX_LABEL_NAME_BYTES: usize = 256;
/// Default for [`Config::max_label_value_bytes`].
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: usize = 4096;
/// Default for [`Config::max_queue_duration`].
pub const DEFAULT_MAX_QUEUE_DURATION: Duration = Duration::from_secs(10);

/// Configuration of the ingestion endpoints. Every field states its default.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[group(id = "insert")]
pub struct Config {
    /// Largest request body accepted, in bytes, counted both as received and
    /// after decompression. A larger request gets 413 and nothing of it is
    /// stored. Must be greater than 0. Default: 67108864 (64 MiB).
    #[arg(
        long = "insert.max-body-bytes",
        env = "STRATA_INSERT_MAX_BODY_BYTES",
        default_value_t = DEFAULT_MAX_BODY_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_body_bytes: u64,

    /// Most labels a series may have, `__name__` included; a series with more
    /// is rejected (reason `too_many_labels`). Default: 40.
    #[arg(
        long = "insert.max-labels-per-series",
        env = "STRATA_INSERT_MAX_LABELS_PER_SERIES",
        default_value_t = DEFAULT_MAX_LABELS_PER_SERIES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_labels_per_series: usize,

    /// Longest label name in bytes (reason `label_name_too_long`). Default: 256.
    #[arg(
        long = "insert.max-label-name-bytes",
        env = "STRATA_INSERT_MAX_LABEL_NAME_BYTES",
        default_value_t = DEFAULT_MAX_LABEL_NAME_BYTES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_label_name_bytes: usize,

    /// Longest label value in bytes, metric names included (reason
    /// `label_value_too_long`). Default: 4096.
    #[arg(
        long = "insert.max-label-value-bytes",
        env = "STRATA_INSERT_MAX_LABEL_VALUE_BYTES",
        default_value_t = DEFAULT_MAX_LABEL_VALUE_BYTES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_label_value_bytes: usize,

    /// Labels dropped from every incoming series, comma-separated, so that
    /// the two members of an HA Prometheus pair write one series (e.g.
    /// `replica,prometheus_replica`). Default: none.
    #[arg(
        long = "insert.replica-label",
        env = "STRATA_INSERT_REPLICA_LABEL",
        value_delimiter = ','
    )]
    pub replica_labels: Vec<String>,

    /// Most ingestion requests read, parsed and written at once; others wait
    /// (see --insert.max-queue-duration). This bounds ingestion memory to
    /// about this many times --insert.max-body-bytes. 0: twice the CPU count.
    /// Default: 0.
    #[arg(
        long = "insert.max-concurrent-requests",
        env = "STRATA_INSERT_MAX_CONCURRENT_REQUESTS",
        default_value_t = 0
    )]
    pub max_concurrent_requests: usize,

    /// Longest a request waits for its turn before it is answered 503 with
    /// `Retry-After` (retryable). Default: 10s.
    #[arg(
        long = "insert.max-queue-duration",
        env = "STRATA_INSERT_MAX_QUEUE_DURATION",
        default_value = "10s",
        value_parser = parse_duration
    )]
    #[serde(with = "strata_storage::config::humantime_serde_compat")]
    pub max_queue_duration: Duration,
}

impl Config {
    /// `max_concurrent_requests` with 0 resolved.
    pub fn concurrency(&self) -> usize {
        if self.max_concurrent_requests > 0 {
            return self.max_concurrent_requests;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_labels_per_series: DEFAULT_MAX_LABELS_PER_SERIES,
            max_label_name_bytes: DEFAULT_MAX_LABEL_NAME_BYTES,
            max_label_value_bytes: DEFAULT_MAX_LABEL_VALUE_BYTES,
            replica_labels: Vec::new(),
            max_concurrent_requests: 0,
            max_queue_duration: DEFAULT_MAX_QUEUE_DURATION,
        }
    }
}
