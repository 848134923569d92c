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
    let applied = match &objects.workload {
        GatewayWorkload::StatefulSet(sts) => {
            GatewayWorkload::StatefulSet(apply(&ctx.client, sts).await?)
        }
        GatewayWorkload::Deployment(d) => GatewayWorkload::Deployment(apply(&ctx.client, d).await?),
    };
    let Rollout {
        ready: ready_replicas,
        rolled_out,
    } = rollout(&applied);

    status.ready_replicas = ready_replicas;
    status.endpoint = Some(endpoint(&gateway)?);
    let ready = if ready_replicas > 0 && rolled_out {
        Condition::new(
            "Ready",
            true,
            "Serving",
            format!(
                "{ready_replicas} of {} replicas ready",
                gateway.spec.replicas
            ),
        )
    } else if ready_replicas > 0 {
        // A pod of the previous config still answers, but is about to be replaced: a
        // client starting now (a port-forward, the quick start's next command) would lose
        // it within seconds.
        Condition::new(
            "Ready",
            false,
            "RollingOut",
            format!(
                "rolling out a new config; {ready_replicas} of {} replicas ready",
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

/// Replicas ready, and whether every pod runs the current pod template (so the current
/// config), as the workload's status says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rollout {
    ready: u32,
    rolled_out: bool,
}

fn rollout(workload: &GatewayWorkload) -> Rollout {
    let count = |n: Option<i32>| u32::try_from(n.unwrap_or(0)).unwrap_or(0);
    match workload {
        GatewayWorkload::StatefulSet(sts) => {
            let generation = sts.metadata.generation.unwrap_or(0);
            let Some(s) = &sts.status else {
                return Rollout {
                    ready: 0,
                    rolled_out: false,
                };
            };
            Rollout {
                ready: count(s.ready_replicas),
                // The controller sets currentRevision to updateRevision once every pod runs
                // the new template.
                rolled_out: s.observed_generation.unwrap_or(0) >= generation
                    && s.update_revision.is_some()
                    && s.current_revision == s.update_revision,
            }
        }
        GatewayWorkload::Deployment(d) => {
            let generation = d.metadata.generation.unwrap_or(0);
            let wanted = count(d.spec.as_ref().and_then(|s| s.replicas));
            let Some(s) = &d.status else {
                return Rollout {
                    ready: 0,
                    rolled_out: false,
                };
            };
            let updated = count(s.updated_replicas);
            Rollout {
                ready: count(s.ready_replicas),
                // Every wanted pod is of the new template and no old one is left.
                rolled_out: s.observed_generation.unwrap_or(0) >= generation
                    && updated >= wanted
                    && count(s.replicas) <= updated,
            }
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use serde_json::json;

    use super::{GatewayWorkload, Rollout, rollout};

    fn sts(generation: i64, status: serde_json::Value) -> GatewayWorkload {
        GatewayWorkload::StatefulSet(
            serde_json::from_value::<StatefulSet>(json!({
                "metadata": {"name": "s3", "generation": generation},
                "status": status,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_stateful_set_is_rolled_out_when_its_pods_run_the_current_revision() {
        let done = json!({"replicas": 1, "readyReplicas": 1, "observedGeneration": 2,
            "currentRevision": "s3-b", "updateRevision": "s3-b"});
        assert_eq!(
            rollout(&sts(2, done)),
            Rollout {
                ready: 1,
                rolled_out: true
            }
        );
        // The old pod still answers while the new template waits to replace it.
        let rolling = json!({"replicas": 1, "readyReplicas": 1, "observedGeneration": 2,
            "currentRevision": "s3-a", "updateRevision": "s3-b"});
        assert!(!rollout(&sts(2, rolling)).rolled_out);
        // The controller has not seen the new template yet.
        let stale = json!({"replicas": 1, "readyReplicas": 1, "observedGeneration": 1,
            "currentRevision": "s3-a", "updateRevision": "s3-a"});
        assert!(!rollout(&sts(2, stale)).rolled_out);
        assert_eq!(
            rollout(&sts(1, json!(null))),
            Rollout {
                ready: 0,
                rolled_out: false
            }
        );
    }

    #[test]
    fn a_deployment_is_rolled_out_when_no_old_pod_is_left() {
        let deployment = |status: serde_json::Value| {
            GatewayWorkload::Deployment(
                serde_json::from_value::<Deployment>(json!({
                    "metadata": {"name": "s3", "generation": 3},
                    "spec": {"replicas": 2, "selector": {}, "template": {}},
                    "status": status,
                }))
                .unwrap(),
            )
        };
        let done = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2});
        assert_eq!(
            rollout(&deployment(done)),
            Rollout {
                ready: 2,
                rolled_out: true
            }
        );
        let surge = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3});
        assert!(!rollout(&deployment(surge)).rolled_out);
        let half = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 2});
        assert!(!rollout(&deployment(half)).rolled_out);
    }
}
