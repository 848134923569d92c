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
//!
//! For BucketClaims the operator also calls, with the gateway's admin token (its Secret
//! `<gateway>-admin`): `PUT /admin/v1/users/{id}`, `POST /admin/v1/buckets`
//! `{name, owner, defaultPlan}` (409 when another user owns the bucket), `POST
//! /admin/v1/keys` with the key id and secret the operator chose (200 when it exists as
//! asked, 409 when it exists with another secret), and on deletion `DELETE
//! /admin/v1/buckets/{name}?owner=ID` (409 while not empty), `DELETE /admin/v1/keys/{id}`,
//! `DELETE /admin/v1/users/{id}` (409 while it owns a bucket). See docs/users.md.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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

/// A gateway's admin API and the token its changes want.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAccess {
    /// e.g. `http://s3-admin.storage.svc:9001`.
    pub url: String,
    /// The bearer token from the gateway's admin token Secret.
    pub token: String,
}

/// The user a claim's bucket belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimUser {
    /// The user id, e.g. `bc-1a2b...`.
    #[serde(skip)]
    pub id: String,
    /// Shown in `sublet user list`: the claim's namespace and name.
    pub display_name: String,
    /// The claim's quota; `None` is sent as `null`, which lifts a quota set before (a claim
    /// whose `quota` was removed).
    pub max_bytes: Option<u64>,
    /// The claim's quota; `None` is sent as `null`, as `max_bytes`.
    pub max_objects: Option<u64>,
}

/// What the gateway said to a bucket for a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketAnswer {
    /// Created now, or the user's already.
    Bound,
    /// Refused: `reason` (`BucketTaken`, `UnknownPlan`, `Refused`) and the gateway's words.
    Refused {
        /// A CamelCase word for the condition.
        reason: &'static str,
        /// What the gateway said.
        message: String,
    },
}

/// What the gateway said to a key with a given id and secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAnswer {
    /// The key exists with that user, grants and secret.
    Ready,
    /// A key of that id exists otherwise (another secret): delete it and ask again.
    Differs,
}

/// What the gateway said to deleting a user's bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketRemoval {
    /// Deleted, or there was none.
    Gone,
    /// It still holds objects or uploads: the gateway's words.
    NotEmpty(String),
    /// It belongs to another user, and was left alone.
    NotOwned(String),
}

/// Reads plan health and pool usage from a gateway's admin API, and makes the users, buckets
/// and keys of BucketClaims.
#[async_trait]
pub trait AdminApi: Send + Sync {
    /// Health of `plan` from the gateway whose admin API is at `admin_url`.
    async fn plan_health(&self, admin_url: &str, plan: &str) -> Result<PlanHealth>;

    /// What the gateway at `admin_url` stores on `pool`.
    async fn pool_usage(&self, admin_url: &str, pool: &str) -> Result<PoolUsage>;

    /// Creates `user`, or sets its display name and quotas.
    async fn put_user(&self, admin: &AdminAccess, user: &ClaimUser) -> Result<()>;

    /// Makes `bucket` belong to `owner` with `plan` as its default plan.
    async fn claim_bucket(
        &self,
        admin: &AdminAccess,
        bucket: &str,
        owner: &str,
        plan: Option<&str>,
    ) -> Result<BucketAnswer>;

    /// Makes key `access_key` with `secret_key` for `user`, allowed read and write on
    /// `bucket` only.
    async fn put_key(
        &self,
        admin: &AdminAccess,
        user: &str,
        access_key: &str,
        secret_key: &str,
        bucket: &str,
    ) -> Result<KeyAnswer>;

    /// Deletes key `access_key`; one already gone is fine.
    async fn delete_key(&self, admin: &AdminAccess, access_key: &str) -> Result<()>;

    /// Deletes `owner`'s `bucket` when empty.
    async fn delete_bucket(
        &self,
        admin: &AdminAccess,
        bucket: &str,
        owner: &str,
    ) -> Result<BucketRemoval>;

    /// Deletes user `id`; `false` when the gateway keeps it (it still owns a bucket).
    async fn delete_user(&self, admin: &AdminAccess, id: &str) -> Result<bool>;
}

/// The admin API over plain HTTP inside the cluster.
pub struct HttpAdmin {
    client: Client<HttpConnector, Full<Bytes>>,
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
    /// Sends one request and reads the whole answer (at most [`MAX_ANSWER`] bytes), both
    /// within the timeout.
    async fn call(
        &self,
        method: http::Method,
        url: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<(http::StatusCode, Bytes)> {
        let fail = |message: String| Error::Admin {
            url: url.to_owned(),
            message,
        };
        let mut request = http::Request::builder().method(method).uri(url);
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| fail(format!("bad request: {e}")))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER);
        let body = tokio::time::timeout(self.timeout, limited.collect())
            .await
            .map_err(|_| fail("body not received in time".into()))?
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        if status == http::StatusCode::UNAUTHORIZED {
            return Err(fail(
                "the admin token was refused (401); the gateway's admin Secret and its pods \
                 disagree"
                    .into(),
            ));
        }
        Ok((status, body))
    }

    /// GETs `url` and parses the JSON answer; `None` on 404.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: String) -> Result<Option<T>> {
        let (status, body) = self.call(http::Method::GET, &url, None, None).await?;
        if status == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let fail = |message: String| Error::Admin {
            url: url.clone(),
            message,
        };
        if !status.is_success() {
            return Err(fail(unexpected(status, &body)));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| fail(format!("unexpected JSON: {e}")))
    }

    /// A change behind the token: its status and the gateway's `error` text.
    async fn change(
        &self,
        admin: &AdminAccess,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(http::StatusCode, String, String)> {
        let url = format!("{}{path}", admin.url.trim_end_matches('/'));
        let (status, answer) = self
            .call(method, &url, Some(&admin.token), body.as_ref())
            .await?;
        let message = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer[..answer.len().min(200)]).into());
        Ok((status, message, url))
    }
}

/// The most of an answer the operator reads.
const MAX_ANSWER: usize = 1 << 20;

fn unexpected(status: http::StatusCode, body: &[u8]) -> String {
    format!(
        "answered {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    )
}

fn refused(url: String, status: http::StatusCode, message: &str) -> Error {
    Error::Admin {
        url,
        message: format!("answered {status}: {message}"),
    }
}

/// A path segment: ids and bucket names are checked before they get here, this keeps any
/// other byte from changing the path.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
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

    async fn put_user(&self, admin: &AdminAccess, user: &ClaimUser) -> Result<()> {
        let body = serde_json::to_value(user).map_err(|e| Error::Serialize {
            what: format!("user {}", user.id),
            source: e,
        })?;
        let path = format!("/admin/v1/users/{}", segment(&user.id));
        let (status, message, url) = self
            .change(admin, http::Method::PUT, &path, Some(body))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(refused(url, status, &message))
        }
    }

    async fn claim_bucket(
        &self,
        admin: &AdminAccess,
        bucket: &str,
        owner: &str,
        plan: Option<&str>,
    ) -> Result<BucketAnswer> {
        let body = serde_json::json!({"name": bucket, "owner": owner, "defaultPlan": plan});
        let (status, message, url) = self
            .change(admin, http::Method::POST, "/admin/v1/buckets", Some(body))
            .await?;
        match status {
            s if s.is_success() => Ok(BucketAnswer::Bound),
            http::StatusCode::CONFLICT => Ok(BucketAnswer::Refused {
                reason: "BucketTaken",
                message,
            }),
            http::StatusCode::UNPROCESSABLE_ENTITY => Ok(BucketAnswer::Refused {
                reason: "UnknownPlan",
                message,
            }),
            http::StatusCode::BAD_REQUEST => Ok(BucketAnswer::Refused {
                reason: "Refused",
                message,
            }),
            _ => Err(refused(url, status, &message)),
        }
    }

    async fn put_key(
        &self,
        admin: &AdminAccess,
        user: &str,
        access_key: &str,
        secret_key: &str,
        bucket: &str,
    ) -> Result<KeyAnswer> {
        let body = serde_json::json!({
            "user": user,
            "accessKey": access_key,
            "secretKey": secret_key,
            "grants": [format!("{bucket}:rw")],
        });
        let (status, message, url) = self
            .change(admin, http::Method::POST, "/admin/v1/keys", Some(body))
            .await?;
        match status {
            s if s.is_success() => Ok(KeyAnswer::Ready),
            http::StatusCode::CONFLICT => Ok(KeyAnswer::Differs),
            _ => Err(refused(url, status, &message)),
        }
    }

    async fn delete_key(&self, admin: &AdminAccess, access_key: &str) -> Result<()> {
        let path = format!("/admin/v1/keys/{}", segment(access_key));
        let (status, message, url) = self
            .change(admin, http::Method::DELETE, &path, None)
            .await?;
        if status.is_success() || status == http::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(refused(url, status, &message))
        }
    }

    async fn delete_bucket(
        &self,
        admin: &AdminAccess,
        bucket: &str,
        owner: &str,
    ) -> Result<BucketRemoval> {
        let path = format!(
            "/admin/v1/buckets/{}?owner={}",
            segment(bucket),
            segment(owner)
        );
        let (status, message, url) = self
            .change(admin, http::Method::DELETE, &path, None)
            .await?;
        match status {
            s if s.is_success() || s == http::StatusCode::NOT_FOUND => Ok(BucketRemoval::Gone),
            http::StatusCode::CONFLICT => Ok(BucketRemoval::NotEmpty(message)),
            http::StatusCode::FORBIDDEN => Ok(BucketRemoval::NotOwned(message)),
            _ => Err(refused(url, status, &message)),
        }
    }

    async fn delete_user(&self, admin: &AdminAccess, id: &str) -> Result<bool> {
        let path = format!("/admin/v1/users/{}", segment(id));
        let (status, message, url) = self
            .change(admin, http::Method::DELETE, &path, None)
            .await?;
        match status {
            s if s.is_success() || s == http::StatusCode::NOT_FOUND => Ok(true),
            http::StatusCode::CONFLICT => Ok(false),
            _ => Err(refused(url, status, &message)),
        }
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
