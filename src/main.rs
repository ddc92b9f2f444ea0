//! The `strata` binary: parses the command line and dispatches to a component.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod alert;
mod http;
mod insert_node;
mod select_node;
mod single;
mod storage_node;
mod tenant_routes;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Prometheus-compatible metrics platform"
)]
struct Cli {
    /// Log filter, e.g. `info` or `strata_storage=debug,info`. Overrides
    /// RUST_LOG. Default: RUST_LOG if set, else `info`.
    #[arg(long = "log-level", env = "STRATA_LOG_LEVEL", global = true)]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Storage, ingestion and query in one process: the way to run Strata on
    /// one machine.
    Single(Box<single::Config>),
    /// A cluster storage node: the storage engine behind the RPC that
    /// insert and select call (docs/cluster.md).
    Storage(Box<storage_node::Config>),
    /// Cluster ingestion: every protocol on `/insert/<tenant>/...`, each
    /// series replicated to its storage nodes, hinted hand-off for nodes
    /// that are down.
    Insert(Box<insert_node::Config>),
    /// The cluster's query role: the Prometheus API of every tenant over
    /// the storage nodes (`--storage-node` or `--topology-file`).
    Select(Box<select_node::Config>),
    /// Rule evaluation against a Prometheus-compatible query URL, with
    /// Alertmanager notification; `strata alert test` runs rule unit tests.
    Alert(Box<alert::Args>),
    /// The Kubernetes operator: reconciles StrataCluster and StrataRule.
    Operator(Box<strata_operator::Config>),
    /// Writes the CRD YAML generated from the Rust types to crds/yaml/ and
    /// charts/strata-operator/crds/ (or checks them with --check).
    Crdgen(CrdgenArgs),
}

#[derive(clap::Args)]
struct CrdgenArgs {
    /// Repository root the output directories are relative to. Default: the
    /// current directory.
    #[arg(long, default_value = ".")]
    root: std::path::PathBuf,
    /// Write nothing; fail when the checked-in files differ from the types.
    #[arg(long)]
    check: bool,
}

/// Queries and ingestion allocate many small label strings and sample
/// vectors across threads; mimalloc serves them with less work and less
/// contention between threads than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = match cli.command {
        Command::Single(config) => runtime
            .block_on(single::run(*config, shutdown_signal()))
            .context("strata single failed"),
        Command::Storage(config) => runtime
            .block_on(storage_node::run(*config, shutdown_signal()))
            .context("strata storage failed"),
        Command::Insert(config) => runtime
            .block_on(insert_node::run(*config, shutdown_signal()))
            .context("strata insert failed"),
        Command::Select(config) => runtime
            .block_on(select_node::run(*config, shutdown_signal()))
            .context("strata select failed"),
        Command::Alert(args) => match args.command {
            Some(alert::AlertCommand::Test { files }) => {
                alert::test(&files).context("strata alert test failed")
            }
            None => runtime
                .block_on(alert::run(args.config, shutdown_signal()))
                .context("strata alert failed"),
        },
        Command::Operator(config) => runtime
            .block_on(strata_operator::run(*config, shutdown_signal()))
            .context("strata operator failed"),
        Command::Crdgen(args) => crdgen(&args).context("strata crdgen failed"),
    };
    // Blocking tasks whose requests were cut at shutdown must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn crdgen(args: &CrdgenArgs) -> anyhow::Result<()> {
    if args.check {
        strata_crds::crdgen::check(&args.root)?;
        return Ok(());
    }
    for path in strata_crds::crdgen::write(&args.root)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// The error and its causes on one line. Messages in this project often
/// embed their source already: a cause whose text is already there is skipped.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if out.contains(&message) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&message);
    }
    out
}

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};

    // A signal that cannot be listened for must not end the wait for the other.
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGTERM; stop with SIGINT.");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "Cannot listen for SIGINT; stop with SIGTERM.");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate => tracing::info!(signal = "SIGTERM", "Stopping."),
        () = interrupt => tracing::info!(signal = "SIGINT", "Stopping."),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn error_report_skips_repeated_causes() {
        let inner = std::io::Error::other("disk full");
        let e = anyhow::Error::new(std::io::Error::other(format!("cannot write x: {inner}")))
            .context("strata single failed");
        assert_eq!(
            report(&e),
            "strata single failed: cannot write x: disk full"
        );
    }

    #[test]
    fn single_defaults() {
        let cli = Cli::try_parse_from(["strata", "single"]).expect("parses");
        let Command::Single(config) = cli.command else {
            panic!("not single");
        };
        assert_eq!(config.listen, "127.0.0.1:8428");
        assert_eq!(config.http_shutdown_timeout, Duration::from_secs(3));
        assert_eq!(
            config.storage.data_dir,
            std::path::PathBuf::from("./strata-data")
        );
        assert_eq!(config.insert.max_body_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn flags_reach_every_part() {
        let cli = Cli::try_parse_from([
            "strata",
            "single",
            "--listen",
            "0.0.0.0:9000",
            "--data-dir",
            "/tmp/x",
            "--retention",
            "7d",
            "--insert.max-body-bytes",
            "1000",
            "--http.shutdown-timeout",
            "1s",
            "--log-level",
            "debug",
        ])
        .expect("parses");
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        let Command::Single(config) = cli.command else {
            panic!("not single");
        };
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.storage.data_dir, std::path::PathBuf::from("/tmp/x"));
        assert_eq!(config.storage.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(config.insert.max_body_bytes, 1000);
        assert_eq!(config.http_shutdown_timeout, Duration::from_secs(1));
        assert!(Cli::try_parse_from(["strata", "single", "--insert.max-body-bytes", "0"]).is_err());
    }

    #[test]
    fn storage_defaults_and_flags() {
        let cli = Cli::try_parse_from(["strata", "storage"]).expect("parses");
        let Command::Storage(config) = cli.command else {
            panic!("not storage");
        };
        assert_eq!(config.listen, "0.0.0.0:8482");
        assert_eq!(config.rpc_listen, "0.0.0.0:8400");
        assert_eq!(config.min_free_disk_bytes, 100 * 1024 * 1024);
        assert_eq!(config.rpc.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(config.rpc.max_frame_bytes, 64 << 20);
        assert_eq!(
            config.storage.data_dir,
            std::path::PathBuf::from("./strata-data")
        );
        let cli = Cli::try_parse_from([
            "strata",
            "storage",
            "--listen",
            "127.0.0.1:1",
            "--rpc.listen",
            "127.0.0.1:2",
            "--data-dir",
            "/tmp/s",
            "--retention",
            "90d",
            "--sync",
            "none",
            "--dedup.min-scrape-interval",
            "30s",
            "--storage.flush-interval",
            "1s",
            "--storage.min-free-disk-bytes",
            "0",
            "--rpc.max-frame-bytes",
            "1048576",
            "--rpc.max-in-flight-per-connection",
            "8",
            "--rpc.max-concurrent-calls",
            "3",
            "--rpc.shutdown-timeout",
            "10s",
        ])
        .expect("parses");
        let Command::Storage(config) = cli.command else {
            panic!("not storage");
        };
        assert_eq!(config.listen, "127.0.0.1:1");
        assert_eq!(config.rpc_listen, "127.0.0.1:2");
        assert_eq!(config.storage.data_dir, std::path::PathBuf::from("/tmp/s"));
        assert_eq!(config.storage.retention, Duration::from_secs(90 * 86_400));
        assert_eq!(
            config.storage.dedup_min_scrape_interval,
            Duration::from_secs(30)
        );
        assert_eq!(config.min_free_disk_bytes, 0);
        assert_eq!(config.rpc.max_frame_bytes, 1 << 20);
        assert_eq!(config.rpc.max_in_flight_per_connection, 8);
        assert_eq!(config.rpc.max_concurrent_calls, 3);
        assert_eq!(config.rpc.shutdown_timeout, Duration::from_secs(10));
    }

    #[test]
    fn insert_defaults_and_flags() {
        let cli =
            Cli::try_parse_from(["strata", "insert", "--storage-node", "s0:8400"]).expect("parses");
        let Command::Insert(config) = cli.command else {
            panic!("not insert");
        };
        assert_eq!(config.listen, "0.0.0.0:8480");
        assert_eq!(config.storage_nodes, ["s0:8400"]);
        assert_eq!(config.cluster.replication_factor, 1);
        assert_eq!(config.cluster.min_replicas_acked, 1);
        assert_eq!(config.cluster.write_timeout, Duration::from_secs(5));
        assert_eq!(
            config.cluster.handoff_dir,
            std::path::PathBuf::from("./strata-handoff")
        );
        assert_eq!(config.cluster.handoff_max_bytes, 1 << 30);
        assert_eq!(config.insert.max_body_bytes, 64 * 1024 * 1024);

        let cli = Cli::try_parse_from([
            "strata",
            "insert",
            "--storage-node",
            "s0:8400",
            "--storage-node",
            "s1:8400,s2:8400",
            "--replication-factor",
            "2",
            "--insert.min-replicas-acked",
            "2",
            "--rpc.write-timeout",
            "500ms",
            "--handoff.dir",
            "/var/lib/handoff",
            "--handoff.max-bytes",
            "1000",
            "--insert.max-labels-per-series",
            "10",
        ])
        .expect("parses");
        let Command::Insert(config) = cli.command else {
            panic!("not insert");
        };
        assert_eq!(config.storage_nodes, ["s0:8400", "s1:8400", "s2:8400"]);
        assert_eq!(config.cluster.replication_factor, 2);
        assert_eq!(config.cluster.min_replicas_acked, 2);
        assert_eq!(config.cluster.write_timeout, Duration::from_millis(500));
        assert_eq!(
            config.cluster.handoff_dir,
            std::path::PathBuf::from("/var/lib/handoff")
        );
        assert_eq!(config.cluster.handoff_max_bytes, 1000);
        assert_eq!(config.insert.max_labels_per_series, 10);

        let cli = Cli::try_parse_from(["strata", "insert", "--topology-file", "/etc/t.yaml"])
            .expect("parses");
        let Command::Insert(config) = cli.command else {
            panic!("not insert");
        };
        assert_eq!(
            config.topology_file,
            Some(std::path::PathBuf::from("/etc/t.yaml"))
        );
        for bad in [
            ["--replication-factor", "0"],
            ["--handoff.max-bytes", "0"],
            ["--insert.min-replicas-acked", "0"],
        ] {
            let mut args = vec!["strata", "insert", "--storage-node", "s0:8400"];
            args.extend(bad);
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn crdgen_flags() {
        let cli = Cli::try_parse_from(["strata", "crdgen"]).expect("parses");
        let Command::Crdgen(args) = cli.command else {
            panic!("not crdgen");
        };
        assert_eq!(
            (args.root.as_path(), args.check),
            (std::path::Path::new("."), false)
        );
        let cli = Cli::try_parse_from(["strata", "crdgen", "--check", "--root", "/repo"])
            .expect("parses");
        let Command::Crdgen(args) = cli.command else {
            panic!("not crdgen");
        };
        assert_eq!(
            (args.root.as_path(), args.check),
            (std::path::Path::new("/repo"), true)
        );
    }

    #[test]
    fn alert_flags_and_test_subcommand() {
        let cli = Cli::try_parse_from([
            "strata",
            "alert",
            "--rule",
            "a.yml,b/*.yml",
            "--datasource.url",
            "http://q:8428",
            "--notifier.url",
            "http://am1:9093",
            "--notifier.url",
            "http://am2:9093",
            "--external-label",
            "dc=eu",
            "--evaluation-interval",
            "15s",
        ])
        .expect("parses");
        let Command::Alert(args) = cli.command else {
            panic!("not alert");
        };
        assert!(args.command.is_none());
        let config = args.config;
        assert_eq!(config.listen, "127.0.0.1:8880");
        assert_eq!(config.eval.rule, ["a.yml", "b/*.yml"]);
        assert_eq!(config.eval.notifier_url.len(), 2);
        assert_eq!(config.eval.external_label, [("dc".into(), "eu".into())]);
        assert_eq!(config.eval.evaluation_interval, Duration::from_secs(15));
        assert_eq!(config.eval.resend_delay, Duration::from_secs(60));
        assert_eq!(config.eval.outage_tolerance, Duration::from_secs(3600));

        let cli =
            Cli::try_parse_from(["strata", "alert", "test", "t1.yml", "t2.yml"]).expect("parses");
        let Command::Alert(args) = cli.command else {
            panic!("not alert");
        };
        let Some(alert::AlertCommand::Test { files }) = args.command else {
            panic!("not test");
        };
        assert_eq!(files.len(), 2);
    }
}
