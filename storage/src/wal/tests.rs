use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::format::{FRAME_HEADER_LEN, HEADER_LEN};
use super::*;

fn open(dir: &Path, mode: SyncMode) -> (Wal, Vec<Vec<u8>>, ReplayStats) {
    let mut records = Vec::new();
    let (wal, stats) = Wal::open(dir, mode, &mut |r| {
        records.push(r.to_vec());
        Ok(())
    })
    .expect("open wal");
    (wal, records, stats)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    files
}

fn record(i: usize) -> Vec<u8> {
    // Varying lengths, including empty, so framing is exercised.
    format!("record-{i}-{}", "x".repeat(i % 37))
        .into_bytes()
        .into_iter()
        .take(i % 50)
        .collect()
}

#[test]
fn wal_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Wal>();
}

#[test]
fn format_guard() {
    // Pins the checksum algorithm with its standard check value.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);

    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Batch);
    assert_eq!(wal.append(b"strata").expect("append"), 1);
    assert_eq!(wal.append(b"").expect("append"), 2);
    assert_eq!(wal.append(&[0, 1, 2]).expect("append"), 3);
    wal.close().expect("close");
    let bytes = fs::read(dir.path().join("00000000000000000001.wal")).expect("read segment");

    let want: Vec<u8> = [
        // header: magic, version 1, segment id 1, first lsn 1, header crc
        &b"STRATWAL"[..],
        &[1, 0, 0, 0],
        &[1, 0, 0, 0, 0, 0, 0, 0],
        &[1, 0, 0, 0, 0, 0, 0, 0],
        &[0x40, 0x45, 0x27, 0xe7],
        // "strata": len 6, crc, payload
        &[6, 0, 0, 0],
        &[0x16, 0x27, 0xb0, 0xa4],
        b"strata",
        // empty record: len 0, crc of the four zero length bytes
        &[0, 0, 0, 0],
        &[0xc7, 0x4b, 0x67, 0x48],
        // [0, 1, 2]
        &[3, 0, 0, 0],
        &[0xb5, 0xf7, 0xa2, 0xf1],
        &[0, 1, 2],
    ]
    .concat();
    assert_eq!(bytes, want, "segment bytes changed: got {bytes:02x?}");
}

#[test]
fn roundtrip_across_rotations_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, replayed, stats) = open(dir.path(), SyncMode::Batch);
    assert!(replayed.is_empty());
    assert_eq!(stats, ReplayStats::default());
    assert_eq!(wal.current_segment(), 1);

    let mut want = Vec::new();
    for i in 0..300 {
        let r = record(i);
        let lsn = wal.append(&r).expect("append");
        assert_eq!(lsn, i as u64 + 1);
        want.push(r);
        if i % 100 == 99 {
            let id = wal.rotate().expect("rotate");
            assert_eq!(id, wal.current_segment());
        }
    }
    wal.sync_to(300).expect("sync");
    drop(wal);

    let (wal, replayed, stats) = open(dir.path(), SyncMode::Batch);
    assert_eq!(replayed, want);
    assert_eq!(stats.records, 300);
    assert_eq!(stats.segments, 4);
    assert_eq!(
        stats.bytes,
        want.iter().map(|r| r.len() as u64).sum::<u64>()
    );
    assert_eq!(stats.truncated_bytes, 0);
    // Lsns continue after the replayed ones; appends go to a new segment.
    assert_eq!(wal.current_segment(), 5);
    assert_eq!(wal.append(b"after reopen").expect("append"), 301);
    want.push(b"after reopen".to_vec());
    wal.close().expect("close");
    drop(wal);

    let (wal, replayed, stats) = open(dir.path(), SyncMode::None);
    assert_eq!(replayed, want);
    assert_eq!(stats.segments, 5);
    assert_eq!(wal.append(b"x").expect("append"), 302);
}

#[test]
fn size_bytes_matches_files_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::None);
    for i in 0..100 {
        let lsn = wal.append(&record(i)).expect("append");
        wal.sync_to(lsn).expect("sync");
        if i % 30 == 0 {
            wal.rotate().expect("rotate");
        }
    }
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .sum();
    assert_eq!(wal.size_bytes(), on_disk);
}

/// A log of five records in one segment, returning the segment image and the
/// offset of the last frame.
fn five_record_segment() -> (Vec<u8>, usize, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Batch);
    let records: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("payload number {i} {}", "y".repeat(i * 5)).into_bytes())
        .collect();
    for r in &records {
        wal.append(r).expect("append");
    }
    wal.close().expect("close");
    let image = fs::read(dir.path().join("00000000000000000001.wal")).expect("read");
    let last_len = FRAME_HEADER_LEN + records[4].len();
    let last_offset = image.len() - last_len;
    (image, last_offset, records)
}

#[test]
fn torn_tail_at_every_length_keeps_earlier_records() {
    let (image, last_offset, records) = five_record_segment();
    for cut_to in last_offset..image.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = dir.path().join("00000000000000000001.wal");
        fs::write(&seg, &image[..cut_to]).expect("write");

        let (wal, replayed, stats) = open(dir.path(), SyncMode::Batch);
        assert_eq!(replayed, records[..4], "cut to {cut_to}");
        assert_eq!(stats.truncated_bytes, (cut_to - last_offset) as u64);
        assert_eq!(fs::metadata(&seg).expect("stat").len(), last_offset as u64);
        wal.append(b"next").expect("append");
        drop(wal);

        // The cut is durable and the log opens cleanly afterwards.
        let (_wal, replayed, stats) = open(dir.path(), SyncMode::Batch);
        assert_eq!(replayed.len(), 5);
        assert_eq!(replayed[4], b"next");
        assert_eq!(stats.truncated_bytes, 0);
    }
}

#[test]
fn flipped_byte_in_last_record_is_truncated() {
    let (image, last_offset, records) = five_record_segment();
    for at in last_offset..image.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut damaged = image.clone();
        damaged[at] ^= 0x5a;
        fs::write(dir.path().join("00000000000000000001.wal"), &damaged).expect("write");

        let (_wal, replayed, stats) = open(dir.path(), SyncMode::Batch);
        assert_eq!(replayed, records[..4], "flip at {at}");
        assert_eq!(stats.truncated_bytes, (image.len() - last_offset) as u64);
    }
}

fn expect_corrupted(dir: &Path) -> (PathBuf, u64) {
    match Wal::open(dir, SyncMode::Batch, &mut |_| Ok(())) {
        Err(WalError::Corrupted { path, offset, .. }) => (path, offset),
        Err(e) => panic!("want corruption, got {e}"),
        Ok(_) => panic!("want corruption, open succeeded"),
    }
}

#[test]
fn damage_before_the_tail_is_an_error() {
    let (image, last_offset, records) = five_record_segment();
    // Frame offsets of records 1 and 2.
    let second = HEADER_LEN + FRAME_HEADER_LEN + records[0].len();
    let third = second + FRAME_HEADER_LEN + records[1].len();

    // Middle of the last segment: an intact record follows the bad one.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut damaged = image.clone();
    damaged[third + FRAME_HEADER_LEN + 2] ^= 0x01;
    let seg = dir.path().join("00000000000000000001.wal");
    fs::write(&seg, &damaged).expect("write");
    assert_eq!(expect_corrupted(dir.path()), (seg.clone(), third as u64));
    // Nothing was cut.
    assert_eq!(fs::read(&seg).expect("read"), damaged);

    // The tail of a segment that is not the last one.
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = dir.path().join("00000000000000000001.wal");
    fs::write(&seg, &image).expect("write");
    let (wal, _, _) = open(dir.path(), SyncMode::Batch);
    wal.append(b"in segment 2").expect("append");
    drop(wal);
    let mut damaged = image.clone();
    damaged[image.len() - 1] ^= 0x01;
    fs::write(&seg, &damaged).expect("write");
    assert_eq!(expect_corrupted(dir.path()), (seg, last_offset as u64));

    // A bad header on a segment holding data.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut damaged = image.clone();
    damaged[3] ^= 0x01;
    let seg = dir.path().join("00000000000000000001.wal");
    fs::write(&seg, &damaged).expect("write");
    assert_eq!(expect_corrupted(dir.path()), (seg, 0));
}

#[test]
fn torn_segment_creation_opens() {
    let header_of_2 = format::SegmentHeader {
        id: 2,
        first_lsn: 6,
    }
    .encode();
    let mut zeroed = [0u8; HEADER_LEN];
    zeroed[..4].copy_from_slice(b"STRA");
    let cases: [&[u8]; 4] = [
        &[],
        &header_of_2[..10],
        &header_of_2[..HEADER_LEN - 1],
        &zeroed,
    ];
    for torn in cases {
        let (image, _, records) = five_record_segment();
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("00000000000000000001.wal"), &image).expect("write");
        fs::write(dir.path().join("00000000000000000002.wal"), torn).expect("write");
        fs::write(dir.path().join("00000000000000000003.wal.tmp"), b"STRAT").expect("write");

        let (wal, replayed, stats) = open(dir.path(), SyncMode::Batch);
        assert_eq!(replayed, records);
        assert_eq!(stats.segments, 1);
        assert_eq!(stats.truncated_bytes, torn.len() as u64);
        assert_eq!(wal.append(b"x").expect("append"), 6);
        // Id 2 was seen, so the new segment is 3.
        assert_eq!(wal.current_segment(), 3);
        let names: Vec<_> = segment_files(dir.path())
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["00000000000000000001.wal", "00000000000000000003.wal"]
        );
    }
}

#[test]
fn on_record_error_fails_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Batch);
    wal.append(b"a").expect("append");
    wal.append(b"b").expect("append");
    drop(wal);
    let mut seen = 0;
    let result = Wal::open(dir.path(), SyncMode::Batch, &mut |_| {
        seen += 1;
        Err(WalError::Corrupted {
            path: PathBuf::from("engine"),
            offset: 7,
            what: "bad payload".into(),
        })
    });
    assert!(matches!(result, Err(WalError::Corrupted { offset: 7, .. })));
    assert_eq!(seen, 1);
}

#[test]
fn concurrent_appenders_replay_in_lsn_order() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Batch);
    let wal = Arc::new(wal);
    let done = Arc::new(AtomicBool::new(false));

    // Rotations race with appends; ordering must hold across segments.
    let rotator = {
        let (wal, done) = (Arc::clone(&wal), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                wal.rotate().expect("rotate");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut lsns = Vec::with_capacity(PER_THREAD);
                for i in 0..PER_THREAD {
                    let payload = format!("{t}:{i}");
                    let lsn = wal.append(payload.as_bytes()).expect("append");
                    if i % 3 == 0 {
                        wal.sync_to(lsn).expect("sync");
                    }
                    lsns.push((payload, lsn));
                }
                wal.sync_to(lsns[PER_THREAD - 1].1).expect("sync");
                lsns
            })
        })
        .collect();
    let mut lsn_of = HashMap::new();
    for w in writers {
        let lsns = w.join().expect("writer");
        assert!(lsns.windows(2).all(|p| p[0].1 < p[1].1));
        lsn_of.extend(lsns);
    }
    done.store(true, Ordering::Relaxed);
    rotator.join().expect("rotator");
    let stats = wal.stats();
    assert_eq!(stats.records, (THREADS * PER_THREAD) as u64);
    drop(wal);

    let (_wal, replayed, _) = open(dir.path(), SyncMode::Batch);
    assert_eq!(replayed.len(), THREADS * PER_THREAD);
    for (i, r) in replayed.iter().enumerate() {
        let payload = String::from_utf8(r.clone()).expect("utf8");
        assert_eq!(lsn_of[&payload], i as u64 + 1, "record {payload}");
    }
}

#[test]
fn remove_segments_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Batch);
    for i in 0..5u8 {
        wal.append(&[i]).expect("append");
        wal.rotate().expect("rotate");
    }
    // Segments 1..=5 hold one record each; 6 is current.
    assert_eq!(segment_files(dir.path()).len(), 6);
    let before = wal.size_bytes();
    wal.remove_segments_before(3).expect("remove");
    assert_eq!(segment_files(dir.path()).len(), 4);
    let frame = (HEADER_LEN + FRAME_HEADER_LEN + 1) as u64;
    assert_eq!(wal.size_bytes(), before - 2 * frame);
    // Beyond the current segment: everything but the current one goes.
    wal.remove_segments_before(100).expect("remove");
    assert_eq!(
        segment_files(dir.path()),
        [dir.path().join("00000000000000000006.wal")]
    );
    assert_eq!(wal.size_bytes(), HEADER_LEN as u64);
    wal.append(&[9]).expect("append");
    drop(wal);

    let (wal, replayed, _) = open(dir.path(), SyncMode::Batch);
    assert_eq!(replayed, [vec![9u8]]);
    // Lsns survive removal of the segments that held the older records.
    assert_eq!(wal.append(b"z").expect("append"), 7);
}

#[test]
fn closed_wal_refuses_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Interval(Duration::from_millis(5)));
    let lsn = wal.append(b"before close").expect("append");
    wal.close().expect("close");
    assert!(wal.syncer.lock().is_none(), "fsync thread still running");
    assert!(matches!(wal.append(b"late"), Err(WalError::Closed)));
    assert!(matches!(wal.rotate(), Err(WalError::Closed)));
    wal.sync_to(lsn)
        .expect("records from before close are durable");
    wal.close().expect("second close");
    drop(wal);
    let (_wal, replayed, _) = open(dir.path(), SyncMode::Batch);
    assert_eq!(replayed, [b"before close".to_vec()]);
}

#[test]
fn oversized_record_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::None);
    let big = vec![0u8; MAX_RECORD_LEN + 1];
    match wal.append(&big) {
        Err(WalError::Io { source, .. }) => {
            assert_eq!(source.kind(), io::ErrorKind::InvalidInput)
        }
        other => panic!("want invalid input, got {other:?}"),
    }
    assert_eq!(wal.append(b"ok").expect("append"), 1);
}

/// Length of the current segment file as the kernel sees it.
fn current_len(dir: &Path, wal: &Wal) -> u64 {
    let path = dir.join(format::segment_file_name(wal.current_segment()));
    fs::metadata(path).expect("stat").len()
}

#[test]
fn sync_modes() {
    let modes = [
        SyncMode::Batch,
        SyncMode::Interval(Duration::from_millis(10)),
        SyncMode::None,
    ];
    for mode in modes {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open(dir.path(), mode);
        let lsn = wal.append(b"0123456789").expect("append");
        assert_eq!(current_len(dir.path(), &wal), HEADER_LEN as u64, "{mode:?}");
        wal.sync_to(lsn).expect("sync");
        // In every mode the record is in the kernel once sync_to returns.
        assert_eq!(
            current_len(dir.path(), &wal),
            (HEADER_LEN + FRAME_HEADER_LEN + 10) as u64,
            "{mode:?}"
        );
        let stats = wal.stats();
        assert_eq!(stats.writes, 1, "{mode:?}");
        match mode {
            SyncMode::Batch => assert_eq!(stats.fsyncs, 1),
            SyncMode::None => assert_eq!(stats.fsyncs, 0),
            SyncMode::Interval(_) => {
                // The background thread fsyncs without anyone asking.
                let deadline = Instant::now() + Duration::from_secs(30);
                while wal.stats().fsyncs == 0 {
                    assert!(Instant::now() < deadline, "no background fsync");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        // Syncing again has nothing to do.
        wal.sync_to(lsn).expect("sync");
        assert_eq!(wal.stats().writes, 1, "{mode:?}");
    }
}

#[test]
fn interval_mode_writes_buffered_records_in_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Interval(Duration::from_millis(5)));
    wal.append(b"never synced by a caller").expect("append");
    let deadline = Instant::now() + Duration::from_secs(30);
    while current_len(dir.path(), &wal) == HEADER_LEN as u64 {
        assert!(Instant::now() < deadline, "record never written");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn unsynced_appends_are_flushed_by_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::None);
    wal.append(b"a").expect("append");
    wal.append(b"b").expect("append");
    drop(wal);
    let (_wal, replayed, _) = open(dir.path(), SyncMode::None);
    assert_eq!(replayed, [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn sync_to_unknown_lsn_syncs_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Batch);
    wal.sync_to(0).expect("nothing to sync");
    wal.sync_to(1_000).expect("no record yet");
    wal.append(b"a").expect("append");
    wal.sync_to(1_000).expect("sync all");
    assert_eq!(wal.stats().fsyncs, 1);
}

/// Replay speed and group-commit throughput. Run in release:
/// `cargo test --release -p strata-storage wal::tests::measure -- --ignored --nocapture`
/// (`STRATA_WAL_BENCH_DIR` picks the disk; default is the system temp dir).
#[test]
#[ignore = "measurement: prints replay and group-commit throughput, run in release by hand"]
fn measure() {
    let base = std::env::var_os("STRATA_WAL_BENCH_DIR").map(PathBuf::from);
    let tempdir = |name: &str| {
        match &base {
            Some(b) => tempfile::Builder::new().prefix(name).tempdir_in(b),
            None => tempfile::Builder::new().prefix(name).tempdir(),
        }
        .expect("tempdir")
    };

    // Replay: 1M records of 100 bytes.
    let dir = tempdir("wal-replay");
    let (wal, _, _) = open(dir.path(), SyncMode::None);
    let payload = [7u8; 100];
    for i in 0..1_000_000u64 {
        wal.append(&payload).expect("append");
        if i % 100_000 == 99_999 {
            wal.sync_to(i + 1).expect("sync");
        }
    }
    wal.close().expect("close");
    let size = wal.size_bytes();
    drop(wal);
    let start = Instant::now();
    let mut n = 0u64;
    let (_wal, stats) = Wal::open(dir.path(), SyncMode::None, &mut |r| {
        n += r.len() as u64;
        Ok(())
    })
    .expect("open");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(stats.records, 1_000_000);
    println!(
        "replay: {} records, {:.1} MB on disk in {:.3}s: {:.0} MB/s, {:.0} records/s",
        stats.records,
        size as f64 / 1e6,
        secs,
        size as f64 / 1e6 / secs,
        stats.records as f64 / secs
    );

    // Batch group commit: 8 threads appending 4 KiB records and syncing each.
    for threads in [1usize, 8] {
        let dir = tempdir("wal-batch");
        let (wal, _, _) = open(dir.path(), SyncMode::Batch);
        let wal = Arc::new(wal);
        let per_thread = 20_000 / threads;
        let start = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let wal = Arc::clone(&wal);
                std::thread::spawn(move || {
                    let record = vec![1u8; 4096];
                    for _ in 0..per_thread {
                        let lsn = wal.append(&record).expect("append");
                        wal.sync_to(lsn).expect("sync");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer");
        }
        let secs = start.elapsed().as_secs_f64();
        let stats = wal.stats();
        println!(
            "batch, {threads} appenders x {per_thread} x 4 KiB: {secs:.2}s, {:.0} appends/s, \
             {:.0} fsyncs/s, {:.1} records per fsync",
            stats.records as f64 / secs,
            stats.fsyncs as f64 / secs,
            stats.records as f64 / stats.fsyncs as f64
        );
    }
}

#[test]
fn write_failure_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _, _) = open(dir.path(), SyncMode::Batch);
    let lsn = wal.append(b"durable").expect("append");
    wal.sync_to(lsn).expect("sync");
    {
        // A read-only handle makes the next write(2) fail.
        let mut writer = wal.shared.writer.lock();
        let read_only = fs::File::open(&writer.path).expect("open read-only");
        writer.file = Arc::new(read_only);
    }
    let lsn = wal.append(b"lost").expect("append is only buffered");
    assert!(matches!(wal.sync_to(lsn), Err(WalError::Io { .. })));
    match wal.append(b"after failure") {
        Err(WalError::Io { source, .. }) => {
            assert!(source.to_string().contains("refuses writes until reopened"))
        }
        other => panic!("want the sticky failure, got {other:?}"),
    }
    assert!(matches!(wal.rotate(), Err(WalError::Io { .. })));
    assert!(matches!(wal.close(), Err(WalError::Io { .. })));
    drop(wal);
    let (_wal, replayed, stats) = open(dir.path(), SyncMode::Batch);
    assert_eq!(replayed, [b"durable".to_vec()]);
    assert_eq!(stats.truncated_bytes, 0);
}
