//! Leader election through a `coordination.k8s.io` Lease, so that several replicas of the
//! operator are safe: only the holder reconciles; a replica that loses the lease exits
//! and is restarted as a follower.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

/// How long a lease is valid without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and a follower retries.
const RETRY: Duration = Duration::from_secs(3);

/// One replica's view of the lease.
#[derive(Clone)]
pub struct LeaderElection {
    leases: Api<Lease>,
    name: String,
    identity: String,
}

impl std::fmt::Debug for LeaderElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElection").field("name", &self.name).field("identity", &self.identity).finish()
    }
}

/// What happened to an attempt to hold the lease.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Held,
    HeldByOther(String),
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElection {
            leases: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    /// Wait until this replica holds the lease.
    pub async fn acquire(&self) {
        let mut reported = None;
        loop {
            match self.try_hold().await {
                Ok(Attempt::Held) => {
                    tracing::info!(identity = %self.identity, "became the leader");
                    return;
                }
                Ok(Attempt::HeldByOther(holder)) => {
                    if reported.as_ref() != Some(&holder) {
                        tracing::info!(%holder, "another replica leads; waiting");
                        reported = Some(holder);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot read or take the lease"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Renew the lease until that fails for longer than it stays valid; returns then.
    pub async fn keep(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY).await;
            match self.try_hold().await {
                Ok(Attempt::Held) => last_renewal = tokio::time::Instant::now(),
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::error!(%holder, "lost the lease");
                    return;
                }
                Err(error) => tracing::warn!(%error, "cannot renew the lease"),
            }
            if last_renewal.elapsed() >= LEASE_DURATION {
                tracing::error!("could not renew the lease in time");
                return;
            }
        }
    }

    /// Create, renew or take over an expired lease, with optimistic concurrency.
    async fn try_hold(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let existing = self.leases.get_opt(&self.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldByOther("unknown".into())),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
        let valid_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
        let expired = renewed + valid_for < now;
        if holder != self.identity && !expired {
            return Ok(Attempt::HeldByOther(holder));
        }
        let (acquired, transitions) = if holder == self.identity {
            (spec.acquire_time.map(|t| t.0).unwrap_or(now), spec.lease_transitions.unwrap_or(0))
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // The resourceVersion in `lease` makes a concurrent change fail with a conflict.
        match self.leases.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldByOther(holder)),
            Err(error) => Err(error),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}
