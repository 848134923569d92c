//! The admin HTTP API on the admin listener, beside `/metrics` and `/healthz`. The operator's
//! client (operator/src/admin.rs) is the contract for the first two:
//!
//! - `GET /admin/v1/plans/{plan}`: [`PlanHealth`]; 404 for a plan the gateway does not know.
//! - `GET /admin/v1/pools/{pool}`: `{"pool", "shards", "bytes"}` stored on the pool's
//!   providers, and for a pool marked `drain: true` its progress under `drain`
//!   ([`DrainStatus`]: `state` draining, drained or blocked, `blocked` naming each plan
//!   that keeps shards there and why, shards left by plan); 404 for a pool the gateway
//!   does not know.
//! - `GET /admin/v1/plans/{plan}/lost?limit=N` (token): versions with fewer than dataShards
//!   healthy shards, by bucket, key and version id (never hidden; the list says when it was
//!   cut).
//!
//! The POSTs below all want the token:
//!
//! - `POST /admin/v1/plans/{plan}/repair?limit=N&urgentOnly=BOOL`: runs one repair pass of
//!   the plan now and answers its [`RepairReport`]; what `sublet repair` calls when it runs
//!   as a Kubernetes Job.
//! - `POST /admin/v1/pools/{pool}/drain?limit=N`: moves the shards of up to N versions (64
//!   by default) off a draining pool now, what the background loop does every 30 seconds,
//!   and answers a [`crate::upkeep::drain::DrainReport`]; 409 for a pool not draining.
//! - `POST /admin/v1/plans/{plan}/reencode?limit=N`: rewrites up to N (200 by default)
//!   objects stored under the plan's old redundancy or encryption now, and answers a
//!   [`crate::upkeep::reencode::ReencodeReport`] (`outdated` counts them all).
//! - `POST /admin/v1/snapshot`: stores a metadata snapshot on the providers now (what the
//!   hourly timer does; `sublet recover` restores the newest) and answers its manifest's
//!   `created` and `size`; 404 where the gateway takes no snapshots (`sublet dev`).
//! - `POST /admin/v1/lifecycle?daysAhead=N`: runs one lifecycle pass (bucket rules and the
//!   schedules' rules) now, as if N more days (default 0) had passed: rules count in days
//!   and the timer runs hourly; answers what it did.
//! - `POST /admin/v1/audit?samples=N`: audits N random shards per provider now.
//! - `POST /admin/v1/scrub?after=SEQ&limit=N`: reads every shard of up to N versions (1000 by
//!   default) after row id SEQ whole, unthrottled, flags corrupt or missing ones for repair,
//!   and answers a [`crate::upkeep::scrub::ScrubReport`] whose `next` continues the walk.
//! - `POST /admin/v1/gc?minAgeSeconds=N`: removes this installation's shards (ids starting
//!   with its tag) that no metadata references, no write in flight in this process holds,
//!   stored more than N seconds ago (default a day), from every provider. Another
//!   installation's shards, and shards whose ids name none, are never taken.
//!
//! Users and access keys: see [`users`] (all behind the token).
//!
//! Everything that changes state or names objects (the POSTs and the lost list) wants the
//! admin token as `Authorization: Bearer TOKEN`, like the policy API: without it 401 with a
//! JSON error. Plan health and pool usage stay open: they are counts, the same numbers
//! `/metrics` serves, and the operator reads them without holding any key (its role may
//! not read Secrets).

pub mod policy;
pub mod server;
mod users;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::node::Node;
use crate::node::health::PlanHealth;
use crate::upkeep::drain::DrainStatus;
use crate::upkeep::repair::{PASS_LIMIT, RepairReport, Repairer};
use crate::upkeep::snapshot::SnapshotSource;

/// Lost versions listed per request unless `limit` says otherwise.
const LOST_LIMIT: usize = 1000;

#[derive(Clone)]
struct Admin {
    gateway: Arc<Node>,
    repairer: Repairer,
    metrics: Option<Metrics>,
    standalone: Standalone,
}

/// What `sublet serve` adds to the admin API: on-demand snapshots (a gateway without a
/// source answers 404 to them).
#[derive(Clone, Default)]
pub struct Standalone {
    pub snapshots: Option<SnapshotSource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LifecycleQuery {
    #[serde(default)]
    days_ahead: u32,
}

/// Unreferenced shards younger than this are left alone by `POST /admin/v1/gc` by default.
pub const GC_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditQuery {
    samples: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReencodeQuery {
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScrubQuery {
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GcQuery {
    min_age_seconds: Option<u64>,
}

/// `GET /admin/v1/pools/{pool}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub pool: String,
    pub shards: u64,
    pub bytes: u64,
    /// Set while the pool is marked `drain: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,
}

/// One entry of the lost list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LostObject {
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    /// Healthy shards of its weakest segment.
    pub healthy_shards: u64,
    /// Shards needed to read it.
    pub data_shards: u64,
    /// Unix ms of its first shard loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_since: Option<i64>,
}

/// `GET /admin/v1/plans/{plan}/lost`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LostList {
    pub plan: String,
    pub objects: Vec<LostObject>,
    /// More lost versions exist than listed; ask with a larger `limit`.
    pub truncated: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LimitQuery {
    limit: Option<usize>,
    #[serde(default)]
    urgent_only: bool,
    /// Bytes per second for this pass, overriding the schedule.
    bandwidth_limit: Option<u64>,
}

/// The bearer token of the admin API (policy API included).
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        AdminToken(token.into())
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Middleware letting through requests that carry `token` as `Authorization: Bearer`.
pub async fn require_token(
    State(token): State<AdminToken>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let message = match given {
        Some(t) if constant_time_eq(t.trim().as_bytes(), token.0.as_bytes()) => {
            return next.run(request).await;
        }
        Some(_) => "the admin token is wrong",
        None => {
            "this endpoint needs the admin token: send `Authorization: Bearer TOKEN` \
             (sublet reads it from --token or SUBLET_ADMIN_TOKEN)"
        }
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message.into());
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sublet admin\""),
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin routes over `gateway`; repairs count into `metrics` when given. Every route but
/// plan health and pool usage wants `token`.
pub fn router(
    gateway: Arc<Node>,
    metrics: Option<Metrics>,
    standalone: Standalone,
    token: AdminToken,
) -> axum::Router {
    let state = Admin {
        repairer: Repairer::new(Arc::clone(&gateway), metrics.clone()),
        gateway,
        metrics,
        standalone,
    };
    let open = axum::Router::new()
        .route("/admin/v1/plans/{plan}", axum::routing::get(plan_health))
        .route("/admin/v1/pools/{pool}", axum::routing::get(pool));
    let guarded = axum::Router::new()
        .route("/admin/v1/plans/{plan}/lost", axum::routing::get(lost))
        .route("/admin/v1/plans/{plan}/repair", axum::routing::post(repair))
        .route("/admin/v1/pools/{pool}/drain", axum::routing::post(drain))
        .route(
            "/admin/v1/plans/{plan}/reencode",
            axum::routing::post(reencode),
        )
        .route("/admin/v1/audit", axum::routing::post(audit))
        .route("/admin/v1/gc", axum::routing::post(gc))
        .route("/admin/v1/scrub", axum::routing::post(scrub))
        .route("/admin/v1/snapshot", axum::routing::post(snapshot))
        .route("/admin/v1/lifecycle", axum::routing::post(lifecycle))
        .merge(users::routes())
        .route_layer(axum::middleware::from_fn_with_state(token, require_token));
    open.merge(guarded).with_state(state)
}

fn error(status: StatusCode, message: String) -> Response {
    answer(status, serde_json::json!({ "error": message }))
}

/// Seconds a client is asked to wait before trying again after a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// Every JSON answer of the admin API goes out here: a 503 (a busy metadata store, a change
/// not yet journaled) carries `Retry-After`, as it means "try again".
fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

/// The admin API's one mapping of a failure inside the gateway: 503 when the metadata store
/// was busy (PostgreSQL's pool had no connection free within `poolWait`; the request may be
/// tried again, as S3 clients get SlowDown), 500 otherwise.
fn failure_status(e: &(dyn std::error::Error + 'static)) -> StatusCode {
    if metadata_busy(e) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// The answer for a failure inside the gateway ([`failure_status`]); `message` is the
/// error's text as the endpoint words it.
fn failed(e: &(dyn std::error::Error + 'static), message: String) -> Response {
    error(failure_status(e), message)
}

/// Whether `e`, or any error it wraps, is a busy metadata store.
fn metadata_busy(e: &(dyn std::error::Error + 'static)) -> bool {
    use crate::meta::MetaError;
    use crate::node::users::UsersError;
    // `crate::error::Error::Meta` and `UsersError::Meta` are transparent: their `source()`
    // skips the MetaError they hold, so they are looked into here.
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        let meta = e
            .downcast_ref::<MetaError>()
            .or_else(|| match e.downcast_ref::<crate::error::Error>() {
                Some(crate::error::Error::Meta(m)) => Some(m),
                _ => None,
            })
            .or_else(|| match e.downcast_ref::<UsersError>() {
                Some(UsersError::Meta(m)) => Some(m),
                _ => None,
            });
        matches!(meta, Some(MetaError::Busy(_)))
    })
}

fn unknown_plan(plan: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("plan {plan} is not configured on this gateway"),
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(&*e, format!("{e:#}"))),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn plan_health(State(admin): State<Admin>, Path(plan): Path<String>) -> Response {
    if !admin.gateway.plans().iter().any(|p| p.name == plan) {
        return unknown_plan(&plan);
    }
    let policy = admin.gateway.rebuild_policy(&plan);
    let gateway = Arc::clone(&admin.gateway);
    let result: Result<PlanHealth, Response> = blocking(move || {
        Ok(crate::node::health::plan_health(
            gateway.metadata().as_ref(),
            &plan,
            &policy,
        )?)
    })
    .await;
    match result {
        Ok(h) => Json(h).into_response(),
        Err(r) => r,
    }
}

async fn lost(
    State(admin): State<Admin>,
    Path(plan): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Response {
    if !admin.gateway.plans().iter().any(|p| p.name == plan) {
        return unknown_plan(&plan);
    }
    let limit = q.limit.unwrap_or(LOST_LIMIT).max(1);
    let policy = admin.gateway.rebuild_policy(&plan);
    let gateway = Arc::clone(&admin.gateway);
    let name = plan.clone();
    let found = blocking(move || {
        Ok(crate::upkeep::repair::lost_versions(
            gateway.metadata().as_ref(),
            &name,
            &policy,
            limit + 1,
        )?)
    })
    .await;
    match found {
        Ok(mut versions) => {
            let truncated = versions.len() > limit;
            versions.truncate(limit);
            Json(LostList {
                plan,
                truncated,
                objects: versions
                    .into_iter()
                    .map(|v| LostObject {
                        bucket: v.bucket,
                        key: v.key,
                        version_id: v.version_id,
                        healthy_shards: v.healthy,
                        data_shards: v.needed,
                        lost_since: v.lost_since,
                    })
                    .collect(),
            })
            .into_response()
        }
        Err(r) => r,
    }
}

async fn repair(
    State(admin): State<Admin>,
    Path(plan): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Response {
    if !admin.gateway.plans().iter().any(|p| p.name == plan) {
        return unknown_plan(&plan);
    }
    let limit = q.limit.unwrap_or(PASS_LIMIT).max(1);
    let repairer = admin
        .repairer
        .clone()
        .with_bandwidth_limit(q.bandwidth_limit);
    let result: anyhow::Result<RepairReport> = repairer.run_pass(&plan, q.urgent_only, limit).await;
    match result {
        Ok(report) => Json(report).into_response(),
        Err(e) => failed(&*e, format!("{e:#}")),
    }
}

async fn pool(State(admin): State<Admin>, Path(pool): Path<String>) -> Response {
    let gateway = Arc::clone(&admin.gateway);
    let usage = blocking(move || {
        let usage = crate::upkeep::repair::pool_usage(&gateway)?;
        let Some(&(shards, bytes)) = usage.get(&pool) else {
            return Ok(Err(pool));
        };
        let drain = crate::upkeep::drain::drain_status(&gateway, &pool, shards)?;
        Ok(Ok(PoolUsage {
            pool,
            shards,
            bytes,
            drain,
        }))
    })
    .await;
    match usage {
        Ok(Ok(usage)) => Json(usage).into_response(),
        Ok(Err(pool)) => error(
            StatusCode::NOT_FOUND,
            format!("pool {pool} is not configured on this gateway; it stores nothing there"),
        ),
        Err(r) => r,
    }
}

async fn drain(
    State(admin): State<Admin>,
    Path(pool): Path<String>,
    Query(q): Query<ReencodeQuery>,
) -> Response {
    if !admin.gateway.topology().draining.contains(&pool) {
        return error(
            StatusCode::CONFLICT,
            format!("pool {pool} is not draining; set drain: true on it first"),
        );
    }
    let limit = q
        .limit
        .unwrap_or(crate::upkeep::drain::DRAIN_PER_PASS)
        .max(1);
    match crate::upkeep::drain::drain_pass(&admin.repairer, &pool, limit).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => failed(&*e, format!("{e:#}")),
    }
}

async fn audit(State(admin): State<Admin>, Query(q): Query<AuditQuery>) -> Response {
    let samples = q
        .samples
        .unwrap_or_else(|| crate::upkeep::audit::AuditPolicy::default().samples_per_provider);
    match crate::upkeep::audit::audit_round(&admin.gateway, admin.metrics.as_ref(), samples).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => failed(&*e, format!("{e:#}")),
    }
}

async fn reencode(
    State(admin): State<Admin>,
    Path(plan): Path<String>,
    Query(q): Query<ReencodeQuery>,
) -> Response {
    if !admin.gateway.plans().iter().any(|p| p.name == plan) {
        return unknown_plan(&plan);
    }
    let limit = q
        .limit
        .unwrap_or(crate::upkeep::reencode::REENCODE_PER_PASS)
        .max(1);
    match crate::upkeep::reencode::reencode_pass(&admin.gateway, &plan, limit).await {
        Ok(report) => {
            if let Some(m) = &admin.metrics {
                report.record(m);
            }
            Json(report).into_response()
        }
        Err(e) => failed(&*e, format!("{e:#}")),
    }
}

async fn scrub(State(admin): State<Admin>, Query(q): Query<ScrubQuery>) -> Response {
    let limit = q.limit.unwrap_or(1000).max(1);
    match crate::upkeep::scrub::scrub_pass(
        &admin.gateway,
        admin.metrics.as_ref(),
        q.after,
        limit,
        None,
    )
    .await
    {
        Ok(report) => Json(report).into_response(),
        Err(e) => failed(&*e, format!("{e:#}")),
    }
}

async fn gc(State(admin): State<Admin>, Query(q): Query<GcQuery>) -> Response {
    let min_age = q
        .min_age_seconds
        .map_or(GC_MIN_AGE, std::time::Duration::from_secs);
    match crate::upkeep::audit::collect_garbage(&admin.gateway, admin.metrics.as_ref(), min_age)
        .await
    {
        Ok(report) => Json(report).into_response(),
        Err(e) => failed(&*e, format!("{e:#}")),
    }
}

async fn snapshot(State(admin): State<Admin>) -> Response {
    let Some(source) = &admin.standalone.snapshots else {
        return error(
            StatusCode::NOT_FOUND,
            "this gateway takes no metadata snapshots (only sublet serve does)".into(),
        );
    };
    match source.take().await {
        Ok(m) => Json(serde_json::json!({ "created": m.created, "size": m.size })).into_response(),
        Err(e) => failed(&*e, format!("{e:#}")),
    }
}

async fn lifecycle(State(admin): State<Admin>, Query(q): Query<LifecycleQuery>) -> Response {
    let now = crate::node::health::now_ms() + i64::from(q.days_ahead) * 24 * 3600 * 1000;
    // The schedules' rules in force now (applied policies included), besides every
    // bucket's own.
    let rules = admin.gateway.policy().lifecycle.clone();
    match crate::upkeep::lifecycle::lifecycle_pass(&admin.gateway, &rules, now).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => failed(&e, e.message()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use anyhow::Context;

    use super::*;
    use crate::meta::MetaError;
    use crate::node::users::UsersError;

    pub(super) fn busy() -> MetaError {
        MetaError::Busy("PostgreSQL: all 16 connections stayed busy for 5s".into())
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub(super) async fn assert_busy(response: Response) {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(http::header::RETRY_AFTER),
            Some(&HeaderValue::from_static(RETRY_AFTER_SECONDS))
        );
        let text = body(response).await;
        assert!(text.contains("stayed busy"), "{text}");
    }

    #[tokio::test]
    async fn a_busy_metadata_store_is_a_503_with_retry_after_not_a_500() {
        // The users and keys endpoints.
        assert_busy(users::refused(UsersError::Meta(busy()))).await;
        // The endpoints running a job off the async workers (anyhow, with context).
        let r = blocking(|| -> anyhow::Result<()> { Err(busy()).context("counting the plan") })
            .await
            .expect_err("failed");
        assert_busy(r).await;
        // The node's error (lifecycle).
        let e = crate::error::Error::Meta(busy());
        assert_busy(failed(&e, e.message())).await;
    }

    #[tokio::test]
    async fn a_failing_metadata_store_is_still_a_500() {
        for r in [
            users::refused(UsersError::Meta(MetaError::Store("disk I/O error".into()))),
            users::refused(UsersError::Internal("broken".into())),
            blocking(|| -> anyhow::Result<()> { anyhow::bail!("no such table") })
                .await
                .expect_err("failed"),
        ] {
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(r.headers().get(http::header::RETRY_AFTER).is_none());
        }
        // What the caller did wrong keeps its own status.
        let r = users::refused(UsersError::NotFound("no user bob".into()));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
