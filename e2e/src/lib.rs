//! Helpers for end-to-end tests: child processes, free ports, data generators.
//!
//! `Single` runs `strata single` as a child process on a free loopback port
//! with its own temporary data directory, and offers blocking HTTP helpers.
//! The child's log goes to a file in that directory; when a test panics, the
//! end of the log is printed with the failure. A child still running when
//! its `Single` is dropped is killed with SIGKILL.
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

pub mod compare;

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
    fn free_ports_are_loopback() {
        let addr = free_port();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }
}
