//! Real peer processes for tests: Prometheus, node-exporter, and any other
//! HTTP server started from a binary on `PATH` (installed by
//! `scripts/fetch-peers`).
//!
//! A `Peer` owns its child process, a temporary directory and a log file;
//! dropping it kills the child. A missing binary is a test failure with a
//! message naming the install command, never a silent pass.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a peer may take to answer its readiness URL.
const PEER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running peer process.
pub struct Peer {
    name: String,
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Peer {
    /// Starts `bin` with `args` (where `{addr}` becomes the listen address and
    /// `{dir}` the peer's temporary directory) and waits until `ready_path`
    /// answers 200.
    pub fn start(bin: &str, args: &[&str], ready_path: &str) -> Peer {
        Peer::start_with_files(bin, args, ready_path, &[])
    }

    /// Like `start`, first writing `files` (name, content) into the peer's
    /// directory; `{dir}` and `{addr}` are replaced in `args` and in the
    /// files' contents.
    pub fn start_with_files(
        bin: &str,
        args: &[&str],
        ready_path: &str,
        files: &[(&str, &str)],
    ) -> Peer {
        let path = find_binary(bin);
        let dir = tempfile::Builder::new()
            .prefix(&format!("strata-peer-{bin}-"))
            .tempdir()
            .expect("create temp dir");
        let addr = free_port();
        let dir_str = dir.path().display().to_string();
        for (name, content) in files {
            let content = content
                .replace("{addr}", &addr.to_string())
                .replace("{dir}", &dir_str);
            std::fs::write(dir.path().join(name), content)
                .unwrap_or_else(|e| panic!("write {name} for {bin}: {e}"));
        }
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("{addr}", &addr.to_string())
                    .replace("{dir}", &dir_str)
            })
            .collect();
        let log = File::create(dir.path().join("peer.log")).expect("create peer log");
        let child = Command::new(&path)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let peer = Peer {
            name: bin.to_string(),
            child,
            addr,
            dir,
        };
        peer.wait_ready(ready_path);
        peer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id, e.g. to stop (`SIGSTOP`) and continue the peer.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The peer's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("peer.log")).unwrap_or_default()
    }

    /// Rewrites file `name` in the peer's directory (`{addr}`, `{dir}`
    /// replaced) and POSTs `reload_path` so the peer reads it again.
    pub fn reload_file(&self, name: &str, content: &str, reload_path: &str) {
        let content = content
            .replace("{addr}", &self.addr.to_string())
            .replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(self.dir.path().join(name), content)
            .unwrap_or_else(|e| panic!("write {name} for {}: {e}", self.name));
        let url = format!("{}{reload_path}", self.base_url());
        let response = reqwest::blocking::Client::new()
            .post(&url)
            .send()
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(
            response.status().is_success(),
            "{} refused the reload: {}",
            self.name,
            response.text().unwrap_or_default()
        );
    }

    /// GET `path_and_query`, returning status and body.
    pub fn get(&self, path_and_query: &str) -> (u16, String) {
        http_get(&format!("{}{}", self.base_url(), path_and_query))
    }

    fn wait_ready(&self, ready_path: &str) {
        let deadline = Instant::now() + PEER_READY_TIMEOUT;
        let url = format!("{}{}", self.base_url(), ready_path);
        loop {
            if let Ok(response) = reqwest::blocking::get(&url)
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become ready at {url} within {PEER_READY_TIMEOUT:?}; its log:\n{}",
                self.name,
                self.log()
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(4000)..];
            eprintln!("--- end of {} log ---\n{tail}", self.name);
        }
    }
}

/// Whether every binary of `bins` is on `PATH`. When one is missing: false
/// with a printed reason under `STRATA_SKIP_PEER_TESTS=1` (the test should
/// return), else a panic naming the install command.
pub fn present_or_skip(test: &str, bins: &[&str]) -> bool {
    let skip = std::env::var("STRATA_SKIP_PEER_TESTS").is_ok_and(|v| v == "1");
    for bin in bins {
        if skip && which(bin).is_none() {
            eprintln!("{test}: SKIPPED: {bin} is not on PATH and STRATA_SKIP_PEER_TESTS=1");
            return false;
        }
        find_binary(bin);
    }
    true
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|candidate| candidate.is_file())
}

/// The path of `bin` on `PATH`; panics with the install command if missing.
pub fn find_binary(bin: &str) -> PathBuf {
    which(bin).unwrap_or_else(|| {
        panic!(
            "{bin} is not on PATH: run `scripts/fetch-peers prometheus` (the test command \
             does), or set STRATA_SKIP_PEER_TESTS=1 to skip peer tests"
        )
    })
}

/// A node-exporter on a free port.
pub fn node_exporter() -> Peer {
    Peer::start(
        "prometheus-node-exporter",
        &["--web.listen-address={addr}"],
        "/metrics",
    )
}

/// A Prometheus on a free port with `config` (YAML; `{addr}` is its own
/// listen address) as its configuration, its TSDB in the peer's temporary
/// directory, and the extra flags given. `Peer::reload_file("prometheus.yml",
/// ..., "/-/reload")` changes its configuration.
pub fn prometheus(config: &str, extra_args: &[&str]) -> Peer {
    let mut args = vec![
        "--config.file={dir}/prometheus.yml",
        "--storage.tsdb.path={dir}/tsdb",
        "--web.listen-address={addr}",
        "--web.enable-lifecycle",
    ];
    args.extend_from_slice(extra_args);
    Peer::start_with_files(
        "prometheus",
        &args,
        "/-/ready",
        &[("prometheus.yml", config)],
    )
}

/// Blocking GET with a timeout, for polling peers.
pub fn http_get(url: &str) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build HTTP client");
    let response = client
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}
