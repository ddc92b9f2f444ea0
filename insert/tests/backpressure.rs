//! Backpressure: when the engine is slower than the senders, requests over
//! `--insert.max-concurrent-requests` wait at most
//! `--insert.max-queue-duration`, are answered 503 with `Retry-After`, and
//! their bodies are never read, so memory holds at most the admitted
//! requests' bodies however many senders push.
//!
//! The engine is a sink that blocks until the test releases it: a real
//! engine cannot be made slow on demand.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use futures_util::StreamExt;
use prometheus_client::registry::Registry;
use prost::Message;
use strata_insert::config::Config;
use strata_insert::http::router;
use strata_insert::ingest::{RowSink, SinkError};
use strata_insert::metrics::Metrics;
use strata_insert::remotewrite::proto;
use strata_storage::{AddOutcome, SeriesSamples, Tenant};
use tower::ServiceExt;

/// A sink that holds every write until released, counting writers.
#[derive(Default)]
struct SlowSink {
    released: Mutex<bool>,
    wake: Condvar,
    writing: AtomicUsize,
    most_writing: AtomicUsize,
    rows: AtomicU64,
}

impl SlowSink {
    fn release(&self) {
        *self.released.lock().expect("lock") = true;
        self.wake.notify_all();
    }
}

impl RowSink for SlowSink {
    fn write(&self, _: Tenant, batch: &[SeriesSamples]) -> Result<AddOutcome, SinkError> {
        let now = self.writing.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_writing.fetch_max(now, Ordering::SeqCst);
        let mut released = self.released.lock().expect("lock");
        while !*released {
            released = self.wake.wait(released).expect("lock");
        }
        drop(released);
        self.writing.fetch_sub(1, Ordering::SeqCst);
        let rows: u64 = batch.iter().map(|s| s.samples.len() as u64).sum();
        self.rows.fetch_add(rows, Ordering::SeqCst);
        Ok(AddOutcome {
            accepted: rows,
            ..AddOutcome::default()
        })
    }
}

/// A snappy remote write 1.0 body of `series` series of one sample.
fn body(series: usize) -> Vec<u8> {
    let request = proto::WriteRequest {
        timeseries: (0..series)
            .map(|i| proto::TimeSeries {
                labels: vec![
                    proto::Label {
                        name: "__name__".into(),
                        value: "m".into(),
                    },
                    proto::Label {
                        name: "i".into(),
                        value: i.to_string(),
                    },
                ],
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp: 1,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy")
}

/// A request whose body counts the bytes the server pulls from it.
fn request(body: &[u8], pulled: Arc<AtomicU64>) -> Request<Body> {
    let chunks: Vec<Bytes> = body.chunks(4096).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::iter(chunks).map(move |chunk| {
        pulled.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Ok::<_, std::convert::Infallible>(chunk)
    });
    Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .body(Body::from_stream(stream))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_is_refused_unread_while_the_engine_is_slow() {
    const SENDERS: usize = 32;
    let config = Config {
        max_concurrent_requests: 1,
        max_queue_duration: Duration::from_millis(300),
        ..Config::default()
    };
    let sink = Arc::new(SlowSink::default());
    let metrics = Metrics::register(&mut Registry::default());
    let app = router(sink.clone(), Tenant::default(), &config, metrics);
    let body = body(20_000);

    // The first request takes the only slot and blocks in the engine.
    let first_pulled = Arc::new(AtomicU64::new(0));
    let first = tokio::spawn(app.clone().oneshot(request(&body, first_pulled.clone())));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sink.writing.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "first write never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let pulled = Arc::new(AtomicU64::new(0));
    let overflow: Vec<_> = (0..SENDERS)
        .map(|_| tokio::spawn(app.clone().oneshot(request(&body, pulled.clone()))))
        .collect();
    for response in overflow {
        let response = response.await.expect("join").expect("response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            response.headers().contains_key(header::RETRY_AFTER),
            "503 without Retry-After"
        );
    }
    assert_eq!(
        pulled.load(Ordering::SeqCst),
        0,
        "bodies of refused requests were read into memory"
    );
    assert_eq!(sink.most_writing.load(Ordering::SeqCst), 1);

    // Once the engine catches up, the admitted request completes in full.
    sink.release();
    let response = first.await.expect("join").expect("response");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(first_pulled.load(Ordering::SeqCst), body.len() as u64);
    assert_eq!(sink.rows.load(Ordering::SeqCst), 20_000);
}
