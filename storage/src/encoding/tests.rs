//! Round-trip, corruption, bounds and format-guard tests of the block and
//! page codecs, plus ignored reports of bytes per sample.

use proptest::prelude::*;

use super::synthetic::{self, NodeExporter};
use super::*;

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn encode(ts: &[i64], vs: &[f64]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_block(ts, vs, &mut out);
    out
}

/// Encodes, decodes after some existing content, and compares bits.
fn round_trip(ts: &[i64], vs: &[f64]) -> Vec<u8> {
    let block = encode(ts, vs);
    let (mut got_ts, mut got_vs) = (vec![42i64], vec![4.2f64]);
    decode_block(&block, &mut got_ts, &mut got_vs).expect("decode");
    assert_eq!(&got_ts[1..], ts, "timestamps");
    assert_eq!(bits(&got_vs[1..]), bits(vs), "values of {vs:?}");
    block
}

fn regular(n: usize, start: i64, step: i64) -> Vec<i64> {
    (0..n as i64).map(|i| start + i * step).collect()
}

/// (timestamp stream code, value kind) that `encode_block` picked.
fn kinds(block: &[u8]) -> (u8, u8) {
    (block[0] & 7, block[0] >> 3)
}

const STALE: f64 = f64::from_bits(crate::STALE_NAN_BITS);

// Timestamp stream codes and value kinds as the tests name them.
const TS_DOD_DENSE: u8 = 4;
const TS_DOD_SPARSE: u8 = 5;
const DEC_PLAIN_DENSE: u8 = values::DECIMAL;
const DEC_DELTA_DENSE: u8 = values::DECIMAL + 2;
const DEC_DELTA_SPARSE: u8 = values::DECIMAL + 3;
const DEC_DOD_DENSE: u8 = values::DECIMAL + 4;
const DEC_DOD_SPARSE: u8 = values::DECIMAL + 5;

#[test]
fn chosen_kinds_table() {
    let ts = regular(600, 1_700_000_000_000, 15_000);
    let mut jittered = ts.clone();
    jittered[100] += 3;
    jittered[400] -= 2;
    let mut gappy = ts.clone();
    gappy.drain(200..210);
    gappy.truncate(590);
    let irregular: Vec<i64> = (0..600i64).map(|i| i * i * 7 + (i % 13) * 1000).collect();
    let n = ts.len();
    let counter: Vec<f64> = {
        let mut rng = synthetic::SplitMix64::new(5);
        let mut c = 0u64;
        (0..n)
            .map(|_| {
                c += rng.next_u64() % 400;
                c as f64
            })
            .collect()
    };
    let steady: Vec<f64> = (0..n).map(|i| (1000 + i * 15) as f64).collect();
    let steps: Vec<f64> = (0..n)
        .map(|i| (1_451_798 + (i / 50) * 344) as f64)
        .collect();
    let noise: Vec<f64> = {
        let mut rng = synthetic::SplitMix64::new(7);
        (0..n)
            .map(|_| (rng.next_u64() % 100_000) as f64 * 1e-9)
            .collect()
    };
    let sums: Vec<f64> = {
        let mut acc = 0.0f64;
        (0..n)
            .map(|i| {
                acc += 0.001_234 * (1 + i % 5) as f64;
                acc
            })
            .collect()
    };
    let floats: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    // Beyond decimal range, in runs: XOR spends a bit on each repeat.
    let huge_runs: Vec<f64> = (0..n)
        .map(|i| 1e300 * ((i / 8) as f64 * 0.37).sin())
        .collect();
    let mut with_stale = steady.clone();
    with_stale[599] = STALE;
    let pages: Vec<f64> = (0..n)
        .map(|i| (1_000_000 + (i * 37) % 101) as f64 * 4096.0)
        .collect();

    // (name, timestamps, values, timestamp code, value kind)
    type Case<'a> = (&'a str, &'a [i64], Vec<f64>, u8, u8);
    let cases: Vec<Case> = vec![
        (
            "const zero",
            &ts,
            vec![0.0; n],
            TS_DOD_SPARSE,
            values::CONST_DECIMAL,
        ),
        (
            "const 0.25",
            &ts,
            vec![0.25; n],
            TS_DOD_SPARSE,
            values::CONST_DECIMAL,
        ),
        (
            "const stale",
            &ts,
            vec![STALE; n],
            TS_DOD_SPARSE,
            values::CONST_RAW,
        ),
        (
            "const -0.0",
            &ts,
            vec![-0.0; n],
            TS_DOD_SPARSE,
            values::CONST_RAW,
        ),
        (
            "jittered",
            &jittered,
            vec![1.0; n],
            TS_DOD_SPARSE,
            values::CONST_DECIMAL,
        ),
        (
            "gap",
            &gappy,
            vec![1.0; gappy.len()],
            TS_DOD_SPARSE,
            values::CONST_DECIMAL,
        ),
        (
            "irregular",
            &irregular,
            vec![1.0; n],
            TS_DOD_DENSE,
            values::CONST_DECIMAL,
        ),
        ("counter", &ts, counter, TS_DOD_SPARSE, DEC_DOD_DENSE),
        ("steady rate", &ts, steady, TS_DOD_SPARSE, DEC_DOD_SPARSE),
        ("step gauge", &ts, steps, TS_DOD_SPARSE, DEC_DELTA_SPARSE),
        ("noise", &ts, noise, TS_DOD_SPARSE, DEC_DELTA_DENSE),
        ("float sums", &ts, sums, TS_DOD_SPARSE, DEC_DOD_DENSE),
        (
            "full-precision floats",
            &ts,
            floats,
            TS_DOD_SPARSE,
            values::RAW,
        ),
        ("huge runs", &ts, huge_runs, TS_DOD_SPARSE, values::XOR),
        ("stale end", &ts, with_stale, TS_DOD_SPARSE, DEC_DOD_SPARSE),
        ("page bytes", &ts, pages, TS_DOD_SPARSE, DEC_DOD_DENSE),
        (
            "specials",
            &ts[..5],
            vec![f64::NAN, f64::NEG_INFINITY, -0.0, 5e-324, STALE],
            TS_DOD_SPARSE,
            values::XOR,
        ),
        (
            "plain",
            &ts[..6],
            vec![3.0, -2.0, 3.0, -2.0, 3.0, -2.0],
            TS_DOD_SPARSE,
            DEC_PLAIN_DENSE,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, ts, vs, ts_code, value_kind) in cases {
        let block = round_trip(ts, &vs);
        if kinds(&block) != (ts_code, value_kind) {
            wrong.push(format!("{name}: got {:?}", kinds(&block)));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn decimal_flags_table() {
    let ts = regular(100, 0, 1000);
    // (name, values, flags byte)
    let pages: Vec<f64> = (0..100).map(|i| ((i * 37) % 101) as f64 * 4096.0).collect();
    let sums: Vec<f64> = (1..=100).map(|i| 0.1 * i as f64).collect();
    let mut stale = pages.clone();
    stale[50] = STALE;
    let cases: Vec<(&str, Vec<f64>, u8)> = vec![
        ("divisor", pages, 1),
        ("corrections", sums, 4),
        ("divisor and exception", stale, 1 | 8),
    ];
    for (name, vs, flags) in cases {
        let block = round_trip(&ts, &vs);
        let (ts_code, kind) = kinds(&block);
        assert!(
            (values::DECIMAL..values::XOR).contains(&kind),
            "{name}: kind {kind}"
        );
        let mut r = varint::Reader::new(&block[1..]);
        r.uvarint().expect("count");
        let code = stream::StreamCode::from_code(ts_code).expect("code");
        stream::decode(&mut r, ts.len(), code, &mut Vec::new()).expect("timestamps");
        assert_eq!(r.u8(), Ok(flags), "{name}");
    }
}

#[test]
fn edge_cases_round_trip() {
    round_trip(&[], &[]);
    round_trip(&[i64::MIN], &[f64::NAN]);
    round_trip(&[i64::MIN, i64::MAX], &[f64::MAX, f64::MIN]);
    round_trip(&[i64::MIN, -1, 0, i64::MAX], &[1e300, 1e-300, -1e22, 1e23]);
    round_trip(&[-5, -3, -1], &[-1.5, -2.5, -3.5]);
    // Zero among values whose block exponent is above zero.
    let tens: Vec<f64> = (-29..10).map(|i| f64::from(i) * 30.0).collect();
    round_trip(&regular(tens.len(), 0, 1), &tens);
    let ts = regular(MAX_BLOCK_SAMPLES, -1_000_000, 7);
    let vs: Vec<f64> = (0..MAX_BLOCK_SAMPLES)
        .map(|i| (i % 17) as f64 * 0.5)
        .collect();
    round_trip(&ts, &vs);
    let payloads: Vec<f64> = (0..10u64)
        .map(|i| f64::from_bits(0x7ff0_0000_0000_0001 + i * 0x1111))
        .collect();
    round_trip(&regular(10, 0, 1), &payloads);
}

#[test]
#[should_panic(expected = "exceeds MAX_BLOCK_SAMPLES")]
fn oversized_block_is_refused() {
    let n = MAX_BLOCK_SAMPLES + 1;
    encode(&regular(n, 0, 1), &vec![0.0; n]);
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -1000i64..1000,
        Just(i64::MIN),
        Just(i64::MAX),
        (0i64..500).prop_map(|i| 1_700_000_000_000 + i * 15_000),
        (0i64..500).prop_map(|i| 1_700_000_000_000 + i * 15_000 + i % 3),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        Just(STALE),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        (0u64..1 << 52).prop_map(f64::from_bits),
        (-100_000i64..100_000).prop_map(|i| i as f64),
        (-100_000i64..100_000, 0i32..12).prop_map(|(i, d)| i as f64 / 10f64.powi(d)),
        (0u32..1000).prop_map(|i| f64::from(i) * 0.1),
        (0.0f64..1e6),
    ]
}

/// Runs of equal, steadily growing, or arbitrary values, so that every
/// value kind and stream code gets exercised.
fn values(n: usize) -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        prop::collection::vec(value(), n),
        value().prop_map(move |v| vec![v; n]),
        (-1000i64..1000, -50i64..50, 0i32..6).prop_map(move |(a, b, d)| {
            (0..n as i64)
                .map(|i| (a + b * i) as f64 / 10f64.powi(d))
                .collect()
        }),
        (prop::collection::vec(value(), n), 0usize..4).prop_map(|(mut v, k)| {
            // Long runs of repeats.
            for i in 1..v.len() {
                if i % (k + 2) != 0 {
                    v[i] = v[i - 1];
                }
            }
            v
        }),
    ]
}

fn block() -> impl Strategy<Value = (Vec<i64>, Vec<f64>)> {
    prop::collection::btree_set(timestamp(), 0..300).prop_flat_map(|set| {
        let ts: Vec<i64> = set.into_iter().collect();
        let n = ts.len();
        (Just(ts), values(n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_block_round_trips((ts, vs) in block()) {
        let block = round_trip(&ts, &vs);
        prop_assert!(block.len() <= 3 + 18 * ts.len(), "{} bytes", block.len());
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let (mut ts, mut vs) = (vec![1], vec![1.0]);
        if decode_block(&data, &mut ts, &mut vs).is_err() {
            prop_assert_eq!((ts.len(), vs.len()), (1, 1));
        } else {
            prop_assert_eq!(ts.len(), vs.len());
        }
        let mut page = vec![9];
        if decompress_page(&data, &mut page).is_err() {
            prop_assert_eq!(page, vec![9]);
        }
    }

    #[test]
    fn corrupted_blocks_never_panic(
        (ts, vs) in block(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut block = encode(&ts, &vs);
        for (at, bit) in flips {
            let i = at.index(block.len());
            block[i] ^= 1 << bit;
        }
        let (mut got_ts, mut got_vs) = (Vec::new(), Vec::new());
        if decode_block(&block, &mut got_ts, &mut got_vs).is_ok() {
            prop_assert_eq!(got_ts.len(), got_vs.len());
            prop_assert!(got_ts.len() <= MAX_BLOCK_SAMPLES);
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn truncated_blocks_are_errors((ts, vs) in block()) {
        let block = encode(&ts, &vs);
        for len in 0..block.len() {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            prop_assert!(decode_block(&block[..len], &mut a, &mut b).is_err(), "prefix {}", len);
        }
    }

}

proptest! {
    // Few cases: zstd is slow in unoptimized test builds.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pages_round_trip(blocks in prop::collection::vec(block(), 0..20)) {
        let mut page = Vec::new();
        for (ts, vs) in &blocks {
            encode_block(ts, vs, &mut page);
        }
        let mut compressed = vec![1, 2, 3];
        compress_page(&page, &mut compressed);
        let mut out = vec![7];
        decompress_page(&compressed[3..], &mut out).expect("decompress");
        prop_assert_eq!(&out[1..], &page[..]);
    }
}

#[test]
fn truncated_and_padded_pages_are_errors() {
    let mut page = Vec::new();
    for i in 0..50 {
        encode_block(&regular(100, i, 10), &[1.5; 100], &mut page);
    }
    let mut compressed = Vec::new();
    compress_page(&page, &mut compressed);
    assert_eq!(compressed[0], PAGE_ZSTD, "repetitive page compresses");
    for len in 0..compressed.len() {
        let mut out = Vec::new();
        assert!(
            decompress_page(&compressed[..len], &mut out).is_err(),
            "prefix {len}"
        );
        assert!(out.is_empty());
    }
    compressed.push(0);
    assert!(decompress_page(&compressed, &mut Vec::new()).is_err());

    // Incompressible pages are stored; their length is checked too.
    let mut rng = synthetic::SplitMix64::new(3);
    let noise: Vec<u8> = (0..1000).map(|_| rng.next_u64() as u8).collect();
    let mut stored = Vec::new();
    compress_page(&noise, &mut stored);
    assert_eq!(stored[0], PAGE_STORED);
    let mut out = Vec::new();
    decompress_page(&stored, &mut out).expect("stored page");
    assert_eq!(out, noise);
    stored.pop();
    assert!(decompress_page(&stored, &mut Vec::new()).is_err());
}

#[test]
fn hostile_pages_are_bounded() {
    // Declared size above the bound: refused before allocating.
    let mut page = vec![PAGE_ZSTD];
    varint::put_uvarint(&mut page, MAX_PAGE_BYTES as u64 + 1);
    page.extend_from_slice(&zstd::bulk::compress(b"x", 1).expect("zstd"));
    let mut out = Vec::new();
    assert!(matches!(
        decompress_page(&page, &mut out),
        Err(DecodeError::Malformed { at: 1, .. })
    ));
    assert_eq!(out.capacity(), 0);

    // A frame that inflates far beyond its declared size: zstd may only
    // write into the declared room, so the reader never holds more.
    let bomb = zstd::bulk::compress(&vec![0u8; 4 * MAX_PAGE_BYTES], 19).expect("zstd");
    for declared in [100u64, MAX_PAGE_BYTES as u64] {
        let mut page = vec![PAGE_ZSTD];
        varint::put_uvarint(&mut page, declared);
        page.extend_from_slice(&bomb);
        let mut out = Vec::new();
        assert!(
            decompress_page(&page, &mut out).is_err(),
            "declared {declared}"
        );
        assert!(out.is_empty());
        assert!(
            out.capacity() <= MAX_PAGE_BYTES,
            "capacity {}",
            out.capacity()
        );
    }

    // A frame shorter than declared is refused too.
    let mut page = vec![PAGE_ZSTD];
    varint::put_uvarint(&mut page, 1000);
    page.extend_from_slice(&zstd::bulk::compress(&[5u8; 999], 3).expect("zstd"));
    assert!(decompress_page(&page, &mut Vec::new()).is_err());
    assert!(matches!(
        decompress_page(&[7, 0], &mut Vec::new()),
        Err(DecodeError::UnknownTag { tag: 7, at: 0 })
    ));
}

#[test]
fn unknown_tags_and_counts_are_errors() {
    let block = encode(&[1, 2, 3], &[1.0, 2.0, 3.0]);
    for tag in [6u8, 7, values::KINDS << 3, 0xff] {
        let mut b = block.clone();
        b[0] = tag;
        assert!(
            matches!(
                decode_block(&b, &mut Vec::new(), &mut Vec::new()),
                Err(DecodeError::UnknownTag { at: 0, .. })
            ),
            "tag {tag:#x}"
        );
    }
    // Count above the block limit: refused before allocating.
    let mut b = vec![0u8];
    varint::put_uvarint(&mut b, MAX_BLOCK_SAMPLES as u64 + 1);
    assert!(matches!(
        decode_block(&b, &mut Vec::new(), &mut Vec::new()),
        Err(DecodeError::Malformed { at: 1, .. })
    ));
    let mut trailing = block.clone();
    trailing.push(0);
    assert!(matches!(
        decode_block(&trailing, &mut Vec::new(), &mut Vec::new()),
        Err(DecodeError::Malformed { .. })
    ));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Format guard: fixed inputs and the exact bytes each must encode to, one
/// per value kind. A change here is a change of the on-disk format.
#[test]
fn format_guard() {
    let ts = [
        1_700_000_000_000i64,
        1_700_000_015_000,
        1_700_000_030_000,
        1_700_000_045_001,
    ];
    let ts16 = regular(16, 1_700_000_000_000, 15_000);
    let mut spike = vec![0.0; 16];
    spike[7] = 5.0;
    let mut step = vec![7.0; 16];
    step[15] = 8.0;
    let ramp: Vec<f64> = (1..=16).map(|i| f64::from(i) * 10.0).collect();
    let cases: Vec<(&str, &[i64], Vec<f64>, &str)> = vec![
        (
            "const decimal",
            &ts,
            vec![0.25; 4],
            "040480a0abfef962b0ea0100023203",
        ),
        (
            "const raw",
            &ts,
            vec![STALE; 4],
            "0c0480a0abfef962b0ea010002020000000000f07f",
        ),
        (
            "decimal, divisor, plain dense",
            &ts,
            vec![5.0, -3.0, 9.0, 1.0],
            "140480a0abfef962b0ea0100020100040a00030201",
        ),
        (
            "decimal plain sparse",
            &ts16,
            spike,
            "1d10020080a0abfef96200b0ea0101000500010702",
        ),
        (
            "decimal delta dense",
            &ts,
            vec![7.0, 7.0, 7.0, 8.0],
            "240480a0abfef962b0ea01000200000e000002",
        ),
        (
            "decimal delta sparse",
            &ts16,
            step,
            "2d10020080a0abfef96200b0ea01000002000e0e02",
        ),
        (
            "decimal dod dense, corrections",
            &ts,
            vec![0.1, 0.1 + 0.2, 0.6, 1.2000000000000002],
            "340480a0abfef962b0ea01000202010204020600020002",
        ),
        (
            "decimal dod dense, divisor",
            &ts,
            vec![4096.0, 8192.0, 40960.0, 4096.0],
            "140480a0abfef962b0ea01000201008020804000021200",
        ),
        (
            "decimal dod dense, exception",
            &ts,
            vec![1.0, 2.0, 3.0, f64::NAN],
            "340480a0abfef962b0ea0100020800020200010103000000000000f87f",
        ),
        (
            "decimal dod sparse",
            &ts16,
            ramp,
            "3d10020080a0abfef96200b0ea0100020200020002",
        ),
        (
            "xor",
            &ts,
            vec![0.1f64.sin(), 0.2f64.sin(), 0.3f64.sin(), 0.4f64.sin()],
            "440480a0abfef962b0ea0100023fb98eaecb8bcb2cc9cb871a8f45b0cce5e9b8432b687688f940beef923bab00",
        ),
        (
            "xor specials",
            &ts,
            vec![f64::NAN, f64::INFINITY, -0.0, 5e-324],
            "440480a0abfef962b0ea0100027ff8000000000000cc03805fffe07f0000000000000002",
        ),
        (
            "raw",
            &ts,
            [
                0x0123_4567_89ab_cdef,
                0xfedc_ba98_7654_3210,
                0x5555_aaaa_5555_aaaa,
                0x0f0f_0f0f_f0f0_f0f0,
            ]
            .map(f64::from_bits)
            .to_vec(),
            "4c0480a0abfef962b0ea010002efcdab89674523011032547698badcfeaaaa5555aaaa5555f0f0f0f00f0f0f0f",
        ),
    ];
    let mut failures = Vec::new();
    let mut seen_kinds = std::collections::BTreeSet::new();
    for (name, ts, vs, want) in &cases {
        let block = round_trip(ts, vs);
        seen_kinds.insert(kinds(&block).1);
        if hex(&block) != *want {
            failures.push(format!("{name}: got {}", hex(&block)));
        }
    }
    assert_eq!(
        seen_kinds.len(),
        usize::from(values::KINDS),
        "every value kind is guarded"
    );
    // Pages: kind, length, then a zstd frame (magic 28b52ffd) whose exact
    // bytes belong to the zstd library, not to this format.
    let mut page = Vec::new();
    compress_page(&encode(&ts, &[1.0; 4]).repeat(8), &mut page);
    if hex(&page[..6]) != "017828b52ffd" {
        failures.push(format!("zstd page: got {}", hex(&page)));
    }
    let mut page = Vec::new();
    compress_page(&[1, 2, 3], &mut page);
    if hex(&page) != "0003010203" {
        failures.push(format!("stored page: got {}", hex(&page)));
    }
    assert!(
        failures.is_empty(),
        "format changed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn synthetic_is_deterministic_and_node_shaped() {
    let node = NodeExporter {
        hosts: 2,
        points: 20,
        ..NodeExporter::default()
    };
    let a: Vec<_> = node.series().collect();
    let b: Vec<_> = node.series().collect();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.labels, y.labels);
        assert_eq!(x.timestamps, y.timestamps);
        assert_eq!(bits(&x.values), bits(&y.values));
    }
    let per_host = a.len() / 2;
    assert!(
        (380..=480).contains(&per_host),
        "{per_host} series per host"
    );
    for s in &a {
        assert_eq!(s.timestamps.len(), 20);
        assert!(s.timestamps.windows(2).all(|w| w[1] - w[0] == 15_000));
        let name = &s.labels[0].1;
        if name.ends_with("_total") {
            assert!(
                s.values.windows(2).all(|w| w[1] >= w[0]),
                "{name} decreases"
            );
        }
        round_trip(&s.timestamps, &s.values);
    }
}

#[test]
fn full_precision_series_are_not_short_decimals() {
    let node = NodeExporter {
        hosts: 2,
        points: 40,
        ..NodeExporter::default()
    };
    let series: Vec<_> = node.full_precision().collect();
    let names: Vec<&str> = series.iter().map(|s| s.labels[0].1.as_str()).collect();
    let want = [
        "node_load1",
        "node_load5",
        "node_load15",
        "node_time_seconds",
        "node_timex_frequency_adjustment_ratio",
        "go_memstats_last_gc_time_seconds",
    ];
    assert_eq!(names, [want, want].concat());
    for s in &series {
        // The shortest exact decimal of most values has 13 digits or more.
        let long = s
            .values
            .iter()
            .filter(|&&v| {
                decimal::approx(v, 0)
                    .is_none_or(|(m, _, _)| m.unsigned_abs() >= 10i64.pow(12) as u64)
            })
            .count();
        assert!(
            long * 2 > s.values.len(),
            "{:?}: {long} long decimals",
            s.labels
        );
    }
}

#[test]
fn import_lines_merge_by_labels() {
    let text = r#"{"metric":{"__name__":"up","job":"a"},"values":[1,0],"timestamps":[2000,1000]}
{"metric":{"job":"b","__name__":"up"},"values":[1],"timestamps":[1000]}
{"metric":{"job":"a","__name__":"up"},"values":["NaN",5],"timestamps":[3000,2000]}
"#;
    let series = synthetic::parse_import_jsonl(text).expect("parse");
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].labels[1], ("job".to_string(), "a".to_string()));
    assert_eq!(series[0].timestamps, vec![1000, 2000, 3000]);
    assert_eq!(series[0].values[..2], [0.0, 5.0]);
    assert!(series[0].values[2].is_nan());
    assert!(synthetic::parse_import_jsonl("{").is_err());
}

#[test]
#[ignore = "prints bytes per sample; uses shared/testdata when present"]
fn report_sizes() {
    let real = synthetic::testdata_path(synthetic::REAL_SCRAPE_FILE)
        .map(|p| synthetic::load_import_jsonl_zst(&p).expect("load real scrape"));
    if real.is_none() {
        eprintln!("real scrape sample not found; set STRATA_TESTDATA");
    }
    let node = NodeExporter {
        hosts: 20,
        ..NodeExporter::default()
    };
    let synth: Vec<_> = node.series().collect();
    let datasets = real
        .iter()
        .map(|r| ("real-scrape", r))
        .chain([("node-exporter", &synth)]);
    for (name, series) in datasets {
        for level in 1..=5 {
            for kib in [8, 16, 32, 64] {
                let e = synthetic::estimate_size_with(series, level, kib * 1024);
                eprintln!(
                    "{name} zstd {level} page {kib} KiB: {:.4} B/sample \
                     ({:.4} pages + {:.4} headers; encoded {:.3})",
                    e.bytes_per_sample(),
                    e.page_bytes as f64 / e.samples as f64,
                    e.header_bytes as f64 / e.samples as f64,
                    e.encoded_bytes as f64 / e.samples as f64,
                );
            }
        }
        breakdown(series);
    }
}

/// Value kinds chosen, and their share of the encoded bytes.
fn breakdown(series: &[synthetic::Series]) {
    let mut by_kind: std::collections::BTreeMap<u8, (usize, usize, usize)> = Default::default();
    for s in series {
        for (ts, vs) in s
            .timestamps
            .chunks(MAX_BLOCK_SAMPLES)
            .zip(s.values.chunks(MAX_BLOCK_SAMPLES))
        {
            let block = encode(ts, vs);
            let e = by_kind.entry(kinds(&block).1).or_default();
            e.0 += 1;
            e.1 += ts.len();
            e.2 += block.len();
        }
    }
    for (kind, (blocks, samples, bytes)) in by_kind {
        eprintln!(
            "  value kind {kind}: {blocks} blocks, {samples} samples, {:.3} encoded B/sample",
            bytes as f64 / samples as f64
        );
    }
}

#[test]
fn scrapes_continue_the_series_of_host() {
    let node = NodeExporter {
        hosts: 2,
        points: 10,
        ..NodeExporter::default()
    };
    let series = node.host(1);
    let mut scrapes = node.scrapes(1);
    assert_eq!(scrapes.series_count(), series.len());
    assert_eq!(
        scrapes.labels,
        series.iter().map(|s| s.labels.clone()).collect::<Vec<_>>()
    );
    let mut values = Vec::new();
    let mut last: Vec<f64> = Vec::new();
    for point in 0..25 {
        let t = scrapes.next_timestamp();
        scrapes.scrape(&mut values);
        assert_eq!(values.len(), series.len());
        if point < node.points {
            for (s, v) in series.iter().zip(&values) {
                assert_eq!(s.timestamps[point], t);
                assert_eq!(s.values[point].to_bits(), v.to_bits(), "{:?}", s.labels);
            }
        }
        // Counters keep growing past the points of `host`.
        for ((labels, v), prev) in scrapes.labels.iter().zip(&values).zip(&last) {
            if labels[0].1.ends_with("_total") {
                assert!(v >= prev, "{labels:?} went from {prev} to {v}");
            }
        }
        last = values.clone();
    }
    assert_eq!(scrapes.points(), 25);
}
