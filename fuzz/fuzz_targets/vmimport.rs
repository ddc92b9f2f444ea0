//! JSON-lines import: any input parses or fails cleanly, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = strata_insert::vmimport::parse(data);
});
