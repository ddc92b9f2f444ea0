//! Appends scrapes of a synthetic fleet into existing series for profiling,
//! then abandons the storage without a flush (as a crash would) and times the
//! log replay of a fresh open:
//! `cargo run --release -p strata-storage --example append_profile -- [hosts] [scrapes]`
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use strata_storage::config::SyncSetting;
use strata_storage::encoding::synthetic::NodeExporter;
use strata_storage::wal::SyncMode;
use strata_storage::{Config, Label, Sample, SeriesSamples, Storage, Tenant};

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let hosts = args.first().copied().unwrap_or(100);
    let scrapes = args.get(1).copied().unwrap_or(40) as i64;
    let now = 1_795_219_200_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        sync: SyncSetting(SyncMode::Batch),
        // Long enough that every appended row is still in the log at the end.
        flush_interval: Duration::from_secs(3600),
        max_head_rows: 100_000_000,
        ..Config::default()
    };
    let storage =
        Storage::open_with_clock(cfg.clone(), &mut Registry::default(), Arc::new(move || now))
            .expect("open");
    let fleet: Vec<SeriesSamples> = NodeExporter {
        hosts,
        points: 1,
        interval_ms: 15_000,
        start_ms: now - 86_400_000,
        seed: 3,
    }
    .series()
    .map(|s| SeriesSamples {
        // Sorted by name, as Prometheus sends them.
        labels: {
            let mut l: Vec<Label> = s
                .labels
                .into_iter()
                .map(|(n, v)| Label::new(n, v))
                .collect();
            l.sort();
            l
        },
        samples: vec![Sample::new(s.timestamps[0], s.values[0])],
    })
    .collect();
    let started = Instant::now();
    storage.add(Tenant::DEFAULT, &fleet).expect("register");
    eprintln!(
        "registered {} series in {:?}",
        fleet.len(),
        started.elapsed()
    );
    let mut batches = fleet.clone();
    let started = Instant::now();
    let mut rows = 0u64;
    for i in 1..=scrapes {
        for s in &mut batches {
            s.samples[0].timestamp = now - 86_400_000 + i * 15_000;
        }
        for chunk in batches.chunks(10_000) {
            rows += storage.add(Tenant::DEFAULT, chunk).expect("add").accepted;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "appended {rows} rows in {secs:.2}s: {:.0} rows/s",
        rows as f64 / secs
    );
    // A crash: no flush, no close; the directory lock goes with the process.
    std::mem::forget(storage);
    std::fs::remove_file(dir.path().join("lock")).expect("remove lock");
    let wal_bytes: u64 = std::fs::read_dir(dir.path().join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    let started = Instant::now();
    let storage = Storage::open_with_clock(cfg, &mut Registry::default(), Arc::new(move || now))
        .expect("reopen");
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "reopened with {rows} rows ({} MB) in the log in {secs:.2}s: {:.0} rows/s replayed",
        wal_bytes / 1_000_000,
        rows as f64 / secs
    );
    storage.close().expect("close");
}
