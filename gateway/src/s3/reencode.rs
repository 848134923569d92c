//! Online re-encoding: when a plan's redundancy or encryption changes (an edited config file
//! after a restart, or a policy applied through the admin API), the objects stored under the
//! old settings are rewritten under the new ones in the background. Each object is read,
//! encoded and written again exactly as a lifecycle transition does, and its layout swapped
//! by compare-and-swap, so it stays readable throughout and a concurrent overwrite, delete
//! or repair wins over the re-encode (which then frees what it wrote).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Gateway, Plan};
use crate::layout::{Encryption, Layout};
use crate::meta::ObjectVersion;

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
    /// Changed by a client or a repair meanwhile: left for the next pass.
    pub conflicts: u64,
    /// Failed (unreadable, unplaceable); tried again next pass.
    pub failed: u64,
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

/// Whether `layout` was written with `plan`'s current redundancy and encryption.
pub fn conforms(layout: &Layout, plan: &Plan) -> bool {
    if layout.inline.is_some() {
        return true;
    }
    layout.pieces().all(|piece| {
        piece.scheme == plan.scheme
            && matches!(piece.encryption, Encryption::Aes256Gcm { .. }) == plan.encrypt
    })
}

impl Gateway {
    /// The first `limit` versions of `plan` whose layout does not match the plan's
    /// settings, and how many there are in all.
    pub async fn outdated_versions(
        &self,
        plan: &Plan,
        limit: usize,
    ) -> anyhow::Result<(Vec<ObjectVersion>, u64)> {
        let mut out = Vec::new();
        let mut total = 0;
        let mut after = 0;
        loop {
            let meta = Arc::clone(self.metadata());
            let batch =
                tokio::task::spawn_blocking(move || meta.versions_after(after, BATCH)).await??;
            let Some(&(last, _)) = batch.last() else {
                return Ok((out, total));
            };
            after = last;
            for (_, v) in batch {
                let outdated =
                    v.plan == plan.name && v.layout.as_ref().is_some_and(|l| !conforms(l, plan));
                if outdated {
                    total += 1;
                    if out.len() < limit {
                        out.push(v);
                    }
                }
            }
        }
    }

    /// Rewrites up to `limit` outdated versions of `plan` under its current settings.
    pub async fn reencode_pass(
        &self,
        plan_name: &str,
        limit: usize,
    ) -> anyhow::Result<ReencodeReport> {
        let plan = self
            .plans()
            .iter()
            .find(|p| p.name == plan_name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("plan {plan_name} is not configured"))?;
        let mut report = ReencodeReport {
            plan: plan.name.clone(),
            ..ReencodeReport::default()
        };
        let (batch, total) = self.outdated_versions(&plan, limit).await?;
        report.outdated = total;
        for v in batch {
            match self.transition(&v, &plan.name).await {
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
}

/// How often a gateway looks for objects to re-encode, and how many it rewrites per plan
/// each time.
pub const REENCODE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
pub const REENCODE_PER_PASS: usize = 200;

/// Re-encodes outdated objects of every plan every `every` until `stop` changes, and keeps
/// `metrics` showing how many are left.
pub fn spawn_reencode(
    gateway: Arc<Gateway>,
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
                match gateway.reencode_pass(&name, REENCODE_PER_PASS).await {
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
