//! `strata alert` end to end with the real Alertmanager: data goes into
//! `strata single`, a separate `strata alert` evaluates a `for: 5s` rule at a
//! 1s interval against it (query API and remote write), the alert goes
//! pending, fires, reaches Alertmanager (checked through Alertmanager's own
//! API), survives a restart of `strata alert` with the same `activeAt`, and
//! resolves when the data changes. `strata single --rule` does the same in
//! one process, and with two Alertmanagers, one of them stopped, the other
//! is served without delay.
//!
//! Alertmanager comes from `scripts/fetch-peers prometheus`; missing, the
//! test fails, unless `STRATA_SKIP_PEER_TESTS=1` skips it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_e2e::peers::{Peer, http_get, present_or_skip};
use strata_e2e::{Single, free_port, now_ms};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

const RULES: &str = r#"
groups:
  - name: temperature
    interval: 1s
    rules:
      - alert: HighTemperature
        expr: temp_celsius > 50
        for: 5s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.room }} is at {{ $value }}"
      - record: room:temp_celsius:max
        expr: max by (room) (temp_celsius)
"#;

/// A `strata alert` child process; killed on drop.
struct Alert {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Alert {
    fn start(dir: &Path, single: &Single, alertmanager: &Peer, run: u32) -> Alert {
        let addr = free_port().to_string();
        let log = dir.join(format!("alert-{run}.log"));
        let rules = dir.join("rules.yml");
        let child = Command::new(BIN)
            .args([
                "alert",
                "--listen",
                &addr,
                "--rule",
                &rules.display().to_string(),
                "--datasource.url",
                &single.base_url(),
                "--remote-write.url",
                &format!("{}/api/v1/write", single.base_url()),
                "--notifier.url",
                &alertmanager.base_url(),
                "--external-label",
                "site=lab",
                "--for-grace-period",
                "1s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create log"))
            .spawn()
            .expect("start strata alert");
        let alert = Alert { child, addr, log };
        alert.wait_until("ready", |a| {
            http_get_quiet(&format!("http://{}/ready", a.addr)).is_some_and(|(s, _)| s == 200)
        });
        alert
    }

    fn alerts(&self) -> Vec<Value> {
        let (status, body) = http_get(&format!("http://{}/api/v1/alerts", self.addr));
        assert_eq!(status, 200, "{body}");
        let json: Value = serde_json::from_str(&body).expect("json");
        json["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The state and activeAt of the one alert, if any.
    fn alert(&self) -> Option<(String, String)> {
        let alerts = self.alerts();
        assert!(alerts.len() <= 1, "{alerts:?}");
        alerts.first().map(|a| {
            (
                a["state"].as_str().unwrap_or_default().to_string(),
                a["activeAt"].as_str().unwrap_or_default().to_string(),
            )
        })
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Alert) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "strata alert: {what} did not happen in 20s; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "strata alert did not stop on SIGTERM"
            );
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Alert {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- strata alert log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn http_get_quiet(url: &str) -> Option<(u16, String)> {
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?
        .get(url)
        .send()
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().unwrap_or_default()))
}

fn import_temp(single: &Single, value: f64) {
    let line = format!(
        r#"{{"metric":{{"__name__":"temp_celsius","room":"lab"}},"values":[{value}],"timestamps":[{}]}}"#,
        now_ms()
    );
    let response = single.import(&line);
    assert!(response.status < 300, "import: {}", response.body);
}

/// Alerts Alertmanager holds with alertname `HighTemperature`.
fn alertmanager_alerts(alertmanager: &Peer) -> Vec<Value> {
    let (status, body) =
        alertmanager.get("/api/v2/alerts?filter=alertname%3D%22HighTemperature%22");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).expect("json")
}

#[test]
fn alert_fires_reaches_alertmanager_survives_restart_and_resolves() {
    if !present_or_skip(
        "alert_fires_reaches_alertmanager_survives_restart_and_resolves",
        &["prometheus-alertmanager"],
    ) {
        return;
    }
    let alertmanager = start_alertmanager();
    let single = Single::start(BIN);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rules.yml"), RULES).expect("write rules");
    import_temp(&single, 80.0);

    let alert = Alert::start(dir.path(), &single, &alertmanager, 1);
    alert.wait_until("pending", |a| {
        a.alert().is_some_and(|(s, _)| s == "pending")
    });
    let pending_since = Instant::now();
    alert.wait_until("firing", |a| a.alert().is_some_and(|(s, _)| s == "firing"));
    assert!(
        pending_since.elapsed() >= Duration::from_secs(3),
        "fired {:?} after pending, before `for: 5s`",
        pending_since.elapsed()
    );
    let (_, active_at) = alert.alert().expect("alert");

    // Alertmanager got it, with the external label and the annotation expanded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let received = loop {
        let alerts = alertmanager_alerts(&alertmanager);
        if let Some(a) = alerts.first() {
            break a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not receive the alert"
        );
        sleep(Duration::from_millis(200));
    };
    assert_eq!(received["labels"]["severity"], "page", "{received}");
    assert_eq!(received["labels"]["site"], "lab", "{received}");
    assert_eq!(received["labels"]["room"], "lab", "{received}");
    assert_eq!(
        received["annotations"]["summary"], "lab is at 80",
        "{received}"
    );
    assert!(
        received["generatorURL"]
            .as_str()
            .is_some_and(|u| u.contains("/graph?g0.expr=")),
        "{received}"
    );

    // The recording rule and ALERTS went to single through remote write.
    let query = |q: &str| {
        let response = single.get(&format!(
            "/api/v1/query?{}",
            strata_e2e::encode_params(&[("query", q)])
        ));
        let json: Value = serde_json::from_str(&response.body).expect("json");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while query("room:temp_celsius:max").is_empty()
        || query(r#"ALERTS{alertstate="firing"}"#).is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "recording or ALERTS series missing in single"
        );
        sleep(Duration::from_millis(200));
    }

    // A restart keeps the alert firing with the same activeAt.
    alert.stop();
    let alert = Alert::start(dir.path(), &single, &alertmanager, 2);
    alert.wait_until("firing after restart", |a| {
        a.alert().is_some_and(|(s, _)| s == "firing")
    });
    assert_eq!(
        alert.alert().expect("alert").1,
        active_at,
        "activeAt changed"
    );

    // New data below the threshold resolves it, here and in Alertmanager.
    import_temp(&single, 20.0);
    alert.wait_until("resolved", |a| a.alert().is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alertmanager_alerts(&alertmanager).is_empty() {
        assert!(
            Instant::now() < deadline,
            "Alertmanager still has the alert: {:?}",
            alertmanager_alerts(&alertmanager)
        );
        sleep(Duration::from_millis(200));
    }
}

fn start_alertmanager() -> Peer {
    Peer::start_with_files(
        "prometheus-alertmanager",
        &[
            "--config.file={dir}/alertmanager.yml",
            "--storage.path={dir}/data",
            "--web.listen-address={addr}",
            "--cluster.listen-address=",
        ],
        "/-/ready",
        &[(
            "alertmanager.yml",
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )],
    )
}

/// `strata single --rule`: evaluation in-process, results in its own storage,
/// the rules API on its port, alerts sent to Alertmanager.
#[test]
fn single_evaluates_rules_in_process() {
    if !present_or_skip(
        "single_evaluates_rules_in_process",
        &["prometheus-alertmanager"],
    ) {
        return;
    }
    let alertmanager = start_alertmanager();
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES.replace("for: 5s", "for: 0s")).expect("write rules");
    let rules = rules.display().to_string();
    let am = alertmanager.base_url();
    let single = Single::start_with_args(
        BIN,
        &[
            "--rule",
            &rules,
            "--notifier.url",
            &am,
            "--evaluation-interval",
            "1s",
        ],
    );
    import_temp(&single, 90.0);

    let deadline = Instant::now() + Duration::from_secs(15);
    while alertmanager_alerts(&alertmanager).is_empty() {
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not receive the alert"
        );
        sleep(Duration::from_millis(200));
    }
    let response = single.get("/api/v1/alerts");
    assert_eq!(response.status, 200, "{}", response.body);
    let json: Value = serde_json::from_str(&response.body).expect("json");
    assert_eq!(json["data"]["alerts"][0]["state"], "firing", "{json}");

    let response = single.get("/api/v1/rules");
    let json: Value = serde_json::from_str(&response.body).expect("json");
    let rules = &json["data"]["groups"][0]["rules"];
    assert_eq!(rules[0]["type"], "alerting", "{json}");
    assert_eq!(rules[0]["health"], "ok", "{json}");
    assert_eq!(rules[1]["type"], "recording", "{json}");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = single.get("/api/v1/query?query=room%3Atemp_celsius%3Amax");
        let json: Value = serde_json::from_str(&response.body).expect("json");
        if json["data"]["result"][0]["value"][1] == "90" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recording result missing: {json}"
        );
        sleep(Duration::from_millis(200));
    }
}

/// Sends a signal (`STOP`, `CONT`) to a process.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Every Alertmanager has its own queue: with one of two real Alertmanagers
/// stopped (SIGSTOP: it accepts connections and never answers, the worst
/// case for a sender), the other gets the firing alert and its resolution
/// at once, well within the 10s request timeout the stopped one holds its
/// sender for (3 attempts each); once continued, the stopped one catches up.
#[test]
fn stopped_alertmanager_does_not_delay_the_other() {
    if !present_or_skip(
        "stopped_alertmanager_does_not_delay_the_other",
        &["prometheus-alertmanager"],
    ) {
        return;
    }
    let live = start_alertmanager();
    let stopped = start_alertmanager();
    signal(stopped.pid(), "STOP");
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES.replace("for: 5s", "for: 0s")).expect("write rules");
    let rules = rules.display().to_string();
    let (stopped_url, live_url) = (stopped.base_url(), live.base_url());
    // The stopped Alertmanager comes first, so a shared sender would
    // meet it first.
    let single = Single::start_with_args(
        BIN,
        &[
            "--rule",
            &rules,
            "--notifier.url",
            &stopped_url,
            "--notifier.url",
            &live_url,
            "--notifier.timeout",
            "10s",
            "--evaluation-interval",
            "1s",
        ],
    );
    let within = |what: &str, limit: Duration, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < limit,
                "{what} did not happen within {limit:?}; single's metrics:\n{}",
                single
                    .metrics()
                    .lines()
                    .filter(|l| l.starts_with("strata_alert_notification"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            sleep(Duration::from_millis(100));
        }
        started.elapsed()
    };

    import_temp(&single, 90.0);
    let took = within(
        "the live Alertmanager receiving the alert",
        Duration::from_secs(6),
        &|| !alertmanager_alerts(&live).is_empty(),
    );
    eprintln!("live Alertmanager got the alert {took:?} after the data");
    // Resolution: the stopped Alertmanager's sender is still waiting on its
    // first request; the live one hears at once.
    import_temp(&single, 20.0);
    let took = within(
        "the live Alertmanager seeing the resolution",
        Duration::from_secs(6),
        &|| alertmanager_alerts(&live).is_empty(),
    );
    eprintln!("live Alertmanager saw the resolution {took:?} after the data");
    let metrics = single.metrics();
    let sent_to_stopped = metrics.lines().any(|l| {
        l.starts_with("strata_alert_notifications_sent_total") && l.contains(&stopped_url)
    });
    assert!(
        !sent_to_stopped,
        "the stopped Alertmanager cannot have accepted alerts:\n{metrics}"
    );

    // Continued, it answers the request it holds and the ones queued after.
    signal(stopped.pid(), "CONT");
    within(
        "the continued Alertmanager hearing of the alert",
        Duration::from_secs(40),
        &|| {
            single.metrics().lines().any(|l| {
                l.starts_with("strata_alert_notifications_sent_total") && l.contains(&stopped_url)
            })
        },
    );
}
