//! Query configuration: limits of the PromQL engine and of the HTTP API.

use std::time::Duration;

use strata_storage::config::parse_duration;

use crate::promql::EngineOptions;

/// Default for [`Config::max_series`].
pub const DEFAULT_MAX_SERIES: usize = 1_000_000;
/// Default for [`Config::max_samples`] (Prometheus' `--query.max-samples`).
pub const DEFAULT_MAX_SAMPLES: usize = 50_000_000;
/// Default for [`Config::max_points_per_series`] (fixed in Prometheus).
pub const DEFAULT_MAX_POINTS_PER_SERIES: usize = 11_000;
/// Default for [`Config::timeout`] (Prometheus' `--query.timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default for [`Config::max_concurrent_queries`] (Prometheus'
/// `--query.max-concurrency`).
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 20;
/// Default for [`Config::max_queued_queries`].
pub const DEFAULT_MAX_QUEUED_QUERIES: usize = 100;
/// Default for [`Config::max_queue_duration`].
pub const DEFAULT_MAX_QUEUE_DURATION: Duration = Duration::from_secs(10);
/// Default for [`Config::lookback_delta`] (Prometheus' `--query.lookback-delta`).
pub const DEFAULT_LOOKBACK_DELTA: Duration = Duration::from_secs(300);

/// Flag names, for error messages that tell the operator what to change.
pub mod flag {
    pub const MAX_SERIES: &str = "--query.max-series";
    pub const MAX_SAMPLES: &str = "--query.max-samples";
    pub const MAX_POINTS_PER_SERIES: &str = "--query.max-points-per-series";
    pub const TIMEOUT: &str = "--query.timeout";
    pub const MAX_CONCURRENT_QUERIES: &str = "--query.max-concurrent-queries";
    pub const MAX_QUEUED_QUERIES: &str = "--query.max-queued-queries";
    pub const MAX_QUEUE_DURATION: &str = "--query.max-queue-duration";
}

/// Configuration of the query endpoints. Every field states its default.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[group(id = "select")]
pub struct Config {
    /// Most series a query may read (one selector of a PromQL query, or a
    /// `/api/v1/series` call); more fail the query with a message naming this
    /// flag. 0: no limit. Default: 1000000.
    #[arg(
        id = "query.max-series",
        long = "query.max-series",
        env = "STRATA_QUERY_MAX_SERIES",
        default_value_t = DEFAULT_MAX_SERIES
    )]
    pub max_series: usize,

    /// Most samples a query may hold in memory at once (Prometheus
    /// `--query.max-samples`). 0: no limit. Default: 50000000.
    #[arg(
        id = "query.max-samples",
        long = "query.max-samples",
        env = "STRATA_QUERY_MAX_SAMPLES",
        default_value_t = DEFAULT_MAX_SAMPLES
    )]
    pub max_samples: usize,

    /// Most points per series of a range query, `(end - start) / step`; a
    /// larger range query is refused with `bad_data`. 0: no limit.
    /// Default: 11000 (what Prometheus allows).
    #[arg(
        id = "query.max-points-per-series",
        long = "query.max-points-per-series",
        env = "STRATA_QUERY_MAX_POINTS_PER_SERIES",
        default_value_t = DEFAULT_MAX_POINTS_PER_SERIES
    )]
    pub max_points_per_series: usize,

    /// Longest a query may take, waiting for a slot included; the `timeout`
    /// parameter of a request can only shorten it. Must be greater than 0.
    /// Default: 2m.
    #[arg(
        id = "query.timeout",
        long = "query.timeout",
        env = "STRATA_QUERY_TIMEOUT",
        default_value = "2m",
        value_parser = parse_positive_duration
    )]
    #[serde(with = "strata_storage::config::humantime_serde_compat")]
    pub timeout: Duration,

    /// Most queries (`query`, `query_range`) evaluated at once; others wait in
    /// a queue. Must be greater than 0. Default: 20.
    #[arg(
        id = "query.max-concurrent-queries",
        long = "query.max-concurrent-queries",
        env = "STRATA_QUERY_MAX_CONCURRENT_QUERIES",
        default_value_t = DEFAULT_MAX_CONCURRENT_QUERIES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub max_concurrent_queries: usize,

    /// Most queries waiting for a slot; one more is answered 503
    /// (`unavailable`) at once. 0: no queue, refuse when all slots are busy.
    /// Default: 100.
    #[arg(
        id = "query.max-queued-queries",
        long = "query.max-queued-queries",
        env = "STRATA_QUERY_MAX_QUEUED_QUERIES",
        default_value_t = DEFAULT_MAX_QUEUED_QUERIES
    )]
    pub max_queued_queries: usize,

    /// Longest a query waits for a slot before it is answered 503
    /// (`unavailable`); the query timeout also bounds the wait. Default: 10s.
    #[arg(
        id = "query.max-queue-duration",
        long = "query.max-queue-duration",
        env = "STRATA_QUERY_MAX_QUEUE_DURATION",
        default_value = "10s",
        value_parser = parse_duration
    )]
    #[serde(with = "strata_storage::config::humantime_serde_compat")]
    pub max_queue_duration: Duration,

    /// How far back a selector looks for the latest sample of a series
    /// (Prometheus `--query.lookback-delta`); the `lookback_delta` parameter
    /// overrides it per query. Must be greater than 0. Default: 5m.
    #[arg(
        id = "query.lookback-delta",
        long = "query.lookback-delta",
        env = "STRATA_QUERY_LOOKBACK_DELTA",
        default_value = "5m",
        value_parser = parse_positive_duration
    )]
    #[serde(with = "strata_storage::config::humantime_serde_compat")]
    pub lookback_delta: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_series: DEFAULT_MAX_SERIES,
            max_samples: DEFAULT_MAX_SAMPLES,
            max_points_per_series: DEFAULT_MAX_POINTS_PER_SERIES,
            timeout: DEFAULT_TIMEOUT,
            max_concurrent_queries: DEFAULT_MAX_CONCURRENT_QUERIES,
            max_queued_queries: DEFAULT_MAX_QUEUED_QUERIES,
            max_queue_duration: DEFAULT_MAX_QUEUE_DURATION,
            lookback_delta: DEFAULT_LOOKBACK_DELTA,
        }
    }
}

impl Config {
    /// The engine settings these flags give. The points limit is left to
    /// the HTTP API, which checks it before a query takes a slot, with
    /// Prometheus' rule (whole steps in the range, so `max + 1` points pass).
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            lookback_delta: self.lookback_delta,
            max_series: self.max_series,
            max_samples: self.max_samples,
            max_points_per_series: 0,
            timeout: self.timeout,
            ..EngineOptions::default()
        }
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn flag_defaults_match_default() {
        let parsed = Cli::try_parse_from(["x"]).expect("parse").config;
        let want = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{want:?}"));
    }

    #[test]
    fn flags_parse() {
        let parsed = Cli::try_parse_from([
            "x",
            "--query.timeout=30s",
            "--query.max-concurrent-queries=2",
            "--query.max-queued-queries=0",
            "--query.lookback-delta=1m",
        ])
        .expect("parse")
        .config;
        assert_eq!(parsed.timeout, Duration::from_secs(30));
        assert_eq!(parsed.max_concurrent_queries, 2);
        assert_eq!(parsed.max_queued_queries, 0);
        assert_eq!(
            parsed.engine_options().lookback_delta,
            Duration::from_secs(60)
        );
        for bad in [
            "--query.timeout=0s",
            "--query.max-concurrent-queries=0",
            "--query.lookback-delta=0",
        ] {
            assert!(Cli::try_parse_from(["x", bad]).is_err(), "{bad}");
        }
    }
}
