//! Configuration of rule evaluation: [`EvalConfig`] is shared by
//! `strata alert` and `strata single --rule`; [`Config`] adds what only the
//! standalone evaluator has (listen address, datasource, remote write).

use std::collections::BTreeMap;
use std::time::Duration;

use strata_storage::config::{humantime_serde_compat, parse_duration};

/// Rule evaluation and notification flags. Every field states its default.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[group(id = "alert-eval")]
#[serde(default)]
pub struct EvalConfig {
    /// Rule files or glob patterns (repeatable, or comma-separated).
    /// Default: none (no evaluation).
    #[arg(long = "rule", env = "STRATA_RULE", value_delimiter = ',')]
    pub rule: Vec<String>,

    /// Alertmanager base URLs to send alerts to (repeatable), e.g.
    /// `http://alertmanager:9093`. Default: none (alerts are evaluated and
    /// written, not sent).
    #[arg(
        long = "notifier.url",
        env = "STRATA_NOTIFIER_URL",
        value_delimiter = ','
    )]
    pub notifier_url: Vec<String>,

    /// Tenant (`account` or `account:project`) of groups without `tenant:`.
    /// Default: 0.
    #[arg(long = "tenant", env = "STRATA_TENANT", default_value = "0")]
    pub tenant: String,

    /// Interval of groups without `interval:`. Default: 1m.
    #[arg(long = "evaluation-interval", env = "STRATA_EVALUATION_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub evaluation_interval: Duration,

    /// How far back queries look, for groups without `query_offset:`
    /// (evaluate at `t - offset` so late samples are in). Default: 0s.
    #[arg(long = "rule.query-offset", env = "STRATA_RULE_QUERY_OFFSET", default_value = "0s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub query_offset: Duration,

    /// Labels added to alerts sent to Alertmanager and available to
    /// templates as `$externalLabels`, `name=value` (repeatable).
    /// Default: none.
    #[arg(long = "external-label", env = "STRATA_EXTERNAL_LABEL", value_delimiter = ',', value_parser = parse_label)]
    pub external_label: Vec<(String, String)>,

    /// URL of this evaluator as users reach it, for alerts' `generatorURL`.
    /// Default: empty (`http://<hostname>:<port>` of the listen address).
    #[arg(long = "external-url", env = "STRATA_EXTERNAL_URL", default_value = "")]
    pub external_url: String,

    /// Least time between two sends of a firing alert. Default: 1m.
    #[arg(long = "rule.resend-delay", env = "STRATA_RULE_RESEND_DELAY", default_value = "1m", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub resend_delay: Duration,

    /// Least time a restored alert waits before firing again, so that a
    /// restart does not fire alerts whose `for` nearly passed before data
    /// caught up. Rules with a shorter `for` are not restored. Default: 10m.
    #[arg(long = "for-grace-period", env = "STRATA_FOR_GRACE_PERIOD", default_value = "10m", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub for_grace_period: Duration,

    /// Longest outage after which alert state is still restored from
    /// `ALERTS_FOR_STATE`. Default: 1h.
    #[arg(long = "outage-tolerance", env = "STRATA_OUTAGE_TOLERANCE", default_value = "1h", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub outage_tolerance: Duration,

    /// Alerts waiting to be sent to each Alertmanager; the oldest are
    /// dropped beyond. Default: 10000.
    #[arg(
        long = "notifier.queue-capacity",
        env = "STRATA_NOTIFIER_QUEUE_CAPACITY",
        default_value_t = 10_000
    )]
    pub notifier_queue_capacity: usize,

    /// Timeout of one request to an Alertmanager. Default: 10s.
    #[arg(long = "notifier.timeout", env = "STRATA_NOTIFIER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub notifier_timeout: Duration,

    /// How often rule files are checked for changes (SIGHUP reloads at
    /// once). 0 disables the check. Default: 10s.
    #[arg(long = "rule.reload-check-interval", env = "STRATA_RULE_RELOAD_CHECK_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub reload_check_interval: Duration,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            rule: Vec::new(),
            notifier_url: Vec::new(),
            tenant: "0".into(),
            evaluation_interval: Duration::from_secs(60),
            query_offset: Duration::ZERO,
            external_label: Vec::new(),
            external_url: String::new(),
            resend_delay: Duration::from_secs(60),
            for_grace_period: Duration::from_secs(600),
            outage_tolerance: Duration::from_secs(3600),
            notifier_queue_capacity: 10_000,
            notifier_timeout: Duration::from_secs(10),
            reload_check_interval: Duration::from_secs(10),
        }
    }
}

impl EvalConfig {
    pub fn external_labels(&self) -> BTreeMap<String, String> {
        self.external_label.iter().cloned().collect()
    }
}

/// Flags of `strata alert`. Every field states its default.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[group(id = "alert")]
#[serde(default)]
pub struct Config {
    /// Address to serve HTTP on (rules and alerts API, health, metrics).
    /// Default: 127.0.0.1:8880.
    #[arg(
        long = "listen",
        env = "STRATA_LISTEN",
        default_value = "127.0.0.1:8880"
    )]
    pub listen: String,

    /// Prometheus-compatible query URL rules are evaluated against (its
    /// `/api/v1/query` is used), e.g. `http://select:8481` or a single's
    /// `http://single:8428`; `{tenant}` in it becomes `account:project`.
    /// Required.
    #[arg(
        long = "datasource.url",
        env = "STRATA_DATASOURCE_URL",
        default_value = ""
    )]
    pub datasource_url: String,

    /// Timeout of one query. Default: 30s.
    #[arg(long = "datasource.timeout", env = "STRATA_DATASOURCE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub datasource_timeout: Duration,

    /// Remote write URL for recording results and `ALERTS`/`ALERTS_FOR_STATE`,
    /// e.g. `http://single:8428/api/v1/write`; `{tenant}` in it becomes
    /// `account:project`. Default: empty (nothing written, and alert state
    /// is not restored at start).
    #[arg(
        long = "remote-write.url",
        env = "STRATA_REMOTE_WRITE_URL",
        default_value = ""
    )]
    pub remote_write_url: String,

    #[command(flatten)]
    #[serde(flatten)]
    pub eval: EvalConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8880".into(),
            datasource_url: String::new(),
            datasource_timeout: Duration::from_secs(30),
            remote_write_url: String::new(),
            eval: EvalConfig::default(),
        }
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("invalid label {s:?}: want name=value")),
    }
}
