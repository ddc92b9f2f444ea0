//! `StorageNode` runs `strata storage` as a child process on free loopback
//! ports (HTTP and RPC) with its own temporary data directory. A restart
//! keeps both ports: the RPC address is the node's name in a topology.
//! The child's log goes to a file in that directory and its tail is
//! printed when a test panics; a child still running when its
//! `StorageNode` is dropped is killed with SIGKILL.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

use crate::{POLL, READY_TIMEOUT, Response, free_port, read_from};

/// A `strata storage` child process.
pub struct StorageNode {
    bin: PathBuf,
    child: Option<Child>,
    http: SocketAddr,
    rpc: SocketAddr,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    client: Client,
}

impl StorageNode {
    /// Starts `bin storage` with a new data directory and waits until ready.
    pub fn start(bin: impl AsRef<Path>) -> StorageNode {
        StorageNode::start_with_args(bin, &[])
    }

    /// Like `start`, with extra flags for `strata storage`.
    pub fn start_with_args(bin: impl AsRef<Path>, args: &[&str]) -> StorageNode {
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-storage-")
            .tempdir()
            .expect("create temp dir");
        let mut node = StorageNode {
            bin: bin.as_ref().to_path_buf(),
            child: None,
            http: free_port(),
            rpc: free_port(),
            dir,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build HTTP client"),
        };
        node.launch();
        node
    }

    /// Starts again on the same data directory and ports after a stop.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the previous process stopped first"
        );
        self.launch();
    }

    /// `host:port` of the RPC, as a topology names the node.
    pub fn rpc_addr(&self) -> String {
        self.rpc.to_string()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("strata.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    fn launch(&mut self) {
        let log_offset = self.spawn_child();
        if let Err(why) = self.wait_ready(READY_TIMEOUT) {
            let log = read_from(&self.log_path(), log_offset);
            panic!("strata storage did not become ready ({why}); log:\n{log}");
        }
    }

    fn spawn_child(&mut self) -> u64 {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open child log");
        let log_offset = log.metadata().map_or(0, |m| m.len());
        let child = Command::new(&self.bin)
            .arg("storage")
            .arg("--listen")
            .arg(self.http.to_string())
            .arg("--rpc.listen")
            .arg(self.rpc.to_string())
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
                self.kill9();
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

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed: {status}");
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

    pub fn log(&self) -> String {
        read_from(&self.log_path(), 0)
    }

    pub fn get(&self, path: &str) -> Response {
        let response = self
            .client
            .get(format!("{}{path}", self.base_url()))
            .send()
            .unwrap_or_else(|e| panic!("request to {} failed: {e}", self.http));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().expect("response body");
        Response {
            status,
            headers,
            body,
        }
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "/metrics: {}", response.body);
        response.body
    }
}

impl Drop for StorageNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process must continue to die of SIGKILL: it does,
            // SIGKILL needs no cooperation.
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
