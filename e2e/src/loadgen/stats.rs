//! What the senders measured: outcomes per request, latency percentiles,
//! and the report printed periodically and at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// How one request ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The server answered; 2xx means accepted.
    Status(u16),
    /// No answer: `timeout`, `connect`, `body`, `other`.
    Failed(&'static str),
}

/// Counters over a span of time.
#[derive(Clone, Debug, Default)]
struct Counters {
    requests: u64,
    requests_ok: u64,
    samples_sent: u64,
    samples_accepted: u64,
    bytes_sent: u64,
    raw_bytes_sent: u64,
    rejected_by_status: BTreeMap<u16, u64>,
    failed_by_reason: BTreeMap<&'static str, u64>,
    latencies_us: Vec<u32>,
}

impl Counters {
    fn record(
        &mut self,
        outcome: &Outcome,
        samples: u64,
        bytes: u64,
        raw_bytes: u64,
        took: Duration,
    ) {
        self.requests += 1;
        self.samples_sent += samples;
        self.bytes_sent += bytes;
        self.raw_bytes_sent += raw_bytes;
        self.latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        match outcome {
            Outcome::Status(status) if (200..300).contains(status) => {
                self.requests_ok += 1;
                self.samples_accepted += samples;
            }
            Outcome::Status(status) => *self.rejected_by_status.entry(*status).or_default() += 1,
            Outcome::Failed(reason) => *self.failed_by_reason.entry(reason).or_default() += 1,
        }
    }
}

/// Shared by the senders (one lock per request, never per sample).
#[derive(Default)]
pub struct Stats {
    inner: Mutex<(Counters, Counters)>,
    /// Accepted samples by the whole second of the run their request was
    /// sent in: the ingestion rate over time (dips during restarts show here).
    by_second: Mutex<Vec<u64>>,
}

impl Stats {
    pub fn record(
        &self,
        outcome: &Outcome,
        samples: u64,
        bytes: u64,
        raw_bytes: u64,
        took: Duration,
    ) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (total, window) = &mut *guard;
        total.record(outcome, samples, bytes, raw_bytes, took);
        window.record(outcome, samples, bytes, raw_bytes, took);
    }

    /// Counts `samples` accepted in second `second` of the run.
    pub fn accepted_at(&self, second: usize, samples: u64) {
        let mut by_second = self.by_second.lock().unwrap_or_else(|e| e.into_inner());
        if by_second.len() <= second {
            by_second.resize(second + 1, 0);
        }
        by_second[second] += samples;
    }

    /// The totals, and the window since the last call (which starts anew).
    fn take_window(&self) -> (Counters, Counters) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let window = std::mem::take(&mut guard.1);
        (guard.0.clone(), window)
    }

    /// One line for the periodic report.
    pub fn progress_line(&self, elapsed: Duration, window: Duration, point: u64) -> String {
        let (total, w) = self.take_window();
        let latency = Latency::of(w.latencies_us);
        let errors = w.requests - w.requests_ok;
        format!(
            "{:>6.1}s  {:>10.0} samples/s  {:>12} accepted  scrape {:>5}  {:>5} req  {} errors  \
             p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  {:.1} MB sent",
            elapsed.as_secs_f64(),
            w.samples_accepted as f64 / window.as_secs_f64().max(1e-9),
            total.samples_accepted,
            point,
            w.requests,
            errors,
            latency.p50_ms,
            latency.p99_ms,
            latency.max_ms,
            total.bytes_sent as f64 / 1e6,
        )
    }

    /// The final report.
    pub fn report(&self, seconds: f64, fleet: FleetFigures) -> Report {
        let (total, _) = self.take_window();
        let samples_per_second = total.samples_accepted as f64 / seconds.max(1e-9);
        Report {
            seconds,
            samples_per_second,
            requests: total.requests,
            requests_ok: total.requests_ok,
            rejected_by_status: total.rejected_by_status,
            failed_by_reason: total
                .failed_by_reason
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            samples_sent: total.samples_sent,
            samples_accepted: total.samples_accepted,
            bytes_sent: total.bytes_sent,
            raw_bytes_sent: total.raw_bytes_sent,
            latency: Latency::of(total.latencies_us),
            fleet,
            first_rejection: None,
            accepted_per_second: self
                .by_second
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Request latency percentiles, nearest rank, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut micros: Vec<u32>) -> Latency {
        if micros.is_empty() {
            return Latency::default();
        }
        micros.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len()) - 1;
            f64::from(micros[i]) / 1000.0
        };
        Latency {
            p50_ms: rank(0.5),
            p90_ms: rank(0.9),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
        }
    }
}

/// The shape of what was generated.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetFigures {
    /// Series active at the end.
    pub active_series: u64,
    /// Series started, churn included.
    pub series_created: u64,
    /// Scrapes every sender completed (the slowest sender's count).
    pub points: u64,
    /// Simulated time covered by those scrapes.
    pub simulated_seconds: f64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Wall time from the start of the senders to the last response.
    pub seconds: f64,
    /// Accepted samples over `seconds`.
    pub samples_per_second: f64,
    pub requests: u64,
    pub requests_ok: u64,
    /// Requests the server answered with a non-2xx status.
    pub rejected_by_status: BTreeMap<u16, u64>,
    /// Requests without an answer, by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    pub samples_sent: u64,
    pub samples_accepted: u64,
    /// Compressed body bytes.
    pub bytes_sent: u64,
    /// Body bytes before snappy.
    pub raw_bytes_sent: u64,
    pub latency: Latency,
    pub fleet: FleetFigures,
    /// The first non-2xx answer: status and the start of its body.
    pub first_rejection: Option<String>,
    /// Accepted samples by whole second of the run (index 0 is the first
    /// second), counted in the second their request was sent.
    pub accepted_per_second: Vec<u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wall seconds          {:.2}", self.seconds)?;
        writeln!(f, "accepted samples/s    {:.0}", self.samples_per_second)?;
        writeln!(
            f,
            "samples               {} accepted of {} sent",
            self.samples_accepted, self.samples_sent
        )?;
        writeln!(
            f,
            "requests              {} ok of {}",
            self.requests_ok, self.requests
        )?;
        for (status, n) in &self.rejected_by_status {
            writeln!(f, "  rejected, status {status}  {n}")?;
        }
        for (reason, n) in &self.failed_by_reason {
            writeln!(f, "  failed, {reason}  {n}")?;
        }
        if let Some(first) = &self.first_rejection {
            writeln!(f, "  first rejection: {first}")?;
        }
        writeln!(
            f,
            "latency ms            p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.latency.p50_ms, self.latency.p90_ms, self.latency.p99_ms, self.latency.max_ms
        )?;
        writeln!(
            f,
            "bytes sent            {} ({} before snappy, {:.1} bytes/sample)",
            self.bytes_sent,
            self.raw_bytes_sent,
            self.bytes_sent as f64 / self.samples_sent.max(1) as f64
        )?;
        write!(
            f,
            "series                {} active, {} created; {} scrapes ({:.0} s simulated)",
            self.fleet.active_series,
            self.fleet.series_created,
            self.fleet.points,
            self.fleet.simulated_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let check = |micros: Vec<u32>, want: [f64; 4]| {
            let l = Latency::of(micros);
            assert_eq!([l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms], want);
        };
        check(vec![], [0.0; 4]);
        check(vec![2000], [2.0; 4]);
        check(
            (1..=100).map(|i| i * 1000).collect(),
            [50.0, 90.0, 99.0, 100.0],
        );
        check(vec![5000, 1000, 3000, 2000], [2.0, 5.0, 5.0, 5.0]);
    }

    #[test]
    fn outcomes_are_counted_by_status_and_reason() {
        let stats = Stats::default();
        let ms = Duration::from_millis(1);
        stats.record(&Outcome::Status(204), 10, 100, 300, ms);
        stats.record(&Outcome::Status(400), 5, 50, 150, ms);
        stats.record(&Outcome::Status(400), 5, 50, 150, ms);
        stats.record(&Outcome::Failed("timeout"), 7, 70, 210, ms);
        let report = stats.report(2.0, FleetFigures::default());
        assert_eq!(report.requests, 4);
        assert_eq!(report.requests_ok, 1);
        assert_eq!(report.samples_sent, 27);
        assert_eq!(report.samples_accepted, 10);
        assert_eq!(report.samples_per_second, 5.0);
        assert_eq!(report.rejected_by_status, BTreeMap::from([(400, 2)]));
        assert_eq!(
            report.failed_by_reason,
            BTreeMap::from([("timeout".to_string(), 1)])
        );
        assert_eq!(report.bytes_sent, 270);
        assert!(report.accepted_per_second.is_empty());
    }

    #[test]
    fn accepted_samples_are_counted_by_second() {
        let stats = Stats::default();
        stats.accepted_at(2, 5);
        stats.accepted_at(0, 1);
        stats.accepted_at(2, 3);
        let report = stats.report(3.0, FleetFigures::default());
        assert_eq!(report.accepted_per_second, vec![1, 0, 8]);
    }
}
