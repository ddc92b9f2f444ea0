//! Engine behaviour tests: concurrency, corruption, retention, dedup, churn,
//! cardinality, durability across restarts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use strata_storage::{Label, MatchOp, Matcher, RejectReason, Storage, Tenant, TimeRange};

const T0: Tenant = Tenant::DEFAULT;

fn metric_text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("encode metrics");
    out
}

#[test]
fn acknowledged_rows_survive_restart_without_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    s.add(
        T0,
        &[series(
            &[("__name__", "a")],
            &[(NOW - 1000, 1.5), (NOW, 2.5)],
        )],
    )
    .expect("add");
    // Simulate a crash: leak the storage so that nothing is flushed or closed.
    std::mem::forget(s);
    // The directory lock belongs to the leaked handle; a real crash releases it.
    std::fs::remove_file(dir.path().join("lock")).ok();
    let s = open(&cfg, &clock);
    assert_eq!(
        dump(&s, T0, &[]),
        vec![(
            labels(&[("__name__", "a")]),
            vec![(NOW - 1000, 1.5f64.to_bits()), (NOW, 2.5f64.to_bits())]
        )]
    );
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let _s = open(&cfg, &clock);
    let again = Storage::open_with_clock(cfg, &mut Registry::default(), clock.clock());
    assert!(matches!(
        again,
        Err(strata_storage::StorageError::Locked { .. })
    ));
}

#[test]
fn out_of_window_samples_are_rejected_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let mut registry = Registry::default();
    let s = Storage::open_with_clock(cfg, &mut registry, clock.clock()).expect("open");
    let out = s
        .add(
            T0,
            &[series(
                &[("__name__", "x"), ("k", "v")],
                &[(NOW - 32 * DAY, 1.0), (NOW, 2.0), (NOW + 3 * DAY, 3.0)],
            )],
        )
        .expect("add");
    assert_eq!((out.accepted, out.rejected), (1, 2));
    assert_eq!(
        out.rejected_by_reason,
        vec![(RejectReason::TooNew, 1), (RejectReason::TooOld, 1)]
    );
    let first = out.first_rejection.expect("a rejection");
    assert_eq!(first.reason, RejectReason::TooOld);
    assert_eq!(first.series, "x{k=\"v\"}");
    let empty = s
        .add(T0, &[series(&[("job", "")], &[(NOW, 1.0)])])
        .expect("add");
    assert_eq!(
        empty.first_rejection.map(|r| r.reason),
        Some(RejectReason::EmptyLabels)
    );
    let text = metric_text(&registry);
    assert!(
        text.contains("strata_storage_rows_rejected_total{reason=\"too_old\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strata_storage_rows_rejected_total{reason=\"too_new\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strata_storage_rows_rejected_total{reason=\"empty_labels\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strata_storage_rows_added_total{tenant=\"0:0\"} 1"),
        "{text}"
    );
}

#[test]
fn retention_drops_whole_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    // NOW is 2026-11-21: one sample in October, one in November.
    let oct = NOW - 25 * DAY;
    s.add(
        T0,
        &[series(&[("__name__", "r")], &[(oct, 1.0), (NOW, 2.0)])],
    )
    .expect("add");
    s.flush().expect("flush");
    assert!(dir.path().join("partitions/2026_10").exists());
    clock.advance(20 * DAY); // October ended 2026-11-01; 31d later is 2026-12-02.
    assert_eq!(s.enforce_retention().expect("retention"), 1);
    assert!(!dir.path().join("partitions/2026_10").exists());
    assert_eq!(
        dump(&s, T0, &[]),
        vec![(labels(&[("__name__", "r")]), vec![(NOW, 2.0f64.to_bits())])]
    );
    s.close().expect("close");
    let s = open(&cfg, &clock);
    assert_eq!(dump(&s, T0, &[]).len(), 1);
}

#[test]
fn dedup_interval_applies_at_read_and_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.dedup_min_scrape_interval = Duration::from_secs(10);
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    let base = NOW - NOW % 10_000 - 60_000;
    // Two HA replicas scraping 3 s apart, both every 10 s.
    let a: Vec<(i64, f64)> = (0..5)
        .map(|i| (base + i * 10_000 + 1_000, i as f64))
        .collect();
    let b: Vec<(i64, f64)> = (0..5)
        .map(|i| (base + i * 10_000 + 4_000, 10.0 + i as f64))
        .collect();
    s.add(T0, &[series(&[("__name__", "d")], &a)]).expect("add");
    s.flush().expect("flush");
    s.add(T0, &[series(&[("__name__", "d")], &b)]).expect("add");
    let want: Vec<(i64, u64)> = b.iter().map(|(t, v)| (*t, v.to_bits())).collect();
    assert_eq!(dump(&s, T0, &[])[0].1, want, "at read, head + part");
    s.force_merge().expect("merge");
    assert_eq!(dump(&s, T0, &[])[0].1, want, "after merge");
}

#[test]
fn identical_timestamps_collapse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    for round in 0..3 {
        s.add(
            T0,
            &[series(&[("__name__", "x")], &[(NOW, 1.0), (NOW, 2.0)])],
        )
        .expect("add");
        if round == 1 {
            s.flush().expect("flush");
        }
    }
    assert_eq!(dump(&s, T0, &[])[0].1, vec![(NOW, 2.0f64.to_bits())]);
    s.force_merge().expect("merge");
    assert_eq!(dump(&s, T0, &[])[0].1, vec![(NOW, 2.0f64.to_bits())]);
}

#[test]
fn concurrent_writers_and_readers_see_acknowledged_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.flush_interval = Duration::from_millis(50);
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..300i64 {
                    let name = format!("w{w}");
                    let inst = format!("{}", i % 7);
                    s.add(
                        T0,
                        &[series(
                            &[("__name__", &name), ("i", &inst)],
                            &[(NOW - 300_000 + i, i as f64)],
                        )],
                    )
                    .expect("add");
                    // Read-your-writes: the acknowledged sample is visible right away.
                    let m = [
                        Matcher::eq("__name__", name.clone()),
                        Matcher::eq("i", inst.clone()),
                    ];
                    let found = s
                        .search(T0, &m, TimeRange::new(NOW - 300_000 + i, NOW - 300_000 + i))
                        .expect("search")
                        .map(|r| r.expect("series").timestamps.len())
                        .sum::<usize>();
                    assert_eq!(found, 1, "writer {w} row {i}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let all = dump(&s, T0, &[]);
    assert_eq!(all.len(), 4 * 7);
    assert_eq!(all.iter().map(|(_, v)| v.len()).sum::<usize>(), 1200);
}

#[test]
fn churn_is_isolated_per_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    let day_start = NOW - NOW % DAY;
    for day in 0..3i64 {
        let batch: Vec<_> = (0..2000)
            .map(|i| {
                let pod = format!("pod-{day}-{i}");
                series(
                    &[("__name__", "up"), ("pod", &pod)],
                    &[(day_start - (2 - day) * DAY + 1000, 1.0)],
                )
            })
            .collect();
        s.add(T0, &batch).expect("add");
        s.flush().expect("flush");
    }
    let last_day = TimeRange::new(day_start, day_start + DAY - 1);
    let pods = s.label_values(T0, "pod", &[], last_day, 0).expect("values");
    assert_eq!(pods.len(), 2000);
    assert!(pods.iter().all(|p| p.starts_with("pod-2-")));
    let found = s
        .search(T0, &[Matcher::eq("__name__", "up")], last_day)
        .expect("search")
        .count();
    assert_eq!(found, 2000);
    assert_eq!(
        s.search(T0, &[Matcher::eq("__name__", "up")], TimeRange::ALL)
            .expect("search")
            .count(),
        6000
    );
    let labels = s
        .series(T0, &[Matcher::eq("__name__", "up")], last_day, 0)
        .expect("series");
    assert_eq!(labels.len(), 2000);
    assert!(labels.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    assert!(labels.iter().all(|l| l[1].value.starts_with("pod-2-")));
    let limited = s
        .series(T0, &[Matcher::eq("__name__", "up")], TimeRange::ALL, 10)
        .expect("series");
    assert_eq!(limited, labels_of_first(&s, 10));
    let card = s.cardinality(T0, last_day, 3).expect("cardinality");
    assert_eq!(card.total_series, 2000);
    assert_eq!(card.series_by_metric_name, vec![("up".to_string(), 2000)]);
    assert_eq!(card.values_by_label_name[0], ("pod".to_string(), 2000));
    assert_eq!(
        card.series_by_label_pair[0],
        ("__name__=up".to_string(), 2000)
    );
}

#[test]
fn tenants_are_isolated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    s.add(
        Tenant::new(1, 0),
        &[series(&[("__name__", "a")], &[(NOW, 1.0)])],
    )
    .expect("add");
    s.add(
        Tenant::new(1, 1),
        &[series(&[("__name__", "b")], &[(NOW, 1.0)])],
    )
    .expect("add");
    assert_eq!(dump(&s, Tenant::new(1, 0), &[]).len(), 1);
    assert_eq!(
        dump(&s, Tenant::new(1, 1), &[])[0].0,
        labels(&[("__name__", "b")])
    );
    assert!(dump(&s, Tenant::new(2, 0), &[]).is_empty());
    assert!(dump(&s, T0, &[]).is_empty());
    assert_eq!(
        s.label_names(Tenant::new(2, 0), &[], TimeRange::ALL, 0)
            .expect("names"),
        Vec::<String>::new()
    );
}

/// Part directories of a partition, oldest first.
fn part_dirs(parts_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut parts: Vec<_> = std::fs::read_dir(parts_dir)
        .expect("parts")
        .map(|e| e.expect("entry").path())
        .collect();
    parts.sort();
    parts
}

#[test]
fn corrupted_data_part_is_reported_and_the_rest_stays_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let mut registry = Registry::default();
    let s = Storage::open_with_clock(cfg.clone(), &mut registry, clock.clock()).expect("open");
    // Two parts: series "a" in the first, "b" in the second.
    s.add(T0, &[series(&[("__name__", "a")], &[(NOW, 1.0)])])
        .expect("add");
    s.flush().expect("flush");
    s.add(T0, &[series(&[("__name__", "b")], &[(NOW, 2.0)])])
        .expect("add");
    s.flush().expect("flush");
    let parts_dir = dir.path().join("partitions/2026_11/parts");
    let parts = part_dirs(&parts_dir);
    assert_eq!(parts.len(), 2);
    // Damage every data file of the first part in its middle.
    let mut damaged = 0;
    for f in std::fs::read_dir(&parts[0]).expect("part files") {
        let f = f.expect("entry").path();
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        if name.contains("data") || name.contains("values") || name.contains("pages") {
            let mut bytes = std::fs::read(&f).expect("read");
            if bytes.len() > 8 {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x5a;
                std::fs::write(&f, bytes).expect("write");
                damaged += 1;
            }
        }
    }
    assert!(
        damaged > 0,
        "found no data file to damage in {:?}",
        parts[0]
    );
    let mut it = s
        .search(
            T0,
            &[Matcher::new(MatchOp::RegexMatch, "__name__", "a|b").expect("re")],
            TimeRange::ALL,
        )
        .expect("search");
    let got: Vec<_> = it
        .by_ref()
        .map(|r| r.expect("series"))
        .filter(|d| !d.timestamps.is_empty())
        .map(|d| d.labels[0].value.clone())
        .collect();
    assert_eq!(got, vec!["b".to_string()]);
    assert!(!it.warnings().is_empty(), "corruption must be reported");
    assert!(
        it.warnings()[0].contains(&parts[0].display().to_string()),
        "{:?}",
        it.warnings()
    );
    assert!(
        metric_text(&registry).contains("strata_storage_corrupted_blocks_total{kind=\"data\"} 1")
    );
    s.close().expect("close");
    // The directory still opens.
    let s = open(&cfg, &clock);
    assert!(!dump(&s, T0, &[Matcher::eq("__name__", "b")]).is_empty());
}

#[test]
fn delete_then_rewrite_starts_a_new_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    s.add(
        T0,
        &[series(
            &[("__name__", "x"), ("a", "1")],
            &[(NOW - 5000, 1.0)],
        )],
    )
    .expect("add");
    s.flush().expect("flush");
    assert_eq!(
        s.delete_series(T0, &[Matcher::eq("a", "1")])
            .expect("delete"),
        1
    );
    assert!(dump(&s, T0, &[]).is_empty());
    s.add(
        T0,
        &[series(&[("__name__", "x"), ("a", "1")], &[(NOW, 2.0)])],
    )
    .expect("add");
    assert_eq!(dump(&s, T0, &[])[0].1, vec![(NOW, 2.0f64.to_bits())]);
    s.close().expect("close");
    let s = open(&cfg, &clock);
    assert_eq!(dump(&s, T0, &[])[0].1, vec![(NOW, 2.0f64.to_bits())]);
    s.force_merge().expect("merge");
    assert_eq!(dump(&s, T0, &[])[0].1, vec![(NOW, 2.0f64.to_bits())]);
}

#[test]
fn part_with_damaged_metadata_is_quarantined_and_the_rest_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    s.add(T0, &[series(&[("__name__", "a")], &[(NOW, 1.0)])])
        .expect("add");
    s.flush().expect("flush");
    s.add(T0, &[series(&[("__name__", "b")], &[(NOW, 2.0)])])
        .expect("add");
    s.close().expect("close");
    let parts_dir = dir.path().join("partitions/2026_11/parts");
    let parts = part_dirs(&parts_dir);
    let headers = parts[0].join("index.bin");
    let mut bytes = std::fs::read(&headers).expect("read part index");
    bytes[0] ^= 0xff;
    std::fs::write(&headers, bytes).expect("write");
    let s = open(&cfg, &clock);
    let got = dump(&s, T0, &[]);
    assert_eq!(
        got,
        vec![(labels(&[("__name__", "b")]), vec![(NOW, 2.0f64.to_bits())])]
    );
    let quarantined = dir
        .path()
        .join("partitions/2026_11/quarantine")
        .join(parts[0].file_name().expect("name"));
    assert!(quarantined.exists(), "damaged part kept for inspection");
}

#[test]
fn inactive_series_are_forgotten_and_come_back_as_one_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    s.add(
        T0,
        &[
            series(&[("__name__", "a")], &[(NOW, 1.0)]),
            series(&[("__name__", "b")], &[(NOW, 1.0)]),
        ],
    )
    .expect("add");
    assert_eq!(s.series_count(), 2);
    clock.advance(3 * DAY);
    s.add(T0, &[series(&[("__name__", "b")], &[(NOW + 3 * DAY, 2.0)])])
        .expect("add");
    s.enforce_retention().expect("daily pass");
    assert_eq!(
        s.series_count(),
        1,
        "only the series active since yesterday stays in memory"
    );
    s.add(T0, &[series(&[("__name__", "a")], &[(NOW + 3 * DAY, 3.0)])])
        .expect("add");
    let want_a = vec![(NOW, 1.0f64.to_bits()), (NOW + 3 * DAY, 3.0f64.to_bits())];
    let want_b = vec![(NOW, 1.0f64.to_bits()), (NOW + 3 * DAY, 2.0f64.to_bits())];
    let want = vec![
        (labels(&[("__name__", "a")]), want_a),
        (labels(&[("__name__", "b")]), want_b),
    ];
    assert_eq!(dump(&s, T0, &[]), want);
    s.close().expect("close");
    let s = open(&cfg, &clock);
    assert_eq!(
        s.series_count(),
        2,
        "open loads the series active today and yesterday"
    );
    assert_eq!(dump(&s, T0, &[]), want);
    assert_eq!(
        s.delete_series(T0, &[Matcher::eq("__name__", "a")])
            .expect("delete"),
        1
    );
    assert_eq!(dump(&s, T0, &[]).len(), 1);
}

/// The first `n` label sets of every `up` series, sorted, read with samples.
fn labels_of_first(s: &Storage, n: usize) -> Vec<Vec<Label>> {
    let mut all: Vec<Vec<Label>> = s
        .search(T0, &[Matcher::eq("__name__", "up")], TimeRange::ALL)
        .expect("search")
        .map(|r| r.expect("series").labels)
        .collect();
    all.sort();
    all.truncate(n);
    all
}

#[test]
fn tenants_are_listed_by_the_days_they_have_series_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    let (a, b, c) = (Tenant::new(1, 0), Tenant::new(1, 7), Tenant::new(300, 2));
    let write = |tenant, name: &str, ts| {
        s.add(tenant, &[series(&[("__name__", name)], &[(ts, 1.0)])])
            .expect("add");
    };
    write(a, "x", NOW - 10 * DAY);
    write(b, "x", NOW);
    write(c, "x", NOW - 25 * DAY); // the previous month
    write(c, "gone", NOW);
    let check = |range: TimeRange, want: Vec<Tenant>| {
        assert_eq!(s.tenants(range).expect("tenants"), want, "{range:?}");
    };
    check(TimeRange::ALL, vec![a, b, c]);
    check(TimeRange::new(NOW - DAY / 2, NOW), vec![b, c]);
    check(TimeRange::new(NOW - 11 * DAY, NOW - 9 * DAY), vec![a]);
    check(TimeRange::new(NOW - 26 * DAY, NOW - 24 * DAY), vec![c]);
    check(TimeRange::new(NOW - 5 * DAY, NOW - 4 * DAY), vec![]);
    s.flush().expect("flush");
    check(TimeRange::ALL, vec![a, b, c]);
    // A tenant whose only series of a day is deleted is gone from that day.
    s.delete_series(c, &[Matcher::eq("__name__", "gone")])
        .expect("delete");
    check(TimeRange::new(NOW - DAY / 2, NOW), vec![b]);
    check(TimeRange::ALL, vec![a, b, c]);
}

/// Enough series and samples that a search reads in growing batches, on the
/// pool and ahead of the caller (see `engine::series_iter`): every series
/// still comes out whole, from parts and the head, within the range asked.
#[test]
fn large_searches_read_in_batches_return_every_sample() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    let (hosts, points) = (4_000, 200);
    let base = NOW - points * 15_000;
    let sample = |h: i64, i: i64| (base + i * 15_000, (h * 1_000 + i) as f64);
    let write = |from: i64, to: i64, every: i64| {
        let batch: Vec<_> = (0..hosts)
            .filter(|h| h % every == 0)
            .map(|h| {
                let samples: Vec<(i64, f64)> = (from..to).map(|i| sample(h, i)).collect();
                series(
                    &[("__name__", "m"), ("host", &format!("h{h:05}"))],
                    &samples,
                )
            })
            .collect();
        s.add(T0, &batch).expect("add");
    };
    // Parts hold the first 150 points of every series; the head holds the
    // rest of every third series only.
    write(0, 150, 1);
    s.flush().expect("flush");
    write(150, points, 3);
    let name = Matcher::new(MatchOp::Equal, "__name__", "m").expect("matcher");
    for (from, to) in [(0, points - 1), (140, 160), (190, points - 1)] {
        let range = TimeRange::new(base + from * 15_000, base + to * 15_000);
        let mut iter = s
            .search(T0, std::slice::from_ref(&name), range)
            .expect("search");
        let mut got = Vec::new();
        for next in iter.by_ref() {
            got.push(next.expect("series"));
        }
        assert_eq!(iter.remaining(), 0);
        let want: Vec<(String, Vec<(i64, f64)>)> = (0..hosts)
            .map(|h| {
                let end = if h % 3 == 0 { points } else { 150 };
                let samples = (from..=to).filter(|&i| i < end).map(|i| sample(h, i));
                (format!("h{h:05}"), samples.collect::<Vec<_>>())
            })
            .filter(|(_, samples)| !samples.is_empty())
            .collect();
        let mut got: Vec<(String, Vec<(i64, f64)>)> = got
            .into_iter()
            .map(|d| {
                let host = d.labels[1].value.clone();
                (host, d.timestamps.into_iter().zip(d.values).collect())
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got.len(), want.len(), "series in {from}..={to}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "samples in {from}..={to}");
        }
    }
}

/// Label sets are looked up in the index once, then served from the label
/// set cache, and the second search answers exactly like the first.
#[test]
fn label_sets_come_from_the_cache_the_second_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let mut registry = Registry::default();
    let s = Storage::open_with_clock(cfg, &mut registry, clock.clock()).expect("open");
    s.add(
        T0,
        &[
            series(&[("__name__", "m"), ("host", "a")], &[(NOW, 1.0)]),
            series(&[("__name__", "m"), ("host", "b")], &[(NOW, 2.0)]),
            series(&[("__name__", "other")], &[(NOW, 3.0)]),
        ],
    )
    .expect("add");
    s.flush().expect("flush");
    let name = Matcher::new(MatchOp::Equal, "__name__", "m").expect("matcher");
    let first = dump(&s, T0, std::slice::from_ref(&name));
    let second = dump(&s, T0, std::slice::from_ref(&name));
    assert_eq!(first.len(), 2);
    assert_eq!(first, second);
    // A flush updates the cache figures.
    s.flush().expect("flush");
    let text = metric_text(&registry);
    for want in [
        "strata_storage_cache_requests_total{cache=\"labels\",result=\"miss\"} 2",
        "strata_storage_cache_requests_total{cache=\"labels\",result=\"hit\"} 2",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
}

#[test]
fn ordered_search_answers_the_same_series_in_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let clock = TestClock::new(NOW);
    let s = open(&cfg, &clock);
    // Enough series for batches of every size, part of them flushed and
    // part in memory, some in both.
    let rows = |from: usize, to: usize, t: i64| -> Vec<_> {
        (from..to)
            .map(|i| {
                let pod = format!("pod-{i}");
                series(
                    &[("__name__", "up"), ("pod", &pod)],
                    &[(t, i as f64), (t + 1000, i as f64)],
                )
            })
            .collect()
    };
    s.add(T0, &rows(0, 6000, NOW - 60_000)).expect("add");
    s.flush().expect("flush");
    s.add(T0, &rows(3000, 9000, NOW - 30_000)).expect("add");
    let matchers = [Matcher::eq("__name__", "up")];
    let range = TimeRange::new(NOW - 3_600_000, NOW);
    let mut iter = s.search_ordered(T0, &matchers, range).expect("search");
    let mut keyed = Vec::new();
    while let Some(next) = iter.next_keyed() {
        keyed.push(next.expect("series"));
    }
    assert_eq!(keyed.len(), 9000);
    for series in &keyed {
        assert_eq!(series.key(), strata_storage::labels_key(series.labels()));
    }
    assert!(
        keyed.windows(2).all(|w| w[0].key() < w[1].key()),
        "ascending keys, each label set once"
    );
    let mut ordered: Vec<_> = keyed
        .into_iter()
        .map(strata_storage::KeyedSeries::into_series)
        .collect();
    let mut plain: Vec<_> = s
        .search(T0, &matchers, range)
        .expect("search")
        .map(|r| r.expect("series"))
        .collect();
    ordered.sort_by(|a, b| a.labels.cmp(&b.labels));
    plain.sort_by(|a, b| a.labels.cmp(&b.labels));
    assert!(ordered == plain, "same series and samples in both orders");
}
