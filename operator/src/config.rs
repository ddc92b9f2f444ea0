//! Flags of `strata operator`. Every field states its default.

use std::time::Duration;

use strata_storage::config::{humantime_serde_compat, parse_duration};

/// Configuration of the operator process.
#[derive(Clone, Debug, clap::Args, serde::Serialize, serde::Deserialize)]
#[group(id = "operator")]
#[serde(default)]
pub struct Config {
    /// Address of `/health`, `/ready` and `/metrics`. Default: 0.0.0.0:8080.
    #[arg(long = "listen", env = "STRATA_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,

    /// Namespaces whose StrataClusters and StrataRules are reconciled
    /// (repeatable, or comma-separated). Default: none, every namespace.
    #[arg(
        long = "watch-namespaces",
        env = "STRATA_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,

    /// Reconcile only while holding the leader Lease, so that several
    /// replicas can run. Default: true.
    #[arg(long = "leader-election", env = "STRATA_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the `coordination.k8s.io` Lease replicas elect a leader with.
    /// Default: strata-operator.
    #[arg(
        long = "leader-election.lease-name",
        env = "STRATA_LEADER_ELECTION_LEASE_NAME",
        default_value = "strata-operator"
    )]
    pub lease_name: String,

    /// Namespace of that Lease. Default: empty, the namespace of the
    /// operator's service account (or of the kubeconfig context).
    #[arg(
        long = "leader-election.namespace",
        env = "STRATA_LEADER_ELECTION_NAMESPACE",
        default_value = ""
    )]
    pub lease_namespace: String,

    /// This replica's name in the Lease. Default: empty, `$POD_NAME`, else
    /// the host name.
    #[arg(
        long = "leader-election.identity",
        env = "STRATA_LEADER_ELECTION_IDENTITY",
        default_value = ""
    )]
    pub identity: String,

    /// How long a Lease stays valid without renewal; another replica takes
    /// over after it. Default: 15s.
    #[arg(long = "leader-election.lease-duration", env = "STRATA_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub lease_duration: Duration,

    /// How often the leader renews the Lease, and others retry taking it.
    /// Must be well below the lease duration. Default: 5s.
    #[arg(long = "leader-election.renew-interval", env = "STRATA_LEADER_ELECTION_RENEW_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub renew_interval: Duration,

    /// Image tag of clusters that set no `spec.version`. Default: the
    /// operator's own version.
    #[arg(
        long = "default-version",
        env = "STRATA_DEFAULT_VERSION",
        default_value = env!("CARGO_PKG_VERSION")
    )]
    pub default_version: String,

    /// How long a replaced or new pod may take to become ready before the
    /// rollout stops with `Degraded=True`. Default: 10m.
    #[arg(long = "rollout.pod-ready-timeout", env = "STRATA_ROLLOUT_POD_READY_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub pod_ready_timeout: Duration,

    /// Timeout of the `/ready` request to a storage node during a rollout.
    /// Default: 2s.
    #[arg(long = "rollout.probe-timeout", env = "STRATA_ROLLOUT_PROBE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub probe_timeout: Duration,

    /// Ask each storage node's `/ready` directly, beyond its pod's
    /// readiness, before replacing the next pod. Needs the pod network (the
    /// operator running in the cluster). Default: true.
    #[arg(long = "rollout.probe-nodes", env = "STRATA_ROLLOUT_PROBE_NODES", default_value_t = true, action = clap::ArgAction::Set)]
    pub probe_nodes: bool,

    /// Requeue delay while something is changing (a rollout, pods starting).
    /// Default: 5s.
    #[arg(long = "requeue.progressing", env = "STRATA_REQUEUE_PROGRESSING", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub requeue_progressing: Duration,

    /// Requeue delay of a settled object (a periodic re-check besides the
    /// watches). Default: 5m.
    #[arg(long = "requeue.settled", env = "STRATA_REQUEUE_SETTLED", default_value = "5m", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub requeue_settled: Duration,

    /// Most bytes of rule files in one rule ConfigMap; more rules are split
    /// over several (the API server's limit is 1 MiB per object).
    /// Default: 900000.
    #[arg(
        long = "rules.config-map-max-bytes",
        env = "STRATA_RULES_CONFIG_MAP_MAX_BYTES",
        default_value_t = 900_000
    )]
    pub rule_config_map_max_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8080".into(),
            watch_namespaces: Vec::new(),
            leader_election: true,
            lease_name: "strata-operator".into(),
            lease_namespace: String::new(),
            identity: String::new(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            default_version: env!("CARGO_PKG_VERSION").into(),
            pod_ready_timeout: Duration::from_secs(600),
            probe_timeout: Duration::from_secs(2),
            probe_nodes: true,
            requeue_progressing: Duration::from_secs(5),
            requeue_settled: Duration::from_secs(300),
            rule_config_map_max_bytes: 900_000,
        }
    }
}
