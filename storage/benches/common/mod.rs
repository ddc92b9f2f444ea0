//! The query dataset shared by `benches/query.rs` and
//! `examples/query_profile.rs`: the node_exporter fleet of `loadgen query
//! --hosts 150 --points 480` laid out on disk the way that run leaves it,
//! and the storage reads its dashboard queries make.
//!
//! Layout: a loadgen run pushes one scrape of every host after the other at
//! full speed; the flushes and merges behind it leave two parts that hold
//! every series, one of the first ~three quarters of the time range and
//! one of the rest. The build adds each host's samples in two slices and
//! flushes after each, which gives the same two parts (series ids in host
//! order, one block per series and part).
//!
//! A live server also holds the rows since its last flush in memory, and
//! every search looks through them: `with_head` opens a copy of the
//! dataset with `HEAD_SCRAPES` more scrapes of the fleet in the head.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_storage::config::SyncSetting;
use strata_storage::encoding::synthetic::NodeExporter;
use strata_storage::wal::SyncMode;
use strata_storage::{
    Config, Label, MatchOp, Matcher, Sample, SeriesSamples, Storage, Tenant, TimeRange,
};

pub const HOSTS: u32 = 150;
pub const POINTS: usize = 480;
pub const INTERVAL_MS: i64 = 15_000;
/// The queries' evaluation time: a little after the last scrape.
pub const END: i64 = 1_795_267_800_000;
/// Scrapes in the first part (a loadgen run left 358 of 480 there).
pub const FIRST_PART_POINTS: usize = 358;
/// Scrapes in the head for `with_head`: 688,500 rows, what 5 s of ingestion
/// at 138k samples/s leaves.
pub const HEAD_SCRAPES: i64 = 10;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// Opens the dataset's storage with the clock just after the data.
pub fn open(dir: &Path) -> Arc<Storage> {
    let cfg = Config {
        data_dir: dir.to_path_buf(),
        sync: SyncSetting(SyncMode::None),
        // Only the build's own flushes cut parts.
        flush_interval: Duration::from_secs(24 * 3600),
        max_head_rows: 40_000_000,
        ..Config::default()
    };
    Storage::open_with_clock(cfg, &mut Registry::default(), Arc::new(|| END + MINUTE))
        .expect("open storage")
}

/// Writes the dataset into `dir` unless a previous build finished there;
/// returns the number of samples.
pub fn build(dir: &Path) -> u64 {
    let samples = (HOSTS as usize * POINTS) as u64 * series_per_host();
    let done = dir.join("dataset-built");
    if done.exists() {
        return samples;
    }
    let storage = open(dir);
    let fleet = NodeExporter {
        hosts: HOSTS,
        points: POINTS,
        interval_ms: INTERVAL_MS,
        start_ms: END - POINTS as i64 * INTERVAL_MS,
        seed: 1,
    };
    for slice in [0..FIRST_PART_POINTS, FIRST_PART_POINTS..POINTS] {
        for host in 0..HOSTS {
            let batch: Vec<SeriesSamples> = fleet
                .host(host)
                .into_iter()
                .map(|s| SeriesSamples {
                    labels: to_labels(s.labels),
                    samples: s.timestamps[slice.clone()]
                        .iter()
                        .zip(&s.values[slice.clone()])
                        .map(|(t, v)| Sample::new(*t, *v))
                        .collect(),
                })
                .collect();
            storage.add(Tenant::DEFAULT, &batch).expect("add");
        }
        storage.flush().expect("flush");
    }
    storage.close().expect("close");
    std::fs::write(&done, b"").expect("mark the dataset built");
    samples
}

/// A copy of the dataset in `dir` opened with `HEAD_SCRAPES` scrapes of
/// every series in the head, within the last minute before `END` (the
/// copy lives as long as the returned directory).
pub fn with_head(dir: &Path) -> (tempfile::TempDir, Arc<Storage>) {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(dir, copy.path());
    let storage = open(copy.path());
    let mut scrape: Vec<SeriesSamples> = NodeExporter {
        hosts: HOSTS,
        points: 1,
        interval_ms: INTERVAL_MS,
        start_ms: 0,
        seed: 1,
    }
    .series()
    .map(|s| SeriesSamples {
        labels: to_labels(s.labels),
        samples: vec![Sample::new(0, 1.0)],
    })
    .collect();
    for i in 0..HEAD_SCRAPES {
        for s in &mut scrape {
            // Between the parts' scrapes, so nothing collapses.
            s.samples[0] = Sample::new(END - MINUTE + i * 1000 + 1, i as f64);
        }
        storage.add(Tenant::DEFAULT, &scrape).expect("add");
    }
    (copy, storage)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&src, &dst);
        } else if entry.file_name() != "lock" {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

fn series_per_host() -> u64 {
    NodeExporter {
        hosts: 1,
        points: 0,
        ..NodeExporter::default()
    }
    .scrapes(0)
    .series_count() as u64
}

/// What a query asks of storage.
pub enum Read {
    /// `Storage::search`, every sample read.
    Search(Vec<Matcher>),
    /// `Storage::series` (the series API).
    Series(Vec<Matcher>),
    /// `Storage::label_values` of this label without matchers.
    LabelValues(&'static str),
}

/// One storage read of a `loadgen query` suite query.
pub struct Query {
    pub name: &'static str,
    pub read: Read,
    pub range: TimeRange,
}

fn name(metric: &str) -> Matcher {
    Matcher::eq("__name__", metric)
}

fn not(label: &str, value: &str) -> Matcher {
    Matcher::new(MatchOp::NotEqual, label, value).expect("matcher")
}

/// The selectors of `e2e/src/loadgen/query.rs::suite` with the ranges the
/// PromQL engine reads for them (a matrix selector's range, or the 5 minute
/// lookback, before the evaluation time or the first step).
pub fn queries() -> Vec<Query> {
    let last = |span: i64| TimeRange::new(END - span, END);
    vec![
        Query {
            name: "rate_cpu_5m",
            read: Read::Search(vec![name("node_cpu_seconds_total"), not("mode", "idle")]),
            range: last(5 * MINUTE),
        },
        Query {
            name: "network_5m",
            read: Read::Search(vec![name("node_network_receive_bytes_total")]),
            range: last(5 * MINUTE),
        },
        Query {
            name: "load1_1h",
            read: Read::Search(vec![name("node_load1")]),
            range: last(HOUR),
        },
        Query {
            name: "uname_info_lookback",
            read: Read::Search(vec![name("node_uname_info")]),
            range: last(5 * MINUTE),
        },
        Query {
            name: "cpu_idle_24h",
            read: Read::Search(vec![
                name("node_cpu_seconds_total"),
                Matcher::eq("mode", "idle"),
            ]),
            range: last(24 * HOUR + 5 * MINUTE),
        },
        Query {
            name: "mem_available_24h",
            read: Read::Search(vec![name("node_memory_MemAvailable_bytes")]),
            range: last(24 * HOUR + 5 * MINUTE),
        },
        Query {
            name: "one_host_network_24h",
            read: Read::Search(vec![
                name("node_network_receive_bytes_total"),
                Matcher::eq("instance", "host-0001:9100"),
            ]),
            range: last(24 * HOUR + 5 * MINUTE),
        },
        Query {
            name: "cpu_all_1h",
            read: Read::Search(vec![name("node_cpu_seconds_total")]),
            range: last(HOUR + 5 * MINUTE),
        },
        Query {
            name: "series_of_a_host",
            read: Read::Series(vec![Matcher::eq("instance", "host-0001:9100")]),
            range: last(HOUR),
        },
        Query {
            name: "label_values_instance",
            read: Read::LabelValues("instance"),
            range: last(HOUR),
        },
    ]
}

/// Runs `q`; returns the samples read (searches) or the entries answered.
pub fn run(storage: &Storage, q: &Query) -> u64 {
    match &q.read {
        Read::Search(matchers) => storage
            .search(Tenant::DEFAULT, matchers, q.range)
            .expect("search")
            .map(|s| s.expect("series").timestamps.len() as u64)
            .sum(),
        Read::Series(matchers) => storage
            .series(Tenant::DEFAULT, matchers, q.range, 0)
            .expect("series")
            .len() as u64,
        Read::LabelValues(label) => storage
            .label_values(Tenant::DEFAULT, label, &[], q.range, 0)
            .expect("label values")
            .len() as u64,
    }
}

fn to_labels(pairs: Vec<(String, String)>) -> Vec<Label> {
    pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect()
}
