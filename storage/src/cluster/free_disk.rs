//! The read-only switch of a storage node: free space on the data volume,
//! checked periodically against `--storage.min-free-disk-bytes`. Below it
//! the node refuses writes (insert queues them for hand-off) and keeps
//! serving reads, so a full disk never corrupts a part or the log.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{error, info, warn};

/// Free space on the volume of `path`, as an unprivileged process may use it.
#[allow(unsafe_code)]
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;

    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `stat`
    // points to memory of the type statvfs fills, read only on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms; u64 holds them all.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, size) = (stat.f_bavail as u64, stat.f_frsize as u64);
    Ok(blocks.saturating_mul(size))
}

#[derive(Default)]
struct State {
    free_bytes: u64,
    read_only_reason: Option<String>,
}

/// Free space of a data directory and whether writes are refused.
pub struct FreeDisk {
    dir: PathBuf,
    min_free_bytes: u64,
    state: RwLock<State>,
    read_only: Gauge,
    free: Gauge,
}

impl FreeDisk {
    /// Watches the volume of `dir`; `min_free_bytes` 0 never turns
    /// read-only. Registers `strata_storage_read_only` (0/1) and
    /// `strata_storage_free_disk_bytes`, and checks once before returning.
    pub fn new(
        dir: impl Into<PathBuf>,
        min_free_bytes: u64,
        registry: &mut Registry,
    ) -> Arc<FreeDisk> {
        let free_disk = Arc::new(FreeDisk {
            dir: dir.into(),
            min_free_bytes,
            state: RwLock::new(State::default()),
            read_only: Gauge::default(),
            free: Gauge::default(),
        });
        registry.register(
            "strata_storage_read_only",
            "1 while free disk space is below --storage.min-free-disk-bytes and writes are refused",
            free_disk.read_only.clone(),
        );
        registry.register(
            "strata_storage_free_disk_bytes",
            "Free space on the data volume at the last check",
            free_disk.free.clone(),
        );
        if let Err(e) = free_disk.check() {
            warn!(dir = %free_disk.dir.display(), error = %e, "Cannot read free disk space; writes stay allowed until a check succeeds.");
        }
        free_disk
    }

    /// Reads the free space now and switches read-only on or off.
    pub fn check(&self) -> io::Result<u64> {
        let free = free_bytes(&self.dir)?;
        let reason = (free < self.min_free_bytes).then(|| {
            format!(
                "free space on {} is {free} bytes, below --storage.min-free-disk-bytes={}",
                self.dir.display(),
                self.min_free_bytes
            )
        });
        let mut state = self.state.write();
        match (&state.read_only_reason, &reason) {
            (None, Some(reason)) => {
                error!(free_bytes = free, min_free_bytes = self.min_free_bytes, reason = %reason, "Storage is read-only: free disk space or raise the volume.")
            }
            (Some(_), None) => {
                info!(
                    free_bytes = free,
                    min_free_bytes = self.min_free_bytes,
                    "Storage accepts writes again."
                )
            }
            _ => {}
        }
        self.read_only.set(i64::from(reason.is_some()));
        self.free.set(i64::try_from(free).unwrap_or(i64::MAX));
        state.free_bytes = free;
        state.read_only_reason = reason;
        Ok(free)
    }

    /// Why writes are refused; None while they are accepted.
    pub fn read_only_reason(&self) -> Option<String> {
        self.state.read().read_only_reason.clone()
    }

    /// Free bytes at the last check.
    pub fn free_bytes(&self) -> u64 {
        self.state.read().free_bytes
    }

    /// Checks every `interval` until `stop` completes.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
            let me = self.clone();
            // statvfs may block on a slow network volume.
            match tokio::task::spawn_blocking(move || me.check()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    warn!(dir = %self.dir.display(), error = %e, "Cannot read free disk space; keeping the last state.")
                }
                Err(e) => warn!(error = %e, "Free disk space check failed."),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_switches_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = free_bytes(dir.path()).expect("statvfs");
        assert!(free > 0);
        let check = |min: u64, want_read_only: bool| {
            let mut registry = Registry::default();
            let f = FreeDisk::new(dir.path(), min, &mut registry);
            assert_eq!(f.read_only_reason().is_some(), want_read_only, "min {min}");
            assert_eq!(f.read_only.get(), i64::from(want_read_only));
            assert!(f.free_bytes() > 0);
        };
        check(0, false);
        check(1, false);
        check(u64::MAX, true);
        let f = FreeDisk::new(dir.path(), u64::MAX, &mut Registry::default());
        let reason = f.read_only_reason().expect("read-only");
        assert!(
            reason.contains("below --storage.min-free-disk-bytes=18446744073709551615"),
            "{reason}"
        );
        assert!(free_bytes(Path::new("/nonexistent/strata")).is_err());
    }
}
