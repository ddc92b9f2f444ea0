//! Prometheus text and OpenMetrics: any input parses or fails cleanly in
//! both formats, never panics.
#![no_main]

use strata_insert::promtext::{Format, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Format::detect(None, data);
    let _ = parse(data, 1_700_000_000_000, Format::Text);
    let _ = parse(data, 1_700_000_000_000, Format::OpenMetrics);
});
