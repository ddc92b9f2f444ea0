//! Tests of the cluster read path over real storage engines in this process
//! ([`LocalNode`]s), with [`FaultyNode`] switching nodes down, slow or
//! failing. The reference is one engine holding every write.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use prometheus_client::registry::Registry;
use strata_storage::cluster::{
    KeyedSeries, LocalNode, Node, NodeError, NodeState, Topology, TopologyNode,
};
use strata_storage::config::SyncSetting;
use strata_storage::wal::SyncMode;
use strata_storage::{
    Cardinality, Label, Matcher, STALE_NAN_BITS, Sample as StorageSample, SeriesData,
    SeriesSamples, Storage, Tenant, TimeRange,
};
use tokio::sync::watch;
use tower::ServiceExt;

use super::fault::{Fault, FaultyNode};
use super::merge::{self, KeyMerge, MergeStats, OutOfOrder, Step};
use super::{Cluster, ClusterMetrics, ClusterOptions, ClusterSource, Connect};
use crate::promql::{Engine, QueryError, QueryOptions, QueryResult, Value};
use crate::source::{Source, StorageSource};

/// End of the test data; the engines' clock stands just after it.
const END: i64 = 1_700_000_000_000;
/// Scrape interval of the test data.
const SCRAPE: i64 = 15_000;
/// Span of the test data.
const SPAN: i64 = 10 * 60_000;
const TENANT: Tenant = Tenant::DEFAULT;

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn open_storage(dir: &Path) -> Arc<Storage> {
    let config = strata_storage::Config {
        data_dir: dir.to_path_buf(),
        sync: SyncSetting(SyncMode::None),
        flush_interval: Duration::from_secs(3600),
        ..strata_storage::Config::default()
    };
    Storage::open_with_clock(config, &mut Registry::default(), Arc::new(|| END + 1))
        .expect("open storage")
}

/// Three storage nodes behind fault injectors, one reference engine, and
/// the runtime node calls run on.
struct Fixture {
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    nodes: Vec<FaultyNode>,
    reference: Arc<Storage>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = (0..3)
            .map(|i| {
                let storage = open_storage(&dir.path().join(format!("node-{i}")));
                FaultyNode::new(LocalNode::new(format!("storage-{i}:8400"), storage))
            })
            .collect();
        let reference = open_storage(&dir.path().join("reference"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Fixture {
            _dir: dir,
            runtime,
            nodes,
            reference,
        }
    }

    fn storage(&self, node: usize) -> &Arc<Storage> {
        self.nodes[node].local().storage()
    }

    fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr().to_string()).collect()
    }

    fn connect(&self) -> Connect {
        let nodes = self.nodes.clone();
        Arc::new(move |addr: &str| {
            nodes
                .iter()
                .find(|n| n.addr() == addr)
                .map(|n| Arc::new(n.clone()) as Arc<dyn Node>)
                .ok_or_else(|| NodeError::Unavailable {
                    addr: addr.to_string(),
                    detail: "no such node".to_string(),
                })
        })
    }

    /// A cluster of every node, all `active`.
    fn cluster(&self, replication_factor: usize) -> Arc<Cluster> {
        self.cluster_with(replication_factor, ClusterMetrics::default())
    }

    fn cluster_with(&self, replication_factor: usize, metrics: ClusterMetrics) -> Arc<Cluster> {
        let topology = Topology::from_addrs(&self.addrs()).expect("topology");
        let (_tx, rx) = watch::channel(Arc::new(topology));
        Cluster::new(
            rx,
            self.connect(),
            ClusterOptions::new(replication_factor),
            metrics,
            self.runtime.handle().clone(),
        )
    }

    fn source(&self, replication_factor: usize) -> ClusterSource {
        ClusterSource::new(self.cluster(replication_factor), TENANT)
    }

    /// Writes `rows` to the reference and each series to two of the three
    /// nodes, picked by its labels.
    fn write_replicated(&self, tenant: Tenant, rows: &[SeriesSamples]) {
        self.reference.add(tenant, rows).expect("add reference");
        let mut per_node: Vec<Vec<SeriesSamples>> = vec![Vec::new(); 3];
        for row in rows {
            let first = placement(&row.labels);
            per_node[first].push(row.clone());
            per_node[(first + 1) % 3].push(row.clone());
        }
        for (node, rows) in per_node.iter().enumerate() {
            self.storage(node).add(tenant, rows).expect("add node");
        }
    }

    /// Flushes half the engines so both read paths (parts, in-memory rows)
    /// are merged.
    fn flush_some(&self) {
        self.reference.flush().expect("flush");
        self.storage(1).flush().expect("flush");
    }
}

/// Where a series' first copy goes: a hash of its labels.
fn placement(labels: &[Label]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for l in labels {
        for b in l.name.bytes().chain([0]).chain(l.value.bytes()).chain([1]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % 3) as usize
}

/// The value of a series at its i-th scrape.
type Values = Box<dyn FnMut(&mut Rng, usize) -> f64>;

/// A deterministic xorshift sequence in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 1_000_000.0
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
}

/// Scrape timestamps of an instance (offset so instances do not align).
fn scrapes(offset: i64, until: i64) -> impl Iterator<Item = i64> {
    (0..)
        .map(move |i| END - SPAN + offset + i * SCRAPE)
        .take_while(move |t| *t <= until)
}

/// Data shaped like a Prometheus scraping itself and three node exporters
/// (one of which goes away halfway, ending its series with stale markers):
/// the metric names `select/testdata/differential/queries.txt` uses.
fn scraped_data() -> Vec<SeriesSamples> {
    let mut rows = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let series = |rows: &mut Vec<SeriesSamples>,
                  rng: &mut Rng,
                  pairs: &[(&str, &str)],
                  offset: i64,
                  until: i64,
                  mut value: Values| {
        let mut samples: Vec<StorageSample> = scrapes(offset, until)
            .enumerate()
            .map(|(i, t)| StorageSample::new(t, value(rng, i)))
            .collect();
        if until < END
            && let Some(last) = samples.last()
        {
            let t = last.timestamp + SCRAPE;
            samples.push(StorageSample::new(t, f64::from_bits(STALE_NAN_BITS)));
        }
        rows.push(SeriesSamples {
            labels: labels(pairs),
            samples,
        });
    };
    // Counters start at distinct fractions so no two series tie (topk and
    // sort would pick among equal values by input order).
    let serial = std::cell::Cell::new(0u32);
    let counter = |rate: f64| -> Values {
        serial.set(serial.get() + 1);
        let mut total = 1000.0 * rate + f64::from(serial.get()) / 1024.0;
        Box::new(move |rng: &mut Rng, _| {
            total += (rng.next() * rate * 15.0).round();
            total
        })
    };
    let gauge = |base: f64, swing: f64| -> Values {
        Box::new(move |rng: &mut Rng, _| base + (rng.next() - 0.5) * swing)
    };
    let constant = |v: f64| -> Values { Box::new(move |_: &mut Rng, _| v) };

    let instances = [
        ("node", "node-a:9100", 137, END),
        ("node", "node-b:9100", 2_411, END),
        ("node", "node-c:9100", 5_003, END - SPAN / 2),
        ("prometheus", "localhost:9090", 7_777, END),
    ];
    for (idx, (job, instance, offset, until)) in instances.into_iter().enumerate() {
        let base = [("job", job), ("instance", instance)];
        let with = |name: &'static str, extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("__name__", name)];
            pairs.extend_from_slice(&base);
            pairs.extend_from_slice(extra);
            pairs
        };
        let f = idx as f64 + 1.0;
        series(
            &mut rows,
            &mut rng,
            &with("up", &[]),
            offset,
            until,
            constant(1.0),
        );
        series(
            &mut rows,
            &mut rng,
            &with("scrape_duration_seconds", &[]),
            offset,
            until,
            gauge(0.01 * f, 0.01),
        );
        series(
            &mut rows,
            &mut rng,
            &with("scrape_samples_scraped", &[]),
            offset,
            until,
            gauge(500.0 * f, 40.0),
        );
        series(
            &mut rows,
            &mut rng,
            &with("scrape_series_added", &[]),
            offset,
            until,
            constant(0.0),
        );
        series(
            &mut rows,
            &mut rng,
            &with("go_goroutines", &[]),
            offset,
            until,
            gauge(30.0 * f, 10.0),
        );
        series(
            &mut rows,
            &mut rng,
            &with("go_memstats_heap_alloc_bytes", &[]),
            offset,
            until,
            gauge(2e7 * f, 4e6),
        );
        series(
            &mut rows,
            &mut rng,
            &with("go_memstats_alloc_bytes_total", &[]),
            offset,
            until,
            counter(1e5),
        );
        for q in ["0", "0.25", "0.5", "0.75", "1"] {
            let v: f64 = q.parse().expect("quantile");
            series(
                &mut rows,
                &mut rng,
                &with("go_gc_duration_seconds", &[("quantile", q)]),
                offset,
                until,
                gauge(0.0001 + v * 0.001, 0.00005),
            );
        }
        series(
            &mut rows,
            &mut rng,
            &with("go_gc_duration_seconds_sum", &[]),
            offset,
            until,
            counter(0.001),
        );
        series(
            &mut rows,
            &mut rng,
            &with("go_gc_duration_seconds_count", &[]),
            offset,
            until,
            counter(2.0),
        );
        series(
            &mut rows,
            &mut rng,
            &with("process_resident_memory_bytes", &[]),
            offset,
            until,
            gauge(5e7 * f, 1e6),
        );
        series(
            &mut rows,
            &mut rng,
            &with("process_virtual_memory_bytes", &[]),
            offset,
            until,
            gauge(1e9 * f, 1e6),
        );
        series(
            &mut rows,
            &mut rng,
            &with("process_cpu_seconds_total", &[]),
            offset,
            until,
            counter(0.05),
        );
        series(
            &mut rows,
            &mut rng,
            &with("process_start_time_seconds", &[]),
            offset,
            until,
            constant((END / 1000 - 3 * 86_400) as f64 - f * 1000.0),
        );
        if job == "node" {
            for cpu in ["0", "1", "2", "3"] {
                for (m, mode) in [
                    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
                ]
                .into_iter()
                .enumerate()
                {
                    let rate = [0.9, 0.01, 0.0, 0.001, 0.005, 0.0, 0.05, 0.1][m];
                    series(
                        &mut rows,
                        &mut rng,
                        &with("node_cpu_seconds_total", &[("cpu", cpu), ("mode", mode)]),
                        offset,
                        until,
                        counter(rate),
                    );
                }
            }
            for (name, base) in [
                ("node_load1", 0.8),
                ("node_load5", 0.6),
                ("node_load15", 0.5),
            ] {
                series(
                    &mut rows,
                    &mut rng,
                    &with(name, &[]),
                    offset,
                    until,
                    gauge(base * f, 0.4),
                );
            }
            series(
                &mut rows,
                &mut rng,
                &with("node_memory_MemTotal_bytes", &[]),
                offset,
                until,
                constant(8e9 * f),
            );
            series(
                &mut rows,
                &mut rng,
                &with("node_memory_MemAvailable_bytes", &[]),
                offset,
                until,
                gauge(4e9 * f, 1e8),
            );
            series(
                &mut rows,
                &mut rng,
                &with("node_memory_MemFree_bytes", &[]),
                offset,
                until,
                gauge(1e9 * f, 1e8),
            );
            for device in ["eth0", "lo"] {
                series(
                    &mut rows,
                    &mut rng,
                    &with("node_network_receive_bytes_total", &[("device", device)]),
                    offset,
                    until,
                    counter(2e4),
                );
                series(
                    &mut rows,
                    &mut rng,
                    &with("node_network_transmit_bytes_total", &[("device", device)]),
                    offset,
                    until,
                    counter(1e4),
                );
            }
            for (device, mountpoint, fstype, size) in [
                ("/dev/sda1", "/", "ext4", 1e11),
                ("tmpfs", "/run", "tmpfs", 1e9),
            ] {
                let extra = [
                    ("device", device),
                    ("fstype", fstype),
                    ("mountpoint", mountpoint),
                ];
                series(
                    &mut rows,
                    &mut rng,
                    &with("node_filesystem_size_bytes", &extra),
                    offset,
                    until,
                    constant(size),
                );
                series(
                    &mut rows,
                    &mut rng,
                    &with("node_filesystem_avail_bytes", &extra),
                    offset,
                    until,
                    gauge(size / 2.0, size / 100.0),
                );
            }
            series(
                &mut rows,
                &mut rng,
                &with("node_disk_read_bytes_total", &[("device", "sda")]),
                offset,
                until,
                counter(5e4),
            );
            series(
                &mut rows,
                &mut rng,
                &with("node_disk_written_bytes_total", &[("device", "sda")]),
                offset,
                until,
                counter(8e4),
            );
            series(
                &mut rows,
                &mut rng,
                &with("node_boot_time_seconds", &[]),
                offset,
                until,
                constant((END / 1000 - 86_400) as f64 - f * 3600.0),
            );
            series(
                &mut rows,
                &mut rng,
                &with("node_intr_total", &[]),
                offset,
                until,
                counter(300.0),
            );
            series(
                &mut rows,
                &mut rng,
                &with("node_context_switches_total", &[]),
                offset,
                until,
                counter(900.0),
            );
            let host = instance.split(':').next().unwrap_or_default();
            let host: &'static str = Box::leak(host.to_string().into_boxed_str());
            series(
                &mut rows,
                &mut rng,
                &with(
                    "node_uname_info",
                    &[("nodename", host), ("release", "6.1.0")],
                ),
                offset,
                until,
                constant(1.0),
            );
        } else {
            series(
                &mut rows,
                &mut rng,
                &with("prometheus_build_info", &[("version", "2.53.0")]),
                offset,
                until,
                constant(1.0),
            );
            series(
                &mut rows,
                &mut rng,
                &with("prometheus_tsdb_head_series", &[]),
                offset,
                until,
                gauge(900.0, 20.0),
            );
            series(
                &mut rows,
                &mut rng,
                &with("prometheus_tsdb_head_samples_appended_total", &[]),
                offset,
                until,
                counter(60.0),
            );
            for (slice, q, v) in [
                ("inner_eval", "0.5", 0.0001),
                ("inner_eval", "0.9", 0.001),
                ("inner_eval", "0.99", 0.01),
            ] {
                series(
                    &mut rows,
                    &mut rng,
                    &with(
                        "prometheus_engine_query_duration_seconds",
                        &[("quantile", q), ("slice", slice)],
                    ),
                    offset,
                    until,
                    gauge(v, v / 10.0),
                );
            }
            for handler in ["/api/v1/query", "/metrics"] {
                series(
                    &mut rows,
                    &mut rng,
                    &with(
                        "prometheus_http_requests_total",
                        &[("code", "200"), ("handler", handler)],
                    ),
                    offset,
                    until,
                    counter(1.0),
                );
                // Buckets share one stream of observations so they stay
                // monotonic in `le`.
                let les = ["0.1", "0.2", "0.4", "1", "3", "8", "+Inf"];
                let mut counts = vec![0.0; les.len()];
                let mut columns: Vec<Vec<f64>> = vec![Vec::new(); les.len()];
                let mut sums = Vec::new();
                let mut sum = 0.0;
                for _ in scrapes(offset, until) {
                    for _ in 0..3 {
                        let observed = rng.next() * rng.next() * 10.0;
                        sum += observed;
                        for (k, le) in les.iter().enumerate() {
                            if *le == "+Inf" || observed <= le.parse::<f64>().expect("le") {
                                counts[k] += 1.0;
                            }
                        }
                    }
                    for (k, c) in counts.iter().enumerate() {
                        columns[k].push(*c);
                    }
                    sums.push(sum);
                }
                for (k, le) in les.into_iter().enumerate() {
                    let column = columns[k].clone();
                    series(
                        &mut rows,
                        &mut rng,
                        &with(
                            "prometheus_http_request_duration_seconds_bucket",
                            &[("handler", handler), ("le", le)],
                        ),
                        offset,
                        until,
                        Box::new(move |_: &mut Rng, i| column[i]),
                    );
                }
                let count = columns[columns.len() - 1].clone();
                series(
                    &mut rows,
                    &mut rng,
                    &with(
                        "prometheus_http_request_duration_seconds_count",
                        &[("handler", handler)],
                    ),
                    offset,
                    until,
                    Box::new(move |_: &mut Rng, i| count[i]),
                );
                series(
                    &mut rows,
                    &mut rng,
                    &with(
                        "prometheus_http_request_duration_seconds_sum",
                        &[("handler", handler)],
                    ),
                    offset,
                    until,
                    Box::new(move |_: &mut Rng, i| sums[i]),
                );
                for (k, le) in ["100", "1000", "10000", "+Inf"].into_iter().enumerate() {
                    let share = (k + 1) as f64 / 4.0;
                    series(
                        &mut rows,
                        &mut rng,
                        &with(
                            "prometheus_http_response_size_bytes_bucket",
                            &[("handler", handler), ("le", le)],
                        ),
                        offset,
                        until,
                        Box::new(move |_: &mut Rng, i| (i as f64 * 3.0 * share).floor()),
                    );
                }
            }
            for le in ["480", "1920", "7680", "+Inf"] {
                series(
                    &mut rows,
                    &mut rng,
                    &with(
                        "prometheus_tsdb_compaction_chunk_range_seconds_bucket",
                        &[("le", le)],
                    ),
                    offset,
                    until,
                    constant(le.parse::<f64>().map_or(40.0, |v| v / 200.0)),
                );
            }
        }
    }
    rows
}

/// Whether two query outcomes agree: label sets and timestamps exactly,
/// values within a relative 1e-9 (the series reach aggregations in another
/// order, which may change the last bits of a sum), NaN equal to NaN.
fn same_answer(
    a: &Result<QueryResult, QueryError>,
    b: &Result<QueryResult, QueryError>,
) -> Result<(), String> {
    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    }
    let (a, b) = match (a, b) {
        (Err(a), Err(b)) if a.to_string() == b.to_string() => return Ok(()),
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => return Err(format!("{a:?} vs {b:?}")),
    };
    if a.warnings != b.warnings || a.partial != b.partial {
        return Err(format!(
            "warnings {:?}/{:?} partial {}/{}",
            a.warnings, b.warnings, a.partial, b.partial
        ));
    }
    match (&a.value, &b.value) {
        (Value::Scalar { t: ta, v: va }, Value::Scalar { t: tb, v: vb })
            if ta == tb && close(*va, *vb) =>
        {
            Ok(())
        }
        (Value::String { .. }, Value::String { .. }) if a.value == b.value => Ok(()),
        (Value::Vector(va), Value::Vector(vb)) => {
            let mut va: Vec<_> = va.iter().collect();
            let mut vb: Vec<_> = vb.iter().collect();
            va.sort_by(|x, y| x.labels.cmp(&y.labels));
            vb.sort_by(|x, y| x.labels.cmp(&y.labels));
            if va.len() == vb.len()
                && va
                    .iter()
                    .zip(&vb)
                    .all(|(x, y)| x.labels == y.labels && x.t == y.t && close(x.v, y.v))
            {
                Ok(())
            } else {
                Err(format!("{va:?}\nvs\n{vb:?}"))
            }
        }
        (Value::Matrix(ma), Value::Matrix(mb)) => {
            let mut ma: Vec<_> = ma.iter().collect();
            let mut mb: Vec<_> = mb.iter().collect();
            ma.sort_by(|x, y| x.labels.cmp(&y.labels));
            mb.sort_by(|x, y| x.labels.cmp(&y.labels));
            let same = ma.len() == mb.len()
                && ma.iter().zip(&mb).all(|(x, y)| {
                    x.labels == y.labels
                        && x.points.len() == y.points.len()
                        && x.points
                            .iter()
                            .zip(&y.points)
                            .all(|(p, q)| p.t == q.t && close(p.v, q.v))
                });
            if same {
                Ok(())
            } else {
                Err(format!("{ma:?}\nvs\n{mb:?}"))
            }
        }
        _ => Err(format!("{:?} vs {:?}", a.value, b.value)),
    }
}

fn is_empty(result: &Result<QueryResult, QueryError>) -> bool {
    match result {
        Ok(r) => match &r.value {
            Value::Vector(v) => v.is_empty(),
            Value::Matrix(m) => m.is_empty(),
            _ => false,
        },
        Err(_) => true,
    }
}

fn differential_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/differential/queries.txt");
    let text = std::fs::read_to_string(&path).expect("read queries.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Runs every differential query as an instant query and a range query
/// through `cluster` and the reference; answers how many had data.
fn compare_queries(fixture: &Fixture, cluster: &dyn Source) -> usize {
    let reference = StorageSource::new(fixture.reference.clone(), TENANT);
    let engine = Engine::default();
    let options = QueryOptions::default();
    let mut with_data = 0;
    let mut failures = Vec::new();
    for query in differential_queries() {
        let want = engine.instant(&reference, &query, END, &options);
        let got = engine.instant(cluster, &query, END, &options);
        if let Err(e) = same_answer(&want, &got) {
            failures.push(format!("instant {query}: {e}"));
        }
        let want_range = engine.range(&reference, &query, END - 5 * 60_000, END, 20_000, &options);
        let got_range = engine.range(cluster, &query, END - 5 * 60_000, END, 20_000, &options);
        if let Err(e) = same_answer(&want_range, &got_range) {
            failures.push(format!("range {query}: {e}"));
        }
        if !is_empty(&want) && !is_empty(&want_range) {
            with_data += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    with_data
}

#[test]
fn replicated_cluster_answers_like_one_engine() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    fixture.flush_some();
    let queries = differential_queries().len();
    let with_data = compare_queries(&fixture, &fixture.source(2));
    // The data must make most queries answer something, or the comparison
    // proves little.
    assert!(
        with_data * 10 >= queries * 8,
        "only {with_data} of {queries} queries had data"
    );
}

#[test]
fn one_node_down_is_complete_with_rf2_partial_with_rf1() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    fixture.nodes[1].set(Fault::Down);

    // RF=2: every series has a copy on a node that answers.
    let mut registry = Registry::default();
    let metrics = ClusterMetrics::register(&mut registry);
    let cluster = fixture.cluster_with(2, metrics);
    let source = ClusterSource::new(cluster, TENANT);
    compare_queries(&fixture, &source);
    let text = encode(&registry);
    assert!(
        text.contains(r#"strata_select_cluster_missing_node_reads_total{result="complete"}"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"strata_select_cluster_node_errors_total{node="storage-1:8400",reason="unavailable"}"#
        ),
        "{text}"
    );

    // RF=1: the same data read as unreplicated may miss series.
    let source = fixture.source(1);
    let matchers = [Matcher::eq("__name__", "up")];
    let selected = source
        .select(&matchers, TimeRange::new(END - SPAN, END), far())
        .expect("select");
    assert!(selected.partial);
    assert_eq!(selected.warnings.len(), 1, "{:?}", selected.warnings);
    assert!(
        selected.warnings[0].contains("storage node storage-1:8400 is unavailable"),
        "{:?}",
        selected.warnings
    );
    let result = Engine::default()
        .instant(&source, "count(up)", END, &QueryOptions::default())
        .expect("query");
    assert!(result.partial);
    for lookup in [
        source
            .label_names(&[], TimeRange::ALL, 0, far())
            .expect("names"),
        source
            .label_values("job", &[], TimeRange::ALL, 0, far())
            .expect("values"),
    ] {
        assert!(lookup.partial && lookup.warnings[0].contains("storage-1:8400"));
    }
    assert!(
        source
            .series(&matchers, TimeRange::ALL, 0, far())
            .expect("series")
            .partial
    );
    assert!(
        source
            .cardinality(TimeRange::new(END, END), 0, far())
            .expect("cardinality")
            .partial
    );
}

#[test]
fn no_node_answering_is_an_error_naming_them() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    for node in &fixture.nodes {
        node.set(Fault::Failing("disk on fire".to_string()));
    }
    let source = fixture.source(2);
    let Err(e) = source.select(&[Matcher::eq("__name__", "up")], TimeRange::ALL, far()) else {
        panic!("no node answered, yet the read succeeded");
    };
    let message = e.to_string();
    assert!(e.is_transient(), "{message}");
    for addr in fixture.addrs() {
        assert!(
            message.contains(&format!("storage node {addr}: disk on fire")),
            "{message}"
        );
    }
}

#[test]
fn a_node_lost_midway_is_judged_when_its_stream_ends() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    fixture.flush_some();
    fixture.nodes[1].set(Fault::FailsMidway(5));

    // RF=2: what it did not send has copies elsewhere.
    let mut registry = Registry::default();
    let metrics = ClusterMetrics::register(&mut registry);
    let cluster = fixture.cluster_with(2, metrics);
    compare_queries(&fixture, &ClusterSource::new(cluster, TENANT));
    let text = encode(&registry);
    assert!(
        text.contains(
            r#"strata_select_cluster_node_errors_total{node="storage-1:8400",reason="remote"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"strata_select_cluster_missing_node_reads_total{result="complete"}"#),
        "{text}"
    );

    // RF=1: partial, which only the end of the stream tells.
    let source = fixture.source(1);
    let node_jobs = [Matcher::eq("job", "node")];
    let selected = source
        .select(&node_jobs, TimeRange::ALL, far())
        .expect("select");
    assert!(
        !selected.partial && selected.warnings.is_empty(),
        "the node fails after its first series: {:?}",
        selected.warnings
    );
    let late = selected.late.clone();
    let streamed = selected
        .series
        .inspect(|s| assert!(s.is_ok(), "{s:?}"))
        .count();
    let (warnings, partial) = late.take();
    assert!(partial && warnings.len() == 1, "{warnings:?}");
    assert!(
        warnings[0].contains("storage node storage-1:8400: lost midway"),
        "{warnings:?}"
    );
    let all = StorageSource::new(fixture.reference.clone(), TENANT)
        .select(&node_jobs, TimeRange::ALL, far())
        .expect("select")
        .series
        .count();
    // Every series is written to two nodes whatever RF the reader assumes.
    assert_eq!(streamed, all, "the other copies fill in");
    let result = Engine::default()
        .instant(
            &source,
            "count({job=\"node\"})",
            END,
            &QueryOptions::default(),
        )
        .expect("query");
    assert!(result.partial, "{result:?}");
    assert!(
        result.warnings.iter().any(|w| w.contains("storage-1:8400")),
        "{:?}",
        result.warnings
    );

    // Every node lost midway: nobody answered whole.
    for node in &fixture.nodes {
        node.set(Fault::FailsMidway(5));
    }
    let err = Engine::default()
        .instant(
            &fixture.source(2),
            "count({job=\"node\"})",
            END,
            &QueryOptions::default(),
        )
        .expect_err("no node answered whole");
    assert!(
        err.to_string().contains("no storage node answered"),
        "{err}"
    );
}

#[test]
fn removed_nodes_are_not_read() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    fixture.nodes[2].set(Fault::Down);
    let mut topology = Topology::from_addrs(&fixture.addrs()).expect("topology");
    let (tx, rx) = watch::channel(Arc::new(topology.clone()));
    let cluster = Cluster::new(
        rx,
        fixture.connect(),
        ClusterOptions::new(1),
        ClusterMetrics::default(),
        fixture.runtime.handle().clone(),
    );
    let source = ClusterSource::new(cluster, TENANT);
    let names = source
        .label_names(&[], TimeRange::ALL, 0, far())
        .expect("names");
    assert!(names.partial, "node 2 is down and readable");

    topology.version = 1;
    topology.nodes[2] = TopologyNode {
        addr: fixture.nodes[2].addr().to_string(),
        state: NodeState::Removed,
    };
    tx.send(Arc::new(topology)).expect("send topology");
    let names = source
        .label_names(&[], TimeRange::ALL, 0, far())
        .expect("names");
    assert!(!names.partial && names.warnings.is_empty(), "{names:?}");
}

#[test]
fn replicas_that_missed_samples_are_filled_and_conflicts_pick_the_greater() {
    let fixture = Fixture::new();
    let series = |keep: &dyn Fn(i64) -> bool, value: &dyn Fn(i64) -> f64| SeriesSamples {
        labels: labels(&[("__name__", "gappy"), ("job", "x")]),
        samples: scrapes(0, END)
            .filter(|t| keep(*t))
            .map(|t| StorageSample::new(t, value(t)))
            .collect(),
    };
    let value = |t: i64| ((t - END) / SCRAPE) as f64;
    // Node 0 missed every third scrape, node 1 most of the second half;
    // together they hold everything.
    let every = series(&|_| true, &value);
    fixture
        .reference
        .add(TENANT, std::slice::from_ref(&every))
        .expect("add");
    let node0 = series(&|t| (t / SCRAPE) % 3 != 0, &value);
    let node1 = series(&|t| t <= END - SPAN / 2 || (t / SCRAPE) % 3 == 0, &value);
    fixture.storage(0).add(TENANT, &[node0]).expect("add");
    fixture.storage(1).add(TENANT, &[node1]).expect("add");
    fixture.storage(1).flush().expect("flush");
    // A conflicting replica on node 2 at one timestamp.
    let conflict_at = END - SPAN + 2 * SCRAPE;
    let conflicting = SeriesSamples {
        labels: every.labels.clone(),
        samples: vec![StorageSample::new(conflict_at, 1e6)],
    };
    fixture
        .storage(2)
        .add(TENANT, std::slice::from_ref(&conflicting))
        .expect("add");
    fixture.reference.add(TENANT, &[conflicting]).expect("add");

    let mut registry = Registry::default();
    let metrics = ClusterMetrics::register(&mut registry);
    let cluster = fixture.cluster_with(2, metrics);
    let source = ClusterSource::new(cluster, TENANT);
    let read = |source: &dyn Source| -> Vec<SeriesData> {
        let selected = source
            .select(&[Matcher::eq("__name__", "gappy")], TimeRange::ALL, far())
            .expect("select");
        selected.series.map(|s| s.expect("series")).collect()
    };
    let want = read(&StorageSource::new(fixture.reference.clone(), TENANT));
    let got = read(&source);
    assert_eq!(got, want);
    assert_eq!(want[0].timestamps.len(), scrapes(0, END).count());
    let at = want[0]
        .timestamps
        .iter()
        .position(|t| *t == conflict_at)
        .expect("conflict ts");
    assert_eq!(
        got[0].values[at], 1e6,
        "the greater value wins, as in one engine"
    );
    let text = encode(&registry);
    assert!(
        text.contains("strata_select_cluster_conflicting_samples_total 1\n"),
        "{text}"
    );
}

#[test]
fn tenants_stay_apart() {
    let fixture = Fixture::new();
    let other = Tenant::new(7, 3);
    let row = |name: &str, v: f64| SeriesSamples {
        labels: labels(&[("__name__", name), ("secret", name)]),
        samples: vec![StorageSample::new(END - 1000, v)],
    };
    fixture.write_replicated(TENANT, &[row("mine", 1.0)]);
    fixture.write_replicated(other, &[row("theirs", 2.0)]);
    let cluster = fixture.cluster(2);
    for (tenant, want, hidden) in [(TENANT, "mine", "theirs"), (other, "theirs", "mine")] {
        let source = ClusterSource::new(cluster.clone(), tenant);
        let values = source
            .label_values("secret", &[], TimeRange::ALL, 0, far())
            .expect("values");
        assert_eq!(values.found, vec![want.to_string()]);
        let all = [
            Matcher::new(strata_storage::MatchOp::RegexMatch, "__name__", ".+").expect("matcher"),
        ];
        let sets = source
            .series(&all, TimeRange::ALL, 0, far())
            .expect("series");
        assert_eq!(sets.labels.len(), 1);
        assert!(!format!("{:?}", sets.labels).contains(hidden));
        let result = Engine::default()
            .instant(
                &source,
                &format!("{hidden} or {want}"),
                END,
                &QueryOptions::default(),
            )
            .expect("query");
        let Value::Vector(v) = result.value else {
            panic!("not a vector");
        };
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].labels[0].value, want);
    }
}

#[test]
fn lookups_are_unions_cut_after_merging() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    let cluster = fixture.source(2);
    let reference = StorageSource::new(fixture.reference.clone(), TENANT);
    let node_matchers = [Matcher::eq("job", "node")];
    let cpu = [Matcher::eq("__name__", "node_cpu_seconds_total")];
    for limit in [0, 1, 5, 1000] {
        for matchers in [&[][..], &node_matchers[..]] {
            let want = reference
                .label_names(matchers, TimeRange::ALL, limit, far())
                .expect("names");
            let got = cluster
                .label_names(matchers, TimeRange::ALL, limit, far())
                .expect("names");
            assert_eq!(got, want, "names limit {limit}");
            let want = reference
                .label_values("instance", matchers, TimeRange::ALL, limit, far())
                .expect("values");
            let got = cluster
                .label_values("instance", matchers, TimeRange::ALL, limit, far())
                .expect("values");
            assert_eq!(got, want, "values limit {limit}");
        }
        let want = reference
            .series(&cpu, TimeRange::ALL, limit, far())
            .expect("series");
        let got = cluster
            .series(&cpu, TimeRange::ALL, limit, far())
            .expect("series");
        assert_eq!(
            (got.labels, got.partial),
            (want.labels, false),
            "series limit {limit}"
        );
    }
    // Replicated twice over and every node answering: the same figures.
    let day = TimeRange::new(END, END);
    let want = reference.cardinality(day, 0, far()).expect("cardinality");
    let got = cluster.cardinality(day, 0, far()).expect("cardinality");
    assert_eq!(got, want);
    assert!(want.found.total_series > 200, "{}", want.found.total_series);
}

#[test]
fn limits_fail_the_query_as_over_one_engine() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    let reference = StorageSource::new(fixture.reference.clone(), TENANT);
    let mut outcomes = Vec::new();
    for config in [
        crate::Config {
            max_series: 10,
            ..crate::Config::default()
        },
        crate::Config {
            max_samples: 500,
            ..crate::Config::default()
        },
    ] {
        let cluster = ClusterSource::new(fixture.cluster(2), TENANT);
        let engine = Engine::new(config.engine_options());
        for query in [
            "node_cpu_seconds_total",
            "sum(rate(node_cpu_seconds_total[5m]))",
            "up",
        ] {
            let want = engine.instant(&reference, query, END, &QueryOptions::default());
            let got = engine.instant(&cluster, query, END, &QueryOptions::default());
            // The cluster streams merged series to the engine as one
            // engine streams its own, so the engine's limits decide alike.
            same_answer(&want, &got).unwrap_or_else(|e| panic!("{query} with {config:?}: {e}"));
            outcomes.push(want.is_ok());
        }
    }
    // The limits must both pass and fail some queries, or this proves little.
    assert!(
        outcomes.contains(&true) && outcomes.contains(&false),
        "{outcomes:?}"
    );
}

fn encode_params(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text
}

async fn fetch(router: &Router, uri: &str) -> (StatusCode, String) {
    let request = Request::get(uri).body(Body::empty()).expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 24).await.expect("body");
    (status, String::from_utf8(body.to_vec()).expect("utf-8"))
}

fn api(source: ClusterSource, deny_partial_response: bool) -> Router {
    let config = crate::Config::default();
    crate::api::router_with_policy(
        Arc::new(source),
        &config,
        crate::Metrics::default(),
        crate::api::limits::Gate::new(&config),
        deny_partial_response,
    )
}

#[test]
fn the_api_marks_partial_answers_or_refuses_them() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    fixture.nodes[0].set(Fault::Down);
    let uri = format!("/api/v1/query?query=count(up)&time={}", END / 1000);
    fixture.runtime.block_on(async {
        // RF=1: one node down makes every answer partial.
        let lenient = api(fixture.source(1), false);
        for uri in [uri.as_str(), "/api/v1/labels", "/api/v1/label/job/values", "/api/v1/series?match[]=up", "/api/v1/status/tsdb"] {
            let (status, body) = fetch(&lenient, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert!(body.starts_with(r#"{"status":"success","isPartial":true,"data":"#), "{uri}: {body}");
            assert!(body.contains(r#""warnings":["partial response: storage node storage-0:8400 is unavailable"#), "{uri}: {body}");
            let (status, body) = fetch(&lenient, &format!("{uri}{}deny_partial_response=1", if uri.contains('?') { '&' } else { '?' })).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
            assert!(body.starts_with(r#"{"status":"error","errorType":"unavailable","error":"partial response denied"#), "{uri}: {body}");
            assert!(body.contains("storage-0:8400"), "{body}");
        }
        let strict = api(fixture.source(1), true);
        let (status, body) = fetch(&strict, &uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let (status, body) = fetch(&strict, &format!("{uri}&deny_partial_response=0")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(r#""isPartial":true"#));

        // RF=2: complete, and shaped exactly like single's answer.
        let complete = api(fixture.source(2), true);
        let (status, body) = fetch(&complete, &uri).await;
        let single = crate::api::router(
            Arc::new(StorageSource::new(fixture.reference.clone(), TENANT)),
            &crate::Config::default(),
            crate::Metrics::default(),
        );
        assert_eq!((status, body), fetch(&single, &uri).await);
    });
}

#[test]
fn a_slow_node_costs_at_most_the_deadline() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    fixture.nodes[2].set(Fault::Slow(Duration::from_secs(30)));
    let router = api(fixture.source(1), false);
    let started = Instant::now();
    let (status, body) = fixture.runtime.block_on(fetch(
        &router,
        &format!(
            "/api/v1/query?{}",
            encode_params(&[
                (
                    "query",
                    "sum(rate(node_cpu_seconds_total[1m])) + count(up) + count(node_load1)"
                ),
                ("time", &(END / 1000).to_string()),
                ("timeout", "1s"),
            ])
        ),
    ));
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""isPartial":true"#), "{body}");
    assert!(
        body.contains("storage node storage-2:8400 did not answer before the deadline"),
        "{body}"
    );
    // Three selectors, all bounded by the one query deadline.
    assert!(
        elapsed < Duration::from_millis(1500),
        "answered after {elapsed:?}"
    );

    // With RF=2 the slow node is not needed: complete, still by the deadline.
    let router = api(fixture.source(2), true);
    let (status, body) = fixture.runtime.block_on(fetch(
        &router,
        &format!(
            "/api/v1/query?query=count(up)&time={}&timeout=1s",
            END / 1000
        ),
    ));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body.contains("isPartial") && !body.contains("warnings"),
        "{body}"
    );
}

#[test]
fn a_late_node_is_waited_for_once_per_query() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    fixture.nodes[0].set(Fault::Slow(Duration::from_secs(30)));
    let source = fixture.source(1);
    let deadline = Instant::now() + Duration::from_secs(2);
    let read = |name: &str| {
        let started = Instant::now();
        let selected = source
            .select(&[Matcher::eq("__name__", name)], TimeRange::ALL, deadline)
            .expect("select");
        assert!(selected.partial);
        assert!(selected.warnings[0].contains("storage-0:8400 did not answer before the deadline"));
        started.elapsed()
    };
    let first = read("up");
    // The first read waits for the slow node until the node deadline, a
    // reserve before the query's.
    assert!(first >= Duration::from_millis(1200), "{first:?}");
    assert!(
        Instant::now() < deadline,
        "the reserve is left for evaluation"
    );
    let second = read("node_load1");
    assert!(
        second < first / 2,
        "waited for the late node again: {second:?}"
    );
    // Another query (another deadline) asks it again.
    let other = Instant::now() + Duration::from_millis(400);
    let started = Instant::now();
    let selected = source
        .select(&[Matcher::eq("__name__", "up")], TimeRange::ALL, other)
        .expect("select");
    assert!(selected.partial);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn export_is_complete_or_refused() {
    let fixture = Fixture::new();
    fixture.write_replicated(TENANT, &scraped_data());
    fixture.flush_some();
    let single =
        crate::export::router(fixture.reference.clone(), TENANT, crate::Metrics::default());
    let lines = |body: &str| -> BTreeSet<String> { body.lines().map(str::to_string).collect() };
    fixture.runtime.block_on(async {
        let cluster = super::export::router(
            fixture.source(2),
            Duration::from_secs(30),
            crate::Metrics::default(),
        );
        for query in [
            &[("match[]", "up")][..],
            &[("match[]", "{job=\"node\"}")],
            &[
                ("match[]", "node_load1"),
                ("match[]", "{instance=\"node-a:9100\"}"),
            ],
            &[
                ("match[]", "{__name__=~\"node_load.*\",instance!=\"x\"}"),
                ("start", "1699999800"),
                ("end", "1699999900"),
            ],
            &[("match[]", "nonexistent")],
        ] {
            let uri = format!("/api/v1/export?{}", encode_params(query));
            let (status, got) = fetch(&cluster, &uri).await;
            let (want_status, want) = fetch(&single, &uri).await;
            assert_eq!(
                (status, lines(&got)),
                (want_status, lines(&want)),
                "{query:?}"
            );
        }
        let all_uri = format!(
            "/api/v1/export?{}",
            encode_params(&[("match[]", "{job=~\".+\"}")])
        );
        let (_, all) = fetch(&cluster, &all_uri).await;
        assert!(all.lines().count() > 200, "{}", all.lines().count());

        fixture.nodes[1].set(Fault::Down);
        let (status, _) = fetch(&cluster, "/api/v1/export?match[]=up").await;
        assert_eq!(status, StatusCode::OK, "RF=2 tolerates one node");
        let unreplicated = super::export::router(
            fixture.source(1),
            Duration::from_secs(30),
            crate::Metrics::default(),
        );
        let (status, body) = fetch(&unreplicated, "/api/v1/export?match[]=up").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body.contains("raw exports are only answered complete")
                && body.contains("storage-1:8400"),
            "{body}"
        );

        // A node lost midway, with nobody else holding its series: the
        // status was sent, so the transfer breaks.
        fixture.nodes[1].set(Fault::None);
        fixture.nodes[2].set(Fault::FailsMidway(2));
        let request = Request::get(all_uri.as_str())
            .body(Body::empty())
            .expect("request");
        let response = unreplicated
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let body = to_bytes(response.into_body(), 1 << 24).await;
        let e = body.expect_err("a cut transfer");
        assert!(
            format!("{e:?}").contains("raw exports are only answered complete"),
            "{e:?}"
        );
    });
}

#[test]
fn union_of_samples() {
    let check = |a: &[(i64, f64)], b: &[(i64, f64)], want: &[(i64, f64)], stats: MergeStats| {
        let data = |s: &[(i64, f64)]| SeriesData {
            labels: labels(&[("__name__", "x")]),
            timestamps: s.iter().map(|p| p.0).collect(),
            values: s.iter().map(|p| p.1).collect(),
        };
        for (first, second) in [(a, b), (b, a)] {
            let mut merge = KeyMerge::new(2);
            for (node, samples) in [first, second].into_iter().enumerate() {
                let s = data(samples);
                let key = strata_storage::labels_key(&s.labels);
                let keyed = KeyedSeries::new(key, s.labels, s.timestamps, s.values);
                merge.feed(node, vec![keyed]).expect("in order");
                merge.end(node);
            }
            let Step::Series(out) = merge.step() else {
                panic!("one merged series");
            };
            assert_eq!(merge.step(), Step::Done);
            let got_stats = merge.stats();
            let got: Vec<(i64, u64)> = out
                .timestamps
                .iter()
                .zip(&out.values)
                .map(|(t, v)| (*t, v.to_bits()))
                .collect();
            let want: Vec<(i64, u64)> = want.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            assert_eq!(got, want, "{first:?} + {second:?}");
            assert_eq!(got_stats, stats, "{first:?} + {second:?}");
        }
    };
    let none = MergeStats::default();
    let stale = f64::from_bits(STALE_NAN_BITS);
    check(
        &[(1, 1.0), (2, 2.0)],
        &[(1, 1.0), (2, 2.0)],
        &[(1, 1.0), (2, 2.0)],
        MergeStats {
            duplicates: 2,
            conflicts: 0,
        },
    );
    check(
        &[(1, 1.0), (3, 3.0)],
        &[(2, 2.0)],
        &[(1, 1.0), (2, 2.0), (3, 3.0)],
        none,
    );
    check(
        &[(1, 1.0)],
        &[(5, 5.0), (6, 6.0)],
        &[(1, 1.0), (5, 5.0), (6, 6.0)],
        none,
    );
    check(&[(1, 1.0), (2, 2.0)], &[], &[(1, 1.0), (2, 2.0)], none);
    check(
        &[(1, 1.0), (2, 2.0), (4, 4.0)],
        &[(2, 2.0), (3, 3.0), (4, 4.0)],
        &[(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)],
        MergeStats {
            duplicates: 2,
            conflicts: 0,
        },
    );
    check(
        &[(1, 1.0), (2, 2.0)],
        &[(1, 1.0), (2, 7.0)],
        &[(1, 1.0), (2, 7.0)],
        MergeStats {
            duplicates: 2,
            conflicts: 1,
        },
    );
    check(
        &[(1, 5.0)],
        &[(1, stale), (2, 1.0)],
        &[(1, stale), (2, 1.0)],
        MergeStats {
            duplicates: 1,
            conflicts: 1,
        },
    );
    check(
        &[(1, f64::NAN)],
        &[(1, f64::NAN)],
        &[(1, f64::NAN)],
        MergeStats {
            duplicates: 1,
            conflicts: 0,
        },
    );
}

#[test]
fn sorted_unions() {
    let check = |lists: &[&[u32]], limit: usize, want: &[u32]| {
        let lists: Vec<Vec<u32>> = lists.iter().map(|l| l.to_vec()).collect();
        assert_eq!(
            merge::union_sorted(lists.clone(), limit),
            want,
            "{lists:?} limit {limit}"
        );
    };
    check(&[], 0, &[]);
    check(&[&[], &[]], 0, &[]);
    check(
        &[&[1, 3, 5], &[2, 3, 6], &[1, 5, 9]],
        0,
        &[1, 2, 3, 5, 6, 9],
    );
    check(&[&[1, 3, 5], &[2, 3, 6], &[1, 5, 9]], 4, &[1, 2, 3, 5]);
    check(&[&[1, 1, 2], &[2, 2]], 0, &[1, 2]);
    check(&[&[5, 1, 3], &[2]], 0, &[1, 2, 3, 5]);
    check(&[&[7]], 1, &[7]);
}

#[test]
fn ordered_streams_merge_as_they_come() {
    let keyed = |key: u128, name: &str, t: i64| {
        KeyedSeries::new(key, labels(&[("__name__", name)]), vec![t], vec![1.0])
    };
    let mut merge = KeyMerge::new(3);
    // Nothing goes out before every node showed its next series.
    assert_eq!(merge.step(), Step::Feed(0));
    merge
        .feed(0, vec![keyed(1, "a", 10), keyed(5, "e", 10)])
        .expect("in order");
    assert_eq!(merge.step(), Step::Feed(1));
    merge.feed(1, vec![keyed(1, "a", 20)]).expect("in order");
    assert_eq!(merge.step(), Step::Feed(2));
    // Two label sets under one key (a hash collision) stay apart, in
    // label order.
    merge
        .feed(2, vec![keyed(3, "b", 10), keyed(3, "c", 20)])
        .expect("in order");
    let Step::Series(a) = merge.step() else {
        panic!("series a");
    };
    assert_eq!(
        (a.labels[0].value.as_str(), a.timestamps),
        ("a", vec![10, 20])
    );
    // Node 1 ran dry: its next series may come before the others'.
    assert_eq!(merge.step(), Step::Feed(1));
    assert_eq!(
        merge.feed(1, vec![keyed(0, "x", 10)]),
        Err(OutOfOrder { key: 0, after: 1 }),
        "a node going back is refused"
    );
    merge.feed(1, vec![keyed(3, "c", 10)]).expect("in order");
    let mut rest = Vec::new();
    loop {
        match merge.step() {
            Step::Series(s) => rest.push((s.labels[0].value.clone(), s.timestamps)),
            Step::Feed(node) => merge.end(node),
            Step::Done => break,
        }
    }
    assert_eq!(
        rest,
        vec![
            ("b".to_string(), vec![10]),
            ("c".to_string(), vec![10, 20]),
            ("e".to_string(), vec![10]),
        ]
    );
    assert_eq!(merge.stats(), MergeStats::default());
}

#[test]
fn cardinality_of_replicated_nodes() {
    let node = |total, metrics: &[(&str, u64)], pairs: &[(&str, u64)]| Cardinality {
        total_series: total,
        series_by_metric_name: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        values_by_label_name: Vec::new(),
        series_by_label_pair: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };
    // Four series a{i=1..4}, each on two of three nodes.
    let nodes = [
        node(
            3,
            &[("a", 3)],
            &[("__name__=a", 3), ("i=1", 1), ("i=2", 1), ("i=3", 1)],
        ),
        node(
            3,
            &[("a", 3)],
            &[("__name__=a", 3), ("i=2", 1), ("i=3", 1), ("i=4", 1)],
        ),
        node(2, &[("a", 2)], &[("__name__=a", 2), ("i=1", 1), ("i=4", 1)]),
    ];
    let merged = merge::cardinality(&nodes, 2, 0);
    assert_eq!(merged.total_series, 4);
    assert_eq!(merged.series_by_metric_name, vec![("a".to_string(), 4)]);
    assert_eq!(
        merged.values_by_label_name,
        vec![("i".to_string(), 4), ("__name__".to_string(), 1)]
    );
    assert_eq!(
        merged.series_by_label_pair[0],
        ("__name__=a".to_string(), 4)
    );
    // A node missing: never below what one node saw.
    let merged = merge::cardinality(&nodes[..1], 2, 0);
    assert_eq!(merged.total_series, 3);
    // Top entries only.
    assert_eq!(
        merge::cardinality(&nodes, 2, 1).series_by_label_pair.len(),
        1
    );
}
