//! Lifecycle: rules that expire objects, expire noncurrent versions, abort forgotten
//! multipart uploads and move objects to another plan as they age. Rules come from the S3
//! API (Put/Get/DeleteBucketLifecycleConfiguration, storage class = plan name) and from the
//! StorageSchedule of each object's plan; one engine applies both.

use s3s::dto;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use super::{Gateway, internal, now_ms};
use crate::meta::{ObjectVersion, UploadQuery, VersionQuery, Versioning};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// How long the shards a transition replaced are kept for reads that started before the
/// switch; they are freed by the first lifecycle pass after that (or, should the gateway
/// stop first, by garbage collection).
pub const RETIRE_DELAY_MS: i64 = 15 * 60 * 1000;

/// One lifecycle rule as the engine applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    /// Keys starting with this; every key when empty.
    #[serde(default)]
    pub prefix: String,
    /// Current versions older than this many days expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_days: Option<u32>,
    /// A delete marker that is all that is left of a key is removed.
    #[serde(default)]
    pub expired_object_delete_marker: bool,
    /// Versions noncurrent for this many days are deleted for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_days: Option<u32>,
    /// Multipart uploads started this many days ago are aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_days: Option<u32>,
    /// Current versions older than `.0` days move to plan `.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<(u32, String)>,
}

impl Rule {
    /// A StorageSchedule's rule, for the objects of the plans naming the schedule.
    pub fn from_schedule(rule: &sublet_crds::LifecycleRule) -> Self {
        let days = rule.after_days;
        Rule {
            id: rule.name.clone(),
            enabled: true,
            prefix: rule
                .filter
                .as_ref()
                .and_then(|f| f.prefix.clone())
                .unwrap_or_default(),
            expiration_days: days.filter(|_| rule.expire == Some(true)),
            expired_object_delete_marker: false,
            noncurrent_days: None,
            abort_incomplete_days: rule.abort_incomplete_multipart_after_days,
            transition: days.zip(rule.transition_to.clone()),
        }
    }
}

/// Rules of the schedule of each plan: (plan name, rules).
pub type PlanRules = Vec<(String, Vec<Rule>)>;

/// What one lifecycle pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub expired: u64,
    pub noncurrent_deleted: u64,
    pub markers_removed: u64,
    pub uploads_aborted: u64,
    pub transitioned: u64,
    /// Actions that failed (logged); they are tried again on the next pass.
    pub failed: u64,
}

fn not_implemented(what: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NotImplemented,
        format!("lifecycle rules with {what} are not supported; use Days and a Prefix filter"),
    )
}

fn invalid(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message)
}

fn days(value: Option<i32>, field: &str, id: &str) -> S3Result<Option<u32>> {
    match value {
        None => Ok(None),
        Some(d) if d >= 1 => Ok(Some(d.unsigned_abs())),
        Some(d) => Err(invalid(format!(
            "rule {id}: {field} must be a positive number of days, not {d}"
        ))),
    }
}

impl Gateway {
    /// The S3 rules as the engine's, refusing what sublet cannot honour.
    fn rules_from_s3(&self, rules: Vec<dto::LifecycleRule>) -> S3Result<Vec<Rule>> {
        if rules.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::MalformedXML,
                "a lifecycle configuration needs at least one rule",
            ));
        }
        let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
        for (i, r) in rules.into_iter().enumerate() {
            let id = r.id.clone().unwrap_or_else(|| format!("rule-{}", i + 1));
            if out.iter().any(|o| o.id == id) {
                return Err(invalid(format!("rule id {id} is used twice")));
            }
            let enabled = match r.status.as_str() {
                dto::ExpirationStatus::ENABLED => true,
                dto::ExpirationStatus::DISABLED => false,
                other => {
                    return Err(invalid(format!(
                        "rule {id}: Status must be Enabled or Disabled, not {other:?}"
                    )));
                }
            };
            let mut prefix = r.prefix.clone().unwrap_or_default();
            if let Some(f) = &r.filter {
                if f.tag.is_some() || f.and.is_some() {
                    return Err(not_implemented("tag or And filters"));
                }
                if f.object_size_greater_than.is_some() || f.object_size_less_than.is_some() {
                    return Err(not_implemented("object size filters"));
                }
                if let Some(p) = &f.prefix {
                    prefix.clone_from(p);
                }
            }
            let mut rule = Rule {
                id: id.clone(),
                enabled,
                prefix,
                ..Rule::default()
            };
            if let Some(e) = &r.expiration {
                if e.date.is_some() {
                    return Err(not_implemented("an expiration Date"));
                }
                rule.expiration_days = days(e.days, "Expiration Days", &id)?;
                rule.expired_object_delete_marker = e.expired_object_delete_marker == Some(true);
            }
            if let Some(n) = &r.noncurrent_version_expiration {
                if n.newer_noncurrent_versions.is_some() {
                    return Err(not_implemented("NewerNoncurrentVersions"));
                }
                rule.noncurrent_days = days(
                    n.noncurrent_days,
                    "NoncurrentVersionExpiration NoncurrentDays",
                    &id,
                )?;
            }
            if let Some(a) = &r.abort_incomplete_multipart_upload {
                rule.abort_incomplete_days = days(
                    a.days_after_initiation,
                    "AbortIncompleteMultipartUpload DaysAfterInitiation",
                    &id,
                )?;
            }
            if r.noncurrent_version_transitions
                .as_ref()
                .is_some_and(|t| !t.is_empty())
            {
                return Err(not_implemented("NoncurrentVersionTransitions"));
            }
            let transitions = r.transitions.unwrap_or_default();
            if transitions.len() > 1 {
                return Err(not_implemented("more than one Transition per rule"));
            }
            if let Some(t) = transitions.into_iter().next() {
                if t.date.is_some() {
                    return Err(not_implemented("a transition Date"));
                }
                let after = days(t.days, "Transition Days", &id)?
                    .ok_or_else(|| invalid(format!("rule {id}: a Transition needs Days")))?;
                let class = t
                    .storage_class
                    .as_ref()
                    .map(|c| c.as_str().to_string())
                    .ok_or_else(|| {
                        invalid(format!("rule {id}: a Transition needs a StorageClass"))
                    })?;
                if self.plan(&class).is_none() {
                    return Err(S3Error::with_message(
                        S3ErrorCode::InvalidStorageClass,
                        format!(
                            "rule {id}: no storage plan named {class:?} (storage classes are plan names)"
                        ),
                    ));
                }
                rule.transition = Some((after, class));
            }
            if rule.expiration_days.is_none()
                && !rule.expired_object_delete_marker
                && rule.noncurrent_days.is_none()
                && rule.abort_incomplete_days.is_none()
                && rule.transition.is_none()
            {
                return Err(invalid(format!("rule {id} has no action")));
            }
            out.push(rule);
        }
        Ok(out)
    }

    pub(super) async fn do_put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let rules = input
            .lifecycle_configuration
            .map(|c| c.rules)
            .unwrap_or_default();
        let rules = self.rules_from_s3(rules)?;
        let json = serde_json::to_string(&rules).map_err(|e| internal(e.to_string()))?;
        let bucket = input.bucket.clone();
        self.meta(move |m| m.set_lifecycle(&bucket, Some(&json)))
            .await?;
        tracing::info!(bucket = %input.bucket, rules = rules.len(), "lifecycle configuration set");
        Ok(S3Response::new(
            dto::PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    /// A bucket's stored rules; `None` without a configuration.
    async fn bucket_rules(&self, bucket: &str) -> S3Result<Option<Vec<Rule>>> {
        let b = bucket.to_string();
        let Some(json) = self.meta(move |m| m.lifecycle(&b)).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| internal(format!("bucket {bucket}: stored lifecycle rules: {e}")))
    }

    pub(super) async fn do_get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLifecycleConfigurationOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        let Some(rules) = self.bucket_rules(&bucket).await? else {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchLifecycleConfiguration,
                format!("bucket {bucket} has no lifecycle configuration"),
            ));
        };
        let rules = rules
            .into_iter()
            .map(|r| dto::LifecycleRule {
                id: Some(r.id),
                status: dto::ExpirationStatus::from_static(if r.enabled {
                    dto::ExpirationStatus::ENABLED
                } else {
                    dto::ExpirationStatus::DISABLED
                }),
                filter: Some(dto::LifecycleRuleFilter {
                    prefix: Some(r.prefix),
                    ..Default::default()
                }),
                expiration: (r.expiration_days.is_some() || r.expired_object_delete_marker).then(
                    || dto::LifecycleExpiration {
                        days: r.expiration_days.and_then(|d| i32::try_from(d).ok()),
                        expired_object_delete_marker: r
                            .expired_object_delete_marker
                            .then_some(true),
                        date: None,
                    },
                ),
                noncurrent_version_expiration: r.noncurrent_days.map(|d| {
                    dto::NoncurrentVersionExpiration {
                        noncurrent_days: i32::try_from(d).ok(),
                        newer_noncurrent_versions: None,
                    }
                }),
                abort_incomplete_multipart_upload: r.abort_incomplete_days.map(|d| {
                    dto::AbortIncompleteMultipartUpload {
                        days_after_initiation: i32::try_from(d).ok(),
                    }
                }),
                transitions: r.transition.map(|(d, plan)| {
                    vec![dto::Transition {
                        days: i32::try_from(d).ok(),
                        storage_class: Some(dto::TransitionStorageClass::from(plan)),
                        date: None,
                    }]
                }),
                noncurrent_version_transitions: None,
                prefix: None,
            })
            .collect();
        Ok(S3Response::new(
            dto::GetBucketLifecycleConfigurationOutput {
                rules: Some(rules),
                ..Default::default()
            },
        ))
    }

    pub(super) async fn do_delete_bucket_lifecycle(
        &self,
        req: S3Request<dto::DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketLifecycleOutput>> {
        let bucket = req.input.bucket;
        self.require_bucket(&bucket).await?;
        self.meta(move |m| m.set_lifecycle(&bucket, None)).await?;
        Ok(S3Response::new(dto::DeleteBucketLifecycleOutput::default()))
    }

    /// One pass of every bucket's rules and of `plan_rules` (a schedule's rules apply to
    /// the objects of the plans naming it) as of `now` (Unix ms).
    pub async fn lifecycle_pass(&self, plan_rules: &PlanRules, now: i64) -> S3Result<Report> {
        self.free_retired().await;
        let mut report = Report::default();
        let buckets = self.meta(|m| m.buckets()).await?;
        for bucket in buckets {
            let own = self.bucket_rules(&bucket.name).await?.unwrap_or_default();
            let own: Vec<Rule> = own.into_iter().filter(|r| r.enabled).collect();
            if own.is_empty() && plan_rules.is_empty() {
                continue;
            }
            self.abort_old_uploads(&bucket.name, &own, plan_rules, now, &mut report)
                .await?;
            self.sweep_versions(&bucket, &own, plan_rules, now, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn abort_old_uploads(
        &self,
        bucket: &str,
        own: &[Rule],
        plan_rules: &PlanRules,
        now: i64,
        report: &mut Report,
    ) -> S3Result<()> {
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let (b, k, u) = (bucket.to_string(), key_marker.clone(), id_marker.clone());
            let page = self
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
                    .filter(|r| upload.key.starts_with(&r.prefix))
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
                match self.meta(move |m| m.abort_upload(&b, &k, &u)).await {
                    Ok(parts) => {
                        for part in &parts {
                            self.free(Some(&part.layout)).await;
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
        &self,
        bucket: &crate::meta::Bucket,
        own: &[Rule],
        plan_rules: &PlanRules,
        now: i64,
        report: &mut Report,
    ) -> S3Result<()> {
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        // The version listed just before (newer, same key): when it became current, the
        // one after it became noncurrent.
        let mut newer: Option<ObjectVersion> = None;
        loop {
            let (b, k, u) = (bucket.name.clone(), key_marker.clone(), id_marker.clone());
            let page = self
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
                let rules: Vec<&Rule> = rules_for(own, plan_rules, &v.plan)
                    .filter(|r| v.key.starts_with(&r.prefix))
                    .collect();
                if entry.is_latest {
                    self.apply_to_current(bucket, &v, &rules, now, report).await;
                } else if let Some(n) = &newer {
                    let noncurrent_for = now - n.last_modified;
                    let due = rules
                        .iter()
                        .filter_map(|r| r.noncurrent_days)
                        .any(|d| noncurrent_for >= i64::from(d) * DAY_MS);
                    if due {
                        self.remove_version(&v, report, "noncurrent version expired")
                            .await;
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
        &self,
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
                let alone = self
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
                if alone {
                    self.remove_version(v, report, "expired delete marker removed")
                        .await;
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
            match self.expire_current(bucket, v).await {
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
            match self.transition(v, &plan).await {
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
        &self,
        bucket: &crate::meta::Bucket,
        v: &ObjectVersion,
    ) -> S3Result<()> {
        if bucket.versioning == Versioning::Unversioned {
            // Delete exactly this version: a newer PUT since the listing is left alone.
            let (b, k, id) = (v.bucket.clone(), v.key.clone(), v.version_id.clone());
            let current = self.meta(move |m| m.version(&b, &k, Some(&id))).await?;
            if current
                .as_ref()
                .is_some_and(|c| c.last_modified == v.last_modified)
            {
                let (b, k, id) = (v.bucket.clone(), v.key.clone(), v.version_id.clone());
                let removed = self.meta(move |m| m.delete_version(&b, &k, &id)).await?;
                self.free_removed(removed.as_ref()).await;
            }
            return Ok(());
        }
        self.delete_key(bucket, &v.key, None).await.map(|_| ())
    }

    async fn remove_version(&self, v: &ObjectVersion, report: &mut Report, what: &str) {
        let (b, k, id) = (v.bucket.clone(), v.key.clone(), v.version_id.clone());
        match self.meta(move |m| m.delete_version(&b, &k, &id)).await {
            Ok(removed) => {
                self.free_removed(removed.as_ref()).await;
                tracing::info!(bucket = %v.bucket, key = %v.key, version_id = %v.version_id, "lifecycle: {what}");
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(bucket = %v.bucket, key = %v.key, error = %e, "lifecycle: {what} failed");
            }
        }
    }

    fn retired_layouts(&self) -> std::sync::MutexGuard<'_, Vec<(i64, crate::layout::Layout)>> {
        self.retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `layout`'s shards (no longer referenced) for [`RETIRE_DELAY_MS`]: reads that
    /// began before the change may still stream them.
    pub(super) fn retire(&self, layout: crate::layout::Layout) {
        self.retired_layouts().push((now_ms(), layout));
    }

    /// Frees the layouts replaced more than [`RETIRE_DELAY_MS`] ago (by the clock, not a
    /// pass's `now`, which may run ahead).
    pub(crate) async fn free_retired(&self) {
        let cut = now_ms() - RETIRE_DELAY_MS;
        let due: Vec<crate::layout::Layout> = {
            let mut retired = self.retired_layouts();
            let (due, kept) = retired.drain(..).partition(|(at, _)| *at <= cut);
            *retired = kept;
            due.into_iter().map(|(_, layout)| layout).collect()
        };
        for layout in &due {
            self.free(Some(layout)).await;
        }
    }

    /// Shard ids of layouts transitions replaced and not freed yet: not garbage.
    pub fn retired_shards(&self) -> std::collections::HashSet<String> {
        self.retired_layouts()
            .iter()
            .flat_map(|(_, layout)| layout.shards().map(|s| s.shard_id.clone()))
            .collect()
    }

    /// Re-encodes `v` under `plan` and swaps its layout if nobody changed it meanwhile;
    /// the object stays readable from its old shards until the swap, and for reads that
    /// started before it, [`RETIRE_DELAY_MS`] longer. Returns false (and
    /// frees the new shards) when the version changed.
    pub(super) async fn transition(&self, v: &ObjectVersion, plan: &str) -> S3Result<bool> {
        let target = self.plan(plan).ok_or_else(|| {
            internal(format!(
                "lifecycle names plan {plan}, which is not configured"
            ))
        })?;
        let stream = self.read_range(v, 0..v.size).await?;
        let written = self
            .store_body(
                &target,
                &v.key,
                Some(s3s::dto::StreamingBlob::wrap(stream)),
                Some(v.size),
            )
            .await?;
        let single_part = v.layout.as_ref().is_some_and(|l| l.parts.is_empty());
        if written.size != v.size || (single_part && written.md5 != v.etag) {
            self.free(Some(&written.layout)).await;
            return Err(internal(format!(
                "{}/{}: the bytes read back for the transition do not match the object",
                v.bucket, v.key
            )));
        }
        let (current, layout, name) = (v.clone(), written.layout.clone(), target.name.clone());
        let swapped = self
            .meta(move |m| m.swap_layout(&current, &name, &layout))
            .await;
        match swapped {
            Ok(true) => {
                if let Some(old) = &v.layout {
                    self.retire(old.clone());
                }
                Ok(true)
            }
            Ok(false) => {
                self.free(Some(&written.layout)).await;
                Ok(false)
            }
            Err(e) => {
                self.free(Some(&written.layout)).await;
                Err(e)
            }
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
    gateway: std::sync::Arc<Gateway>,
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
            match gateway.lifecycle_pass(&policy.lifecycle, now_ms()).await {
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
