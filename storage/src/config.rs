//! Storage configuration.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::wal::SyncMode;

/// Configuration of a storage instance. Every field states its default.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// Directory holding the data. Default: `./strata-data`.
    #[arg(
        long = "data-dir",
        env = "STRATA_DATA_DIR",
        default_value = "./strata-data"
    )]
    pub data_dir: PathBuf,

    /// When a write is acknowledged: `batch` (after fsync, concurrent writes
    /// share one fsync), `interval:<duration>` (after the OS has it; fsync at
    /// that interval), `none` (after the OS has it; no fsync). A kill -9 loses
    /// nothing in any mode; a power loss can lose up to the interval, or
    /// anything not flushed, in the last two. Default: `batch`.
    #[arg(long = "sync", env = "STRATA_SYNC", default_value = "batch")]
    #[serde(with = "sync_mode_serde")]
    pub sync: SyncSetting,

    /// Data older than this is rejected on write and deleted by whole monthly
    /// partitions. Default: 31d.
    #[arg(long = "retention", env = "STRATA_RETENTION", default_value = "31d", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub retention: Duration,

    /// Samples with timestamps further than this in the future are rejected.
    /// Default: 2d.
    #[arg(long = "max-future", env = "STRATA_MAX_FUTURE", default_value = "2d", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub max_future: Duration,

    /// Keep one sample per interval per series, at merge time and at read time.
    /// 0 keeps every sample with a distinct timestamp. Default: 0.
    #[arg(long = "dedup.min-scrape-interval", env = "STRATA_DEDUP_MIN_SCRAPE_INTERVAL", default_value = "0s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub dedup_min_scrape_interval: Duration,

    /// How often in-memory rows are written as a part and the log is trimmed.
    /// Default: 5s.
    #[arg(long = "storage.flush-interval", env = "STRATA_FLUSH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub flush_interval: Duration,

    /// In-memory rows that trigger an early flush; writers wait when twice as
    /// many are pending. Default: 4000000.
    #[arg(
        long = "storage.max-head-rows",
        env = "STRATA_MAX_HEAD_ROWS",
        default_value_t = 4_000_000
    )]
    pub max_head_rows: usize,

    /// Memory for decoded index blocks, series label sets, block headers
    /// and data pages kept between queries, in MiB (a quarter each for index
    /// blocks and block headers, an eighth for label sets, the rest for
    /// data pages); 0 disables the caches. Default: 256.
    #[arg(
        long = "storage.cache-mib",
        env = "STRATA_CACHE_MIB",
        default_value_t = 256
    )]
    pub cache_mib: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./strata-data"),
            sync: SyncSetting(SyncMode::Batch),
            retention: Duration::from_secs(31 * 86_400),
            max_future: Duration::from_secs(2 * 86_400),
            dedup_min_scrape_interval: Duration::ZERO,
            flush_interval: Duration::from_secs(5),
            max_head_rows: 4_000_000,
            cache_mib: 256,
        }
    }
}

/// `SyncMode` as written on the command line: `batch`, `interval:<d>`, `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncSetting(pub SyncMode);

impl FromStr for SyncSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "batch" => Ok(SyncSetting(SyncMode::Batch)),
            "none" => Ok(SyncSetting(SyncMode::None)),
            _ => match s.strip_prefix("interval:") {
                Some(d) => {
                    let d = parse_duration(d)?;
                    if d.is_zero() {
                        return Err("sync interval must be greater than 0".into());
                    }
                    Ok(SyncSetting(SyncMode::Interval(d)))
                }
                None => Err(format!(
                    "invalid sync mode {s:?}: want batch, interval:<duration> or none"
                )),
            },
        }
    }
}

impl fmt::Display for SyncSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SyncMode::Batch => f.write_str("batch"),
            SyncMode::None => f.write_str("none"),
            SyncMode::Interval(d) => write!(f, "interval:{}", humantime::format_duration(d)),
        }
    }
}

/// Parses durations like `31d`, `5s`, `1h30m`, `250ms`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

mod sync_mode_serde {
    use super::SyncSetting;

    pub fn serialize<S: serde::Serializer>(v: &SyncSetting, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SyncSetting, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Durations in config files as humantime strings (`10s`), shared by every component config.
pub mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_setting_parses() {
        assert_eq!(
            "batch".parse::<SyncSetting>(),
            Ok(SyncSetting(SyncMode::Batch))
        );
        assert_eq!(
            "none".parse::<SyncSetting>(),
            Ok(SyncSetting(SyncMode::None))
        );
        assert_eq!(
            "interval:250ms".parse::<SyncSetting>(),
            Ok(SyncSetting(SyncMode::Interval(Duration::from_millis(250))))
        );
        assert!("interval:0s".parse::<SyncSetting>().is_err());
        assert!("sometimes".parse::<SyncSetting>().is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("31d"), Ok(Duration::from_secs(31 * 86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }
}
