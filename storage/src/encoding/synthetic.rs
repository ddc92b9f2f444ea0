//! Deterministic node_exporter-shaped data for tests and benches, the loader
//! for the real scrape sample in `shared/testdata`, and the size estimate
//! that lays blocks into pages the way the part writer does.
//!
//! The generator needs no `rand`: a seeded splitmix64 makes every run (and
//! every machine) produce the same series, so sizes measured on it are
//! comparable across commits.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{BLOCK_TARGET_SAMPLES, PAGE_TARGET_BYTES, compress_page_with, encode_block};

/// One series: its labels (`__name__` first from the generator, sorted by
/// name from an import file) and its samples in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// splitmix64: tiny, fast, and good enough for shaping test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal (sum of uniforms), mean 0, deviation 1.
    pub fn next_normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.next_f64()).sum();
        (s - 2.0) * 3f64.sqrt()
    }
}

/// How one generated series moves.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Never changes (info metrics, sizes, limits, error counters at 0).
    Const(f64),
    /// Monotonic counter of `unit`-sized quanta (`decimals` > 0 means the
    /// value is quanta / 10^decimals, as parsed from text), growing by about
    /// `per_sec` quanta a second with relative noise `noise`; a scrape sees
    /// no growth with probability `idle`.
    Counter {
        per_sec: f64,
        unit: f64,
        decimals: u32,
        noise: f64,
        idle: f64,
    },
    /// Gauge of quanta wandering around `base` by steps of about `step`
    /// quanta, changing at a scrape with probability `change`.
    Gauge {
        base: f64,
        step: f64,
        unit: f64,
        decimals: u32,
        change: f64,
    },
    /// Float computed in full precision (an exponential moving average, as
    /// load averages are computed), not a short decimal.
    Computed { base: f64, spread: f64 },
    /// Wall clock in seconds with nanoseconds: full precision.
    Clock,
}

struct Family {
    name: String,
    /// Label name and values; one series per value (or one with no label).
    label: Option<(&'static str, &'static [&'static str])>,
    /// Second label for families like cpu x mode.
    label2: Option<(&'static str, &'static [&'static str])>,
    shape: Shape,
}

const CPUS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7"];
const CPU_MODES: &[&str] = &[
    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
];
const DISKS: &[&str] = &["nvme0n1", "sda"];
const NICS: &[&str] = &["eth0", "eth1", "lo"];
const MOUNTS: &[&str] = &["/", "/boot", "/var", "/home", "/run"];
const COLLECTORS: &[&str] = &[
    "arp",
    "bcache",
    "bonding",
    "btrfs",
    "conntrack",
    "cpu",
    "cpufreq",
    "diskstats",
    "dmi",
    "edac",
    "entropy",
    "fibrechannel",
    "filefd",
    "filesystem",
    "hwmon",
    "infiniband",
    "ipvs",
    "loadavg",
    "mdadm",
    "meminfo",
    "netclass",
    "netdev",
    "netstat",
    "nfs",
    "nfsd",
    "nvme",
    "os",
    "powersupply",
    "pressure",
    "rapl",
    "schedstat",
    "selinux",
    "sockstat",
    "softnet",
    "stat",
    "tapestats",
    "textfile",
    "thermal_zone",
    "time",
    "timex",
    "udp_queues",
    "uname",
    "vmstat",
    "xfs",
    "zfs",
];
const QUANTILES: &[&str] = &["0", "0.25", "0.5", "0.75", "1"];

const fn counter(per_sec: f64, unit: f64, decimals: u32, noise: f64, idle: f64) -> Shape {
    Shape::Counter {
        per_sec,
        unit,
        decimals,
        noise,
        idle,
    }
}

const fn gauge(base: f64, step: f64, unit: f64, decimals: u32, change: f64) -> Shape {
    Shape::Gauge {
        base,
        step,
        unit,
        decimals,
        change,
    }
}

fn fam(name: impl Into<String>, shape: Shape) -> Family {
    Family {
        name: name.into(),
        label: None,
        label2: None,
        shape,
    }
}

fn fam1(
    name: impl Into<String>,
    label: (&'static str, &'static [&'static str]),
    shape: Shape,
) -> Family {
    Family {
        name: name.into(),
        label: Some(label),
        label2: None,
        shape,
    }
}

/// The families of one host, about 400 series in all.
fn families() -> Vec<Family> {
    let mut f = vec![
        Family {
            name: "node_cpu_seconds_total".into(),
            label: Some(("cpu", CPUS)),
            label2: Some(("mode", CPU_MODES)),
            // Per-mode rates are varied per series below.
            shape: counter(30.0, 1.0, 2, 0.5, 0.1),
        },
        Family {
            name: "node_cpu_guest_seconds_total".into(),
            label: Some(("cpu", CPUS)),
            label2: Some(("mode", &["nice", "user"])),
            shape: Shape::Const(0.0),
        },
        fam1(
            "node_cpu_scaling_frequency_hertz",
            ("cpu", CPUS),
            gauge(2.4e6, 2e5, 1000.0, 0, 0.6),
        ),
        fam(
            "node_load1",
            Shape::Computed {
                base: 1.2,
                spread: 0.8,
            },
        ),
        fam(
            "node_load5",
            Shape::Computed {
                base: 1.1,
                spread: 0.4,
            },
        ),
        fam(
            "node_load15",
            Shape::Computed {
                base: 1.0,
                spread: 0.2,
            },
        ),
        fam("node_time_seconds", Shape::Clock),
        fam("node_boot_time_seconds", Shape::Const(1_699_871_234.0)),
        fam(
            "node_context_switches_total",
            counter(4200.0, 1.0, 0, 0.3, 0.0),
        ),
        fam("node_intr_total", counter(2600.0, 1.0, 0, 0.3, 0.0)),
        fam("node_forks_total", counter(6.0, 1.0, 0, 0.8, 0.05)),
        fam("node_procs_running", gauge(3.0, 1.5, 1.0, 0, 0.7)),
        fam("node_procs_blocked", gauge(0.0, 0.5, 1.0, 0, 0.1)),
        fam("node_entropy_available_bits", Shape::Const(256.0)),
        fam("node_filefd_allocated", gauge(2300.0, 10.0, 1.0, 0, 0.5)),
        fam("node_filefd_maximum", Shape::Const(9.223372036854776e18)),
        fam("node_uname_info", Shape::Const(1.0)),
        fam("node_os_info", Shape::Const(1.0)),
        fam("node_exporter_build_info", Shape::Const(1.0)),
        fam("node_dmi_info", Shape::Const(1.0)),
        fam("node_textfile_scrape_error", Shape::Const(0.0)),
        fam("node_timex_offset_seconds", gauge(0.0, 20.0, 1.0, 6, 0.9)),
        fam(
            "node_timex_frequency_adjustment_ratio",
            Shape::Computed {
                base: 1.0,
                spread: 1e-5,
            },
        ),
        fam(
            "node_timex_maxerror_seconds",
            gauge(0.2, 1000.0, 1.0, 6, 0.9),
        ),
        fam("node_timex_sync_status", Shape::Const(1.0)),
        fam("node_timex_tai_offset_seconds", Shape::Const(0.0)),
        fam1(
            "node_hwmon_temp_celsius",
            ("sensor", &["temp1", "temp2", "temp3"]),
            gauge(45000.0, 500.0, 1.0, 3, 0.8),
        ),
        fam1(
            "node_scrape_collector_success",
            ("collector", COLLECTORS),
            Shape::Const(1.0),
        ),
        // Go's Duration.Seconds(): nanoseconds / 1e9, so 9 decimals.
        fam1(
            "node_scrape_collector_duration_seconds",
            ("collector", COLLECTORS),
            gauge(4e5, 2e5, 1.0, 9, 1.0),
        ),
        fam1(
            "go_gc_duration_seconds",
            ("quantile", QUANTILES),
            gauge(3e4, 8e3, 1.0, 9, 0.15),
        ),
        fam(
            "go_gc_duration_seconds_sum",
            counter(2e4, 1.0, 9, 1.0, 0.85),
        ),
        fam(
            "go_gc_duration_seconds_count",
            counter(0.1, 1.0, 0, 0.5, 0.85),
        ),
        fam("go_goroutines", gauge(9.0, 1.0, 1.0, 0, 0.3)),
        fam("go_threads", Shape::Const(8.0)),
        fam("go_info", Shape::Const(1.0)),
        fam("go_memstats_alloc_bytes", gauge(3e6, 2e5, 8.0, 0, 1.0)),
        fam(
            "go_memstats_alloc_bytes_total",
            counter(4e4, 8.0, 0, 0.4, 0.0),
        ),
        fam("go_memstats_heap_objects", gauge(2e4, 800.0, 1.0, 0, 1.0)),
        fam(
            "go_memstats_heap_inuse_bytes",
            gauge(500.0, 10.0, 8192.0, 0, 0.6),
        ),
        fam(
            "go_memstats_heap_idle_bytes",
            gauge(300.0, 10.0, 8192.0, 0, 0.6),
        ),
        fam(
            "go_memstats_heap_sys_bytes",
            gauge(1000.0, 2.0, 8192.0, 0, 0.05),
        ),
        fam(
            "go_memstats_mallocs_total",
            counter(500.0, 1.0, 0, 0.4, 0.0),
        ),
        fam("go_memstats_frees_total", counter(490.0, 1.0, 0, 0.4, 0.0)),
        fam("go_memstats_next_gc_bytes", gauge(4e6, 1e5, 8.0, 0, 0.15)),
        fam("go_memstats_last_gc_time_seconds", Shape::Clock),
        fam("go_memstats_sys_bytes", gauge(2000.0, 4.0, 8192.0, 0, 0.05)),
        fam(
            "go_memstats_stack_inuse_bytes",
            gauge(20.0, 1.0, 32768.0, 0, 0.1),
        ),
        fam("process_cpu_seconds_total", counter(1.0, 1.0, 2, 0.5, 0.1)),
        fam("process_open_fds", gauge(10.0, 1.0, 1.0, 0, 0.2)),
        fam("process_max_fds", Shape::Const(1_048_576.0)),
        fam(
            "process_resident_memory_bytes",
            gauge(5000.0, 20.0, 4096.0, 0, 0.7),
        ),
        fam(
            "process_virtual_memory_bytes",
            gauge(300_000.0, 100.0, 4096.0, 0, 0.1),
        ),
        fam("process_start_time_seconds", Shape::Const(1_699_871_260.35)),
        fam(
            "process_network_receive_bytes_total",
            counter(900.0, 1.0, 0, 0.3, 0.0),
        ),
        fam(
            "process_network_transmit_bytes_total",
            counter(12000.0, 1.0, 0, 0.3, 0.0),
        ),
    ];
    for (name, shape) in [
        ("reads_completed_total", counter(20.0, 1.0, 0, 1.0, 0.2)),
        ("reads_merged_total", counter(2.0, 1.0, 0, 1.0, 0.6)),
        ("read_bytes_total", counter(30.0, 4096.0, 0, 1.0, 0.2)),
        ("read_time_seconds_total", counter(10.0, 1.0, 3, 1.0, 0.2)),
        ("writes_completed_total", counter(40.0, 1.0, 0, 0.8, 0.05)),
        ("writes_merged_total", counter(15.0, 1.0, 0, 0.8, 0.1)),
        ("written_bytes_total", counter(60.0, 4096.0, 0, 0.8, 0.05)),
        ("write_time_seconds_total", counter(30.0, 1.0, 3, 0.8, 0.05)),
        ("io_now", gauge(0.0, 0.7, 1.0, 0, 0.3)),
        ("io_time_seconds_total", counter(25.0, 1.0, 3, 0.8, 0.05)),
        (
            "io_time_weighted_seconds_total",
            counter(45.0, 1.0, 3, 0.8, 0.05),
        ),
        ("discards_completed_total", counter(0.01, 1.0, 0, 1.0, 0.98)),
        ("discarded_sectors_total", counter(2.0, 8.0, 0, 1.0, 0.98)),
        ("flush_requests_total", counter(3.0, 1.0, 0, 0.8, 0.2)),
        (
            "flush_requests_time_seconds_total",
            counter(2.0, 1.0, 3, 0.8, 0.2),
        ),
    ] {
        f.push(Family {
            name: format!("node_disk_{name}"),
            label: Some(("device", DISKS)),
            label2: None,
            shape,
        });
    }
    for (name, shape) in [
        ("receive_bytes_total", counter(40_000.0, 1.0, 0, 0.6, 0.0)),
        ("receive_packets_total", counter(300.0, 1.0, 0, 0.6, 0.0)),
        ("receive_errs_total", Shape::Const(0.0)),
        ("receive_drop_total", counter(0.02, 1.0, 0, 1.0, 0.97)),
        ("receive_fifo_total", Shape::Const(0.0)),
        ("receive_frame_total", Shape::Const(0.0)),
        ("receive_compressed_total", Shape::Const(0.0)),
        ("receive_multicast_total", counter(0.1, 1.0, 0, 1.0, 0.8)),
        ("transmit_bytes_total", counter(90_000.0, 1.0, 0, 0.6, 0.0)),
        ("transmit_packets_total", counter(250.0, 1.0, 0, 0.6, 0.0)),
        ("transmit_errs_total", Shape::Const(0.0)),
        ("transmit_drop_total", Shape::Const(0.0)),
        ("transmit_fifo_total", Shape::Const(0.0)),
        ("transmit_colls_total", Shape::Const(0.0)),
        ("transmit_carrier_total", Shape::Const(0.0)),
        ("transmit_compressed_total", Shape::Const(0.0)),
        ("up", Shape::Const(1.0)),
        ("mtu_bytes", Shape::Const(1500.0)),
        ("speed_bytes", Shape::Const(1.25e9)),
        ("carrier", Shape::Const(1.0)),
        ("info", Shape::Const(1.0)),
    ] {
        f.push(Family {
            name: format!("node_network_{name}"),
            label: Some(("device", NICS)),
            label2: None,
            shape,
        });
    }
    for (name, shape) in [
        ("size_bytes", Shape::Const(1.073741824e11)),
        ("avail_bytes", gauge(1.2e7, 30.0, 4096.0, 0, 0.6)),
        ("free_bytes", gauge(1.3e7, 30.0, 4096.0, 0, 0.6)),
        ("files", Shape::Const(6_553_600.0)),
        ("files_free", gauge(6e6, 5.0, 1.0, 0, 0.4)),
        ("readonly", Shape::Const(0.0)),
        ("device_error", Shape::Const(0.0)),
    ] {
        f.push(Family {
            name: format!("node_filesystem_{name}"),
            label: Some(("mountpoint", MOUNTS)),
            label2: None,
            shape,
        });
    }
    for (i, name) in [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "Buffers",
        "Cached",
        "SwapCached",
        "Active",
        "Inactive",
        "Active_anon",
        "Inactive_anon",
        "Active_file",
        "Inactive_file",
        "Unevictable",
        "Mlocked",
        "SwapTotal",
        "SwapFree",
        "Dirty",
        "Writeback",
        "AnonPages",
        "Mapped",
        "Shmem",
        "KReclaimable",
        "Slab",
        "SReclaimable",
        "SUnreclaim",
        "KernelStack",
        "PageTables",
        "NFS_Unstable",
        "Bounce",
        "WritebackTmp",
        "CommitLimit",
        "Committed_AS",
        "VmallocTotal",
        "VmallocUsed",
        "VmallocChunk",
        "Percpu",
        "HardwareCorrupted",
        "AnonHugePages",
        "ShmemHugePages",
        "HugePages_Total",
        "Hugepagesize",
        "DirectMap4k",
        "DirectMap2M",
    ]
    .into_iter()
    .enumerate()
    {
        // Every third is static (totals, sizes, unused features).
        let shape = if i % 3 == 0 {
            Shape::Const(((i as f64 + 1.0) * 1_048_576.0).round() * 1024.0)
        } else {
            gauge(
                1e5 * (i as f64 + 1.0),
                40.0 + i as f64 * 3.0,
                1024.0,
                0,
                0.8,
            )
        };
        f.push(fam(format!("node_memory_{name}_bytes"), shape));
    }
    for (i, name) in [
        "pgfault",
        "pgmajfault",
        "pgpgin",
        "pgpgout",
        "pswpin",
        "pswpout",
        "oom_kill",
        "pgsteal_kswapd",
        "pgsteal_direct",
        "pgscan_kswapd",
        "pgscan_direct",
        "thp_fault_alloc",
        "numa_hit",
        "numa_miss",
        "workingset_refault_file",
        "workingset_activate_file",
        "compact_stall",
        "allocstall_normal",
    ]
    .into_iter()
    .enumerate()
    {
        let shape = match i % 4 {
            0 => counter(900.0 / (i as f64 + 1.0), 1.0, 0, 0.6, 0.0),
            1 | 2 => counter(30.0 / (i as f64 + 1.0), 1.0, 0, 1.0, 0.3),
            _ => counter(0.01, 1.0, 0, 1.0, 0.99),
        };
        f.push(fam(format!("node_vmstat_{name}"), shape));
    }
    for (i, name) in [
        "Tcp_ActiveOpens",
        "Tcp_PassiveOpens",
        "Tcp_AttemptFails",
        "Tcp_EstabResets",
        "Tcp_CurrEstab",
        "Tcp_InSegs",
        "Tcp_OutSegs",
        "Tcp_RetransSegs",
        "Tcp_InErrs",
        "Tcp_OutRsts",
        "Udp_InDatagrams",
        "Udp_OutDatagrams",
        "Udp_InErrors",
        "Udp_NoPorts",
        "Udp_RcvbufErrors",
        "Udp_SndbufErrors",
        "Icmp_InMsgs",
        "Icmp_OutMsgs",
        "Icmp_InErrors",
        "Ip_Forwarding",
        "IpExt_InOctets",
        "IpExt_OutOctets",
        "TcpExt_ListenDrops",
        "TcpExt_ListenOverflows",
        "TcpExt_SyncookiesSent",
        "TcpExt_TCPTimeouts",
    ]
    .into_iter()
    .enumerate()
    {
        let shape = match i % 5 {
            0 => counter(50.0 / (i as f64 + 1.0), 1.0, 0, 0.8, 0.1),
            1 => counter(400.0, 1.0, 0, 0.5, 0.0),
            2 => Shape::Const(0.0),
            3 => gauge(40.0, 2.0, 1.0, 0, 0.4),
            _ => counter(0.02, 1.0, 0, 1.0, 0.98),
        };
        f.push(fam(format!("node_netstat_{name}"), shape));
    }
    for name in [
        "TCP_alloc",
        "TCP_inuse",
        "TCP_mem",
        "TCP_orphan",
        "TCP_tw",
        "UDP_inuse",
        "UDP_mem",
        "FRAG_inuse",
        "RAW_inuse",
        "sockets_used",
    ] {
        f.push(fam(
            format!("node_sockstat_{name}"),
            gauge(60.0, 2.0, 1.0, 0, 0.4),
        ));
    }
    f
}

/// Shape of a node_exporter fleet: `hosts` targets scraped every
/// `interval_ms` from `start_ms`, `points` samples per series.
#[derive(Clone, Debug)]
pub struct NodeExporter {
    pub hosts: u32,
    pub points: usize,
    pub interval_ms: i64,
    pub start_ms: i64,
    pub seed: u64,
}

impl Default for NodeExporter {
    /// 1,000 hosts, one hour at 15 s.
    fn default() -> NodeExporter {
        NodeExporter {
            hosts: 1000,
            points: 240,
            interval_ms: 15_000,
            start_ms: 1_700_000_000_000,
            seed: 1,
        }
    }
}

impl NodeExporter {
    /// All series of one host, in a fixed order.
    pub fn host(&self, host: u32) -> Vec<Series> {
        let mut scrapes = self.scrapes(host);
        let labels = std::mem::take(&mut scrapes.labels);
        let mut out: Vec<Series> = labels
            .into_iter()
            .map(|labels| Series {
                labels,
                timestamps: Vec::with_capacity(self.points),
                values: Vec::with_capacity(self.points),
            })
            .collect();
        let mut values = Vec::with_capacity(out.len());
        for _ in 0..self.points {
            let t = scrapes.next_timestamp();
            scrapes.scrape(&mut values);
            for (series, &v) in out.iter_mut().zip(&values) {
                series.timestamps.push(t);
                series.values.push(v);
            }
        }
        out
    }

    /// One host scraped one point at a time, without bound on the number
    /// of points: the first `points` scrapes equal `host(host)`.
    pub fn scrapes(&self, host: u32) -> HostScrapes {
        let instance = format!("host-{host:04}:9100");
        // Hosts are scraped at different phases of the interval, each on an
        // exact grid.
        let phase = (u64::from(host).wrapping_mul(7919) % self.interval_ms.max(1) as u64) as i64;
        // Rates are per interval; a single point has none, so 15 s stands in.
        let interval_s = if self.points >= 2 {
            self.interval_ms as f64 / 1000.0
        } else {
            15.0
        };
        let mut labels_out = Vec::new();
        let mut generators = Vec::new();
        for family in families() {
            let first: &[&str] = family.label.map_or(&[""], |(_, v)| v);
            let second: &[&str] = family.label2.map_or(&[""], |(_, v)| v);
            for (i, a) in first.iter().enumerate() {
                for (j, b) in second.iter().enumerate() {
                    let mut labels = vec![
                        ("__name__".to_string(), family.name.clone()),
                        ("instance".to_string(), instance.clone()),
                        ("job".to_string(), "node".to_string()),
                    ];
                    if let Some((name, _)) = family.label {
                        labels.push((name.to_string(), (*a).to_string()));
                    }
                    if let Some((name, _)) = family.label2 {
                        labels.push((name.to_string(), (*b).to_string()));
                    }
                    let seed = self.seed
                        ^ u64::from(host).rotate_left(40)
                        ^ (labels_out.len() as u64).wrapping_mul(0x9e37_79b9);
                    let mut rng = SplitMix64::new(seed);
                    // Spread rates over series of a family (cpu modes differ
                    // by orders of magnitude).
                    let spread = 0.05 + 1.9 * rng.next_f64() * ((i + j) % 4 + 1) as f64 / 4.0;
                    generators.push(SeriesGenerator::new(family.shape, spread, interval_s, rng));
                    labels_out.push(labels);
                }
            }
        }
        HostScrapes {
            labels: labels_out,
            generators,
            first_ms: self.start_ms + phase,
            interval_ms: self.interval_ms,
            next_point: 0,
        }
    }

    /// Every series of every host, host by host (series ids handed out at
    /// the first scrape would follow this order).
    pub fn series(&self) -> impl Iterator<Item = Series> + '_ {
        (0..self.hosts).flat_map(|h| self.host(h))
    }

    /// The series of every host whose values are full-precision floats
    /// rather than short decimals (load averages, ratios, clocks with
    /// nanoseconds), host by host: what the XOR value coding is for.
    pub fn full_precision(&self) -> impl Iterator<Item = Series> + '_ {
        let names: Vec<String> = families()
            .into_iter()
            .filter(|f| matches!(f.shape, Shape::Computed { .. } | Shape::Clock))
            .map(|f| f.name)
            .collect();
        self.series()
            .filter(move |s| names.iter().any(|n| s.labels[0].1 == *n))
    }
}

/// The series of one host and the state that moves their values, for
/// generators that send scrape after scrape (about 90 bytes per series
/// besides the labels, which a caller may take and drop).
#[derive(Clone, Debug)]
pub struct HostScrapes {
    /// Labels of each series, in the order of the values of a scrape.
    pub labels: Vec<Vec<(String, String)>>,
    generators: Vec<SeriesGenerator>,
    first_ms: i64,
    interval_ms: i64,
    next_point: i64,
}

impl HostScrapes {
    /// Timestamp of the next scrape.
    pub fn next_timestamp(&self) -> i64 {
        self.first_ms + self.next_point * self.interval_ms
    }

    /// Scrapes taken so far.
    pub fn points(&self) -> i64 {
        self.next_point
    }

    pub fn series_count(&self) -> usize {
        self.generators.len()
    }

    /// Replaces `values` with the next scrape's, one per series.
    pub fn scrape(&mut self, values: &mut Vec<f64>) {
        let t = self.next_timestamp();
        values.clear();
        values.extend(self.generators.iter_mut().map(|g| g.next(t)));
        self.next_point += 1;
    }
}

/// One series' value from scrape to scrape. Each series draws from its own
/// generator, so values do not depend on how series are interleaved.
#[derive(Clone, Debug)]
struct SeriesGenerator {
    shape: Shape,
    spread: f64,
    interval_s: f64,
    rng: SplitMix64,
    /// Counter quanta, gauge quanta, or the moving average.
    x: f64,
    /// The moving average's target.
    target: f64,
}

impl SeriesGenerator {
    fn new(shape: Shape, spread: f64, interval_s: f64, mut rng: SplitMix64) -> SeriesGenerator {
        let (x, target) = match shape {
            Shape::Counter { per_sec, .. } => {
                let rate = per_sec * spread * interval_s;
                ((rng.next_f64() * rate * 10_000.0).round(), 0.0)
            }
            Shape::Gauge { base, .. } | Shape::Computed { base, .. } => (base, base),
            Shape::Const(_) | Shape::Clock => (0.0, 0.0),
        };
        SeriesGenerator {
            shape,
            spread,
            interval_s,
            rng,
            x,
            target,
        }
    }

    fn next(&mut self, t: i64) -> f64 {
        let from_quanta = |q: f64, unit: f64, decimals: u32| {
            if decimals > 0 {
                // What parsing the exporter's text gives: the double nearest
                // to the decimal.
                q / 10f64.powi(decimals as i32)
            } else {
                q * unit
            }
        };
        let rng = &mut self.rng;
        match self.shape {
            Shape::Const(v) => v,
            Shape::Counter {
                per_sec,
                unit,
                decimals,
                noise,
                idle,
            } => {
                let rate = per_sec * self.spread * self.interval_s;
                if rng.next_f64() >= idle {
                    let f = (1.0 + noise * rng.next_normal()).max(0.0);
                    self.x += (rate * f).round();
                }
                from_quanta(self.x, unit, decimals)
            }
            Shape::Gauge {
                base,
                step,
                unit,
                decimals,
                change,
            } => {
                if rng.next_f64() < change {
                    // Wander, pulled back towards the base.
                    self.x += step * rng.next_normal() - 0.05 * (self.x - base);
                    if base >= 0.0 {
                        self.x = self.x.max(0.0);
                    }
                }
                from_quanta(self.x.round(), unit, decimals)
            }
            Shape::Computed { base, spread: s } => {
                let alpha = (-self.interval_s / 60.0).exp();
                self.target =
                    (self.target + s * 0.3 * rng.next_normal()).clamp(0.0, base + 4.0 * s);
                self.x = self.x * alpha + self.target * (1.0 - alpha);
                self.x
            }
            Shape::Clock => {
                let ns = t as f64 * 1e6 + (rng.next_f64() * 2e6).round();
                ns / 1e9
            }
        }
    }
}

/// Parses VictoriaMetrics import JSON lines
/// (`{"metric":{...},"values":[...],"timestamps":[...]}`), merging lines of
/// the same label set; series keep the order of their first line, samples
/// are sorted by time and a repeated timestamp keeps its last value.
pub fn parse_import_jsonl(text: &str) -> Result<Vec<Series>, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }
    #[derive(serde::Deserialize)]
    struct Line {
        metric: std::collections::BTreeMap<String, String>,
        values: Vec<Num>,
        timestamps: Vec<i64>,
    }
    type Labels = Vec<(String, String)>;
    let mut series: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if line.values.len() != line.timestamps.len() {
            return Err(format!(
                "line {}: values and timestamps differ in length",
                n + 1
            ));
        }
        let labels: Vec<(String, String)> = line.metric.into_iter().collect();
        let slot = *index.entry(labels.clone()).or_insert_with(|| {
            series.push((labels, Vec::new()));
            series.len() - 1
        });
        for (t, v) in line.timestamps.into_iter().zip(line.values) {
            let v = match v {
                Num::F(f) => f,
                Num::S(s) => match s.as_str() {
                    "NaN" => f64::NAN,
                    "Inf" | "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    other => other
                        .parse()
                        .map_err(|e| format!("line {}: value {other:?}: {e}", n + 1))?,
                },
            };
            series[slot].1.push((t, v));
        }
    }
    Ok(series
        .into_iter()
        .map(|(labels, mut samples)| {
            // Stable sort, then keep the last of equal timestamps.
            samples.sort_by_key(|s| s.0);
            let mut dedup: Vec<(i64, f64)> = Vec::with_capacity(samples.len());
            for s in samples {
                match dedup.last_mut() {
                    Some(last) if last.0 == s.0 => *last = s,
                    _ => dedup.push(s),
                }
            }
            Series {
                labels,
                timestamps: dedup.iter().map(|s| s.0).collect(),
                values: dedup.iter().map(|s| s.1).collect(),
            }
        })
        .collect())
}

/// Reads a zstd-compressed import file.
pub fn load_import_jsonl_zst(path: &Path) -> io::Result<Vec<Series>> {
    let raw = zstd::decode_all(std::fs::File::open(path)?)?;
    let text = String::from_utf8(raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    parse_import_jsonl(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// File name of the real scrape sample (2,159 series, 1.41M samples at 2 s).
pub const REAL_SCRAPE_FILE: &str = "real-scrape-22m.jsonl.zst";

/// Finds `shared/testdata/<name>`: `$STRATA_TESTDATA` if set, else the
/// `shared/` directory beside the repository or one level further up (a
/// worktree), else None.
pub fn testdata_path(name: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STRATA_TESTDATA") {
        let p = Path::new(&dir).join(name);
        return p.exists().then_some(p);
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .skip(1)
        .take(4)
        .map(|a| a.join("shared").join("testdata").join(name))
        .find(|p| p.exists())
}

/// Bytes the part layer adds per block (series id, time range, count,
/// offsets), counted in size estimates.
pub const BLOCK_HEADER_ESTIMATE: usize = 24;

/// On-disk size of some series laid out as the part writer lays them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SizeEstimate {
    pub series: usize,
    pub samples: usize,
    pub blocks: usize,
    pub pages: usize,
    /// Encoded blocks before page compression.
    pub encoded_bytes: usize,
    /// Compressed pages.
    pub page_bytes: usize,
    /// `BLOCK_HEADER_ESTIMATE` per block.
    pub header_bytes: usize,
}

impl SizeEstimate {
    /// Pages plus block headers, per sample.
    pub fn bytes_per_sample(&self) -> f64 {
        (self.page_bytes + self.header_bytes) as f64 / self.samples.max(1) as f64
    }
}

/// Encodes each series in blocks of at most `BLOCK_TARGET_SAMPLES`, packs the
/// blocks in order into pages closed at `PAGE_TARGET_BYTES`, compresses each
/// page at zstd `level` and adds it all up.
pub fn estimate_size<'a>(series: impl IntoIterator<Item = &'a Series>, level: i32) -> SizeEstimate {
    estimate_size_with(series, level, PAGE_TARGET_BYTES)
}

/// `estimate_size` with another page target, for tuning it.
pub fn estimate_size_with<'a>(
    series: impl IntoIterator<Item = &'a Series>,
    level: i32,
    page_target: usize,
) -> SizeEstimate {
    let mut est = SizeEstimate::default();
    let mut page = Vec::with_capacity(2 * page_target);
    let mut compressed = Vec::new();
    let mut flush = |page: &mut Vec<u8>, est: &mut SizeEstimate| {
        if page.is_empty() {
            return;
        }
        compressed.clear();
        compress_page_with(page, level, &mut compressed);
        est.pages += 1;
        est.encoded_bytes += page.len();
        est.page_bytes += compressed.len();
        page.clear();
    };
    for s in series {
        est.series += 1;
        est.samples += s.timestamps.len();
        for (ts, vs) in s
            .timestamps
            .chunks(BLOCK_TARGET_SAMPLES)
            .zip(s.values.chunks(BLOCK_TARGET_SAMPLES))
        {
            encode_block(ts, vs, &mut page);
            est.blocks += 1;
            est.header_bytes += BLOCK_HEADER_ESTIMATE;
            if page.len() >= page_target {
                flush(&mut page, &mut est);
            }
        }
    }
    flush(&mut page, &mut est);
    est
}
