//! Shared helpers for the engine tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_storage::engine::Clock;
use strata_storage::{Config, Label, Sample, SeriesSamples, Storage, Tenant, TimeRange};

/// 2026-11-21T00:00:00Z
pub const NOW: i64 = 1_795_219_200_000;
pub const DAY: i64 = 86_400_000;

pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn new(ms: i64) -> TestClock {
        TestClock(Arc::new(AtomicI64::new(ms)))
    }
    pub fn clock(&self) -> Clock {
        let t = self.0.clone();
        Arc::new(move || t.load(Ordering::SeqCst))
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        // Background flushes would make tests depend on timing; tests flush explicitly.
        flush_interval: Duration::from_secs(3600),
        ..Config::default()
    }
}

pub fn open(cfg: &Config, clock: &TestClock) -> Arc<Storage> {
    Storage::open_with_clock(cfg.clone(), &mut Registry::default(), clock.clock())
        .expect("open storage")
}

pub fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
}

pub fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
    SeriesSamples {
        labels: labels(pairs),
        samples: samples.iter().map(|(t, v)| Sample::new(*t, *v)).collect(),
    }
}

/// Series as (labels, [(timestamp, value bits)]).
pub type Dump = Vec<(Vec<Label>, Vec<(i64, u64)>)>;

/// Everything of a tenant as (labels, [(ts, value bits)]), sorted by labels.
pub fn dump(s: &Storage, tenant: Tenant, matchers: &[strata_storage::Matcher]) -> Dump {
    let matchers = if matchers.is_empty() {
        vec![
            strata_storage::Matcher::new(strata_storage::MatchOp::RegexMatch, "__name__", ".+")
                .expect("regex"),
        ]
    } else {
        matchers.to_vec()
    };
    let mut out: Vec<_> = s
        .search(tenant, &matchers, TimeRange::ALL)
        .expect("search")
        .map(|r| {
            let d = r.expect("series");
            let samples = d
                .timestamps
                .iter()
                .zip(&d.values)
                .map(|(t, v)| (*t, v.to_bits()))
                .collect();
            (d.labels, samples)
        })
        .collect();
    out.sort();
    out
}
