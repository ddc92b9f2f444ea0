use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::writer::Limits;
use super::*;
use crate::encoding::{self, BLOCK_TARGET_SAMPLES};

type Model = BTreeMap<SeriesId, Vec<(i64, f64)>>;

/// Tiny pages so that a few samples spread over many data and header pages.
const SMALL: Limits = Limits {
    page_target_bytes: 200,
    header_page_blocks: 3,
    max_block_samples: 5,
};

fn write(dir: &Path, limits: Limits, data: &Model) -> PartMeta {
    let mut w = PartWriter::with_limits(dir, limits).expect("create");
    for (&id, samples) in data {
        let ts: Vec<i64> = samples.iter().map(|s| s.0).collect();
        let vs: Vec<f64> = samples.iter().map(|s| s.1).collect();
        w.add(id, &ts, &vs).expect("add");
    }
    w.finish().expect("finish")
}

fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
    samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

fn read(part: &Part, id: SeriesId, range: TimeRange) -> Vec<(i64, u64)> {
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    part.read_series(id, range, &mut ts, &mut vs)
        .expect("read_series");
    assert_eq!(ts.len(), vs.len());
    ts.into_iter().zip(vs.iter().map(|v| v.to_bits())).collect()
}

fn want(model: &Model, id: SeriesId, range: TimeRange) -> Vec<(i64, u64)> {
    let samples = model.get(&id).map_or(&[][..], |s| s.as_slice());
    bits(samples)
        .into_iter()
        .filter(|(t, _)| range.contains(*t))
        .collect()
}

/// Series with irregular lengths, gaps and special values.
fn sample_model(series: u64) -> Model {
    let stale = f64::from_bits(crate::types::STALE_NAN_BITS);
    let mut model = Model::new();
    for id in 0..series {
        let n = (id * 7 % 23) as i64;
        if n == 0 {
            continue;
        }
        let samples = (0..n)
            .map(|i| {
                let t = 1_000 * i + (id as i64 % 5) * 13 + if i > 10 { 50_000 } else { 0 };
                let v = match i % 5 {
                    0 => stale,
                    1 => -0.0,
                    _ => (id as f64) * 1.5 + i as f64,
                };
                (t, v)
            })
            .collect();
        model.insert(id * 3 + 1, samples);
    }
    model
}

fn check_model(part: &Part, model: &Model) {
    let ranges = [
        TimeRange::ALL,
        TimeRange::new(0, 5_000),
        TimeRange::new(3_000, 3_000),
        TimeRange::new(4_001, 60_000),
        TimeRange::new(i64::MIN, 0),
        TimeRange::new(100_000, i64::MAX),
    ];
    for &id in model.keys() {
        for r in ranges {
            assert_eq!(
                read(part, id, r),
                want(model, id, r),
                "series {id} range {r:?}"
            );
        }
    }
    let mut from_blocks = Model::new();
    for b in part.blocks() {
        let b = b.expect("block");
        let e = from_blocks.entry(b.series_id).or_default();
        e.extend(b.timestamps.iter().copied().zip(b.values.iter().copied()));
    }
    assert_eq!(from_blocks.len(), model.len());
    for (id, samples) in model {
        assert_eq!(
            bits(&from_blocks[id]),
            bits(samples),
            "blocks of series {id}"
        );
    }
}

#[test]
fn round_trip_many_series() {
    let model = sample_model(400);
    let rows: usize = model.values().map(Vec::len).sum();
    for limits in [Limits::DEFAULT, SMALL] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        let meta = write(&dir, limits, &model);
        assert_eq!(meta.rows, rows as u64);
        assert_eq!(meta.series, model.len() as u64);
        assert_eq!(meta.min_series_id, *model.keys().next().expect("series"));
        assert_eq!(meta.max_series_id, *model.keys().last().expect("series"));
        let part = Part::open(&dir).expect("open");
        assert_eq!(part.meta(), &meta);
        assert_eq!(part.path(), dir);
        let on_disk: u64 = std::fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").metadata().expect("metadata").len())
            .sum();
        assert_eq!(meta.size_bytes, on_disk);
        check_model(&part, &model);
    }
}

#[test]
fn blocks_split_at_the_block_target() {
    let n = 2 * BLOCK_TARGET_SAMPLES + 3;
    let ts: Vec<i64> = (0..n as i64).collect();
    let vs: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
    // One call, or many calls of odd sizes: the same blocks come out.
    for chunk in [n, 100, 7] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("p");
        let mut w = PartWriter::create(&dir).expect("create");
        w.add(1, &[5], &[5.0]).expect("add");
        for (t, v) in ts.chunks(chunk).zip(vs.chunks(chunk)) {
            w.add(2, t, v).expect("add");
        }
        let meta = w.finish().expect("finish");
        assert_eq!(meta.blocks, 4);
        let part = Part::open(&dir).expect("open");
        let sizes: Vec<(SeriesId, usize)> = part
            .blocks()
            .map(|b| b.expect("block"))
            .map(|b| (b.series_id, b.timestamps.len()))
            .collect();
        assert_eq!(
            sizes,
            [
                (1, 1),
                (2, BLOCK_TARGET_SAMPLES),
                (2, BLOCK_TARGET_SAMPLES),
                (2, 3)
            ]
        );
        // A range across the first block boundary.
        let got = read(&part, 2, TimeRange::new(200, 300));
        assert_eq!(got.len(), 101);
        assert_eq!(got.first().map(|s| s.0), Some(200));
    }
}

#[test]
fn absent_series_and_ranges() {
    let model: Model = [(10, vec![(100, 1.0), (200, 2.0)]), (20, vec![(150, 3.0)])]
        .into_iter()
        .collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    write(&dir, SMALL, &model);
    let part = Part::open(&dir).expect("open");
    for id in [0, 9, 11, 15, 19, 21, u64::MAX] {
        assert_eq!(read(&part, id, TimeRange::ALL), [], "series {id}");
    }
    assert_eq!(read(&part, 10, TimeRange::new(201, 300)), []);
    assert_eq!(read(&part, 10, TimeRange::new(0, 99)), []);
    assert_eq!(read(&part, 10, TimeRange::new(150, 120)), []);
    assert_eq!(read(&part, 10, TimeRange::new(101, 199)), []);
    assert_eq!(
        read(&part, 10, TimeRange::new(200, 200)),
        [(200, 2.0f64.to_bits())]
    );
}

#[test]
fn empty_part() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let meta = PartWriter::create(&dir)
        .expect("create")
        .finish()
        .expect("finish");
    assert_eq!((meta.rows, meta.blocks, meta.series), (0, 0, 0));
    assert!(meta.min_timestamp > meta.max_timestamp);
    assert!(meta.min_series_id > meta.max_series_id);
    let part = Part::open(&dir).expect("open");
    assert_eq!(read(&part, 1, TimeRange::ALL), []);
    assert_eq!(part.blocks().count(), 0);
}

#[test]
fn writer_rejects_bad_input_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let mut w = PartWriter::create(&dir).expect("create");
    w.add(5, &[10, 20], &[1.0, 2.0]).expect("add");
    let bad = |r: Result<(), PartError>| matches!(r, Err(PartError::InvalidInput { .. }));
    assert!(bad(w.add(4, &[1], &[1.0])), "lower series id");
    assert!(bad(w.add(5, &[20], &[1.0])), "repeated timestamp");
    assert!(bad(w.add(6, &[3, 3], &[1.0, 1.0])), "duplicate timestamp");
    assert!(bad(w.add(6, &[3], &[])), "length mismatch");
    // Rejected calls changed nothing.
    w.add(5, &[30], &[3.0]).expect("add");
    drop(w);
    assert!(!dir.exists(), "an unfinished writer removes its directory");

    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("keep"), b"x").expect("write");
    assert!(matches!(
        PartWriter::create(&dir),
        Err(PartError::Io { .. })
    ));
    assert!(
        dir.join("keep").exists(),
        "an existing directory is left alone"
    );
}

fn merge_model(
    inputs: &[&Model],
    interval: i64,
    keep: TimeRange,
    drop: &dyn Fn(u64) -> bool,
) -> Model {
    // Exact duplicates: the greatest value in total order wins.
    let mut all: BTreeMap<(SeriesId, i64), f64> = BTreeMap::new();
    for m in inputs {
        for (&id, samples) in *m {
            for &(t, v) in samples {
                let e = all.entry((id, t)).or_insert(v);
                if v.total_cmp(e).is_gt() {
                    *e = v;
                }
            }
        }
    }
    let mut out = Model::new();
    for ((id, t), v) in all {
        if drop(id) {
            continue;
        }
        let s = out.entry(id).or_default();
        // With an interval, the latest sample of each bucket wins.
        if interval > 0
            && let Some(last) = s.last_mut()
            && last.0.div_euclid(interval) == t.div_euclid(interval)
        {
            *last = (t, v);
            continue;
        }
        s.push((t, v));
    }
    for s in out.values_mut() {
        s.retain(|(t, _)| keep.contains(*t));
    }
    out.retain(|_, s| !s.is_empty());
    out
}

#[test]
fn merge_overlaps_dedups_keeps_and_drops() {
    let a: Model = [
        (1, vec![(0, 1.0), (10, 1.0), (20, 1.0)]),
        (2, vec![(5, 2.0), (25, 2.0)]),
        (4, vec![(100, 4.0)]),
        (6, vec![(1, 6.0)]),
    ]
    .into_iter()
    .collect();
    let b: Model = [
        (1, vec![(10, 5.0), (15, 0.5), (30, 1.0)]),
        (3, vec![(7, 3.0)]),
        (4, vec![(90, 4.0), (100, 3.0)]),
    ]
    .into_iter()
    .collect();
    let c: Model = [(1, vec![(10, -1.0)]), (7, vec![(500, 7.0)])]
        .into_iter()
        .collect();
    let check = |interval: i64, keep: TimeRange, want: &[(SeriesId, &[(i64, f64)])]| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut parts = Vec::new();
        for (i, m) in [&a, &b, &c].into_iter().enumerate() {
            let dir = tmp.path().join(format!("in{i}"));
            write(&dir, SMALL, m);
            parts.push(Part::open(&dir).expect("open"));
        }
        let refs: Vec<&Part> = parts.iter().collect();
        let out = tmp.path().join("out");
        let drop = |id: SeriesId| id == 3;
        let meta = merge_with_limits(&refs, &out, interval, keep, &drop, SMALL).expect("merge");
        let part = Part::open(&out).expect("open merged");
        assert_eq!(part.meta(), &meta);
        let want: Model = want.iter().map(|(id, s)| (*id, s.to_vec())).collect();
        assert_eq!(want, merge_model(&[&a, &b, &c], interval, keep, &drop));
        check_model(&part, &want);
    };
    check(
        0,
        TimeRange::ALL,
        &[
            (1, &[(0, 1.0), (10, 5.0), (15, 0.5), (20, 1.0), (30, 1.0)]),
            (2, &[(5, 2.0), (25, 2.0)]),
            (4, &[(90, 4.0), (100, 4.0)]),
            (6, &[(1, 6.0)]),
            (7, &[(500, 7.0)]),
        ],
    );
    check(
        10,
        TimeRange::new(1, 100),
        &[
            (1, &[(15, 0.5), (20, 1.0), (30, 1.0)]),
            (2, &[(5, 2.0), (25, 2.0)]),
            (4, &[(90, 4.0), (100, 4.0)]),
            (6, &[(1, 6.0)]),
        ],
    );
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

fn assert_corrupted<T: std::fmt::Debug>(r: Result<T, PartError>, file: &Path, want_offset: u64) {
    match r {
        Err(PartError::Corrupted { path, offset, what }) => {
            assert_eq!((path.as_path(), offset), (file, want_offset), "{what}");
        }
        other => panic!("want corruption of {file:?} at {want_offset}, got {other:?}"),
    }
}

#[test]
fn corrupted_data_page_fails_only_its_blocks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let long: Vec<(i64, f64)> = (0..40).map(|i| (i * 10, i as f64)).collect();
    let model: Model = [
        (1, vec![(1, 1.0)]),
        (2, long.clone()),
        (3, vec![(3, 3.0), (4, 4.0)]),
    ]
    .into_iter()
    .collect();
    // One block per page, so the long series spans several pages.
    let limits = Limits {
        page_target_bytes: 1,
        ..SMALL
    };
    write(&dir, limits, &model);
    let part = Part::open(&dir).expect("open");
    let pages = part.data_page_offsets(2);
    assert_eq!(pages.len(), 8);
    let bad = pages[3];
    drop(part);
    flip_byte(&dir.join("data.bin"), bad + 1);

    let part = Part::open(&dir).expect("open does not read data pages");
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    let r = part.read_series(2, TimeRange::ALL, &mut ts, &mut vs);
    assert_corrupted(r, &dir.join("data.bin"), bad);
    let good: Vec<i64> = long
        .iter()
        .map(|s| s.0)
        .filter(|t| !(150..200).contains(t))
        .collect();
    assert_eq!(ts, good, "the good blocks were appended");
    assert_eq!(vs.len(), ts.len());
    // Reads that avoid the damaged page, and other series, still work.
    assert_eq!(read(&part, 2, TimeRange::new(0, 149)).len(), 15);
    assert_eq!(read(&part, 1, TimeRange::ALL), bits(&model[&1]));
    assert_eq!(read(&part, 3, TimeRange::ALL), bits(&model[&3]));

    // A shared read cache reports the damaged page to every call that needs
    // it, and serves neighbouring series from the page it holds.
    let mut cache = ReadCache::default();
    for _ in 0..2 {
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        let r = part.read_series_cached(&mut cache, 2, TimeRange::ALL, &mut ts, &mut vs);
        assert_corrupted(r, &dir.join("data.bin"), bad);
        assert_eq!(ts, good);
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        part.read_series_cached(&mut cache, 3, TimeRange::ALL, &mut ts, &mut vs)
            .expect("series 3");
        assert_eq!(ts, vec![3, 4]);
    }

    let results: Vec<_> = part.blocks().collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    // 1 + 8 + 1 blocks, the one on the damaged page replaced by its error.
    assert_eq!(results.len(), 10);

    let out = tmp.path().join("merged");
    let r = merge_parts(&[&part], &out, 0, TimeRange::ALL, &|_| false);
    assert_corrupted(r, &dir.join("data.bin"), bad);
    assert!(!out.exists(), "a failed merge leaves no directory");
}

#[test]
fn has_samples_agrees_with_reading() {
    let model = sample_model(120);
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, limits) in [Limits::DEFAULT, SMALL].into_iter().enumerate() {
        let dir = tmp.path().join(format!("p{i}"));
        write(&dir, limits, &model);
        let part = Part::open(&dir).expect("open");
        let mut cache = ReadCache::default();
        // Ranges inside blocks, inside the gap between the two runs of
        // samples (10 s .. 61 s), across it, at its ends, and outside.
        let ranges = [
            TimeRange::ALL,
            TimeRange::new(2_000, 2_500),
            TimeRange::new(3_000, 3_000),
            TimeRange::new(3_001, 3_999),
            TimeRange::new(20_000, 40_000),
            TimeRange::new(10_001, 61_000),
            TimeRange::new(i64::MIN, 0),
            TimeRange::new(200_000, i64::MAX),
            TimeRange::new(5, 4),
        ];
        for &id in model.keys().chain(&[0, 2, 1_000]) {
            for r in ranges {
                let want = !want(&model, id, r).is_empty();
                let got = part.has_samples(&mut cache, id, r).expect("has_samples");
                assert_eq!(got, want, "series {id} range {r:?}");
            }
        }
    }
}

#[test]
fn shared_page_cache_serves_every_part_and_never_keeps_a_damaged_page() {
    let model = sample_model(200);
    // Same series and timestamps, so pages sit at the same offsets in both
    // parts: each part must still get its own.
    let other: Model = model
        .iter()
        .map(|(&id, s)| (id, s.iter().map(|&(t, v)| (t, v * 2.0 + 1.0)).collect()))
        .collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    write(&dir_a, SMALL, &model);
    write(&dir_b, SMALL, &other);
    let cache = PageCache::new(1 << 20, 1 << 20);
    let a = Part::open_with_cache(&dir_a, Arc::clone(&cache)).expect("open a");
    let b = Part::open_with_cache(&dir_b, Arc::clone(&cache)).expect("open b");
    check_model(&a, &model);
    check_model(&b, &other);
    let (headers, pages) = cache.take_counts();
    assert!(headers.misses > 0 && pages.misses > 0);
    check_model(&a, &model);
    check_model(&b, &other);
    let (headers, pages) = cache.take_counts();
    assert_eq!((headers.misses, pages.misses), (0, 0), "second reads hit");
    assert!(headers.hits > 0 && pages.hits > 0 && pages.bytes > 0);

    let disabled = PageCache::new(0, 0);
    let c = Part::open_with_cache(&dir_a, Arc::clone(&disabled)).expect("open c");
    check_model(&c, &model);
    assert_eq!(disabled.take_counts(), Default::default());

    // A damaged page fails every read that needs it, cached or not.
    let id = *model.keys().nth(5).expect("series");
    let bad = a.data_page_offsets(id)[0];
    drop((a, b, c));
    flip_byte(&dir_a.join("data.bin"), bad + 1);
    let cache = PageCache::new(1 << 20, 1 << 20);
    let a = Part::open_with_cache(&dir_a, Arc::clone(&cache)).expect("reopen a");
    for _ in 0..2 {
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        let r = a.read_series(id, TimeRange::ALL, &mut ts, &mut vs);
        assert_corrupted(r, &dir_a.join("data.bin"), bad);
    }
}

#[test]
fn corrupted_headers_index_or_meta_fail_open() {
    let model = sample_model(60);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write(&src, SMALL, &model);
    let index = std::fs::read(src.join("index.bin")).expect("index");
    let entries: Vec<IndexEntry> = index[..index.len() - 4]
        .chunks_exact(INDEX_ENTRY_BYTES)
        .map(|c| format::decode_index_entry(c.try_into().expect("entry")))
        .collect();
    assert!(entries.len() > 3);
    let third = entries[2];
    let meta_len = std::fs::metadata(src.join("meta.json"))
        .expect("meta")
        .len();

    // (file, byte to flip, offset the error must name)
    let cases = [
        ("headers.bin", third.offset + 2, third.offset),
        ("index.bin", 60, index.len() as u64 - 4),
        ("index.bin", index.len() as u64 - 1, index.len() as u64 - 4),
        ("meta.json", 20, 0),
        ("meta.json", meta_len - 3, meta_len - 9),
    ];
    for (i, (file, flip, offset)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        std::fs::create_dir(&dir).expect("mkdir");
        for f in ["data.bin", "headers.bin", "index.bin", "meta.json"] {
            std::fs::copy(src.join(f), dir.join(f)).expect("copy");
        }
        flip_byte(&dir.join(file), flip);
        assert_corrupted(Part::open(&dir), &dir.join(file), offset);
    }

    // A truncated data file no longer matches size_bytes.
    let dir = tmp.path().join("truncated");
    std::fs::create_dir(&dir).expect("mkdir");
    for f in ["data.bin", "headers.bin", "index.bin", "meta.json"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let data = std::fs::read(dir.join("data.bin")).expect("data");
    std::fs::write(dir.join("data.bin"), &data[..data.len() - 1]).expect("write");
    assert_corrupted(Part::open(&dir), &dir.join("meta.json"), 0);
}

#[test]
fn partial_part_dir_fails_to_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    write(&dir, SMALL, &sample_model(10));
    std::fs::remove_file(dir.join("meta.json")).expect("rm");
    match Part::open(&dir) {
        Err(PartError::Io { path, source }) => {
            assert_eq!(path, dir.join("meta.json"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("want missing meta.json, got {other:?}"),
    }
    assert!(Part::open(&tmp.path().join("absent")).is_err());
}

#[test]
fn concurrent_readers_share_a_part() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Part>();
    let model = sample_model(300);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    write(&dir, SMALL, &model);
    let part = Arc::new(Part::open(&dir).expect("open"));
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let part = Arc::clone(&part);
            let model = model.clone();
            std::thread::spawn(move || {
                for (&id, _) in model.iter().skip(k).step_by(2) {
                    assert_eq!(
                        read(&part, id, TimeRange::ALL),
                        want(&model, id, TimeRange::ALL)
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader thread");
    }
}

/// The shape of a part for measuring header overhead: ids advance by
/// 1..=`id_gap`, series start within `start_spread` ms, hold `len` plus up to
/// `len_spread` samples every 15 s plus up to `ts_jitter` ms.
struct Shape {
    series: u64,
    id_gap: u64,
    start_spread: u64,
    len: u64,
    len_spread: u64,
    ts_jitter: u64,
}

/// Header and index bytes per block of a part of the given shape.
fn header_bytes_per_block(shape: Shape) -> f64 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let mut w = PartWriter::create(&dir).expect("create");
    let mut seed: u64 = 42;
    let mut rand = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n.max(1)
    };
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    let mut id = 1_000_000;
    for _ in 0..shape.series {
        id += 1 + rand(shape.id_gap);
        let start = 1_700_000_000_000 + rand(shape.start_spread) as i64;
        let n = shape.len + rand(shape.len_spread);
        ts.clear();
        vs.clear();
        for i in 0..n as i64 {
            ts.push(start + i * 15_000 + rand(shape.ts_jitter) as i64);
            vs.push(rand(1_000) as f64);
        }
        w.add(id, &ts, &vs).expect("add");
    }
    let meta = w.finish().expect("finish");
    let headers = std::fs::metadata(dir.join("headers.bin"))
        .expect("headers")
        .len();
    let index = std::fs::metadata(dir.join("index.bin"))
        .expect("index")
        .len();
    (headers + index) as f64 / meta.blocks as f64
}

/// Guards the compactness of header pages: a scrape-like flush (aligned
/// starts, steady intervals) and irregular series (random gaps between ids,
/// start times over 10 hours, lengths 1..1500).
#[test]
fn header_pages_are_compact() {
    let scrape = header_bytes_per_block(Shape {
        series: 20_000,
        id_gap: 2,
        start_spread: 15_000,
        len: 20,
        len_spread: 2,
        ts_jitter: 20,
    });
    let irregular = header_bytes_per_block(Shape {
        series: 20_000,
        id_gap: 40,
        start_spread: 36_000_000,
        len: 1,
        len_spread: 1_500,
        ts_jitter: 100,
    });
    println!("header+index bytes per block: scrape-like {scrape:.2}, irregular {irregular:.2}");
    assert!(scrape < 6.0, "scrape-like: {scrape} bytes per block");
    assert!(irregular < 16.0, "irregular: {irregular} bytes per block");
}

/// Format guard: fixed input, tiny limits, exact bytes of everything the part
/// layout owns. Bytes produced by the block codec are computed through its API.
#[test]
fn format_guard() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p");
    let limits = Limits {
        page_target_bytes: 1,
        header_page_blocks: 2,
        max_block_samples: 2,
    };
    let mut w = PartWriter::with_limits(&dir, limits).expect("create");
    w.add(7, &[1000, 1010, 1020], &[1.0, 2.0, 3.0])
        .expect("add");
    w.add(9, &[500], &[-0.5]).expect("add");
    w.finish().expect("finish");

    // Three blocks, one per data page: (7: 1000, 1010), (7: 1020), (9: 500).
    let mut raw = Vec::new();
    let mut data = Vec::new();
    let mut pages = Vec::new(); // (offset, compressed len, raw len, crc)
    for (ts, vs) in [
        (&[1000i64, 1010][..], &[1.0f64, 2.0][..]),
        (&[1020], &[3.0]),
        (&[500], &[-0.5]),
    ] {
        raw.clear();
        encoding::encode_block(ts, vs, &mut raw);
        let start = data.len();
        encoding::compress_page(&raw, &mut data);
        let c = &data[start..];
        pages.push((
            start as u64,
            c.len() as u64,
            raw.len() as u64,
            crc32c::crc32c(c),
        ));
    }
    assert_eq!(std::fs::read(dir.join("data.bin")).expect("data"), data);

    fn v(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push(n as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let page_entry = |p: (u64, u64, u64, u32), out: &mut Vec<u8>| {
        out.push(1); // blocks in the page
        v(p.1, out);
        v(p.2, out);
        out.extend_from_slice(&p.3.to_le_bytes());
    };
    // Two pages, the first at data offset 0, base_ts zigzag(1000).
    let mut hp0 = vec![2, 0, 0xd0, 0x0f];
    page_entry(pages[0], &mut hp0);
    page_entry(pages[1], &mut hp0);
    hp0.extend_from_slice(&[7, 0]); // series 7, delta 0
    v(pages[0].2, &mut hp0);
    v(pages[1].2, &mut hp0);
    hp0.extend_from_slice(&[2, 1]); // sample counts
    hp0.extend_from_slice(&[10, 0]); // max_ts - min_ts
    hp0.extend_from_slice(&[0, 9]); // 1000 - base, 1020 - 1010 - 1
    let mut hp1 = vec![1];
    v(pages[2].0, &mut hp1);
    hp1.extend_from_slice(&[0xe8, 0x07]); // base_ts zigzag(500)
    page_entry(pages[2], &mut hp1);
    hp1.push(9);
    v(pages[2].2, &mut hp1);
    hp1.extend_from_slice(&[1, 0, 0]); // count, span, start

    let headers = std::fs::read(dir.join("headers.bin")).expect("headers");
    let len0 = zstd::zstd_safe::find_frame_compressed_size(&headers).expect("zstd frame");
    let (h0, h1) = headers.split_at(len0);
    assert_eq!(zstd::decode_all(h0).expect("hp0"), hp0);
    assert_eq!(zstd::decode_all(h1).expect("hp1"), hp1);

    let mut index = Vec::new();
    for (first, last, min, max, off, h, blocks) in [
        (7u64, 7u64, 1000i64, 1020i64, 0u64, h0, 2u32),
        (9, 9, 500, 500, len0 as u64, h1, 1),
    ] {
        index.extend_from_slice(&first.to_le_bytes());
        index.extend_from_slice(&last.to_le_bytes());
        index.extend_from_slice(&min.to_le_bytes());
        index.extend_from_slice(&max.to_le_bytes());
        index.extend_from_slice(&off.to_le_bytes());
        index.extend_from_slice(&(h.len() as u32).to_le_bytes());
        index.extend_from_slice(&crc32c::crc32c(h).to_le_bytes());
        index.extend_from_slice(&blocks.to_le_bytes());
    }
    let crc = crc32c::crc32c(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(std::fs::read(dir.join("index.bin")).expect("index"), index);

    let meta = std::fs::read_to_string(dir.join("meta.json")).expect("meta");
    let size = (data.len() + headers.len() + index.len() + meta.len()) as u64;
    let json = format!(
        "{{\"format_version\":1,\"rows\":4,\"blocks\":3,\"series\":2,\
         \"min_timestamp\":500,\"max_timestamp\":1020,\"min_series_id\":7,\
         \"max_series_id\":9,\"size_bytes\":{size}}}"
    );
    let crc = crc32c::crc32c(json.as_bytes());
    assert_eq!(meta, format!("{json}\n{crc:08x}\n"));
}

fn arb_part() -> impl Strategy<Value = Model> {
    let sample = (
        0u64..12,
        0i64..300,
        prop_oneof![
            (-3i32..3).prop_map(f64::from),
            Just(f64::from_bits(crate::types::STALE_NAN_BITS)),
            Just(-0.0),
        ],
    );
    proptest::collection::vec(sample, 0..80).prop_map(|samples| {
        let mut m: BTreeMap<(SeriesId, i64), f64> = BTreeMap::new();
        for (id, t, v) in samples {
            let e = m.entry((id, t)).or_insert(v);
            if v.total_cmp(e).is_gt() {
                *e = v;
            }
        }
        let mut out = Model::new();
        for ((id, t), v) in m {
            out.entry(id).or_default().push((t, v));
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn write_merge_read_matches_model(
        inputs in proptest::collection::vec(arb_part(), 1..4),
        page_target in 1usize..300,
        header_blocks in 1usize..5,
        max_block in 1usize..7,
        interval in prop_oneof![Just(0i64), Just(7), Just(50)],
        keep_from in 0i64..150,
        keep_len in 0i64..300,
        drop_mod in 2u64..5,
        start in -10i64..300,
        len in 0i64..200,
    ) {
        let limits = Limits {
            page_target_bytes: page_target,
            header_page_blocks: header_blocks,
            max_block_samples: max_block,
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut parts = Vec::new();
        let range = TimeRange::new(start, start + len);
        for (i, m) in inputs.iter().enumerate() {
            let dir = tmp.path().join(format!("in{i}"));
            write(&dir, limits, m);
            let part = Part::open(&dir).expect("open");
            for id in 0..13 {
                prop_assert_eq!(read(&part, id, range), want(m, id, range));
            }
            parts.push(part);
        }
        let refs: Vec<&Part> = parts.iter().collect();
        let keep = TimeRange::new(keep_from, keep_from + keep_len);
        let drop = |id: SeriesId| id.is_multiple_of(drop_mod);
        let out = tmp.path().join("out");
        let meta = merge_with_limits(&refs, &out, interval, keep, &drop, limits).expect("merge");
        let models: Vec<&Model> = inputs.iter().collect();
        let model = merge_model(&models, interval, keep, &drop);
        prop_assert_eq!(meta.rows as usize, model.values().map(Vec::len).sum::<usize>());
        let merged = Part::open(&out).expect("open merged");
        for id in 0..13 {
            prop_assert_eq!(read(&merged, id, TimeRange::ALL), want(&model, id, TimeRange::ALL));
            prop_assert_eq!(read(&merged, id, range), want(&model, id, range));
        }
    }
}
