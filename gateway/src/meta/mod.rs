//! Metadata: buckets, object versions, multipart uploads and where their shards
//! live. The S3 layer talks to the [`MetadataStore`] trait only; SQLite is the embedded default,
//! PostgreSQL the store several gateway replicas share.

pub mod acl;
pub mod journal;

mod copy;
pub mod cors;
mod listing;
pub mod lock;
mod postgres;
pub(crate) mod probe;
mod queue;
mod sqlite;
#[cfg(test)]
pub(crate) mod test_postgres;
#[cfg(test)]
mod two_gateways;
pub mod users;

use std::collections::BTreeMap;

pub use copy::{CopyCounts, StoreLocation, copy_store};
pub use postgres::{PgPoolOptions, PostgresStore};
pub use sqlite::SqliteStore;
pub use users::{KeyGrant, StoredKey, Usage, User};

use serde::{Deserialize, Serialize};

use crate::datapath::checksum::{ChecksumSpec, ObjectChecksum, Sums};
use crate::datapath::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("bucket {0} already exists")]
    BucketExists(String),
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    #[error(
        "upload {upload_id} of key {key} in bucket {bucket} does not exist (completed, aborted or never started)"
    )]
    NoSuchUpload {
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// A part named by a completion changed or vanished while completing.
    #[error(
        "part {part_number} of upload {upload_id} is not the one listed (it was replaced or never uploaded)"
    )]
    PartChanged { upload_id: String, part_number: i32 },
    /// A conditional write (If-Match / If-None-Match) found the key otherwise.
    #[error("object {key} in bucket {bucket}: {reason}")]
    PreconditionFailed {
        bucket: String,
        key: String,
        reason: String,
    },
    /// A write conditional on an existing object (If-Match) found none.
    #[error("object {key} in bucket {bucket} does not exist, so no ETag can match")]
    NoSuchKey { bucket: String, key: String },
    /// Object lock keeps the version (legal hold or retention running).
    #[error("version {version_id} of {key} in bucket {bucket} is locked: {reason}")]
    ObjectLocked {
        bucket: String,
        key: String,
        version_id: String,
        reason: lock::Locked,
    },
    #[error("metadata store: {0}")]
    Store(String),
    /// The store is up but had no connection free for as long as a call may wait: the
    /// request may be tried again (an S3 503 `SlowDown`).
    #[error("metadata store busy: {0}")]
    Busy(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Whether a bucket keeps old versions (S3 bucket versioning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    Unversioned,
    Enabled,
    Suspended,
}

impl Versioning {
    pub fn as_str(self) -> &'static str {
        match self {
            Versioning::Unversioned => "unversioned",
            Versioning::Enabled => "enabled",
            Versioning::Suspended => "suspended",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "enabled" => Versioning::Enabled,
            "suspended" => Versioning::Suspended,
            _ => Versioning::Unversioned,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub name: String,
    /// Unix milliseconds.
    pub created: i64,
    /// Plan used when a PUT names no storage class; `None` = the gateway default.
    pub default_plan: Option<String>,
    pub versioning: Versioning,
    /// The user the bucket belongs to (whose quota its objects count against); `None` for
    /// buckets made before users existed, which belong to the default user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The version id S3 gives objects written while versioning is off or suspended.
pub const NULL_VERSION: &str = "null";

/// One version of one key: its data layout or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectVersion {
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    pub delete_marker: bool,
    pub size: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub last_modified: i64,
    /// The StoragePlan (= S3 storage class) the version was written under.
    pub plan: String,
    /// `None` for delete markers.
    pub layout: Option<Layout>,
    /// Standard headers and other attributes S3 keeps beside the data.
    #[serde(default, skip_serializing_if = "ObjectAttrs::is_empty")]
    pub attrs: ObjectAttrs,
}

/// What S3 keeps about an object beside its data, type and user metadata: the standard
/// HTTP headers given when it was written, and the multipart upload it completed (so a
/// client retrying CompleteMultipartUpload after a lost answer gets the same answer).
/// Stored as one JSON column (`attrs`) so new attributes need no new column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectAttrs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// The `Expires` header as an HTTP date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The multipart upload this version completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// Object lock: retention and legal hold ([`lock`]).
    #[serde(skip_serializing_if = "lock::ObjectLock::is_none")]
    pub lock: lock::ObjectLock,
    /// S3 object tags (key → value): set on write (`x-amz-tagging`), changed in place by
    /// Put/DeleteObjectTagging ([`MetadataStore::set_object_tags`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The version's ACL, when one was given or its owner is not the bucket's owner
    /// (none: `private`, owned by the bucket's owner). Changed in place by PutObjectAcl
    /// ([`MetadataStore::set_object_acl`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl: Option<acl::Acl>,
    /// A version's S3 checksum (`x-amz-checksum-*`), checked on upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<ObjectChecksum>,
    /// An upload's: the checksum algorithm and kind it was started with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_checksum: Option<ChecksumSpec>,
    /// An upload's, when started with a customer's key (SSE-C): what recognises that key,
    /// which every part must carry (the parts' layouts are sealed with this same seal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_customer_key: Option<crate::datapath::layout::CustomerSeal>,
}

impl ObjectAttrs {
    pub fn is_empty(&self) -> bool {
        *self == ObjectAttrs::default()
    }

    /// As stored in the `attrs` column: `NULL` when empty.
    pub(crate) fn to_column(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// An `attrs` column with field `name` replaced by `value` (removed when `None`) and
    /// every other field kept as it was.
    pub(crate) fn column_with_field(
        column: Option<&str>,
        name: &str,
        value: Option<serde_json::Value>,
    ) -> Result<Option<String>, serde_json::Error> {
        let mut fields: serde_json::Map<String, serde_json::Value> = match column {
            Some(c) => serde_json::from_str(c)?,
            None => serde_json::Map::new(),
        };
        match value {
            Some(v) => fields.insert(name.to_owned(), v),
            None => fields.remove(name),
        };
        if fields.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(&fields).map(Some)
    }

    /// From the `attrs` column; unknown fields (of a newer gateway) are ignored.
    pub(crate) fn from_column(column: Option<&str>) -> Result<Self, serde_json::Error> {
        column.map_or(Ok(ObjectAttrs::default()), serde_json::from_str)
    }
}

/// The condition a conditional write (PUT or CompleteMultipartUpload with If-Match or
/// If-None-Match) puts on the key's latest version, checked in the same transaction as
/// the write so two racing writers cannot both pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// `If-None-Match: *`: no object may exist under the key (a delete marker counts as none).
    Absent,
    /// `If-Match: "etag"`: the latest object has this ETag (`*` matches any object).
    ETag(String),
}

impl WriteCondition {
    /// Checks it against the key's latest version (`None` when the key has none).
    pub fn check(&self, bucket: &str, key: &str, latest: Option<&ObjectVersion>) -> Result<()> {
        let current = latest.filter(|v| !v.delete_marker);
        match (self, current) {
            (WriteCondition::Absent, None) => Ok(()),
            (WriteCondition::Absent, Some(_)) => Err(MetaError::PreconditionFailed {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                reason: "If-None-Match: * but the object exists".to_owned(),
            }),
            (WriteCondition::ETag(_), None) => Err(MetaError::NoSuchKey {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            (WriteCondition::ETag(e), Some(v)) if e == "*" || *e == v.etag => Ok(()),
            (WriteCondition::ETag(e), Some(v)) => Err(MetaError::PreconditionFailed {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                reason: format!("If-Match: \"{e}\" but the object's ETag is \"{}\"", v.etag),
            }),
        }
    }
}

/// What a put of a new version did to the versions already there.
#[derive(Debug, Default)]
pub struct PutOutcome {
    /// Versions the new one replaced (same version id); their shards are now garbage.
    pub replaced: Vec<ObjectVersion>,
}

/// What one plan holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanUsage {
    pub plan: String,
    pub objects: u64,
    pub bytes: u64,
}

/// Objects of one plan sharing the same shard health, from the shard index.
///
/// Counts are per version, over all its segments (and parts): `healthy` is the minimum over
/// segments of shards that are present, not found bad and not on a provider lost past the
/// grace period; `reachable` additionally leaves out providers that are down right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthGroup {
    /// Shards per stripe.
    pub width: u64,
    /// Shards needed to read a stripe.
    pub needed: u64,
    pub healthy: u64,
    pub reachable: u64,
    /// Versions in the group.
    pub objects: u64,
    /// Healthy shards summed over every segment of every version.
    pub healthy_shards: u64,
    /// Segments (stripes) summed over the versions.
    pub segments: u64,
    /// Bytes of present shards.
    pub stored_bytes: u64,
    /// Unix ms of the earliest shard loss among the group's versions, if any.
    pub lost_since: Option<i64>,
}

/// A version the shard index says needs repair (or is lost), most at risk first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedVersion {
    /// The version's row id; changes when the version is replaced.
    pub seq: i64,
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    /// Healthy shards of its weakest segment.
    pub healthy: u64,
    pub needed: u64,
    pub width: u64,
    /// Unix ms of its earliest shard loss.
    pub lost_since: Option<i64>,
}

/// What the gateway last saw of a provider, persisted so restarts keep counting its absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSeen {
    /// Unix ms of its last successful probe (or first sighting).
    pub last_seen: i64,
    /// Unix ms of the first failed probe since then; `None` while it answers.
    pub down_since: Option<i64>,
}

/// A stored shard picked for an audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSample {
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    pub pos: ShardPos,
    pub shard_id: String,
    /// BLAKE3 recorded at write time (hex).
    pub hash: String,
    pub length: u64,
}

/// Where one shard of a version sits in its layout: (piece, segment, index).
pub type ShardPos = (usize, usize, usize);

/// One page of a ListObjects listing: latest versions that are not delete markers.
#[derive(Debug, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectVersion>,
    pub common_prefixes: Vec<String>,
    /// Set when the listing was truncated: the last key or prefix returned.
    pub next_marker: Option<String>,
}

/// The listing question, as S3 asks it.
#[derive(Debug, Clone, Default)]
pub struct ListQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Only keys (and prefixes) strictly after this one.
    pub start_after: &'a str,
    pub max_keys: usize,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    /// The StoragePlan every part is written under.
    pub plan: String,
    /// Given at creation, carried to the completed version.
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub initiated: i64,
    /// Standard headers given at creation, carried to the completed version.
    #[serde(default, skip_serializing_if = "ObjectAttrs::is_empty")]
    pub attrs: ObjectAttrs,
}

/// One uploaded part: its own erasure-coded layout and MD5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadPart {
    pub part_number: i32,
    pub size: u64,
    /// Hex MD5 of the part's bytes.
    pub etag: String,
    /// Unix milliseconds.
    pub last_modified: i64,
    pub layout: Layout,
    /// S3 checksums of the part's bytes (`checksums` column, JSON; none from before them).
    #[serde(default, skip_serializing_if = "Sums::is_empty")]
    pub checksums: Sums,
}

impl UploadPart {
    /// Its checksums as stored in the parts' `checksums` column: `NULL` when it has none.
    pub(crate) fn checksums_column(&self) -> Option<String> {
        if self.checksums.is_empty() {
            return None;
        }
        serde_json::to_string(&self.checksums).ok()
    }
}

/// What completing an upload did.
#[derive(Debug, Default)]
pub struct CompleteOutcome {
    /// Versions the new one replaced (same version id); their shards are now garbage.
    pub replaced: Vec<ObjectVersion>,
    /// Parts uploaded but not named by the completion; their shards are now garbage.
    pub unused: Vec<UploadPart>,
}

/// The ListObjectVersions question.
#[derive(Debug, Clone, Default)]
pub struct VersionQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Only keys after this one, or (with `version_id_marker`) the versions of
    /// this key older than that version.
    pub key_marker: &'a str,
    pub version_id_marker: &'a str,
    pub max_keys: usize,
}

/// One entry of a versions listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub version: ObjectVersion,
    pub is_latest: bool,
}

/// One page of ListObjectVersions: versions and delete markers, newest first per key.
#[derive(Debug, Default)]
pub struct VersionPage {
    pub versions: Vec<VersionEntry>,
    pub common_prefixes: Vec<String>,
    /// Set when truncated: (key marker, version id marker) to continue from.
    pub next: Option<(String, String)>,
}

/// The ListMultipartUploads question.
#[derive(Debug, Clone, Default)]
pub struct UploadQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Only keys after this one, or (with `upload_id_marker`) the uploads of
    /// this key started after that upload.
    pub key_marker: &'a str,
    pub upload_id_marker: &'a str,
    pub max_uploads: usize,
}

/// One page of ListMultipartUploads.
#[derive(Debug, Default)]
pub struct UploadPage {
    pub uploads: Vec<Upload>,
    pub common_prefixes: Vec<String>,
    /// Set when truncated: (key marker, upload id marker) to continue from.
    pub next: Option<(String, String)>,
}

/// The narrow interface between the S3 layer and wherever metadata lives.
pub trait MetadataStore: Send + Sync + 'static {
    fn create_bucket(&self, bucket: &Bucket) -> Result<()>;
    fn bucket(&self, name: &str) -> Result<Option<Bucket>>;
    fn buckets(&self) -> Result<Vec<Bucket>>;
    /// Stored versions (not delete markers) and their bytes, by plan, for usage gauges.
    fn plan_usage(&self) -> Result<Vec<PlanUsage>> {
        Ok(Vec::new())
    }
    /// Whether the gateways on this store share one policy overlay through it (several
    /// replicas on one database); otherwise each keeps its own file, and a store that can
    /// keeps a copy of it (see [`MetadataStore::put_shared_policies`]) for recovery.
    fn shares_policies(&self) -> bool {
        false
    }
    /// The shared policy overlay (YAML) and its revision (or the copy kept for recovery);
    /// `None` before the first one.
    fn shared_policies(&self) -> Result<Option<(i64, String)>> {
        Ok(None)
    }
    /// Stores `yaml` as the shared overlay if its revision is still `expected` (0: none yet)
    /// and answers the new revision, or `None` when another gateway changed it first.
    fn put_shared_policies(&self, _expected: i64, _yaml: &str) -> Result<Option<i64>> {
        Err(MetaError::Store(
            "this store keeps no shared policies".into(),
        ))
    }
    /// Records probe outcomes at `now` (Unix ms): `true` = answered.
    fn record_probes(&self, _outcomes: &[(String, bool)], _now: i64) -> Result<()> {
        Ok(())
    }
    /// Records which pool each provider belongs to (at `now`, Unix ms, for providers never
    /// seen before), so shards stay attributed to a pool after it leaves the configuration.
    fn record_pools(&self, _pools: &[(String, String)], _now: i64) -> Result<()> {
        Ok(())
    }
    /// The pool each provider was last configured in.
    fn provider_pools(&self) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }
    /// What was last seen of every provider probed so far.
    fn providers_seen(&self) -> Result<BTreeMap<String, ProviderSeen>> {
        Ok(BTreeMap::new())
    }
    /// Shard health of `plan`'s versions grouped by (width, needed, healthy, reachable).
    /// Shards on providers down since before `lost_cut` (Unix ms) count as lost from
    /// `down + grace_ms`.
    fn plan_health(&self, _plan: &str, _lost_cut: i64, _grace_ms: i64) -> Result<Vec<HealthGroup>> {
        Ok(Vec::new())
    }
    /// Versions of `plan` whose weakest segment has fewer than `min_healthy` (the stripe
    /// width when `None`) healthy shards, fewest first; `lost` selects those below
    /// `needed` (unrepairable now) instead of the repairable ones.
    fn queued_versions(
        &self,
        _plan: &str,
        _lost_cut: i64,
        _grace_ms: i64,
        _min_healthy: Option<u64>,
        _lost: bool,
        _limit: usize,
    ) -> Result<Vec<QueuedVersion>> {
        Ok(Vec::new())
    }
    /// The version stored under row id `seq`, if it is still there.
    fn version_by_seq(&self, _seq: i64) -> Result<Option<ObjectVersion>> {
        Ok(None)
    }
    /// Up to `limit` versions with row ids above `after`, in row id order, delete markers
    /// included (their layout is `None`): how a scrub walks the store.
    fn versions_after(&self, _after: i64, _limit: usize) -> Result<Vec<(i64, ObjectVersion)>> {
        Ok(Vec::new())
    }
    /// Shards of version `seq` found corrupt or gone.
    fn bad_shards(&self, _seq: i64) -> Result<Vec<ShardPos>> {
        Ok(Vec::new())
    }
    /// Flags shards of the version at `bucket/key/version_id` whose provider answered with
    /// wrong bytes or no shard, so they are counted unhealthy and repaired. Each is named by
    /// position and shard id: a position that holds another shard by now (repaired meanwhile)
    /// is left alone.
    fn mark_bad_shards(
        &self,
        _bucket: &str,
        _key: &str,
        _version_id: &str,
        _shards: &[(ShardPos, String)],
        _now: i64,
    ) -> Result<()> {
        Ok(())
    }
    /// Swaps version `seq`'s layout for `new` if it is still exactly `expected`;
    /// `false` (nothing changed) when the version was replaced, deleted or repaired since.
    fn replace_layout(&self, _seq: i64, _expected: &Layout, _new: &Layout) -> Result<bool> {
        Err(MetaError::Store("this store cannot swap layouts".into()))
    }
    /// Up to `count` random shards on `provider` not already flagged bad, to audit.
    fn audit_samples(&self, _provider: &str, _count: usize) -> Result<Vec<AuditSample>> {
        Ok(Vec::new())
    }
    /// Ids of every shard on `provider` that metadata still needs: versions' and parts' of
    /// uploads in progress. Everything else there is garbage.
    fn referenced_shards(&self, _provider: &str) -> Result<std::collections::HashSet<String>> {
        Err(MetaError::Store(
            "this store cannot list referenced shards".into(),
        ))
    }
    /// Shards and their bytes per provider node id, over every stored version.
    fn provider_usage(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        Ok(BTreeMap::new())
    }
    /// Creates or replaces a user (whole row: replaying it twice is harmless).
    fn put_user(&self, _user: &User) -> Result<()> {
        Err(MetaError::Store("this store keeps no users".into()))
    }
    /// Every user, by id.
    fn users(&self) -> Result<Vec<User>> {
        Ok(Vec::new())
    }
    /// Removes a user; `false` when there was none.
    fn delete_user(&self, _id: &str) -> Result<bool> {
        Err(MetaError::Store("this store keeps no users".into()))
    }
    /// Creates or replaces an access key (whole row).
    fn put_key(&self, _key: &StoredKey) -> Result<()> {
        Err(MetaError::Store("this store keeps no access keys".into()))
    }
    /// Every access key, by access key id.
    fn keys(&self) -> Result<Vec<StoredKey>> {
        Ok(Vec::new())
    }
    /// Removes an access key; `false` when there was none.
    fn delete_key(&self, _access_key: &str) -> Result<bool> {
        Err(MetaError::Store("this store keeps no access keys".into()))
    }
    /// Stored versions (not delete markers) and their bytes by bucket owner (`""`: buckets
    /// without one).
    fn user_usage(&self) -> Result<BTreeMap<String, Usage>> {
        Ok(BTreeMap::new())
    }
    /// Up to `limit` versions with a shard on `provider` and a row id above `after`, in row
    /// id order, each with its plan: how a drain walks a pool's shards.
    fn versions_on(
        &self,
        _provider: &str,
        _after: i64,
        _limit: usize,
    ) -> Result<Vec<(i64, String)>> {
        Err(MetaError::Store(
            "this store cannot list the versions on a provider".into(),
        ))
    }
    /// Shards and their bytes on `provider`, by the plan of their versions.
    fn provider_plans(&self, _provider: &str) -> Result<BTreeMap<String, (u64, u64)>> {
        Err(MetaError::Store(
            "this store cannot count a provider's shards by plan".into(),
        ))
    }
    /// Fails with `BucketNotEmpty` while any version or upload remains.
    fn delete_bucket(&self, name: &str) -> Result<()>;
    fn set_versioning(&self, name: &str, versioning: Versioning) -> Result<()>;
    /// Sets (or with `None` clears) the plan a bucket's new objects use when a request
    /// names no storage class.
    fn set_bucket_plan(&self, name: &str, plan: Option<&str>) -> Result<()>;

    /// Commits a version atomically; it becomes the latest of its key.
    fn put_version(&self, version: &ObjectVersion) -> Result<PutOutcome> {
        self.put_version_if(version, None)
    }
    /// [`put_version`](Self::put_version) when the key's latest version meets `condition`,
    /// checked in the same transaction.
    fn put_version_if(
        &self,
        version: &ObjectVersion,
        condition: Option<&WriteCondition>,
    ) -> Result<PutOutcome>;
    /// The latest version (which may be a delete marker) or a given one.
    fn version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectVersion>>;
    /// Removes one version for good and returns it.
    fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectVersion>>;
    /// Latest non-deleted versions in key order, without their layouts.
    fn list(&self, bucket: &str, query: &ListQuery<'_>) -> Result<ListPage>;
    /// Every version (and delete marker) of keys in key order, newest first per key.
    fn list_versions(&self, bucket: &str, query: &VersionQuery<'_>) -> Result<VersionPage>;

    /// Starts a multipart upload; fails with `NoSuchBucket`.
    fn create_upload(&self, upload: &Upload) -> Result<()>;
    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>>;
    /// Stores a part, replacing (and returning) any part with the same number;
    /// fails with `NoSuchUpload` once the upload is completed or aborted.
    fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &UploadPart,
    ) -> Result<Option<UploadPart>>;
    /// Parts numbered above `after`, in order, at most `max`.
    fn parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: i32,
        max: usize,
    ) -> Result<Vec<UploadPart>>;
    /// Uploads in progress in key order, oldest first per key.
    fn uploads(&self, bucket: &str, query: &UploadQuery<'_>) -> Result<UploadPage>;
    /// In one transaction: checks that each `(part number, etag)` in `used` is
    /// still the stored part (`PartChanged` otherwise), ends the upload and
    /// commits `version` as the latest of its key.
    fn complete_upload(
        &self,
        upload_id: &str,
        used: &[(i32, String)],
        version: &ObjectVersion,
    ) -> Result<CompleteOutcome> {
        self.complete_upload_if(upload_id, used, version, None)
    }
    /// [`complete_upload`](Self::complete_upload) when the key's latest version meets
    /// `condition`, checked in the same transaction (the upload stays open otherwise).
    fn complete_upload_if(
        &self,
        upload_id: &str,
        used: &[(i32, String)],
        version: &ObjectVersion,
        condition: Option<&WriteCondition>,
    ) -> Result<CompleteOutcome>;
    /// Ends an upload and returns its parts (whose shards are now garbage).
    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<UploadPart>>;

    /// Stores (`Some`, JSON) or removes (`None`) a bucket's lifecycle rules; fails with
    /// `NoSuchBucket`.
    fn set_lifecycle(&self, bucket: &str, rules: Option<&str>) -> Result<()>;
    /// A bucket's lifecycle rules as stored by [`MetadataStore::set_lifecycle`].
    fn lifecycle(&self, bucket: &str) -> Result<Option<String>>;
    /// Enables object lock on a bucket, or changes its configuration (JSON of
    /// [`lock::BucketLock`]); there is no way back. Fails with `NoSuchBucket`.
    fn set_bucket_lock(&self, bucket: &str, config: &str) -> Result<()>;
    /// A bucket's object lock configuration as stored by
    /// [`MetadataStore::set_bucket_lock`]; `None`: object lock is not enabled.
    fn bucket_lock(&self, bucket: &str) -> Result<Option<String>>;
    /// Sets the lock of one version if it is still `expected`, keeping every other
    /// attribute; `false` (nothing changed) when the version is gone or its lock changed.
    fn set_version_lock(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        expected: &lock::ObjectLock,
        new: &lock::ObjectLock,
    ) -> Result<bool>;
    /// Stores (`Some`, JSON) or removes (`None`) a bucket's tags; fails with `NoSuchBucket`.
    fn set_bucket_tags(&self, bucket: &str, tags: Option<&str>) -> Result<()>;
    /// A bucket's tags as stored by [`MetadataStore::set_bucket_tags`].
    fn bucket_tags(&self, bucket: &str) -> Result<Option<String>>;
    /// Stores (`Some`, JSON of the CORS rules) or removes (`None`) a bucket's CORS
    /// configuration; fails with `NoSuchBucket`.
    fn set_bucket_cors(&self, bucket: &str, rules: Option<&str>) -> Result<()>;
    /// A bucket's CORS configuration as stored by [`MetadataStore::set_bucket_cors`].
    fn bucket_cors(&self, bucket: &str) -> Result<Option<String>>;
    /// Stores (`Some`, the policy's JSON as given) or removes (`None`) a bucket's policy;
    /// fails with `NoSuchBucket`.
    fn set_bucket_policy(&self, bucket: &str, policy: Option<&str>) -> Result<()>;
    /// A bucket's policy as stored by [`MetadataStore::set_bucket_policy`].
    fn bucket_policy(&self, bucket: &str) -> Result<Option<String>>;
    /// Stores (`Some`, JSON) or removes (`None`) a bucket's PublicAccessBlock; fails with
    /// `NoSuchBucket`.
    fn set_public_access_block(&self, bucket: &str, config: Option<&str>) -> Result<()>;
    /// A bucket's PublicAccessBlock as stored by [`MetadataStore::set_public_access_block`].
    fn public_access_block(&self, bucket: &str) -> Result<Option<String>>;
    /// Stores (`Some`, JSON) or removes (`None`) a bucket's default encryption
    /// (PutBucketEncryption); fails with `NoSuchBucket`.
    fn set_bucket_encryption(&self, bucket: &str, config: Option<&str>) -> Result<()>;
    /// A bucket's default encryption as stored by
    /// [`MetadataStore::set_bucket_encryption`].
    fn bucket_encryption(&self, bucket: &str) -> Result<Option<String>>;
    /// Stores (`Some`, JSON of [`acl::Acl`]) or removes (`None`: `private`) a bucket's
    /// ACL; fails with `NoSuchBucket`.
    fn set_bucket_acl(&self, bucket: &str, acl: Option<&str>) -> Result<()>;
    /// A bucket's ACL as stored by [`MetadataStore::set_bucket_acl`].
    fn bucket_acl(&self, bucket: &str) -> Result<Option<String>>;
    /// Stores (`Some`, an [`acl::Ownership`] name) or removes (`None`) a bucket's object
    /// ownership setting; fails with `NoSuchBucket`.
    fn set_bucket_ownership(&self, bucket: &str, ownership: Option<&str>) -> Result<()>;
    /// A bucket's object ownership as stored by [`MetadataStore::set_bucket_ownership`].
    fn bucket_ownership(&self, bucket: &str) -> Result<Option<String>>;
    /// Replaces the ACL of one stored version (not a delete marker) in place, keeping the
    /// rest of it; `false` (nothing changed) when there is no such version.
    fn set_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        acl: Option<&acl::Acl>,
    ) -> Result<bool>;
    /// Replaces the tags of one stored version (not a delete marker) in place, keeping the
    /// rest of it; `false` (nothing changed) when there is no such version.
    fn set_object_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool>;
    /// Moves `current` to another plan: in one transaction, if the version still has
    /// exactly `current`'s layout (no concurrent overwrite, repair or delete), gives it
    /// `plan` and `layout` and returns true; otherwise changes nothing and returns false.
    fn swap_layout(&self, current: &ObjectVersion, plan: &str, layout: &Layout) -> Result<bool>;
    /// Writes a consistent copy of the whole store to `path` (which must not exist), for
    /// metadata snapshots.
    fn snapshot_into(&self, path: &std::path::Path) -> Result<()>;
    /// Whether other gateway processes may serve from this store at the same time (reads
    /// in flight there are invisible here).
    fn shared(&self) -> bool {
        false
    }
    /// Claims version `seq` for repair by `holder` until `now + lease_ms` (Unix ms), so
    /// repairers in other processes sharing this store leave it alone; `false` while another
    /// holder's lease runs. A store only one process opens needs no claims (the default).
    fn claim_repair(&self, _seq: i64, _holder: &str, _now: i64, _lease_ms: i64) -> Result<bool> {
        Ok(true)
    }
    /// Holds the writes `write_ids` (see `node::inflight::Writes`) of `holder` in flight
    /// until `until_ms` (Unix ms), unless held again: garbage collection by any gateway
    /// sharing the store keeps their shards meanwhile. A store only one process opens keeps
    /// no such record (its writes in flight are all in that process) — the default.
    fn hold_writes(&self, _holder: &str, _write_ids: &[String], _until_ms: i64) -> Result<()> {
        Ok(())
    }
    /// Ends every write `holder` holds but those in `keep`, and forgets every hold (of
    /// anyone) that expired before `now_ms`.
    fn end_writes(&self, _holder: &str, _keep: &[String], _now_ms: i64) -> Result<()> {
        Ok(())
    }
    /// The write ids held by any gateway and not expired at `now_ms`.
    fn held_writes(&self, _now_ms: i64) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Gives back a claim taken with [`MetadataStore::claim_repair`].
    fn release_repair(&self, _seq: i64, _holder: &str) -> Result<()> {
        Ok(())
    }
    /// The lock a metadata journal holds around a change and its append, when the store
    /// has one of its own. Such a store commits its object writes and deletes in groups
    /// under this lock and runs their commit hooks ([`set_commit_hook`]) there, in commit
    /// order, so a journal need not hold a lock around them (which would stop them
    /// grouping). `None`: the journal orders changes with a lock of its own.
    fn commit_order(&self) -> Option<&std::sync::Mutex<()>> {
        None
    }
}

/// What runs with a change's outcome once it is committed; see [`set_commit_hook`].
pub type CommitHook = Box<dyn FnOnce(&dyn std::any::Any) + Send>;

thread_local! {
    static COMMIT_HOOK: std::cell::RefCell<Option<CommitHook>> =
        const { std::cell::RefCell::new(None) };
}

/// Hands `hook` to the next grouped change this thread makes on a store with a
/// [`MetadataStore::commit_order`]: it runs with the change's outcome right after the
/// group holding it commits, in commit order, and not at all if the change or the commit
/// fails.
pub fn set_commit_hook(hook: CommitHook) {
    COMMIT_HOOK.with(|h| *h.borrow_mut() = Some(hook));
}

/// Takes back the hook [`set_commit_hook`] left for this thread, if no change took it.
pub fn take_commit_hook() -> Option<CommitHook> {
    COMMIT_HOOK.with(|h| h.borrow_mut().take())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
