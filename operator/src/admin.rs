//! The client side of the gateway admin API: plan health and repair queues.
//!
//! The operator calls one endpoint per plan, on the gateway's admin Service
//! (`http://<gateway>-admin.<namespace>.svc:9001`):
//!
//! `GET /admin/v1/plans/{plan}` answers `200` with JSON (`404` when the gateway does not know
//! the plan):
//!
//! ```json
//! {
//!   "plan": "family-photos",
//!   "objects": 1200,
//!   "logicalBytes": 52428800000,
//!   "storedBytes": 78643200000,
//!   "shards": {"healthy": 7190, "degraded": 8, "atRisk": 2, "lost": 0},
//!   "repair": {"due": 3, "atRisk": 1, "waiting": 4}
//! }
//! ```
//!
//! `shards` is [`sublet_crds::ShardCounts`]. `repair.due` counts objects below the schedule's
//! `minHealthyShards` whose missing shards have been gone longer than `gracePeriod`;
//! `repair.atRisk` counts those of them left with only `dataShards` healthy shards (one
//! more loss and they are gone); `repair.waiting` counts objects below `minHealthyShards`
//! still inside the grace period. The gateway applies the grace period because it knows
//! when each provider was last seen.
//!
//! `GET /admin/v1/pools/{pool}` answers `200` with what the gateway stores on a pool's
//! providers, `{"pool": "home-lab", "shards": 120, "bytes": 2013265920}`, or `404` when it
//! stores nothing there. For a pool its config marks `drain: true` the answer adds
//! `"drain": {"state": "draining" | "drained" | "blocked", "blocked": ["plan photos needs
//! ..."], "plans": {"photos": 120}}`: [`PoolDrain`]. A deleted pool is held by its finalizer
//! until every gateway of the namespace reports 0 shards.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use sublet_crds::ShardCounts;

use crate::{Error, Result};

/// A plan's health as the gateway sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanHealth {
    /// The plan's name.
    pub plan: String,
    /// Objects stored with the plan.
    #[serde(default)]
    pub objects: u64,
    /// Bytes as written by clients.
    #[serde(default)]
    pub logical_bytes: u64,
    /// Bytes on providers, redundancy included.
    #[serde(default)]
    pub stored_bytes: u64,
    /// Shards by health.
    #[serde(default)]
    pub shards: ShardCounts,
    /// The plan's repair queue.
    #[serde(default)]
    pub repair: RepairQueue,
}

/// A plan's repair queue in numbers of objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairQueue {
    /// Below minHealthyShards past the grace period: due for repair.
    #[serde(default)]
    pub due: u64,
    /// Of `due`, objects with only dataShards healthy shards left.
    #[serde(default)]
    pub at_risk: u64,
    /// Below minHealthyShards but still inside the grace period.
    #[serde(default)]
    pub waiting: u64,
}

/// What a gateway stores on one pool's providers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    /// The pool's name.
    pub pool: String,
    /// Shards on the pool's providers.
    #[serde(default)]
    pub shards: u64,
    /// Bytes of those shards.
    #[serde(default)]
    pub bytes: u64,
    /// The drain's progress, when the gateway's config marks the pool `drain: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<PoolDrain>,
}

/// A gateway's view of a draining pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolDrain {
    /// `draining`, `drained` or `blocked`.
    pub state: String,
    /// Why shards cannot move, one line per plan that keeps shards there.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// Shards left on the pool by plan.
    #[serde(default)]
    pub plans: std::collections::BTreeMap<String, u64>,
}

/// Reads plan health and pool usage from a gateway's admin API.
#[async_trait]
pub trait AdminApi: Send + Sync {
    /// Health of `plan` from the gateway whose admin API is at `admin_url`.
    async fn plan_health(&self, admin_url: &str, plan: &str) -> Result<PlanHealth>;

    /// What the gateway at `admin_url` stores on `pool`.
    async fn pool_usage(&self, admin_url: &str, pool: &str) -> Result<PoolUsage>;
}

/// The admin API over plain HTTP inside the cluster.
pub struct HttpAdmin {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Default for HttpAdmin {
    fn default() -> Self {
        HttpAdmin {
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl HttpAdmin {
    /// GETs `url` and parses the JSON answer; `None` on 404.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: String) -> Result<Option<T>> {
        let fail = |message: String| Error::Admin {
            url: url.clone(),
            message,
        };
        let uri: http::Uri = url.parse().map_err(|e| fail(format!("bad URL: {e}")))?;
        let response = tokio::time::timeout(self.timeout, self.client.get(uri))
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| fail("body not received in time".into()))?
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        if status == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(fail(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| fail(format!("unexpected JSON: {e}")))
    }
}

#[async_trait]
impl AdminApi for HttpAdmin {
    async fn plan_health(&self, admin_url: &str, plan: &str) -> Result<PlanHealth> {
        let url = format!("{}/admin/v1/plans/{plan}", admin_url.trim_end_matches('/'));
        self.get_json(url.clone())
            .await?
            .ok_or_else(|| Error::Admin {
                url,
                message: "the gateway does not know the plan yet".into(),
            })
    }

    async fn pool_usage(&self, admin_url: &str, pool: &str) -> Result<PoolUsage> {
        let url = format!("{}/admin/v1/pools/{pool}", admin_url.trim_end_matches('/'));
        Ok(self.get_json(url).await?.unwrap_or_else(|| PoolUsage {
            pool: pool.to_owned(),
            ..PoolUsage::default()
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn documented_shape_parses() {
        let json = r#"{"plan": "family-photos", "objects": 1200, "logicalBytes": 52428800000,
            "storedBytes": 78643200000, "shards": {"healthy": 7190, "degraded": 8, "atRisk": 2, "lost": 0},
            "repair": {"due": 3, "atRisk": 1, "waiting": 4}}"#;
        let health: PlanHealth = serde_json::from_str(json).unwrap();
        assert_eq!(
            health.repair,
            RepairQueue {
                due: 3,
                at_risk: 1,
                waiting: 4
            }
        );
        assert_eq!(health.shards.at_risk, 2);
        assert_eq!(health.stored_bytes, 78_643_200_000);
    }

    #[test]
    fn drain_status_parses() {
        let json = r#"{"pool": "friends", "shards": 12, "bytes": 4096,
            "drain": {"state": "blocked", "blocked": ["plan photos needs 6 shards"], "plans": {"photos": 12}}}"#;
        let usage: PoolUsage = serde_json::from_str(json).unwrap();
        let drain = usage.drain.unwrap();
        assert_eq!(drain.state, "blocked");
        assert_eq!(drain.blocked, ["plan photos needs 6 shards"]);
        assert_eq!(drain.plans["photos"], 12);
        let plain: PoolUsage =
            serde_json::from_str(r#"{"pool": "home", "shards": 0, "bytes": 0}"#).unwrap();
        assert_eq!(plain.drain, None);
    }

    #[tokio::test]
    async fn unreachable_gateway_names_the_url() {
        let err = HttpAdmin::default()
            .plan_health("http://127.0.0.1:1", "photos")
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("gateway admin API http://127.0.0.1:1/admin/v1/plans/photos: "),
            "{err}"
        );
    }
}
