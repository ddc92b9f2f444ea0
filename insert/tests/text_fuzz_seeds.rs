//! Every seed of the text protocols' fuzz corpora goes through its parser:
//! seeds named `bad*` must be rejected, all others accepted. Seeds whose
//! name holds `openmetrics` are parsed as OpenMetrics.

use std::path::{Path, PathBuf};

use strata_insert::influx::{self, Options, Precision};
use strata_insert::promtext::{self, Format};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let body = std::fs::read(&path).expect("read seed");
            (name, body)
        })
        .collect()
}

#[test]
fn influx_seeds() {
    let options = Options {
        precision: Precision::Nanoseconds,
        default_timestamp_ms: 1_700_000_000_000,
        db: "seeds".into(),
    };
    for (name, body) in seeds("influx") {
        let result = influx::parse(&body, &options);
        if name.starts_with("bad") {
            assert!(result.is_err(), "{name} should be rejected");
        } else {
            let batch = result.unwrap_or_else(|f| panic!("{name}: {}", f.error));
            assert!(batch.parsed.rows > 0, "{name} holds no sample");
        }
    }
}

#[test]
fn prom_text_seeds() {
    for (name, body) in seeds("prom_text") {
        let mut format = Format::detect(None, &body);
        if name.starts_with("openmetrics") {
            assert_eq!(format, Format::OpenMetrics, "{name}");
        }
        // Content after `# EOF` makes a body look like the text format.
        if name.contains("openmetrics") {
            format = Format::OpenMetrics;
        }
        let result = promtext::parse(&body, 1_700_000_000_000, format);
        if name.starts_with("bad") {
            assert!(result.is_err(), "{name} should be rejected");
        } else {
            let parsed = result.unwrap_or_else(|f| panic!("{name}: {}", f.error));
            assert!(parsed.rows > 0, "{name} holds no sample");
        }
    }
}

/// Splitmix64, so that a failing mutation is replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that steer the parsers into their less common branches.
const INTERESTING: &[u8] = b"\\\"=, \t\r\n#{}.-+eEiutfTF0123456789\xc3\xa9\xff";

/// A small stand-in for the fuzz targets that runs everywhere: mutated seeds
/// (bytes replaced, inserted, removed, lines cut) must never panic a parser.
#[test]
fn mutated_seeds_never_panic() {
    let options = Options {
        precision: Precision::Seconds,
        default_timestamp_ms: 0,
        db: String::new(),
    };
    let mut rng = Rng(0x5EED);
    for target in ["influx", "prom_text"] {
        for (name, seed) in seeds(target) {
            for round in 0..300 {
                let mut body = seed.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(body.len() + 1);
                    let byte = INTERESTING[rng.below(INTERESTING.len())];
                    match rng.below(4) {
                        0 if at < body.len() => body[at] = byte,
                        1 => body.insert(at, byte),
                        2 if at < body.len() => {
                            body.remove(at);
                        }
                        _ => body.truncate(at),
                    }
                }
                let context = format!("{target}/{name} round {round}: {body:?}");
                let run = std::panic::catch_unwind(|| {
                    let _ = influx::parse(&body, &options);
                    let _ = promtext::parse(&body, 0, Format::Text);
                    let _ = promtext::parse(&body, 0, Format::OpenMetrics);
                });
                assert!(run.is_ok(), "panicked on {context}");
            }
        }
    }
}
