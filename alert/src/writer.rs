//! Where recording results and `ALERTS`/`ALERTS_FOR_STATE` go: Prometheus
//! remote write 1.0 (snappy-compressed `WriteRequest`, the layout documented
//! in `strata_insert::remotewrite::proto`) to insert or single, or storage in
//! the same process.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use strata_insert::RowSink;
use strata_insert::remotewrite::proto;
use strata_storage::{SeriesSamples, Tenant};

use crate::querier::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write to {url}: {message}")]
    Remote { url: String, message: String },
    #[error("cannot write to storage: {0}")]
    Storage(String),
}

pub trait Writer: Send + Sync {
    fn write(
        &self,
        tenant: Tenant,
        series: Vec<SeriesSamples>,
    ) -> BoxFuture<'_, Result<(), WriteError>>;
}

/// Remote write 1.0 to `url`; a `{tenant}` in it is replaced by `account:project`.
pub struct RemoteWriter {
    url: String,
    client: reqwest::Client,
}

impl RemoteWriter {
    pub fn new(url: &str, timeout: Duration) -> RemoteWriter {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        RemoteWriter {
            url: url.to_string(),
            client,
        }
    }
}

/// The snappy-compressed remote write 1.0 body of `series`.
pub fn encode(series: &[SeriesSamples]) -> Vec<u8> {
    let request = proto::WriteRequest {
        timeseries: series
            .iter()
            .map(|s| proto::TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|l| proto::Label {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|p| proto::Sample {
                        value: p.value,
                        timestamp: p.timestamp,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: Vec::new(),
    };
    let raw = request.encode_to_vec();
    // Compressing a byte slice in memory fails only past 4 GiB.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

impl Writer for RemoteWriter {
    fn write(
        &self,
        tenant: Tenant,
        series: Vec<SeriesSamples>,
    ) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            if series.is_empty() {
                return Ok(());
            }
            let url = self.url.replace(
                "{tenant}",
                &format!("{}:{}", tenant.account_id, tenant.project_id),
            );
            let failed = |message: String| WriteError::Remote {
                url: url.clone(),
                message,
            };
            let response = self
                .client
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", "snappy")
                .header("x-prometheus-remote-write-version", "0.1.0")
                .body(encode(&series))
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !response.status().is_success() {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                return Err(failed(format!("status {status}: {text:.200}")));
            }
            Ok(())
        })
    }
}

/// Writes to a sink in the same process, on the blocking pool.
pub struct SinkWriter {
    sink: Arc<dyn RowSink>,
}

impl SinkWriter {
    pub fn new(sink: Arc<dyn RowSink>) -> SinkWriter {
        SinkWriter { sink }
    }
}

impl Writer for SinkWriter {
    fn write(
        &self,
        tenant: Tenant,
        series: Vec<SeriesSamples>,
    ) -> BoxFuture<'_, Result<(), WriteError>> {
        let sink = self.sink.clone();
        Box::pin(async move {
            if series.is_empty() {
                return Ok(());
            }
            tokio::task::spawn_blocking(move || sink.write(tenant, &series))
                .await
                .map_err(|e| WriteError::Storage(e.to_string()))?
                .map(|_| ())
                .map_err(|e| WriteError::Storage(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use strata_storage::{Label, Sample};

    use super::*;

    #[test]
    fn encoded_body_decodes() {
        let series = vec![SeriesSamples {
            labels: vec![Label::new("__name__", "x"), Label::new("a", "1")],
            samples: vec![Sample {
                timestamp: 5,
                value: 2.5,
            }],
        }];
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&encode(&series))
            .expect("snappy");
        let request = proto::WriteRequest::decode(raw.as_slice()).expect("proto");
        assert_eq!(request.timeseries.len(), 1);
        assert_eq!(request.timeseries[0].labels[1].value, "1");
        assert_eq!(request.timeseries[0].samples[0].timestamp, 5);
    }
}
