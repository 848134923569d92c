//! StorageSchedule: validity (alone and against the plans naming it) and running repairs.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use sublet_crds::{
    Condition, ProviderPool, StorageGateway, StoragePlan, StorageSchedule, set_condition,
};
use tracing::warn;

use super::pool::{WithGeneration, ready_changed};
use super::{Context, RESYNC, list_all, patch_status};
use crate::render::config::{Inventory, select};
use crate::render::gateway::admin_url;
use crate::render::{LABEL_SCHEDULE, namespace_of};
use crate::{Error, Result};

/// Reconciles one schedule.
pub async fn reconcile(schedule: Arc<StorageSchedule>, ctx: Arc<Context>) -> Result<Action> {
    let ns = namespace_of(&*schedule)?;
    let name = schedule.name_any();
    let now = ctx.now_text();
    let mut status = schedule.status.clone().unwrap_or_default();

    let pools: Vec<ProviderPool> = list_all(&ctx.client, &ns).await?;
    let plans: Vec<StoragePlan> = list_all(&ctx.client, &ns).await?;
    let schedules: Vec<StorageSchedule> = list_all(&ctx.client, &ns).await?;
    let selection = select(
        Inventory {
            pools: &pools,
            plans: &plans,
            schedules: &schedules,
        },
        None,
    )
    .map_err(|message| Error::Config {
        gateway: "(none)".into(),
        message,
    })?;
    let ready = match selection.reason("StorageSchedule", &name) {
        Some(reason) => {
            if ready_changed(&status.conditions, false, reason) {
                ctx.event(
                    &*schedule,
                    EventType::Warning,
                    "Invalid",
                    reason.to_owned(),
                    "Validate",
                )
                .await;
            }
            Condition::new("Ready", false, "Invalid", reason)
        }
        None => Condition::new(
            "Ready",
            true,
            "InConfig",
            "valid; gateways of the namespace apply it",
        ),
    };
    set_condition(
        &mut status.conditions,
        ready.with_generation(&*schedule),
        &now,
    );

    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("{LABEL_SCHEDULE}={name}")))
        .await
        .map_err(Error::kube(
            "list",
            "Job",
            format!("repairs of schedule {name}"),
        ))?
        .items;
    status.running_repairs = jobs
        .iter()
        .filter(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0)
        .count() as u64;
    // Objects waiting for repair in the plans of this schedule that the config serves.
    if ctx.poll_due(&*schedule) {
        let mut gateways: Vec<StorageGateway> = list_all(&ctx.client, &ns).await?;
        gateways.sort_by_key(|g| g.name_any());
        if let Some(gateway) = gateways.first() {
            let url = admin_url(gateway)?;
            let mut queued = 0u64;
            let mut known = true;
            for plan in &selection.plans {
                if plan.spec.schedule.as_deref() != Some(name.as_str()) {
                    continue;
                }
                match ctx.admin.plan_health(&url, &plan.name_any()).await {
                    Ok(health) => queued += health.repair.due + health.repair.waiting,
                    Err(err) => {
                        warn!(schedule = %name, %err, "cannot read the repair queue");
                        known = false;
                    }
                }
            }
            if known {
                status.queued_repairs = queued;
            }
        }
    }
    patch_status(&ctx.client, &*schedule, &status).await?;
    Ok(Action::requeue(RESYNC))
}
