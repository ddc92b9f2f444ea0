//! Remote write 1.0: any input decompresses (snappy, bounded) and parses, or
//! fails cleanly, never panics. The raw input is parsed as a protobuf body
//! too, so mutations need not keep the snappy framing valid to reach the
//! parser.
#![no_main]

use strata_insert::decode::decode_snappy;
use strata_insert::remotewrite::parse_v1;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(body) = decode_snappy(data, 1 << 20) {
        let _ = parse_v1(&body);
    }
    let _ = parse_v1(data);
});
