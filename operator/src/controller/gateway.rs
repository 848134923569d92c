//! StorageGateway: the config rendered from the namespace's resources, Secrets (provider
//! token, master key, S3 credentials, admin token) created once, the workload and Services
//! applied, ready replicas and endpoint in status.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use sublet_crds::{
    Condition, ProviderPool, StorageGateway, StoragePlan, StorageSchedule, set_condition,
};

use super::lenient::list_reporting;
use super::pool::{WithGeneration, ready_changed};
use super::{Context, INVALID_RESYNC, RESYNC, apply, create_if_missing, patch_status};
use crate::render::config::{Inventory, render_config};
use crate::render::gateway::{
    GatewayWorkload, admin_token_secret, credentials_secret, endpoint, gateway_objects,
    master_key_secret, provider_token_secret,
};
use crate::render::{APP_GATEWAY, namespace_of};
use crate::{Error, Result};

/// Reconciles one gateway.
pub async fn reconcile(gateway: Arc<StorageGateway>, ctx: Arc<Context>) -> Result<Action> {
    let ns = namespace_of(&*gateway)?;
    let now = ctx.now_text();
    let mut status = gateway.status.clone().unwrap_or_default();

    let problems = gateway.spec.validate();
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return not_ready(&gateway, &ctx, status, "Invalid", message, &now).await;
    }

    // The keys come first: they do not depend on the config, and a gateway waiting for a
    // config that loads should already have the master key to back up.
    create_if_missing(&ctx.client, &provider_token_secret(&ns)).await?;
    if create_if_missing(&ctx.client, &master_key_secret(&gateway)?).await? {
        ctx.event(
            &*gateway,
            EventType::Normal,
            "MasterKeyCreated",
            format!(
                "created Secret {}-master-key; back it up: without it no object can be read",
                gateway.name_any()
            ),
            "CreateSecret",
        )
        .await;
    }
    create_if_missing(&ctx.client, &credentials_secret(&gateway)?).await?;
    create_if_missing(&ctx.client, &admin_token_secret(&gateway)?).await?;

    let (pools, mut unreadable) = list_reporting::<ProviderPool>(&ctx.client, &ns).await?;
    let (plans, more) = list_reporting::<StoragePlan>(&ctx.client, &ns).await?;
    unreadable.extend(more);
    let (schedules, more) = list_reporting::<StorageSchedule>(&ctx.client, &ns).await?;
    unreadable.extend(more);
    let inventory = Inventory {
        pools: &pools,
        plans: &plans,
        schedules: &schedules,
    };
    let mut config = match render_config(&gateway, inventory) {
        Ok(config) => config,
        // The last good config and workload stay in place; the gateway keeps serving.
        Err(Error::Config { message, .. }) => {
            return not_ready(&gateway, &ctx, status, "ConfigInvalid", message, &now).await;
        }
        Err(other) => return Err(other),
    };

    // Objects the operator cannot read are not in the config either: say so.
    config.excluded.extend(unreadable);
    config.excluded.sort();
    let objects = gateway_objects(&gateway, &ctx.images, &config)?;
    apply(&ctx.client, &objects.config_map).await?;
    apply(&ctx.client, &objects.service).await?;
    apply(&ctx.client, &objects.admin_service).await?;
    let ready_replicas = match &objects.workload {
        GatewayWorkload::StatefulSet(sts) => apply(&ctx.client, sts)
            .await?
            .status
            .and_then(|s| s.ready_replicas),
        GatewayWorkload::Deployment(d) => apply(&ctx.client, d)
            .await?
            .status
            .and_then(|s| s.ready_replicas),
    };
    let ready_replicas = u32::try_from(ready_replicas.unwrap_or(0)).unwrap_or(0);

    status.ready_replicas = ready_replicas;
    status.endpoint = Some(endpoint(&gateway)?);
    let ready = if ready_replicas > 0 {
        Condition::new(
            "Ready",
            true,
            "Serving",
            format!(
                "{ready_replicas} of {} replicas ready",
                gateway.spec.replicas
            ),
        )
    } else {
        let why = pods_not_starting(&ctx, &ns, &gateway.name_any()).await?;
        Condition::new(
            "Ready",
            false,
            "Starting",
            format!(
                "0 of {} replicas ready{}",
                gateway.spec.replicas,
                if why.is_empty() {
                    String::new()
                } else {
                    format!("; {}", why.join("; "))
                }
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        ready.with_generation(&*gateway),
        &now,
    );
    let complete = if config.excluded.is_empty() {
        Condition::new(
            "ConfigComplete",
            true,
            "AllResourcesIncluded",
            "every pool, plan and schedule of the namespace is in the config",
        )
    } else {
        let left_out: Vec<String> = config
            .excluded
            .iter()
            .map(|e| format!("{}/{}: {}", e.kind, e.name, e.reason))
            .collect();
        Condition::new(
            "ConfigComplete",
            false,
            "ResourcesLeftOut",
            format!("left out of the config: {}", left_out.join("; ")),
        )
    };
    set_condition(
        &mut status.conditions,
        complete.with_generation(&*gateway),
        &now,
    );
    patch_status(&ctx.client, &*gateway, &status).await?;
    Ok(Action::requeue(RESYNC))
}

/// Why the gateway's pods do not start, one line per waiting container: e.g. `s3-0:
/// CreateContainerConfigError: secret "db" not found` for a PostgreSQL `secretRef` naming a
/// Secret that does not exist (the operator may not read Secrets to check for itself).
async fn pods_not_starting(ctx: &Context, ns: &str, gateway: &str) -> Result<Vec<String>> {
    let selector =
        format!("app.kubernetes.io/name={APP_GATEWAY},app.kubernetes.io/instance={gateway}");
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list", "Pod", format!("pods of {gateway}")))?;
    let mut why = Vec::new();
    for pod in &pods.items {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten();
        for status in statuses {
            if let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref())
                && let Some(reason) = &waiting.reason
                && reason != "ContainerCreating"
            {
                let message = waiting.message.as_deref().unwrap_or_default();
                why.push(format!("{}: {reason}: {message}", pod.name_any()));
            }
        }
    }
    why.sort();
    why.truncate(5);
    Ok(why)
}

async fn not_ready(
    gateway: &StorageGateway,
    ctx: &Context,
    mut status: sublet_crds::StorageGatewayStatus,
    reason: &str,
    message: String,
    now: &str,
) -> Result<Action> {
    let changed = ready_changed(&status.conditions, false, &message);
    set_condition(
        &mut status.conditions,
        Condition::new("Ready", false, reason, message.clone()).with_generation(gateway),
        now,
    );
    patch_status(&ctx.client, gateway, &status).await?;
    if changed {
        ctx.event(gateway, EventType::Warning, reason, message, "Reconcile")
            .await;
    }
    Ok(Action::requeue(INVALID_RESYNC))
}
