//! Leader election over a `coordination.k8s.io` Lease, so that with several operator
//! replicas only one reconciles. The decision is pure; [`LeaseLock`] applies it with
//! optimistic concurrency (a replace fails if someone else wrote the Lease first).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::{Error, Result};

/// What to do about the Lease now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Its holder let it expire (or nobody holds it): take it over.
    Take,
    /// Someone else holds it.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// Decides from the Lease as read (`None` when missing) at `now`.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: jiff::Timestamp) -> LeaseAction {
    let Some(spec) = lease else {
        return LeaseAction::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return LeaseAction::Renew;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match renewed {
        Some(at) if !holder.is_empty() && now.as_second() < at.as_second() + duration => {
            LeaseAction::Wait { holder }
        }
        _ => LeaseAction::Take,
    }
}

/// One Lease and our identity.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    /// A lock on Lease `name` in `namespace` held as `identity` for `duration` per renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// Tries to become or stay the leader; `true` when we hold the Lease afterwards.
    pub async fn try_acquire(&self) -> Result<bool> {
        let now = jiff::Timestamp::now();
        let current = self.api.get_opt(&self.name).await.map_err(Error::kube(
            "get",
            "Lease",
            self.name.clone(),
        ))?;
        let action = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let duration = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let spec = |acquired: Option<MicroTime>, transitions: i32| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let result = match (action, current) {
            (LeaseAction::Wait { .. }, _) => return Ok(false),
            (LeaseAction::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (action, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if action == LeaseAction::Renew {
                    spec(old.acquire_time, transitions)
                } else {
                    spec(None, transitions.saturating_add(1))
                });
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(_) => Ok(true),
            // Someone else created or wrote it first: not ours this round.
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Ok(false)
            }
            Err(err) => Err(Error::kube("write", "Lease", self.name.clone())(err)),
        }
    }
}

impl LeaseLock {
    /// Gives the Lease up if we hold it, so another replica takes over at its next try
    /// instead of waiting for the Lease to run out. The resourceVersion makes this fail
    /// rather than clear a Lease someone else took meanwhile.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(Error::kube(
            "get",
            "Lease",
            self.name.clone(),
        ))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(Error::kube("release", "Lease", self.name.clone()))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn lease(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn leases_are_created_renewed_waited_for_and_taken_over() {
        let now = at("2026-11-28T02:00:00Z");
        assert_eq!(decide(None, "a", now), LeaseAction::Create);
        assert_eq!(
            decide(Some(&lease("a", "2026-11-28T01:00:00Z")), "a", now),
            LeaseAction::Renew
        );
        assert_eq!(
            decide(Some(&lease("b", "2026-11-28T01:59:50Z")), "a", now),
            LeaseAction::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&lease("b", "2026-11-28T01:59:40Z")), "a", now),
            LeaseAction::Take
        );
        assert_eq!(
            decide(Some(&lease("", "2026-11-28T01:59:59Z")), "a", now),
            LeaseAction::Take
        );
        // A released Lease (what `release` leaves) is taken at once.
        let released = LeaseSpec {
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert_eq!(decide(Some(&released), "a", now), LeaseAction::Take);
    }
}
