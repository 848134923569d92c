//! [`JournaledStore`]: the metadata store that journals every change it commits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Entry, Journal};
use crate::datapath::layout::Layout;
use crate::meta::lock::ObjectLock;
use crate::meta::{
    AuditSample, Bucket, CompleteOutcome, HealthGroup, ListPage, ListQuery, MetadataStore,
    ObjectVersion, PlanUsage, ProviderSeen, PutOutcome, QueuedVersion, Result, ShardPos, StoredKey,
    Upload, UploadPage, UploadPart, UploadQuery, Usage, User, VersionPage, VersionQuery,
    Versioning, WriteCondition,
};

/// A metadata store whose changes are journaled: see the module documentation.
pub struct JournaledStore {
    inner: Arc<dyn MetadataStore>,
    journal: Arc<Journal>,
    /// Held across a change and its append, so the journal's order is the commit order
    /// (the store's own lock instead, when it has one: [`MetadataStore::commit_order`]).
    order: Mutex<()>,
}

impl JournaledStore {
    pub fn new(inner: Arc<dyn MetadataStore>, journal: Arc<Journal>) -> Self {
        Self {
            inner,
            journal,
            order: Mutex::new(()),
        }
    }

    /// Runs `change` on the store and journals what `entry` makes of its outcome.
    fn logged<T>(
        &self,
        change: impl FnOnce(&dyn MetadataStore) -> Result<T>,
        entry: impl FnOnce(&T) -> Option<Entry>,
    ) -> Result<T> {
        let order = self.inner.commit_order().unwrap_or(&self.order);
        let _order = order.lock().unwrap_or_else(PoisonError::into_inner);
        let out = change(self.inner.as_ref())?;
        if let Some(e) = entry(&out) {
            self.journal.append(&e);
        }
        Ok(out)
    }

    /// [`JournaledStore::logged`] for an object write or delete. On a store with a commit
    /// order of its own the append is the change's commit hook, made right after the
    /// group commit holding it, in commit order; no lock is held around the change, so
    /// concurrent ones commit together (one fsync).
    fn grouped<T: 'static>(
        &self,
        change: impl FnOnce(&dyn MetadataStore) -> Result<T>,
        entry: impl FnOnce(&T) -> Option<Entry> + Send + 'static,
    ) -> Result<T> {
        if self.inner.commit_order().is_none() {
            return self.logged(change, entry);
        }
        let journal = Arc::clone(&self.journal);
        crate::meta::set_commit_hook(Box::new(move |out: &dyn std::any::Any| {
            if let Some(e) = out.downcast_ref::<T>().and_then(entry) {
                journal.append(&e);
            }
        }));
        let out = change(self.inner.as_ref());
        // Not left for this thread's next change if this one failed before queueing.
        crate::meta::take_commit_hook();
        out
    }
}

impl MetadataStore for JournaledStore {
    fn create_bucket(&self, bucket: &Bucket) -> Result<()> {
        self.logged(
            |s| s.create_bucket(bucket),
            |()| {
                Some(Entry::CreateBucket {
                    bucket: bucket.clone(),
                })
            },
        )
    }
    fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        self.inner.bucket(name)
    }
    fn buckets(&self) -> Result<Vec<Bucket>> {
        self.inner.buckets()
    }
    fn plan_usage(&self) -> Result<Vec<PlanUsage>> {
        self.inner.plan_usage()
    }
    fn shares_policies(&self) -> bool {
        self.inner.shares_policies()
    }
    fn shared_policies(&self) -> Result<Option<(i64, String)>> {
        self.inner.shared_policies()
    }
    fn put_shared_policies(&self, expected: i64, yaml: &str) -> Result<Option<i64>> {
        self.logged(
            |s| s.put_shared_policies(expected, yaml),
            |stored| {
                stored.map(|_| Entry::Policies {
                    yaml: yaml.to_owned(),
                })
            },
        )
    }
    fn record_probes(&self, outcomes: &[(String, bool)], now: i64) -> Result<()> {
        self.inner.record_probes(outcomes, now)
    }
    fn record_pools(&self, pools: &[(String, String)], now: i64) -> Result<()> {
        self.inner.record_pools(pools, now)
    }
    fn provider_pools(&self) -> Result<BTreeMap<String, String>> {
        self.inner.provider_pools()
    }
    fn providers_seen(&self) -> Result<BTreeMap<String, ProviderSeen>> {
        self.inner.providers_seen()
    }
    fn plan_health(&self, plan: &str, lost_cut: i64, grace_ms: i64) -> Result<Vec<HealthGroup>> {
        self.inner.plan_health(plan, lost_cut, grace_ms)
    }
    fn queued_versions(
        &self,
        plan: &str,
        lost_cut: i64,
        grace_ms: i64,
        min_healthy: Option<u64>,
        lost: bool,
        limit: usize,
    ) -> Result<Vec<QueuedVersion>> {
        self.inner
            .queued_versions(plan, lost_cut, grace_ms, min_healthy, lost, limit)
    }
    fn version_by_seq(&self, seq: i64) -> Result<Option<ObjectVersion>> {
        self.inner.version_by_seq(seq)
    }
    fn versions_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, ObjectVersion)>> {
        self.inner.versions_after(after, limit)
    }
    fn bad_shards(&self, seq: i64) -> Result<Vec<ShardPos>> {
        self.inner.bad_shards(seq)
    }
    fn mark_bad_shards(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        shards: &[(ShardPos, String)],
        now: i64,
    ) -> Result<()> {
        // Health, not content: scrub and audits find bad shards again.
        self.inner
            .mark_bad_shards(bucket, key, version_id, shards, now)
    }
    fn replace_layout(&self, seq: i64, expected: &Layout, new: &Layout) -> Result<bool> {
        self.logged(
            |s| {
                let version = s.version_by_seq(seq)?;
                let swapped = s.replace_layout(seq, expected, new)?;
                Ok(version.filter(|_| swapped))
            },
            |version| {
                version.as_ref().map(|v| Entry::SwapLayout {
                    bucket: v.bucket.clone(),
                    key: v.key.clone(),
                    version_id: v.version_id.clone(),
                    expected: expected.clone(),
                    plan: v.plan.clone(),
                    layout: new.clone(),
                })
            },
        )
        .map(|version| version.is_some())
    }
    fn audit_samples(&self, provider: &str, count: usize) -> Result<Vec<AuditSample>> {
        self.inner.audit_samples(provider, count)
    }
    fn referenced_shards(&self, provider: &str) -> Result<std::collections::HashSet<String>> {
        self.inner.referenced_shards(provider)
    }
    fn provider_usage(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        self.inner.provider_usage()
    }
    fn put_user(&self, user: &User) -> Result<()> {
        self.logged(
            |s| s.put_user(user),
            |()| Some(Entry::PutUser { user: user.clone() }),
        )
    }
    fn users(&self) -> Result<Vec<User>> {
        self.inner.users()
    }
    fn delete_user(&self, id: &str) -> Result<bool> {
        self.logged(
            |s| s.delete_user(id),
            |deleted| deleted.then(|| Entry::DeleteUser { id: id.to_owned() }),
        )
    }
    fn put_key(&self, key: &StoredKey) -> Result<()> {
        self.logged(
            |s| s.put_key(key),
            |()| Some(Entry::PutKey { key: key.clone() }),
        )
    }
    fn keys(&self) -> Result<Vec<StoredKey>> {
        self.inner.keys()
    }
    fn delete_key(&self, access_key: &str) -> Result<bool> {
        self.logged(
            |s| s.delete_key(access_key),
            |deleted| {
                deleted.then(|| Entry::DeleteKey {
                    access_key: access_key.to_owned(),
                })
            },
        )
    }
    fn user_usage(&self) -> Result<BTreeMap<String, Usage>> {
        self.inner.user_usage()
    }
    fn versions_on(&self, provider: &str, after: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        self.inner.versions_on(provider, after, limit)
    }
    fn provider_plans(&self, provider: &str) -> Result<BTreeMap<String, (u64, u64)>> {
        self.inner.provider_plans(provider)
    }
    fn delete_bucket(&self, name: &str) -> Result<()> {
        self.logged(
            |s| s.delete_bucket(name),
            |()| {
                Some(Entry::DeleteBucket {
                    name: name.to_owned(),
                })
            },
        )
    }
    fn set_versioning(&self, name: &str, versioning: Versioning) -> Result<()> {
        self.logged(
            |s| s.set_versioning(name, versioning),
            |()| {
                Some(Entry::SetVersioning {
                    name: name.to_owned(),
                    versioning,
                })
            },
        )
    }
    fn set_bucket_plan(&self, name: &str, plan: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_bucket_plan(name, plan),
            |()| {
                Some(Entry::SetBucketPlan {
                    name: name.to_owned(),
                    plan: plan.map(str::to_owned),
                })
            },
        )
    }
    fn put_version_if(
        &self,
        version: &ObjectVersion,
        condition: Option<&WriteCondition>,
    ) -> Result<PutOutcome> {
        let entry = Entry::PutVersion {
            version: version.clone(),
        };
        self.grouped(|s| s.put_version_if(version, condition), |_| Some(entry))
    }
    fn version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectVersion>> {
        self.inner.version(bucket, key, version_id)
    }
    fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectVersion>> {
        let entry = Entry::DeleteVersion {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: version_id.to_owned(),
        };
        self.grouped(
            |s| s.delete_version(bucket, key, version_id),
            |deleted: &Option<ObjectVersion>| deleted.as_ref().map(|_| entry),
        )
    }
    fn list(&self, bucket: &str, query: &ListQuery<'_>) -> Result<ListPage> {
        self.inner.list(bucket, query)
    }
    fn list_versions(&self, bucket: &str, query: &VersionQuery<'_>) -> Result<VersionPage> {
        self.inner.list_versions(bucket, query)
    }
    fn create_upload(&self, upload: &Upload) -> Result<()> {
        self.logged(
            |s| s.create_upload(upload),
            |()| {
                Some(Entry::CreateUpload {
                    upload: upload.clone(),
                })
            },
        )
    }
    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>> {
        self.inner.upload(bucket, key, upload_id)
    }
    fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &UploadPart,
    ) -> Result<Option<UploadPart>> {
        self.logged(
            |s| s.put_part(bucket, key, upload_id, part),
            |_| {
                Some(Entry::PutPart {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                    part: part.clone(),
                })
            },
        )
    }
    fn parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: i32,
        max: usize,
    ) -> Result<Vec<UploadPart>> {
        self.inner.parts(bucket, key, upload_id, after, max)
    }
    fn uploads(&self, bucket: &str, query: &UploadQuery<'_>) -> Result<UploadPage> {
        self.inner.uploads(bucket, query)
    }
    fn complete_upload_if(
        &self,
        upload_id: &str,
        used: &[(i32, String)],
        version: &ObjectVersion,
        condition: Option<&WriteCondition>,
    ) -> Result<CompleteOutcome> {
        // The condition is checked by the store when the change is made; replaying the
        // journal repeats only what passed it.
        self.logged(
            |s| s.complete_upload_if(upload_id, used, version, condition),
            |_| {
                Some(Entry::CompleteUpload {
                    upload_id: upload_id.to_owned(),
                    used: used.to_vec(),
                    version: version.clone(),
                })
            },
        )
    }
    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<UploadPart>> {
        self.logged(
            |s| s.abort_upload(bucket, key, upload_id),
            |_| {
                Some(Entry::AbortUpload {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                })
            },
        )
    }
    fn set_lifecycle(&self, bucket: &str, rules: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_lifecycle(bucket, rules),
            |()| {
                Some(Entry::SetLifecycle {
                    bucket: bucket.to_owned(),
                    rules: rules.map(str::to_owned),
                })
            },
        )
    }
    fn lifecycle(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.lifecycle(bucket)
    }
    fn set_bucket_lock(&self, bucket: &str, config: &str) -> Result<()> {
        self.logged(
            |s| s.set_bucket_lock(bucket, config),
            |()| {
                Some(Entry::SetBucketLock {
                    bucket: bucket.to_owned(),
                    config: config.to_owned(),
                })
            },
        )
    }
    fn bucket_lock(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.bucket_lock(bucket)
    }
    fn set_version_lock(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        expected: &ObjectLock,
        new: &ObjectLock,
    ) -> Result<bool> {
        self.logged(
            |s| s.set_version_lock(bucket, key, version_id, expected, new),
            |changed| {
                changed.then(|| Entry::SetVersionLock {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    version_id: version_id.to_owned(),
                    lock: *new,
                })
            },
        )
    }
    fn set_bucket_tags(&self, bucket: &str, tags: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_bucket_tags(bucket, tags),
            |()| {
                Some(Entry::SetBucketTags {
                    bucket: bucket.to_owned(),
                    tags: tags.map(str::to_owned),
                })
            },
        )
    }
    fn bucket_tags(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.bucket_tags(bucket)
    }
    fn set_bucket_cors(&self, bucket: &str, rules: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_bucket_cors(bucket, rules),
            |()| {
                Some(Entry::SetBucketCors {
                    bucket: bucket.to_owned(),
                    rules: rules.map(str::to_owned),
                })
            },
        )
    }
    fn set_bucket_policy(&self, bucket: &str, policy: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_bucket_policy(bucket, policy),
            |()| {
                Some(Entry::SetBucketPolicy {
                    bucket: bucket.to_owned(),
                    policy: policy.map(str::to_owned),
                })
            },
        )
    }
    fn bucket_cors(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.bucket_cors(bucket)
    }
    fn bucket_policy(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.bucket_policy(bucket)
    }
    fn set_public_access_block(&self, bucket: &str, config: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_public_access_block(bucket, config),
            |()| {
                Some(Entry::SetPublicAccessBlock {
                    bucket: bucket.to_owned(),
                    config: config.map(str::to_owned),
                })
            },
        )
    }
    fn set_bucket_encryption(&self, bucket: &str, config: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_bucket_encryption(bucket, config),
            |()| {
                Some(Entry::SetBucketEncryption {
                    bucket: bucket.to_owned(),
                    config: config.map(str::to_owned),
                })
            },
        )
    }
    fn public_access_block(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.public_access_block(bucket)
    }
    fn bucket_encryption(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.bucket_encryption(bucket)
    }
    fn set_bucket_acl(&self, bucket: &str, acl: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_bucket_acl(bucket, acl),
            |()| {
                Some(Entry::SetBucketAcl {
                    bucket: bucket.to_owned(),
                    acl: acl.map(str::to_owned),
                })
            },
        )
    }
    fn bucket_acl(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.bucket_acl(bucket)
    }
    fn set_bucket_ownership(&self, bucket: &str, ownership: Option<&str>) -> Result<()> {
        self.logged(
            |s| s.set_bucket_ownership(bucket, ownership),
            |()| {
                Some(Entry::SetBucketOwnership {
                    bucket: bucket.to_owned(),
                    ownership: ownership.map(str::to_owned),
                })
            },
        )
    }
    fn bucket_ownership(&self, bucket: &str) -> Result<Option<String>> {
        self.inner.bucket_ownership(bucket)
    }
    fn set_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        acl: Option<&crate::meta::acl::Acl>,
    ) -> Result<bool> {
        self.logged(
            |s| s.set_object_acl(bucket, key, version_id, acl),
            |changed| {
                changed.then(|| Entry::SetObjectAcl {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    version_id: version_id.to_owned(),
                    acl: acl.cloned(),
                })
            },
        )
    }
    fn set_object_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool> {
        self.logged(
            |s| s.set_object_tags(bucket, key, version_id, tags),
            |changed| {
                changed.then(|| Entry::SetObjectTags {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    version_id: version_id.to_owned(),
                    tags: tags.clone(),
                })
            },
        )
    }
    fn swap_layout(&self, current: &ObjectVersion, plan: &str, layout: &Layout) -> Result<bool> {
        self.logged(
            |s| s.swap_layout(current, plan, layout),
            |swapped| {
                let expected = current.layout.clone().filter(|_| *swapped)?;
                Some(Entry::SwapLayout {
                    bucket: current.bucket.clone(),
                    key: current.key.clone(),
                    version_id: current.version_id.clone(),
                    expected,
                    plan: plan.to_owned(),
                    layout: layout.clone(),
                })
            },
        )
    }
    fn snapshot_into(&self, path: &std::path::Path) -> Result<()> {
        self.inner.snapshot_into(path)
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn claim_repair(&self, seq: i64, holder: &str, now: i64, lease_ms: i64) -> Result<bool> {
        self.inner.claim_repair(seq, holder, now, lease_ms)
    }
    fn hold_writes(&self, holder: &str, write_ids: &[String], until_ms: i64) -> Result<()> {
        self.inner.hold_writes(holder, write_ids, until_ms)
    }
    fn end_writes(&self, holder: &str, keep: &[String], now_ms: i64) -> Result<()> {
        self.inner.end_writes(holder, keep, now_ms)
    }
    fn held_writes(&self, now_ms: i64) -> Result<Vec<String>> {
        self.inner.held_writes(now_ms)
    }
    fn release_repair(&self, seq: i64, holder: &str) -> Result<()> {
        self.inner.release_repair(seq, holder)
    }
}
