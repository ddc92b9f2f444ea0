//! Helpers for end-to-end tests: child processes, free ports, data generators.
//!
//! `Single` runs `strata single` as a child process on a free loopback port
//! with its own temporary data directory, and offers blocking HTTP helpers.
//! The child's log goes to a file in that directory; when a test panics, the
//! end of the log is printed with the failure. A child still running when
//! its `Single` is dropped is killed with SIGKILL. `Importer` sends imports
//! from other threads and returns transport failures instead of panicking,
//! for writers that race with a kill; `Rng` makes random schedules
//! replayable from a seed. `StorageNode` does for `strata storage` what
//! `Single` does for `strata single`; `Cluster` runs storage nodes, insert
//! and select together, and `Target` lets one test body run against
//! `single` or a cluster.
//!
//! Helpers panic with a message on transport failures: they are for tests.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::blocking::Client;

pub mod acked;
pub mod cluster;
pub mod compare;
pub mod loadgen;
pub mod peers;
pub mod promapi;
pub mod storage_node;
pub mod target;

pub use cluster::{Cluster, ClusterConfig};
pub use storage_node::StorageNode;
pub use target::Target;

/// How long a start may take before the test fails (storage replays its log).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a single HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Poll interval while waiting for the child.
const POLL: Duration = Duration::from_millis(25);

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A `strata single` child process.
pub struct Single {
    bin: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    client: Client,
}

impl Single {
    /// Starts `bin single` with a new data directory and waits until ready.
    pub fn start(bin: impl AsRef<Path>) -> Single {
        Single::start_with_args(bin, &[])
    }

    /// Like `start`, with extra flags for `strata single`.
    pub fn start_with_args(bin: impl AsRef<Path>, args: &[&str]) -> Single {
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-")
            .tempdir()
            .expect("create temp dir");
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build HTTP client");
        let mut single = Single {
            bin: bin.as_ref().to_path_buf(),
            child: None,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            dir,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            client,
        };
        single.launch();
        single
    }

    /// Starts again on the same data directory after a stop.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the previous process stopped first"
        );
        self.launch();
    }

    /// Like `restart`, with these extra flags instead of the previous ones
    /// (they stay in force for later restarts).
    pub fn restart_with_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self.restart();
    }

    /// Starts on the same data directory and kills the process with SIGKILL
    /// `delay` later, ready or not: a crash during startup (log replay).
    pub fn start_then_kill9_after(&mut self, delay: Duration) {
        assert!(
            self.child.is_none(),
            "start_then_kill9_after() needs the previous process stopped first"
        );
        self.spawn_child();
        sleep(delay);
        self.kill9();
    }

    /// A handle for imports from other threads, to this run of the process
    /// (the port changes on restart).
    pub fn importer(&self) -> Importer {
        Importer {
            url: format!("{}/api/v1/import", self.base_url()),
            client: self.client.clone(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("strata.log")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    /// Spawns the child on a free port and waits for `/ready`. Another
    /// process may take the port between the probe and the bind: then retry.
    fn launch(&mut self) {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let log_offset = self.spawn_child();
            match self.wait_ready(READY_TIMEOUT) {
                Ok(()) => return,
                Err(exit) => {
                    self.child = None;
                    let log = read_from(&self.log_path(), log_offset);
                    let port_taken = log.contains("cannot listen on");
                    if !(port_taken && attempt < ATTEMPTS) {
                        panic!("strata single did not become ready ({exit}); log:\n{log}");
                    }
                }
            }
        }
    }

    /// Spawns the child on a free port without waiting; returns the log
    /// length before the start.
    fn spawn_child(&mut self) -> u64 {
        self.addr = free_port();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open child log");
        let log_offset = log.metadata().map_or(0, |m| m.len());
        let child = Command::new(&self.bin)
            .arg("single")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .env_remove("STRATA_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        log_offset
    }

    /// Polls `/ready` until 200. Fails when the child exits or time runs out.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("exited with {status}"));
            }
            let ready = self
                .client
                .get(format!("{}/ready", self.base_url()))
                .timeout(Duration::from_secs(1))
                .send();
            if matches!(ready, Ok(ref r) if r.status().as_u16() == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(format!("not ready after {timeout:?}"));
            }
            sleep(POLL);
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("poll child status")?;
        self.child = None;
        Some(status)
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s TERM failed: {status}");
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("send SIGKILL");
            child.wait().expect("reap child");
        }
    }

    /// Waits for the process to exit; `None` if it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() > deadline {
                return None;
            }
            sleep(POLL);
        }
    }

    /// The whole child log so far.
    pub fn log(&self) -> String {
        read_from(&self.log_path(), 0)
    }

    /// Bytes of child log so far: an offset for `log_since`.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.log_path()).map_or(0, |m| m.len())
    }

    /// The child log from `offset` on (all starts write to one file).
    pub fn log_since(&self, offset: u64) -> String {
        read_from(&self.log_path(), offset)
    }

    pub fn get(&self, path_and_query: &str) -> Response {
        let request = self
            .client
            .get(format!("{}{path_and_query}", self.base_url()));
        self.send(request)
    }

    pub fn post(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base_url()))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    /// `POST /api/v1/import` with a plain body.
    pub fn import(&self, lines: &str) -> Response {
        self.post("/api/v1/import", lines.as_bytes().to_vec(), &[])
    }

    /// `GET /api/v1/export` with URL-encoded parameters.
    pub fn export(&self, params: &[(&str, &str)]) -> Response {
        self.get(&format!("/api/v1/export?{}", encode_params(params)))
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "/metrics: {}", response.body);
        response.body
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Response {
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("request to {} failed: {e}", self.addr));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .unwrap_or_else(|e| panic!("reading response from {} failed: {e}", self.addr));
        Response {
            status,
            headers,
            body,
        }
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log_path().display(),
                tail.join("\n")
            );
        }
    }
}

/// Sends imports and reports transport failures instead of panicking, for
/// writers that race with a kill.
#[derive(Clone)]
pub struct Importer {
    url: String,
    client: Client,
}

impl Importer {
    /// `POST /api/v1/import`; `Err` when no response came (refused, reset,
    /// cut short).
    pub fn import(&self, body: String) -> Result<Response, String> {
        let response = self
            .client
            .post(&self.url)
            .body(body)
            .send()
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().map_err(|e| format!("{e:?}"))?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// A small seeded generator (splitmix64), so a failing random schedule can
/// be replayed from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed in environment variable `var` (decimal) if set, else one from
    /// the clock. Panics on a malformed value rather than ignoring it.
    pub fn seed_from_env(var: &str) -> u64 {
        match std::env::var(var) {
            Ok(text) => text
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{var}={text:?} is not a u64: {e}")),
            Err(_) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_nanos();
                (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
            }
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the slight modulo bias does not matter here).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.next_u64() % span,
            None => self.next_u64(),
        }
    }

    /// A duration uniform in `lo..=hi`, at millisecond resolution.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// The value of field `name` in a log line (`name=value`, value up to the
/// next space), e.g. `log_field(line, "wal_rows")`.
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(' ').find_map(|word| {
        word.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

/// A loopback address whose port was free a moment ago.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address")
}

/// URL-encodes query parameters, keeping their order.
pub fn encode_params(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since_epoch.as_millis()).expect("timestamp fits in i64")
}

/// One line of an export, values decoded (`"NaN"`, `"Inf"`, `"-Inf"` too).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSeries {
    pub labels: BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

/// Parses an export body; panics on anything but the documented format.
pub fn parse_export(body: &str) -> Vec<ExportedSeries> {
    body.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("export line is not JSON ({e}): {line}"));
            let labels = v["metric"]
                .as_object()
                .unwrap_or_else(|| panic!("no metric object: {line}"))
                .iter()
                .map(|(k, v)| {
                    let v = v.as_str().unwrap_or_else(|| panic!("label {k}: {line}"));
                    (k.clone(), v.to_string())
                })
                .collect();
            let values = v["values"]
                .as_array()
                .unwrap_or_else(|| panic!("no values: {line}"))
                .iter()
                .map(|v| match v {
                    serde_json::Value::Number(n) => n.as_f64().expect("f64"),
                    serde_json::Value::String(s) => s
                        .parse()
                        .unwrap_or_else(|_| panic!("bad value string {s:?}: {line}")),
                    other => panic!("bad value {other}: {line}"),
                })
                .collect();
            let timestamps = v["timestamps"]
                .as_array()
                .unwrap_or_else(|| panic!("no timestamps: {line}"))
                .iter()
                .map(|t| {
                    t.as_i64()
                        .unwrap_or_else(|| panic!("bad timestamp {t}: {line}"))
                })
                .collect();
            ExportedSeries {
                labels,
                values,
                timestamps,
            }
        })
        .collect()
}

/// A label map from pairs, for comparing with `ExportedSeries::labels`.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read_from(path: &Path, offset: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_ok() {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_url_encoded_in_order() {
        assert_eq!(
            encode_params(&[("match[]", r#"up{job="a b"}"#), ("start", "1")]),
            "match%5B%5D=up%7Bjob%3D%22a+b%22%7D&start=1"
        );
    }

    #[test]
    fn export_lines_decode() {
        let got = parse_export(concat!(
            r#"{"metric":{"__name__":"up","job":"x"},"values":[1,"NaN","-Inf",0.1],"timestamps":[1,2,3,4]}"#,
            "\n"
        ));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels, labels(&[("__name__", "up"), ("job", "x")]));
        assert_eq!(got[0].timestamps, vec![1, 2, 3, 4]);
        assert_eq!(got[0].values[0], 1.0);
        assert!(got[0].values[1].is_nan());
        assert_eq!(got[0].values[2], f64::NEG_INFINITY);
        assert_eq!(got[0].values[3], 0.1);
        assert!(parse_export("").is_empty());
    }

    #[test]
    fn log_fields_are_found_by_name() {
        let line = "2026-01-01T00:00:00Z  INFO strata_storage::engine: Storage opened. wal_rows=12 replay_rows_per_second=3400 took=1ms";
        assert_eq!(log_field(line, "wal_rows"), Some("12"));
        assert_eq!(log_field(line, "replay_rows_per_second"), Some("3400"));
        assert_eq!(log_field(line, "rows"), None);
        assert_eq!(log_field(line, "missing"), None);
    }

    #[test]
    fn rng_is_reproducible_and_stays_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..=9).contains(&x));
        }
        assert_eq!(Rng::new(1).range(5, 5), 5);
        let _ = Rng::new(1).range(0, u64::MAX);
    }

    #[test]
    fn free_ports_are_loopback() {
        let addr = free_port();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }
}
