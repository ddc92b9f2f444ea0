//! Throughput of the text protocol parsers, in samples per second on one
//! core: `cargo bench -p strata-insert --bench parse_text`.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_insert::influx::{self, Options, Precision};
use strata_insert::promtext::{self, Format};

/// Telegraf-like `cpu` points: 4 tags, 5 numeric fields and one string.
fn influx_body(lines: usize) -> Vec<u8> {
    let mut body = String::new();
    for i in 0..lines {
        let _ = writeln!(
            body,
            "cpu,host=server{:03},region=eu-west-{},cpu=cpu{},dc=dc\\ {} usage_user={}.25,\
             usage_system={}.5,usage_idle=9{}.125,usage_iowait=0.0{},cores={}i,\
             governor=\"performance\" {}",
            i % 500,
            i % 3,
            i % 16,
            i % 4,
            i % 100,
            i % 7,
            i % 10,
            i % 9,
            8 + i % 4,
            1_700_000_000_000_000_000_i64 + (i as i64) * 10_000_000_000,
        );
    }
    body.into_bytes()
}

fn bench_influx(c: &mut Criterion) {
    let body = influx_body(10_000);
    let options = Options {
        precision: Precision::Nanoseconds,
        default_timestamp_ms: 1_700_000_000_000,
        db: "telegraf".into(),
    };
    let samples = influx::parse(&body, &options).expect("valid").parsed.rows;
    let mut group = c.benchmark_group("influx");
    group.throughput(Throughput::Elements(samples));
    group.bench_function("telegraf_cpu_10k_lines", |b| {
        b.iter(|| influx::parse(black_box(&body), &options).expect("valid"))
    });
    group.finish();
}

/// The node-exporter scrape excerpt of the fuzz corpus, 40 times over.
fn node_exporter_body() -> Vec<u8> {
    let scrape = include_bytes!("../../fuzz/corpus/prom_text/node_exporter_1.5.txt");
    scrape.repeat(40)
}

/// OpenMetrics histograms with exemplars and timestamps in seconds.
fn openmetrics_body(series: usize) -> Vec<u8> {
    let mut body = String::from("# TYPE http_latency_seconds histogram\n");
    for i in 0..series {
        let path = i % 20;
        let code = 200 + i % 5;
        for le in ["0.005", "0.05", "0.5", "5", "+Inf"] {
            let _ = writeln!(
                body,
                "http_latency_seconds_bucket{{path=\"/api/v{path}\",code=\"{code}\",le=\"{le}\"}} \
                 {} 1700000000.{:03} # {{trace_id=\"{i:016x}\"}} 0.04",
                i * 3,
                i % 1000,
            );
        }
        let _ = writeln!(
            body,
            "http_latency_seconds_count{{path=\"/api/v{path}\",code=\"{code}\"}} {}",
            i * 3
        );
        let _ = writeln!(
            body,
            "http_latency_seconds_sum{{path=\"/api/v{path}\",code=\"{code}\"}} {i}.5"
        );
    }
    body.push_str("# EOF\n");
    body.into_bytes()
}

fn bench_promtext(c: &mut Criterion) {
    let mut group = c.benchmark_group("promtext");
    for (name, body) in [
        ("node_exporter_scrape_x40", node_exporter_body()),
        ("openmetrics_histograms_2k", openmetrics_body(2_000)),
    ] {
        let format = Format::detect(None, &body);
        let samples = promtext::parse(&body, 1_700_000_000_000, format)
            .expect("valid")
            .rows;
        group.throughput(Throughput::Elements(samples));
        group.bench_function(name, |b| {
            b.iter(|| promtext::parse(black_box(&body), 1_700_000_000_000, format).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_influx, bench_promtext);
criterion_main!(benches);
