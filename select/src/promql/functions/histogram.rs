//! `histogram_quantile` over classic (`le`) buckets, Prometheus 2.53 rules.
