//! The manifest: which part directories are live. Replaced atomically
//! (temp file, fsync, rename, fsync dir), so after a crash it names either
//! the old or the new set of parts, never a mix.

use std::io::Write;
use std::path::Path;

use serde::Deserialize;

use super::{MergesetError, fsync_dir, io_err};

pub(crate) const MANIFEST_FILE: &str = "manifest.json";
pub(crate) const MANIFEST_TMP: &str = "manifest.json.tmp";
pub(crate) const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    /// Ids of live parts, ascending.
    pub(crate) parts: Vec<u64>,
    /// Ids of parts that failed to open: kept on disk (and listed, so open
    /// does not delete them) for a human to inspect or restore.
    #[serde(default)]
    pub(crate) broken: Vec<u64>,
}

/// Reads the manifest; `None` when there is none (an empty table).
pub(crate) fn read(dir: &Path) -> Result<Option<Manifest>, MergesetError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    // A damaged manifest fails the open: guessing which parts are live could
    // delete good data.
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| MergesetError::Corrupted {
            path: path.clone(),
            offset: e.column() as u64,
            what: format!("cannot parse manifest: {e}"),
        })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(MergesetError::Corrupted {
            path,
            offset: 0,
            what: format!("unsupported manifest format {}", manifest.format),
        });
    }
    Ok(Some(manifest))
}

/// The manifest bytes: one line of JSON with ids ascending, written by hand
/// so encoding cannot fail and the bytes are stable.
pub(crate) fn encode(parts: &[u64], broken: &[u64]) -> Vec<u8> {
    fn list(ids: &[u64]) -> String {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
    format!(
        "{{\"format\":{MANIFEST_FORMAT},\"parts\":[{}],\"broken\":[{}]}}\n",
        list(parts),
        list(broken)
    )
    .into_bytes()
}

pub(crate) fn write(dir: &Path, parts: &[u64], broken: &[u64]) -> Result<(), MergesetError> {
    let tmp = dir.join(MANIFEST_TMP);
    let path = dir.join(MANIFEST_FILE);
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&encode(parts, broken)).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    fsync_dir(dir)
}
