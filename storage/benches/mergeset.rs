//! Mergeset figures: add throughput, flush and merge time, bytes per item on
//! index-like keys, seek+scan latency.
//!
//! `cargo bench -p strata-storage --bench mergeset`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use strata_storage::mergeset::{Table, TableOptions};

const TENANT: u64 = 42;
const DAY: u32 = 20_300;

fn key_prefix() -> Vec<u8> {
    let mut k = vec![0x02];
    k.extend_from_slice(&TENANT.to_be_bytes());
    k.extend_from_slice(&DAY.to_be_bytes());
    k
}

/// `0x02 | tenant | day | name | 0 | value | 0 | series id`.
fn index_key(name: &str, value: &str, series: u64) -> Vec<u8> {
    let mut k = key_prefix();
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k.extend_from_slice(&series.to_be_bytes());
    k
}

/// 60-byte keys: 12 label names, 1000 values each, sequential series ids.
fn keys_60(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let series = i / 12;
            let name = format!("label_{:02}", i % 12);
            let value = format!("value-{:023}", (series * 7919 + i % 12) % 1000);
            let k = index_key(&name, &value, series);
            debug_assert_eq!(k.len(), 60);
            k
        })
        .collect()
}

const NODE_METRICS: [&str; 40] = [
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_files_free",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_io_time_seconds_total",
    "node_disk_reads_completed_total",
    "node_disk_writes_completed_total",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_network_receive_packets_total",
    "node_network_transmit_packets_total",
    "node_network_receive_errs_total",
    "node_network_transmit_errs_total",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_boot_time_seconds",
    "node_context_switches_total",
    "node_intr_total",
    "node_forks_total",
    "node_procs_running",
    "node_procs_blocked",
    "node_vmstat_pgfault",
    "node_vmstat_pgmajfault",
    "node_netstat_Tcp_CurrEstab",
    "node_netstat_Tcp_RetransSegs",
    "node_sockstat_TCP_inuse",
    "node_timex_offset_seconds",
    "node_entropy_available_bits",
    "node_filefd_allocated",
    "node_textfile_scrape_error",
    "node_hwmon_temp_celsius",
    "node_pressure_cpu_waiting_seconds_total",
    "node_uname_info",
];

const MODES: [&str; 8] = [
    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
];

/// node_exporter-like series: 1000 hosts of 400 series, 12 labels each,
/// series ids assigned in creation order (host by host).
fn node_series(hosts: u64) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    for host in 0..hosts {
        for k in 0..400u64 {
            let metric = NODE_METRICS[(k % 40) as usize];
            let sub = k / 40;
            out.push(vec![
                ("__name__".into(), metric.into()),
                ("cluster".into(), format!("prod-{}", host / 250)),
                ("cpu".into(), sub.to_string()),
                ("datacenter".into(), format!("dc-{}", host % 3)),
                (
                    "device".into(),
                    format!("sd{}", (b'a' + (sub % 4) as u8) as char),
                ),
                (
                    "env".into(),
                    if host % 10 == 0 {
                        "staging"
                    } else {
                        "production"
                    }
                    .into(),
                ),
                (
                    "instance".into(),
                    format!("10.1.{}.{}:9100", host / 256, host % 256),
                ),
                ("job".into(), "node".into()),
                ("mode".into(), MODES[(k % 8) as usize].into()),
                ("os".into(), "linux".into()),
                ("region".into(), format!("eu-west-{}", host % 2 + 1)),
                ("team".into(), format!("team-{}", host % 17)),
            ]);
        }
    }
    out
}

/// Kubernetes cAdvisor-like series: pod names and container ids carry random
/// hashes, so values have far more entropy than node_exporter's.
fn k8s_series(count: u64) -> Vec<Vec<(String, String)>> {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let metrics = [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_reads_bytes_total",
        "container_fs_writes_bytes_total",
        "container_spec_cpu_quota",
        "container_spec_memory_limit_bytes",
        "container_last_seen",
    ];
    let mut out = Vec::new();
    'pods: for pod in 0.. {
        let deployment = format!("app-{}", pod / 3 % 500);
        let pod_name = format!(
            "{deployment}-{:08x}-{:05x}",
            next() as u32,
            next() % 0xfffff
        );
        let namespace = format!("team-{}", pod / 3 % 40);
        let node = format!(
            "ip-10-2-{}-{}.eu-west-1.compute.internal",
            pod % 64,
            pod / 64 % 250
        );
        for container in ["app", "istio-proxy"] {
            let id = format!("/kubepods/burstable/pod{:016x}/{:016x}", next(), next());
            for metric in metrics {
                if out.len() as u64 == count {
                    break 'pods;
                }
                out.push(vec![
                    ("__name__".into(), metric.into()),
                    ("container".into(), container.into()),
                    ("endpoint".into(), "https-metrics".into()),
                    ("id".into(), id.clone()),
                    (
                        "image".into(),
                        format!("registry.example.com/{deployment}:v1.{}", pod % 7),
                    ),
                    ("instance".into(), format!("{node}:10250")),
                    ("job".into(), "kubelet".into()),
                    ("metrics_path".into(), "/metrics/cadvisor".into()),
                    ("namespace".into(), namespace.clone()),
                    ("node".into(), node.clone()),
                    ("pod".into(), pod_name.clone()),
                    ("service".into(), "kubelet".into()),
                ]);
            }
        }
    }
    out
}

fn node_items(series: &[Vec<(String, String)>]) -> Vec<Vec<Vec<u8>>> {
    series
        .iter()
        .enumerate()
        .map(|(id, labels)| {
            labels
                .iter()
                .map(|(n, v)| index_key(n, v, id as u64 + 1))
                .collect()
        })
        .collect()
}

fn add_parallel(table: &Arc<Table>, keys: &Arc<Vec<Vec<u8>>>, threads: usize, batch: usize) {
    let chunk = keys.len().div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (table, keys) = (table.clone(), keys.clone());
            std::thread::spawn(move || {
                let end = keys.len().min((t + 1) * chunk);
                for b in keys[t * chunk..end].chunks(batch) {
                    table.add_items(b.iter().map(Vec::as_slice));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("adder");
    }
}

fn bench_add(c: &mut Criterion) {
    let keys = Arc::new(keys_60(1_000_000));
    let mut g = c.benchmark_group("mergeset_add_1m_60b");
    g.sample_size(10);
    g.throughput(Throughput::Elements(keys.len() as u64));
    for (threads, batch) in [(1, 12), (1, 1000), (4, 12), (4, 1000)] {
        g.bench_function(format!("threads{threads}_batch{batch}"), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let table = Arc::new(Table::open(dir.path()).expect("open"));
                    (dir, table)
                },
                |(dir, table)| {
                    add_parallel(&table, &keys, threads, batch);
                    (dir, table)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn bench_flush_merge(c: &mut Criterion) {
    let keys = keys_60(1_000_000);
    let mut g = c.benchmark_group("mergeset_persist_1m_60b");
    g.sample_size(10);
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("flush", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let table = Table::open(dir.path()).expect("open");
                for batch in keys.chunks(1000) {
                    table.add_items(batch.iter().map(Vec::as_slice));
                }
                (dir, table)
            },
            |(dir, table)| {
                table.flush().expect("flush");
                (dir, table)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("force_merge_8_parts", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let table = Table::open(dir.path()).expect("open");
                for part in keys.chunks(keys.len() / 8) {
                    for batch in part.chunks(1000) {
                        table.add_items(batch.iter().map(Vec::as_slice));
                    }
                    table.flush().expect("flush");
                }
                (dir, table)
            },
            |(dir, table)| {
                table.force_merge().expect("force merge");
                (dir, table)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Registers `series` one call per series (as new-series registration
/// does), flushing and merging along the way, then prints the size per item.
fn build_table(
    dir: &std::path::Path,
    what: &str,
    series: &[Vec<(String, String)>],
    opts: TableOptions,
) -> Table {
    let items = node_items(series);
    let total: usize = items.iter().map(Vec::len).sum();
    let raw: usize = items.iter().flatten().map(Vec::len).sum();
    let table = Table::open_with(dir, opts.clone()).expect("open");
    let start = Instant::now();
    for (i, s) in items.iter().enumerate() {
        table.add_items(s.iter().map(Vec::as_slice));
        if (i + 1) % 8_000 == 0 {
            table.flush().expect("flush");
            while table.merge_step().expect("merge") {}
        }
    }
    table.flush().expect("flush");
    let ingest = start.elapsed();
    let (parts, bytes_before) = table.disk_usage();
    let start = Instant::now();
    table.force_merge().expect("force merge");
    let merge = start.elapsed();
    let (_, bytes) = table.disk_usage();
    eprintln!(
        "{what} (block {} B, zstd {}): {} series, {total} items, {:.1} raw B/item; \
         add+flush+merge_step {ingest:.2?} -> {parts} parts {:.3} B/item; \
         force_merge {merge:.2?} -> {bytes} B = {:.3} B/item",
        opts.block_bytes,
        opts.zstd_level,
        series.len(),
        raw as f64 / total as f64,
        bytes_before as f64 / total as f64,
        bytes as f64 / total as f64,
    );
    table
}

fn bench_size(_c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    build_table(
        dir.path(),
        "k8s-like index",
        &k8s_series(400_000),
        TableOptions::default(),
    );
}

fn bench_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let series = node_series(1000);
    let table = build_table(
        dir.path(),
        "node-like index",
        &series,
        TableOptions::default(),
    );
    let prefix = key_prefix();
    let mut g = c.benchmark_group("mergeset_lookup_node_4_8m");

    let label_prefix = |name: &str, value: &str| {
        let mut k = index_key(name, value, 0);
        k.truncate(k.len() - 8);
        k
    };
    let scan = |table: &Table, p: &[u8], limit: usize| {
        let mut search = table.search();
        search.seek(p);
        let mut n = 0;
        while let Some(item) = search.next_item() {
            let item = item.expect("item");
            if !item.starts_with(p) || n == limit {
                break;
            }
            black_box(item);
            n += 1;
        }
        n
    };

    let job = label_prefix("job", "node");
    g.bench_function("seek_scan_100_job_node", |b| {
        b.iter(|| scan(&table, &job, 100))
    });
    let host = label_prefix("instance", "10.1.1.200:9100");
    g.bench_function("seek_scan_400_one_instance", |b| {
        b.iter(|| scan(&table, &host, usize::MAX))
    });
    g.bench_function("distinct_label_names", |b| {
        b.iter(|| {
            let mut search = table.search();
            let mut names = 0;
            search.seek(&prefix);
            while let Some(item) = search.next_item() {
                let item = item.expect("item");
                if !item.starts_with(&prefix) {
                    break;
                }
                let rest = &item[prefix.len()..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                let mut next = item[..prefix.len() + end].to_vec();
                next.push(1);
                names += 1;
                search.seek(&next);
            }
            assert_eq!(names, 12);
        })
    });
    // Point lookups spread over the whole table: mostly block-cache misses.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("seek_1_random_cold", |b| {
        b.iter(|| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let id = rng % series.len() as u64;
            let (n, v) = &series[id as usize][(rng % 12) as usize];
            let key = index_key(n, v, id + 1);
            let mut search = table.search();
            search.seek(&key);
            assert_eq!(search.next_item().expect("found").expect("ok"), &key[..]);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_add,
    bench_flush_merge,
    bench_size,
    bench_lookup
);
criterion_main!(benches);
