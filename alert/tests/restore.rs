//! Restoring alert state at start from `ALERTS_FOR_STATE`, through both
//! queriers over the same real storage: the PromQL engine in the process
//! (raw samples, as `strata single --rule` reads them) and the HTTP query API
//! (as `strata alert` reads a datasource, here Strata's own API served in
//! the test). Each case writes a history of `ALERTS_FOR_STATE` samples
//! (staleness markers included), evaluates an always-active rule twice (the
//! restore follows the second evaluation) and checks the restored
//! `activeAt`: the newest sample within the outage tolerance counts, and a
//! newest sample that is a staleness marker means the alert had resolved.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use strata_alert::eval::{Context, GroupRuntime, ManualClock, SharedGroup, evaluate_group};
use strata_alert::metrics::Metrics;
use strata_alert::notifier::Notifier;
use strata_alert::querier::{BoxFuture, EngineQuerier, HttpQuerier, Querier, SourceFor};
use strata_alert::writer::{WriteError, Writer};
use strata_select::promqltest::TestStorage;
use strata_select::source::{Source, StorageSource};
use strata_storage::{Label, STALE_NAN_BITS, Sample, SeriesSamples, Tenant};

const S: i64 = 1000;
const GRACE: Duration = Duration::from_secs(60);
const TOLERANCE: Duration = Duration::from_secs(3600);
const INTERVAL_MS: i64 = 15 * S;

const RULES: &str = r#"
groups:
  - name: g
    rules:
      - alert: A
        expr: vector(1)
        for: 10m
"#;

/// History samples `(t seconds, Some(active_at seconds))`; `None` stands for
/// a staleness marker.
type History = Vec<(i64, Option<f64>)>;

/// History samples every 15 s from `from` to `to` (inclusive).
fn every_15s(from: i64, to: i64, active_at: f64) -> History {
    (0..)
        .map(|k| from + 15 * k)
        .take_while(|t| *t <= to)
        .map(|t| (t, Some(active_at)))
        .collect()
}

/// Discards what the rules write: the history is all a case reads.
struct Discard;

impl Writer for Discard {
    fn write(&self, _: Tenant, _: Vec<SeriesSamples>) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async { Ok(()) })
    }
}

fn write_history(storage: &TestStorage, history: &[(i64, Option<f64>)]) {
    let labels = vec![
        Label::new("__name__", "ALERTS_FOR_STATE"),
        Label::new("alertname", "A"),
    ];
    let samples = history
        .iter()
        .map(|(t, v)| Sample {
            timestamp: t * S,
            value: v.unwrap_or(f64::from_bits(STALE_NAN_BITS)),
        })
        .collect();
    let outcome = storage
        .storage
        .add(Tenant::DEFAULT, &[SeriesSamples { labels, samples }])
        .expect("write history");
    assert_eq!(outcome.rejected, 0, "history rejected");
}

/// Serves Strata's query API over `source` on a free port.
async fn serve(source: StorageSource) -> String {
    let router = strata_select::api::router(
        Arc::new(source),
        &strata_select::config::Config::default(),
        strata_select::metrics::Metrics::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// Evaluates the rule at `restart - 15s` and `restart` with the clock at
/// `restart` and returns the alert's `activeAt` (seconds).
async fn restored_active_at(querier: Arc<dyn Querier>, restart: i64) -> f64 {
    let metrics = Metrics::default();
    let clock = Arc::new(ManualClock::default());
    clock.0.store(restart * S, Ordering::Relaxed);
    let ctx = Context {
        querier,
        writer: Some(Arc::new(Discard)),
        notifier: Notifier::new(Vec::new(), 10, Duration::from_secs(1), metrics.clone()),
        clock,
        metrics,
        external_labels: BTreeMap::new(),
        external_url: "http://x".into(),
        default_interval: Duration::from_millis(INTERVAL_MS as u64),
        default_query_offset: Duration::ZERO,
        default_tenant: Tenant::DEFAULT,
        resend_delay: Duration::from_secs(60),
        for_grace_period: GRACE,
        outage_tolerance: TOLERANCE,
    };
    let file = strata_alert::rules::parse_rule_file(Path::new("r.yml"), RULES).expect("rules");
    let group = file.groups.into_iter().next().expect("group");
    let group: SharedGroup = Arc::new(Mutex::new(
        GroupRuntime::new(Path::new("r.yml"), group, &ctx, true).expect("group"),
    ));
    evaluate_group(&group, &ctx, restart * S - INTERVAL_MS).await;
    evaluate_group(&group, &ctx, restart * S).await;
    let g = group.lock();
    let rule = g.rules[0].alert.as_ref().expect("alerting rule");
    assert!(rule.restored, "restore did not run");
    let alert = rule.active.values().next().expect("the alert is active");
    alert.active_at as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_uses_the_newest_sample_and_respects_staleness() {
    let first_eval = |restart: i64| (restart - 15) as f64;
    // (case, history, restart s, want activeAt s)
    let cases: Vec<(&str, History, i64, f64)> = vec![
        (
            "no history: starts over",
            Vec::new(),
            2600,
            first_eval(2600),
        ),
        (
            "was firing: keeps activeAt",
            every_15s(1000, 2000, 400.0),
            2600,
            400.0,
        ),
        (
            "resolved (newest sample stale): starts over",
            [every_15s(1000, 1500, 400.0), vec![(1515, None)]].concat(),
            2600,
            first_eval(2600),
        ),
        (
            "resolved, then a newer pending episode: the newer one counts",
            [
                every_15s(1000, 1500, 400.0),
                vec![(1515, None)],
                every_15s(1800, 1995, 1800.0),
            ]
            .concat(),
            2600,
            // 195 s of 600 pending when down; the outage is not counted.
            1800.0 + (2600.0 - 1995.0),
        ),
        (
            "pending with less than the grace period left: fires after it",
            every_15s(1500, 2080, 1500.0),
            2600,
            2600.0 + 60.0 - 600.0,
        ),
        (
            "newest sample older than the outage tolerance: starts over",
            every_15s(1000, 2000, 400.0),
            2000 + 3601,
            first_eval(2000 + 3601),
        ),
        (
            "outage longer than the lookback, firing: keeps activeAt",
            every_15s(1000, 2000, 400.0),
            2000 + 1800,
            400.0,
        ),
        (
            "outage longer than the lookback, resolved before: starts over",
            [every_15s(1000, 1500, 400.0), vec![(1515, None)]].concat(),
            1500 + 1800,
            first_eval(1500 + 1800),
        ),
        (
            "stale marker between two samples of the same episode value: newest counts",
            vec![(1000, Some(900.0)), (1015, None), (1030, Some(1030.0))],
            1100,
            // Pending 0 s of 600 at 1030; resumes after the outage.
            1030.0 + (1100.0 - 1030.0),
        ),
    ];
    let mut failures = Vec::new();
    for (name, history, restart, want) in &cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = TestStorage::open(dir.path().to_path_buf()).expect("storage");
        write_history(&storage, history);
        let source = storage.source.clone();
        let source_for: SourceFor =
            Arc::new(move |_tenant: Tenant| Arc::new(source.clone()) as Arc<dyn Source>);
        let engine = EngineQuerier::new(
            strata_select::promql::Engine::new(
                strata_select::config::Config::default().engine_options(),
            ),
            source_for,
        );
        let url = serve(storage.source.clone()).await;
        let http = HttpQuerier::new(&url, Duration::from_secs(10));
        let queriers: [(&str, Arc<dyn Querier>); 2] =
            [("engine", Arc::new(engine)), ("http", Arc::new(http))];
        for (kind, querier) in queriers {
            let got = restored_active_at(querier, *restart).await;
            if (got - want).abs() > 1e-9 {
                failures.push(format!(
                    "{name} ({kind}): activeAt {got}, want {want} (restart at {restart})"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
