//! Block and page codec throughput on the real scrape sample (when
//! `shared/testdata` is present), on synthetic node_exporter data, and on the
//! full-precision floats of that fleet (load averages and clocks), most of
//! whose blocks are XOR-coded.
//!
//! `cargo bench -p strata-storage --bench encoding`; the setup prints the
//! on-disk bytes per sample of each dataset (pages + 24-byte block headers).
//! `-- decode` runs only the decoding groups (`decode_blocks`: every block
//! of the dataset; `decode_xor_blocks`: only its XOR-coded blocks, where
//! they are a quarter of the samples or more; `decompress_and_decode_pages`:
//! with zstd), throughput in samples; docs/benchmarks.md ("Block decoding")
//! records their figures.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_storage::encoding::synthetic::{self, NodeExporter, Series};
use strata_storage::encoding::{
    BLOCK_TARGET_SAMPLES, MAX_BLOCK_SAMPLES, PAGE_TARGET_BYTES, compress_page, decode_block,
    decompress_page, encode_block,
};

struct Dataset {
    name: &'static str,
    series: Vec<Series>,
    /// Samples per block; the last block of a series holds the rest.
    block_samples: usize,
    samples: u64,
    /// Encoded blocks, in order.
    blocks: Vec<Vec<u8>>,
    /// The blocks whose values are XOR-coded, and their samples.
    xor_blocks: Vec<Vec<u8>>,
    xor_samples: u64,
    /// Compressed pages, each with the end offsets of its blocks.
    pages: Vec<(Vec<u8>, Vec<usize>)>,
}

fn dataset(name: &'static str, series: Vec<Series>, block_samples: usize) -> Dataset {
    let samples = series.iter().map(|s| s.timestamps.len() as u64).sum();
    let mut blocks = Vec::new();
    for s in &series {
        for (ts, vs) in s
            .timestamps
            .chunks(block_samples)
            .zip(s.values.chunks(block_samples))
        {
            let mut b = Vec::new();
            encode_block(ts, vs, &mut b);
            blocks.push(b);
        }
    }
    let mut pages = Vec::new();
    let mut page = Vec::new();
    let mut ends = Vec::new();
    let mut flush = |page: &mut Vec<u8>, ends: &mut Vec<usize>| {
        let mut out = Vec::new();
        compress_page(page, &mut out);
        pages.push((out, std::mem::take(ends)));
        page.clear();
    };
    for b in &blocks {
        page.extend_from_slice(b);
        ends.push(page.len());
        if page.len() >= PAGE_TARGET_BYTES {
            flush(&mut page, &mut ends);
        }
    }
    if !page.is_empty() {
        flush(&mut page, &mut ends);
    }
    let est = synthetic::estimate_size(&series, strata_storage::encoding::PAGE_ZSTD_LEVEL);
    eprintln!(
        "{name}: {} series, {} samples, {} blocks, {} pages; encoded {:.3} B/sample, \
         on disk {:.4} B/sample ({:.4} pages + {:.4} block headers)",
        est.series,
        est.samples,
        est.blocks,
        est.pages,
        est.encoded_bytes as f64 / est.samples as f64,
        est.bytes_per_sample(),
        est.page_bytes as f64 / est.samples as f64,
        est.header_bytes as f64 / est.samples as f64,
    );
    // Value kind 8 (XOR) in the tag's high bits, as `encoding` documents.
    let xor_blocks: Vec<Vec<u8>> = blocks
        .iter()
        .filter(|b| b.first().is_some_and(|tag| tag >> 3 == 8))
        .cloned()
        .collect();
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    for b in &xor_blocks {
        decode_block(b, &mut ts, &mut vs).expect("decode");
    }
    let xor_samples = vs.len() as u64;
    eprintln!(
        "{name}: {} of {} blocks are XOR-coded ({xor_samples} samples)",
        xor_blocks.len(),
        blocks.len()
    );
    Dataset {
        name,
        series,
        block_samples,
        samples,
        blocks,
        xor_blocks,
        xor_samples,
        pages,
    }
}

fn datasets() -> Vec<Dataset> {
    let mut out = Vec::new();
    match synthetic::testdata_path(synthetic::REAL_SCRAPE_FILE) {
        Some(p) => match synthetic::load_import_jsonl_zst(&p) {
            Ok(series) => out.push(dataset("real-scrape", series, MAX_BLOCK_SAMPLES)),
            Err(e) => eprintln!("real-scrape: cannot load {}: {e}", p.display()),
        },
        None => eprintln!("real-scrape: shared/testdata not found, skipped"),
    }
    let node = NodeExporter {
        hosts: 20,
        ..NodeExporter::default()
    };
    out.push(dataset(
        "node-exporter",
        node.series().collect(),
        MAX_BLOCK_SAMPLES,
    ));
    out.push(dataset(
        "full-precision",
        full_precision(),
        BLOCK_TARGET_SAMPLES,
    ));
    out
}

/// The full-precision series of a 150-host node_exporter fleet (what
/// `avg_over_time(node_load1[1h])` reads on a dashboard): load averages
/// (moving averages around 0..4), the clock-frequency ratio, and two clocks
/// with nanoseconds (full-precision counters); 4 h at 15 s, in blocks of the
/// part writer's size. Most load-average blocks are XOR-coded; the rest,
/// and the clocks, are long decimals with ulp corrections, whichever is
/// smaller.
fn full_precision() -> Vec<Series> {
    NodeExporter {
        hosts: 150,
        points: 960,
        ..NodeExporter::default()
    }
    .full_precision()
    .collect()
}

fn bench(c: &mut Criterion) {
    for d in datasets() {
        let mut g = c.benchmark_group(d.name);
        g.sample_size(10);
        g.measurement_time(std::time::Duration::from_secs(4));
        g.throughput(Throughput::Elements(d.samples));
        g.bench_function("encode_blocks", |b| {
            let mut out = Vec::with_capacity(1 << 20);
            b.iter(|| {
                for s in &d.series {
                    for (ts, vs) in s
                        .timestamps
                        .chunks(d.block_samples)
                        .zip(s.values.chunks(d.block_samples))
                    {
                        out.clear();
                        encode_block(ts, vs, &mut out);
                    }
                }
                out.len()
            })
        });
        g.bench_function("decode_blocks", |b| {
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            b.iter(|| {
                for block in &d.blocks {
                    ts.clear();
                    vs.clear();
                    decode_block(block, &mut ts, &mut vs).expect("decode");
                }
                ts.len()
            })
        });
        // Only where XOR-coded blocks are common enough to say something.
        if d.xor_samples * 4 >= d.samples {
            g.throughput(Throughput::Elements(d.xor_samples));
            g.bench_function("decode_xor_blocks", |b| {
                let (mut ts, mut vs) = (Vec::new(), Vec::new());
                b.iter(|| {
                    for block in &d.xor_blocks {
                        ts.clear();
                        vs.clear();
                        decode_block(block, &mut ts, &mut vs).expect("decode");
                    }
                    ts.len()
                })
            });
            g.throughput(Throughput::Elements(d.samples));
        }
        g.bench_function("decompress_and_decode_pages", |b| {
            let (mut ts, mut vs, mut page) = (Vec::new(), Vec::new(), Vec::new());
            b.iter(|| {
                for (data, ends) in &d.pages {
                    page.clear();
                    decompress_page(data, &mut page).expect("page");
                    let mut start = 0;
                    for &end in ends {
                        ts.clear();
                        vs.clear();
                        decode_block(&page[start..end], &mut ts, &mut vs).expect("decode");
                        start = end;
                    }
                }
                ts.len()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
