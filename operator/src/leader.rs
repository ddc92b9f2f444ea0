//! Leader election on a `coordination.k8s.io` Lease, so that of several
//! operator replicas exactly one reconciles. The holder renews the Lease
//! every renew interval; another replica takes it once it has not been
//! renewed for its duration. Every write is a compare-and-swap on the
//! Lease's `resourceVersion`, so two replicas cannot both win. On shutdown
//! the holder releases the Lease so that a successor need not wait.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::client::Kube;
use crate::error::{Error, Result};

/// What a replica does with the Lease as it finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Take,
    /// Someone else holds it and it is fresh.
    Wait,
}

/// The decision for `identity` at `now`, given the Lease as read.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Take;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let renewed = spec
        .renew_time
        .map(|t| t.0)
        .or(spec.acquire_time.map(|t| t.0));
    match renewed {
        Some(t) if t + duration > now => Decision::Wait,
        _ => Decision::Take,
    }
}

/// One replica's handle on the Lease.
#[derive(Clone)]
pub struct Elector {
    kube: Kube,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
    renew: Duration,
}

impl Elector {
    pub fn new(
        kube: Kube,
        namespace: String,
        name: String,
        identity: String,
        duration: Duration,
        renew: Duration,
    ) -> Elector {
        Elector {
            kube,
            namespace,
            name,
            identity,
            duration,
            renew,
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// One attempt: whether this replica holds the Lease afterwards.
    pub async fn try_hold(&self) -> Result<bool> {
        let now = Timestamp::now();
        let current = self.kube.get::<Lease>(&self.namespace, &self.name).await?;
        let decision = decide(current.as_ref(), &self.identity, now);
        let seconds = i32::try_from(self.duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1);
        let write = match (decision, current) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.kube.create(&self.namespace, &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::Take {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                self.kube.replace(&self.namespace, &lease).await
            }
        };
        match write {
            Ok(_) => Ok(true),
            // Another replica wrote first.
            Err(Error::Kube {
                source: kube::Error::Api(status),
                ..
            }) if status.is_conflict() || status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Returns once this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease_name(), identity = %self.identity, "Leading.");
                    return;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(lease = %self.lease_name(), %error, "Cannot take the lease.")
                }
            }
            tokio::time::sleep(self.renew).await;
        }
    }

    /// Renews the Lease until it is lost (another holder, or no successful
    /// renewal for a lease duration); returns the loss as an error.
    pub async fn hold(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew).await;
            match self.try_hold().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return Error::LeadershipLost(self.lease_name()),
                Err(error) => {
                    tracing::warn!(lease = %self.lease_name(), %error, "Cannot renew the lease.");
                    // Stop before another replica may take over.
                    if last_renewal.elapsed() + self.renew >= self.duration {
                        return Error::LeadershipLost(self.lease_name());
                    }
                }
            }
        }
    }

    /// Gives the Lease up if this replica holds it.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.kube.get::<Lease>(&self.namespace, &self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.kube.replace(&self.namespace, &lease).await?;
        tracing::info!(lease = %self.lease_name(), "Released the lease.");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Option<i64>, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(seconds),
                renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).expect("time"))),
                ..LeaseSpec::default()
            }),
        }
    }

    fn check(lease: Option<Lease>, now: i64, want: Decision) {
        let now = Timestamp::from_second(now).expect("time");
        assert_eq!(
            decide(lease.as_ref(), "me", now),
            want,
            "{lease:?} at {now}"
        );
    }

    #[test]
    fn decisions() {
        check(None, 100, Decision::Create);
        check(Some(lease(Some("me"), Some(10), 15)), 100, Decision::Renew);
        check(
            Some(lease(Some("other"), Some(90), 15)),
            100,
            Decision::Wait,
        );
        check(
            Some(lease(Some("other"), Some(85), 15)),
            100,
            Decision::Take,
        );
        check(
            Some(lease(Some("other"), Some(86), 15)),
            100,
            Decision::Wait,
        );
        check(Some(lease(None, Some(99), 15)), 100, Decision::Take);
        check(Some(lease(Some(""), Some(99), 15)), 100, Decision::Take);
        check(Some(lease(Some("other"), None, 15)), 100, Decision::Take);
    }
}
