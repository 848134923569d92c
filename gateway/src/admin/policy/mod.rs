//! Policy management on the admin listener: StoragePlans, StorageSchedules and ProviderPools
//! listed, read, applied and deleted while the gateway runs, behind the admin token.
//!
//! Applied and deleted resources are kept in `policies.yaml` in the data directory (the
//! overlay) and layered over the config file at every start: for a name the overlay mentions,
//! the overlay wins. Every change is checked by the same loader as the file, on the whole
//! resulting set, so the API refuses exactly what `sublet serve` would refuse.
//!
//! - `GET /admin/v1/policy/{plans|schedules|pools}`: every resource of the kind.
//! - `GET|PUT|DELETE /admin/v1/policy/{kind}/{name}`: one resource; PUT takes YAML or JSON.
//! - `GET /admin/v1/status`: plans with object health and repair queue.
//! - `GET /admin/v1/providers`: providers with pool, up/down, last seen, free space, score and
//!   stored shards.
//! - `GET /admin/v1/buckets`: buckets with their default plan; `PUT /admin/v1/buckets/{name}`
//!   with `{"defaultPlan": "archive"}` (or `null`) sets the plan a bucket's new objects use
//!   when a request names no storage class. Buckets are data, not policies: this works under
//!   the operator too.
//! - `POST /admin/v1/buckets` `{"name", "owner", "defaultPlan"?}`: a bucket for a user (what
//!   the operator makes for a BucketClaim): 201 created, 200 when it is that user's already,
//!   409 when another user's (never taken over). `DELETE /admin/v1/buckets/{name}?owner=ID`:
//!   deletes the owner's bucket when empty; 409 while it holds any version or upload (as
//!   S3's DeleteBucket), 403 when another user owns it (left alone).

mod apply;
mod overlay;
mod status;
mod token;

pub use overlay::{Deleted, Kind, OVERLAY_FILE, Overlay, layer, load_layered};
pub use status::{BucketStatus, PlanStatus, ProviderStatus, Status};
pub use token::{TOKEN_FILE, admin_token};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sublet_crds::Config;

use crate::node::Node;
use apply::{apply, delete, policy_set};
use overlay::{kind_and_name, problems};
use status::{bucket_one, buckets, create_bucket, delete_bucket, providers, set_bucket, status};

/// Connects the providers of ProviderPools applied while the gateway runs; the runtime
/// gives one (its dialer) to a gateway started from a file.
#[async_trait::async_trait]
pub trait ProviderDialer: Send + Sync {
    /// Connects every endpoint of `config` the node has no backend for yet; answers their
    /// node ids.
    async fn connect_new(&self, node: &Node, config: &Config) -> anyhow::Result<Vec<String>>;
}

/// The policies a running gateway manages, and where their changes go.
pub struct PolicyApi {
    gateway: Arc<Node>,
    token: crate::admin::AdminToken,
    /// Set when the policies belong to someone else (the Kubernetes operator): the reason
    /// writes are refused.
    read_only: Option<String>,
    overlay_path: PathBuf,
    /// Held across a whole change so two applies cannot interleave.
    state: tokio::sync::Mutex<Policies>,
    /// Connects the providers of applied ProviderPools; without one, pools are read-only.
    dialer: Option<Arc<dyn ProviderDialer>>,
}

struct Policies {
    file: Config,
    overlay: Overlay,
    /// The file with the overlay: what the gateway runs.
    effective: Config,
    /// The revision of the shared overlay this gateway runs, when its metadata store shares
    /// policies between replicas (0: none seen yet).
    revision: i64,
}

impl PolicyApi {
    /// Manages the policies of `gateway`, which runs `file` layered with the overlay in
    /// `data_dir`.
    pub fn new(
        gateway: Arc<Node>,
        file: Config,
        data_dir: &Path,
        token: String,
        read_only: Option<String>,
    ) -> anyhow::Result<Self> {
        let overlay_path = data_dir.join(OVERLAY_FILE);
        let overlay = Overlay::read(&overlay_path)?;
        let effective = load_layered(&file, data_dir)?;
        Ok(PolicyApi {
            gateway,
            token: crate::admin::AdminToken::new(token),
            read_only,
            overlay_path,
            state: tokio::sync::Mutex::new(Policies {
                file,
                overlay,
                effective,
                revision: 0,
            }),
            dialer: None,
        })
    }

    /// Lets ProviderPools be applied and deleted: `dialer` connects new providers.
    pub fn with_dialer(mut self, dialer: Arc<dyn ProviderDialer>) -> Self {
        self.dialer = Some(dialer);
        self
    }

    /// The routes, every one behind the admin token.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/admin/v1/policy/{kind}", axum::routing::get(list))
            .route(
                "/admin/v1/policy/{kind}/{name}",
                axum::routing::get(get_one).put(apply).delete(delete),
            )
            .route("/admin/v1/status", axum::routing::get(status))
            .route("/admin/v1/providers", axum::routing::get(providers))
            .route(
                "/admin/v1/buckets",
                axum::routing::get(buckets).post(create_bucket),
            )
            .route(
                "/admin/v1/buckets/{name}",
                axum::routing::get(bucket_one)
                    .put(set_bucket)
                    .delete(delete_bucket),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                self.token.clone(),
                crate::admin::require_token,
            ))
            .with_state(self)
    }
}

/// A refused request: its status and the body `{"error": "...", "problems": [...]}`.
struct Refusal {
    status: StatusCode,
    message: String,
    problems: Vec<String>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if !self.problems.is_empty() {
            body["problems"] = serde_json::json!(self.problems);
        }
        super::answer(self.status, body)
    }
}

fn refusal(status: StatusCode, message: impl Into<String>, problems: Vec<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        problems,
    }
}

fn error(status: StatusCode, message: impl Into<String>, problems: Vec<String>) -> Response {
    refusal(status, message, problems).into_response()
}

/// A failure inside the gateway, as [`super::failed`] answers it (503 for a busy metadata
/// store, 500 otherwise).
fn failure(e: &(dyn std::error::Error + 'static), message: impl Into<String>) -> Refusal {
    refusal(super::failure_status(e), message, Vec::new())
}

fn parse_kind(segment: &str) -> Result<Kind, Refusal> {
    Kind::from_segment(segment).ok_or_else(|| {
        refusal(
            StatusCode::NOT_FOUND,
            format!("unknown kind {segment:?}; use plans, schedules or pools"),
            Vec::new(),
        )
    })
}

fn to_value<T: Serialize>(r: &T) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
}

fn resources(config: &Config, kind: Kind) -> BTreeMap<String, serde_json::Value> {
    match kind {
        Kind::StoragePlan => config
            .plans
            .iter()
            .map(|(n, r)| (n.clone(), to_value(r)))
            .collect(),
        Kind::StorageSchedule => config
            .schedules
            .iter()
            .map(|(n, r)| (n.clone(), to_value(r)))
            .collect(),
        Kind::ProviderPool => config
            .pools
            .iter()
            .map(|(n, r)| (n.clone(), to_value(r)))
            .collect(),
    }
}

async fn list(State(api): State<Arc<PolicyApi>>, UrlPath(kind): UrlPath<String>) -> Response {
    let kind = match parse_kind(&kind) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let state = api.state.lock().await;
    let items: Vec<_> = resources(&state.effective, kind).into_values().collect();
    Json(serde_json::json!({ "items": items })).into_response()
}

async fn get_one(
    State(api): State<Arc<PolicyApi>>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
) -> Response {
    let kind = match parse_kind(&kind) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let state = api.state.lock().await;
    match resources(&state.effective, kind).remove(&name) {
        Some(r) => Json(r).into_response(),
        None => not_found(kind, &name),
    }
}

fn not_found(kind: Kind, name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("{} {name} does not exist", kind.name()),
        Vec::new(),
    )
}

impl PolicyApi {
    fn refuse_writes(&self, kind: Kind) -> Option<Response> {
        if let Some(reason) = &self.read_only {
            return Some(error(StatusCode::CONFLICT, reason.clone(), Vec::new()));
        }
        // Without a dialer (an embedded gateway) pool members are the ones dialled at start.
        (kind == Kind::ProviderPool && self.dialer.is_none()).then(|| {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "ProviderPools are read-only through the admin API of this gateway: providers \
                 are connected at start, so edit the pool in the config file and restart it",
                Vec::new(),
            )
        })
    }

    /// Refuses pool changes the running gateway cannot carry out: pools of cloud buckets or
    /// market contracts (connected at start), and removing a provider that still holds
    /// shards (they would be stranded).
    async fn check_pools(&self, before: &Config, after: &Config) -> Result<(), Refusal> {
        let spec_of = |c: &Config, name: &str| {
            c.pools
                .get(name)
                .and_then(|p| serde_json::to_value(&p.spec).ok())
        };
        for (name, pool) in &after.pools {
            let changed = spec_of(before, name) != spec_of(after, name);
            if changed && (pool.spec.market.is_some() || !pool.spec.buckets.is_empty()) {
                return Err(refusal(
                    StatusCode::CONFLICT,
                    format!(
                        "ProviderPool {name}: pools of market contracts or cloud buckets are \
                         connected when the gateway starts; put it in the config file and \
                         restart the gateway"
                    ),
                    Vec::new(),
                ));
            }
        }
        let nodes = |c: &Config| -> BTreeMap<String, String> {
            crate::node::config::endpoints(c)
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.site.node_id, e.site.pool))
                .collect()
        };
        let kept = nodes(after);
        let gone: Vec<(String, String)> = nodes(before)
            .into_iter()
            .filter(|(node, _)| !kept.contains_key(node))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let meta = Arc::clone(self.gateway.metadata());
        let usage = tokio::task::spawn_blocking(move || meta.provider_usage())
            .await
            .map_err(|e| refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Vec::new()))?
            .map_err(|e| failure(&e, format!("reading what the providers hold: {e}")))?;
        let holding: Vec<String> = gone
            .iter()
            .filter_map(|(node, pool)| {
                let (shards, _) = usage.get(node).copied()?;
                (shards > 0)
                    .then(|| format!("provider {node} of pool {pool} holds {shards} shards"))
            })
            .collect();
        if holding.is_empty() {
            return Ok(());
        }
        Err(refusal(
            StatusCode::CONFLICT,
            "the change removes providers that still hold shards; drop their pool from every \
             plan's placement first and wait until GET /admin/v1/pools/{pool} shows 0 shards",
            holding,
        ))
    }

    /// Checks `next` as a whole, connects providers it adds, switches the gateway to it and
    /// stores it.
    async fn commit(&self, state: &mut Policies, next: Overlay) -> Result<(), Refusal> {
        let effective = layer(&state.file, &next, "request").map_err(|errors| {
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the change does not validate; nothing was applied",
                problems(&errors),
            )
        })?;
        self.check_pools(&state.effective, &effective).await?;
        if let Some(dialer) = &self.dialer {
            dialer
                .connect_new(&self.gateway, &effective)
                .await
                .map_err(|e| {
                    refusal(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("connecting the pool's providers: {e:#}"),
                        Vec::new(),
                    )
                })?;
        }
        let set = policy_set(&effective, &self.gateway).map_err(|e| {
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{e:#}"),
                Vec::new(),
            )
        })?;
        // Replicas on one database share the overlay: a change is stored there first, on the
        // revision this gateway runs, so two gateways changing policies at once cannot both
        // win.
        let meta = Arc::clone(self.gateway.metadata());
        let mut revision = state.revision;
        if meta.shares_policies() {
            let yaml = serde_yaml::to_string(&next).map_err(|e| {
                refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Vec::new())
            })?;
            let expected = state.revision;
            let stored =
                tokio::task::spawn_blocking(move || meta.put_shared_policies(expected, &yaml))
                    .await
                    .map_err(|e| {
                        refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Vec::new())
                    })?
                    .map_err(|e| {
                        failure(
                            &e,
                            format!("storing the policies in the metadata database: {e}"),
                        )
                    })?;
            match stored {
                Some(r) => revision = r,
                None => {
                    return Err(refusal(
                        StatusCode::CONFLICT,
                        "another gateway changed the policies meanwhile; nothing was applied \
                         here: read them again (this gateway takes the change within seconds) \
                         and retry",
                        Vec::new(),
                    ));
                }
            }
        }
        next.write(&self.overlay_path).map_err(|e| {
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing the change: {e:#}"),
                Vec::new(),
            )
        })?;
        if let Err(e) = self.gateway.swap_policy(set) {
            // Checked above; the old overlay goes back so the file matches what runs.
            let _ = state.overlay.write(&self.overlay_path);
            return Err(refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{e:#}"),
                Vec::new(),
            ));
        }
        if !self.gateway.metadata().shares_policies() {
            self.keep_copy(&next).await;
        }
        state.overlay = next;
        state.effective = effective;
        state.revision = revision;
        Ok(())
    }

    /// Keeps a copy of `overlay` in a store of this gateway's own, which snapshots and the
    /// metadata journal carry, so `sublet recover` can bring the overlay file back with the
    /// metadata. Best effort: the file is what runs.
    async fn keep_copy(&self, overlay: &Overlay) {
        let yaml = match serde_yaml::to_string(overlay) {
            Ok(yaml) => yaml,
            Err(e) => {
                tracing::warn!(error = %e, "the policy overlay could not be copied");
                return;
            }
        };
        let meta = Arc::clone(self.gateway.metadata());
        let journal = self.gateway.journal().cloned();
        let copied = tokio::task::spawn_blocking(move || {
            let current = meta.shared_policies()?;
            if current.as_ref().is_some_and(|(_, y)| *y == yaml) {
                return Ok(None);
            }
            meta.put_shared_policies(current.map_or(0, |(revision, _)| revision), &yaml)
        })
        .await;
        match copied {
            Ok(Ok(_)) => {
                if let Some(journal) = journal
                    && let Err(e) = journal.barrier().await
                {
                    tracing::warn!(error = %e, "the policy change is not in the metadata journal yet");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the policy overlay could not be copied into the metadata store; a recovered gateway will not have it")
            }
            Err(e) => tracing::warn!(error = %e, "copying the policy overlay failed"),
        }
    }

    /// At start: a gateway that keeps its own overlay file makes sure the metadata store
    /// holds a copy of it (an overlay written before copies were kept, or by hand).
    pub async fn copy_overlay(&self) {
        if self.gateway.metadata().shares_policies() {
            return;
        }
        let state = self.state.lock().await;
        if state.overlay != Overlay::default() {
            self.keep_copy(&state.overlay).await;
        }
    }

    /// Runs what another gateway on the same database applied: when the shared overlay's
    /// revision differs from this gateway's, it is layered over the file, its new providers
    /// are dialled and the gateway switches to it (and keeps it in its own overlay file).
    /// The first gateway to find no shared overlay seeds it with its own. Answers whether
    /// anything changed.
    pub async fn sync_shared(&self) -> anyhow::Result<bool> {
        let meta = Arc::clone(self.gateway.metadata());
        if self.read_only.is_some() || !meta.shares_policies() {
            return Ok(false);
        }
        let stored = {
            let meta = Arc::clone(&meta);
            tokio::task::spawn_blocking(move || meta.shared_policies()).await??
        };
        let mut state = self.state.lock().await;
        let (revision, yaml) = match stored {
            Some(s) => s,
            None => {
                if state.overlay != Overlay::default() {
                    let yaml = serde_yaml::to_string(&state.overlay)?;
                    if let Some(r) =
                        tokio::task::spawn_blocking(move || meta.put_shared_policies(0, &yaml))
                            .await??
                    {
                        state.revision = r;
                        tracing::info!("this gateway's policies seeded the shared ones");
                    }
                }
                return Ok(false);
            }
        };
        if revision == state.revision {
            return Ok(false);
        }
        let overlay: Overlay = serde_yaml::from_str(&yaml)
            .context("the shared policies in the metadata database are not a policy overlay")?;
        let effective = layer(&state.file, &overlay, "shared policies").map_err(|errors| {
            anyhow::anyhow!(
                "the policies another gateway applied do not fit this gateway's config file:\n{}",
                problems(&errors).join("\n")
            )
        })?;
        if let Some(dialer) = &self.dialer {
            dialer.connect_new(&self.gateway, &effective).await?;
        }
        let set = policy_set(&effective, &self.gateway)?;
        overlay.write(&self.overlay_path)?;
        self.gateway.swap_policy(set)?;
        state.overlay = overlay;
        state.effective = effective;
        state.revision = revision;
        tracing::info!(revision, "policies applied by another gateway taken over");
        Ok(true)
    }

    /// Takes over other gateways' policy changes every `interval` until `stop` changes.
    pub fn spawn_sync(
        self: Arc<Self>,
        interval: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {
                        if let Err(e) = self.sync_shared().await {
                            tracing::warn!(error = %format!("{e:#}"), "taking over shared policies failed");
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{assert_busy, busy};

    #[tokio::test]
    async fn a_busy_metadata_store_refuses_a_policy_change_with_a_503() {
        let e = anyhow::Error::from(busy()).context("checking where plan archive is used");
        assert_busy(failure(&*e, format!("{e:#}")).into_response()).await;
        let e = crate::meta::MetaError::Store("disk I/O error".into());
        let r = failure(&e, e.to_string()).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
