//! The two servers under test as child processes, with what the benchmark
//! reads from outside: CPU time and resident memory from `/proc`, bytes on
//! disk by walking the data directory, and each server's own way to merge.
//!
//! Data directory layouts measured:
//!
//! ```text
//! Strata                            VictoriaMetrics
//!   partitions/YYYY_MM/parts/  data   data/{small,big}/YYYY_MM/  data
//!   partitions/YYYY_MM/index/  index  indexdb/                   index
//!   wal/                       log    (no log: rows wait in memory)
//! ```

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

use super::CompareError;
use crate::free_port;

/// Longest wait for a server to answer its readiness check.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for one HTTP request (an import under back-pressure, a merge).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// The same directory size this many polls in a row means a merge is over.
const STABLE_POLLS: u32 = 3;
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Strata,
    Victoria,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Strata => "Strata",
            Kind::Victoria => "VictoriaMetrics",
        }
    }
}

/// Where a server keeps its bytes, after a merge.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskUsage {
    pub data: u64,
    pub index: u64,
    /// Strata's write-ahead log.
    pub log: u64,
    /// Everything under the data directory (apparent file sizes).
    pub total: u64,
    /// Blocks allocated for the whole directory, as `du` counts them.
    pub allocated: u64,
}

/// CPU and memory of a process at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// User plus system time of all threads.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// A running server.
pub struct Peer {
    pub kind: Kind,
    child: Option<Child>,
    addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    pub client: Client,
}

impl Peer {
    /// Starts the server with a fresh data directory under `work_dir` and
    /// waits until it is ready.
    pub fn start(
        kind: Kind,
        bin: &Path,
        extra_args: &[String],
        work_dir: &Path,
    ) -> Result<Peer, CompareError> {
        let dir = work_dir.join(match kind {
            Kind::Strata => "strata",
            Kind::Victoria => "victoria-metrics",
        });
        let data_dir = dir.join("data");
        if data_dir.exists() {
            // Old data would be counted as this run's.
            return Err(CompareError::Io {
                path: data_dir,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "data directory exists; give a new --work-dir",
                ),
            });
        }
        std::fs::create_dir_all(&dir).map_err(|source| CompareError::Io {
            path: dir.clone(),
            source,
        })?;
        let log_path = dir.join("server.log");
        let log = File::create(&log_path).map_err(|source| CompareError::Io {
            path: log_path.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| CompareError::Io {
            path: log_path.clone(),
            source,
        })?;
        let addr = free_port();
        let mut command = Command::new(bin);
        match kind {
            Kind::Strata => {
                command
                    .arg("single")
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .env("RUST_LOG", "info")
                    .env_remove("STRATA_LOG_LEVEL");
            }
            Kind::Victoria => {
                command
                    .arg(format!("-storageDataPath={}", data_dir.display()))
                    .arg(format!("-httpListenAddr={addr}"))
                    // Exports of the whole fleet are far above the default
                    // limits of queries (not of exports), kept for symmetry.
                    .arg("-search.maxUniqueTimeseries=100000000");
            }
        }
        let child = command
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| CompareError::Spawn {
                bin: bin.to_path_buf(),
                source,
            })?;
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|source| CompareError::Http {
                url: "(client)".into(),
                source,
            })?;
        let mut peer = Peer {
            kind,
            child: Some(child),
            addr,
            data_dir,
            log_path,
            client,
        };
        peer.wait_ready()?;
        Ok(peer)
    }

    fn wait_ready(&mut self) -> Result<(), CompareError> {
        let path = match self.kind {
            Kind::Strata => "/ready",
            Kind::Victoria => "/health",
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.failed(format!("exited at start with {status}")));
            }
            let ready = self
                .client
                .get(self.url(path))
                .timeout(Duration::from_secs(1))
                .send();
            if matches!(ready, Ok(ref r) if r.status().as_u16() == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failed(format!("not ready after {READY_TIMEOUT:?}")));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// An error naming the server, with the end of its log.
    pub fn failed(&self, what: String) -> CompareError {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        CompareError::Server {
            server: self.kind.name(),
            what,
            log_tail: tail.join("\n"),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU time and resident memory from `/proc/<pid>/{stat,status}`.
    pub fn stats(&self) -> Result<ProcStats, CompareError> {
        let pid = self
            .pid()
            .ok_or_else(|| self.failed("is not running".into()))?;
        let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
        let stat = read(&stat_path)?;
        let cpu_ticks = parse_cpu_ticks(&stat).ok_or_else(|| CompareError::Proc {
            path: stat_path.clone(),
            what: "utime and stime",
        })?;
        let status_path = PathBuf::from(format!("/proc/{pid}/status"));
        let status = read(&status_path)?;
        let rss_bytes = parse_vm_rss(&status).ok_or_else(|| CompareError::Proc {
            path: status_path,
            what: "VmRSS",
        })?;
        Ok(ProcStats {
            cpu_seconds: cpu_ticks as f64 / clock_ticks_per_second(),
            rss_bytes,
        })
    }

    /// A POST (or, for VictoriaMetrics' maintenance handlers, a GET) that
    /// must answer 2xx.
    pub fn call(&self, method: &str, path: &str) -> Result<String, CompareError> {
        let url = self.url(path);
        let request = match method {
            "POST" => self.client.post(&url),
            _ => self.client.get(&url),
        };
        let response = request.send().map_err(|source| CompareError::Http {
            url: url.clone(),
            source,
        })?;
        let status = response.status().as_u16();
        let body = response.text().unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(CompareError::Status { url, status, body });
        }
        Ok(body)
    }

    /// Merges everything the server holds and returns once its data
    /// directory has settled, with the time the merge took. Strata's
    /// endpoint answers when done. VictoriaMetrics keeps recent rows in
    /// in-memory parts for up to about twice `-inmemoryDataFlushInterval`
    /// (5 s), and its endpoint only starts merges in the background: wait
    /// until nothing is in memory (not counted), merge, then poll until no
    /// merge runs and the directory size holds still; the merge ended at the
    /// first poll that saw the final state (to within a poll).
    pub fn force_merge(&self) -> Result<Duration, CompareError> {
        match self.kind {
            Kind::Strata => {
                let started = Instant::now();
                self.call("POST", "/internal/force_merge")?;
                Ok(started.elapsed())
            }
            Kind::Victoria => {
                self.wait_settled()?;
                let started = Instant::now();
                self.call("GET", "/internal/force_merge")?;
                let settled = self.wait_settled()?;
                Ok(settled.duration_since(started))
            }
        }
    }

    /// Waits until VictoriaMetrics holds no rows in memory, runs no merge,
    /// and its directory size held still for `STABLE_POLLS`; returns when
    /// that state was first seen.
    fn wait_settled(&self) -> Result<Instant, CompareError> {
        let mut last = u64::MAX;
        let mut stable = 0;
        let mut since = Instant::now();
        loop {
            sleep(POLL);
            let metrics = self.call("GET", "/metrics")?;
            let busy = sum_metric(&metrics, "vm_active_merges")
                + sum_metric(&metrics, "vm_pending_rows")
                + sum_metric_where(&metrics, "vm_parts", "inmemory");
            let size = dir_size(&self.data_dir).0;
            if busy == 0.0 && size == last {
                stable += 1;
                if stable >= STABLE_POLLS {
                    return Ok(since);
                }
            } else {
                stable = 0;
                since = Instant::now();
            }
            last = size;
        }
    }

    pub fn disk_usage(&self) -> DiskUsage {
        let (total, allocated) = dir_size(&self.data_dir);
        let mut usage = DiskUsage {
            total,
            allocated,
            ..DiskUsage::default()
        };
        match self.kind {
            Kind::Strata => {
                for partition in subdirs(&self.data_dir.join("partitions")) {
                    usage.data += dir_size(&partition.join("parts")).0;
                    usage.index += dir_size(&partition.join("index")).0;
                }
                usage.log = dir_size(&self.data_dir.join("wal")).0;
            }
            Kind::Victoria => {
                usage.data = dir_size(&self.data_dir.join("data")).0;
                usage.index = dir_size(&self.data_dir.join("indexdb")).0;
            }
        }
        usage
    }

    /// Samples the server counted as stored, from its `/metrics`.
    pub fn rows_stored(&self) -> Result<f64, CompareError> {
        let metrics = self.call("GET", "/metrics")?;
        let name = match self.kind {
            Kind::Strata => "strata_insert_rows_total",
            Kind::Victoria => "vm_rows_inserted_total",
        };
        Ok(sum_metric(&metrics, name))
    }

    /// SIGTERM, then SIGKILL if still running after `timeout`.
    pub fn stop(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read(path: &Path) -> Result<String, CompareError> {
    std::fs::read_to_string(path).map_err(|source| CompareError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// CPU time (user + system, all threads) of process `pid` so far, from
/// `/proc/<pid>/stat`; `None` when it cannot be read.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_cpu_ticks(&stat)? as f64 / clock_ticks_per_second())
}

/// utime + stime, fields 14 and 15 of `/proc/<pid>/stat`. The command name
/// (field 2) may hold spaces, so fields are counted after its `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS:   12345 kB` in `/proc/<pid>/status`.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Ticks of `/proc/<pid>/stat` times per second: `getconf CLK_TCK`, which is
/// 100 on every Linux this runs on.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time of the whole machine and of this process, to tell how busy the
/// machine was with other work while a server was measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// Busy time of all cores (`/proc/stat`: everything but idle and iowait).
    pub busy_seconds: f64,
    /// This process (the load generator and export reader).
    pub own_seconds: f64,
}

impl MachineCpu {
    /// `None` where `/proc` is not readable.
    pub fn now() -> Option<MachineCpu> {
        let ticks = clock_ticks_per_second();
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let busy = parse_busy_ticks(&stat)?;
        let own = parse_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        Some(MachineCpu {
            busy_seconds: busy as f64 / ticks,
            own_seconds: own as f64 / ticks,
        })
    }
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq
/// steal ...; busy is all but idle and iowait (guest time is already in user).
fn parse_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = fields.iter().sum();
    Some(total - fields.get(3)? - fields.get(4)?)
}

/// Sum of every sample of a metric family in the Prometheus text format
/// (`name value` or `name{labels} value`).
pub fn sum_metric(text: &str, name: &str) -> f64 {
    sum_metric_where(text, name, "")
}

/// Like `sum_metric`, over the samples whose labels contain `needle`.
pub fn sum_metric_where(text: &str, name: &str, needle: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (labels, value) = match rest.rfind('}') {
                Some(end) => (&rest[..end], &rest[end + 1..]),
                None => ("", rest),
            };
            if !labels.contains(needle) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// (apparent bytes, allocated bytes) of the files under `dir`. Files that
/// vanish during the walk (a merge replacing parts) are skipped.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for entry in entries.filter_map(Result::ok) {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            let (a, b) = dir_size(&entry.path());
            total.0 += a;
            total.1 += b;
        } else {
            total.0 += meta.len();
            total.1 += meta.blocks() * 512;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let status = "Name:\tstrata\nVmPeak:\t  900 kB\nVmRSS:\t   5120 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        let proc_stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(parse_busy_ticks(proc_stat), Some(100 + 5 + 50 + 3 + 2 + 1));
    }

    #[test]
    fn metric_families_sum_over_labels() {
        let text = "# HELP vm_active_merges x\n\
                    vm_active_merges{type=\"storage/small\"} 2\n\
                    vm_active_merges{type=\"indexdb/file\"} 1\n\
                    vm_active_merges_total 7\n\
                    strata_insert_rows_total{protocol=\"vmimport\"} 1.5e6\n\
                    vm_pending_rows 0\n";
        assert_eq!(sum_metric(text, "vm_active_merges"), 3.0);
        assert_eq!(sum_metric(text, "strata_insert_rows_total"), 1.5e6);
        assert_eq!(sum_metric(text, "vm_pending_rows"), 0.0);
        assert_eq!(sum_metric(text, "absent"), 0.0);
        assert_eq!(sum_metric_where(text, "vm_active_merges", "indexdb"), 1.0);
    }
}
