//! The data both servers receive: import request bodies, built once and sent
//! byte for byte to each, and the expected series to check exports against.
//!
//! Timestamps end a minute before now, so that retention and future limits
//! of either server accept every sample with their default settings.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata_storage::encoding::synthetic::{NodeExporter, Series, load_import_jsonl_zst};

use super::CompareError;

/// How far before now the last sample lies.
const END_BEFORE_NOW_MS: i64 = 60_000;

/// One import request body.
#[derive(Clone, Debug)]
pub struct Body {
    pub bytes: Bytes,
    pub samples: u64,
}

/// What an export must return for one series.
#[derive(Debug)]
struct Expected {
    /// Shared by the series of one synthetic host (they are scraped together).
    timestamps: Arc<[i64]>,
    values: Vec<f64>,
}

/// The request bodies and the expected content of an export of everything.
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    pub bodies: Vec<Body>,
    pub series: u64,
    pub samples: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Total size of the bodies.
    pub json_bytes: u64,
    expected: HashMap<u64, Expected>,
}

/// How the bodies are cut.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// A body is closed once it holds at least this many samples (a series
    /// line is never split).
    pub samples_per_body: u64,
}

impl Dataset {
    /// A node_exporter fleet: `hosts` x ~460 series, `points` samples each,
    /// one every `interval_ms`, the last one a minute before `now_ms`.
    pub fn synthetic(
        hosts: u32,
        points: usize,
        interval_ms: i64,
        seed: u64,
        now_ms: i64,
        batching: Batching,
    ) -> Dataset {
        let span = interval_ms * points as i64;
        let fleet = NodeExporter {
            hosts,
            points,
            interval_ms,
            // Hosts are shifted by up to one interval: stay clear of now.
            start_ms: now_ms - END_BEFORE_NOW_MS - span,
            seed,
        };
        let mut builder = Builder::new(batching);
        for host in 0..hosts {
            let mut shared: Option<Arc<[i64]>> = None;
            for series in fleet.host(host) {
                let timestamps = match &shared {
                    Some(t) if **t == *series.timestamps => t.clone(),
                    _ => {
                        let t: Arc<[i64]> = series.timestamps.clone().into();
                        shared = Some(t.clone());
                        t
                    }
                };
                builder.add(&series, timestamps);
            }
        }
        builder.finish(format!(
            "node_exporter fleet: {hosts} hosts, {points} points at {} s",
            interval_ms as f64 / 1000.0
        ))
    }

    /// A recorded import file, shifted in time so that its last sample lies
    /// a minute before `now_ms` (by whole seconds: the scrape phase stays).
    pub fn from_import_file(
        path: &Path,
        now_ms: i64,
        batching: Batching,
    ) -> Result<Dataset, CompareError> {
        let series = load_import_jsonl_zst(path).map_err(|source| CompareError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let last = series
            .iter()
            .filter_map(|s| s.timestamps.last())
            .max()
            .copied()
            .ok_or_else(|| CompareError::Dataset(format!("{} has no samples", path.display())))?;
        let shift = (now_ms - END_BEFORE_NOW_MS - last).div_euclid(1000) * 1000;
        let mut builder = Builder::new(batching);
        for mut s in series {
            s.timestamps.iter_mut().for_each(|t| *t += shift);
            let timestamps: Arc<[i64]> = s.timestamps.clone().into();
            builder.add(&s, timestamps);
        }
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        Ok(builder.finish(format!("real scrape {file}")))
    }

    /// Compares one exported line with the expectation.
    pub fn check_line(&self, line: &ExportLine, check: &mut Check) {
        let key = series_key(line.metric.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let Some(expected) = self.expected.get(&key) else {
            check.unexpected_series += 1;
            check.note(format!("unexpected series {:?}", line.metric));
            return;
        };
        let got = check.seen.entry(key).or_insert(0);
        *got += line.timestamps.len() as u64;
        for (t, v) in line.timestamps.iter().zip(&line.values) {
            let Ok(i) = expected.timestamps.binary_search(t) else {
                check.unexpected_timestamps += 1;
                check.note(format!("unexpected timestamp {t} in {:?}", line.metric));
                continue;
            };
            let want = expected.values[i];
            if !same_value(*v, want) {
                check.changed_values += 1;
                let rel = if want == 0.0 || !want.is_finite() || !v.is_finite() {
                    if v.is_nan() != want.is_nan() {
                        f64::INFINITY
                    } else {
                        (v - want).abs()
                    }
                } else {
                    ((v - want) / want).abs()
                };
                if rel > check.max_relative_error {
                    check.max_relative_error = rel;
                    check.worst_value = Some((want, *v));
                }
            }
        }
    }

    /// Finishes a check: series missing or with the wrong sample count.
    pub fn finish_check(&self, check: &mut Check) {
        for (key, expected) in &self.expected {
            match check.seen.get(key) {
                None => check.missing_series += 1,
                Some(&n) if n != expected.values.len() as u64 => {
                    check.wrong_sample_counts += 1;
                    check.note(format!(
                        "a series has {n} samples instead of {}",
                        expected.values.len()
                    ));
                }
                Some(_) => {}
            }
        }
    }
}

/// Bit-exact, except that every NaN equals every NaN (exports spell them all
/// `"NaN"`).
fn same_value(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// One line of an export.
#[derive(Debug, serde::Deserialize)]
pub struct ExportLine {
    pub metric: BTreeMap<String, String>,
    #[serde(deserialize_with = "deserialize_values")]
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

fn deserialize_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Value {
        Number(f64),
        Text(String),
    }
    let raw: Vec<Value> = serde::Deserialize::deserialize(d)?;
    raw.into_iter()
        .map(|v| match v {
            Value::Number(f) => Ok(f),
            Value::Text(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Inf" | "+Inf" => Ok(f64::INFINITY),
                "-Inf" => Ok(f64::NEG_INFINITY),
                other => other
                    .parse()
                    .map_err(|e| serde::de::Error::custom(format!("value {other:?}: {e}"))),
            },
        })
        .collect()
}

/// What a check of one export found.
#[derive(Debug, Default)]
pub struct Check {
    pub lines: u64,
    pub samples: u64,
    pub unexpected_series: u64,
    pub missing_series: u64,
    pub wrong_sample_counts: u64,
    pub unexpected_timestamps: u64,
    /// Samples whose value differs from the one sent (not an error: a store
    /// may round values).
    pub changed_values: u64,
    pub max_relative_error: f64,
    /// (sent, exported) of the value with the largest relative error.
    pub worst_value: Option<(f64, f64)>,
    /// The first few problems, for the error message.
    pub notes: Vec<String>,
    seen: HashMap<u64, u64>,
}

impl Check {
    fn note(&mut self, note: String) {
        if self.notes.len() < 5 {
            self.notes.push(note);
        }
    }

    pub fn series(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Whether the export holds exactly the series and timestamps sent.
    pub fn is_complete(&self) -> bool {
        self.unexpected_series == 0
            && self.missing_series == 0
            && self.wrong_sample_counts == 0
            && self.unexpected_timestamps == 0
    }
}

/// Identity of a series: its labels with a value, in name order, hashed.
/// 64 bits are plenty to tell a few million series apart in a benchmark.
fn series_key<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut sorted: Vec<(&str, &str)> = labels.filter(|(_, v)| !v.is_empty()).collect();
    sorted.sort_unstable();
    let mut h = DefaultHasher::new();
    sorted.hash(&mut h);
    h.finish()
}

/// Cuts series into bodies of JSON lines.
struct Builder {
    batching: Batching,
    bodies: Vec<Body>,
    current: Vec<u8>,
    current_samples: u64,
    series: u64,
    samples: u64,
    first_ms: i64,
    last_ms: i64,
    expected: HashMap<u64, Expected>,
}

impl Builder {
    fn new(batching: Batching) -> Builder {
        Builder {
            batching,
            bodies: Vec::new(),
            current: Vec::new(),
            current_samples: 0,
            series: 0,
            samples: 0,
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            expected: HashMap::new(),
        }
    }

    fn add(&mut self, series: &Series, timestamps: Arc<[i64]>) {
        if series.timestamps.is_empty() {
            return;
        }
        write_line(&mut self.current, series);
        let n = series.timestamps.len() as u64;
        self.current_samples += n;
        self.series += 1;
        self.samples += n;
        self.first_ms = self.first_ms.min(series.timestamps[0]);
        self.last_ms = self
            .last_ms
            .max(series.timestamps[series.timestamps.len() - 1]);
        let key = series_key(series.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        self.expected.insert(
            key,
            Expected {
                timestamps,
                values: series.values.clone(),
            },
        );
        if self.current_samples >= self.batching.samples_per_body {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.current_samples > 0 {
            self.bodies.push(Body {
                bytes: Bytes::from(std::mem::take(&mut self.current)),
                samples: self.current_samples,
            });
            self.current_samples = 0;
        }
    }

    fn finish(mut self, name: String) -> Dataset {
        self.cut();
        Dataset {
            name,
            json_bytes: self.bodies.iter().map(|b| b.bytes.len() as u64).sum(),
            bodies: self.bodies,
            series: self.series,
            samples: self.samples,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            expected: self.expected,
        }
    }
}

/// Appends one import line. Non-finite values are strings, as the format
/// wants; finite ones are written in their shortest exact form.
fn write_line(out: &mut Vec<u8>, series: &Series) {
    let json = |out: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    };
    out.extend_from_slice(b"{\"metric\":{");
    for (i, (name, value)) in series.labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json(out, name);
        out.push(b':');
        json(out, value);
    }
    out.extend_from_slice(b"},\"values\":[");
    for (i, v) in series.values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if v.is_nan() {
            out.extend_from_slice(b"\"NaN\"");
        } else if v.is_infinite() {
            out.extend_from_slice(if *v > 0.0 { b"\"Inf\"" } else { b"\"-Inf\"" });
        } else {
            serde_json::to_writer(&mut *out, v).expect("writing to a Vec cannot fail");
        }
    }
    out.extend_from_slice(b"],\"timestamps\":[");
    for (i, t) in series.timestamps.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(t.to_string().as_bytes());
    }
    out.extend_from_slice(b"]}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], timestamps: &[i64], values: &[f64]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            timestamps: timestamps.to_vec(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn lines_are_import_json() {
        let mut out = Vec::new();
        write_line(
            &mut out,
            &series(
                &[("__name__", "up"), ("job", "a\"b")],
                &[1, 2, 3, 4],
                &[0.1, f64::NAN, f64::NEG_INFINITY, 1e300],
            ),
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            concat!(
                r#"{"metric":{"__name__":"up","job":"a\"b"},"values":[0.1,"NaN","-Inf",1e+300],"#,
                r#""timestamps":[1,2,3,4]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn bodies_hold_whole_series_and_checks_find_differences() {
        let mut b = Builder::new(Batching {
            samples_per_body: 3,
        });
        for name in ["a", "b", "c"] {
            let s = series(&[("__name__", name)], &[10, 20], &[1.0, 2.0]);
            let t: Arc<[i64]> = s.timestamps.clone().into();
            b.add(&s, t);
        }
        let d = b.finish("t".into());
        assert_eq!(
            d.bodies.iter().map(|b| b.samples).collect::<Vec<_>>(),
            vec![4, 2]
        );
        assert_eq!((d.series, d.samples, d.first_ms, d.last_ms), (3, 6, 10, 20));

        let line = |name: &str, timestamps: Vec<i64>, values: Vec<f64>| ExportLine {
            metric: [("__name__".to_string(), name.to_string())].into(),
            values,
            timestamps,
        };
        let mut check = Check::default();
        // A series split over two lines is fine; a rounded value is counted.
        d.check_line(&line("a", vec![10], vec![1.0]), &mut check);
        d.check_line(&line("a", vec![20], vec![2.0000001]), &mut check);
        d.check_line(&line("b", vec![10, 20], vec![1.0, 2.0]), &mut check);
        d.finish_check(&mut check);
        assert_eq!(check.missing_series, 1);
        assert_eq!(check.changed_values, 1);
        assert!(check.max_relative_error > 0.0 && check.max_relative_error < 1e-6);
        assert!(!check.is_complete());

        let mut check = Check::default();
        d.check_line(&line("c", vec![10, 30], vec![1.0, 2.0]), &mut check);
        d.check_line(&line("d", vec![10], vec![1.0]), &mut check);
        assert_eq!(
            (check.unexpected_timestamps, check.unexpected_series),
            (1, 1)
        );
    }

    #[test]
    fn series_keys_ignore_label_order_and_empty_values() {
        assert_eq!(
            series_key([("b", "2"), ("a", "1")].into_iter()),
            series_key([("a", "1"), ("c", ""), ("b", "2")].into_iter())
        );
        assert_ne!(
            series_key([("a", "1")].into_iter()),
            series_key([("a", "2")].into_iter())
        );
    }
}
