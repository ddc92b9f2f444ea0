//! Block codecs: one series' timestamps and values in one block.
//!
//! PLACEHOLDER: raw little-endian layout, replaced by the real codecs
//! (decimal conversion + delta/delta-of-delta, Gorilla XOR where it wins).
//! The contract below stays the same.
//!
//! Contract:
//! - `encode_block` takes timestamps sorted ascending (no duplicates) and the
//!   values of the same length, and appends a self-describing byte string
//!   to `out`. The byte string is meant to be compressed further (zstd) by the
//!   part writer, so it should be regular rather than minimal where that helps.
//! - `decode_block` reverses it exactly: every value bit pattern survives
//!   (NaN payloads, the staleness marker, -0.0).

/// Pages: the part writer concatenates encoded blocks of consecutive series
/// into pages of about `PAGE_TARGET_BYTES` (before compression) and stores each
/// page as `compress_page` made it. Compression choices live here, not in the
/// part layout.
pub const PAGE_TARGET_BYTES: usize = 64 * 1024;

/// Compresses one page (concatenated encoded blocks), appending to `out`.
pub fn compress_page(page: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(page);
}

/// Reverses `compress_page`, appending to `out`.
pub fn decompress_page(data: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.extend_from_slice(data);
    Ok(())
}

/// Largest number of samples in one block.
pub const MAX_BLOCK_SAMPLES: usize = 8192;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("block is truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown encoding tag {tag} at byte {at}")]
    UnknownTag { tag: u8, at: usize },
    #[error("block is malformed at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

/// Appends the encoded block to `out`.
pub fn encode_block(timestamps: &[i64], values: &[f64], out: &mut Vec<u8>) {
    debug_assert_eq!(timestamps.len(), values.len());
    out.extend_from_slice(&(timestamps.len() as u32).to_le_bytes());
    for t in timestamps {
        out.extend_from_slice(&t.to_le_bytes());
    }
    for v in values {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
}

/// Decodes a block written by `encode_block`, appending to the two vectors.
pub fn decode_block(
    data: &[u8],
    timestamps: &mut Vec<i64>,
    values: &mut Vec<f64>,
) -> Result<(), DecodeError> {
    let n = u32::from_le_bytes(
        data.get(..4)
            .ok_or(DecodeError::Truncated(0))?
            .try_into()
            .map_err(|_| DecodeError::Truncated(0))?,
    ) as usize;
    let need = 4 + n * 16;
    if data.len() < need {
        return Err(DecodeError::Truncated(data.len()));
    }
    for i in 0..n {
        let at = 4 + i * 8;
        timestamps.push(i64::from_le_bytes(
            data[at..at + 8]
                .try_into()
                .map_err(|_| DecodeError::Truncated(at))?,
        ));
    }
    for i in 0..n {
        let at = 4 + n * 8 + i * 8;
        values.push(f64::from_bits(u64::from_le_bytes(
            data[at..at + 8]
                .try_into()
                .map_err(|_| DecodeError::Truncated(at))?,
        )));
    }
    Ok(())
}
