//! Query: PromQL engine, Prometheus HTTP API, and raw export.
