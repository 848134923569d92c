//! StorageSchedule: validity (alone and against the plans naming it) and running repairs.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use sublet_crds::{Condition, ProviderPool, StoragePlan, StorageSchedule, set_condition};

use super::pool::{WithGeneration, ready_changed};
use super::{Context, RESYNC, list_all, patch_status};
use crate::render::config::{Inventory, select};
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
    patch_status(&ctx.client, &*schedule, &status).await?;
    Ok(Action::requeue(RESYNC))
}
