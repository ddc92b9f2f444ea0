//! Block and page codec throughput on the real scrape sample (when
//! `shared/testdata` is present) and on synthetic node_exporter data.
//!
//! `cargo bench -p strata-storage --bench encoding`; the setup prints the
//! on-disk bytes per sample of each dataset (pages + 24-byte block headers).
//! `-- decode` runs only the decoding groups (`decode_blocks`: every block
//! of the dataset; `decompress_and_decode_pages`: with zstd), throughput in
//! samples; docs/benchmarks.md ("Block decoding") records their figures.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_storage::encoding::synthetic::{self, NodeExporter, Series};
use strata_storage::encoding::{
    MAX_BLOCK_SAMPLES, PAGE_TARGET_BYTES, compress_page, decode_block, decompress_page,
    encode_block,
};

struct Dataset {
    name: &'static str,
    series: Vec<Series>,
    samples: u64,
    /// Encoded blocks, in order.
    blocks: Vec<Vec<u8>>,
    /// Compressed pages, each with the end offsets of its blocks.
    pages: Vec<(Vec<u8>, Vec<usize>)>,
}

fn dataset(name: &'static str, series: Vec<Series>) -> Dataset {
    let samples = series.iter().map(|s| s.timestamps.len() as u64).sum();
    let mut blocks = Vec::new();
    for s in &series {
        for (ts, vs) in s
            .timestamps
            .chunks(MAX_BLOCK_SAMPLES)
            .zip(s.values.chunks(MAX_BLOCK_SAMPLES))
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
    Dataset {
        name,
        series,
        samples,
        blocks,
        pages,
    }
}

fn datasets() -> Vec<Dataset> {
    let mut out = Vec::new();
    match synthetic::testdata_path(synthetic::REAL_SCRAPE_FILE) {
        Some(p) => match synthetic::load_import_jsonl_zst(&p) {
            Ok(series) => out.push(dataset("real-scrape", series)),
            Err(e) => eprintln!("real-scrape: cannot load {}: {e}", p.display()),
        },
        None => eprintln!("real-scrape: shared/testdata not found, skipped"),
    }
    let node = NodeExporter {
        hosts: 20,
        ..NodeExporter::default()
    };
    out.push(dataset("node-exporter", node.series().collect()));
    out
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
                        .chunks(MAX_BLOCK_SAMPLES)
                        .zip(s.values.chunks(MAX_BLOCK_SAMPLES))
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
