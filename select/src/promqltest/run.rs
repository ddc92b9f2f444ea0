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

use super::compare::{self, format_expected, format_value};
use super::parse::{Command, Eval, EvalTime, ParseError, SeqValue, SeriesValues, parse_file};

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
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct Runner {
    pub engine: Engine,
    /// Write loaded series to parts before evaluating, so queries read the
    /// on-disk encoding and not only the in-memory rows. Default: true.
    pub flush_after_load: bool,
    /// Also evaluate each instant eval as a range query over
    /// `[t-1m, t+1m]` by 1m and check its middle step. Default: true.
    pub check_range_mode: bool,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            engine: Engine::default(),
            flush_after_load: true,
            check_range_mode: true,
        }
    }
}

/// The storage of the current section of a file (between `clear`s).
struct Db {
    storage: Arc<Storage>,
    source: StorageSource,
}

impl Db {
    /// Opens an empty storage in `dir`. The clock stands at the epoch and the
    /// time limits span centuries both ways, so test timestamps (from 0 on)
    /// are all accepted.
    fn open(dir: PathBuf) -> Result<Db, StorageError> {
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
        Ok(Db { storage, source })
    }

    fn close(self) {
        // A close error leaves nothing behind that a later section reads.
        let _ = self.storage.close();
    }
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
        let mut db: Option<Db> = None;
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
                    if db.is_none() {
                        sections += 1;
                        let dir = scratch.join(format!("section-{sections}"));
                        db = Some(Db::open(dir).map_err(|source| RunError::Storage {
                            line: *line,
                            source,
                        })?);
                    }
                    let Some(db) = db.as_ref() else {
                        continue;
                    };
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
                    self.load(db, *line, *interval_ms, series)?;
                }
                Command::Eval(eval) => {
                    let outcome = if let Some(reason) = &eval.unsupported {
                        Outcome::Skipped {
                            reason: reason.clone(),
                        }
                    } else if let Some(reason) = &histograms {
                        Outcome::Skipped {
                            reason: reason.clone(),
                        }
                    } else {
                        match &db {
                            Some(db) => self.eval(db, eval),
                            None => {
                                // Nothing loaded yet: an empty storage answers.
                                sections += 1;
                                let dir = scratch.join(format!("section-{sections}"));
                                let fresh = Db::open(dir).map_err(|source| RunError::Storage {
                                    line: eval.line,
                                    source,
                                })?;
                                let outcome = self.eval(&fresh, eval);
                                db = Some(fresh);
                                outcome
                            }
                        }
                    };
                    results.push(CaseResult {
                        line: eval.line,
                        query: eval.query.clone(),
                        outcome,
                    });
                }
            }
        }
        if let Some(db) = db.take() {
            db.close();
        }
        Ok(results)
    }

    fn load(
        &self,
        db: &Db,
        line: usize,
        interval_ms: i64,
        series: &[crate::promqltest::parse::SeriesLine],
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
                first: format!("{:?}", outcome.first_rejection),
            });
        }
        if self.flush_after_load {
            db.storage.flush().map_err(storage_err)?;
        }
        Ok(())
    }

    fn eval(&self, db: &Db, eval: &Eval) -> Outcome {
        let opts = QueryOptions::default();
        let expect = &eval.expect;
        let result = match eval.time {
            EvalTime::Instant { at } => self.engine.instant(&db.source, &eval.query, at, &opts),
            EvalTime::Range { start, end, step } => {
                self.engine
                    .range(&db.source, &eval.query, start, end, step, &opts)
            }
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
        let checked = match eval.time {
            EvalTime::Instant { .. } => compare::check_instant(expect, &result.value),
            EvalTime::Range { start, end, step } => {
                compare::check_range(expect, start, end, step, &result.value)
            }
        };
        if let Err(reason) = checked {
            return failed(reason, format_value(&result.value));
        }
        if let EvalTime::Instant { at } = eval.time
            && self.check_range_mode
        {
            return self.check_instant_in_range_mode(db, eval, at, &result.value);
        }
        Outcome::Passed
    }

    /// An instant query must answer what the step at the same time of a range
    /// query answers.
    fn check_instant_in_range_mode(
        &self,
        db: &Db,
        eval: &Eval,
        at: i64,
        instant: &Value,
    ) -> Outcome {
        if matches!(instant, Value::String { .. } | Value::Matrix(_)) || eval.expect.ordered {
            // Range queries cannot return these; ordering is not defined for them.
            return Outcome::Passed;
        }
        let expect = &eval.expect;
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
        let result = match self.engine.range(
            &db.source,
            &eval.query,
            at - 60_000,
            at + 60_000,
            60_000,
            &opts,
        ) {
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
