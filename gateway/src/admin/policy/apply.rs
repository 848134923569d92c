//! Applying and deleting resources: the whole resulting set checked by the loader, the
//! node's policies swapped, new pool members dialled, plans in use kept.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sublet_crds::Config;

use super::*;
use crate::node::{Node, PolicySet};

/// The gateway's plans, placement rules and rebuild rules for `config`. Providers are
/// the config's endpoints and cloud buckets, plus the providers market pools contracted at
/// start (which no file lists).
pub(super) fn policy_set(config: &Config, gateway: &Node) -> anyhow::Result<PolicySet> {
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
        draining: crate::node::config::draining_pools(config),
    };
    Ok(PolicySet {
        plans,
        topology: Arc::new(topology),
        rebuild: crate::node::config::rebuild_policies(config),
        lifecycle: crate::node::config::lifecycle_rules(config),
        audit: crate::node::config::audit_policy(config),
    })
}

pub(super) async fn apply(
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

pub(super) async fn delete(
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
                return failure(&*e, format!("checking where plan {name} is used: {e:#}"))
                    .into_response();
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
pub(super) fn plan_uses(gateway: &Node, plan: &str) -> anyhow::Result<Vec<String>> {
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
pub(super) fn versions_with(
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
