//! Ingestion configuration.

/// Default for [`Config::max_body_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}
