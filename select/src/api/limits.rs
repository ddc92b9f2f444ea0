//! Admission of queries: at most `--query.max-concurrent-queries` evaluate
//! at once, at most `--query.max-queued-queries` wait for a slot, and none
//! waits longer than `--query.max-queue-duration` (or its own timeout).
//! A refused query is answered at once, so a flood of dashboards degrades
//! into fast 503s instead of a pile of stalled connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, flag};

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AdmitError {
    #[error(
        "too many queries: {running} running and {queued} queued; \
         raise {} or {} to allow more",
        flag::MAX_CONCURRENT_QUERIES,
        flag::MAX_QUEUED_QUERIES
    )]
    QueueFull { running: usize, queued: usize },
    #[error(
        "query waited {waited:?} for one of {running} query slots; \
         the longest wait is {} {limit:?}",
        flag::MAX_QUEUE_DURATION
    )]
    QueueTimeout {
        waited: Duration,
        running: usize,
        limit: Duration,
    },
    /// The query's own timeout ran out in the queue.
    #[error("query timed out in query queue")]
    Timeout,
}

impl AdmitError {
    /// The `reason` label of the rejected-queries counter.
    pub fn reason(&self) -> &'static str {
        match self {
            AdmitError::QueueFull { .. } => "queue_full",
            AdmitError::QueueTimeout { .. } => "queue_timeout",
            AdmitError::Timeout => "timeout",
        }
    }
}

/// The slots and the queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct Gate {
    slots: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    running: usize,
    max_queued: usize,
    max_wait: Duration,
}

/// Decrements the queue length however the wait ends (including the
/// client going away, which drops the waiting future).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    pub fn new(config: &Config) -> Gate {
        Gate {
            slots: Arc::new(Semaphore::new(config.max_concurrent_queries)),
            queued: Arc::new(AtomicUsize::new(0)),
            running: config.max_concurrent_queries,
            max_queued: config.max_queued_queries,
            max_wait: config.max_queue_duration,
        }
    }

    /// Waits for a slot, at most the queue limit and `timeout`. The slot is
    /// held until the permit is dropped.
    pub async fn admit(&self, timeout: Duration) -> Result<OwnedSemaphorePermit, AdmitError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(&self.queued);
        if queued >= self.max_queued {
            return Err(AdmitError::QueueFull {
                running: self.running,
                queued,
            });
        }
        let wait = self.max_wait.min(timeout);
        let started = std::time::Instant::now();
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as a full queue.
            Ok(Err(_)) => Err(AdmitError::QueueFull {
                running: self.running,
                queued,
            }),
            Err(_) if timeout <= self.max_wait => Err(AdmitError::Timeout),
            Err(_) => Err(AdmitError::QueueTimeout {
                waited: started.elapsed(),
                running: self.running,
                limit: self.max_wait,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(running: usize, queued: usize, wait_ms: u64) -> Gate {
        Gate::new(&Config {
            max_concurrent_queries: running,
            max_queued_queries: queued,
            max_queue_duration: Duration::from_millis(wait_ms),
            ..Config::default()
        })
    }

    #[tokio::test]
    async fn full_queue_is_refused_at_once() {
        let gate = gate(1, 0, 10_000);
        let held = gate.admit(Duration::from_secs(5)).await.expect("first");
        let err = gate
            .admit(Duration::from_secs(5))
            .await
            .expect_err("second");
        assert_eq!(err.reason(), "queue_full");
        assert!(
            err.to_string().contains("--query.max-queued-queries"),
            "{err}"
        );
        drop(held);
        let _permit = gate
            .admit(Duration::from_secs(5))
            .await
            .expect("after release");
    }

    #[tokio::test]
    async fn waits_end_at_the_queue_limit_or_the_timeout() {
        let gate = gate(1, 5, 50);
        let held = gate.admit(Duration::from_secs(5)).await.expect("first");
        let err = gate
            .admit(Duration::from_secs(5))
            .await
            .expect_err("queued");
        assert_eq!(err.reason(), "queue_timeout");
        assert!(
            err.to_string().contains("--query.max-queue-duration"),
            "{err}"
        );
        let err = gate
            .admit(Duration::from_millis(10))
            .await
            .expect_err("timeout");
        assert_eq!(err, AdmitError::Timeout);
        assert_eq!(gate.queued.load(Ordering::Relaxed), 0);

        // A waiter gets the slot as soon as it is released.
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit(Duration::from_secs(5)).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        assert!(waiter.await.expect("join"));
    }
}
