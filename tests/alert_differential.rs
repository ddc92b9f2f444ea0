//! Rule evaluation against the real thing: one rule file evaluated by
//! Prometheus and by `strata single --rule` over the same data must give the
//! same recording-rule series, the same `ALERTS`/`ALERTS_FOR_STATE` series
//! (so the same pending, firing and resolved transitions at the same
//! times), the same alerts with the same `activeAt`, value, labels and
//! annotations in `/api/v1/alerts`, and the same rule health.
//!
//! Prometheus scrapes itself and a node-exporter every second and remote-
//! writes the scraped samples (not its rule results) into Strata. Both
//! evaluate the groups every 2s at the same instants: Strata places a
//! group's evaluations within the interval like Prometheus (checked here on
//! the groups' `lastEvaluation`), so every result carries the same
//! timestamp on both sides.
//!
//! Prometheus evaluates over its own TSDB while Strata reads the copy remote
//! write delivers about a second later. The rules therefore read scraped
//! data only through `offset 5s` (data older than the evaluation time, long
//! since delivered), not through a query offset: Prometheus 2.42 has none,
//! and it would move the results' timestamps. `time()` and the rules'
//! own results (read within a group, at the same evaluation) need no offset.
//! The alerts flip on their own: gated by `time() % 20` (open 10s, closed
//! 10s), or by a counter (`prometheus_tsdb_head_samples_appended_total`
//! crossing multiples of 20000), with `for` and `keep_firing_for` (which
//! Prometheus 2.42 has), so that pending, firing and resolution all happen
//! within the run. The comparison window starts in a closed phase after
//! both evaluators wrote `ALERTS` (after their restore), so that no alert
//! carries an episode that began while only Strata ran.
//!
//! Needs `prometheus` and `prometheus-node-exporter` (`scripts/fetch-peers
//! prometheus`); missing, the test fails unless `STRATA_SKIP_PEER_TESTS=1`.
//! A mismatch prints the rule, both values and the timestamps.

use std::collections::{BTreeMap, BTreeSet};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_e2e::peers::{self, Peer};
use strata_e2e::promapi::{Answer, LabelSet, SeriesPoints, parse_answer, values_equal};
use strata_e2e::{Single, encode_params, now_ms};

const BIN: &str = env!("CARGO_BIN_EXE_strata");
const INTERVAL_MS: i64 = 2_000;
/// The gate of the time-driven alerts: open the first half of each cycle.
const CYCLE_MS: i64 = 20_000;
/// Where in the cycle the comparison starts: the gate closed 7s earlier,
/// longer than `keep_firing_for` plus an interval, so every gated alert is
/// resolved on both sides.
const WINDOW_PHASE_MS: i64 = 17_000;
/// Cycles compared.
const CYCLES: i64 = 2;
const EXTERNAL_URL: &str = "http://strata.test:9090";
const TOLERANCE: f64 = 1e-9;

const RULES: &str = r#"
groups:
  - name: records
    interval: 2s
    rules:
      - record: diff:up:sum
        expr: sum by (job) (up offset 5s)
      - record: diff:scrape_samples:max
        expr: max by (job) (scrape_samples_scraped offset 5s)
        labels:
          kind: scrape
      - record: diff:cpu:rate10s
        expr: sum by (mode) (rate(node_cpu_seconds_total[10s] offset 5s))
      - record: diff:head_samples:increase20s
        expr: sum by (job) (increase(prometheus_tsdb_head_samples_appended_total[20s] offset 5s))
      - record: diff:phase
        expr: vector(time() % 20)
      # Reads the group's first result at the same evaluation.
      - record: diff:up:sum_doubled
        expr: diff:up:sum * 2
      # Present in the first half of each cycle only: staleness markers.
      - record: diff:gate
        expr: diff:phase < 10

  - name: alerts
    interval: 2s
    rules:
      - alert: Phase
        expr: vector(time() % 20) < 10
        for: 4s
        keep_firing_for: 4s
        labels:
          severity: warning
        annotations:
          summary: 'phase {{ printf "%.3f" $value }} at {{ $externalLabels.site }}'
      - alert: TargetUp
        expr: up offset 5s == 1 and on() (vector(time() % 20) < 10)
        for: 2s
        labels:
          severity: '{{ if eq $labels.job "node" }}page{{ else }}ticket{{ end }}'
        annotations:
          summary: '{{ $labels.instance | reReplaceAll ":[0-9]+$" "" }} of {{ $labels.job | toUpper }} is up ({{ $value }})'
          targets: '{{ with query "count(up offset 5s == 1)" }}{{ . | first | value }}{{ end }} of {{ with query "count(up offset 5s)" }}{{ . | first | value | humanize }}{{ end }} up'
          jobs: '{{ range query "count by (job) (up offset 5s)" | sortByLabel "job" }}{{ .Labels.job | title }}={{ .Value }};{{ end }}'
          target: '{{ define "target" }}{{ .Labels.job }}/{{ .Labels.instance | stripPort }}{{ end }}{{ template "target" . }}'
          humanized: '{{ 1700000000.25 | humanizeTimestamp }}|{{ 3725.5 | humanizeDuration }}|{{ 0.1234 | humanizePercentage }}|{{ 123456789 | humanize1024 }}|{{ 1700000000 | toTime }}'
          links: '{{ $externalURL }}|{{ graphLink "up" }}|{{ tableLink "up" }}|{{ .Labels.job | toLower }}'
      - alert: CounterFlip
        expr: floor(sum by (job) (prometheus_tsdb_head_samples_appended_total offset 5s) / 20000) % 2 == 0
        for: 2s
        keep_firing_for: 2s
        annotations:
          summary: '{{ $labels.job }} at {{ $value | humanize }}'

  - name: limited
    interval: 2s
    limit: 1
    rules:
      - record: diff:limited
        expr: up offset 5s
      - alert: TooMany
        expr: up offset 5s
"#;

/// `{addr}` is left for `Peer` to fill in with Prometheus' own address.
fn prometheus_config(node_exporter: Option<&Peer>, strata: &Single, rules: &str) -> String {
    let scrape_configs = match node_exporter {
        None => "scrape_configs: []".to_string(),
        Some(node) => format!(
            r#"scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ["{{addr}}"]}}]
  - job_name: node
    static_configs: [{{targets: ["{}"]}}]"#,
            node.addr()
        ),
    };
    // External labels go on remote-written series too: dropped there, so
    // that Strata holds the series as Prometheus' TSDB does. Rule results
    // stay home: each side's own are compared.
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 2s
  external_labels:
    site: lab
rule_files: ["{rules}"]
{scrape_configs}
remote_write:
  - url: {strata}/api/v1/write
    queue_config:
      min_shards: 1
      max_shards: 1
      batch_send_deadline: 500ms
      max_samples_per_send: 5000
    write_relabel_configs:
      - source_labels: [__name__]
        regex: "diff:.*|ALERTS|ALERTS_FOR_STATE"
        action: drop
      - regex: site
        action: labeldrop
"#,
        strata = strata.base_url(),
    )
}

/// `2024-01-02T03:04:05.678901234Z` as milliseconds since the epoch
/// (truncated, as Prometheus truncates its evaluation times).
fn rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    // Days from the civil date (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + millis)
}

fn get_json(base_url: &str, path_and_query: &str) -> Value {
    let (status, body) = peers::http_get(&format!("{base_url}{path_and_query}"));
    assert_eq!(status, 200, "GET {base_url}{path_and_query}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path_and_query}: {e}: {body}"))
}

fn label_set(json: &Value) -> LabelSet {
    json.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn number(json: &Value) -> f64 {
    match json.as_str().unwrap_or_default() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

/// What one poll of `/api/v1/alerts` showed of one alert: annotations and
/// value by (labels, activeAt ms, state).
type Seen = BTreeMap<(LabelSet, i64, String), BTreeMap<String, (f64, LabelSet)>>;

fn poll_alerts(base_url: &str, seen: &mut Seen) {
    let json = get_json(base_url, "/api/v1/alerts");
    for alert in json["data"]["alerts"].as_array().into_iter().flatten() {
        let Some(active_at) = alert["activeAt"].as_str().and_then(rfc3339_ms) else {
            panic!("{base_url}: alert without a valid activeAt: {alert}");
        };
        let key = (
            label_set(&alert["labels"]),
            active_at,
            alert["state"].as_str().unwrap_or_default().to_string(),
        );
        let value = number(&alert["value"]);
        seen.entry(key).or_default().insert(
            format!("{value:e}"),
            (value, label_set(&alert["annotations"])),
        );
    }
}

/// The raw samples in `(from, to]` (ms) of every series `selector` matches
/// (open at `from`: range selectors of Prometheus 2.42 and 3 disagree there).
fn raw_series(
    base_url: &str,
    selector: &str,
    from: i64,
    to: i64,
) -> BTreeMap<LabelSet, Vec<(i64, f64)>> {
    let query = format!("{selector}[{}ms]", to - from);
    let time = format!("{}.{:03}", to.div_euclid(1000), to.rem_euclid(1000));
    let params = encode_params(&[("query", query.as_str()), ("time", time.as_str())]);
    let (_, body) = peers::http_get(&format!("{base_url}/api/v1/query?{params}"));
    match parse_answer(&body) {
        Answer::Series { series, .. } => series
            .into_iter()
            .map(|SeriesPoints { labels, points }| {
                let points = points.into_iter().filter(|(t, _)| *t > from).collect();
                (labels, points)
            })
            .collect(),
        other => panic!("{base_url}: {query} answered {other:?}"),
    }
}

/// The rule that writes a series, for mismatch reports.
fn rule_of(labels: &LabelSet) -> String {
    let name = labels.get("__name__").map(String::as_str).unwrap_or("");
    let key = if name.starts_with("ALERTS") {
        format!(
            "alert: {}",
            labels.get("alertname").map(String::as_str).unwrap_or("")
        )
    } else {
        format!("record: {name}")
    };
    let mut lines = RULES
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("- {key}")));
    match (lines.next(), lines.next()) {
        (Some(rule), Some(expr)) => format!("{} / {}", rule.trim(), expr.trim()),
        _ => key,
    }
}

fn format_labels(labels: &LabelSet) -> String {
    strata_e2e::promapi::format_labels(labels)
}

/// Compares raw series of both sides; `map` turns Strata's value into the
/// one Prometheus writes.
fn compare_series(
    what: &str,
    prometheus: &BTreeMap<LabelSet, Vec<(i64, f64)>>,
    strata: &BTreeMap<LabelSet, Vec<(i64, f64)>>,
    map: impl Fn(f64) -> f64,
    mismatches: &mut Vec<String>,
) -> usize {
    let keys: BTreeSet<&LabelSet> = prometheus.keys().chain(strata.keys()).collect();
    let mut compared = 0;
    for labels in keys {
        let empty = Vec::new();
        let want = prometheus.get(labels).unwrap_or(&empty);
        let got: Vec<(i64, f64)> = strata
            .get(labels)
            .unwrap_or(&empty)
            .iter()
            .map(|(t, v)| (*t, map(*v)))
            .collect();
        compared += want.len();
        let n = want.len().max(got.len());
        let first = (0..n).find(|&i| match (want.get(i), got.get(i)) {
            (Some((tw, vw)), Some((tg, vg))) => tw != tg || !values_equal(*vw, *vg, TOLERANCE),
            _ => true,
        });
        if let Some(i) = first {
            mismatches.push(format!(
                "{what} {} ({}): first difference at sample {i} of {}/{}\n  prometheus: {}\n  strata:     {}",
                format_labels(labels),
                rule_of(labels),
                want.len(),
                got.len(),
                around(want, i),
                around(&got, i),
            ));
        }
    }
    compared
}

/// `value@ms` of the samples around index `i`.
fn around(points: &[(i64, f64)], i: usize) -> String {
    let start = i.saturating_sub(1).min(points.len().saturating_sub(2));
    points[start..(i + 3).min(points.len()).max(start)]
        .iter()
        .map(|(t, v)| format!("{v}@{t}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Counts of alerts going pending, pending going firing, and firing
/// resolving (its `ALERTS` series ends before `to`) in raw `ALERTS` series.
fn transitions(alerts: &BTreeMap<LabelSet, Vec<(i64, f64)>>, to: i64) -> (usize, usize, usize) {
    let mut timelines: BTreeMap<LabelSet, BTreeMap<i64, String>> = BTreeMap::new();
    for (labels, points) in alerts {
        let mut alert = labels.clone();
        let state = alert.remove("alertstate").unwrap_or_default();
        let timeline = timelines.entry(alert).or_default();
        for (t, _) in points {
            timeline.insert(*t, state.clone());
        }
    }
    let (mut pending, mut fired, mut resolved) = (0, 0, 0);
    for timeline in timelines.values() {
        for (t, state) in timeline {
            let before = timeline.get(&(t - INTERVAL_MS)).map(String::as_str);
            let after = timeline.get(&(t + INTERVAL_MS));
            match (before, state.as_str()) {
                (None, "pending") => pending += 1,
                (Some("pending"), "firing") => fired += 1,
                _ => {}
            }
            if state == "firing" && after.is_none() && t + INTERVAL_MS <= to {
                resolved += 1;
            }
        }
    }
    (pending, fired, resolved)
}

#[test]
fn rules_evaluate_like_prometheus() {
    if !peers::present_or_skip(
        "rules_evaluate_like_prometheus",
        &["prometheus", "prometheus-node-exporter"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).expect("write rules");
    let rules = rules.display().to_string();
    let strata = Single::start_with_args(
        BIN,
        &[
            "--rule",
            &rules,
            "--external-label",
            "site=lab",
            "--external-url",
            EXTERNAL_URL,
        ],
    );
    let node_exporter = peers::node_exporter();
    // Remote write sends only samples appended after its queue started:
    // start without targets, then add them.
    let prometheus = peers::prometheus(
        &prometheus_config(None, &strata, &rules),
        &[&format!("--web.external-url={EXTERNAL_URL}")],
    );
    let started = now_ms();
    sleep(Duration::from_secs(1));
    prometheus.reload_file(
        "prometheus.yml",
        &prometheus_config(Some(&node_exporter), &strata, &rules),
        "/-/reload",
    );
    let data_from = now_ms();

    // Both wrote ALERTS (third evaluation), and every window the rules read
    // (20s at most, `offset 5s`) starts after the first sample of every
    // series: over a series' start Prometheus 2.42 extrapolates `rate` and
    // `increase` differently from the 2.53 rules Strata follows. Then the
    // next closed phase.
    let ready = (started + 4 * INTERVAL_MS).max(data_from + 25_000 + 2 * INTERVAL_MS);
    let mut from = ready - ready.rem_euclid(CYCLE_MS) + WINDOW_PHASE_MS;
    if from < ready {
        from += CYCLE_MS;
    }
    let to = from + CYCLES * CYCLE_MS;
    let (mut seen_prometheus, mut seen_strata) = (Seen::new(), Seen::new());
    while now_ms() < to + INTERVAL_MS {
        let poll = Instant::now();
        poll_alerts(&prometheus.base_url(), &mut seen_prometheus);
        poll_alerts(&strata.base_url(), &mut seen_strata);
        sleep(Duration::from_millis(300).saturating_sub(poll.elapsed()));
    }

    let mut mismatches = Vec::new();
    let prom_url = prometheus.base_url();
    let strata_url = strata.base_url();

    let prom_rules = get_json(&prom_url, "/api/v1/rules");
    let strata_rules = get_json(&strata_url, "/api/v1/rules");
    let groups = |json: &Value| -> BTreeMap<String, Value> {
        json["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                (
                    g["name"].as_str().unwrap_or_default().to_string(),
                    g.clone(),
                )
            })
            .collect()
    };
    let (prom_groups, strata_groups) = (groups(&prom_rules), groups(&strata_rules));
    assert_eq!(
        prom_groups.keys().collect::<Vec<_>>(),
        strata_groups.keys().collect::<Vec<_>>(),
        "rule groups differ"
    );
    for (name, want) in &prom_groups {
        let got = &strata_groups[name];
        // Rule health, and the error of rules over the group limit.
        let rules = |g: &Value| -> Vec<(String, String, String)> {
            g["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["health"].as_str().unwrap_or_default().to_string(),
                        r["lastError"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        };
        if rules(want) != rules(got) {
            mismatches.push(format!(
                "group {name}: rule (name, health, lastError) differ\n  prometheus: {:?}\n  strata:     {:?}",
                rules(want),
                rules(got)
            ));
        }
    }
    let limited = rules_of(&prom_groups, "limited");
    assert!(
        limited.iter().all(|h| h == "err"),
        "the limited group's rules should fail in Prometheus: {limited:?}"
    );

    // Recording rule series, ALERTS and ALERTS_FOR_STATE (Prometheus writes
    // activeAt in whole seconds, Strata keeps the milliseconds as fraction).
    let records = (
        raw_series(&prom_url, r#"{__name__=~"diff:.*"}"#, from, to),
        raw_series(&strata_url, r#"{__name__=~"diff:.*"}"#, from, to),
    );
    let alerts = (
        raw_series(&prom_url, "ALERTS", from, to),
        raw_series(&strata_url, "ALERTS", from, to),
    );
    let for_state = (
        raw_series(&prom_url, "ALERTS_FOR_STATE", from, to),
        raw_series(&strata_url, "ALERTS_FOR_STATE", from, to),
    );
    // Evaluation instants: each group's results at the same place in the
    // interval (the series comparison below would show it too, less plainly).
    for (group, written) in [("records", &records), ("alerts", &alerts)] {
        let slots = |series: &BTreeMap<LabelSet, Vec<(i64, f64)>>| -> BTreeSet<i64> {
            series
                .values()
                .flatten()
                .map(|(t, _)| t.rem_euclid(INTERVAL_MS))
                .collect()
        };
        let (want, got) = (slots(&written.0), slots(&written.1));
        if want.len() != 1 || want != got {
            mismatches.push(format!(
                "group {group}: results at {want:?} ms into each interval by Prometheus, at {got:?} by Strata"
            ));
        }
    }
    let samples = compare_series("recording", &records.0, &records.1, |v| v, &mut mismatches);
    compare_series("alerts", &alerts.0, &alerts.1, |v| v, &mut mismatches);
    compare_series(
        "for-state",
        &for_state.0,
        &for_state.1,
        f64::floor,
        &mut mismatches,
    );
    assert!(
        records.0.len() >= 10 && samples >= records.0.len() * 5,
        "too little recorded to compare: {} series, {samples} samples",
        records.0.len()
    );
    let (pending, fired, resolved) = transitions(&alerts.0, to);
    assert!(
        pending > 0 && fired > 0 && resolved > 0,
        "the window must hold alerts going pending ({pending}), firing ({fired}) and resolved ({resolved})"
    );

    // Alerts as the API shows them: the same episodes (labels, activeAt,
    // state) starting in the window, and where both showed the same value,
    // the same annotations.
    let in_window = |seen: &Seen| -> BTreeSet<(LabelSet, i64, String)> {
        seen.keys()
            .filter(|(_, active_at, _)| *active_at >= from && *active_at <= to - INTERVAL_MS)
            .cloned()
            .collect()
    };
    let (episodes_prometheus, episodes_strata) =
        (in_window(&seen_prometheus), in_window(&seen_strata));
    for only in episodes_prometheus.difference(&episodes_strata) {
        mismatches.push(format!(
            "alert {} active at {} ({}) shown by Prometheus only",
            format_labels(&only.0),
            only.1,
            only.2
        ));
    }
    for only in episodes_strata.difference(&episodes_prometheus) {
        mismatches.push(format!(
            "alert {} active at {} ({}) shown by Strata only",
            format_labels(&only.0),
            only.1,
            only.2
        ));
    }
    let mut annotated = 0;
    for key in episodes_prometheus.intersection(&episodes_strata) {
        for (value, (v, want)) in &seen_prometheus[key] {
            let Some((_, got)) = seen_strata[key].get(value) else {
                continue;
            };
            annotated += 1;
            if want != got {
                mismatches.push(format!(
                    "alert {} active at {} with value {v}: annotations differ\n  prometheus: {want:?}\n  strata:     {got:?}",
                    format_labels(&key.0),
                    key.1
                ));
            }
        }
    }
    if annotated == 0 {
        mismatches.push("no alert was shown by both with the same value".to_string());
    }

    assert!(
        mismatches.is_empty(),
        "{} differences from Prometheus over [{from}, {to}] ms:\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
    eprintln!(
        "equal to Prometheus over {} s: {} recording series ({samples} samples), {} ALERTS series \
         ({pending} pending, {fired} fired, {resolved} resolved), {} alert episodes in the API, \
         {annotated} annotation sets",
        (to - from) / 1000,
        records.0.len(),
        alerts.0.len(),
        episodes_prometheus.len()
    );
}

/// The health of every rule of group `name`.
fn rules_of(groups: &BTreeMap<String, Value>, name: &str) -> Vec<String> {
    groups
        .get(name)
        .and_then(|g| g["rules"].as_array())
        .into_iter()
        .flatten()
        .map(|r| r["health"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn rfc3339_parsing() {
    for (text, want) in [
        ("1970-01-01T00:00:00Z", Some(0)),
        ("1970-01-01T00:00:01.5Z", Some(1_500)),
        ("2023-11-14T22:13:20.123456789Z", Some(1_700_000_000_123)),
        ("2024-02-29T00:00:00.000Z", Some(1_709_164_800_000)),
        ("2024-02-29T00:00:00", None),
    ] {
        assert_eq!(rfc3339_ms(text), want, "{text}");
    }
}
