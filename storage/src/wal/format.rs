//! Segment file encoding and replay of one segment. The byte layout is drawn
//! in the `wal` module doc; this file is the only code that knows it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{Lsn, SegmentId, WalError};

pub(super) const MAGIC: [u8; 8] = *b"STRATWAL";
pub(super) const VERSION: u32 = 1;
pub(super) const HEADER_LEN: usize = 32;
pub(super) const FRAME_HEADER_LEN: usize = 8;

/// Largest record payload `append` accepts. Replay treats a length field
/// above it as damage, so a flipped bit in a length never makes replay
/// allocate gigabytes.
pub const MAX_RECORD_LEN: usize = 256 << 20;

/// Segment file suffix; the stem is the id in 20 zero-padded digits so that
/// names sort like ids.
pub(super) const SEGMENT_SUFFIX: &str = ".wal";
/// A segment being created: it becomes a segment only by an atomic rename
/// once its header is durable, so a crash leaves either no segment or a
/// segment with a complete header (plus, at worst, a stray temp file).
pub(super) const TEMP_SUFFIX: &str = ".wal.tmp";

const READ_CHUNK: usize = 1 << 20;

pub(super) fn segment_file_name(id: SegmentId) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// The id of a segment file name, or `None` for any other name.
pub(super) fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    pub id: SegmentId,
    /// Lsn of the segment's first record (or of the next append, while empty).
    pub first_lsn: Lsn,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.id.to_le_bytes());
        b[20..28].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header, or says what is wrong with it.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<SegmentHeader, String> {
        if b[0..8] != MAGIC {
            return Err(format!("bad magic {:02x?}, not a wal segment", &b[0..8]));
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != VERSION {
            return Err(format!(
                "unsupported format version {version}, this build reads {VERSION}"
            ));
        }
        let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        let actual = crc32c::crc32c(&b[0..28]);
        if stored != actual {
            return Err(format!(
                "header checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
            ));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[12..20]);
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&b[20..28]);
        Ok(SegmentHeader {
            id: u64::from_le_bytes(id),
            first_lsn: u64::from_le_bytes(lsn),
        })
    }
}

/// The checksum stored in a frame: crc32c over the length field and the
/// payload. Covering the length means a zero-filled region (len 0, crc 0)
/// never passes for a run of empty records.
fn frame_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len), payload)
}

/// The 8 bytes that precede `payload` in a segment, or `None` when the
/// payload is longer than `MAX_RECORD_LEN`.
pub(super) fn frame_header(payload: &[u8]) -> Option<[u8; FRAME_HEADER_LEN]> {
    if payload.len() > MAX_RECORD_LEN {
        return None;
    }
    let len = u32::try_from(payload.len()).ok()?.to_le_bytes();
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&len);
    h[4..8].copy_from_slice(&frame_crc(len, payload).to_le_bytes());
    Some(h)
}

/// Length and stored checksum of a frame header.
fn split_frame_header(b: &[u8]) -> (usize, u32) {
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    (len, crc)
}

fn frame_is_intact(frame: &[u8], stored_crc: u32) -> bool {
    let len = [frame[0], frame[1], frame[2], frame[3]];
    frame_crc(len, &frame[FRAME_HEADER_LEN..]) == stored_crc
}

/// Reads a file front to back through one reusable buffer, so replay copies
/// each byte once and hands out payloads as slices of the buffer.
struct ChunkReader {
    file: File,
    buf: Vec<u8>,
    /// First unconsumed byte in `buf`.
    pos: usize,
    /// End of valid data in `buf`.
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
}

impl ChunkReader {
    fn new(file: File, start: u64) -> ChunkReader {
        ChunkReader {
            file,
            buf: vec![0; READ_CHUNK],
            pos: 0,
            end: 0,
            base: start,
        }
    }

    /// File offset of the next unconsumed byte.
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Makes at least `n` unconsumed bytes available unless the file ends
    /// first; returns how many are available.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        if self.end - self.pos >= n {
            return Ok(self.end - self.pos);
        }
        if self.pos + n > self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
            if n > self.buf.len() {
                self.buf.resize(n, 0);
            }
        }
        while self.end - self.pos < n {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(r) => self.end += r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.pos)
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// What replaying one segment found.
#[derive(Debug)]
pub(super) struct SegmentReplay {
    /// `None` when the segment was a torn, record-less last segment and has
    /// been deleted.
    pub header: Option<SegmentHeader>,
    pub records: u64,
    pub payload_bytes: u64,
    /// File size after any truncation.
    pub len: u64,
    /// Bytes cut off (or deleted with the file).
    pub truncated: u64,
}

/// Why replay stopped before the end of a segment.
struct Damage {
    offset: u64,
    what: String,
    /// A crc mismatch whose following frame is intact: the damage is not a
    /// torn tail, whatever segment it is in.
    followed_by_intact: bool,
}

/// Replays one segment file, calling `on_record` for each intact record.
///
/// Damage in the last segment (`is_last`) that reaches to the end of the
/// file is a torn tail: the file is truncated to the last intact record and
/// fsynced. Any other damage is `WalError::Corrupted`.
pub(super) fn replay_segment(
    path: &Path,
    id: SegmentId,
    is_last: bool,
    on_record: &mut dyn FnMut(&[u8]) -> Result<(), WalError>,
) -> Result<SegmentReplay, WalError> {
    let io_err = |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupted = |offset, what| WalError::Corrupted {
        path: path.to_path_buf(),
        offset,
        what,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();

    let mut raw = [0u8; HEADER_LEN];
    let header = if file_len < HEADER_LEN as u64 {
        Err(format!("short header: {file_len} of {HEADER_LEN} bytes"))
    } else {
        file.read_exact(&mut raw).map_err(io_err)?;
        SegmentHeader::decode(&raw)
    };
    let header = match header {
        Ok(h) => h,
        // The segment being created when the process died: it never held a
        // record, so dropping it loses nothing.
        Err(what) if is_last && file_len <= HEADER_LEN as u64 => {
            warn!(path = %path.display(), bytes = file_len, reason = %what,
                "Removing wal segment torn while being created.");
            fs::remove_file(path).map_err(io_err)?;
            return Ok(SegmentReplay {
                header: None,
                records: 0,
                payload_bytes: 0,
                len: 0,
                truncated: file_len,
            });
        }
        Err(what) => return Err(corrupted(0, what)),
    };
    if header.id != id {
        return Err(corrupted(
            12,
            format!(
                "header names segment {} but the file name says {id}",
                header.id
            ),
        ));
    }

    let mut reader = ChunkReader::new(file, HEADER_LEN as u64);
    let mut records = 0u64;
    let mut payload_bytes = 0u64;
    let damage = loop {
        let offset = reader.offset();
        let left = file_len - offset;
        if left == 0 {
            break None;
        }
        if left < FRAME_HEADER_LEN as u64 {
            break Some(Damage {
                offset,
                what: format!("truncated record header: {left} of {FRAME_HEADER_LEN} bytes"),
                followed_by_intact: false,
            });
        }
        reader.fill(FRAME_HEADER_LEN).map_err(io_err)?;
        let (len, stored_crc) = split_frame_header(reader.available());
        let frame_len = FRAME_HEADER_LEN + len;
        if len > MAX_RECORD_LEN || frame_len as u64 > left {
            break Some(Damage {
                offset,
                what: format!(
                    "record of {len} bytes runs past the end of the file ({left} bytes left)"
                ),
                followed_by_intact: false,
            });
        }
        if reader.fill(frame_len).map_err(io_err)? < frame_len {
            return Err(corrupted(offset, "file shrank during replay".into()));
        }
        let frame = &reader.available()[..frame_len];
        if !frame_is_intact(frame, stored_crc) {
            let followed_by_intact =
                next_frame_is_intact(&mut reader, frame_len, left).map_err(io_err)?;
            break Some(Damage {
                offset,
                what: format!("checksum mismatch in record of {len} bytes"),
                followed_by_intact,
            });
        }
        on_record(&frame[FRAME_HEADER_LEN..])?;
        records += 1;
        payload_bytes += len as u64;
        reader.consume(frame_len);
    };

    let mut replay = SegmentReplay {
        header: Some(header),
        records,
        payload_bytes,
        len: file_len,
        truncated: 0,
    };
    let Some(damage) = damage else {
        return Ok(replay);
    };
    if !is_last || damage.followed_by_intact {
        let what = if damage.followed_by_intact {
            format!("{}, and intact records follow it", damage.what)
        } else {
            damage.what
        };
        return Err(corrupted(damage.offset, what));
    }
    truncate(path, damage.offset).map_err(io_err)?;
    warn!(path = %path.display(), offset = damage.offset, bytes = file_len - damage.offset,
        reason = %damage.what, "Cut torn tail off the wal.");
    replay.len = damage.offset;
    replay.truncated = file_len - damage.offset;
    Ok(replay)
}

/// Whether an intact frame starts `skip` bytes past the reader's position,
/// given `left` bytes from that position to the end of the file.
fn next_frame_is_intact(reader: &mut ChunkReader, skip: usize, left: u64) -> io::Result<bool> {
    let after = left - skip as u64;
    if after < FRAME_HEADER_LEN as u64 {
        return Ok(false);
    }
    reader.fill(skip + FRAME_HEADER_LEN)?;
    let (len, stored_crc) = split_frame_header(&reader.available()[skip..]);
    let frame_len = FRAME_HEADER_LEN + len;
    if len > MAX_RECORD_LEN || frame_len as u64 > after {
        return Ok(false);
    }
    if reader.fill(skip + frame_len)? < skip + frame_len {
        return Ok(false);
    }
    let frame = &reader.available()[skip..skip + frame_len];
    Ok(frame_is_intact(frame, stored_crc))
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

/// Creates segment `id` whose first record will get `first_lsn`: header
/// written to a temp file, fsynced, renamed into place, directory fsynced.
/// Returns the file positioned after the header.
pub(super) fn create_segment(
    dir: &Path,
    id: SegmentId,
    first_lsn: Lsn,
) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(segment_file_name(id));
    let temp = dir.join(format!("{id:020}{TEMP_SUFFIX}"));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalError::Io { path, source }
    };
    if path.exists() {
        return Err(WalError::Io {
            path,
            source: io::Error::new(io::ErrorKind::AlreadyExists, "segment file already exists"),
        });
    }
    let header = SegmentHeader { id, first_lsn }.encode();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io_err(&temp))?;
    io::Write::write_all(&mut file, &header).map_err(io_err(&temp))?;
    file.sync_all().map_err(io_err(&temp))?;
    fs::rename(&temp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// Makes creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WalError::Io {
            path: dir.to_path_buf(),
            source,
        })
}
