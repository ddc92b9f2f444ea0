//! Crash safety of `strata single`: SIGKILL at random moments under
//! concurrent ingestion, many times on one data directory.
//!
//! An import request becomes one storage batch, hence one log record. So
//! after every restart each acknowledged request (204) must be there with its
//! exact values, and each unacknowledged one either whole or absent. Every
//! sample encodes which writer, request and series it came from, so a
//! sample that was never sent, a duplicate or a wrong value is caught too.
//! Rounds accumulate on one directory, and what a check finds is held to in
//! later rounds: an unacknowledged request found whole must stay, one found
//! absent must never come back.
//!
//! The schedule (kill delays, flush intervals, pauses) is random. The seed is
//! printed first; set `STRATA_CRASH_SEED` to replay the schedule (thread
//! timing, and so where exactly a kill lands, still varies).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use strata_e2e::{ExportedSeries, Importer, Rng, Single, log_field, now_ms, parse_export};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const SEED_VAR: &str = "STRATA_CRASH_SEED";
const METRIC: &str = "crash_rows";
/// Spacing of a series' samples.
const STEP_MS: i64 = 1_000;
const MS_PER_DAY: i64 = 86_400_000;

/// How every request of a run is built.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Series that every request of a writer writes to (`series="r<k>"`).
    recurring: usize,
    /// Series that each request creates (`series="n<request>.<j>"`), so
    /// that registration of new series is part of every batch.
    fresh: usize,
    /// Samples per series per request.
    samples: usize,
}

impl Shape {
    fn series(&self) -> usize {
        self.recurring + self.fresh
    }

    fn rows(&self) -> usize {
        self.series() * self.samples
    }

    /// Label `series` of slot `slot` of request `req`.
    fn series_name(&self, req: usize, slot: usize) -> String {
        if slot < self.recurring {
            format!("r{slot}")
        } else {
            format!("n{req}.{}", slot - self.recurring)
        }
    }

    /// The slot a `series` label names, checked against the request the
    /// timestamp says the sample belongs to.
    fn slot_of(&self, name: &str, req: usize) -> Result<usize, String> {
        if let Some(k) = name.strip_prefix('r') {
            let k: usize = k.parse().map_err(|_| format!("bad series {name:?}"))?;
            return if k < self.recurring {
                Ok(k)
            } else {
                Err(format!("series {name:?} was never written"))
            };
        }
        let fresh = name
            .strip_prefix('n')
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(r, j)| Some((r.parse::<usize>().ok()?, j.parse::<usize>().ok()?)));
        match fresh {
            Some((r, j)) if r == req && j < self.fresh => Ok(self.recurring + j),
            Some((r, _)) if r != req => Err(format!(
                "series {name:?} holds a timestamp of request {req}, not of request {r}"
            )),
            _ => Err(format!("series {name:?} was never written")),
        }
    }
}

/// Where request `req` puts sample `i` of each of its series.
fn timestamp(base: i64, shape: Shape, req: usize, i: usize) -> i64 {
    base + ((req * shape.samples + i) as i64) * STEP_MS
}

/// A value unique to (writer, request, slot, sample), not a round number so
/// that the float path is exercised.
fn value(writer: usize, req: usize, slot: usize, i: usize) -> f64 {
    let id = ((writer as u64) << 48) | ((req as u64) << 16) | ((slot as u64) << 8) | i as u64;
    id as f64 * 0.1
}

fn request_body(shape: Shape, base: i64, writer: usize, req: usize) -> String {
    let mut body = String::with_capacity(shape.rows() * 40);
    for slot in 0..shape.series() {
        let _ = write!(
            body,
            r#"{{"metric":{{"__name__":"{METRIC}","writer":"{writer}","series":"{}"}},"values":["#,
            shape.series_name(req, slot)
        );
        for i in 0..shape.samples {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(body, "{sep}{}", value(writer, req, slot, i));
        }
        body.push_str(r#"],"timestamps":["#);
        for i in 0..shape.samples {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(body, "{sep}{}", timestamp(base, shape, req, i));
        }
        body.push_str("]}\n");
    }
    body
}

/// What the client saw of one request.
#[derive(Clone, Debug)]
enum Outcome {
    Acked,
    /// A response other than 204.
    Refused {
        status: u16,
        body: String,
    },
    /// No response: refused or cut connection.
    Lost,
}

/// What is known of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Acknowledged: must be there, whole.
    Acked,
    /// Not acknowledged in the round just ended: whole or absent.
    Unacked,
    /// Not acknowledged, found whole after a restart: must stay.
    Present,
    /// Not acknowledged, found absent after a restart: must stay absent.
    Absent,
}

/// Everything sent so far, by writer and request number.
struct Model {
    shape: Shape,
    base: i64,
    fates: Vec<Vec<Fate>>,
}

impl Model {
    fn new(shape: Shape, writers: usize) -> Model {
        // A day back: the samples of the whole run stay in the past, well
        // within retention, and cross day boundaries of the index now and then.
        let base = (now_ms() - MS_PER_DAY) / STEP_MS * STEP_MS;
        Model {
            shape,
            base,
            fates: vec![Vec::new(); writers],
        }
    }

    fn rows_that_must_exist(&self) -> usize {
        let whole = |f: &&Fate| matches!(f, Fate::Acked | Fate::Present);
        self.fates.iter().flatten().filter(whole).count() * self.shape.rows()
    }
}

/// One writer thread's task.
struct Writer {
    importer: Importer,
    shape: Shape,
    base: i64,
    writer: usize,
    first_req: usize,
    limit: usize,
    /// Longest random pause between requests, in ms: keeps the data, and so
    /// the export of each check, small enough for the time budget.
    pause_ms: u64,
    rng: Rng,
}

impl Writer {
    /// Sends requests until `stop`, `limit` requests, or the first request
    /// that is not acknowledged (the server is going away).
    fn run(mut self, stop: &AtomicBool) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        while !stop.load(Ordering::Relaxed) && outcomes.len() < self.limit {
            let req = self.first_req + outcomes.len();
            let body = request_body(self.shape, self.base, self.writer, req);
            let outcome = match self.importer.import(body) {
                Ok(r) if r.status == 204 => Outcome::Acked,
                Ok(r) => Outcome::Refused {
                    status: r.status,
                    body: r.body,
                },
                Err(_) => Outcome::Lost,
            };
            let go_on = matches!(outcome, Outcome::Acked);
            outcomes.push(outcome);
            if !go_on {
                break;
            }
            if self.pause_ms > 0 {
                sleep(self.rng.millis(0, self.pause_ms));
            }
        }
        outcomes
    }
}

/// When writers stop.
enum Until<'a> {
    /// After this many requests each (or the first one not acknowledged).
    Sent(usize),
    /// When this is done to the process (usually: it is killed).
    Interrupted(Box<dyn FnOnce(&mut Single) + 'a>),
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Recovery figures of one start, from the engine's "Storage opened." line.
#[derive(Clone, Copy, Debug, Default)]
struct Recovery {
    wal_rows: u64,
    rows_per_second: u64,
    truncated_bytes: u64,
}

fn recovery_in(log: &str) -> Option<Recovery> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("Storage opened.") && l.contains("wal_rows="))?;
    let field = |name| log_field(line, name).and_then(|v| v.parse().ok());
    Some(Recovery {
        wal_rows: field("wal_rows")?,
        rows_per_second: field("replay_rows_per_second")?,
        truncated_bytes: field("wal_truncated_bytes")?,
    })
}

/// Tallies of one round, for the progress line.
#[derive(Default)]
struct Tally {
    acked: usize,
    unacked: usize,
    found_whole: usize,
    found_absent: usize,
}

/// A run: one data directory, one model, one random schedule.
struct Run {
    name: &'static str,
    seed: u64,
    rng: Rng,
    single: Single,
    model: Model,
    round: usize,
    recoveries: Vec<Recovery>,
    /// Statuses a writer may get without the test failing (e.g. 503 while
    /// the server stops); any other non-204 response is a bug.
    tolerated: &'static [u16],
    /// See `Writer::pause_ms`.
    pause_ms: u64,
}

impl Run {
    fn start(name: &'static str, shape: Shape, writers: usize, flags: &[&str]) -> Run {
        let seed = Rng::seed_from_env(SEED_VAR);
        eprintln!("{name}: seed {seed} (replay with {SEED_VAR}={seed})");
        Run {
            name,
            seed,
            rng: Rng::new(seed),
            single: Single::start_with_args(BIN, flags),
            model: Model::new(shape, writers),
            round: 0,
            recoveries: Vec::new(),
            tolerated: &[],
            pause_ms: 0,
        }
    }

    /// A failure with what is needed to replay and understand it. The child
    /// log tail is printed by `Single` when the panic unwinds.
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: seed {} ({SEED_VAR}={}), round {}: {what}",
            self.name, self.seed, self.seed, self.round
        );
    }

    /// Runs writers against the current process until `until`, then records
    /// what they saw.
    fn ingest(&mut self, until: Until<'_>) -> Tally {
        let stop = AtomicBool::new(false);
        let importer = self.single.importer();
        let (shape, base) = (self.model.shape, self.model.base);
        let starts: Vec<usize> = self.model.fates.iter().map(Vec::len).collect();
        let (limit, interrupt) = match until {
            Until::Sent(n) => (n, None),
            Until::Interrupted(f) => (usize::MAX, Some(f)),
        };
        let (pause_ms, seed) = (self.pause_ms, self.rng.next_u64());
        let single = &mut self.single;
        let outcomes: Vec<Vec<Outcome>> = std::thread::scope(|scope| {
            // Writers must stop even when the interruption panics, or the
            // scope would wait for them forever.
            let _stop = StopOnDrop(&stop);
            let writers: Vec<_> = starts
                .iter()
                .enumerate()
                .map(|(w, &first_req)| {
                    let writer = Writer {
                        importer: importer.clone(),
                        shape,
                        base,
                        writer: w,
                        first_req,
                        limit,
                        pause_ms,
                        rng: Rng::new(seed ^ first_req as u64 ^ (w as u64) << 56),
                    };
                    let stop = &stop;
                    scope.spawn(move || writer.run(stop))
                })
                .collect();
            if let Some(interrupt) = interrupt {
                interrupt(single);
                stop.store(true, Ordering::Relaxed);
            }
            writers
                .into_iter()
                .map(|h| h.join().expect("writer thread"))
                .collect()
        });
        let mut tally = Tally::default();
        for (w, outcomes) in outcomes.into_iter().enumerate() {
            for (n, outcome) in outcomes.into_iter().enumerate() {
                let fate = match outcome {
                    Outcome::Acked => Fate::Acked,
                    Outcome::Lost => Fate::Unacked,
                    Outcome::Refused { status, .. } if self.tolerated.contains(&status) => {
                        Fate::Unacked
                    }
                    Outcome::Refused { status, body } => self.fail(&format!(
                        "writer {w} request {} got {status} from a healthy server: {body}",
                        starts[w] + n
                    )),
                };
                if fate == Fate::Acked {
                    tally.acked += 1;
                } else {
                    tally.unacked += 1;
                }
                self.model.fates[w].push(fate);
            }
        }
        tally
    }

    /// Starts again with `flags`, checks that recovery was logged, and
    /// returns its figures.
    fn restart(&mut self, flags: &[&str]) -> Recovery {
        let offset = self.single.log_len();
        self.single.restart_with_args(flags);
        let log = self.single.log_since(offset);
        let Some(recovery) = recovery_in(&log) else {
            self.fail("the restart logged no \"Storage opened.\" line with wal_rows=");
        };
        if let Some(line) = log.lines().find(|l| l.contains(" ERROR ")) {
            self.fail(&format!("the restart logged an error: {line}"));
        }
        self.recoveries.push(recovery);
        recovery
    }

    /// Exports everything and compares it with the model; then settles the
    /// fate of the requests of the last round.
    fn check(&mut self, tally: &mut Tally) {
        let response = self
            .single
            .export(&[("match[]", &format!("{{__name__={METRIC:?}}}"))]);
        if response.status != 200 {
            self.fail(&format!("export: {} {}", response.status, response.body));
        }
        let exported = parse_export(&response.body);
        let counts = match self.count(&exported) {
            Ok(counts) => counts,
            Err(e) => self.fail(&e),
        };
        let rows = self.model.shape.rows();
        // `counts` is shaped like `fates`: one entry per request sent.
        for (w, found_by_req) in counts.iter().enumerate() {
            for (req, &found) in found_by_req.iter().enumerate() {
                let fate = self.model.fates[w][req];
                let settled = match (fate, found) {
                    (Fate::Acked | Fate::Present, n) if n == rows => fate,
                    (Fate::Absent, 0) => fate,
                    (Fate::Unacked, 0) => Fate::Absent,
                    (Fate::Unacked, n) if n == rows => Fate::Present,
                    _ => self.fail(&format!(
                        "writer {w} request {req} ({fate:?}): want {}, found {found} of {rows} rows\n{}",
                        match fate {
                            Fate::Acked | Fate::Present => "all rows",
                            Fate::Absent => "no row",
                            Fate::Unacked => "all rows or none",
                        },
                        self.describe_request(&exported, w, req)
                    )),
                };
                if fate == Fate::Unacked {
                    if settled == Fate::Present {
                        tally.found_whole += 1;
                    } else {
                        tally.found_absent += 1;
                    }
                }
                self.model.fates[w][req] = settled;
            }
        }
    }

    /// Rows found per writer and request, after checking that each exported
    /// sample is one that was sent, with its exact value, once.
    fn count(&self, exported: &[ExportedSeries]) -> Result<Vec<Vec<usize>>, String> {
        let shape = self.model.shape;
        let mut counts: Vec<Vec<usize>> =
            self.model.fates.iter().map(|f| vec![0; f.len()]).collect();
        let mut seen = BTreeMap::new();
        for series in exported {
            let label = |name: &str| {
                series
                    .labels
                    .get(name)
                    .ok_or_else(|| format!("series without {name}: {:?}", series.labels))
            };
            if series.labels.len() != 3 {
                return Err(format!("unexpected labels {:?}", series.labels));
            }
            let writer: usize = label("writer")?
                .parse()
                .map_err(|_| format!("bad writer in {:?}", series.labels))?;
            let name = label("series")?;
            if writer >= counts.len() {
                return Err(format!(
                    "series of a writer that never ran: {:?}",
                    series.labels
                ));
            }
            if let Some(before) = seen.insert((writer, name.clone()), series.timestamps.len()) {
                return Err(format!(
                    "series {:?} exported twice ({before} and {} samples)",
                    series.labels,
                    series.timestamps.len()
                ));
            }
            if let Some(pair) = series.timestamps.windows(2).find(|p| p[0] >= p[1]) {
                return Err(format!(
                    "series {:?}: timestamps not strictly increasing: {} then {}",
                    series.labels, pair[0], pair[1]
                ));
            }
            for (&ts, &got) in series.timestamps.iter().zip(&series.values) {
                let offset = ts - self.model.base;
                if offset < 0 || offset % STEP_MS != 0 {
                    return Err(format!(
                        "series {:?}: timestamp {ts} was never sent",
                        series.labels
                    ));
                }
                let k = (offset / STEP_MS) as usize;
                let (req, i) = (k / shape.samples, k % shape.samples);
                if req >= counts[writer].len() {
                    return Err(format!(
                        "series {:?}: sample at {ts} belongs to request {req} of writer {writer}, which was never sent",
                        series.labels
                    ));
                }
                let slot = shape
                    .slot_of(name, req)
                    .map_err(|e| format!("writer {writer}, sample at {ts}: {e}"))?;
                let want = value(writer, req, slot, i);
                if got.to_bits() != want.to_bits() {
                    return Err(format!(
                        "series {:?}: sample at {ts} (writer {writer} request {req}) is {got:?}, sent {want:?}",
                        series.labels
                    ));
                }
                counts[writer][req] += 1;
            }
        }
        Ok(counts)
    }

    /// Which samples of one request the export holds, for failure messages.
    fn describe_request(&self, exported: &[ExportedSeries], writer: usize, req: usize) -> String {
        let shape = self.model.shape;
        let mut out = String::new();
        for slot in 0..shape.series() {
            let name = shape.series_name(req, slot);
            let found = exported.iter().find(|s| {
                s.labels.get("writer") == Some(&writer.to_string())
                    && s.labels.get("series") == Some(&name)
            });
            let (mut present, mut missing) = (Vec::new(), Vec::new());
            for i in 0..shape.samples {
                let ts = timestamp(self.model.base, shape, req, i);
                if found.is_some_and(|s| s.timestamps.contains(&ts)) {
                    present.push(ts);
                } else {
                    missing.push(ts);
                }
            }
            let _ = writeln!(
                out,
                "  series {name:?}: {} of {} samples; missing timestamps {missing:?}",
                present.len(),
                shape.samples
            );
        }
        out
    }

    fn report(&self, started: Instant) {
        let mut rates: Vec<u64> = self.recoveries.iter().map(|r| r.rows_per_second).collect();
        rates.sort_unstable();
        let median = rates.get(rates.len() / 2).copied().unwrap_or(0);
        let max_rate = rates.last().copied().unwrap_or(0);
        let max_rows = self
            .recoveries
            .iter()
            .map(|r| r.wal_rows)
            .max()
            .unwrap_or(0);
        let torn = self
            .recoveries
            .iter()
            .filter(|r| r.truncated_bytes > 0)
            .count();
        eprintln!(
            "{}: {} rounds in {:.1?}, {} rows that must exist; replay over {} restarts: \
             wal_rows max {max_rows}, rows/s median {median} max {max_rate}; \
             {torn} restarts cut a torn log tail",
            self.name,
            self.round,
            started.elapsed(),
            self.model.rows_that_must_exist(),
            self.recoveries.len(),
        );
    }
}

fn flush_flags(interval_ms: u64) -> Vec<String> {
    vec![
        "--storage.flush-interval".to_string(),
        format!("{interval_ms}ms"),
    ]
}

fn as_strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Flush intervals to pick from: short ones so that kills land in flushes,
/// merges and log trimming, a long one so that some kills find a long log.
const FLUSH_MS: &[u64] = &[50, 100, 200, 200, 500, 1_000];

#[test]
fn kill9_at_random_moments_loses_no_acknowledged_row() {
    const ROUNDS: usize = 25;
    const WRITERS: usize = 4;
    let started = Instant::now();
    // Few new series per request: an export costs about one index lookup
    // per series per part, the bulk of a round in a debug build.
    let shape = Shape {
        recurring: 6,
        fresh: 1,
        samples: 8,
    };
    let flags = flush_flags(200);
    let mut run = Run::start("kill9", shape, WRITERS, &as_strs(&flags));
    run.pause_ms = 4;
    for round in 1..=ROUNDS {
        run.round = round;
        let kill_after = run.rng.millis(20, 800);
        let round_started = Instant::now();
        let mut tally = run.ingest(Until::Interrupted(Box::new(|single| {
            sleep(kill_after);
            single.kill9();
        })));
        // Now and then crash the next start too, while it replays the log.
        let crash_start = round % 5 == 0;
        if crash_start {
            let after = run.rng.millis(0, 60);
            run.single.start_then_kill9_after(after);
        }
        let flush_ms = *run.rng.pick(FLUSH_MS);
        let restart_started = Instant::now();
        let recovery = run.restart(&as_strs(&flush_flags(flush_ms)));
        let check_started = Instant::now();
        run.check(&mut tally);
        eprintln!(
            "kill9 round {round}: killed after {kill_after:?}{}, {} acked / {} unacked \
             ({} found whole, {} absent); replayed {} rows at {} rows/s; next flush \
             {flush_ms}ms; restart {:?}, check {:?}, round {:?}",
            if crash_start {
                " and again at start"
            } else {
                ""
            },
            tally.acked,
            tally.unacked,
            tally.found_whole,
            tally.found_absent,
            recovery.wal_rows,
            recovery.rows_per_second,
            check_started - restart_started,
            check_started.elapsed(),
            round_started.elapsed(),
        );
    }
    run.report(started);
}

#[test]
fn kill9_during_graceful_stop_loses_no_acknowledged_row() {
    const ROUNDS: usize = 10;
    const WRITERS: usize = 4;
    let started = Instant::now();
    let shape = Shape {
        recurring: 3,
        fresh: 2,
        samples: 4,
    };
    let flags = flush_flags(200);
    let mut run = Run::start("sigterm+kill9", shape, WRITERS, &as_strs(&flags));
    // Once the stop has begun the server answers 503 (not ready, storage
    // closed): not acknowledged, not an error.
    run.tolerated = &[503];
    run.pause_ms = 4;
    for round in 1..=ROUNDS {
        run.round = round;
        let term_after = run.rng.millis(50, 600);
        let kill_after = run.rng.millis(0, 30);
        let mut exit = None;
        let mut tally = run.ingest(Until::Interrupted(Box::new(|single| {
            sleep(term_after);
            single.sigterm();
            sleep(kill_after);
            exit = single.wait_exit(Duration::ZERO);
            if exit.is_none() {
                single.kill9();
            }
        })));
        let clean_exit = match exit {
            Some(status) if status.success() => true,
            Some(status) => run.fail(&format!("exit after SIGTERM: {status}")),
            None => false,
        };
        let flush_ms = *run.rng.pick(FLUSH_MS);
        let recovery = run.restart(&as_strs(&flush_flags(flush_ms)));
        run.check(&mut tally);
        eprintln!(
            "sigterm+kill9 round {round}: SIGTERM after {term_after:?}, {} {kill_after:?} later; \
             {} acked / {} unacked ({} found whole, {} absent); replayed {} rows",
            if clean_exit {
                "exited cleanly before SIGKILL"
            } else {
                "SIGKILL"
            },
            tally.acked,
            tally.unacked,
            tally.found_whole,
            tally.found_absent,
            recovery.wal_rows,
        );
    }
    run.report(started);
}

#[test]
fn kill9_with_a_long_log_replays_every_row() {
    const WRITERS: usize = 2;
    const REQUESTS: usize = 50;
    let started = Instant::now();
    // 5,000 rows per request, 500,000 in all, every one still in the log:
    // the flush interval is longer than the test.
    let shape = Shape {
        recurring: 50,
        fresh: 50,
        samples: 50,
    };
    let flags = flush_flags(3_600_000);
    let mut run = Run::start("long log", shape, WRITERS, &as_strs(&flags));
    run.round = 1;
    let ingest_started = Instant::now();
    let mut tally = run.ingest(Until::Sent(REQUESTS));
    let ingest_took = ingest_started.elapsed();
    assert_eq!(
        tally.unacked, 0,
        "every request of a healthy server is acked"
    );
    let rows = (WRITERS * REQUESTS * shape.rows()) as u64;
    run.single.kill9();
    let restart_started = Instant::now();
    let first = run.restart(&as_strs(&flags));
    let first_took = restart_started.elapsed();
    // Crash the next start somewhere inside its replay (as long as the one
    // just measured, whatever the build): that must not lose the log either.
    run.single.kill9();
    let replay_ms = u64::try_from(first_took.as_millis()).unwrap_or(u64::MAX);
    let after = run.rng.millis(0, replay_ms);
    run.single.start_then_kill9_after(after);
    let second = run.restart(&as_strs(&flags));
    for recovery in [first, second] {
        if recovery.wal_rows != rows {
            run.fail(&format!(
                "replayed {} rows, want all {rows} (nothing was flushed)",
                recovery.wal_rows
            ));
        }
    }
    run.check(&mut tally);
    eprintln!(
        "long log: {rows} rows ingested in {ingest_took:?}; after SIGKILL ready again in \
         {first_took:?}, replayed {} rows at {} rows/s; after SIGKILL, and again {after:?} \
         into the next start, replayed {} rows at {} rows/s",
        first.wal_rows, first.rows_per_second, second.wal_rows, second.rows_per_second
    );
    run.report(started);
}
