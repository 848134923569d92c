//! ProviderPool: provider pods on the selected nodes, members and their health in status.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use sublet_crds::{
    ByteSize, Condition, DrainProgress, PoolMember, ProviderPool, ProviderPoolStatus,
    StorageGateway, set_condition,
};
use tracing::info;

use super::{Context, INVALID_RESYNC, RESYNC, apply, create_if_missing, list_all, patch_status};
use crate::render::gateway::admin_url;
use crate::render::gateway::provider_token_secret;
use crate::render::provider::{IDENTITY_CONTAINER, ProviderWorkload, ZONE_LABEL, provider_objects};
use crate::render::{
    APP_PROVIDER, LABEL_POOL, PROVIDER_GRPC_PORT, PROVIDER_HTTP_PORT, dns_label, namespace_of,
};
use crate::{Error, Result};

/// Holds a deleted pool until no gateway stores shards on it.
pub const FINALIZER: &str = "sublet.dev/drain";
/// How soon a pool whose shards are moving is looked at again (a few calls to each gateway's
/// admin API), so its status and finalizer follow the drain within seconds rather than at the
/// next resync. A drain that is blocked or done waits for the resync (or a change).
pub const DRAIN_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// Reconciles one pool: workload and Service for in-cluster nodes, reachability of external
/// endpoints, members and conditions in status.
pub async fn reconcile(pool: Arc<ProviderPool>, ctx: Arc<Context>) -> Result<Action> {
    let ns = namespace_of(&*pool)?;
    let name = pool.name_any();
    let now = ctx.now_text();
    let mut status = pool.status.clone().unwrap_or_default();

    if pool.metadata.deletion_timestamp.is_some() {
        return drain(&pool, &ctx, status, &now).await;
    }
    if !pool.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = pool.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        set_finalizers(&pool, &ctx, finalizers).await?;
    }

    let problems = pool.spec.validate();
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let changed = ready_changed(&status.conditions, false, &message);
        set_condition(
            &mut status.conditions,
            Condition::new("Ready", false, "Invalid", message.clone()).with_generation(&*pool),
            &now,
        );
        patch_status(&ctx.client, &*pool, &status).await?;
        if changed {
            ctx.event(&*pool, EventType::Warning, "Invalid", message, "Validate")
                .await;
        }
        return Ok(Action::requeue(INVALID_RESYNC));
    }

    let previous: BTreeMap<String, PoolMember> = status
        .members
        .iter()
        .map(|m| (m.name.clone(), m.clone()))
        .collect();
    let poll = ctx.poll_due(&*pool);
    let mut members = Vec::new();
    // Provider pods not ready, by name, for the Ready condition.
    let mut pending: Vec<String> = Vec::new();
    if let Some(nodes) = &pool.spec.nodes {
        create_if_missing(&ctx.client, &provider_token_secret(&ns)).await?;
        let matching_nodes = if nodes.storage.volume_claim_template.is_some() {
            let selector = selector_text(&nodes.selector.match_labels);
            Api::<Node>::all(ctx.client.clone())
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::kube("list", "Node", selector))?
                .items
                .len()
        } else {
            0
        };
        if let Some(objects) = provider_objects(&pool, &ctx.images, matching_nodes)? {
            apply(&ctx.client, &objects.service).await?;
            match &objects.workload {
                ProviderWorkload::DaemonSet(ds) => {
                    apply(&ctx.client, ds).await?;
                }
                ProviderWorkload::StatefulSet(sts) => {
                    apply(&ctx.client, sts).await?;
                }
            }
        }
        let capacity = nodes
            .storage
            .capacity
            .as_ref()
            .or(nodes
                .storage
                .volume_claim_template
                .as_ref()
                .map(|c| &c.size))
            .map_or(0, ByteSize::bytes);
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/name={APP_PROVIDER},app.kubernetes.io/instance={name}"
            )))
            .await
            .map_err(Error::kube("list", "Pod", format!("providers of {name}")))?
            .items;
        pending = pods
            .iter()
            .filter(|pod| {
                !pod.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .map(ResourceExt::name_any)
            .collect();
        pending.sort();
        let mut zones: BTreeMap<String, String> = BTreeMap::new();
        for pod in &pods {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let zone = match zones.get(&node) {
                Some(zone) => zone.clone(),
                None => {
                    let zone = node_zone(&ctx, &node).await?;
                    zones.insert(node.clone(), zone.clone());
                    zone
                }
            };
            let mut member = member_of_pod(pod, &node, &zone, capacity);
            if pool.spec.endpoints.iter().any(|e| e.name == member.name) {
                member.name = format!("{}-node", member.name);
            }
            let before = previous.get(&member.name);
            if member.ready
                && !poll
                && let Some(before) = before
            {
                member.capacity_bytes = before.capacity_bytes;
                member.used_bytes = before.used_bytes;
            } else if member.ready
                && let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref())
            {
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_owned()
                };
                let url = format!("http://{host}:{PROVIDER_HTTP_PORT}/metrics");
                if let Some(usage) = ctx.probe.usage(&url).await {
                    member.capacity_bytes = usage.capacity_bytes;
                    member.used_bytes = usage.used_bytes;
                }
            }
            let before = previous
                .get(&member.name)
                .and_then(|m| m.last_seen.as_deref());
            member.last_seen = last_seen(member.ready, before, &ctx);
            members.push(member);
        }
        members = keep_identified(members, &previous, &pool.spec.endpoints, (ctx.now)());
    }
    // Endpoints on Unix sockets, by name: sockets on a gateway's node, out of the operator's
    // reach (and a connect from the operator's pod would say nothing of the gateway's).
    let mut unprobed: Vec<String> = Vec::new();
    for endpoint in &pool.spec.endpoints {
        let before = previous.get(&endpoint.name);
        let on_socket = endpoint.address.trim().starts_with("unix:");
        let ready = match before {
            // Counted ready: the gateway next to it checks it and places no shard on it
            // while it does not answer.
            _ if on_socket => true,
            Some(before) if !poll => before.ready,
            _ => ctx.probe.reachable(&endpoint.address).await,
        };
        let last = before.and_then(|m| m.last_seen.as_deref());
        let last_seen = if on_socket {
            unprobed.push(endpoint.name.clone());
            // Never seen by the operator: no date it could vouch for.
            None
        } else {
            last_seen(ready, last, &ctx)
        };
        members.push(PoolMember {
            name: endpoint.name.clone(),
            node_id: endpoint
                .node_id
                .clone()
                .or_else(|| before.map(|m| m.node_id.clone()))
                .unwrap_or_default(),
            address: endpoint.address.clone(),
            zone: endpoint
                .zone
                .clone()
                .unwrap_or_else(|| endpoint.name.clone()),
            ready,
            capacity_bytes: before.map_or(0, |m| m.capacity_bytes),
            used_bytes: before.map_or(0, |m| m.used_bytes),
            score: before.map_or(0, |m| m.score),
            last_seen,
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));

    let ready = members.iter().filter(|m| m.ready).count();
    status.ready_members = Some(format!("{ready}/{}", members.len()));
    let total: u64 = members
        .iter()
        .filter(|m| m.ready)
        .map(|m| m.capacity_bytes)
        .sum();
    let used: u64 = members
        .iter()
        .filter(|m| m.ready)
        .map(|m| m.used_bytes)
        .sum();
    status.capacity = Some(format!(
        "{}/{}",
        human_bytes(total.saturating_sub(used)),
        human_bytes(total)
    ));
    let condition = if ready > 0 {
        Condition::new(
            "Ready",
            true,
            "ProvidersReady",
            format!(
                "{ready} of {} providers ready{}",
                members.len(),
                match unprobed.len() {
                    0 => String::new(),
                    1 => " (1 on a Unix socket, not probed)".to_owned(),
                    n => format!(" ({n} on Unix sockets, not probed)"),
                }
            ),
        )
    } else if members.is_empty() {
        Condition::new(
            "Ready",
            false,
            "NoProviders",
            format!(
                "no provider pods yet; check that nodes carry the labels of spec.nodes.selector \
                 (kubectl get pods -n {ns} -l {LABEL_POOL}={name})"
            ),
        )
    } else {
        Condition::new(
            "Ready",
            false,
            "NoProviderReady",
            format!(
                "{}{}",
                match members.len() {
                    1 => "its one provider is not ready".to_owned(),
                    n => format!("none of the {n} providers is ready"),
                },
                if pending.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; pods not ready: {} (kubectl describe pods -n {ns} {})",
                        pending.join(", "),
                        pending.join(" ")
                    )
                }
            ),
        )
    };
    status.members = members;
    set_condition(
        &mut status.conditions,
        condition.with_generation(&*pool),
        &now,
    );
    if unprobed.is_empty() {
        status.conditions.retain(|c| c.type_ != "Probed");
    } else {
        set_condition(
            &mut status.conditions,
            unprobed_condition(&unprobed).with_generation(&*pool),
            &now,
        );
    }
    let mut again = RESYNC;
    if pool.spec.drain == Some(true) {
        if report_drain(&pool, &ctx, &mut status, &now).await? == "Draining" {
            again = DRAIN_POLL;
        }
    } else {
        // A drain called off: its progress goes with it.
        status.drain = None;
        status.conditions.retain(|c| c.type_ != "Draining");
    }
    patch_status(&ctx.client, &*pool, &status).await?;
    Ok(Action::requeue(again))
}

/// The `Probed` condition of a pool with endpoints on Unix sockets, `names`: the operator
/// cannot reach a socket on a gateway's node, so it counts them ready and says so.
fn unprobed_condition(names: &[String]) -> Condition {
    Condition::new(
        "Probed",
        false,
        "UnixSockets",
        format!(
            "not probed by the operator: {} (a unix: endpoint is a socket on the gateway's node, \
             out of the operator's reach); counted ready, the gateway checks it itself and places \
             no shard on it while it does not answer (its GET /admin/v1/providers shows it)",
            names.join(", ")
        ),
    )
}

/// Replaces the pool's finalizers; the resourceVersion makes a concurrent change fail rather
/// than be overwritten.
async fn set_finalizers(pool: &ProviderPool, ctx: &Context, finalizers: Vec<String>) -> Result<()> {
    let name = pool.name_any();
    let mut metadata = serde_json::json!({ "finalizers": finalizers });
    if let Some(version) = &pool.metadata.resource_version {
        metadata["resourceVersion"] = serde_json::json!(version);
    }
    Api::<ProviderPool>::namespaced(ctx.client.clone(), &namespace_of(pool)?)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "metadata": metadata })),
        )
        .await
        .map_err(Error::kube("update finalizers of", "ProviderPool", name))?;
    Ok(())
}

/// What the namespace's gateways store on a draining pool.
#[derive(Debug, Default)]
struct DrainSeen {
    shards: u64,
    bytes: u64,
    /// One line per gateway still storing shards there, or that could not tell.
    held: Vec<String>,
    /// One line per gateway and plan that cannot move its shards off.
    blocked: Vec<String>,
}

impl DrainSeen {
    /// `Drained` once every gateway said it stores nothing there, `Blocked` when one said a
    /// plan keeps shards there, else `Draining`.
    fn state(&self) -> &'static str {
        if self.held.is_empty() {
            "Drained"
        } else if self.blocked.is_empty() {
            "Draining"
        } else {
            "Blocked"
        }
    }

    /// The `Draining` condition: true while shards move, false once drained or blocked.
    fn condition(&self) -> Condition {
        match self.state() {
            "Drained" => Condition::new(
                "Draining",
                false,
                "Drained",
                "no gateway stores shards here any more; the providers may go",
            ),
            "Blocked" => Condition::new(
                "Draining",
                false,
                "Blocked",
                format!(
                    "{} cannot move: {}",
                    super::counted(self.shards, "shard", "shards"),
                    self.blocked.join("; ")
                ),
            ),
            _ => Condition::new(
                "Draining",
                true,
                "Draining",
                format!(
                    "{}; the gateways move the shards to the pools the plans allow",
                    self.held.join("; ")
                ),
            ),
        }
    }

    fn progress(&self) -> DrainProgress {
        DrainProgress {
            state: self.state().to_owned(),
            shards_left: self.shards,
            bytes_left: self.bytes,
        }
    }
}

/// Asks every gateway of the pool's namespace what it stores on the pool.
async fn drain_seen(pool: &ProviderPool, ctx: &Context) -> Result<DrainSeen> {
    let name = pool.name_any();
    let gateways: Vec<StorageGateway> = list_all(&ctx.client, &namespace_of(pool)?).await?;
    let mut seen = DrainSeen::default();
    for gateway in &gateways {
        let gateway_name = gateway.name_any();
        match ctx.admin.pool_usage(&admin_url(gateway)?, &name).await {
            Ok(usage) => {
                seen.shards += usage.shards;
                seen.bytes += usage.bytes;
                if usage.shards > 0 {
                    seen.held.push(format!(
                        "StorageGateway {gateway_name} stores {} ({}) here",
                        super::counted(usage.shards, "shard", "shards"),
                        human_bytes(usage.bytes)
                    ));
                    for reason in usage.drain.iter().flat_map(|d| &d.blocked) {
                        seen.blocked
                            .push(format!("StorageGateway {gateway_name}: {reason}"));
                    }
                }
            }
            Err(err) => seen.held.push(format!(
                "StorageGateway {gateway_name} cannot tell what it stores here ({err})"
            )),
        }
    }
    Ok(seen)
}

/// Reports a pool marked `drain: true` (not deleted): progress in `status.drain` and the
/// `Draining` condition; an Event when the drain gets blocked. The drain's state.
async fn report_drain(
    pool: &ProviderPool,
    ctx: &Context,
    status: &mut ProviderPoolStatus,
    now: &str,
) -> Result<&'static str> {
    let seen = drain_seen(pool, ctx).await?;
    let condition = seen.condition().with_generation(pool);
    let newly_blocked = seen.state() == "Blocked"
        && sublet_crds::find_condition(&status.conditions, "Draining")
            .is_none_or(|c| c.reason != "Blocked" || c.message != condition.message);
    if newly_blocked {
        ctx.event(
            pool,
            EventType::Warning,
            "DrainBlocked",
            condition.message.clone(),
            "Drain",
        )
        .await;
    }
    status.drain = Some(seen.progress());
    set_condition(&mut status.conditions, condition, now);
    Ok(seen.state())
}

/// A deleted pool: its providers keep running (the finalizer holds the owner references)
/// while the gateways, told by `drain: true` in their config, move its shards elsewhere.
/// Once every gateway of the namespace reports no shards on it, the finalizer goes.
async fn drain(
    pool: &ProviderPool,
    ctx: &Context,
    mut status: ProviderPoolStatus,
    now: &str,
) -> Result<Action> {
    if !pool.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = pool.name_any();
    let seen = drain_seen(pool, ctx).await?;
    if seen.held.is_empty() {
        let finalizers = pool
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        set_finalizers(pool, ctx, finalizers).await?;
        info!(pool = %name, "pool drained; its providers go");
        return Ok(Action::await_change());
    }
    let message = if seen.blocked.is_empty() {
        format!(
            "deleting: {}; repair moves the shards to other pools before the providers go \
             (remove finalizer {FINALIZER} to delete now and lose them)",
            seen.held.join("; ")
        )
    } else {
        format!(
            "deleting, but the drain is blocked: {}; change those plans, or remove finalizer \
             {FINALIZER} to delete now and lose the shards",
            seen.blocked.join("; ")
        )
    };
    let changed = ready_changed(&status.conditions, false, &message);
    let reason = if seen.blocked.is_empty() {
        "Draining"
    } else {
        "DrainBlocked"
    };
    set_condition(
        &mut status.conditions,
        Condition::new("Ready", false, reason, message.clone()).with_generation(pool),
        now,
    );
    status.drain = Some(seen.progress());
    set_condition(
        &mut status.conditions,
        seen.condition().with_generation(pool),
        now,
    );
    patch_status(&ctx.client, pool, &status).await?;
    if changed {
        let kind = if seen.blocked.is_empty() {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.event(pool, kind, reason, message, "Drain").await;
    }
    Ok(Action::requeue(if seen.blocked.is_empty() {
        DRAIN_POLL
    } else {
        RESYNC
    }))
}

/// How long a provider whose pod is gone stays in status (and in the gateway config) as a
/// member that is not ready, so a restarted pod does not take it out and put it back.
pub const GONE_MEMBER_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

/// The members read from provider pods, corrected by what status said before: a pod that
/// has not printed its node id yet (restarting, just replaced) keeps its node's previous
/// address and node id until it has, and a member whose pod is gone stays, not ready, for
/// [`GONE_MEMBER_KEPT`] after it was last seen. So a provider restart changes the gateway
/// config once, when the new pod is identified, and never to an endpoint without a node id.
pub fn keep_identified(
    mut members: Vec<PoolMember>,
    previous: &BTreeMap<String, PoolMember>,
    endpoints: &[sublet_crds::Endpoint],
    now: jiff::Timestamp,
) -> Vec<PoolMember> {
    for member in &mut members {
        if member.node_id.is_empty()
            && let Some(before) = previous.get(&member.name)
            && !before.node_id.is_empty()
        {
            member.node_id = before.node_id.clone();
            member.address = before.address.clone();
            member.ready = false;
        }
    }
    for (name, before) in previous {
        let from_spec = endpoints.iter().any(|e| &e.name == name);
        let recent = before
            .last_seen
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| {
                now.as_second() - t.as_second() < GONE_MEMBER_KEPT.as_secs().cast_signed()
            });
        if !from_spec
            && recent
            && !before.node_id.is_empty()
            && !members.iter().any(|m| &m.name == name)
        {
            members.push(PoolMember {
                ready: false,
                ..before.clone()
            });
        }
    }
    members
}

/// `lastSeen` moves in steps of this much, so a status patch that changes nothing else is a
/// no-op: every status write triggers a reconcile, which would write again.
pub const LAST_SEEN_STEP: std::time::Duration = std::time::Duration::from_secs(300);

/// The `lastSeen` to report: now for a ready member unless the previous one is recent
/// enough, else the previous one.
pub(crate) fn last_seen(ready: bool, before: Option<&str>, ctx: &Context) -> Option<String> {
    let recent = before
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| {
            (ctx.now)().as_second() - t.as_second() < LAST_SEEN_STEP.as_secs().cast_signed()
        });
    match (ready, recent) {
        (true, false) => Some(ctx.now_text()),
        _ => before.map(str::to_owned),
    }
}

/// Bytes for people: `0`, `512Mi`, `1.5Ti` (one decimal, binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, factor) in UNITS {
        if bytes >= factor {
            let tenths = u128::from(bytes) * 10 / u128::from(factor);
            return if tenths % 10 == 0 {
                format!("{}{unit}", tenths / 10)
            } else {
                format!("{}.{}{unit}", tenths / 10, tenths % 10)
            };
        }
    }
    bytes.to_string()
}

/// Whether `Ready` moves to `ready` or its message changes, so an Event is worth sending.
pub(crate) fn ready_changed(conditions: &[Condition], ready: bool, message: &str) -> bool {
    sublet_crds::find_condition(conditions, "Ready").is_none_or(|c| {
        c.status != sublet_crds::ConditionStatus::from(ready) || c.message != message
    })
}

/// Stamps conditions with the generation they were computed from.
pub(crate) trait WithGeneration {
    fn with_generation<K: kube::Resource>(self, obj: &K) -> Self;
}

impl WithGeneration for Condition {
    fn with_generation<K: kube::Resource>(mut self, obj: &K) -> Self {
        self.observed_generation = obj.meta().generation;
        self
    }
}

fn selector_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The node's zone label, or the node's name when it has none (each node its own zone).
async fn node_zone(ctx: &Context, node: &str) -> Result<String> {
    let found = Api::<Node>::all(ctx.client.clone())
        .get_opt(node)
        .await
        .map_err(Error::kube("get", "Node", node))?;
    Ok(found
        .and_then(|n| n.labels().get(ZONE_LABEL).cloned())
        .unwrap_or_else(|| node.to_owned()))
}

/// A member from a provider pod: named after its node, addressed by pod IP, its node id
/// read from the identity init container's termination message.
pub fn member_of_pod(pod: &Pod, node: &str, zone: &str, capacity: u64) -> PoolMember {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let address = status
        .and_then(|s| s.pod_ip.as_ref())
        .map(|ip| {
            if ip.contains(':') {
                format!("https://[{ip}]:{PROVIDER_GRPC_PORT}")
            } else {
                format!("https://{ip}:{PROVIDER_GRPC_PORT}")
            }
        })
        .unwrap_or_default();
    let node_id = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == IDENTITY_CONTAINER))
        .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .map(|m| m.trim().to_owned())
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default();
    PoolMember {
        name: dns_label(node),
        node_id,
        address,
        zone: zone.to_owned(),
        ready,
        capacity_bytes: capacity,
        ..PoolMember::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::pool_member;

    fn seen(mut member: PoolMember, at: &str) -> PoolMember {
        member.last_seen = Some(at.into());
        member
    }

    /// Issue 28: a provider restart rolled the gateway twice, the first time with an
    /// endpoint without its node id.
    #[test]
    fn a_restarting_provider_keeps_its_pinned_endpoint_until_identified_again() {
        let now: jiff::Timestamp = "2026-11-28T02:00:00Z".parse().unwrap();
        let previous: BTreeMap<String, PoolMember> = [
            seen(
                pool_member("node-a", "https://10.0.0.1:7480", "aa", "a", true),
                "2026-11-28T01:59:00Z",
            ),
            seen(
                pool_member("node-b", "https://10.0.0.2:7480", "bb", "b", true),
                "2026-11-28T01:58:00Z",
            ),
            // Gone for longer than GONE_MEMBER_KEPT: dropped.
            seen(
                pool_member("node-c", "https://10.0.0.3:7480", "cc", "c", true),
                "2026-11-28T01:00:00Z",
            ),
            // Named in spec.endpoints: the pool reports it itself.
            seen(
                pool_member("nas", "nas:7480", "dd", "d", true),
                "2026-11-28T01:59:00Z",
            ),
        ]
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
        let endpoints = vec![sublet_crds::Endpoint {
            name: "nas".into(),
            address: "nas:7480".into(),
            node_id: None,
            zone: None,
            owner: None,
        }];
        // node-a's new pod has a new address and no node id yet; node-b's pod is gone.
        let current = vec![pool_member(
            "node-a",
            "https://10.0.0.9:7480",
            "",
            "a",
            false,
        )];
        let members = keep_identified(current, &previous, &endpoints, now);
        let summary: Vec<(&str, &str, &str, bool)> = members
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.address.as_str(),
                    m.node_id.as_str(),
                    m.ready,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("node-a", "https://10.0.0.1:7480", "aa", false),
                ("node-b", "https://10.0.0.2:7480", "bb", false),
            ]
        );
        // Once identified, the new address goes in: one change of the config.
        let current = vec![pool_member(
            "node-a",
            "https://10.0.0.9:7480",
            "aa",
            "a",
            true,
        )];
        let members = keep_identified(current, &previous, &endpoints, now);
        assert_eq!(members[0].address, "https://10.0.0.9:7480");
        assert!(members[0].ready);
    }
}
