//! `storage-compare`: Strata against VictoriaMetrics on the same data; see
//! `strata_e2e::compare` for what is measured and `docs/benchmarks.md` for
//! figures.
//!
//! ```text
//! cargo build --release -p strata
//! cargo run --release -p strata-e2e --bin storage-compare -- --hosts 1000 --points 240
//! cargo run --release -p strata-e2e --bin storage-compare -- --dataset real
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use strata_e2e::compare::{self, Batching, Dataset, Options};
use strata_e2e::now_ms;
use strata_storage::encoding::synthetic::{REAL_SCRAPE_FILE, testdata_path};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Source {
    /// The node_exporter fleet generator.
    Synthetic,
    /// The recorded scrape in shared/testdata (2,159 series at 2 s).
    Real,
}

#[derive(Parser, Debug)]
#[command(about = "Compare Strata with VictoriaMetrics: ingest rate, CPU, disk, memory, scan")]
struct Args {
    /// Data to load. Default: synthetic.
    #[arg(long, value_enum, default_value = "synthetic")]
    dataset: Source,

    /// Synthetic: node_exporter hosts (459 series each). Default: 1000
    /// (110M samples; about 3 minutes on 2 cores, 3.5 GB of client memory).
    #[arg(long, default_value_t = 1000)]
    hosts: u32,

    /// Synthetic: samples per series. Default: 240 (an hour at 15 s).
    #[arg(long, default_value_t = 240)]
    points: usize,

    /// Synthetic: milliseconds between samples. Default: 15000.
    #[arg(long, default_value_t = 15_000)]
    interval_ms: i64,

    /// Synthetic: generator seed. Default: 1.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Real: the import file (zstd JSON lines). Default: shared/testdata/real-scrape-22m.jsonl.zst.
    #[arg(long)]
    real_file: Option<PathBuf>,

    /// Samples per import request (whole series lines). Default: 30000.
    #[arg(long, default_value_t = 30_000)]
    batch_samples: u64,

    /// Concurrent import requests per server. Default: 2.
    #[arg(long, default_value_t = 2)]
    senders: usize,

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

    /// Feed VictoriaMetrics first. Default: Strata first.
    #[arg(long)]
    vm_first: bool,

    /// Parent of both data directories; kept afterwards. Default: a
    /// temporary directory, removed afterwards.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let strata_bin = args.strata_bin.unwrap_or_else(compare::default_strata_bin);
    let vm_bin = args.vm_bin.unwrap_or_else(compare::default_vm_bin);
    for (what, bin) in [("strata", &strata_bin), ("victoria-metrics", &vm_bin)] {
        anyhow::ensure!(
            bin.exists(),
            "no {what} binary at {} (build it with `cargo build --release -p strata`, \
             fetch VictoriaMetrics with `scripts/fetch-peers vm`, or pass its path)",
            bin.display()
        );
    }
    let batching = Batching {
        samples_per_body: args.batch_samples.max(1),
    };

    let preparing = Instant::now();
    let dataset = match args.dataset {
        Source::Synthetic => Dataset::synthetic(
            args.hosts,
            args.points,
            args.interval_ms,
            args.seed,
            now_ms(),
            batching,
        ),
        Source::Real => {
            let path = match args.real_file {
                Some(p) => p,
                None => testdata_path(REAL_SCRAPE_FILE)
                    .with_context(|| format!("cannot find {REAL_SCRAPE_FILE}; pass --real-file"))?,
            };
            Dataset::from_import_file(&path, now_ms(), batching)?
        }
    };
    eprintln!(
        "prepared {}: {} series, {} samples, {} JSON bytes in {} bodies ({:.1} s)",
        dataset.name,
        dataset.series,
        dataset.samples,
        dataset.json_bytes,
        dataset.bodies.len(),
        preparing.elapsed().as_secs_f64()
    );

    let temp;
    let work_dir = match args.work_dir {
        Some(dir) => dir,
        None => {
            temp = tempfile::Builder::new()
                .prefix("storage-compare-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let options = Options {
        strata_bin,
        vm_bin,
        strata_args: args.strata_arg,
        vm_args: args.vm_arg,
        work_dir,
        senders: args.senders.max(1),
        vm_first: args.vm_first,
    };
    let started = Instant::now();
    let comparison = compare::run(&dataset, &options, &mut |line| eprintln!("{line}"))?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    println!("{}", compare::report::markdown(&comparison));
    Ok(())
}
