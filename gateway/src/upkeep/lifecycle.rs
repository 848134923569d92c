//! Lifecycle: rules that expire objects, expire noncurrent versions, abort forgotten
//! multipart uploads and move objects to another plan as they age. Rules come from the S3
//! API (Put/Get/DeleteBucketLifecycleConfiguration, storage class = plan name) and from the
//! StorageSchedule of each object's plan; one engine (this pass) applies both.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::meta::{ObjectVersion, UploadQuery, VersionQuery, Versioning};
use crate::node::rules::{PlanRules, Rule};
use crate::node::{Node, now_ms};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// What one lifecycle pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub expired: u64,
    pub noncurrent_deleted: u64,
    pub markers_removed: u64,
    pub uploads_aborted: u64,
    pub transitioned: u64,
    /// Versions due for removal that object lock keeps (retention or legal hold).
    pub locked: u64,
    /// Versions due for a transition but encrypted with a customer's key (SSE-C): moving
    /// them would take the key, which the gateway never keeps, so they stay where they are.
    pub customer_keyed: u64,
    /// Actions that failed (logged); they are tried again on the next pass.
    pub failed: u64,
}

/// One pass of every bucket's rules and of `plan_rules` (a schedule's rules apply to
/// the objects of the plans naming it) as of `now` (Unix ms).
pub async fn lifecycle_pass(node: &Node, plan_rules: &PlanRules, now: i64) -> Result<Report> {
    node.free_retired().await;
    let mut report = Report::default();
    let buckets = node.meta(|m| m.buckets()).await?;
    for bucket in buckets {
        let own = node.bucket_rules(&bucket.name).await?.unwrap_or_default();
        let own: Vec<Rule> = own.into_iter().filter(|r| r.enabled).collect();
        if own.is_empty() && plan_rules.is_empty() {
            continue;
        }
        abort_old_uploads(node, &bucket.name, &own, plan_rules, now, &mut report).await?;
        sweep_versions(node, &bucket, &own, plan_rules, now, &mut report).await?;
    }
    Ok(report)
}

async fn abort_old_uploads(
    node: &Node,
    bucket: &str,
    own: &[Rule],
    plan_rules: &PlanRules,
    now: i64,
    report: &mut Report,
) -> Result<()> {
    let (mut key_marker, mut id_marker) = (String::new(), String::new());
    loop {
        let (b, k, u) = (bucket.to_string(), key_marker.clone(), id_marker.clone());
        let page = node
            .meta(move |m| {
                m.uploads(
                    &b,
                    &UploadQuery {
                        key_marker: &k,
                        upload_id_marker: &u,
                        max_uploads: 1000,
                        ..Default::default()
                    },
                )
            })
            .await?;
        for upload in page.uploads {
            let age = now - upload.initiated;
            let due = rules_for(own, plan_rules, &upload.plan)
                // An upload has no tags or size yet: rules filtering on them skip it.
                .filter(|r| r.selects_key(&upload.key) && !r.filters_objects())
                .filter_map(|r| r.abort_incomplete_days)
                .any(|d| age >= i64::from(d) * DAY_MS);
            if !due {
                continue;
            }
            let (b, k, u) = (
                upload.bucket.clone(),
                upload.key.clone(),
                upload.upload_id.clone(),
            );
            match node.meta(move |m| m.abort_upload(&b, &k, &u)).await {
                Ok(parts) => {
                    for part in &parts {
                        node.free(Some(&part.layout)).await;
                    }
                    report.uploads_aborted += 1;
                    tracing::info!(bucket, key = %upload.key, upload_id = %upload.upload_id, "lifecycle aborted an incomplete multipart upload");
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(bucket, key = %upload.key, error = %e, "lifecycle could not abort an upload");
                }
            }
        }
        match page.next {
            Some((k, u)) => (key_marker, id_marker) = (k, u),
            None => return Ok(()),
        }
    }
}

async fn sweep_versions(
    node: &Node,
    bucket: &crate::meta::Bucket,
    own: &[Rule],
    plan_rules: &PlanRules,
    now: i64,
    report: &mut Report,
) -> Result<()> {
    let (mut key_marker, mut id_marker) = (String::new(), String::new());
    // The version listed just before (newer, same key): when it became current, the
    // one after it became noncurrent.
    let mut newer: Option<ObjectVersion> = None;
    loop {
        let (b, k, u) = (bucket.name.clone(), key_marker.clone(), id_marker.clone());
        let page = node
            .meta(move |m| {
                m.list_versions(
                    &b,
                    &VersionQuery {
                        key_marker: &k,
                        version_id_marker: &u,
                        max_keys: 1000,
                        ..Default::default()
                    },
                )
            })
            .await?;
        for entry in page.versions {
            let v = entry.version;
            if newer.as_ref().is_none_or(|n| n.key != v.key) {
                newer = None;
            }
            // A delete marker has no tags and no size: only its key counts.
            let rules: Vec<&Rule> = rules_for(own, plan_rules, &v.plan)
                .filter(|r| {
                    if v.delete_marker {
                        r.selects_key(&v.key) && r.tags.is_empty()
                    } else {
                        r.selects(&v)
                    }
                })
                .collect();
            if entry.is_latest {
                apply_to_current(node, bucket, &v, &rules, now, report).await;
            } else if let Some(n) = &newer {
                let noncurrent_for = now - n.last_modified;
                let due = rules
                    .iter()
                    .filter_map(|r| r.noncurrent_days)
                    .any(|d| noncurrent_for >= i64::from(d) * DAY_MS);
                if due && remove_version(node, &v, report, "noncurrent version expired").await {
                    report.noncurrent_deleted += 1;
                }
            }
            newer = Some(v);
        }
        match page.next {
            Some((k, u)) => (key_marker, id_marker) = (k, u),
            None => return Ok(()),
        }
    }
}

/// Expiration, lone delete markers and transitions of a key's current version.
async fn apply_to_current(
    node: &Node,
    bucket: &crate::meta::Bucket,
    v: &ObjectVersion,
    rules: &[&Rule],
    now: i64,
    report: &mut Report,
) {
    let age = now - v.last_modified;
    if v.delete_marker {
        if rules.iter().any(|r| r.expired_object_delete_marker) {
            // Only a marker with nothing behind it: it is then the key's only version.
            let (b, k) = (v.bucket.clone(), v.key.clone());
            let alone = node
                .meta(move |m| {
                    m.list_versions(
                        &b,
                        &VersionQuery {
                            prefix: &k,
                            max_keys: 2,
                            ..Default::default()
                        },
                    )
                })
                .await
                .map(|p| p.versions.iter().filter(|e| e.version.key == v.key).count() == 1)
                .unwrap_or(false);
            if alone && remove_version(node, v, report, "expired delete marker removed").await {
                report.markers_removed += 1;
            }
        }
        return;
    }
    let expire = rules
        .iter()
        .filter_map(|r| r.expiration_days)
        .any(|d| age >= i64::from(d) * DAY_MS);
    if expire {
        match expire_current(node, bucket, v).await {
            Ok(()) => {
                report.expired += 1;
                tracing::info!(bucket = %v.bucket, key = %v.key, "lifecycle expired an object");
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(bucket = %v.bucket, key = %v.key, error = %e, "lifecycle could not expire an object");
            }
        }
        return;
    }
    // The due transition with the longest age wins (the coldest plan reached).
    let target = rules
        .iter()
        .filter_map(|r| r.transition.as_ref())
        .filter(|(d, _)| age >= i64::from(*d) * DAY_MS)
        .max_by_key(|(d, _)| *d)
        .map(|(_, plan)| plan.clone());
    if let Some(plan) = target
        && plan != v.plan
    {
        if v.layout
            .as_ref()
            .is_some_and(|l| l.customer_seal().is_some())
        {
            report.customer_keyed += 1;
            tracing::info!(bucket = %v.bucket, key = %v.key, to = %plan, "lifecycle cannot move an object encrypted with a customer's key (SSE-C): it stays under its plan");
            return;
        }
        match transition(node, v, &plan).await {
            Ok(true) => {
                report.transitioned += 1;
                tracing::info!(bucket = %v.bucket, key = %v.key, from = %v.plan, to = %plan, "lifecycle moved an object to another plan");
            }
            Ok(false) => {
                tracing::info!(bucket = %v.bucket, key = %v.key, "object changed during its transition; retried next pass");
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(bucket = %v.bucket, key = %v.key, to = %plan, error = %e, "lifecycle transition failed");
            }
        }
    }
}

/// S3 expiration: unversioned buckets drop the object, versioned ones get a delete
/// marker (the data stays as a noncurrent version).
async fn expire_current(
    node: &Node,
    bucket: &crate::meta::Bucket,
    v: &ObjectVersion,
) -> Result<()> {
    if bucket.versioning == Versioning::Unversioned {
        // Delete exactly this version: a newer PUT since the listing is left alone.
        let (b, k, id) = (v.bucket.clone(), v.key.clone(), v.version_id.clone());
        let current = node.meta(move |m| m.version(&b, &k, Some(&id))).await?;
        if current
            .as_ref()
            .is_some_and(|c| c.last_modified == v.last_modified)
        {
            node.remove_version(&v.bucket, &v.key, &v.version_id, false)
                .await?;
        }
        return Ok(());
    }
    node.delete_key(bucket, &v.key, None, false)
        .await
        .map(|_| ())
}

/// Whether the version was removed.
async fn remove_version(node: &Node, v: &ObjectVersion, report: &mut Report, what: &str) -> bool {
    // Object lock keeps a locked version from lifecycle rules too (never bypassed here).
    match node
        .remove_version(&v.bucket, &v.key, &v.version_id, false)
        .await
    {
        Ok(_) => {
            tracing::info!(bucket = %v.bucket, key = %v.key, version_id = %v.version_id, "lifecycle: {what}");
            true
        }
        Err(Error::Meta(crate::meta::MetaError::ObjectLocked { reason, .. })) => {
            report.locked += 1;
            tracing::info!(bucket = %v.bucket, key = %v.key, version_id = %v.version_id, %reason, "lifecycle: object lock keeps a version due for removal");
            false
        }
        Err(e) => {
            report.failed += 1;
            tracing::warn!(bucket = %v.bucket, key = %v.key, error = %e, "lifecycle: {what} failed");
            false
        }
    }
}

/// Re-encodes `v` under `plan` and swaps its layout if nobody changed it meanwhile;
/// the object stays readable from its old shards until the swap, and for reads that
/// started before it, [`RETIRE_DELAY_MS`] longer. Returns false (and
/// frees the new shards) when the version changed.
pub async fn transition(node: &Node, v: &ObjectVersion, plan: &str) -> Result<bool> {
    let target = node.plan(plan).ok_or_else(|| {
        Error::internal(format!(
            "lifecycle names plan {plan}, which is not configured"
        ))
    })?;
    let stream = node.read_range(v, 0..v.size).await?;
    let written = node
        .store_body(
            &target,
            &v.key,
            Some(s3s::dto::StreamingBlob::wrap(stream)),
            Some(v.size),
            // The same bytes: the version keeps its checksum.
            &[],
            None,
        )
        .await?;
    let single_part = v.layout.as_ref().is_some_and(|l| l.parts.is_empty());
    if written.size != v.size || (single_part && written.md5 != v.etag) {
        node.free(Some(&written.layout)).await;
        return Err(Error::internal(format!(
            "{}/{}: the bytes read back for the transition do not match the object",
            v.bucket, v.key
        )));
    }
    let (current, layout, name) = (v.clone(), written.layout.clone(), target.name.clone());
    let swapped = node
        .meta(move |m| m.swap_layout(&current, &name, &layout))
        .await;
    match swapped {
        Ok(true) => {
            if let Some(old) = &v.layout {
                node.retire(old.clone());
            }
            Ok(true)
        }
        Ok(false) => {
            node.free(Some(&written.layout)).await;
            Ok(false)
        }
        Err(e) => {
            node.free(Some(&written.layout)).await;
            Err(e)
        }
    }
}

/// The rules that apply to an object of `plan`: its bucket's and its plan's schedule's.
fn rules_for<'a>(
    own: &'a [Rule],
    plan_rules: &'a PlanRules,
    plan: &'a str,
) -> impl Iterator<Item = &'a Rule> + 'a {
    own.iter().chain(
        plan_rules
            .iter()
            .filter(move |(p, _)| p == plan)
            .flat_map(|(_, rules)| rules.iter()),
    )
}

/// How often the lifecycle rules are applied (rules count in days).
pub const LIFECYCLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs a lifecycle pass now and then every `every` until `stop` changes.
pub fn spawn_lifecycle(
    gateway: std::sync::Arc<Node>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Retired shards (replaced by transitions, or by overwrites on a shared store) are
        // freed within a minute of their delay, not at the next hourly pass.
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(60));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sweep.tick() => {
                    gateway.free_retired().await;
                    continue;
                }
                _ = stop.changed() => return,
            }
            // The rules in force now: the policy API may have changed a schedule.
            let policy = gateway.policy();
            match crate::upkeep::lifecycle::lifecycle_pass(&gateway, &policy.lifecycle, now_ms())
                .await
            {
                Ok(report) if report != Report::default() => {
                    tracing::info!(?report, "lifecycle pass done");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lifecycle pass failed"),
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schedule_rules_become_engine_rules_for_their_plans_only() {
        let rule: sublet_crds::LifecycleRule = serde_yaml::from_str(
            "{name: cool-down, filter: {prefix: photos/}, afterDays: 30, transitionTo: archive}",
        )
        .unwrap();
        let r = Rule::from_schedule(&rule);
        assert_eq!(r.transition, Some((30, "archive".into())));
        assert_eq!((r.prefix.as_str(), r.expiration_days), ("photos/", None));
        let expire: sublet_crds::LifecycleRule =
            serde_yaml::from_str("{name: gone, afterDays: 7, expire: true}").unwrap();
        assert_eq!(Rule::from_schedule(&expire).expiration_days, Some(7));

        let own = vec![Rule {
            id: "bucket".into(),
            ..Rule::default()
        }];
        let plans: PlanRules = vec![("family-photos".into(), vec![r])];
        let ids = |plan| {
            rules_for(&own, &plans, plan)
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("family-photos"), ["bucket", "cool-down"]);
        assert_eq!(ids("scratch"), ["bucket"]);
    }
}
