//! Runs parsed commands: loads series into a real storage instance, evaluates
//! every `eval` with the PromQL engine and checks the results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_storage::wal::SyncMode;
use strata_storage::{
    Config, Sample as StorageSample, SeriesSamples, Storage, StorageError, Tenant,
};

use crate::promql::value::{Labels, Sample, Value};
use crate::promql::{Engine, QueryOptions};
use crate::source::StorageSource;

use super::atmod::at_variants;
use super::compare::{self, format_expected, format_value};
use super::parse::{
    Command, Eval, EvalTime, Expectation, ParseError, SeqValue, SeriesLine, SeriesValues,
    parse_file,
};

/// Why a file could not be run at all (as opposed to a failing case).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot parse test file: {0}")]
    Parse(#[from] ParseError),
    #[error("line {line}: cannot load series: {source}")]
    Storage { line: usize, source: StorageError },
    #[error("line {line}: storage rejected {rejected} samples of the load, first: {first}")]
    Rejected {
        line: usize,
        rejected: u64,
        first: String,
    },
}

/// What happened to one `eval`.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    Failed {
        reason: String,
        expected: String,
        got: String,
    },
    Skipped {
        reason: String,
    },
}

/// The outcome of the `eval` at `line`.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseResult {
    pub line: usize,
    pub query: String,
    pub outcome: Outcome,
    /// What was not checked and why.
    pub notes: Vec<String>,
}

/// When loaded samples are flushed to parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// After every load.
    Always,
    /// Never: queries read in-memory rows only.
    Never,
    /// After the 1st, 3rd, ... load of a file.
    EveryOtherLoad,
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct Runner {
    pub engine: Engine,
    /// Which loads are written to parts before evaluating (the others stay
    /// in the in-memory rows). Default: every other load, so both read paths
    /// and their merge are exercised.
    pub flush: Flush,
    /// Also evaluate each instant eval as a range query over
    /// `[t-1m, t+1m]` by 1m and check its middle step. Default: true.
    pub check_range_mode: bool,
    /// Also evaluate each instant eval with `@ <t>` added to its selectors
    /// at other times (see `atmod`). Default: true.
    pub check_at_modifier: bool,
    /// Also evaluate every step of each range eval as an instant query.
    /// Default: true.
    pub check_range_steps: bool,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            engine: Engine::default(),
            flush: Flush::EveryOtherLoad,
            check_range_mode: true,
            check_at_modifier: true,
            check_range_steps: true,
        }
    }
}

/// A storage instance for test data: the clock stands at the epoch and the
/// time limits span centuries both ways, so test timestamps (from 0 on) are
/// all accepted. One per section of a file (between `clear`s).
pub struct TestStorage {
    pub storage: Arc<Storage>,
    pub source: StorageSource,
}

impl TestStorage {
    /// Opens an empty storage in `dir`.
    pub fn open(dir: PathBuf) -> Result<TestStorage, StorageError> {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
        let config = Config {
            data_dir: dir,
            sync: strata_storage::config::SyncSetting(SyncMode::None),
            retention: CENTURY,
            max_future: CENTURY,
            // Tests flush explicitly; no background flush in between.
            flush_interval: Duration::from_secs(3600),
            ..Config::default()
        };
        let storage = Storage::open_with_clock(config, &mut Registry::default(), Arc::new(|| 0))?;
        let source = StorageSource::new(storage.clone(), Tenant::DEFAULT);
        Ok(TestStorage { storage, source })
    }

    pub fn close(self) {
        // A close error leaves nothing behind that a later section reads.
        let _ = self.storage.close();
    }
}

/// The storage of the current section, opened on first use.
fn section<'a>(
    db: &'a mut Option<TestStorage>,
    sections: &mut usize,
    scratch: &Path,
    line: usize,
) -> Result<&'a TestStorage, RunError> {
    let storage = match db.take() {
        Some(storage) => storage,
        None => {
            *sections += 1;
            let dir = scratch.join(format!("section-{sections}"));
            TestStorage::open(dir).map_err(|source| RunError::Storage { line, source })?
        }
    };
    Ok(db.insert(storage))
}

impl Runner {
    /// Parses and runs `text`, with storage directories under `scratch`.
    pub fn run_text(&self, text: &str, scratch: &Path) -> Result<Vec<CaseResult>, RunError> {
        let commands = parse_file(text)?;
        self.run(&commands, scratch)
    }

    /// Runs `commands`, with storage directories under `scratch`.
    pub fn run(&self, commands: &[Command], scratch: &Path) -> Result<Vec<CaseResult>, RunError> {
        let mut results = Vec::new();
        let mut sections = 0;
        let mut loads = 0;
        let mut db: Option<TestStorage> = None;
        // Set while native histogram data is loaded: evals read it and are
        // skipped until the next clear.
        let mut histograms: Option<String> = None;
        for command in commands {
            match command {
                Command::Clear { .. } => {
                    if let Some(db) = db.take() {
                        db.close();
                    }
                    histograms = None;
                }
                Command::Load {
                    line,
                    interval_ms,
                    series,
                    with_nhcb,
                } => {
                    let db = section(&mut db, &mut sections, scratch, *line)?;
                    if *with_nhcb {
                        histograms.get_or_insert_with(|| {
                            format!("load_with_nhcb at line {line} (native histograms)")
                        });
                    }
                    if let Some(h) = series
                        .iter()
                        .find(|s| matches!(s.values, SeriesValues::Histograms(_)))
                    {
                        histograms.get_or_insert_with(|| {
                            format!("native histogram samples loaded at line {}", h.line)
                        });
                    }
                    loads += 1;
                    self.load(db, loads, *line, *interval_ms, series)?;
                }
                Command::Eval(eval) => {
                    let mut notes = Vec::new();
                    let outcome = if let Some(reason) = &eval.unsupported {
                        Outcome::Skipped {
                            reason: reason.clone(),
                        }
                    } else if let Some(reason) = &histograms {
                        Outcome::Skipped {
                            reason: reason.clone(),
                        }
                    } else {
                        // Before any load, an empty storage answers.
                        let db = section(&mut db, &mut sections, scratch, eval.line)?;
                        self.eval(db, eval, &mut notes)
                    };
                    results.push(CaseResult {
                        line: eval.line,
                        query: eval.query.clone(),
                        outcome,
                        notes,
                    });
                }
            }
        }
        if let Some(db) = db.take() {
            db.close();
        }
        Ok(results)
    }

    /// Adds the samples of one `load` block (`load_number` counts the loads
    /// of the file from 1, for [`Flush::EveryOtherLoad`]).
    pub fn load(
        &self,
        db: &TestStorage,
        load_number: usize,
        line: usize,
        interval_ms: i64,
        series: &[SeriesLine],
    ) -> Result<(), RunError> {
        // A label set given twice in one block keeps its last line.
        let mut by_labels: BTreeMap<&Labels, &[SeqValue]> = BTreeMap::new();
        for s in series {
            if let SeriesValues::Floats(v) = &s.values {
                by_labels.insert(&s.labels, v);
            }
        }
        let batch: Vec<SeriesSamples> = by_labels
            .into_iter()
            .map(|(labels, values)| SeriesSamples {
                labels: labels.clone(),
                samples: values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match v {
                        SeqValue::Float(f) => Some(StorageSample::new(i as i64 * interval_ms, *f)),
                        SeqValue::Omitted => None,
                    })
                    .collect(),
            })
            .collect();
        let storage_err = |source| RunError::Storage { line, source };
        let outcome = db
            .storage
            .add(Tenant::DEFAULT, &batch)
            .map_err(storage_err)?;
        if outcome.rejected > 0 {
            return Err(RunError::Rejected {
                line,
                rejected: outcome.rejected,
                first: outcome.first_rejection.map_or_else(String::new, |r| {
                    format!("{} at {} ({})", r.series, r.timestamp, r.reason.as_str())
                }),
            });
        }
        let flush = match self.flush {
            Flush::Always => true,
            Flush::Never => false,
            Flush::EveryOtherLoad => load_number % 2 == 1,
        };
        if flush {
            db.storage.flush().map_err(storage_err)?;
        }
        Ok(())
    }

    /// Runs `eval`, then its `@` variants; notes are things the reader of
    /// the results should know (e.g. variants that could not be made).
    fn eval(&self, db: &TestStorage, eval: &Eval, notes: &mut Vec<String>) -> Outcome {
        let outcome = self.eval_query(db, &eval.query, eval.time, &eval.expect, notes, true);
        let at = match eval.time {
            EvalTime::Instant { at } => at,
            EvalTime::Range { start, end, step } => {
                if outcome != Outcome::Passed || !self.check_range_steps {
                    return outcome;
                }
                return self.check_steps_as_instant(db, eval, start, end, step);
            }
        };
        if outcome != Outcome::Passed || !self.check_at_modifier {
            return outcome;
        }
        let variants = match at_variants(&eval.query, at) {
            Ok(Some(v)) => v,
            Ok(None) => return outcome,
            Err(e) => {
                notes.push(format!("no @ variants: {e}"));
                return outcome;
            }
        };
        for t in variants.times {
            let time = EvalTime::Instant { at: t };
            if let Outcome::Failed {
                reason,
                expected,
                got,
            } = self.eval_query(
                db,
                &variants.query,
                time,
                &eval.expect,
                &mut Vec::new(),
                true,
            ) {
                return Outcome::Failed {
                    reason: format!("@ variant `{}` evaluated at {t}: {reason}", variants.query),
                    expected,
                    got,
                };
            }
        }
        Outcome::Passed
    }

    /// Every step of a range query must answer what an instant query at
    /// that time answers.
    fn check_steps_as_instant(
        &self,
        db: &TestStorage,
        eval: &Eval,
        start: i64,
        end: i64,
        step: i64,
    ) -> Outcome {
        // start() and end() mean the step itself in an instant query.
        if eval.query.contains("start()") || eval.query.contains("end()") {
            return Outcome::Passed;
        }
        let mut t = start;
        let mut i = 0;
        while t <= end {
            let series = eval
                .expect
                .series
                .iter()
                .filter_map(|s| match &s.values {
                    SeriesValues::Floats(v) => match v.get(i) {
                        Some(SeqValue::Float(f)) => Some(SeriesLine {
                            values: SeriesValues::Floats(vec![SeqValue::Float(*f)]),
                            ..s.clone()
                        }),
                        _ => None,
                    },
                    SeriesValues::Histograms(_) => None,
                })
                .collect();
            let expect = Expectation {
                series,
                ..Expectation::default()
            };
            let time = EvalTime::Instant { at: t };
            if let Outcome::Failed {
                reason,
                expected,
                got,
            } = self.eval_query(db, &eval.query, time, &expect, &mut Vec::new(), false)
            {
                return Outcome::Failed {
                    reason: format!("step {t} of the range as an instant query: {reason}"),
                    expected,
                    got,
                };
            }
            t += step;
            i += 1;
        }
        Outcome::Passed
    }

    fn eval_query(
        &self,
        db: &TestStorage,
        query: &str,
        time: EvalTime,
        expect: &Expectation,
        notes: &mut Vec<String>,
        in_range_mode_too: bool,
    ) -> Outcome {
        let opts = QueryOptions::default();
        let result = match time {
            EvalTime::Instant { at } => self.engine.instant(&db.source, query, at, &opts),
            EvalTime::Range { start, end, step } => self
                .engine
                .range(&db.source, query, start, end, step, &opts),
        };
        let failed = |reason: String, got: String| Outcome::Failed {
            reason,
            expected: format_expected(expect),
            got,
        };
        let result = match result {
            Err(e) if expect.fail => {
                let msg = e.to_string();
                if let Some(want) = &expect.fail_message
                    && *want != msg
                {
                    return failed(
                        format!("expected error message {want:?}"),
                        format!("error: {msg}"),
                    );
                }
                if let Some(re) = &expect.fail_regexp {
                    match regex::Regex::new(re) {
                        Ok(re) if re.is_match(&msg) => {}
                        Ok(_) => {
                            return failed(
                                format!("expected an error matching {re:?}"),
                                format!("error: {msg}"),
                            );
                        }
                        Err(e) => return failed(format!("invalid regexp {re:?}: {e}"), msg),
                    }
                }
                return Outcome::Passed;
            }
            Err(e) => return failed("query failed".to_string(), format!("error: {e}")),
            Ok(r) if expect.fail => {
                return failed("expected an error".to_string(), format_value(&r.value));
            }
            Ok(r) => r,
        };
        if expect.warnings == Some(true) && result.warnings.is_empty() {
            return failed(
                "expected warnings, got none".to_string(),
                format_value(&result.value),
            );
        }
        if expect.warnings.is_none() && !result.warnings.is_empty() {
            notes.push(format!(
                "unexpected warnings: {}",
                result.warnings.join("; ")
            ));
        }
        let checked = match time {
            EvalTime::Instant { .. } => compare::check_instant(expect, &result.value),
            EvalTime::Range { start, end, step } => {
                compare::check_range(expect, start, end, step, &result.value)
            }
        };
        if let Err(reason) = checked {
            return failed(reason, format_value(&result.value));
        }
        if let EvalTime::Instant { at } = time
            && self.check_range_mode
            && in_range_mode_too
        {
            return self.check_instant_in_range_mode(db, query, expect, at, &result.value);
        }
        Outcome::Passed
    }

    /// An instant query must answer what the step at the same time of a range
    /// query answers.
    fn check_instant_in_range_mode(
        &self,
        db: &TestStorage,
        query: &str,
        expect: &Expectation,
        at: i64,
        instant: &Value,
    ) -> Outcome {
        if matches!(instant, Value::String { .. } | Value::Matrix(_)) || expect.ordered {
            // Range queries cannot return these; ordering is not defined for them.
            return Outcome::Passed;
        }
        let failed = |reason: String, got: String| Outcome::Failed {
            reason: format!(
                "in range mode [{}, {}] step 60000: {reason}",
                at - 60_000,
                at + 60_000
            ),
            expected: format_expected(expect),
            got,
        };
        let opts = QueryOptions::default();
        let result =
            match self
                .engine
                .range(&db.source, query, at - 60_000, at + 60_000, 60_000, &opts)
            {
                Ok(r) => r,
                Err(e) => return failed("query failed".to_string(), format!("error: {e}")),
            };
        let Value::Matrix(m) = &result.value else {
            return failed(
                format!(
                    "a range query must return a matrix, got a {}",
                    result.value.type_name()
                ),
                format_value(&result.value),
            );
        };
        let vector: Vec<Sample> = m
            .iter()
            .filter_map(|s| {
                s.points.iter().find(|p| p.t == at).map(|p| Sample {
                    labels: s.labels.clone(),
                    t: p.t,
                    v: p.v,
                })
            })
            .collect();
        let as_instant = match instant {
            Value::Scalar { .. } => match vector.first() {
                Some(s) => Value::Scalar { t: at, v: s.v },
                None => {
                    return failed(
                        "no point at the middle step".to_string(),
                        format_value(&result.value),
                    );
                }
            },
            _ => Value::Vector(vector),
        };
        match compare::check_instant(expect, &as_instant) {
            Ok(()) => Outcome::Passed,
            Err(reason) => failed(reason, format_value(&result.value)),
        }
    }
}
