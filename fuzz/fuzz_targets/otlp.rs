//! OTLP metrics: any input decodes and translates or fails cleanly, never
//! panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = strata_insert::otlp::parse(data);
});
