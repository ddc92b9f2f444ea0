//! The byte layer of the protocol: the handshake and length-prefixed
//! frames with optional zstd bodies (layouts in the `rpc` module doc).

use std::cell::RefCell;
use std::io::Cursor;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::messages::Method;

/// First bytes each side sends: tells a strata RPC peer from anything else
/// listening on the port.
pub const MAGIC: [u8; 4] = *b"SRPC";
/// Raised on any change of the bytes on the wire. A server answers clients
/// from [`OLDEST_CLIENT_VERSION`] up to its own in their version (calls
/// are only ever added, so an old client's calls are unchanged); otherwise
/// peers of different versions refuse each other at the handshake.
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest client version a server still answers: storage nodes are
/// upgraded before the insert and select that call them.
pub const OLDEST_CLIENT_VERSION: u16 = 1;
pub const HELLO_LEN: usize = 12;
/// Length field, kind, flags, request id.
pub const HEADER_LEN: usize = 10;
/// The body is one zstd frame that declares its decompressed size.
pub const FLAG_ZSTD: u8 = 0x01;
/// Smaller bodies are sent as they are: zstd rarely saves enough on them to
/// pay for the CPU on both sides.
pub const COMPRESS_MIN_BYTES: usize = 512;
/// Fast: the bodies are already compact, and the link is usually a LAN.
const ZSTD_LEVEL: i32 = 1;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { id: u32, len: u64, max: u32 },
    #[error("peer does not speak the strata RPC protocol (it sent {0:02x?} instead of the magic)")]
    BadMagic([u8; 4]),
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("frame length {0} is shorter than the frame header")]
    Short(u32),
    #[error("frame body is not a zstd frame of at most {max} bytes")]
    Corrupt { max: u32 },
}

/// What each side announces at connection start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    /// Largest frame this side accepts (length field value, and
    /// decompressed body).
    pub max_frame_bytes: u32,
    /// Calls this side lets be open at once on the connection (the
    /// server's value binds the client; the client's is informational).
    pub max_in_flight: u16,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[6..10].copy_from_slice(&self.max_frame_bytes.to_be_bytes());
        out[10..12].copy_from_slice(&self.max_in_flight.to_be_bytes());
        out
    }

    /// Checks the magic; the version is the caller's to compare, so that
    /// its error can name both versions.
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Hello, FrameError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        Ok(Hello {
            version: u16::from_be_bytes([bytes[4], bytes[5]]),
            max_frame_bytes: u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
            max_in_flight: u16::from_be_bytes([bytes[10], bytes[11]]),
        })
    }
}

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Client -> server: a call.
    Request(Method),
    /// Client -> server: the caller took this many batches of a stream.
    Credit,
    /// Client -> server: the caller gave up on the call.
    Cancel,
    /// Server -> client: the result; ends the call.
    Reply,
    /// Server -> client: part of a streamed result; more follow.
    Batch,
    /// Server -> client: the call failed; ends the call.
    Error,
    /// Server -> client (request id 0): the server is stopping; open calls
    /// finish, new ones go elsewhere.
    GoAway,
}

impl Kind {
    pub fn to_u8(self) -> u8 {
        match self {
            Kind::Request(m) => m as u8,
            Kind::Credit => 0x20,
            Kind::Cancel => 0x21,
            Kind::Reply => 0x40,
            Kind::Batch => 0x41,
            Kind::Error => 0x42,
            Kind::GoAway => 0x43,
        }
    }

    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x20 => Kind::Credit,
            0x21 => Kind::Cancel,
            0x40 => Kind::Reply,
            0x41 => Kind::Batch,
            0x42 => Kind::Error,
            0x43 => Kind::GoAway,
            _ => Kind::Request(Method::from_u8(b)?),
        })
    }
}

/// A received frame, body decompressed.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub id: u32,
    pub body: Vec<u8>,
    /// Bytes it took on the wire, for the traffic counters.
    pub wire_len: usize,
}

/// The bytes of a frame, its body compressed when that pays. Fails when
/// the frame would exceed `max_frame_bytes` (the receiver's limit).
pub fn encode_frame(
    kind: Kind,
    id: u32,
    body: &[u8],
    max_frame_bytes: u32,
) -> Result<Vec<u8>, FrameError> {
    let too_large = |len: usize| FrameError::TooLarge {
        id,
        len: len as u64,
        max: max_frame_bytes,
    };
    // The receiver bounds the decompressed body too.
    if body.len() > max_frame_bytes as usize {
        return Err(too_large(body.len() + HEADER_LEN - 4));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&[0; 4]);
    out.push(kind.to_u8());
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    if body.len() >= COMPRESS_MIN_BYTES && compress_into(body, &mut out) {
        out[5] = FLAG_ZSTD;
    } else {
        out.truncate(HEADER_LEN);
        out.extend_from_slice(body);
    }
    let len = out.len() - 4;
    if len > max_frame_bytes as usize {
        return Err(too_large(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Appends the zstd frame of `body` to `out`; false when zstd fails (out of
/// memory) or does not shrink it.
fn compress_into(body: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let written = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        let c = slot.as_mut()?;
        out.reserve(zstd::zstd_safe::compress_bound(body.len()));
        let mut cursor = Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        c.compress_to_buffer(body, &mut cursor).ok()
    });
    matches!(written, Some(n) if n < body.len())
}

/// Reads one frame. `Ok(None)`: the peer closed the connection between
/// frames. A frame over `max_frame_bytes` is an error: its body is not
/// read, so the connection cannot be used further.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame_bytes: u32,
) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    if r.read(&mut header[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut header[1..]).await?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let id = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    if len < (HEADER_LEN - 4) as u32 {
        return Err(FrameError::Short(len));
    }
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            id,
            len: u64::from(len),
            max: max_frame_bytes,
        });
    }
    let kind = Kind::from_u8(header[4]).ok_or(FrameError::UnknownKind(header[4]))?;
    let flags = header[5];
    if flags & !FLAG_ZSTD != 0 {
        return Err(FrameError::UnknownFlags(flags));
    }
    let mut body = vec![0u8; len as usize - (HEADER_LEN - 4)];
    r.read_exact(&mut body).await?;
    if flags & FLAG_ZSTD != 0 {
        body = crate::encoding::decompress_frame(&body, max_frame_bytes as usize).ok_or(
            FrameError::Corrupt {
                max: max_frame_bytes,
            },
        )?;
    }
    Ok(Some(Frame {
        kind,
        id,
        body,
        wire_len: len as usize + 4,
    }))
}

/// Writes queued frames until the queue closes, then shuts the write side.
/// Frames queued together go out in one flush. Calls `sent` with the bytes
/// of each frame.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
    sent: impl Fn(usize),
) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    while let Some(frame) = frames.recv().await {
        w.write_all(&frame).await?;
        sent(frame.len());
        while let Ok(frame) = frames.try_recv() {
            w.write_all(&frame).await?;
            sent(frame.len());
        }
        w.flush().await?;
    }
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(body: &[u8]) -> (Vec<u8>, Frame) {
        let bytes = encode_frame(Kind::Batch, 7, body, 1 << 20).expect("encodes");
        let mut r = bytes.as_slice();
        let frame = read_frame(&mut r, 1 << 20)
            .await
            .expect("reads")
            .expect("a frame");
        assert!(r.is_empty(), "frame read whole");
        (bytes, frame)
    }

    #[tokio::test]
    async fn small_bodies_stay_plain_large_ones_are_compressed() {
        let (bytes, frame) = round_trip(b"tiny").await;
        assert_eq!(bytes[5], 0);
        assert_eq!(frame.body, b"tiny");
        let large = vec![42u8; 10_000];
        let (bytes, frame) = round_trip(&large).await;
        assert_eq!(bytes[5], FLAG_ZSTD);
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(frame.body, large);
        // Random bytes do not shrink: sent as they are.
        let mut noise = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.extend_from_slice(&x.to_le_bytes());
        }
        let (bytes, frame) = round_trip(&noise).await;
        assert_eq!(bytes[5], 0);
        assert_eq!(frame.body, noise);
    }

    #[tokio::test]
    async fn limits_and_garbage_are_errors() {
        let body = vec![1u8; 100];
        let err = encode_frame(Kind::Reply, 1, &body, 50).expect_err("too large to send");
        assert!(matches!(err, FrameError::TooLarge { max: 50, .. }), "{err}");
        let bytes = encode_frame(Kind::Reply, 3, &body, 1000).expect("encodes");
        let err = read_frame(&mut bytes.as_slice(), 50)
            .await
            .expect_err("too large to receive");
        assert_eq!(
            err.to_string(),
            "frame of 106 bytes exceeds the maximum of 50 bytes"
        );
        assert!(matches!(err, FrameError::TooLarge { id: 3, .. }));

        // A compressed body that inflates past the limit.
        let bytes = encode_frame(Kind::Reply, 3, &vec![0u8; 5000], 10_000).expect("encodes");
        let err = read_frame(&mut bytes.as_slice(), 1000)
            .await
            .expect_err("bomb");
        assert!(matches!(err, FrameError::Corrupt { max: 1000 }), "{err}");

        let check = |bytes: &'static [u8], want: &'static str| async move {
            let err = read_frame(&mut &bytes[..], 1000)
                .await
                .expect_err("garbage");
            assert_eq!(err.to_string(), want);
        };
        check(
            &[0, 0, 0, 6, 0x7f, 0, 0, 0, 0, 1],
            "unknown frame kind 0x7f",
        )
        .await;
        check(
            &[0, 0, 0, 6, 0x40, 0x80, 0, 0, 0, 1],
            "unknown frame flags 0x80",
        )
        .await;
        check(
            &[0, 0, 0, 2, 0x40, 0, 0, 0, 0, 1],
            "frame length 2 is shorter than the frame header",
        )
        .await;
        check(
            &[0, 0, 0, 6, 0x40, 0x01, 0, 0, 0, 1],
            "frame body is not a zstd frame of at most 1000 bytes",
        )
        .await;
        let eof = read_frame(&mut &[][..], 1000).await.expect("clean end");
        assert!(eof.is_none());
    }

    #[test]
    fn hello_names_a_foreign_peer() {
        let err = Hello::decode(b"HTTP/1.1 400").expect_err("not ours");
        assert_eq!(
            err.to_string(),
            "peer does not speak the strata RPC protocol (it sent [48, 54, 54, 50] instead of the magic)"
        );
    }
}
