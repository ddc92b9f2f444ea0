//! Small file-system helpers: atomic replacement and directory fsync.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::StorageError;

pub fn io_err(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Replaces `path` with `data` so that a crash leaves either the old or the
/// new content: write a temporary file, fsync it, rename, fsync the directory.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

pub fn create_dir_all(dir: &Path) -> Result<(), StorageError> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))
}
