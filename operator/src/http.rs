//! `/health`, `/ready` and `/metrics` of the operator (port 8080 by
//! default). Served from start to stop, leader or not: a follower waiting
//! for the Lease is a ready standby.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let mut out = String::new();
    match encode(&mut out, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ControllerLabels, Metrics};

    #[tokio::test]
    async fn serves_health_ready_and_metrics() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics
            .reconciles
            .get_or_create(&ControllerLabels {
                controller: "cluster",
            })
            .inc();
        metrics
            .reconcile_errors
            .get_or_create(&crate::metrics::ErrorLabels {
                controller: "cluster",
                reason: "conflict",
            })
            .inc();
        metrics
            .reconcile_duration
            .get_or_create(&ControllerLabels { controller: "rule" })
            .observe(0.02);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(axum::serve(listener, router(Arc::new(registry))).into_future());
        let get = |path: &'static str| async move {
            let response = reqwest::get(format!("http://{addr}{path}"))
                .await
                .expect("request");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        };
        assert_eq!(get("/health").await, (200, "ok".to_string()));
        assert_eq!(get("/ready").await, (200, "ok".to_string()));
        let (status, body) = get("/metrics").await;
        assert_eq!(status, 200);
        for want in [
            "strata_operator_reconciles_total{controller=\"cluster\"} 1",
            "strata_operator_reconcile_errors_total{controller=\"cluster\",reason=\"conflict\"} 1",
            "strata_operator_reconcile_duration_seconds_count{controller=\"rule\"} 1",
            "strata_operator_leader 0",
        ] {
            assert!(body.contains(want), "{want} missing from {body}");
        }
        server.abort();
    }
}
