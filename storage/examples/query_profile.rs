//! Runs the storage reads of the `loadgen query` suite for profiling (the
//! dataset of `benches/common/mod.rs`, built into `<dir>` on the first run):
//!
//! ```text
//! cargo run --release -p strata-storage --example query_profile -- <dir> [filter] [repetitions] [head]
//! valgrind --tool=callgrind --toggle-collect='query_profile::warm*' <binary> <dir> load1 5
//! valgrind --tool=callgrind --toggle-collect='query_profile::cold*' <binary> <dir> load1 0
//! ```
//!
//! Per query: the first run (cold caches) and the median of the
//! repetitions that follow, as wall time and as this thread's CPU time
//! (`/proc/thread-self/schedstat`, which other processes on the machine do
//! not inflate as much as wall time). With `head` as the fourth argument the
//! reads run on a copy of the dataset with rows in the head (`with_head`).

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::Instant;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One timed run: (answer size, wall ms, CPU ms).
fn measured(storage: &strata_storage::Storage, q: &common::Query) -> (u64, f64, f64) {
    let (wall, cpu) = (Instant::now(), thread_cpu_ns());
    let n = common::run(storage, q);
    let cpu_ms = (thread_cpu_ns() - cpu) as f64 / 1e6;
    (n, wall.elapsed().as_secs_f64() * 1e3, cpu_ms)
}

/// The first run of a query, with caches cold when it is the process's
/// only query: (answer size, wall ms).
#[inline(never)]
fn cold(storage: &strata_storage::Storage, q: &common::Query) -> (u64, f64) {
    let (n, wall, _) = measured(storage, q);
    (n, wall)
}

/// The repetitions after the first run, apart so that callgrind can count
/// them alone: (wall ms, CPU ms) of each.
#[inline(never)]
fn warm(storage: &strata_storage::Storage, q: &common::Query, reps: usize) -> Vec<(f64, f64)> {
    (0..reps)
        .map(|_| {
            let (_, w, c) = measured(storage, q);
            (w, c)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: query_profile <dir> [filter] [repetitions] [head]");
        std::process::exit(2);
    };
    let filter = args.get(1).cloned().unwrap_or_default();
    let reps: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(10);
    let dir = std::path::Path::new(dir);
    let started = Instant::now();
    let samples = common::build(dir);
    eprintln!(
        "dataset: {samples} samples, ready in {:?}",
        started.elapsed()
    );
    let (_copy, storage) = match args.get(3).map(String::as_str) {
        Some("head") => {
            let (copy, storage) = common::with_head(dir);
            (Some(copy), storage)
        }
        _ => (None, common::open(dir)),
    };
    println!("| query | answer | cold ms | warm ms | warm CPU ms |");
    println!("|---|---:|---:|---:|---:|");
    for q in common::queries()
        .iter()
        .filter(|q| q.name.contains(&filter))
    {
        let (n, cold) = cold(&storage, q);
        let (wall, cpu) = warm(&storage, q, reps).into_iter().unzip();
        println!(
            "| {} | {n} | {cold:.2} | {:.2} | {:.2} |",
            q.name,
            median(wall),
            median(cpu)
        );
    }
    storage.close().expect("close");
}
