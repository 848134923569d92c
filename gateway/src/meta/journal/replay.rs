//! Recovery's half of the journal: replaying the segments written after a snapshot onto a
//! restored store.

use futures::StreamExt;
use sublet_provider::client::ProviderClient;

use super::Entry;
use super::segment::{list_segments, open_segment, segment_prefix};
use crate::datapath::codec::MasterKey;
use crate::datapath::fleet::Fleet;
use crate::meta::{MetaError, MetadataStore, Result};

/// Segments recovery fetches at once.
const REPLAY_FETCHES: usize = 16;

/// What replaying the journal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Segments after the snapshot that were read and replayed.
    pub segments: u64,
    /// Entries applied.
    pub applied: u64,
    /// Entries the store already reflected (or that no longer applied).
    pub skipped: u64,
    /// Segments no provider had a readable copy of, with why.
    pub unreadable: Vec<String>,
    /// Entries the store refused, with why.
    pub failed: Vec<String>,
    /// Providers that could not be listed.
    pub unlisted: Vec<String>,
}

/// Replays onto `store` the journal segments written after position `cut` (all of them when
/// the snapshot predates the journal and has none), in write order.
pub async fn replay(
    fleet: &Fleet,
    master: &MasterKey,
    clients: &[(String, ProviderClient)],
    store: &dyn MetadataStore,
    cut: Option<&str>,
) -> Replayed {
    let (segments, unlisted) = list_segments(fleet.installation(), clients).await;
    let prefix = segment_prefix(fleet.installation());
    let mut out = Replayed {
        unlisted,
        ..Replayed::default()
    };
    let wanted: Vec<(String, Vec<String>)> = segments
        .into_iter()
        .filter(|(id, _)| {
            id.strip_prefix(&prefix)
                .is_some_and(|pos| cut.is_none_or(|cut| pos > cut))
        })
        .collect();
    // Fetched several at a time, applied in write order.
    let mut fetched = futures::stream::iter(wanted)
        .map(|(id, nodes)| async move {
            let mut problems = Vec::new();
            for node in &nodes {
                let Some(b) = fleet.backend(node) else {
                    continue;
                };
                match b.get(&id).await {
                    Ok(blob) => match open_segment(master, &id, &blob) {
                        Ok(entries) => return (id, Ok(entries)),
                        Err(e) => {
                            // A copy that does not open under its id and this master key:
                            // forged, replayed under another id, or another installation's.
                            crate::metrics::count_forged_metadata("journal_segment");
                            tracing::warn!(segment = %id, provider = %node, error = %e, "a journal segment failed authentication; ignored");
                            problems.push(format!("{node}: {e}"));
                        }
                    },
                    Err(e) => problems.push(format!("{node}: {e}")),
                }
            }
            (id, Err(problems.join("; ")))
        })
        .buffered(REPLAY_FETCHES);
    while let Some((id, fetched)) = fetched.next().await {
        let entries = match fetched {
            Ok(entries) => entries,
            Err(problems) => {
                out.unreadable.push(format!("{id} ({problems})"));
                continue;
            }
        };
        out.segments += 1;
        for entry in &entries {
            match apply(store, entry) {
                Ok(true) => out.applied += 1,
                Ok(false) => out.skipped += 1,
                Err(e) => out.failed.push(format!("{id}: {e}")),
            }
        }
    }
    out
}

/// Applies one entry to `store`; `false` when the store already reflects it or it no longer
/// applies (what it changed is gone again). Safe to apply an entry twice.
pub fn apply(store: &dyn MetadataStore, entry: &Entry) -> Result<bool> {
    let skip_gone = |r: Result<()>| match r {
        Ok(()) => Ok(true),
        Err(MetaError::NoSuchBucket(_) | MetaError::NoSuchUpload { .. }) => Ok(false),
        Err(e) => Err(e),
    };
    match entry {
        Entry::CreateBucket { bucket } => match store.create_bucket(bucket) {
            Ok(()) => Ok(true),
            Err(MetaError::BucketExists(_)) => Ok(false),
            Err(e) => Err(e),
        },
        Entry::DeleteBucket { name } => skip_gone(store.delete_bucket(name)),
        Entry::SetVersioning { name, versioning } => {
            skip_gone(store.set_versioning(name, *versioning))
        }
        Entry::SetBucketPlan { name, plan } => {
            skip_gone(store.set_bucket_plan(name, plan.as_deref()))
        }
        Entry::SetLifecycle { bucket, rules } => {
            skip_gone(store.set_lifecycle(bucket, rules.as_deref()))
        }
        Entry::SetBucketLock { bucket, config } => {
            if store.bucket_lock(bucket)?.as_deref() == Some(config.as_str()) {
                return Ok(false);
            }
            skip_gone(store.set_bucket_lock(bucket, config))
        }
        Entry::SetVersionLock {
            bucket,
            key,
            version_id,
            lock,
        } => {
            let Some(current) = store.version(bucket, key, Some(version_id))? else {
                return Ok(false);
            };
            if current.attrs.lock == *lock {
                return Ok(false);
            }
            store.set_version_lock(bucket, key, version_id, &current.attrs.lock, lock)
        }
        Entry::SetBucketEncryption { bucket, config } => {
            skip_gone(store.set_bucket_encryption(bucket, config.as_deref()))
        }
        Entry::SetBucketTags { bucket, tags } => {
            skip_gone(store.set_bucket_tags(bucket, tags.as_deref()))
        }
        Entry::SetBucketCors { bucket, rules } => {
            skip_gone(store.set_bucket_cors(bucket, rules.as_deref()))
        }
        Entry::SetBucketPolicy { bucket, policy } => {
            skip_gone(store.set_bucket_policy(bucket, policy.as_deref()))
        }
        Entry::SetPublicAccessBlock { bucket, config } => {
            skip_gone(store.set_public_access_block(bucket, config.as_deref()))
        }
        Entry::SetBucketAcl { bucket, acl } => {
            skip_gone(store.set_bucket_acl(bucket, acl.as_deref()))
        }
        Entry::SetBucketOwnership { bucket, ownership } => {
            skip_gone(store.set_bucket_ownership(bucket, ownership.as_deref()))
        }
        Entry::SetObjectAcl {
            bucket,
            key,
            version_id,
            acl,
        } => {
            let current = store.version(bucket, key, Some(version_id))?;
            if current.as_ref().is_none_or(|v| v.attrs.acl == *acl) {
                return Ok(false);
            }
            store.set_object_acl(bucket, key, version_id, acl.as_ref())
        }
        Entry::SetObjectTags {
            bucket,
            key,
            version_id,
            tags,
        } => {
            let current = store.version(bucket, key, Some(version_id))?;
            if current.as_ref().is_none_or(|v| v.attrs.tags == *tags) {
                return Ok(false);
            }
            store.set_object_tags(bucket, key, version_id, tags)
        }
        Entry::PutVersion { version } => {
            if store.bucket(&version.bucket)?.is_none() {
                return Ok(false);
            }
            if store
                .version(&version.bucket, &version.key, Some(&version.version_id))?
                .as_ref()
                == Some(version)
                && store.version(&version.bucket, &version.key, None)?.as_ref() == Some(version)
            {
                return Ok(false);
            }
            store.put_version(version).map(|_| true)
        }
        Entry::DeleteVersion {
            bucket,
            key,
            version_id,
        } => Ok(store.delete_version(bucket, key, version_id)?.is_some()),
        Entry::CreateUpload { upload } => {
            if store
                .upload(&upload.bucket, &upload.key, &upload.upload_id)?
                .is_some()
            {
                return Ok(false);
            }
            skip_gone(store.create_upload(upload))
        }
        Entry::PutPart {
            bucket,
            key,
            upload_id,
            part,
        } => match store.put_part(bucket, key, upload_id, part) {
            Ok(_) => Ok(true),
            Err(MetaError::NoSuchUpload { .. }) => Ok(false),
            Err(e) => Err(e),
        },
        Entry::CompleteUpload {
            upload_id,
            used,
            version,
        } => match store.complete_upload(upload_id, used, version) {
            Ok(_) => Ok(true),
            Err(MetaError::NoSuchUpload { .. } | MetaError::PartChanged { .. }) => Ok(false),
            Err(e) => Err(e),
        },
        Entry::AbortUpload {
            bucket,
            key,
            upload_id,
        } => match store.abort_upload(bucket, key, upload_id) {
            Ok(_) => Ok(true),
            Err(MetaError::NoSuchUpload { .. }) => Ok(false),
            Err(e) => Err(e),
        },
        Entry::Policies { yaml } => {
            let current = store.shared_policies()?;
            if current.as_ref().is_some_and(|(_, y)| y == yaml) {
                return Ok(false);
            }
            let expected = current.map_or(0, |(revision, _)| revision);
            Ok(store.put_shared_policies(expected, yaml)?.is_some())
        }
        Entry::PutUser { user } => {
            if store.users()?.iter().any(|u| u == user) {
                return Ok(false);
            }
            store.put_user(user).map(|()| true)
        }
        Entry::DeleteUser { id } => store.delete_user(id),
        Entry::PutKey { key } => {
            if store.keys()?.iter().any(|k| k == key) {
                return Ok(false);
            }
            store.put_key(key).map(|()| true)
        }
        Entry::DeleteKey { access_key } => store.delete_key(access_key),
        Entry::SwapLayout {
            bucket,
            key,
            version_id,
            expected,
            plan,
            layout,
        } => {
            let Some(current) = store.version(bucket, key, Some(version_id))? else {
                return Ok(false);
            };
            if current.layout.as_ref() != Some(expected) {
                return Ok(false);
            }
            store.swap_layout(&current, plan, layout)
        }
    }
}
