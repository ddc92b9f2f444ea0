//! InfluxDB line protocol: any input parses or fails cleanly, never panics.
//! The first byte picks the precision, so that every conversion is reached.
#![no_main]

use strata_insert::influx::{Options, Precision, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (precision, body) = match data.split_first() {
        Some((first, rest)) => {
            let precision = match first % 6 {
                0 => Precision::Nanoseconds,
                1 => Precision::Microseconds,
                2 => Precision::Milliseconds,
                3 => Precision::Seconds,
                4 => Precision::Minutes,
                _ => Precision::Hours,
            };
            (precision, rest)
        }
        None => (Precision::Nanoseconds, data),
    };
    let options = Options {
        precision,
        default_timestamp_ms: 1_700_000_000_000,
        db: "fuzz".to_string(),
    };
    let _ = parse(body, &options);
});
