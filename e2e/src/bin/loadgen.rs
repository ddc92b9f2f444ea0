//! `loadgen`: pushes a node_exporter fleet through Prometheus remote write
//! to any URL, or compares `strata single` with VictoriaMetrics under the
//! same load; see `strata_e2e::loadgen` and `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p strata-e2e --bin loadgen -- push --url http://127.0.0.1:8428/api/v1/write --hosts 1000 --points 20
//! cargo run --release -p strata-e2e --bin loadgen -- compare --hosts 1000 --points 40
//! cargo run --release -p strata-e2e --bin loadgen -- query --hosts 500 --points 480
//! cargo run --release -p strata-e2e --bin loadgen -- cluster --hosts 200 --points 20
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use strata_e2e::compare::{self, Kind};
use strata_e2e::loadgen::cluster::{self, Sides, run_cluster_bench};
use strata_e2e::loadgen::compare::{Servers, markdown, run_compare};
use strata_e2e::loadgen::query::{self, QueryServers, run_queries};
use strata_e2e::loadgen::{self, Config};

#[derive(Parser, Debug)]
#[command(
    about = "Remote write load generator: node_exporter-shaped series, churn, fixed or full rate"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Push the load to one remote write URL and report.
    Push {
        #[command(flatten)]
        load: Config,
        /// Print the final report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Start `strata single` and VictoriaMetrics in turn, push the same load
    /// to each, and print a Markdown table (samples/s, CPU per sample).
    Compare {
        #[command(flatten)]
        load: Config,
        /// The strata binary. Default: target/release/strata (under $CARGO_TARGET_DIR if set).
        #[arg(long, env = "STRATA_BIN")]
        strata_bin: Option<PathBuf>,
        /// The victoria-metrics binary. Default: .peers/vm/usr/bin/victoria-metrics
        /// (`scripts/fetch-peers vm`).
        #[arg(long, env = "STRATA_VM_BIN")]
        vm_bin: Option<PathBuf>,
        /// Extra flag for `strata single`, repeatable: `--strata-arg=--sync=none`.
        #[arg(long, allow_hyphen_values = true)]
        strata_arg: Vec<String>,
        /// Extra flag for victoria-metrics, repeatable.
        #[arg(long, allow_hyphen_values = true)]
        vm_arg: Vec<String>,
        /// Servers to load, in order. Default: strata,vm.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "strata,vm")]
        servers: Vec<Server>,
        /// Scrapes sent before the measured load, to create the series
        /// (measured on their own); 0 measures both together. Default: 1.
        #[arg(long, default_value_t = 1)]
        warmup_points: u64,
        /// Parent of the data directories; kept afterwards. Default: a
        /// temporary directory, removed afterwards.
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Start `strata single` and VictoriaMetrics side by side, push the
    /// same load to both at full speed, flush both, run the same dashboard
    /// queries against both and print a Markdown table of latencies.
    Query {
        #[command(flatten)]
        load: Config,
        /// The strata binary. Default: target/release/strata (under $CARGO_TARGET_DIR if set).
        #[arg(long, env = "STRATA_BIN")]
        strata_bin: Option<PathBuf>,
        /// The victoria-metrics binary. Default: .peers/vm/usr/bin/victoria-metrics.
        #[arg(long, env = "STRATA_VM_BIN")]
        vm_bin: Option<PathBuf>,
        /// Extra flag for `strata single`, repeatable.
        #[arg(long, allow_hyphen_values = true)]
        strata_arg: Vec<String>,
        /// Extra flag for victoria-metrics, repeatable.
        #[arg(long, allow_hyphen_values = true)]
        vm_arg: Vec<String>,
        /// Measured requests per query and server. Default: 20.
        #[arg(long, default_value_t = 20)]
        repetitions: usize,
        /// Only queries whose name contains this. Default: all.
        #[arg(long, default_value = "")]
        only: String,
        /// Parent of the data directories; kept afterwards. Default: a
        /// temporary directory, removed afterwards.
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Start a Strata cluster (storage nodes, insert, select), `strata
    /// single` and VictoriaMetrics side by side, push the same load to each
    /// at full speed (CPU summed over each side's processes), then run the
    /// dashboard queries against all and print Markdown tables.
    Cluster {
        #[command(flatten)]
        load: Config,
        /// The strata binary. Default: target/release/strata (under $CARGO_TARGET_DIR if set).
        #[arg(long, env = "STRATA_BIN")]
        strata_bin: Option<PathBuf>,
        /// The victoria-metrics binary. Default: .peers/vm/usr/bin/victoria-metrics.
        #[arg(long, env = "STRATA_VM_BIN")]
        vm_bin: Option<PathBuf>,
        /// Leave VictoriaMetrics out. Default: false.
        #[arg(long)]
        no_vm: bool,
        /// Leave `strata single` out. Default: false.
        #[arg(long)]
        no_single: bool,
        /// Storage nodes of the cluster. Default: 3.
        #[arg(long, default_value_t = 3)]
        storage_nodes: usize,
        /// Replication factor of the cluster. Default: 2.
        #[arg(long, default_value_t = 2)]
        replication_factor: usize,
        /// Scrapes sent before the measured load, to create the series
        /// (not measured). Default: 1.
        #[arg(long, default_value_t = 1)]
        warmup_points: u64,
        /// Measured requests per query and side. Default: 10.
        #[arg(long, default_value_t = 10)]
        repetitions: usize,
        /// Parent of single's and VictoriaMetrics' data directories; kept
        /// afterwards. Default: a temporary directory, removed afterwards.
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Server {
    Strata,
    Vm,
}

/// Fails with how to get `bin` when it is missing.
fn ensure_binary(what: &str, bin: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        bin.exists(),
        "no {what} binary at {} (build it with `cargo build --release -p strata`, \
         fetch VictoriaMetrics with `scripts/fetch-peers vm`, or pass its path)",
        bin.display()
    );
    Ok(())
}

/// `work_dir`, or a new temporary directory (kept alive by the returned
/// guard) named with `prefix`.
fn work_dir_or_temp(
    work_dir: Option<PathBuf>,
    prefix: &str,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(dir) = work_dir {
        return Ok((dir, None));
    }
    let temp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create a temporary directory")?;
    Ok((temp.path().to_path_buf(), Some(temp)))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.command {
        Command::Push { load, json } => {
            let report = runtime.block_on(loadgen::run(&load, &mut |line| eprintln!("{line}")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Compare {
            load,
            strata_bin,
            vm_bin,
            strata_arg,
            vm_arg,
            servers,
            warmup_points,
            work_dir,
        } => {
            let order: Vec<Kind> = servers
                .iter()
                .map(|s| match s {
                    Server::Strata => Kind::Strata,
                    Server::Vm => Kind::Victoria,
                })
                .collect();
            let strata_bin = strata_bin.unwrap_or_else(compare::default_strata_bin);
            let vm_bin = vm_bin.unwrap_or_else(compare::default_vm_bin);
            for kind in &order {
                match kind {
                    Kind::Strata => ensure_binary("strata", &strata_bin)?,
                    Kind::Victoria => ensure_binary("victoria-metrics", &vm_bin)?,
                }
            }
            let (work_dir, _temp) = work_dir_or_temp(work_dir, "ingest-compare-")?;
            let servers = Servers {
                strata_bin,
                vm_bin,
                strata_args: strata_arg,
                vm_args: vm_arg,
                work_dir,
                order,
                warmup_points,
            };
            let sides = run_compare(&runtime, &load, &servers, &mut |line| eprintln!("{line}"))?;
            println!("{}", markdown(&sides));
            Ok(())
        }
        Command::Query {
            load,
            strata_bin,
            vm_bin,
            strata_arg,
            vm_arg,
            repetitions,
            only,
            work_dir,
        } => {
            let strata_bin = strata_bin.unwrap_or_else(compare::default_strata_bin);
            let vm_bin = vm_bin.unwrap_or_else(compare::default_vm_bin);
            ensure_binary("strata", &strata_bin)?;
            ensure_binary("victoria-metrics", &vm_bin)?;
            let (work_dir, _temp) = work_dir_or_temp(work_dir, "query-compare-")?;
            let servers = QueryServers {
                strata_bin,
                vm_bin,
                strata_args: strata_arg,
                vm_args: vm_arg,
                work_dir,
                repetitions,
                filter: only,
            };
            let measured = run_queries(&runtime, &load, &servers, &mut |line| eprintln!("{line}"))?;
            println!("{}", query::markdown(&measured));
            Ok(())
        }
        Command::Cluster {
            load,
            strata_bin,
            vm_bin,
            no_vm,
            no_single,
            storage_nodes,
            replication_factor,
            warmup_points,
            repetitions,
            work_dir,
        } => {
            let strata_bin = strata_bin.unwrap_or_else(compare::default_strata_bin);
            ensure_binary("strata", &strata_bin)?;
            let vm_bin = if no_vm {
                None
            } else {
                let vm_bin = vm_bin.unwrap_or_else(compare::default_vm_bin);
                ensure_binary("victoria-metrics", &vm_bin)?;
                Some(vm_bin)
            };
            let (work_dir, _temp) = work_dir_or_temp(work_dir, "cluster-bench-")?;
            let sides = Sides {
                strata_bin,
                vm_bin,
                no_single,
                storage_nodes,
                replication_factor,
                work_dir,
                warmup_points,
                repetitions,
            };
            let bench =
                run_cluster_bench(&runtime, &load, &sides, &mut |line| eprintln!("{line}"))?;
            println!("{}", cluster::markdown(&bench));
            Ok(())
        }
    }
}
