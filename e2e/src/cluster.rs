//! A Strata cluster as real processes on 127.0.0.1: `storage_nodes` ×
//! `strata storage`, one `strata insert` and one `strata select`, each on
//! free ports, insert and select given the nodes with `--storage-node` and
//! the same `--replication-factor`.
//!
//! Every process keeps its ports and its state across restarts: a storage
//! node its data directory (its RPC address is its name in the topology),
//! insert its hand-off directory. Storage nodes can be killed with SIGKILL,
//! stopped with SIGTERM and started again; so can insert. The nodes can also
//! be asked directly over the storage RPC (`RpcClient`, the client insert
//! and select use), e.g. to count the replicas of every series.
//!
//! Logs go to one file per process; the tail of each is printed when a test
//! panics. Processes still running when the `Cluster` is dropped are killed.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use strata_storage::cluster::{Node, SeriesQuery};
use strata_storage::rpc::{ClientConfig, ClientMetrics, RpcClient};
use strata_storage::{MatchOp, Matcher, Tenant, TimeRange};

use crate::compare::sum_metric;
use crate::{POLL, READY_TIMEOUT, Response, StorageNode, free_port, read_from};

/// The shape of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `strata storage` processes. Default: 3.
    pub storage_nodes: usize,
    /// `--replication-factor` of insert and select. Default: 2.
    pub replication_factor: usize,
    /// Extra flags of every storage node. Default: none.
    pub storage_args: Vec<String>,
    /// Extra flags of insert. Default: none.
    pub insert_args: Vec<String>,
    /// Extra flags of select. Default: none.
    pub select_args: Vec<String>,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            storage_nodes: 3,
            replication_factor: 2,
            storage_args: Vec::new(),
            insert_args: Vec::new(),
            select_args: Vec::new(),
        }
    }
}

/// A running cluster.
pub struct Cluster {
    pub storage: Vec<StorageNode>,
    pub insert: RoleProcess,
    pub select: RoleProcess,
    replication_factor: usize,
    /// Runs the RPC clients of the direct node helpers.
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    /// Starts the storage nodes, then insert and select, each waited for
    /// until `/ready`.
    pub fn start(bin: impl AsRef<Path>, config: &ClusterConfig) -> Cluster {
        let bin = bin.as_ref();
        let storage_args: Vec<&str> = config.storage_args.iter().map(String::as_str).collect();
        let storage: Vec<StorageNode> = (0..config.storage_nodes)
            .map(|_| StorageNode::start_with_args(bin, &storage_args))
            .collect();
        let nodes = storage
            .iter()
            .map(StorageNode::rpc_addr)
            .collect::<Vec<_>>()
            .join(",");
        let rf = config.replication_factor.to_string();
        let common = |extra: &[String]| {
            let mut args = vec![
                "--storage-node".to_string(),
                nodes.clone(),
                "--replication-factor".to_string(),
                rf.clone(),
            ];
            args.extend(extra.iter().cloned());
            args
        };
        let insert = RoleProcess::start(bin, "insert", common(&config.insert_args), true);
        let select = RoleProcess::start(bin, "select", common(&config.select_args), false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime for the RPC clients");
        Cluster {
            storage,
            insert,
            select,
            replication_factor: config.replication_factor,
            runtime,
        }
    }

    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// `http://host:port` of insert.
    pub fn insert_url(&self) -> String {
        self.insert.base_url()
    }

    /// `http://host:port` of select.
    pub fn select_url(&self) -> String {
        self.select.base_url()
    }

    /// Stops storage node `i` with SIGTERM and waits until it exited.
    pub fn stop_storage(&mut self, i: usize) -> ExitStatus {
        let node = &mut self.storage[i];
        node.signal("TERM");
        node.wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("storage node {i} still runs 30s after SIGTERM"))
    }

    /// Starts storage node `i` again (same ports, same data) and waits for `/ready`.
    pub fn start_storage(&mut self, i: usize) {
        self.storage[i].restart();
    }

    /// A client of storage node `i`, as insert and select reach it.
    pub fn node_client(&self, i: usize) -> RpcClient {
        RpcClient::new(
            self.storage[i].rpc_addr(),
            &ClientConfig::default(),
            ClientMetrics::unregistered(),
        )
    }

    /// How many storage nodes hold each series of `tenant`, asked of each
    /// node directly. Every node must answer.
    pub fn replicas(&self, tenant: Tenant) -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        for i in 0..self.storage.len() {
            let client = self.node_client(i);
            let query = SeriesQuery {
                tenant,
                matchers: vec![
                    Matcher::new(MatchOp::RegexMatch, "__name__", ".+").expect("valid regex"),
                ],
                range: TimeRange::ALL,
                limit: 0,
            };
            let series = self
                .runtime
                .block_on(client.series(query, Instant::now() + Duration::from_secs(30)))
                .unwrap_or_else(|e| panic!("series of storage node {i}: {e}"));
            for labels in series {
                let key = labels
                    .iter()
                    .map(|l| format!("{}={:?}", l.name, l.value))
                    .collect::<Vec<_>>()
                    .join(",");
                *count.entry(key).or_insert(0) += 1;
            }
        }
        count
    }

    /// Rows waiting in insert's hand-off queues, over every node
    /// (`strata_insert_handoff_backlog_rows`).
    pub fn handoff_backlog(&self) -> f64 {
        sum_metric(&self.insert.metrics(), "strata_insert_handoff_backlog_rows")
    }

    /// Waits until insert's hand-off queues are empty; panics after `timeout`.
    pub fn wait_handoff_drained(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let backlog = self.handoff_backlog();
            if backlog == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "insert's hand-off backlog is still {backlog} rows after {timeout:?}"
            );
            sleep(Duration::from_millis(100));
        }
    }
}

/// A `strata insert` or `strata select` child process on a loopback port
/// it keeps across restarts, with a directory of its own (log; insert's
/// hand-off queues in `handoff/`).
pub struct RoleProcess {
    bin: PathBuf,
    role: &'static str,
    child: Option<Child>,
    http: SocketAddr,
    dir: tempfile::TempDir,
    args: Vec<String>,
    client: Client,
}

impl RoleProcess {
    /// Starts `bin <role> --listen <free port> <args>` (plus `--handoff.dir`
    /// when `handoff`) and waits for `/ready`.
    pub fn start(
        bin: impl AsRef<Path>,
        role: &'static str,
        mut args: Vec<String>,
        handoff: bool,
    ) -> RoleProcess {
        let dir = tempfile::Builder::new()
            .prefix(&format!("strata-e2e-{role}-"))
            .tempdir()
            .expect("create temp dir");
        if handoff {
            args.push("--handoff.dir".into());
            args.push(dir.path().join("handoff").display().to_string());
        }
        let mut process = RoleProcess {
            bin: bin.as_ref().to_path_buf(),
            role,
            child: None,
            http: free_port(),
            dir,
            args,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build HTTP client"),
        };
        process.launch();
        process
    }

    /// Starts again on the same port and directory after a stop.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the previous {} process stopped first",
            self.role
        );
        self.launch();
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.role))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open child log");
        let log_offset = log.metadata().map_or(0, |m| m.len());
        let child = Command::new(&self.bin)
            .arg(self.role)
            .arg("--listen")
            .arg(self.http.to_string())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("STRATA_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        if let Err(why) = self.wait_ready(READY_TIMEOUT) {
            let log = read_from(&self.log_path(), log_offset);
            panic!(
                "strata {} did not become ready ({why}); log:\n{log}",
                self.role
            );
        }
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

    /// Sends SIGTERM and waits until the process exited.
    pub fn stop(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s TERM failed: {status}");
        self.wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("strata {} still runs 30s after SIGTERM", self.role))
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

    pub fn get(&self, path_and_query: &str) -> Response {
        self.send(
            self.client
                .get(format!("{}{path_and_query}", self.base_url())),
        )
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

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "/metrics: {}", response.body);
        response.body
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Response {
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("request to strata {} failed: {e}", self.role));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .unwrap_or_else(|e| panic!("reading the response of strata {} failed: {e}", self.role));
        Response {
            status,
            headers,
            body,
        }
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log_path().display(),
                tail.join("\n")
            );
        }
    }
}
