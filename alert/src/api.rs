//! HTTP API: `/api/v1/rules`, `/api/v1/alerts`.
