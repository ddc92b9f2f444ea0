//! Storage reads of the `loadgen query` dashboard queries over the same
//! data (150 node_exporter hosts, 68,850 series, 2 h at 15 s, in the two
//! parts such a run leaves; see `common/mod.rs`). Caches are warm, as for a
//! dashboard that refreshes.
//!
//! `cargo bench -p strata-storage --bench query`
//!
//! `query_head/*`: the same reads with 688,500 rows in the head, as a live
//! server has between flushes.
//!
//! The dataset takes a while to write; `STRATA_BENCH_QUERY_DIR=<dir>`
//! keeps it there for the next run.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};

fn queries(c: &mut Criterion) {
    let temp;
    let dir = match std::env::var_os("STRATA_BENCH_QUERY_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            temp = tempfile::tempdir().expect("tempdir");
            temp.path().to_path_buf()
        }
    };
    common::build(&dir);
    let storage = common::open(&dir);
    let (_copy, with_head) = common::with_head(&dir);
    for (name, storage) in [("query", &storage), ("query_head", &with_head)] {
        let mut group = c.benchmark_group(name);
        group.sample_size(20);
        for q in common::queries() {
            assert!(common::run(storage, &q) > 0, "{} finds nothing", q.name);
            group.bench_function(q.name, |b| b.iter(|| common::run(storage, &q)));
        }
        group.finish();
    }
    storage.close().expect("close");
}

criterion_group!(benches, queries);
criterion_main!(benches);
