//! Cost per sample of the storage RPC's wire encoding: a write batch and a
//! search batch of 1,000 node_exporter-shaped series x 100 samples, from
//! rows to frame bytes (body encoding, zstd) and back (zstd, body decoding).
//!
//! `cargo bench -p strata-storage --bench rpc`; the setup prints the bytes
//! per sample of the bodies and of the frames. ns/sample = 1e9 / the
//! reported elements per second.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_storage::encoding::synthetic::NodeExporter;
use strata_storage::rpc::wire::{
    Kind, Method, decode_batch, decode_request, encode_batch, encode_frame, encode_write,
    read_frame, set_timeout,
};
use strata_storage::{Label, Sample, SeriesData, SeriesSamples, Tenant};

const SERIES: usize = 1000;
const POINTS: usize = 100;
const MAX_FRAME: u32 = 64 << 20;

fn data() -> Vec<SeriesData> {
    let fleet = NodeExporter {
        hosts: 10,
        points: POINTS,
        ..NodeExporter::default()
    };
    let series: Vec<SeriesData> = fleet
        .series()
        .take(SERIES)
        .map(|s| {
            let mut labels: Vec<Label> = s
                .labels
                .into_iter()
                .map(|(n, v)| Label::new(n, v))
                .collect();
            labels.sort();
            SeriesData {
                labels,
                timestamps: s.timestamps,
                values: s.values,
            }
        })
        .collect();
    assert_eq!(series.len(), SERIES, "the fleet has enough series");
    series
}

fn rows(series: &[SeriesData]) -> Vec<SeriesSamples> {
    series
        .iter()
        .map(|s| SeriesSamples {
            labels: s.labels.clone(),
            samples: s
                .timestamps
                .iter()
                .zip(&s.values)
                .map(|(t, v)| Sample::new(*t, *v))
                .collect(),
        })
        .collect()
}

fn read(runtime: &tokio::runtime::Runtime, frame: &[u8]) -> Vec<u8> {
    runtime
        .block_on(read_frame(&mut &frame[..], MAX_FRAME))
        .expect("frame")
        .expect("not the end")
        .body
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let series = data();
    let rows = rows(&series);
    let samples = (SERIES * POINTS) as u64;
    let tenant = Tenant::new(1, 0);

    let (bodies, _) = encode_write(tenant, &rows, MAX_FRAME as usize);
    let mut write_body = bodies.into_iter().next().expect("one body");
    set_timeout(&mut write_body, 1000);
    let write_frame =
        encode_frame(Kind::Request(Method::Write), 1, &write_body, MAX_FRAME).expect("frame");
    let batch_body = encode_batch(&series);
    let batch_frame = encode_frame(Kind::Batch, 1, &batch_body, MAX_FRAME).expect("frame");
    let per_sample = |n: usize| n as f64 / samples as f64;
    eprintln!(
        "{SERIES} series x {POINTS} samples: write body {:.2} B/sample, frame {:.3} B/sample; \
         search batch body {:.2} B/sample, frame {:.3} B/sample",
        per_sample(write_body.len()),
        per_sample(write_frame.len()),
        per_sample(batch_body.len()),
        per_sample(batch_frame.len()),
    );

    if let Ok(path) = std::env::var("STRATA_RPC_BENCH_DUMP") {
        std::fs::write(&path, &batch_body).expect("dump the batch body");
    }
    let mut g = c.benchmark_group("rpc");
    g.sample_size(20);
    g.throughput(Throughput::Elements(samples));
    g.bench_function("write_encode", |b| {
        b.iter(|| {
            let (mut bodies, _) = encode_write(tenant, &rows, MAX_FRAME as usize);
            let body = &mut bodies[0];
            set_timeout(body, 1000);
            encode_frame(Kind::Request(Method::Write), 1, body, MAX_FRAME).expect("frame")
        })
    });
    g.bench_function("write_decode", |b| {
        b.iter(|| {
            let body = read(&runtime, &write_frame);
            decode_request(Method::Write, &body).expect("decode")
        })
    });
    g.bench_function("search_batch_encode", |b| {
        b.iter(|| encode_frame(Kind::Batch, 1, &encode_batch(&series), MAX_FRAME).expect("frame"))
    });
    g.bench_function("search_batch_decode", |b| {
        b.iter(|| decode_batch(&read(&runtime, &batch_frame)).expect("decode"))
    });
    // The bodies alone: what the frames add is zstd.
    g.bench_function("search_body_encode", |b| b.iter(|| encode_batch(&series)));
    g.bench_function("search_body_decode", |b| {
        b.iter(|| decode_batch(&batch_body).expect("decode"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
