//! A fault injector for tests: a [`Node`] around a real [`LocalNode`] (a
//! real storage engine in this process) that can be switched down, slow or
//! failing at run time. Reads pass through to the engine when healthy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_storage::cluster::{
    BoxFuture, KeyedBatches, LocalNode, Node, NodeError, NodeStatus, SeriesBatches, SeriesQuery,
};
use strata_storage::{AddOutcome, Cardinality, Label, Matcher, SeriesSamples, Tenant, TimeRange};

/// How the node behaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answers from the engine.
    None,
    /// Cannot be reached: every call fails at once with `Unavailable`.
    Down,
    /// Answers from the engine after this delay (or misses the deadline).
    Slow(Duration),
    /// Answers with an error of its own (`Remote`).
    Failing(String),
    /// Ordered searches stream this many series, then fail (`Remote`):
    /// a node lost midway. Other calls answer.
    FailsMidway(usize),
}

/// A [`LocalNode`] with a switchable [`Fault`].
#[derive(Clone)]
pub struct FaultyNode {
    inner: LocalNode,
    fault: Arc<Mutex<Fault>>,
}

impl FaultyNode {
    pub fn new(inner: LocalNode) -> FaultyNode {
        FaultyNode {
            inner,
            fault: Arc::new(Mutex::new(Fault::None)),
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    pub fn local(&self) -> &LocalNode {
        &self.inner
    }

    /// Applies the fault before a call: an error, a wait, or nothing.
    async fn gate(&self, deadline: Instant) -> Result<(), NodeError> {
        let fault = self.fault.lock().expect("fault lock").clone();
        let addr = self.inner.addr().to_string();
        match fault {
            Fault::None => Ok(()),
            Fault::Down => Err(NodeError::Unavailable {
                addr,
                detail: "connection refused (fault injected)".to_string(),
            }),
            Fault::Failing(message) => Err(NodeError::Remote { addr, message }),
            Fault::FailsMidway(_) => Ok(()),
            Fault::Slow(delay) => {
                let wake = Instant::now() + delay;
                if wake > deadline {
                    tokio::time::sleep_until(deadline.into()).await;
                    return Err(NodeError::DeadlineExceeded { addr });
                }
                tokio::time::sleep_until(wake.into()).await;
                Ok(())
            }
        }
    }
}

impl Node for FaultyNode {
    fn addr(&self) -> &str {
        self.inner.addr()
    }

    fn write(
        &self,
        tenant: Tenant,
        rows: Vec<SeriesSamples>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<AddOutcome, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.write(tenant, rows, deadline).await
        })
    }

    fn search(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SeriesBatches, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.search(query, deadline).await
        })
    }

    fn search_ordered(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<KeyedBatches, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            let mut batches = self.inner.search_ordered(query, deadline).await?;
            let Fault::FailsMidway(mut left) = self.fault.lock().expect("fault lock").clone()
            else {
                return Ok(batches);
            };
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let addr = self.inner.addr().to_string();
            tokio::spawn(async move {
                while left > 0
                    && let Some(Ok(mut batch)) = batches.recv().await
                {
                    batch.truncate(left);
                    left -= batch.len();
                    if tx.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
                let message = "lost midway (fault injected)".to_string();
                let _ = tx.send(Err(NodeError::Remote { addr, message })).await;
            });
            Ok(rx)
        })
    }

    fn series(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Vec<Label>>, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.series(query, deadline).await
        })
    }

    fn label_names(
        &self,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.label_names(query, deadline).await
        })
    }

    fn label_values(
        &self,
        name: String,
        query: SeriesQuery,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<String>, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.label_values(name, query, deadline).await
        })
    }

    fn cardinality(
        &self,
        tenant: Tenant,
        range: TimeRange,
        limit: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Cardinality, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.cardinality(tenant, range, limit, deadline).await
        })
    }

    fn delete_series(
        &self,
        tenant: Tenant,
        matchers: Vec<Matcher>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<u64, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.delete_series(tenant, matchers, deadline).await
        })
    }

    fn tenants(
        &self,
        range: TimeRange,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Vec<Tenant>, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.tenants(range, deadline).await
        })
    }

    fn status(&self, deadline: Instant) -> BoxFuture<'_, Result<NodeStatus, NodeError>> {
        Box::pin(async move {
            self.gate(deadline).await?;
            self.inner.status(deadline).await
        })
    }
}
