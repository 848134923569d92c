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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sublet_crds::{Config, LoadError, LoadErrors};

use crate::node::health::PlanHealth;
use crate::node::{Node, PolicySet};

/// The overlay's file name inside the data directory.
pub const OVERLAY_FILE: &str = "policies.yaml";
/// The admin token's file name inside the data directory, when none is given.
pub const TOKEN_FILE: &str = "admin.token";

/// A kind the policy API manages, as it appears in URLs and manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    StoragePlan,
    StorageSchedule,
    ProviderPool,
}

impl Kind {
    /// From the URL segment (`plans`, `schedules`, `pools`).
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "plans" => Some(Kind::StoragePlan),
            "schedules" => Some(Kind::StorageSchedule),
            "pools" => Some(Kind::ProviderPool),
            _ => None,
        }
    }

    /// The URL segment.
    pub fn segment(self) -> &'static str {
        match self {
            Kind::StoragePlan => "plans",
            Kind::StorageSchedule => "schedules",
            Kind::ProviderPool => "pools",
        }
    }

    /// The manifest `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::StoragePlan => "StoragePlan",
            Kind::StorageSchedule => "StorageSchedule",
            Kind::ProviderPool => "ProviderPool",
        }
    }
}

/// A deleted resource of the overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub kind: Kind,
    pub name: String,
}

/// What the API changed relative to the config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overlay {
    /// Resources applied through the API (whole manifests), replacing the file's of the same
    /// kind and name.
    #[serde(default)]
    pub applied: Vec<serde_yaml::Value>,
    /// Resources deleted through the API, hiding the file's.
    #[serde(default)]
    pub deleted: Vec<Deleted>,
}

fn kind_and_name(doc: &serde_yaml::Value) -> (Option<&str>, Option<&str>) {
    (
        doc.get("kind").and_then(serde_yaml::Value::as_str),
        doc.get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(serde_yaml::Value::as_str),
    )
}

impl Overlay {
    /// Reads `path`; a missing file is an empty overlay.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml::from_str(&text)
                .with_context(|| format!("{}: not a policy overlay", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overlay::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes `path` atomically (a temporary file renamed over it, synced).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        let text = format!(
            "# Written by the sublet admin API (sublet plan apply/delete); layered over the config\n\
             # file at start, winning for every name it mentions. Delete this file to go back to\n\
             # the config file alone.\n{}",
            serde_yaml::to_string(self)?
        );
        let tmp = path.with_extension("yaml.tmp");
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// This overlay with `doc` applied (replacing an earlier one of the same kind and name).
    fn with_applied(&self, kind: Kind, name: &str, doc: serde_yaml::Value) -> Self {
        let mut next = self.without(kind, name);
        next.applied.push(doc);
        next
    }

    /// This overlay with `kind/name` deleted.
    fn with_deleted(&self, kind: Kind, name: &str) -> Self {
        let mut next = self.without(kind, name);
        next.deleted.push(Deleted {
            kind,
            name: name.to_owned(),
        });
        next
    }

    fn without(&self, kind: Kind, name: &str) -> Self {
        Overlay {
            applied: self
                .applied
                .iter()
                .filter(|d| kind_and_name(d) != (Some(kind.name()), Some(name)))
                .cloned()
                .collect(),
            deleted: self
                .deleted
                .iter()
                .filter(|d| !(d.kind == kind && d.name == name))
                .cloned()
                .collect(),
        }
    }

    fn mentions(&self, kind: &str, name: &str) -> bool {
        self.applied
            .iter()
            .any(|d| kind_and_name(d) == (Some(kind), Some(name)))
            || self
                .deleted
                .iter()
                .any(|d| d.kind.name() == kind && d.name == name)
    }
}

/// `file` with `overlay` layered over it, checked as a whole by the loader; errors name
/// `label` as their file.
pub fn layer(file: &Config, overlay: &Overlay, label: &str) -> Result<Config, LoadErrors> {
    fn push<T: Serialize>(docs: &mut Vec<String>, resource: &T) -> Result<(), LoadErrors> {
        let text = serde_yaml::to_string(resource).map_err(|e| one_error(&e.to_string()))?;
        docs.push(text);
        Ok(())
    }
    let mut docs = Vec::new();
    for (name, r) in &file.pools {
        if !overlay.mentions(Kind::ProviderPool.name(), name) {
            push(&mut docs, r)?;
        }
    }
    for (name, r) in &file.plans {
        if !overlay.mentions(Kind::StoragePlan.name(), name) {
            push(&mut docs, r)?;
        }
    }
    for (name, r) in &file.schedules {
        if !overlay.mentions(Kind::StorageSchedule.name(), name) {
            push(&mut docs, r)?;
        }
    }
    for r in file.gateways.values() {
        push(&mut docs, r)?;
    }
    for d in &overlay.applied {
        push(&mut docs, d)?;
    }
    sublet_crds::load_str(label, &docs.join("---\n"))
}

fn one_error(message: &str) -> LoadErrors {
    LoadErrors(vec![LoadError {
        file: String::new(),
        document: None,
        kind: None,
        name: None,
        field: None,
        message: message.to_owned(),
    }])
}

/// The config file with the data directory's overlay layered over it: what `sublet serve`
/// runs. An overlay the file no longer fits (e.g. it names a schedule the file dropped) is
/// an error naming both.
pub fn load_layered(file: &Config, data_dir: &Path) -> anyhow::Result<Config> {
    let path = data_dir.join(OVERLAY_FILE);
    let overlay = Overlay::read(&path)?;
    if overlay == Overlay::default() {
        return Ok(file.clone());
    }
    layer(file, &overlay, &path.display().to_string()).map_err(|errors| {
        anyhow::anyhow!(
            "the policies applied through the admin API ({}) no longer fit the config file:\n{}\n\
             fix the config file, or remove {} to run from the file alone",
            path.display(),
            problems(&errors).join("\n"),
            path.display()
        )
    })
}

/// One line per problem: `StoragePlan/photos: spec.redundancy.erasure.dataShards: ...`.
fn problems(errors: &LoadErrors) -> Vec<String> {
    errors.errors().iter().map(problem_line).collect()
}

fn problem_line(e: &LoadError) -> String {
    let mut line = String::new();
    match (&e.kind, &e.name) {
        (Some(k), Some(n)) => line.push_str(&format!("{k}/{n}: ")),
        (Some(k), None) => line.push_str(&format!("{k}: ")),
        _ => {}
    }
    if let Some(f) = &e.field {
        line.push_str(&format!("{f}: "));
    }
    // The loader counts lines of the layered text, which nobody wrote: leave them out.
    line.push_str(strip_line_number(&e.message));
    line
}

fn strip_line_number(message: &str) -> &str {
    match message.rsplit_once(" (line ") {
        Some((head, tail))
            if tail
                .strip_suffix(')')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            head
        }
        _ => message,
    }
}

/// The admin token: `given` (flag or environment), else the data directory's token file,
/// created with a fresh random token when missing.
pub fn admin_token(given: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(t) = given {
        if t.len() < 16 {
            anyhow::bail!("the admin token (SUBLET_ADMIN_TOKEN) must be at least 16 characters");
        }
        return Ok(t.to_owned());
    }
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is empty; delete it to get a new token", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    use rand::Rng;
    let token: String = {
        let mut rng = rand::rng();
        (0..40)
            .map(|_| {
                let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
                char::from(alphabet[rng.random_range(0..alphabet.len())])
            })
            .collect()
    };
    write_private(&path, &token)?;
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}

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
            .route("/admin/v1/buckets", axum::routing::get(buckets))
            .route(
                "/admin/v1/buckets/{name}",
                axum::routing::get(bucket_one).put(set_bucket),
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
        (self.status, Json(body)).into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_of_the_layered_text_are_left_out() {
        assert_eq!(
            strip_line_number("\"12x\" is not a size (line 78)"),
            "\"12x\" is not a size"
        );
        assert_eq!(strip_line_number("see (line x)"), "see (line x)");
        assert_eq!(strip_line_number("plain"), "plain");
    }
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
            .map_err(|e| {
                refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reading what the providers hold: {e}"),
                    Vec::new(),
                )
            })?;
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
                        refusal(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("storing the policies in the metadata database: {e}"),
                            Vec::new(),
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

/// The gateway's plans, placement rules and rebuild rules for `config`. Providers are
/// the config's endpoints and cloud buckets, plus the providers market pools contracted at
/// start (which no file lists).
fn policy_set(config: &Config, gateway: &Node) -> anyhow::Result<PolicySet> {
    let plans = crate::node::config::plans(config, gateway.default_plan())?;
    let current = gateway.topology();
    let endpoints = crate::node::config::endpoints(config)?;
    let mut sites = crate::node::config::topology(config, &endpoints).sites;
    for site in &current.sites {
        let market = config
            .pools
            .get(&site.pool)
            .is_some_and(|p| p.spec.market.is_some());
        if market && !sites.iter().any(|s| s.node_id == site.node_id) {
            sites.push(site.clone());
        }
    }
    let topology = crate::datapath::placement::Topology {
        sites,
        rules: config
            .plans
            .iter()
            .map(|(name, plan)| {
                (
                    name.clone(),
                    crate::datapath::placement::PlacementRule::from_spec(&plan.spec),
                )
            })
            .collect(),
    };
    Ok(PolicySet {
        plans,
        topology: Arc::new(topology),
        rebuild: crate::node::config::rebuild_policies(config),
        lifecycle: crate::node::config::lifecycle_rules(config),
        audit: crate::node::config::audit_policy(config),
    })
}

async fn apply(
    State(api): State<Arc<PolicyApi>>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let kind = match parse_kind(&kind) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    if let Some(r) = api.refuse_writes(kind) {
        return r;
    }
    // YAML is a superset of JSON: one parser takes both.
    let mut doc: serde_yaml::Value = match serde_yaml::from_slice(&body) {
        Ok(d @ serde_yaml::Value::Mapping(_)) => d,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be one {} manifest (a mapping)", kind.name()),
                Vec::new(),
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not YAML or JSON: {e}"),
                Vec::new(),
            );
        }
    };
    match kind_and_name(&doc) {
        (Some(k), _) if k != kind.name() => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "kind: the manifest is a {k}, but the URL is for a {}",
                    kind.name()
                ),
                Vec::new(),
            );
        }
        (_, Some(n)) if n != name => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("metadata.name: the manifest names {n}, but the URL names {name}"),
                Vec::new(),
            );
        }
        _ => {}
    }
    // Fill what the URL already says, so `kind` and `metadata.name` may be left out.
    if let serde_yaml::Value::Mapping(m) = &mut doc {
        m.entry("apiVersion".into())
            .or_insert_with(|| sublet_crds::API_VERSION.into());
        m.insert("kind".into(), kind.name().into());
        let metadata = m
            .entry("metadata".into())
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
        if let serde_yaml::Value::Mapping(meta) = metadata {
            meta.insert("name".into(), name.clone().into());
        }
        // Status is the gateway's to report, never applied.
        m.remove("status");
    }
    let mut state = api.state.lock().await;
    let existed = resources(&state.effective, kind).contains_key(&name);
    let next = state.overlay.with_applied(kind, &name, doc);
    if let Err(r) = api.commit(&mut state, next).await {
        return r.into_response();
    }
    tracing::info!(kind = kind.name(), name, "policy applied");
    let body = resources(&state.effective, kind)
        .remove(&name)
        .unwrap_or_default();
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(body)).into_response()
}

async fn delete(
    State(api): State<Arc<PolicyApi>>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
) -> Response {
    let kind = match parse_kind(&kind) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    if let Some(r) = api.refuse_writes(kind) {
        return r;
    }
    let mut state = api.state.lock().await;
    if !resources(&state.effective, kind).contains_key(&name) {
        return not_found(kind, &name);
    }
    if kind == Kind::StoragePlan {
        let gateway = Arc::clone(&api.gateway);
        let plan = name.clone();
        let uses = tokio::task::spawn_blocking(move || plan_uses(&gateway, &plan)).await;
        match uses {
            Ok(Ok(uses)) if !uses.is_empty() => {
                return error(
                    StatusCode::CONFLICT,
                    format!("plan {name} is in use; nothing was deleted"),
                    uses,
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("checking where plan {name} is used: {e:#}"),
                    Vec::new(),
                );
            }
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Vec::new());
            }
        }
    }
    let next = state.overlay.with_deleted(kind, &name);
    match api.commit(&mut state, next).await {
        Ok(()) => {}
        // What still refers to it is what the loader complains about.
        Err(r) if r.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let mut problems = r.problems;
            if problems.is_empty() {
                problems.push(r.message);
            }
            return error(
                StatusCode::CONFLICT,
                format!("{} {name} is in use; nothing was deleted", kind.name()),
                problems,
            );
        }
        Err(r) => return r.into_response(),
    }
    tracing::info!(kind = kind.name(), name, "policy deleted");
    StatusCode::NO_CONTENT.into_response()
}

/// Object keys named per bucket when a plan is in use.
const KEYS_NAMED: usize = 3;
/// Versions looked at per bucket to name keys (counts come from the plan's usage).
const SCAN_LIMIT: usize = 10_000;

/// Everything that still uses `plan`, one line each; empty when it may go.
fn plan_uses(gateway: &Node, plan: &str) -> anyhow::Result<Vec<String>> {
    let meta = gateway.metadata();
    let mut uses = Vec::new();
    if gateway.default_plan() == plan {
        uses.push("it is the gateway's default plan (StorageGateway spec.defaultPlan)".to_owned());
    }
    let stored = meta
        .plan_usage()?
        .into_iter()
        .find(|u| u.plan == plan)
        .map_or(0, |u| u.objects);
    if stored > 0 {
        uses.push(format!(
            "{stored} object version(s) are stored with it (re-encoding them is not supported: \
             delete them, or let a lifecycle transition move them to another plan)"
        ));
    }
    for bucket in meta.buckets()? {
        if bucket.default_plan.as_deref() == Some(plan) {
            uses.push(format!(
                "bucket {} uses it as its default plan",
                bucket.name
            ));
        }
        if let Some(rules) = meta.lifecycle(&bucket.name)? {
            let rules: Vec<crate::node::rules::Rule> =
                serde_json::from_str(&rules).unwrap_or_default();
            for r in rules {
                if r.transition.as_ref().is_some_and(|(_, to)| to == plan) {
                    uses.push(format!(
                        "bucket {}: lifecycle rule {} transitions objects to it",
                        bucket.name, r.id
                    ));
                }
            }
        }
        if stored > 0 {
            let (count, keys, cut) = versions_with(meta.as_ref(), &bucket.name, plan)?;
            if count > 0 {
                uses.push(format!(
                    "bucket {}: {}{count} version(s), e.g. {}",
                    bucket.name,
                    if cut { "at least " } else { "" },
                    keys.join(", ")
                ));
            }
        }
        let uploads = meta.uploads(
            &bucket.name,
            &crate::meta::UploadQuery {
                max_uploads: 1000,
                ..Default::default()
            },
        )?;
        let open = uploads.uploads.iter().filter(|u| u.plan == plan).count();
        if open > 0 {
            uses.push(format!(
                "bucket {}: {open} multipart upload(s) in progress write with it",
                bucket.name
            ));
        }
    }
    Ok(uses)
}

/// Versions of `bucket` stored with `plan` (up to [`SCAN_LIMIT`] looked at), a few keys, and
/// whether the scan was cut.
fn versions_with(
    meta: &dyn crate::meta::MetadataStore,
    bucket: &str,
    plan: &str,
) -> anyhow::Result<(usize, Vec<String>, bool)> {
    let mut count = 0;
    let mut keys: Vec<String> = Vec::new();
    let mut seen = 0;
    let mut marker = (String::new(), String::new());
    loop {
        let page = meta.list_versions(
            bucket,
            &crate::meta::VersionQuery {
                key_marker: &marker.0,
                version_id_marker: &marker.1,
                max_keys: 1000,
                ..Default::default()
            },
        )?;
        for v in &page.versions {
            seen += 1;
            if !v.version.delete_marker && v.version.plan == plan {
                count += 1;
                if keys.len() < KEYS_NAMED && !keys.contains(&v.version.key) {
                    keys.push(v.version.key.clone());
                }
            }
        }
        match page.next {
            Some(next) if seen < SCAN_LIMIT => marker = next,
            Some(_) => return Ok((count, keys, true)),
            None => return Ok((count, keys, false)),
        }
    }
}

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

async fn status(State(api): State<Arc<PolicyApi>>) -> Response {
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
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:#}"),
            Vec::new(),
        ),
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

async fn providers(State(api): State<Arc<PolicyApi>>) -> Response {
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
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:#}"),
            Vec::new(),
        ),
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
    }
}

fn internal_error(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Vec::new())
}

async fn buckets(State(api): State<Arc<PolicyApi>>) -> Response {
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
        Ok(Err(e)) => internal_error(format!("{e:#}")),
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

async fn bucket_one(State(api): State<Arc<PolicyApi>>, UrlPath(name): UrlPath<String>) -> Response {
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
        Ok(Err(e)) => internal_error(e),
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

async fn set_bucket(
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
        Ok(Err(e)) => internal_error(e),
        Err(e) => internal_error(e),
    }
}
