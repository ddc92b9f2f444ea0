use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::block::{BlockEncoder, decode_disk, decode_raw};
use super::part::{BLOCKS_FILE, INDEX_FILE, Part, part_dir_name};
use super::run::ItemRun;
use super::*;

fn small_opts() -> TableOptions {
    TableOptions {
        block_bytes: 64,
        max_parts: 3,
        merge_width: 3,
        max_mem_runs: 3,
        zstd_level: 1,
        cache_bytes: 4096,
        cache: None,
    }
}

fn collect(search: &mut Search) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(item) = search.next_item() {
        out.push(item.expect("no corruption").to_vec());
    }
    out
}

fn all_items(table: &Table) -> Vec<Vec<u8>> {
    collect(&mut table.search())
}

fn run_of(items: &[&[u8]]) -> ItemRun {
    ItemRun::from_unsorted(items.to_vec())
}

/// Part ids listed in the manifest, read as the next open would.
fn listed(dir: &Path) -> manifest::Manifest {
    manifest::read(dir)
        .expect("manifest")
        .expect("manifest exists")
}

fn index_key(name: &str, value: &str, series: u64) -> Vec<u8> {
    let mut k = vec![2u8];
    k.extend_from_slice(&7u64.to_be_bytes());
    k.extend_from_slice(&20_000u32.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k.extend_from_slice(&series.to_be_bytes());
    k
}

#[test]
fn table_is_shareable_and_searches_movable() {
    fn shareable<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shareable::<Table>();
    movable::<Search>();
}

#[test]
fn tables_sharing_a_cache_read_their_own_blocks() {
    // Both tables' first parts get the same id: the cache must tell them apart.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = IndexCache::new(1 << 20);
    let opts = TableOptions {
        cache: Some(Arc::clone(&cache)),
        ..small_opts()
    };
    let mut tables = Vec::new();
    for name in ["a", "b"] {
        let table = Table::open_with(&tmp.path().join(name), opts.clone()).expect("open");
        let items: Vec<Vec<u8>> = (0..50u64).map(|i| index_key(name, "v", i)).collect();
        table.add_items(items.iter().map(Vec::as_slice));
        table.flush().expect("flush");
        tables.push((table, items));
    }
    for _ in 0..2 {
        for (table, items) in &tables {
            assert_eq!(&all_items(table), items);
        }
    }
    let counts = cache.take_counts();
    assert!(counts.hits > 0 && counts.misses > 0, "{counts:?}");
}

#[test]
fn raw_block_format_guard() {
    let items: &[&[u8]] = &[
        b"ab\x00\x00\x00\x00\x00\x00\x00\x01",
        b"ab\x00\x00\x00\x00\x00\x00\x00\x02",
        b"ab\x00\x00\x00\x00\x00\x00\x01\x00",
        b"abc",
        b"b",
    ];
    let run = run_of(items);
    let mut enc = BlockEncoder::new(1).expect("zstd");
    let raw = enc.encode_raw(&run).to_vec();
    #[rustfmt::skip]
    let want: &[u8] = &[
        5, 4, 2, 3,             // n, ctrl_len, lens_len, deltas_len
        0, 0, 3, 1,             // ctrl: delta, delta, prefix 2, prefix 0
        1, 1,                   // lens: "c", "b" (item 0 lives in the block index)
        1, 0xfe, 0x01,          // deltas: 1, 254
        b'c', b'b',             // suffixes
    ];
    assert_eq!(raw, want);
    assert_eq!(decode_raw(&raw, items[0], 5).expect("decodes"), run);
}

#[test]
fn part_files_format_guard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Table::open_with(
        dir.path(),
        TableOptions {
            block_bytes: 256,
            ..TableOptions::default()
        },
    )
    .expect("open");
    let items: Vec<Vec<u8>> = (0..200u64)
        .map(|i| index_key(["job", "instance", "mode"][(i % 3) as usize], "node", i / 3))
        .collect();
    table.add_items(items.iter().map(Vec::as_slice));
    table.flush().expect("flush");
    let part_dir = dir.path().join(part_dir_name(1));
    let blocks = std::fs::read(part_dir.join(BLOCKS_FILE)).expect("blocks");
    let index = std::fs::read(part_dir.join(INDEX_FILE)).expect("index");
    let manifest = std::fs::read(dir.path().join(manifest::MANIFEST_FILE)).expect("manifest");
    assert_eq!(&blocks[..8], b"STMSBLK1");
    assert_eq!(&index[..8], b"STMSIDX1");
    assert_eq!(manifest, b"{\"format\":1,\"parts\":[1],\"broken\":[]}\n");
    let hashes = (
        blocks.len(),
        xxhash_rust::xxh3::xxh3_64(&blocks),
        index.len(),
        xxhash_rust::xxh3::xxh3_64(&index),
    );
    assert_eq!(
        hashes,
        (511, 1373243130265335878, 203, 2953157427716230824),
        "part format changed: update the module doc and this test"
    );
}

#[test]
fn empty_table_and_empty_item() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Table::open(dir.path()).expect("open");
    assert_eq!(all_items(&table), Vec::<Vec<u8>>::new());
    assert_eq!(table.disk_usage(), (0, 0));
    table.flush().expect("flush of nothing");
    assert!(!table.merge_step().expect("merge"));
    table.force_merge().expect("force merge of nothing");
    assert!(!dir.path().join(manifest::MANIFEST_FILE).exists());

    table.add_items([&b""[..], b"a", b""]);
    assert_eq!(all_items(&table), vec![b"".to_vec(), b"a".to_vec()]);
    table.flush().expect("flush");
    drop(table);
    let table = Table::open(dir.path()).expect("reopen");
    assert_eq!(all_items(&table), vec![b"".to_vec(), b"a".to_vec()]);
}

#[test]
fn duplicates_collapse_across_runs_and_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Table::open_with(dir.path(), small_opts()).expect("open");
    table.add_items([&b"b"[..], b"a", b"b"]);
    assert_eq!(table.in_memory().0, 2);
    table.flush().expect("flush");
    assert_eq!(table.in_memory(), (0, 0));
    table.add_items([&b"a"[..], b"c"]);
    table.add_items([&b"c"[..], b"a"]);
    assert_eq!(
        all_items(&table),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    table.flush().expect("flush");
    assert_eq!(table.disk_usage().0, 2);
    assert_eq!(
        all_items(&table),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    table.force_merge().expect("force merge");
    assert_eq!(table.disk_usage().0, 1);
    assert_eq!(
        all_items(&table),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn seek_by_prefix_and_distinct_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Table::open_with(
        dir.path(),
        TableOptions {
            block_bytes: 512,
            ..TableOptions::default()
        },
    )
    .expect("open");
    let names = ["__name__", "cpu", "instance", "job", "mode"];
    let mut keys = Vec::new();
    for series in 0..300u64 {
        for name in names {
            keys.push(index_key(name, &format!("v{}", series % 7), series));
        }
    }
    // Half on disk, half in memory: seeks must merge both.
    let (first, second) = keys.split_at(keys.len() / 2);
    table.add_items(first.iter().map(Vec::as_slice));
    table.flush().expect("flush");
    table.add_items(second.iter().map(Vec::as_slice));

    // Series ids of `job=v3`.
    let prefix = {
        let mut p = index_key("job", "v3", 0);
        p.truncate(p.len() - 8);
        p
    };
    let mut search = table.search();
    search.seek(&prefix);
    let mut ids = Vec::new();
    while let Some(item) = search.next_item() {
        let item = item.expect("item");
        if !item.starts_with(&prefix) {
            break;
        }
        let tail: [u8; 8] = item[prefix.len()..].try_into().expect("series id");
        ids.push(u64::from_be_bytes(tail));
    }
    let want: Vec<u64> = (0..300).filter(|s| s % 7 == 3).collect();
    assert_eq!(ids, want);

    // Distinct label names: seek past every name in turn, on the same search.
    let tenant_day = &prefix[..13];
    let mut found = Vec::new();
    search.seek(tenant_day);
    while let Some(item) = search.next_item() {
        let item = item.expect("item").to_vec();
        if !item.starts_with(tenant_day) {
            break;
        }
        let rest = &item[13..];
        let end = rest.iter().position(|&b| b == 0).expect("name terminator");
        let name = rest[..end].to_vec();
        found.push(String::from_utf8(name.clone()).expect("utf8"));
        let mut next = tenant_day.to_vec();
        next.extend_from_slice(&name);
        next.push(1);
        search.seek(&next);
    }
    assert_eq!(found, names);

    // Backward seeks restart correctly.
    search.seek(b"");
    assert_eq!(
        search.next_item().expect("first").expect("ok"),
        &keys_sorted(&keys)[0][..]
    );
    search.seek(&[0xff]);
    assert!(search.next_item().is_none());
}

fn keys_sorted(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    keys.iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn leftovers_are_cleaned_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Table::open(dir.path()).expect("open");
    table.add_items([&b"kept"[..]]);
    table.flush().expect("flush");
    drop(table);

    // What a crash can leave: a part being written, a part written but never
    // listed, a manifest being written. And a file that is none of ours.
    let tmp_part = dir.path().join("0000000000000002.tmp");
    std::fs::create_dir(&tmp_part).expect("mkdir");
    std::fs::write(tmp_part.join(BLOCKS_FILE), b"half").expect("write");
    let unlisted = dir.path().join(part_dir_name(0xff));
    std::fs::create_dir(&unlisted).expect("mkdir");
    std::fs::write(unlisted.join(INDEX_FILE), b"x").expect("write");
    std::fs::write(dir.path().join(manifest::MANIFEST_TMP), b"{").expect("write");
    std::fs::write(dir.path().join("NOTES"), b"mine").expect("write");

    let table = Table::open(dir.path()).expect("reopen");
    assert!(!tmp_part.exists());
    assert!(!unlisted.exists());
    assert!(!dir.path().join(manifest::MANIFEST_TMP).exists());
    assert!(dir.path().join("NOTES").exists());
    assert_eq!(all_items(&table), vec![b"kept".to_vec()]);

    // New parts never reuse an id seen on disk.
    table.add_items([&b"new"[..]]);
    table.flush().expect("flush");
    assert_eq!(listed(dir.path()).parts, vec![1, 0x100]);
}

#[test]
fn damaged_manifest_fails_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(manifest::MANIFEST_FILE),
        b"{\"format\":1,\"par",
    )
    .expect("write");
    let err = Table::open(dir.path()).expect_err("must not guess");
    assert!(matches!(err, MergesetError::Corrupted { .. }), "{err}");
}

#[test]
fn merged_parts_are_deleted_when_unused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Table::open_with(dir.path(), small_opts()).expect("open");
    for i in 0..5u8 {
        table.add_items([&[i][..]]);
        table.flush().expect("flush");
    }
    let mut held = table.search();
    assert!(table.merge_step().expect("merge"));
    let (parts, _) = table.disk_usage();
    assert!(parts < 5, "{parts} parts");
    // The old search still reads the merged-away parts.
    assert_eq!(collect(&mut held).len(), 5);
    let dirs_before = std::fs::read_dir(dir.path()).expect("ls").count();
    drop(held);
    let dirs_after = std::fs::read_dir(dir.path()).expect("ls").count();
    assert!(dirs_after < dirs_before, "{dirs_before} -> {dirs_after}");
    assert_eq!(dirs_after, parts + 1, "parts plus the manifest");
}

fn block_layout(dir: &Path, id: u64) -> Vec<super::part::BlockMeta> {
    let part = Part::open(dir, id).expect("part");
    (0..part.block_count())
        .map(|i| part.block_meta(i).clone())
        .collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn corrupted_block_is_reported_once_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Table::open_with(dir.path(), small_opts()).expect("open");
    let keys: Vec<Vec<u8>> = (0..400u32)
        .map(|i| format!("key-{i:05}").into_bytes())
        .collect();
    table.add_items(keys.iter().map(Vec::as_slice));
    table.flush().expect("flush");
    drop(table);

    let blocks = block_layout(dir.path(), 1);
    assert!(blocks.len() > 5);
    let bad = &blocks[3];
    let blocks_path = dir.path().join(part_dir_name(1)).join(BLOCKS_FILE);
    flip_byte(&blocks_path, bad.offset + u64::from(bad.disk_len) / 2);

    let table = Table::open_with(dir.path(), small_opts()).expect("reopen");
    let mut search = table.search();
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    while let Some(item) = search.next_item() {
        match item {
            Ok(item) => ok.push(item.to_vec()),
            Err(e) => errors.push(e),
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    match &errors[0] {
        MergesetError::Corrupted { path, offset, .. } => {
            assert_eq!(path, &blocks_path);
            assert_eq!(*offset, bad.offset);
        }
        other => panic!("unexpected {other}"),
    }
    let lost_from = keys
        .iter()
        .position(|k| k[..] == bad.first[..])
        .expect("first");
    let mut want = keys.clone();
    want.drain(lost_from..lost_from + bad.items as usize);
    assert_eq!(ok, want);

    // A seek into the bad block reports it and lands after it.
    search.seek(&bad.first);
    assert!(matches!(
        search.next_item(),
        Some(Err(MergesetError::Corrupted { .. }))
    ));
    assert_eq!(
        search.next_item().expect("item").expect("ok"),
        &keys[lost_from + bad.items as usize][..]
    );

    // A merge refuses to drop the bad block's items: it fails once, then
    // leaves the part alone and merges the rest.
    table.add_items([&b"zzz"[..]]);
    let err = table.force_merge().expect_err("corrupted input");
    assert!(matches!(err, MergesetError::Corrupted { .. }));
    table
        .force_merge()
        .expect("merges around the quarantined part");
    assert_eq!(table.disk_usage().0, 2);
    let (ok, errors) = drain(&mut table.search());
    assert_eq!(errors, 1);
    want.push(b"zzz".to_vec());
    assert_eq!(ok, want);
}

fn drain(search: &mut Search) -> (Vec<Vec<u8>>, usize) {
    let mut ok = Vec::new();
    let mut errors = 0;
    while let Some(item) = search.next_item() {
        match item {
            Ok(item) => ok.push(item.to_vec()),
            Err(_) => errors += 1,
        }
    }
    (ok, errors)
}

#[test]
fn corrupted_part_index_is_skipped_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Table::open_with(dir.path(), small_opts()).expect("open");
    table.add_items([&b"a"[..], b"b"]);
    table.flush().expect("flush");
    table.add_items([&b"c"[..], b"d"]);
    table.flush().expect("flush");
    let (_, size_both) = table.disk_usage();
    drop(table);

    let index_path = dir.path().join(part_dir_name(1)).join(INDEX_FILE);
    flip_byte(&index_path, 10);
    let table = Table::open_with(dir.path(), small_opts()).expect("open skips the bad part");
    assert_eq!(all_items(&table), vec![b"c".to_vec(), b"d".to_vec()]);
    let (parts, size) = table.disk_usage();
    assert_eq!(parts, 1);
    assert!(size < size_both);

    // The broken part stays on disk and listed across manifest rewrites.
    table.add_items([&b"e"[..]]);
    table.flush().expect("flush");
    table.force_merge().expect("force merge");
    let m = listed(dir.path());
    assert_eq!(m.broken, vec![1]);
    assert_eq!(m.parts.len(), 1);
    drop(table);
    assert!(index_path.exists());

    // Once repaired it is live again.
    flip_byte(&index_path, 10);
    let table = Table::open_with(dir.path(), small_opts()).expect("open");
    assert_eq!(all_items(&table).len(), 5);
}

#[test]
fn concurrent_adds_flushes_and_merges_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Arc::new(Table::open_with(dir.path(), small_opts()).expect("open"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let (table, stop) = (table.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                table.flush().expect("flush");
                while table.merge_step().expect("merge") {}
                round += 1;
                if round % 5 == 0 {
                    table.force_merge().expect("force merge");
                }
            }
        })
    };
    let merger = {
        let (table, stop) = (table.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !table.merge_step().expect("merge") {
                    std::thread::yield_now();
                }
            }
        })
    };
    let writers: Vec<_> = (0..4u32)
        .map(|t| {
            let table = table.clone();
            std::thread::spawn(move || {
                for batch in 0..200u32 {
                    let keys: Vec<Vec<u8>> = (0..20u32)
                        .map(|i| format!("{:03}-{t}-{batch:03}", i * 7 % 20).into_bytes())
                        .collect();
                    table.add_items(keys.iter().map(Vec::as_slice));
                    // Read-your-writes: a search started now sees the batch.
                    let mut search = table.search();
                    for key in &keys {
                        search.seek(key);
                        let got = search.next_item().expect("present").expect("ok");
                        assert_eq!(got, &key[..]);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    stop.store(true, Ordering::Relaxed);
    background.join().expect("background");
    merger.join().expect("merger");
    assert_eq!(all_items(&table).len(), 4 * 200 * 20);
    table.flush().expect("flush");
    drop(table);
    let table = Table::open_with(dir.path(), small_opts()).expect("reopen");
    assert_eq!(all_items(&table).len(), 4 * 200 * 20);
}

proptest! {
    #[test]
    fn block_decoding_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..8) {
        let _ = decode_raw(&raw, b"k", n);
        let _ = decode_disk(&raw, raw.len().saturating_sub(1), b"", n);
    }

    #[test]
    fn block_round_trip(items in proptest::collection::btree_set(item(), 1..60)) {
        let items: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        let run = run_of(&items);
        let mut enc = BlockEncoder::new(1).expect("zstd");
        let (disk, raw_len) = enc.encode(&run).expect("encode");
        let first = run.get(0).expect("first");
        let decoded = decode_disk(disk, raw_len, first, run.len()).expect("decode");
        prop_assert_eq!(decoded, run);
    }
}

/// Items over a tiny alphabet so that prefixes, duplicates, the empty item
/// and big-endian counter tails all show up.
fn item() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)],
            0..6
        ),
        (0u8..3, any::<u16>()).prop_map(|(p, n)| {
            let mut v = vec![b'k', p];
            v.extend_from_slice(&u64::from(n).to_be_bytes());
            v
        }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Add(Vec<Vec<u8>>),
    Flush,
    MergeStep,
    ForceMerge,
    Reopen,
    Check { seeks: Vec<Vec<u8>>, take: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(item(), 0..40).prop_map(Op::Add),
        2 => Just(Op::Flush),
        2 => Just(Op::MergeStep),
        1 => Just(Op::ForceMerge),
        1 => Just(Op::Reopen),
        4 => (proptest::collection::vec(item(), 1..4), 0usize..30)
            .prop_map(|(seeks, take)| Op::Check { seeks, take }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn table_matches_btreeset_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut table = Table::open_with(dir.path(), small_opts()).expect("open");
        let mut model: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut durable: BTreeSet<Vec<u8>> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Add(items) => {
                    table.add_items(items.iter().map(Vec::as_slice));
                    model.extend(items);
                }
                Op::Flush => {
                    table.flush().expect("flush");
                    durable = model.clone();
                }
                Op::MergeStep => {
                    table.merge_step().expect("merge step");
                }
                Op::ForceMerge => {
                    table.force_merge().expect("force merge");
                    durable = model.clone();
                    prop_assert!(table.disk_usage().0 <= 1);
                }
                Op::Reopen => {
                    drop(table);
                    table = Table::open_with(dir.path(), small_opts()).expect("reopen");
                    model = durable.clone();
                }
                Op::Check { seeks, take } => {
                    let mut search = table.search();
                    for key in seeks {
                        search.seek(&key);
                        let mut got = Vec::new();
                        while got.len() < take {
                            match search.next_item() {
                                Some(item) => got.push(item.expect("no corruption").to_vec()),
                                None => break,
                            }
                        }
                        let want: Vec<Vec<u8>> = model.range(key..).take(take).cloned().collect();
                        prop_assert_eq!(got, want);
                    }
                }
            }
            prop_assert!(table.disk_usage().0 <= 40);
        }
        prop_assert_eq!(all_items(&table), model.iter().cloned().collect::<Vec<_>>());
    }
}
