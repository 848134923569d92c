//! StoragePlan: validity (is it in the gateway config?), feasibility on today's providers,
//! health from the gateway admin API, and rebuild Jobs when objects are due for repair.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use sublet_crds::{
    Condition, ProviderPool, Rebuild, StorageGateway, StoragePlan, StorageSchedule, find_condition,
    set_condition,
};
use tracing::info;

use super::pool::{WithGeneration, ready_changed};
use super::{Context, RESYNC, list_all, patch_status};
use crate::feasibility;
use crate::render::config::{Inventory, select};
use crate::render::gateway::admin_url;
use crate::render::job::{NO_SCHEDULE, repair_job};
use crate::render::{LABEL_PLAN, LABEL_SCHEDULE, namespace_of};
use crate::repair::{RepairDecision, RepairInput, decide};
use crate::{Error, Result};

/// Annotation set on a finished Job once its outcome was reported as an Event.
pub const ANNOTATION_REPORTED: &str = "sublet.dev/reported";

/// Reconciles one plan.
pub async fn reconcile(plan: Arc<StoragePlan>, ctx: Arc<Context>) -> Result<Action> {
    let ns = namespace_of(&*plan)?;
    let name = plan.name_any();
    let now = ctx.now_text();
    let mut status = plan.status.clone().unwrap_or_default();
    status.redundancy = Some(plan.spec.redundancy_label());
    status.pools = Some(plan.spec.pools_label());

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

    let invalid = selection.reason("StoragePlan", &name).map(str::to_owned);
    let ready = match &invalid {
        Some(reason) => Condition::new("Ready", false, "Invalid", reason.clone()),
        None => Condition::new(
            "Ready",
            true,
            "InConfig",
            "valid; gateways of the namespace serve it",
        ),
    };
    if let Some(reason) = &invalid
        && ready_changed(&status.conditions, false, reason)
    {
        ctx.event(
            &*plan,
            EventType::Warning,
            "Invalid",
            reason.clone(),
            "Validate",
        )
        .await;
    }
    set_condition(&mut status.conditions, ready.with_generation(&*plan), &now);

    let feasible = match feasibility::check(&plan.spec, &pools) {
        Ok(()) => Condition::new(
            "Feasible",
            true,
            "Placeable",
            "the ready providers can hold every shard of a stripe",
        ),
        Err(rule) => Condition::new("Feasible", false, "NotEnoughProviders", rule),
    };
    set_condition(
        &mut status.conditions,
        feasible.with_generation(&*plan),
        &now,
    );

    if invalid.is_none() {
        let mut gateways: Vec<StorageGateway> = list_all(&ctx.client, &ns).await?;
        gateways.sort_by_key(|g| g.name_any());
        match gateways.first() {
            None => set_condition(
                &mut status.conditions,
                Condition::new(
                    "Degraded",
                    sublet_crds::ConditionStatus::Unknown,
                    "NoGateway",
                    "no StorageGateway in this namespace reports the plan's health",
                )
                .with_generation(&*plan),
                &now,
            ),
            // Health and repairs were looked at moments ago (this reconcile is most likely
            // the echo of that status write): keep what status says.
            Some(_) if !ctx.poll_due(&*plan) => {}
            Some(gateway) => {
                let schedule = plan
                    .spec
                    .schedule
                    .as_ref()
                    .and_then(|s| schedules.iter().find(|x| &x.name_any() == s));
                health_and_repair(&plan, gateway, schedule, &ctx, &mut status, &now).await?;
            }
        }
    }
    patch_status(&ctx.client, &*plan, &status).await?;
    Ok(Action::requeue(RESYNC))
}

fn job_finished(job: &Job) -> Option<bool> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_ == "Complete")
}

async fn health_and_repair(
    plan: &StoragePlan,
    gateway: &StorageGateway,
    schedule: Option<&StorageSchedule>,
    ctx: &Context,
    status: &mut sublet_crds::StoragePlanStatus,
    now: &str,
) -> Result<()> {
    let name = plan.name_any();
    let ns = namespace_of(plan)?;
    let health = match ctx.admin.plan_health(&admin_url(gateway)?, &name).await {
        Ok(health) => health,
        Err(err) => {
            set_condition(
                &mut status.conditions,
                Condition::new(
                    "Degraded",
                    sublet_crds::ConditionStatus::Unknown,
                    "HealthUnknown",
                    err.to_string(),
                )
                .with_generation(plan),
                now,
            );
            return Ok(());
        }
    };
    status.objects = health.objects;
    status.logical_bytes = health.logical_bytes;
    status.stored_bytes = health.stored_bytes;
    status.shards = health.shards;
    status.healthy_percent = health.shards.healthy_percent();
    let unhealthy = health.shards.degraded + health.shards.at_risk + health.shards.lost;
    let degraded = if unhealthy == 0 {
        Condition::new(
            "Degraded",
            false,
            "AllShardsHealthy",
            "every shard is healthy",
        )
    } else {
        Condition::new(
            "Degraded",
            true,
            if health.shards.lost > 0 {
                "ShardsLost"
            } else {
                "ShardsMissing"
            },
            format!(
                "{} degraded, {} at risk, {} lost shards; {} objects due for repair, {} at risk, {} in the grace period",
                health.shards.degraded,
                health.shards.at_risk,
                health.shards.lost,
                health.repair.due,
                health.repair.at_risk,
                health.repair.waiting
            ),
        )
    };
    set_condition(&mut status.conditions, degraded.with_generation(plan), now);

    let schedule_label = plan.spec.schedule.as_deref().unwrap_or(NO_SCHEDULE);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs = jobs_api
        .list(&ListParams::default().labels(&format!("{LABEL_SCHEDULE}={schedule_label}")))
        .await
        .map_err(Error::kube(
            "list",
            "Job",
            format!("repairs of schedule {schedule_label}"),
        ))?
        .items;
    let mut running_for_schedule = 0u32;
    let mut running_for_plan = 0u32;
    for job in &jobs {
        let of_plan = job.labels().get(LABEL_PLAN) == Some(&name);
        match job_finished(job) {
            None => {
                running_for_schedule += 1;
                running_for_plan += u32::from(of_plan);
            }
            Some(succeeded) if of_plan && !job.annotations().contains_key(ANNOTATION_REPORTED) => {
                let job_name = job.name_any();
                let (type_, reason, note) = if succeeded {
                    (
                        EventType::Normal,
                        "RepairSucceeded",
                        format!("rebuild Job {job_name} finished"),
                    )
                } else {
                    (
                        EventType::Warning,
                        "RepairFailed",
                        format!("rebuild Job {job_name} failed; see its pod logs"),
                    )
                };
                ctx.event(plan, type_, reason, note, "Repair").await;
                let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_REPORTED: if succeeded { "succeeded" } else { "failed" }}}});
                jobs_api
                    .patch(&job_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::kube("annotate", "Job", job_name.clone()))?;
                set_condition(
                    &mut status.conditions,
                    Condition::new(
                        "LastRepairSucceeded",
                        succeeded,
                        reason,
                        format!("Job {job_name}"),
                    )
                    .with_generation(plan),
                    now,
                );
            }
            Some(_) => {}
        }
    }

    let default_rebuild = Rebuild::default();
    let rebuild = schedule.map_or(&default_rebuild, |s| &s.spec.rebuild);
    let ts = (ctx.now)();
    let minute_of_day = u32::try_from(ts.as_second().rem_euclid(86_400) / 60).unwrap_or(0);
    let decision = decide(RepairInput {
        queue: health.repair,
        rebuild,
        minute_of_day,
        running_for_schedule,
        running_for_plan,
    });
    let repairing = match decision {
        RepairDecision::Idle if running_for_plan == 0 => {
            Condition::new("Repairing", false, "Idle", "no objects due for repair")
        }
        RepairDecision::Idle => Condition::new(
            "Repairing",
            true,
            "JobsRunning",
            format!("{running_for_plan} rebuild Jobs running"),
        ),
        RepairDecision::Wait(why) => {
            Condition::new("Repairing", running_for_plan > 0, "Waiting", why)
        }
        RepairDecision::Start { jobs, urgent } => {
            for _ in 0..jobs {
                let job = repair_job(
                    plan,
                    gateway,
                    &ctx.images,
                    rebuild.bandwidth_limit.clone(),
                    urgent,
                )?;
                let params = PostParams {
                    field_manager: Some(crate::FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                let created = jobs_api.create(&params, &job).await.map_err(Error::kube(
                    "create",
                    "Job",
                    format!("{name}-repair-*"),
                ))?;
                info!(plan = %name, job = %created.name_any(), urgent, "rebuild job created");
                ctx.metrics
                    .repair_jobs
                    .with_label_values(&[ns.as_str(), name.as_str()])
                    .inc();
            }
            let note = format!(
                "started {} for {} due for repair{}",
                super::counted(u64::from(jobs), "rebuild Job", "rebuild Jobs"),
                super::counted(health.repair.due, "object", "objects"),
                if urgent {
                    " (objects at risk: window ignored)"
                } else {
                    ""
                }
            );
            ctx.event(
                plan,
                EventType::Normal,
                "RepairStarted",
                note.clone(),
                "Repair",
            )
            .await;
            Condition::new("Repairing", true, "JobsStarted", note)
        }
    };
    if find_condition(&status.conditions, "Repairing")
        .is_none_or(|c| c.message != repairing.message || c.status != repairing.status)
    {
        set_condition(&mut status.conditions, repairing.with_generation(plan), now);
    }
    Ok(())
}
