//! Decodes the blocks of `benches/encoding.rs`' full-precision dataset (150
//! synthetic hosts' load averages, ratios and clocks, 4 h at 15 s, blocks of
//! `BLOCK_TARGET_SAMPLES`) over and over, for profiling the value decoders:
//!
//! ```text
//! cargo run --release -p strata-storage --example decode_profile -- [xor|all] [rounds]
//! perf record -g <binary> xor 20
//! ```
//!
//! `xor` keeps only the XOR-coded blocks. Each round decodes every block
//! 400 times; the output is this thread's CPU time per sample
//! (`/proc/thread-self/schedstat`), minimum and median over the rounds. On
//! a shared machine it moves far less with the load than wall time does.

use strata_storage::encoding::synthetic::NodeExporter;
use strata_storage::encoding::{BLOCK_TARGET_SAMPLES, decode_block, encode_block};

/// Value kind of XOR-coded blocks, in the tag's high bits.
const XOR_KIND: u8 = 8;
const PASSES: usize = 400;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Decodes every block once; the samples decoded.
#[inline(never)]
fn decode_all(blocks: &[Vec<u8>], ts: &mut Vec<i64>, vs: &mut Vec<f64>) -> usize {
    let mut samples = 0;
    for b in blocks {
        ts.clear();
        vs.clear();
        decode_block(b, ts, vs).expect("decode");
        samples += vs.len();
    }
    samples
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only_xor = match args.first().map(String::as_str) {
        None | Some("xor") => true,
        Some("all") => false,
        Some(other) => {
            eprintln!("usage: decode_profile [xor|all] [rounds]; not {other:?}");
            std::process::exit(2);
        }
    };
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let fleet = NodeExporter {
        hosts: 150,
        points: 960,
        ..NodeExporter::default()
    };
    let mut blocks = Vec::new();
    for s in fleet.full_precision() {
        for (ts, vs) in s
            .timestamps
            .chunks(BLOCK_TARGET_SAMPLES)
            .zip(s.values.chunks(BLOCK_TARGET_SAMPLES))
        {
            let mut b = Vec::new();
            encode_block(ts, vs, &mut b);
            if !only_xor || b[0] >> 3 == XOR_KIND {
                blocks.push(b);
            }
        }
    }
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    let samples = decode_all(&blocks, &mut ts, &mut vs);
    let mut per_sample: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let cpu = thread_cpu_ns();
            for _ in 0..PASSES {
                decode_all(&blocks, &mut ts, &mut vs);
            }
            (thread_cpu_ns() - cpu) as f64 / (samples * PASSES) as f64
        })
        .collect();
    per_sample.sort_by(f64::total_cmp);
    println!(
        "{} blocks, {samples} samples: CPU ns/sample min {:.3}, median {:.3}",
        blocks.len(),
        per_sample[0],
        per_sample[per_sample.len() / 2]
    );
}
