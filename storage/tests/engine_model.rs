//! Property test: random interleavings of writes, flushes, merges, restarts,
//! deletes and retention against a naive in-memory model.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use strata_storage::{Label, MatchOp, Matcher, Tenant, TimeRange};

const SERIES: &[&[(&str, &str)]] = &[
    &[("__name__", "up"), ("job", "api"), ("instance", "a:1")],
    &[("__name__", "up"), ("job", "api"), ("instance", "b:1")],
    &[("__name__", "up"), ("job", "db")],
    &[("__name__", "cpu"), ("job", "api"), ("mode", "idle")],
    &[
        ("__name__", "cpu"),
        ("job", "db"),
        ("mode", "user"),
        ("zone", ""),
    ],
    &[("__name__", "mem"), ("env", "prod\u{0}x")],
];

#[derive(Clone, Debug)]
enum Op {
    Add {
        tenant: u32,
        series: usize,
        samples: Vec<(i64, f64)>,
    },
    Flush,
    Merge,
    Restart,
    Delete {
        tenant: u32,
        matcher: usize,
    },
    AdvanceDays(i64),
    Check {
        tenant: u32,
        matcher: usize,
    },
}

fn matchers(i: usize) -> Vec<Matcher> {
    let m = |op, n: &str, v: &str| Matcher::new(op, n, v).expect("valid matcher");
    match i % 8 {
        0 => vec![m(MatchOp::Equal, "job", "api")],
        1 => vec![
            m(MatchOp::Equal, "__name__", "up"),
            m(MatchOp::NotEqual, "instance", "a:1"),
        ],
        2 => vec![m(MatchOp::RegexMatch, "__name__", "up|cpu")],
        3 => vec![
            m(MatchOp::RegexMatch, "job", ".+"),
            m(MatchOp::RegexNoMatch, "mode", "id.*"),
        ],
        4 => vec![
            m(MatchOp::Equal, "__name__", "cpu"),
            m(MatchOp::Equal, "zone", ""),
        ],
        5 => vec![m(MatchOp::RegexMatch, "env", "prod.x")],
        6 => vec![
            m(MatchOp::RegexMatch, "__name__", ".*"),
            m(MatchOp::NotEqual, "job", "db"),
        ],
        _ => vec![m(MatchOp::RegexMatch, "instance", "b.*|a:1")],
    }
}

fn op() -> impl Strategy<Value = Op> {
    // Timestamps span about two months around NOW, so writes cross partitions.
    let sample = (
        -50i64 * 24..3 * 24,
        prop_oneof![Just(0.0), -1e6..1e6f64, Just(f64::NAN)],
    );
    prop_oneof![
        8 => (0u32..2, 0..SERIES.len(), prop::collection::vec(sample, 1..20)).prop_map(|(tenant, series, s)| Op::Add {
            tenant,
            series,
            samples: s.into_iter().map(|(h, v)| (h * 3_600_000 + 1_234, v)).collect(),
        }),
        2 => Just(Op::Flush),
        1 => Just(Op::Merge),
        1 => Just(Op::Restart),
        1 => (0u32..2, 0usize..8).prop_map(|(tenant, matcher)| Op::Delete { tenant, matcher }),
        1 => (1i64..20).prop_map(Op::AdvanceDays),
        3 => (0u32..2, 0usize..8).prop_map(|(tenant, matcher)| Op::Check { tenant, matcher }),
    ]
}

type Model = BTreeMap<(u32, Vec<Label>), BTreeMap<i64, f64>>;

fn normalized(pairs: &[(&str, &str)]) -> Vec<Label> {
    let mut l: Vec<Label> = labels(pairs)
        .into_iter()
        .filter(|l| !l.value.is_empty())
        .collect();
    l.sort();
    l
}

fn model_dump(model: &Model, tenant: u32, ms: &[Matcher]) -> Dump {
    model
        .iter()
        .filter(|((t, l), samples)| {
            *t == tenant && !samples.is_empty() && ms.iter().all(|m| m.matches_labels(l))
        })
        .map(|((_, l), s)| {
            (
                l.clone(),
                s.iter().map(|(t, v)| (*t, v.to_bits())).collect(),
            )
        })
        .collect()
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.retention = std::time::Duration::from_secs(45 * 86_400);
    let clock = TestClock::new(NOW);
    let mut storage = open(&cfg, &clock);
    let mut model: Model = BTreeMap::new();
    for op in ops {
        match op {
            Op::Add {
                tenant,
                series: i,
                samples,
            } => {
                let now = clock.now();
                let batch = vec![series(
                    SERIES[i],
                    &samples
                        .iter()
                        .map(|(o, v)| (now + o, *v))
                        .collect::<Vec<_>>(),
                )];
                let out = storage.add(Tenant::new(tenant, 0), &batch).expect("add");
                let key = (tenant, normalized(SERIES[i]));
                let mut accepted = 0;
                for (o, v) in samples {
                    // Offsets are whole hours plus 1234 ms: compare with the limits like the engine.
                    if !(-(45 * DAY)..=2 * DAY).contains(&o) {
                        continue;
                    }
                    accepted += 1;
                    let e = model
                        .entry(key.clone())
                        .or_default()
                        .entry(now + o)
                        .or_insert(v);
                    if v.total_cmp(e).is_gt() {
                        *e = v;
                    }
                }
                assert_eq!(out.accepted, accepted);
            }
            Op::Flush => storage.flush().expect("flush"),
            Op::Merge => storage.force_merge().expect("merge"),
            Op::Restart => {
                storage.close().expect("close");
                drop(storage);
                storage = open(&cfg, &clock);
            }
            Op::Delete { tenant, matcher } => {
                let ms = matchers(matcher);
                let want = model_dump(&model, tenant, &ms).len() as u64;
                let got = storage
                    .delete_series(Tenant::new(tenant, 0), &ms)
                    .expect("delete");
                assert_eq!(got, want, "deleted series count for {ms:?}");
                model.retain(|(t, l), _| !(*t == tenant && ms.iter().all(|m| m.matches_labels(l))));
            }
            Op::AdvanceDays(d) => {
                clock.advance(d * DAY);
                storage.enforce_retention().expect("retention");
                let cutoff = clock.now() - 45 * DAY;
                for samples in model.values_mut() {
                    samples.retain(|ts, _| strata_month_end(*ts) > cutoff);
                }
                model.retain(|_, s| !s.is_empty());
            }
            Op::Check { tenant, matcher } => {
                let ms = matchers(matcher);
                let got = dump(&storage, Tenant::new(tenant, 0), &ms);
                assert_eq!(
                    got,
                    model_dump(&model, tenant, &ms),
                    "search {ms:?} tenant {tenant}"
                );
            }
        }
    }
    for tenant in 0..2 {
        let got = dump(&storage, Tenant::new(tenant, 0), &[]);
        assert_eq!(
            got,
            model_dump(&model, tenant, &[]),
            "final state tenant {tenant}"
        );
        let names = storage
            .label_names(Tenant::new(tenant, 0), &[], TimeRange::ALL, 0)
            .expect("names");
        let mut want: Vec<String> = model
            .keys()
            .filter(|(t, _)| *t == tenant)
            .flat_map(|(_, l)| l.iter().map(|l| l.name.clone()))
            .collect();
        want.sort();
        want.dedup();
        assert_eq!(names, want, "label names tenant {tenant}");
        let jobs = storage
            .label_values(Tenant::new(tenant, 0), "job", &[], TimeRange::ALL, 0)
            .expect("values");
        let mut want: Vec<String> = model
            .keys()
            .filter(|(t, _)| *t == tenant)
            .flat_map(|(_, l)| {
                l.iter()
                    .filter(|l| l.name == "job")
                    .map(|l| l.value.clone())
            })
            .collect();
        want.sort();
        want.dedup();
        assert_eq!(jobs, want, "job values tenant {tenant}");
    }
    storage.close().expect("close");
}

/// First millisecond after the month of `ts` (partitions are monthly).
fn strata_month_end(ts: i64) -> i64 {
    let days = ts.div_euclid(DAY);
    // Walk to the first day of the next month using the civil calendar.
    let (y, m) = civil_year_month(days);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm) * DAY
}

fn civil_year_month(z: i64) -> (i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m)
}

fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

#[test]
fn month_end_helper_is_right() {
    assert_eq!(strata_month_end(NOW), 1_796_083_200_000, "2026-12-01");
}
