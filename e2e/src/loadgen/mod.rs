//! The load generator: a node_exporter fleet pushed through Prometheus
//! remote write 1.0 to any URL (`strata single`, VictoriaMetrics, anything
//! that speaks `/api/v1/write`).
//!
//! `hosts` simulated hosts of about 459 series each are scraped every
//! `interval` of simulated time, starting at `now - start_ago`; counters
//! only grow, gauges wander (`fleet`). `senders` tasks each own a share of
//! the hosts and send their scrapes in bodies of about `batch` samples, as
//! fast as the server answers or paced to `rate` samples/s overall;
//! simulated time runs as fast as the samples go out. Churn replaces a
//! fraction of the hosts every `churn_every` of simulated time, so new
//! series keep appearing. Nothing is retried: a rejected or failed request
//! is counted and its samples are lost, which is what the report is for.
//!
//! Measured (`stats`): accepted samples/s, requests by outcome (status or
//! failure reason), latency percentiles, bytes sent.

pub mod cluster;
pub mod compare;
pub mod encode;
pub mod fleet;
pub mod query;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_storage::config::{humantime_serde_compat, parse_duration};

use self::encode::{Body, BodyBuilder};
use self::fleet::{FleetError, FleetShape, Shard};
use self::stats::{FleetFigures, Outcome, Report, Stats};

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("nothing bounds the run: give --points or --duration")]
    Unbounded,
    #[error("--churn {0} is not a fraction between 0 and 1")]
    Churn(f64),
    #[error("--interval must be at least 1ms")]
    Interval,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Encode(#[from] encode::EncodeError),
    #[error("a sender task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How to load a server. Every field has a flag (`--name`) and states its default.
#[derive(Clone, Debug, clap::Args, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Remote write endpoint. Default: http://127.0.0.1:8428/api/v1/write.
    #[arg(
        long,
        env = "STRATA_LOADGEN_URL",
        default_value = "http://127.0.0.1:8428/api/v1/write"
    )]
    pub url: String,

    /// Simulated node_exporter hosts, about 459 series each. Default: 1000.
    #[arg(long, env = "STRATA_LOADGEN_HOSTS", default_value_t = 1000)]
    pub hosts: u32,

    /// Simulated scrape interval: timestamps of a series advance by this.
    /// Default: 15s.
    #[arg(long, env = "STRATA_LOADGEN_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,

    /// Scrapes of every host to send, then stop; 0 means no limit (stop at
    /// --duration). Default: 0.
    #[arg(long, env = "STRATA_LOADGEN_POINTS", default_value_t = 0)]
    pub points: u64,

    /// Stop after this much wall time; 0 means no limit (stop after
    /// --points). Default: 0.
    #[arg(long, env = "STRATA_LOADGEN_DURATION", default_value = "0s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,

    /// The first scrape is this long before now. 0 means --points x
    /// --interval (the last scrape lands at about now), or 1h when --points
    /// is 0. Default: 0.
    #[arg(long, env = "STRATA_LOADGEN_START_AGO", default_value = "0s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub start_ago: Duration,

    /// Samples per second over all senders; 0 sends as fast as the server
    /// answers. Default: 0.
    #[arg(long, env = "STRATA_LOADGEN_RATE", default_value_t = 0)]
    pub rate: u64,

    /// Concurrent requests (each sender owns a share of the hosts).
    /// Default: 4.
    #[arg(long, env = "STRATA_LOADGEN_SENDERS", default_value_t = 4)]
    pub senders: u32,

    /// Samples per request; whole hosts are scraped into a body, so a body
    /// holds up to one host's series more. Default: 10000.
    #[arg(long, env = "STRATA_LOADGEN_BATCH", default_value_t = 10_000)]
    pub batch: u64,

    /// Fraction of the hosts replaced at each churn event (new `instance`,
    /// so new series), 0 to 1. Default: 0.
    #[arg(long, env = "STRATA_LOADGEN_CHURN", default_value_t = 0.0)]
    pub churn: f64,

    /// Simulated time between churn events, rounded to whole scrapes; 0
    /// means no churn. Default: 0.
    #[arg(long, env = "STRATA_LOADGEN_CHURN_EVERY", default_value = "0s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub churn_every: Duration,

    /// Seed of the generated values. Default: 1.
    #[arg(long, env = "STRATA_LOADGEN_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Wall time between progress lines; 0 prints only the final report.
    /// Default: 5s.
    #[arg(long, env = "STRATA_LOADGEN_REPORT_EVERY", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub report_every: Duration,

    /// Longest wait for one request. Default: 30s.
    #[arg(long, env = "STRATA_LOADGEN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            url: "http://127.0.0.1:8428/api/v1/write".into(),
            hosts: 1000,
            interval: Duration::from_secs(15),
            points: 0,
            duration: Duration::ZERO,
            start_ago: Duration::ZERO,
            rate: 0,
            senders: 4,
            batch: 10_000,
            churn: 0.0,
            churn_every: Duration::ZERO,
            seed: 1,
            report_every: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// The fleet this configuration generates, its first scrape `start_ago`
    /// before `now_ms`.
    pub fn fleet(&self, now_ms: i64) -> Result<FleetShape, LoadgenError> {
        if self.points == 0 && self.duration.is_zero() {
            return Err(LoadgenError::Unbounded);
        }
        if !(0.0..=1.0).contains(&self.churn) {
            return Err(LoadgenError::Churn(self.churn));
        }
        let interval_ms = self.interval.as_millis() as i64;
        if interval_ms < 1 {
            return Err(LoadgenError::Interval);
        }
        let start_ago_ms = if !self.start_ago.is_zero() {
            self.start_ago.as_millis() as i64
        } else if self.points > 0 {
            self.points as i64 * interval_ms
        } else {
            3_600_000
        };
        let churn_every_points = if self.churn_every.is_zero() {
            0
        } else {
            ((self.churn_every.as_millis() as i64 / interval_ms).max(1)) as u64
        };
        Ok(FleetShape {
            hosts: self.hosts,
            interval_ms,
            start_ms: now_ms - start_ago_ms,
            seed: self.seed,
            churn: self.churn,
            churn_every_points,
        })
    }
}

/// Called after every request with its body and whether the server
/// accepted it (2xx): how a test learns exactly which samples were
/// acknowledged.
pub type Observer = Arc<dyn Fn(&Body, bool) + Send + Sync>;

/// What the senders share.
struct Shared {
    config: Config,
    client: reqwest::Client,
    stats: Stats,
    stop: AtomicBool,
    /// Samples handed to the pacer so far.
    scheduled: AtomicU64,
    started: Instant,
    /// Scrapes completed by each sender.
    points: Vec<AtomicU64>,
    /// The first non-2xx answer, to show why requests are rejected.
    first_rejection: std::sync::Mutex<Option<String>>,
    observer: Option<Observer>,
}

/// Runs the load to its end (points, duration or Ctrl-C) and returns what
/// was measured; `progress` receives the periodic lines.
pub async fn run(config: &Config, progress: &mut dyn FnMut(&str)) -> Result<Report, LoadgenError> {
    run_at(config, crate::now_ms(), progress).await
}

/// [`run`] on a runtime of its own, progress lines to stderr: for tests
/// and tools that are not async themselves.
pub fn run_blocking(config: &Config) -> Result<Report, LoadgenError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LoadgenError::Runtime)?;
    runtime.block_on(run(config, &mut |line| eprintln!("{line}")))
}

/// [`run`] with the fleet placed in time from `now_ms` rather than the
/// clock, so that several servers can receive identical samples.
pub async fn run_at(
    config: &Config,
    now_ms: i64,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, LoadgenError> {
    run_observed(config, now_ms, progress, None).await
}

/// [`run_at`] that shows every request's body and outcome to `observer`.
pub async fn run_observed(
    config: &Config,
    now_ms: i64,
    progress: &mut dyn FnMut(&str),
    observer: Option<Observer>,
) -> Result<Report, LoadgenError> {
    let shape = config.fleet(now_ms)?;
    let senders = config.senders.max(1).min(shape.hosts.max(1));
    // Encoding every label set takes a while for large fleets: in parallel,
    // before the clock starts.
    let mut building = Vec::new();
    for i in 0..senders {
        let shape = shape.clone();
        building.push(tokio::task::spawn_blocking(move || {
            Shard::new(&shape, i, senders)
        }));
    }
    let mut shards = Vec::new();
    for b in building {
        shards.push(b.await??);
    }
    let active_series: u64 = shards.iter().map(Shard::active_series).sum();
    progress(&format!(
        "{} hosts, {} series, {} senders, batches of {} samples, {} to {}",
        shape.hosts,
        active_series,
        senders,
        config.batch,
        if config.rate == 0 {
            "full speed".to_string()
        } else {
            format!("{} samples/s", config.rate)
        },
        config.url
    ));

    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .pool_max_idle_per_host(senders as usize)
        .build()
        .map_err(LoadgenError::Client)?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        client,
        stats: Stats::default(),
        stop: AtomicBool::new(false),
        scheduled: AtomicU64::new(0),
        started: Instant::now(),
        points: (0..senders).map(|_| AtomicU64::new(0)).collect(),
        first_rejection: std::sync::Mutex::new(None),
        observer,
    });
    let end_point = if config.points == 0 {
        u64::MAX
    } else {
        config.points
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, shard) in shards.into_iter().enumerate() {
        tasks.spawn(sender(shared.clone(), i, shard, end_point));
    }

    let deadline = (!config.duration.is_zero()).then(|| shared.started + config.duration);
    let report_every = if config.report_every.is_zero() {
        Duration::from_secs(3600 * 24 * 365)
    } else {
        config.report_every
    };
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + report_every, report_every);
    let mut last_report = Instant::now();
    let mut figures = FleetFigures::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut result = Ok(());
    loop {
        let until_deadline = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600 * 24 * 365));
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(done))) => {
                    figures.series_created += done.series_created;
                    figures.active_series += done.active_series;
                }
                Some(Ok(Err(e))) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    result = Err(e);
                }
                Some(Err(e)) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    result = Err(e.into());
                }
            },
            _ = ticker.tick() => {
                let now = Instant::now();
                let line = shared.stats.progress_line(
                    shared.started.elapsed(),
                    now - last_report,
                    min_point(&shared),
                );
                last_report = now;
                progress(&line);
            }
            _ = tokio::time::sleep(until_deadline), if deadline.is_some() => {
                shared.stop.store(true, Ordering::Relaxed);
            }
            _ = &mut ctrl_c => {
                progress("interrupted: finishing the requests under way");
                shared.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    result?;
    let seconds = shared.started.elapsed().as_secs_f64();
    figures.points = min_point(&shared);
    figures.simulated_seconds = figures.points as f64 * shape.interval_ms as f64 / 1000.0;
    let mut report = shared.stats.report(seconds, figures);
    report.first_rejection = shared
        .first_rejection
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    Ok(report)
}

fn min_point(shared: &Shared) -> u64 {
    shared
        .points
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0)
}

/// What a sender leaves behind.
struct SenderDone {
    series_created: u64,
    active_series: u64,
}

async fn sender(
    shared: Arc<Shared>,
    index: usize,
    mut shard: Shard,
    end_point: u64,
) -> Result<SenderDone, LoadgenError> {
    let mut builder = BodyBuilder::new();
    let batch = shared.config.batch.max(1);
    while !shared.stop.load(Ordering::Relaxed) {
        let more = shard.fill(&mut builder, batch, end_point)?;
        if builder.samples() > 0 {
            let body = builder.finish()?;
            if !pace(&shared, body.samples).await {
                break;
            }
            send(&shared, body).await;
        }
        shared.points[index].store(shard.point(), Ordering::Relaxed);
        if !more {
            break;
        }
    }
    Ok(SenderDone {
        series_created: shard.series_created,
        active_series: shard.active_series(),
    })
}

/// Waits until `samples` more fit the rate; false when the run stopped
/// meanwhile.
async fn pace(shared: &Shared, samples: u64) -> bool {
    let rate = shared.config.rate;
    if rate == 0 {
        return true;
    }
    let before = shared.scheduled.fetch_add(samples, Ordering::Relaxed);
    let at = shared.started + Duration::from_secs_f64(before as f64 / rate as f64);
    // Sleep in slices so that a stop is seen soon.
    while Instant::now() < at {
        if shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = at.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
    !shared.stop.load(Ordering::Relaxed)
}

async fn send(shared: &Shared, body: Body) {
    let started = Instant::now();
    let bytes = body.bytes.len() as u64;
    let observed = shared.observer.as_ref().map(|_| body.clone());
    let response = shared
        .client
        .post(&shared.config.url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .header("User-Agent", "strata-loadgen")
        .body(body.bytes)
        .send()
        .await;
    let outcome = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the answer whole so that the connection is reused.
            let text = response.text().await.unwrap_or_default();
            if !(200..300).contains(&status) {
                let mut first = shared
                    .first_rejection
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    let text: String = text.chars().take(300).collect();
                    *first = Some(format!("{status}: {}", text.trim()));
                }
            }
            Outcome::Status(status)
        }
        Err(e) if e.is_timeout() => Outcome::Failed("timeout"),
        Err(e) if e.is_connect() => Outcome::Failed("connect"),
        Err(e) if e.is_body() || e.is_request() => Outcome::Failed("request"),
        Err(_) => Outcome::Failed("other"),
    };
    shared.stats.record(
        &outcome,
        body.samples,
        bytes,
        body.raw_bytes,
        started.elapsed(),
    );
    let accepted = matches!(outcome, Outcome::Status(status) if (200..300).contains(&status));
    if accepted {
        // By the second the request went out, as the pacer planned it: a
        // rate dip is then a stretch where the server held requests long
        // enough to block every sender, not a single late answer.
        let second = started.saturating_duration_since(shared.started).as_secs() as usize;
        shared.stats.accepted_at(second, body.samples);
    }
    if let (Some(observer), Some(body)) = (&shared.observer, observed) {
        observer(&body, accepted);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn flag_defaults_match_the_default_config() {
        let parsed = Cli::try_parse_from(["loadgen"]).expect("parse").config;
        let json = |c: &Config| serde_json::to_value(c).expect("serialize");
        assert_eq!(json(&parsed), json(&Config::default()));
    }

    #[test]
    fn fleet_start_and_churn_follow_the_flags() {
        let now = 1_700_000_000_000;
        let check = |args: &[&str], want: Result<(i64, u64), &str>| {
            let mut argv = vec!["loadgen"];
            argv.extend_from_slice(args);
            let config = Cli::try_parse_from(argv).expect("parse").config;
            let got = config
                .fleet(now)
                .map(|f| (now - f.start_ms, f.churn_every_points))
                .map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{args:?}");
        };
        check(&["--points", "40"], Ok((600_000, 0)));
        check(&["--duration", "1m"], Ok((3_600_000, 0)));
        check(&["--points", "4", "--start-ago", "2h"], Ok((7_200_000, 0)));
        check(
            &["--points", "4", "--churn", "0.1", "--churn-every", "10m"],
            Ok((60_000, 40)),
        );
        check(
            &["--points", "4", "--interval", "1m", "--churn-every", "10s"],
            Ok((240_000, 1)),
        );
        check(
            &[],
            Err("nothing bounds the run: give --points or --duration"),
        );
        check(
            &["--points", "1", "--churn", "1.5"],
            Err("--churn 1.5 is not a fraction between 0 and 1"),
        );
        check(
            &["--points", "1", "--interval", "0s"],
            Err("--interval must be at least 1ms"),
        );
    }
}
