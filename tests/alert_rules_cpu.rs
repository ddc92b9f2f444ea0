//! Measurement: CPU that `strata single --rule` spends evaluating 1,000 rules
//! (500 recording, 500 alerting, in 10 groups) every 15 s over 100,000
//! series. Not a pass/fail test (ignored by default); run it with
//!
//! ```text
//! cargo nextest run --release -p strata --test alert_rules_cpu --run-ignored only --no-capture
//! ```
//!
//! It prints the process' CPU time over the measured window as a share of one
//! core, and fails only when no evaluation happened or one failed.

use std::fmt::Write as _;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use strata_e2e::{Single, now_ms};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const METRICS: usize = 1_000;
const SERIES_PER_METRIC: usize = 100;
const SAMPLES: usize = 20;
const STEP_MS: i64 = 15_000;
const GROUPS: usize = 10;
const WINDOW: Duration = Duration::from_secs(60);

fn rules() -> String {
    let mut out = String::from("groups:\n");
    let per_group = METRICS / GROUPS;
    for g in 0..GROUPS {
        let _ = write!(out, "  - name: g{g}\n    interval: 15s\n    rules:\n");
        for i in g * per_group..(g + 1) * per_group {
            if i % 2 == 0 {
                let _ = write!(
                    out,
                    "      - record: job:m_{i}:rate5m\n        expr: sum by (job) (rate(m_{i}[5m]))\n"
                );
            } else {
                let _ = write!(
                    out,
                    "      - alert: M{i}High\n        expr: m_{i} > 1e15\n        for: 1m\n"
                );
            }
        }
    }
    out
}

/// User plus system CPU time of `pid`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
#[ignore = "measurement: CPU of 1,000 rules every 15s over 100k series; run with --run-ignored only"]
fn rules_cpu_share() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, rules()).expect("write rules");
    let path = path.display().to_string();
    let single = Single::start_with_args(BIN, &["--rule", &path]);

    let loading = Instant::now();
    let importer = single.importer();
    let end = now_ms();
    let timestamps: Vec<String> = (0..SAMPLES)
        .map(|k| (end - (SAMPLES - 1 - k) as i64 * STEP_MS).to_string())
        .collect();
    let timestamps = timestamps.join(",");
    for m in 0..METRICS {
        let mut body = String::new();
        for s in 0..SERIES_PER_METRIC {
            let values: Vec<String> = (0..SAMPLES).map(|k| (k * (s + 1)).to_string()).collect();
            let _ = writeln!(
                body,
                r#"{{"metric":{{"__name__":"m_{m}","job":"j{}","instance":"i{s}"}},"values":[{}],"timestamps":[{timestamps}]}}"#,
                s % 10,
                values.join(",")
            );
        }
        let response = importer.import(body).expect("import");
        assert!(response.status < 300, "import: {}", response.body);
    }
    eprintln!(
        "loaded {} series x {SAMPLES} samples in {:?}",
        METRICS * SERIES_PER_METRIC,
        loading.elapsed()
    );

    // Let the flush after the import and the first evaluations pass.
    sleep(Duration::from_secs(20));
    let before = single.metrics();
    let cpu_before = cpu_time(single.pid());
    let started = Instant::now();
    sleep(WINDOW);
    let cpu = cpu_time(single.pid()) - cpu_before;
    let wall = started.elapsed();
    let after = single.metrics();

    let evaluations = metric_sum(&after, "strata_alert_group_evaluations_total")
        - metric_sum(&before, "strata_alert_group_evaluations_total");
    let failures = metric_sum(&after, "strata_alert_rule_evaluation_failures_total");
    let duration_sum = metric_sum(&after, "strata_alert_group_evaluation_duration_seconds_sum")
        - metric_sum(
            &before,
            "strata_alert_group_evaluation_duration_seconds_sum",
        );
    eprintln!(
        "window {wall:?}: {evaluations} group evaluations ({} rule evaluations), \
         process CPU {cpu:?} = {:.1}% of one core; evaluation wall time {duration_sum:.2}s",
        evaluations as usize * (METRICS / GROUPS),
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    assert!(
        evaluations >= GROUPS as f64,
        "too few evaluations: {evaluations}"
    );
    assert_eq!(failures, 0.0, "evaluation failures:\n{after}");
}
