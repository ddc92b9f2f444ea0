//! Self-metrics of both ends of the RPC: `strata_rpc_server_*` in the
//! storage node, `strata_rpc_client_*` in insert and select (one
//! [`ClientMetrics`] shared by the clients of every node).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodOutcome {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeMethod {
    node: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeReason {
    node: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms .. 16 s.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The storage node's side.
#[derive(Clone, Debug)]
pub struct ServerMetrics {
    calls: Family<MethodOutcome, Counter>,
    duration: Histograms<MethodLabel>,
    pub(super) in_flight: Gauge,
    pub(super) connections: Gauge,
    refused: Family<ReasonLabel, Counter>,
    pub(super) received_bytes: Counter,
    pub(super) sent_bytes: Counter,
}

impl ServerMetrics {
    pub fn register(registry: &mut Registry) -> ServerMetrics {
        let m = ServerMetrics {
            calls: Family::default(),
            duration: Histograms::new_with_constructor(call_histogram),
            in_flight: Gauge::default(),
            connections: Gauge::default(),
            refused: Family::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("strata_rpc_server");
        r.register(
            "calls",
            "Calls served, by method and outcome (ok or the error kind)",
            m.calls.clone(),
        );
        r.register_with_unit(
            "call_duration",
            "Time from reading a call to sending its last frame, by method",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register(
            "calls_in_flight",
            "Calls being served now",
            m.in_flight.clone(),
        );
        r.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register(
            "refused_connections",
            "Connections closed at the handshake or for a protocol error, by reason",
            m.refused.clone(),
        );
        r.register_with_unit(
            "received",
            "Frame bytes read from clients, as on the wire",
            Unit::Bytes,
            m.received_bytes.clone(),
        );
        r.register_with_unit(
            "sent",
            "Frame bytes written to clients, as on the wire",
            Unit::Bytes,
            m.sent_bytes.clone(),
        );
        m
    }

    /// Metrics that go nowhere, for servers nobody scrapes (tests, benches).
    pub fn unregistered() -> ServerMetrics {
        ServerMetrics::register(&mut Registry::default())
    }

    pub(super) fn call(&self, method: &'static str, outcome: &'static str, seconds: f64) {
        self.calls
            .get_or_create(&MethodOutcome { method, outcome })
            .inc();
        self.duration
            .get_or_create(&MethodLabel { method })
            .observe(seconds);
    }

    pub(super) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// The caller's side, by node address.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    duration: Histograms<NodeMethod>,
    errors: Family<NodeReason, Counter>,
    connections: Family<NodeLabel, Gauge>,
}

impl ClientMetrics {
    pub fn register(registry: &mut Registry) -> ClientMetrics {
        let m = ClientMetrics {
            duration: Histograms::new_with_constructor(call_histogram),
            errors: Family::default(),
            connections: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("strata_rpc_client");
        r.register_with_unit(
            "call_duration",
            "Time of calls to storage nodes, failed ones included, by node and method",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register(
            "errors",
            "Failed calls to storage nodes, by node and reason",
            m.errors.clone(),
        );
        r.register(
            "connections",
            "Open connections to storage nodes, by node",
            m.connections.clone(),
        );
        m
    }

    /// Metrics that go nowhere, for clients nobody scrapes (tests, tools).
    pub fn unregistered() -> ClientMetrics {
        ClientMetrics::register(&mut Registry::default())
    }

    pub(super) fn call(&self, node: &str, method: &'static str, seconds: f64) {
        self.duration
            .get_or_create(&NodeMethod {
                node: node.to_string(),
                method,
            })
            .observe(seconds);
    }

    pub(super) fn error(&self, node: &str, reason: &'static str) {
        self.errors
            .get_or_create(&NodeReason {
                node: node.to_string(),
                reason,
            })
            .inc();
    }

    pub(super) fn connections(&self, node: &str) -> Gauge {
        self.connections
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .clone()
    }
}
