//! Storage comparison of `strata single` with VictoriaMetrics single-node on
//! the same data, driven over HTTP from outside both processes.
//!
//! Both servers run side by side, each with a fresh data directory. One at a
//! time (the other idle), a server receives every prepared import body, is
//! left `SETTLE` to write what it holds in memory, then merges everything;
//! then each is scanned through `/api/v1/export`, and each export is checked
//! against what was sent. Measured per server:
//!
//! - accepted samples/s and the server's CPU seconds per million samples;
//! - bytes on disk after the merge (data, index, log), per sample;
//! - resident memory above the idle process, per active series;
//! - scan samples/s through the export.
//!
//! An export missing a series or a sample, or holding one never sent, fails
//! the run; values that differ from those sent are only counted (a store may
//! round them).

pub mod dataset;
mod load;
mod peer;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::dataset::{Batching, Check, Dataset};
pub use self::load::{Busy, Ingest, Scan};
pub use self::peer::{
    DiskUsage, Kind, MachineCpu, Peer, ProcStats, process_cpu_seconds, sum_metric,
};

/// Wait after an import before measuring: longer than either server keeps
/// rows only in memory (Strata `--storage.flush-interval`, VictoriaMetrics
/// `-inmemoryDataFlushInterval`, both 5 s by default).
pub const SETTLE: Duration = Duration::from_secs(6);

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{server} {what}; end of its log:\n{log_tail}")]
    Server {
        server: &'static str,
        what: String,
        log_tail: String,
    },
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {what} from {path}")]
    Proc { path: PathBuf, what: &'static str },
    #[error("bad dataset: {0}")]
    Dataset(String),
    #[error("bad export from {0}")]
    Export(String),
    #[error("{server} accepted {accepted} samples, {sent} were sent")]
    Accepted {
        server: &'static str,
        accepted: u64,
        sent: u64,
    },
    #[error("the export of {server} differs from what was sent: {summary}")]
    Mismatch {
        server: &'static str,
        summary: String,
    },
}

/// How to run the two servers.
#[derive(Clone, Debug)]
pub struct Options {
    pub strata_bin: PathBuf,
    pub vm_bin: PathBuf,
    /// Extra flags for `strata single`.
    pub strata_args: Vec<String>,
    /// Extra flags for `victoria-metrics`.
    pub vm_args: Vec<String>,
    /// Parent of both data directories.
    pub work_dir: PathBuf,
    /// Concurrent import requests per server.
    pub senders: usize,
    /// Feed VictoriaMetrics first (to see whether order matters).
    pub vm_first: bool,
}

/// Everything measured on one server.
#[derive(Clone, Debug)]
pub struct SideResult {
    pub kind: Kind,
    /// Right after start, idle.
    pub idle: ProcStats,
    pub ingest: Ingest,
    /// Server CPU from the start of the import to `SETTLE` after its end.
    pub ingest_settled_cpu_seconds: f64,
    /// `SETTLE` after the import.
    pub after_ingest: ProcStats,
    /// Samples the server's own metrics count as stored.
    pub rows_stored: f64,
    pub merge_seconds: f64,
    pub merge_cpu_seconds: f64,
    pub after_merge: ProcStats,
    pub disk: DiskUsage,
    pub scan: Scan,
    pub after_scan: ProcStats,
    pub check: Option<CheckSummary>,
}

/// The part of a `Check` worth reporting.
#[derive(Clone, Debug)]
pub struct CheckSummary {
    pub series: u64,
    pub samples: u64,
    pub lines: u64,
    pub changed_values: u64,
    pub max_relative_error: f64,
    pub worst_value: Option<(f64, f64)>,
}

pub struct Comparison {
    pub dataset_name: String,
    pub series: u64,
    pub samples: u64,
    pub json_bytes: u64,
    pub bodies: usize,
    pub senders: usize,
    pub strata: SideResult,
    pub victoria: SideResult,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started and ended.
    pub load_average: (String, String),
}

/// Runs the whole comparison; `progress` receives one line per step.
pub fn run(
    dataset: &Dataset,
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Comparison, CompareError> {
    let load_at_start = load_average();
    let mut strata = Peer::start(
        Kind::Strata,
        &options.strata_bin,
        &options.strata_args,
        &options.work_dir,
    )?;
    let mut victoria = Peer::start(
        Kind::Victoria,
        &options.vm_bin,
        &options.vm_args,
        &options.work_dir,
    )?;
    progress(&format!(
        "started {} (pid {:?}) and {} (pid {:?}) in {}",
        strata.kind.name(),
        strata.pid(),
        victoria.kind.name(),
        victoria.pid(),
        options.work_dir.display()
    ));
    // Let both finish starting up before taking the baseline.
    std::thread::sleep(Duration::from_secs(2));
    let idle = (strata.stats()?, victoria.stats()?);

    let (strata_loaded, victoria_loaded) = if options.vm_first {
        let v = load_and_merge(&victoria, dataset, options.senders, progress)?;
        (
            load_and_merge(&strata, dataset, options.senders, progress)?,
            v,
        )
    } else {
        let s = load_and_merge(&strata, dataset, options.senders, progress)?;
        (
            s,
            load_and_merge(&victoria, dataset, options.senders, progress)?,
        )
    };

    let mut strata_result = scan_side(&strata, dataset, idle.0, strata_loaded, progress)?;
    let mut victoria_result = scan_side(&victoria, dataset, idle.1, victoria_loaded, progress)?;
    for side in [&strata_result, &victoria_result] {
        if side.scan.samples != dataset.samples {
            return Err(CompareError::Mismatch {
                server: side.kind.name(),
                summary: format!(
                    "the scan returned {} samples, {} were sent",
                    side.scan.samples, dataset.samples
                ),
            });
        }
    }
    strata_result.check = Some(check_side(&strata, dataset, progress)?);
    victoria_result.check = Some(check_side(&victoria, dataset, progress)?);
    strata.stop(Duration::from_secs(60));
    victoria.stop(Duration::from_secs(60));
    Ok(Comparison {
        dataset_name: dataset.name.clone(),
        series: dataset.series,
        samples: dataset.samples,
        json_bytes: dataset.json_bytes,
        bodies: dataset.bodies.len(),
        senders: options.senders,
        strata: strata_result,
        victoria: victoria_result,
        load_average: (load_at_start, load_average()),
    })
}

fn scan_side(
    peer: &Peer,
    dataset: &Dataset,
    idle: ProcStats,
    loaded: Loaded,
    progress: &mut dyn FnMut(&str),
) -> Result<SideResult, CompareError> {
    let scan = load::scan(peer, dataset)?;
    let after_scan = peer.stats()?;
    progress(&format!(
        "{}: scanned {} samples in {} lines in {:.1} s",
        peer.kind.name(),
        scan.samples,
        scan.lines,
        scan.seconds
    ));
    Ok(SideResult {
        kind: peer.kind,
        idle,
        ingest: loaded.ingest,
        ingest_settled_cpu_seconds: loaded.settled_cpu_seconds,
        after_ingest: loaded.after_ingest,
        rows_stored: loaded.rows_stored,
        merge_seconds: loaded.merge_seconds,
        merge_cpu_seconds: loaded.merge_cpu_seconds,
        after_merge: loaded.after_merge,
        disk: loaded.disk,
        scan,
        after_scan,
        check: None,
    })
}

fn check_side(
    peer: &Peer,
    dataset: &Dataset,
    progress: &mut dyn FnMut(&str),
) -> Result<CheckSummary, CompareError> {
    let check = load::verify(peer, dataset)?;
    progress(&format!(
        "{}: export checked: {} series, {} samples, {} values differ from those sent",
        peer.kind.name(),
        check.series(),
        check.samples,
        check.changed_values
    ));
    if !check.is_complete() || check.samples != dataset.samples {
        return Err(CompareError::Mismatch {
            server: peer.kind.name(),
            summary: mismatch_summary(&check, dataset),
        });
    }
    Ok(CheckSummary {
        series: check.series(),
        samples: check.samples,
        lines: check.lines,
        changed_values: check.changed_values,
        max_relative_error: check.max_relative_error,
        worst_value: check.worst_value,
    })
}

struct Loaded {
    ingest: Ingest,
    settled_cpu_seconds: f64,
    after_ingest: ProcStats,
    rows_stored: f64,
    merge_seconds: f64,
    merge_cpu_seconds: f64,
    after_merge: ProcStats,
    disk: DiskUsage,
}

fn load_and_merge(
    peer: &Peer,
    dataset: &Dataset,
    senders: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Loaded, CompareError> {
    let name = peer.kind.name();
    progress(&format!("{name}: importing {} samples", dataset.samples));
    let before = peer.stats()?;
    let ingest = load::ingest(peer, dataset, senders)?;
    // Both servers hold recent rows in memory for a few seconds and write
    // them in the background: let that happen before taking the figures.
    std::thread::sleep(SETTLE);
    let after_ingest = peer.stats()?;
    if ingest.samples != dataset.samples {
        return Err(CompareError::Accepted {
            server: name,
            accepted: ingest.samples,
            sent: dataset.samples,
        });
    }
    progress(&format!(
        "{name}: imported in {:.1} s ({:.0} samples/s), {} retries",
        ingest.seconds,
        ingest.samples as f64 / ingest.seconds,
        ingest.retries
    ));
    let before_merge = peer.stats()?;
    let merge_seconds = peer.force_merge()?.as_secs_f64();
    let after_merge = peer.stats()?;
    let disk = peer.disk_usage();
    let rows_stored = peer.rows_stored()?;
    progress(&format!(
        "{name}: merged in {merge_seconds:.1} s; data {} B, index {} B, log {} B",
        disk.data, disk.index, disk.log
    ));
    Ok(Loaded {
        ingest,
        settled_cpu_seconds: after_ingest.cpu_seconds - before.cpu_seconds,
        after_ingest,
        rows_stored,
        merge_seconds,
        merge_cpu_seconds: after_merge.cpu_seconds - before_merge.cpu_seconds,
        after_merge,
        disk,
    })
}

fn mismatch_summary(check: &Check, dataset: &Dataset) -> String {
    format!(
        "{} of {} series, {} of {} samples; {} missing series, {} unexpected series, \
         {} series with a wrong sample count, {} unexpected timestamps; first problems: {}",
        check.series(),
        dataset.series,
        check.samples,
        dataset.samples,
        check.missing_series,
        check.unexpected_series,
        check.wrong_sample_counts,
        check.unexpected_timestamps,
        check.notes.join("; ")
    )
}

/// The first three fields of `/proc/loadavg`, or `?`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_string(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// `<workspace>/target/release/strata`, or under `$CARGO_TARGET_DIR`.
pub fn default_strata_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("release").join("strata")
}

/// Where `scripts/fetch-peers vm` extracts VictoriaMetrics.
pub fn default_vm_bin() -> PathBuf {
    workspace_root().join(".peers/vm/usr/bin/victoria-metrics")
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
