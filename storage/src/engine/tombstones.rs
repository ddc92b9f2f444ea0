//! Ids of deleted series, persisted in one file replaced atomically.
//!
//! ```text
//! file "deleted" = magic "STDL" | version u32 LE (1) | crc32c u32 LE of bitmap | bitmap
//! bitmap = RoaringTreemap serialization
//! ```
//!
//! The set only grows; its ids are filtered from every read and dropped by merges.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use roaring::RoaringTreemap;

use super::StorageError;
use super::fsutil::{io_err, write_atomically};
use crate::types::SeriesId;

const MAGIC: &[u8; 4] = b"STDL";
const VERSION: u32 = 1;

pub struct Tombstones {
    path: PathBuf,
    set: RwLock<Arc<RoaringTreemap>>,
    write: Mutex<()>,
}

impl Tombstones {
    pub fn open(path: &Path) -> Result<Tombstones, StorageError> {
        let set = match std::fs::read(path) {
            Ok(data) => decode(&data).ok_or_else(|| StorageError::Corrupted {
                path: path.to_path_buf(),
                offset: 0,
                what: "deleted-series file fails its checksum or format".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RoaringTreemap::new(),
            Err(e) => return Err(io_err(path, e)),
        };
        Ok(Tombstones {
            path: path.to_path_buf(),
            set: RwLock::new(Arc::new(set)),
            write: Mutex::new(()),
        })
    }

    pub fn snapshot(&self) -> Arc<RoaringTreemap> {
        self.set.read().clone()
    }

    pub fn contains(&self, id: SeriesId) -> bool {
        self.set.read().contains(id)
    }

    pub fn max(&self) -> Option<SeriesId> {
        self.set.read().max()
    }

    /// Adds ids and makes them durable before returning.
    pub fn add(&self, ids: &RoaringTreemap) -> Result<(), StorageError> {
        let _w = self.write.lock();
        let mut next = (**self.set.read()).clone();
        next |= ids;
        write_atomically(&self.path, &encode(&next))?;
        *self.set.write() = Arc::new(next);
        Ok(())
    }
}

fn encode(set: &RoaringTreemap) -> Vec<u8> {
    let mut bitmap = Vec::with_capacity(set.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = set.serialize_into(&mut bitmap);
    let mut out = Vec::with_capacity(12 + bitmap.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&bitmap).to_le_bytes());
    out.extend_from_slice(&bitmap);
    out
}

fn decode(data: &[u8]) -> Option<RoaringTreemap> {
    if data.len() < 12 || &data[..4] != MAGIC {
        return None;
    }
    let version = u32::from_le_bytes(data[4..8].try_into().ok()?);
    let crc = u32::from_le_bytes(data[8..12].try_into().ok()?);
    if version != VERSION || crc32c::crc32c(&data[12..]) != crc {
        return None;
    }
    RoaringTreemap::deserialize_from(&data[12..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_detects_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deleted");
        let t = Tombstones::open(&path).expect("open empty");
        t.add(&[3u64, 9].into_iter().collect()).expect("add");
        t.add(&[4u64].into_iter().collect()).expect("add");
        let t = Tombstones::open(&path).expect("reopen");
        assert_eq!(t.snapshot().iter().collect::<Vec<_>>(), vec![3, 4, 9]);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).expect("write");
        assert!(matches!(
            Tombstones::open(&path),
            Err(StorageError::Corrupted { .. })
        ));
    }
}
