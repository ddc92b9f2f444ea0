//! Request body decompression with a bound on the decompressed size, so that a
//! small compressed body cannot expand without limit in memory.
//!
//! Snappy is the block format (not the framing format): a varint of the
//! decompressed length, then the compressed elements. The length is read
//! and checked against the limit before anything is allocated.

use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}: want gzip, zstd, snappy or identity")]
    UnsupportedEncoding(String),
    #[error(
        "request body exceeds the limit of {limit} bytes{stage}; split the request or raise --insert.max-body-bytes"
    )]
    TooLarge { limit: u64, stage: &'static str },
    #[error("cannot decompress {encoding} request body: {source}")]
    Corrupt {
        encoding: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl DecodeError {
    /// Body bigger than allowed, before or after decompression.
    pub fn too_large(limit: u64) -> Self {
        DecodeError::TooLarge { limit, stage: "" }
    }
}

/// Decodes `body` according to the `Content-Encoding` header value. Returns at
/// most `limit` bytes, or `TooLarge`.
pub fn decode_body(
    encoding: Option<&str>,
    body: &[u8],
    limit: u64,
) -> Result<Vec<u8>, DecodeError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() as u64 > limit {
                return Err(DecodeError::too_large(limit));
            }
            Ok(body.to_vec())
        }
        Some("gzip") | Some("x-gzip") => read_bounded(
            flate2::read::MultiGzDecoder::new(body),
            "gzip",
            limit,
            body.len(),
        ),
        Some("zstd") => {
            let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(|source| {
                DecodeError::Corrupt {
                    encoding: "zstd",
                    source,
                }
            })?;
            read_bounded(decoder, "zstd", limit, body.len())
        }
        Some("snappy") => decode_snappy(body, limit),
        Some(other) => Err(DecodeError::UnsupportedEncoding(other.to_string())),
    }
}

/// Snappy block format, refused with `TooLarge` when the length its header
/// claims is over `limit`, before the output is allocated.
pub fn decode_snappy(body: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let corrupt = |e: snap::Error| DecodeError::Corrupt {
        encoding: "snappy",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    let claimed = match snap::raw::decompress_len(body) {
        Ok(n) => n as u64,
        // Over what the format allows (4 GiB): too large by any limit.
        Err(snap::Error::TooBig { given, .. }) => given,
        Err(e) => return Err(corrupt(e)),
    };
    if claimed > limit {
        return Err(DecodeError::TooLarge {
            limit,
            stage: " after decompression",
        });
    }
    let mut out = vec![0; usize::try_from(claimed).unwrap_or(usize::MAX)];
    let written = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(corrupt)?;
    out.truncate(written);
    Ok(out)
}

fn read_bounded(
    reader: impl Read,
    encoding: &'static str,
    limit: u64,
    compressed_len: usize,
) -> Result<Vec<u8>, DecodeError> {
    // Reading one byte past the limit tells "exactly at the limit" from "over it".
    let guess = (compressed_len as u64).saturating_mul(8).min(limit);
    let mut out = Vec::with_capacity(usize::try_from(guess).unwrap_or(0));
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| DecodeError::Corrupt { encoding, source })?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge {
            limit,
            stage: " after decompression",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("write to vec");
        enc.finish().expect("finish gzip")
    }

    #[test]
    fn identity_gzip_and_zstd_decode() {
        let data = b"{\"metric\":{\"a\":\"b\"}}\n".repeat(100);
        assert_eq!(decode_body(None, &data, 1 << 20).expect("identity"), data);
        assert_eq!(
            decode_body(Some("identity"), &data, 1 << 20).expect("identity"),
            data
        );
        assert_eq!(
            decode_body(Some("GZIP"), &gzip(&data), 1 << 20).expect("gzip"),
            data
        );
        let z = zstd::encode_all(&data[..], 1).expect("zstd");
        assert_eq!(decode_body(Some("zstd"), &z, 1 << 20).expect("zstd"), data);
    }

    #[test]
    fn limit_applies_after_decompression() {
        let data = vec![b'x'; 10_000];
        let limit = 9_999;
        assert!(matches!(
            decode_body(Some("gzip"), &gzip(&data), limit),
            Err(DecodeError::TooLarge { .. })
        ));
        let z = zstd::encode_all(&data[..], 1).expect("zstd");
        assert!(matches!(
            decode_body(Some("zstd"), &z, limit),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_body(None, &data, limit),
            Err(DecodeError::TooLarge { .. })
        ));
        // Exactly at the limit is accepted.
        assert_eq!(
            decode_body(Some("gzip"), &gzip(&data), 10_000)
                .expect("at limit")
                .len(),
            10_000
        );
    }

    #[test]
    fn snappy_decodes_and_is_bounded_before_allocation() {
        let data = b"remote write body ".repeat(1000);
        let compressed = snap::raw::Encoder::new()
            .compress_vec(&data)
            .expect("snappy");
        assert_eq!(
            decode_body(Some("snappy"), &compressed, 1 << 20).expect("snappy"),
            data
        );
        assert!(matches!(
            decode_body(Some("snappy"), &compressed, data.len() as u64 - 1),
            Err(DecodeError::TooLarge { .. })
        ));
        // Headers claiming 4 GiB - 1 and 4 GiB (over the format's maximum)
        // with no data behind them: refused on the claim alone.
        for bomb in [
            &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00][..],
            &[0x80, 0x80, 0x80, 0x80, 0x10, 0x00],
        ] {
            assert!(matches!(
                decode_snappy(bomb, 64 << 20),
                Err(DecodeError::TooLarge { limit, .. }) if limit == 64 << 20
            ));
        }
        // A claim within the limit but data that does not fill it.
        let short = [0x0a, 0x00];
        assert!(matches!(
            decode_snappy(&short, 100),
            Err(DecodeError::Corrupt {
                encoding: "snappy",
                ..
            })
        ));
        assert!(matches!(
            decode_snappy(&[0xff; 11], 100),
            Err(DecodeError::Corrupt { .. })
        ));
    }

    #[test]
    fn bad_input_is_reported() {
        assert!(matches!(
            decode_body(Some("br"), b"x", 100),
            Err(DecodeError::UnsupportedEncoding(e)) if e == "br"
        ));
        assert!(matches!(
            decode_body(Some("gzip"), b"not gzip at all", 100),
            Err(DecodeError::Corrupt {
                encoding: "gzip",
                ..
            })
        ));
        assert!(matches!(
            decode_body(Some("zstd"), b"not zstd at all", 100),
            Err(DecodeError::Corrupt {
                encoding: "zstd",
                ..
            })
        ));
    }
}
