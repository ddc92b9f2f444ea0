//! Sending alerts to Alertmanager (API v2): `POST {url}/api/v2/alerts` with a
//! JSON array of `{labels, annotations, startsAt, endsAt, generatorURL}`.
//!
//! Every Alertmanager has its own bounded queue and sender task, so that a
//! slow or unreachable one never delays the others. Each queue drops its
//! oldest alerts when full (counted with `reason="queue_full"`); its sender
//! takes batches of up to 64 and posts them, retrying with backoff.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::metrics::{DropLabels, Metrics, NotifierLabels};
use crate::state::Alert;

/// Most alerts in one request, like Prometheus.
pub const MAX_BATCH: usize = 64;
/// Attempts per batch and Alertmanager.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// One alert as Alertmanager's API v2 takes it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AmAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Converts a rule's alert for sending: external labels are added where the
/// alert has no label of that name; a firing alert ends at `valid_until`
/// (renewed by every resend), a resolved one when it resolved.
pub fn to_am_alert(
    alert: &Alert,
    external_labels: &BTreeMap<String, String>,
    generator_url: &str,
) -> AmAlert {
    let mut labels: BTreeMap<String, String> = alert
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    for (name, value) in external_labels {
        labels.entry(name.clone()).or_insert_with(|| value.clone());
    }
    let ends_at = alert.resolved_at.unwrap_or(alert.valid_until);
    AmAlert {
        labels,
        annotations: alert
            .annotations
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect(),
        starts_at: rfc3339(alert.fired_at.unwrap_or(alert.active_at)),
        ends_at: rfc3339(ends_at),
        generator_url: generator_url.to_string(),
    }
}

/// `{external_url}/graph?g0.expr=<expr>&g0.tab=1`, the link Prometheus sends.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    let expr: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    format!(
        "{}/graph?g0.expr={expr}&g0.tab=1",
        external_url.trim_end_matches('/')
    )
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The Alertmanagers, each with its queue; cheap to share.
pub struct Notifier {
    targets: Vec<Target>,
    capacity: usize,
    client: reqwest::Client,
    metrics: Metrics,
}

/// One Alertmanager and the alerts waiting for it.
struct Target {
    url: String,
    queue: Mutex<VecDeque<AmAlert>>,
    wake: Notify,
}

impl Notifier {
    pub fn new(
        urls: Vec<String>,
        capacity: usize,
        timeout: Duration,
        metrics: Metrics,
    ) -> Arc<Notifier> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Arc::new(Notifier {
            targets: urls
                .into_iter()
                .map(|u| Target {
                    url: u.trim_end_matches('/').to_string(),
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                })
                .collect(),
            capacity: capacity.max(1),
            client,
            metrics,
        })
    }

    /// Queues `alerts` for every Alertmanager; a full queue drops its oldest.
    pub fn send(&self, alerts: Vec<AmAlert>) {
        if alerts.is_empty() {
            return;
        }
        for target in &self.targets {
            let mut queue = target.queue.lock();
            queue.extend(alerts.iter().cloned());
            let over = queue.len().saturating_sub(self.capacity);
            if over > 0 {
                queue.drain(..over);
                self.metrics
                    .notifications_dropped
                    .get_or_create(&DropLabels {
                        alertmanager: target.url.clone(),
                        reason: "queue_full",
                    })
                    .inc_by(over as u64);
                tracing::warn!(
                    alertmanager = %target.url,
                    dropped = over,
                    capacity = self.capacity,
                    "Notification queue full; oldest alerts dropped."
                );
            }
            self.set_queue_length(target, queue.len());
            drop(queue);
            target.wake.notify_one();
        }
    }

    fn set_queue_length(&self, target: &Target, length: usize) {
        self.metrics
            .queue_length
            .get_or_create(&NotifierLabels {
                alertmanager: target.url.clone(),
            })
            .set(length as i64);
    }

    /// Sends queued alerts until `stop` completes, then what is left once:
    /// one sender per Alertmanager.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let senders: Vec<_> = (0..self.targets.len())
            .map(|index| {
                let notifier = self.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move { notifier.run_target(index, stopped).await })
            })
            .collect();
        stop.await;
        let _ = stopping.send(true);
        for sender in senders {
            let _ = sender.await;
        }
    }

    async fn run_target(&self, index: usize, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(target) = self.targets.get(index) else {
            return;
        };
        loop {
            let stopping = tokio::select! {
                () = target.wake.notified() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            loop {
                let batch: Vec<AmAlert> = {
                    let mut queue = target.queue.lock();
                    let n = queue.len().min(MAX_BATCH);
                    let batch = queue.drain(..n).collect();
                    self.set_queue_length(target, queue.len());
                    batch
                };
                if batch.is_empty() {
                    break;
                }
                self.send_batch(&target.url, &batch).await;
            }
            if stopping {
                return;
            }
        }
    }

    async fn send_batch(&self, url: &str, batch: &[AmAlert]) {
        let body = match serde_json::to_vec(batch) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "Cannot encode alerts.");
                return;
            }
        };
        let labels = NotifierLabels {
            alertmanager: url.to_string(),
        };
        match self.post(url, body).await {
            Ok(()) => self
                .metrics
                .notifications_sent
                .get_or_create(&labels)
                .inc_by(batch.len() as u64),
            Err(e) => {
                tracing::warn!(alertmanager = %url, alerts = batch.len(), error = %e, "Cannot send alerts.");
                self.metrics
                    .notifications_failed
                    .get_or_create(&labels)
                    .inc_by(batch.len() as u64)
            }
        };
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), String> {
        let endpoint = format!("{url}/api/v2/alerts");
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let result = self
                .client
                .post(&endpoint)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    last = format!(
                        "status {status}: {:.200}",
                        r.text().await.unwrap_or_default()
                    );
                    // A 4xx answer will not change on retry.
                    if status.is_client_error() {
                        return Err(last);
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(format!("{endpoint}: {last}"))
    }
}

#[cfg(test)]
mod tests {
    use strata_storage::Label;

    use super::*;
    use crate::state::AlertState;

    #[test]
    fn alert_json() {
        let alert = Alert {
            state: AlertState::Firing,
            labels: vec![Label::new("alertname", "Up"), Label::new("env", "own")],
            annotations: vec![Label::new("summary", "down")],
            value: 1.0,
            active_at: 1_000,
            fired_at: Some(6_000),
            resolved_at: None,
            last_sent_at: Some(6_000),
            valid_until: 246_000,
            keep_firing_since: None,
        };
        let external = BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("dc".to_string(), "a".to_string()),
        ]);
        let am = to_am_alert(
            &alert,
            &external,
            &generator_url("http://x:8880/", "up == 0"),
        );
        let json = serde_json::to_string(&am).expect("json");
        assert_eq!(
            json,
            r#"{"labels":{"alertname":"Up","dc":"a","env":"own"},"annotations":{"summary":"down"},"startsAt":"1970-01-01T00:00:06.000Z","endsAt":"1970-01-01T00:04:06.000Z","generatorURL":"http://x:8880/graph?g0.expr=up+%3D%3D+0&g0.tab=1"}"#
        );
    }

    #[test]
    fn full_queue_drops_oldest() {
        let metrics = Metrics::default();
        let notifier = Notifier::new(
            vec!["http://127.0.0.1:1".into()],
            2,
            Duration::from_secs(1),
            metrics.clone(),
        );
        let alert = |n: &str| AmAlert {
            labels: BTreeMap::from([("n".to_string(), n.to_string())]),
            annotations: BTreeMap::new(),
            starts_at: String::new(),
            ends_at: String::new(),
            generator_url: String::new(),
        };
        notifier.send(vec![alert("1"), alert("2"), alert("3")]);
        let kept: Vec<String> = notifier.targets[0]
            .queue
            .lock()
            .iter()
            .map(|a| a.labels["n"].clone())
            .collect();
        assert_eq!(kept, ["2", "3"]);
        let dropped = metrics
            .notifications_dropped
            .get_or_create(&DropLabels {
                alertmanager: "http://127.0.0.1:1".into(),
                reason: "queue_full",
            })
            .get();
        assert_eq!(dropped, 1);
    }
}
