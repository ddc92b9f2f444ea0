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
