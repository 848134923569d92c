//! Online re-encoding: when a plan's redundancy or encryption changes (an edited config file
//! after a restart, or a policy applied through the admin API), the objects stored under the
//! old settings are rewritten under the new ones in the background. Each object is read,
//! encoded and written again exactly as a lifecycle transition does, and its layout swapped
//! by compare-and-swap, so it stays readable throughout and a concurrent overwrite, delete
//! or repair wins over the re-encode (which then frees what it wrote).
//!
//! Changed placement rules (a pool removed from the plan, a lower `maxShards` or
//! `maxPerDomain`) need no re-encoding: the shards that break them are rebuilt on providers
//! the rules allow, the way repair does it (read from the stripe, misplaced shards
//! included, switched by compare-and-swap, the old ones deleted). Earlier shards of a stripe
//! keep their place; a pool's raised `minShards` applies to new writes and repairs only.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::meta::ObjectVersion;
use crate::node::rules::{conforms, misplaced_shards};
use crate::node::{Node, Plan};

/// Versions read from metadata at a time while looking for outdated ones.
const BATCH: usize = 500;

/// What one re-encode pass of a plan did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReencodeReport {
    pub plan: String,
    /// Versions of the plan stored under other settings when the pass started.
    pub outdated: u64,
    /// Of those, rewritten under the plan's settings.
    pub reencoded: u64,
    /// Shards of the plan's other versions that break its placement rules when the pass
    /// started.
    pub misplaced: u64,
    /// Of those, moved to providers the rules allow.
    pub moved: u64,
    /// Changed by a client or a repair meanwhile: left for the next pass.
    pub conflicts: u64,
    /// Failed (unreadable, unplaceable); tried again next pass.
    pub failed: u64,
    /// Outdated versions encrypted with a customer's key (SSE-C), which re-encoding would
    /// need to read and the gateway never keeps: they stay as they are (still readable
    /// with the key, and repaired like any other) until their owner rewrites them.
    #[serde(default)]
    pub customer_keyed: u64,
}

impl ReencodeReport {
    /// Counts the pass into `metrics`.
    pub fn record(&self, metrics: &crate::metrics::Metrics) {
        metrics
            .reencoded_objects
            .with_label_values(&[&self.plan])
            .inc_by(self.reencoded);
        metrics
            .reencode_pending
            .with_label_values(&[&self.plan])
            .set(i64::try_from(self.outdated - self.reencoded).unwrap_or(i64::MAX));
    }
}

/// What a re-encode pass found to do.
#[derive(Debug, Default)]
pub struct Outdated {
    /// Versions stored under other settings (the first `limit`).
    pub versions: Vec<ObjectVersion>,
    /// How many versions are stored under other settings.
    pub total: u64,
    /// Row ids of versions with misplaced shards (the first `limit`).
    pub misplaced: Vec<i64>,
    /// How many shards are misplaced.
    pub misplaced_shards: u64,
    /// How many outdated versions are encrypted with a customer's key (SSE-C): left as
    /// they are, not counted in `total`.
    pub customer_keyed: u64,
}

/// What a re-encode pass of `plan` has to do: the first `limit` versions whose layout
/// does not match the plan's settings and how many there are in all, then the row ids
/// of the first `limit` other versions with shards that break the plan's placement
/// rules and how many shards those are in all.
pub async fn outdated_versions(node: &Node, plan: &Plan, limit: usize) -> anyhow::Result<Outdated> {
    let topology = node.topology();
    let mut out = Outdated::default();
    let mut after = 0;
    loop {
        let meta = Arc::clone(node.metadata());
        let batch =
            tokio::task::spawn_blocking(move || meta.versions_after(after, BATCH)).await??;
        let Some(&(last, _)) = batch.last() else {
            return Ok(out);
        };
        after = last;
        for (seq, v) in batch {
            let Some(layout) = v.layout.as_ref().filter(|_| v.plan == plan.name) else {
                continue;
            };
            if !conforms(layout, plan) {
                if layout.customer_seal().is_some() {
                    out.customer_keyed += 1;
                    continue;
                }
                out.total += 1;
                if out.versions.len() < limit {
                    out.versions.push(v);
                }
                continue;
            }
            let wrong = misplaced_shards(layout, &topology, &plan.name).len();
            if wrong > 0 {
                out.misplaced_shards += wrong as u64;
                if out.misplaced.len() < limit {
                    out.misplaced.push(seq);
                }
            }
        }
    }
}

/// Rewrites up to `limit` outdated versions of `plan` under its current settings, and
/// moves the misplaced shards of up to `limit` other versions.
pub async fn reencode_pass(
    node: &Arc<Node>,
    plan_name: &str,
    limit: usize,
) -> anyhow::Result<ReencodeReport> {
    let plan = node
        .plans()
        .iter()
        .find(|p| p.name == plan_name)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("plan {plan_name} is not configured"))?;
    let mut report = ReencodeReport {
        plan: plan.name.clone(),
        ..ReencodeReport::default()
    };
    let todo = outdated_versions(node, &plan, limit).await?;
    report.outdated = todo.total;
    report.misplaced = todo.misplaced_shards;
    report.customer_keyed = todo.customer_keyed;
    if todo.customer_keyed > 0 {
        tracing::info!(
            plan = plan.name,
            versions = todo.customer_keyed,
            "outdated versions encrypted with customers' keys (SSE-C) are left as they are: re-encoding them needs the key"
        );
    }
    let mover = crate::upkeep::repair::Repairer::new(Arc::clone(node), None);
    for seq in todo.misplaced {
        match mover.relocate(&plan.name, seq).await {
            Ok(n) => report.moved += n,
            Err(e) => {
                report.failed += 1;
                tracing::warn!(plan = plan.name, error = %format!("{e:#}"), "moving misplaced shards failed; tried again next pass");
            }
        }
    }
    for v in todo.versions {
        match crate::upkeep::lifecycle::transition(node, &v, &plan.name).await {
            Ok(true) => {
                report.reencoded += 1;
                tracing::info!(
                    plan = plan.name,
                    bucket = v.bucket,
                    key = v.key,
                    version = v.version_id,
                    "object re-encoded under its plan's current settings"
                );
            }
            Ok(false) => report.conflicts += 1,
            Err(e) => {
                report.failed += 1;
                tracing::warn!(plan = plan.name, bucket = v.bucket, key = v.key, error = %e, "re-encoding failed; tried again next pass");
            }
        }
    }
    Ok(report)
}
/// How often a gateway looks for objects to re-encode, and how many it rewrites per plan
/// each time.
pub const REENCODE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
pub const REENCODE_PER_PASS: usize = 200;

/// Re-encodes outdated objects of every plan every `every` until `stop` changes, and keeps
/// `metrics` showing how many are left.
pub fn spawn_reencode(
    gateway: Arc<Node>,
    metrics: Option<crate::metrics::Metrics>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let names: Vec<String> = gateway.plans().iter().map(|p| p.name.clone()).collect();
            for name in names {
                match reencode_pass(&gateway, &name, REENCODE_PER_PASS).await {
                    Ok(report) => {
                        if let Some(m) = &metrics {
                            report.record(m);
                        }
                        if report.outdated > 0 {
                            tracing::info!(?report, "re-encode pass done");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(plan = name, error = %format!("{e:#}"), "re-encode pass failed");
                    }
                }
            }
        }
    })
}
