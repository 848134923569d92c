//! What the gateway runs and holds: plans with object health and repair queue, providers,
//! buckets and their default plans.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::*;
use crate::node::Node;
use crate::node::health::PlanHealth;

/// One plan in `GET /admin/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    pub name: String,
    pub default: bool,
    /// E.g. `EC 4+2`, `3 replicas`.
    pub redundancy: String,
    pub health: PlanHealth,
}

/// `GET /admin/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub plans: Vec<PlanStatus>,
    pub providers: usize,
    pub providers_up: usize,
}

pub(super) async fn status(State(api): State<Arc<PolicyApi>>) -> Response {
    let labels: HashMap<String, String> = {
        let state = api.state.lock().await;
        state
            .effective
            .plans
            .iter()
            .map(|(n, p)| (n.clone(), p.spec.redundancy_label()))
            .collect()
    };
    let gateway = Arc::clone(&api.gateway);
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<Status> {
        let mut plans = Vec::new();
        for plan in gateway.plans() {
            let policy = gateway.rebuild_policy(&plan.name);
            let health =
                crate::node::health::plan_health(gateway.metadata().as_ref(), &plan.name, &policy)?;
            plans.push(PlanStatus {
                default: plan.name == gateway.default_plan(),
                redundancy: labels.get(&plan.name).cloned().unwrap_or_default(),
                name: plan.name,
                health,
            });
        }
        plans.sort_by(|a, b| a.name.cmp(&b.name));
        let sites = &gateway.topology().sites;
        Ok(Status {
            plans,
            providers: sites.len(),
            providers_up: sites
                .iter()
                .filter(|s| gateway.health().healthy(&s.node_id))
                .count(),
        })
    })
    .await;
    match result {
        Ok(Ok(s)) => Json(s).into_response(),
        Ok(Err(e)) => super::super::failed(&*e, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Vec::new()),
    }
}

/// One provider in `GET /admin/v1/providers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    pub node_id: String,
    pub pool: String,
    pub zone: String,
    pub up: bool,
    /// Unix ms of its last answered probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Percent of audits passed since the gateway started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u64>,
    pub shards: u64,
    pub bytes: u64,
}

pub(super) async fn providers(State(api): State<Arc<PolicyApi>>) -> Response {
    let gateway = Arc::clone(&api.gateway);
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<ProviderStatus>> {
        let meta = gateway.metadata();
        let usage = meta.provider_usage()?;
        let seen = meta.providers_seen()?;
        let health = gateway.health();
        Ok(gateway
            .topology()
            .sites
            .iter()
            .map(|s| {
                let (shards, bytes) = usage.get(&s.node_id).copied().unwrap_or_default();
                ProviderStatus {
                    node_id: s.node_id.clone(),
                    pool: s.pool.clone(),
                    zone: s.zone.clone(),
                    up: health.healthy(&s.node_id),
                    last_seen: seen.get(&s.node_id).map(|p| p.last_seen),
                    free_bytes: health.free_bytes(&s.node_id),
                    score: health.score(&s.node_id),
                    shards,
                    bytes,
                }
            })
            .collect())
    })
    .await;
    match result {
        Ok(Ok(p)) => Json(serde_json::json!({ "items": p })).into_response(),
        Ok(Err(e)) => super::super::failed(&*e, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Vec::new()),
    }
}

/// One bucket in `GET /admin/v1/buckets`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    pub name: String,
    /// Unix ms of its creation.
    pub created: i64,
    /// The plan set for the bucket, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_plan: Option<String>,
    /// The plan its new objects get without a storage class: its own or the gateway's.
    pub effective_plan: String,
    pub versioning: String,
    /// The user the bucket belongs to (`default` for the configuration file's keys).
    pub owner: String,
}

fn bucket_status(gateway: &Node, b: crate::meta::Bucket) -> BucketStatus {
    BucketStatus {
        effective_plan: b
            .default_plan
            .clone()
            .unwrap_or_else(|| gateway.default_plan().to_owned()),
        name: b.name,
        created: b.created,
        default_plan: b.default_plan,
        versioning: b.versioning.as_str().to_owned(),
        owner: b
            .owner
            .unwrap_or_else(|| crate::node::users::DEFAULT_USER.to_owned()),
    }
}

fn internal_error(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Vec::new())
}

/// A metadata failure: 503 when the store was busy, 500 otherwise.
fn meta_failed(e: &crate::meta::MetaError) -> Response {
    super::super::failed(e, e.to_string())
}

pub(super) async fn buckets(State(api): State<Arc<PolicyApi>>) -> Response {
    let gateway = Arc::clone(&api.gateway);
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<BucketStatus>> {
        Ok(gateway
            .metadata()
            .buckets()?
            .into_iter()
            .map(|b| bucket_status(&gateway, b))
            .collect())
    })
    .await;
    match result {
        Ok(Ok(b)) => Json(serde_json::json!({ "items": b })).into_response(),
        Ok(Err(e)) => super::super::failed(&*e, format!("{e:#}")),
        Err(e) => internal_error(e),
    }
}

fn no_such_bucket(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("there is no bucket {name}"),
        Vec::new(),
    )
}

pub(super) async fn bucket_one(
    State(api): State<Arc<PolicyApi>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let gateway = Arc::clone(&api.gateway);
    let result = tokio::task::spawn_blocking(move || {
        gateway
            .metadata()
            .bucket(&name)
            .map(|b| (b.map(|b| bucket_status(&gateway, b)), name))
    })
    .await;
    match result {
        Ok(Ok((Some(b), _))) => Json(b).into_response(),
        Ok(Ok((None, name))) => no_such_bucket(&name),
        Ok(Err(e)) => meta_failed(&e),
        Err(e) => internal_error(e),
    }
}

/// The body of `PUT /admin/v1/buckets/{name}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BucketChange {
    /// A plan name, or `null` to fall back to the gateway's default plan.
    default_plan: Option<String>,
}

pub(super) async fn set_bucket(
    State(api): State<Arc<PolicyApi>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    let change: BucketChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON like {{\"defaultPlan\": \"archive\"}} or \
                     {{\"defaultPlan\": null}}: {e}"
                ),
                Vec::new(),
            );
        }
    };
    // Held so that a plan cannot be deleted between the check and the write.
    let _state = api.state.lock().await;
    if let Some(plan) = &change.default_plan
        && !api.gateway.plans().iter().any(|p| &p.name == plan)
    {
        let mut known: Vec<String> = api.gateway.plans().into_iter().map(|p| p.name).collect();
        known.sort();
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("there is no plan {plan}; known plans: {}", known.join(", ")),
            Vec::new(),
        );
    }
    let gateway = Arc::clone(&api.gateway);
    let result = tokio::task::spawn_blocking(move || {
        let meta = gateway.metadata();
        match meta.set_bucket_plan(&name, change.default_plan.as_deref()) {
            Ok(()) => meta
                .bucket(&name)
                .map(|b| Ok(b.map(|b| bucket_status(&gateway, b)))),
            Err(crate::meta::MetaError::NoSuchBucket(_)) => Ok(Err(name)),
            Err(e) => Err(e),
        }
    })
    .await;
    match result {
        Ok(Ok(Ok(Some(b)))) => {
            tracing::info!(
                bucket = b.name,
                plan = b.effective_plan,
                "bucket default plan set"
            );
            Json(b).into_response()
        }
        Ok(Ok(Ok(None))) => internal_error("the bucket vanished while its plan was set"),
        Ok(Ok(Err(name))) => no_such_bucket(&name),
        Ok(Err(e)) => meta_failed(&e),
        Err(e) => internal_error(e),
    }
}

/// The body of `POST /admin/v1/buckets`: a bucket for a user, what the operator makes for a
/// BucketClaim.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BucketClaim {
    name: String,
    owner: String,
    #[serde(default)]
    default_plan: Option<String>,
}

/// `POST /admin/v1/buckets` `{"name", "owner", "defaultPlan"?}`: 201 with the bucket when
/// created, 200 when it is the owner's already (creating twice is harmless), 409 when it
/// belongs to another user (never taken over), 404 for an unknown owner, 422 for an unknown
/// plan.
pub(super) async fn create_bucket(State(api): State<Arc<PolicyApi>>, body: Bytes) -> Response {
    let claim: BucketClaim = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON like {{\"name\": \"photos\", \"owner\": \"alice\", \
                     \"defaultPlan\": \"archive\"}}: {e}"
                ),
                Vec::new(),
            );
        }
    };
    // Held so that a plan cannot be deleted between the check and the write.
    let _state = api.state.lock().await;
    if let Some(plan) = &claim.default_plan
        && !api.gateway.plans().iter().any(|p| &p.name == plan)
    {
        let mut known: Vec<String> = api.gateway.plans().into_iter().map(|p| p.name).collect();
        known.sort();
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("there is no plan {plan}; known plans: {}", known.join(", ")),
            Vec::new(),
        );
    }
    let gateway = Arc::clone(&api.gateway);
    let result = tokio::task::spawn_blocking(move || {
        gateway
            .accounts()
            .claim_bucket(
                &claim.name,
                &claim.owner,
                claim.default_plan.as_deref(),
                crate::node::now_ms(),
            )
            .map(|(b, created)| (bucket_status(&gateway, b), created))
    })
    .await;
    let answer = match result {
        Ok(Ok((b, created))) => {
            if created {
                tracing::info!(
                    bucket = b.name,
                    owner = b.owner,
                    "bucket created for its owner"
                );
            }
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(b)).into_response()
        }
        Ok(Err(e)) => return super::super::users::refused(e),
        Err(e) => return internal_error(e),
    };
    match barrier(&api).await {
        Some(refused) => refused,
        None => answer,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct DeleteBucketQuery {
    owner: String,
}

/// `DELETE /admin/v1/buckets/{name}?owner=ID`: deletes the owner's empty bucket (200); 409
/// while it holds any version or upload; 403 when another user owns it; 404 when absent.
pub(super) async fn delete_bucket(
    State(api): State<Arc<PolicyApi>>,
    UrlPath(name): UrlPath<String>,
    axum::extract::Query(query): axum::extract::Query<DeleteBucketQuery>,
) -> Response {
    let gateway = Arc::clone(&api.gateway);
    let result = tokio::task::spawn_blocking(move || {
        gateway
            .accounts()
            .delete_owned_bucket(&name, &query.owner)
            .map(|()| name)
    })
    .await;
    match result {
        Ok(Ok(name)) => {
            tracing::info!(bucket = name, "bucket deleted for its owner");
            match barrier(&api).await {
                Some(refused) => refused,
                None => Json(serde_json::json!({ "deleted": name })).into_response(),
            }
        }
        Ok(Err(e)) => super::super::users::refused(e),
        Err(e) => internal_error(e),
    }
}

/// Waits until a change is in the metadata journal, as an S3 write does before its answer.
async fn barrier(api: &PolicyApi) -> Option<Response> {
    let journal = api.gateway.journal()?;
    journal.barrier().await.err().map(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the change is made but not yet in the metadata journal: {e}"),
            Vec::new(),
        )
    })
}
