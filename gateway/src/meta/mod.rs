//! Metadata: buckets, object versions, multipart uploads and where their shards
//! live. The S3 layer talks to the [`MetadataStore`] trait only; SQLite is the embedded default,
//! PostgreSQL the store several gateway replicas share.

pub mod journal;

mod copy;
mod listing;
mod postgres;
mod postgres_tls;
mod queue;
mod sqlite;
#[cfg(test)]
mod test_postgres;
#[cfg(test)]
mod two_gateways;

use std::collections::BTreeMap;

pub use copy::{CopyCounts, StoreLocation, copy_store};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use serde::{Deserialize, Serialize};

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
    #[error("metadata store: {0}")]
    Store(String),
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
    /// Fails with `BucketNotEmpty` while any version or upload remains.
    fn delete_bucket(&self, name: &str) -> Result<()>;
    fn set_versioning(&self, name: &str, versioning: Versioning) -> Result<()>;
    /// Sets (or with `None` clears) the plan a bucket's new objects use when a request
    /// names no storage class.
    fn set_bucket_plan(&self, name: &str, plan: Option<&str>) -> Result<()>;

    /// Commits a version atomically; it becomes the latest of its key.
    fn put_version(&self, version: &ObjectVersion) -> Result<PutOutcome>;
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
    ) -> Result<CompleteOutcome>;
    /// Ends an upload and returns its parts (whose shards are now garbage).
    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<UploadPart>>;

    /// Stores (`Some`, JSON) or removes (`None`) a bucket's lifecycle rules; fails with
    /// `NoSuchBucket`.
    fn set_lifecycle(&self, bucket: &str, rules: Option<&str>) -> Result<()>;
    /// A bucket's lifecycle rules as stored by [`MetadataStore::set_lifecycle`].
    fn lifecycle(&self, bucket: &str) -> Result<Option<String>>;
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
mod tests {
    use super::*;
    use crate::datapath::layout::{Encryption, Scheme};

    /// Runs each store-agnostic test on SQLite and on PostgreSQL.
    macro_rules! on_every_store {
        ($($name:ident),* $(,)?) => {
            mod sqlite_store {
                $(#[test]
                fn $name() {
                    super::$name(&super::SqliteStore::open_in_memory().unwrap());
                })*
            }
            mod postgres_store {
                $(#[test]
                fn $name() {
                    if let Some(s) = super::super::test_postgres::store() {
                        super::$name(&s);
                    }
                })*
            }
        };
    }

    on_every_store!(
        buckets_are_created_once_and_deleted_only_when_empty,
        versions_round_trip_and_null_version_is_replaced,
        latest_version_wins_and_old_ones_stay_addressable,
        listing_hides_delete_markers_and_groups_prefixes,
        listing_pages_with_markers,
        version_listing_pages_through_versions_markers_and_prefixes,
        parts_are_replaced_listed_and_uploads_end_once,
        shard_index_follows_versions_providers_and_bad_shards,
        versions_are_walked_in_row_order,
        a_bucket_default_plan_is_set_and_cleared,
    );

    fn a_bucket_default_plan_is_set_and_cleared(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        s.set_bucket_plan("b", Some("archive")).unwrap();
        assert_eq!(
            s.bucket("b").unwrap().unwrap().default_plan.as_deref(),
            Some("archive")
        );
        assert_eq!(
            s.buckets().unwrap()[0].default_plan.as_deref(),
            Some("archive")
        );
        s.set_bucket_plan("b", None).unwrap();
        assert_eq!(s.bucket("b").unwrap().unwrap().default_plan, None);
        assert!(matches!(
            s.set_bucket_plan("nope", Some("archive")),
            Err(MetaError::NoSuchBucket(_))
        ));
    }

    fn versions_are_walked_in_row_order(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        for (key, id) in [("z", "v1"), ("a", "v2"), ("m", "v3"), ("a", "v4")] {
            s.put_version(&version(key, id, 1)).unwrap();
        }
        s.delete_version("b", "m", "v3").unwrap();
        let all = s.versions_after(0, 100).unwrap();
        let ids: Vec<&str> = all.iter().map(|(_, v)| v.version_id.as_str()).collect();
        assert_eq!(ids, ["v1", "v2", "v4"], "row order, deleted ones gone");
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let first = s.versions_after(0, 1).unwrap();
        assert_eq!(first.len(), 1);
        let rest = s.versions_after(first[0].0, 100).unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].1.version_id, "v2");
        assert!(s.versions_after(all[2].0, 100).unwrap().is_empty());
    }

    fn bucket(name: &str) -> Bucket {
        Bucket {
            name: name.into(),
            created: 1,
            default_plan: None,
            versioning: Versioning::Unversioned,
        }
    }

    fn version(key: &str, id: &str, size: u64) -> ObjectVersion {
        ObjectVersion {
            bucket: "b".into(),
            key: key.into(),
            version_id: id.into(),
            delete_marker: false,
            size,
            etag: format!("etag-{size}"),
            content_type: Some("text/plain".into()),
            user_metadata: BTreeMap::from([("owner".to_string(), "alice".to_string())]),
            last_modified: 5,
            plan: "family-photos".into(),
            layout: Some(Layout {
                scheme: Scheme::Erasure { data: 4, parity: 2 },
                encryption: Encryption::None,
                segment_size: 16,
                segments: vec![],
                inline: Some(vec![1, 2, 3]),
                parts: vec![],
            }),
        }
    }

    fn buckets_are_created_once_and_deleted_only_when_empty(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        assert!(matches!(
            s.create_bucket(&bucket("b")),
            Err(MetaError::BucketExists(_))
        ));
        assert_eq!(s.buckets().unwrap().len(), 1);
        s.put_version(&version("k", NULL_VERSION, 3)).unwrap();
        assert!(matches!(
            s.delete_bucket("b"),
            Err(MetaError::BucketNotEmpty(_))
        ));
        s.delete_version("b", "k", NULL_VERSION).unwrap();
        s.delete_bucket("b").unwrap();
        assert!(s.bucket("b").unwrap().is_none());
        assert!(matches!(
            s.delete_bucket("b"),
            Err(MetaError::NoSuchBucket(_))
        ));
    }

    fn versions_round_trip_and_null_version_is_replaced(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        let v1 = version("k", NULL_VERSION, 3);
        assert!(s.put_version(&v1).unwrap().replaced.is_empty());
        assert_eq!(s.version("b", "k", None).unwrap().unwrap(), v1);
        let v2 = version("k", NULL_VERSION, 4);
        let out = s.put_version(&v2).unwrap();
        assert_eq!(out.replaced, vec![v1]);
        assert_eq!(s.version("b", "k", None).unwrap().unwrap().size, 4);
    }

    fn latest_version_wins_and_old_ones_stay_addressable(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        s.put_version(&version("k", "v1", 1)).unwrap();
        s.put_version(&version("k", "v2", 2)).unwrap();
        assert_eq!(s.version("b", "k", None).unwrap().unwrap().version_id, "v2");
        assert_eq!(s.version("b", "k", Some("v1")).unwrap().unwrap().size, 1);
        let all = s
            .list_versions(
                "b",
                &VersionQuery {
                    max_keys: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        let ids: Vec<_> = all
            .versions
            .iter()
            .map(|e| (e.version.version_id.as_str(), e.is_latest))
            .collect();
        assert_eq!(ids, [("v2", true), ("v1", false)]);
        s.delete_version("b", "k", "v2").unwrap();
        assert_eq!(s.version("b", "k", None).unwrap().unwrap().version_id, "v1");
    }

    fn listing_hides_delete_markers_and_groups_prefixes(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        for key in [
            "a.txt",
            "photos/1.jpg",
            "photos/2.jpg",
            "photos/2024/3.jpg",
            "z",
        ] {
            s.put_version(&version(key, NULL_VERSION, 1)).unwrap();
        }
        let mut marker = version("z", "m1", 0);
        marker.delete_marker = true;
        marker.layout = None;
        s.put_version(&marker).unwrap();

        let all = s
            .list(
                "b",
                &ListQuery {
                    max_keys: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            ["a.txt", "photos/1.jpg", "photos/2.jpg", "photos/2024/3.jpg"]
        );

        let top = s
            .list(
                "b",
                &ListQuery {
                    delimiter: Some("/"),
                    max_keys: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(top.objects.len(), 1);
        assert_eq!(top.common_prefixes, ["photos/"]);

        let inside = s
            .list(
                "b",
                &ListQuery {
                    prefix: "photos/",
                    delimiter: Some("/"),
                    max_keys: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(inside.objects.len(), 2);
        assert_eq!(inside.common_prefixes, ["photos/2024/"]);
    }

    fn listing_pages_with_markers(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        for i in 0..25 {
            s.put_version(&version(&format!("k{i:03}"), NULL_VERSION, 1))
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = s
                .list(
                    "b",
                    &ListQuery {
                        start_after: &after,
                        max_keys: 10,
                        ..Default::default()
                    },
                )
                .unwrap();
            seen.extend(page.objects.iter().map(|o| o.key.clone()));
            match page.next_marker {
                Some(m) => after = m,
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    fn versions_page(s: &dyn MetadataStore, key_marker: &str, vid_marker: &str) -> VersionPage {
        s.list_versions(
            "b",
            &VersionQuery {
                prefix: "",
                delimiter: Some("/"),
                key_marker,
                version_id_marker: vid_marker,
                max_keys: 2,
            },
        )
        .unwrap()
    }

    fn version_listing_pages_through_versions_markers_and_prefixes(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        for (key, id) in [
            ("a", "a1"),
            ("a", "a2"),
            ("a", "a3"),
            ("d/x", "x1"),
            ("d/y", "y1"),
            ("z", "z1"),
        ] {
            s.put_version(&version(key, id, 1)).unwrap();
        }
        let mut marker = version("z", "z2", 0);
        marker.delete_marker = true;
        marker.layout = None;
        s.put_version(&marker).unwrap();

        let mut seen = Vec::new();
        let (mut km, mut vm) = (String::new(), String::new());
        for _ in 0..10 {
            let page = versions_page(s, &km, &vm);
            seen.extend(page.versions.iter().map(|e| {
                format!(
                    "{}{}{}",
                    e.version.version_id,
                    if e.is_latest { "*" } else { "" },
                    if e.version.delete_marker { "m" } else { "" }
                )
            }));
            seen.extend(page.common_prefixes.iter().cloned());
            match page.next {
                Some((k, v)) => (km, vm) = (k, v),
                None => break,
            }
        }
        assert_eq!(seen, ["a3*", "a2", "a1", "d/", "z2*m", "z1"]);
    }

    fn upload(id: &str, key: &str) -> Upload {
        Upload {
            bucket: "b".into(),
            key: key.into(),
            upload_id: id.into(),
            plan: "standard".into(),
            content_type: Some("text/plain".into()),
            user_metadata: BTreeMap::from([("color".to_string(), "blue".to_string())]),
            initiated: 7,
        }
    }

    fn part(n: i32, etag: &str) -> UploadPart {
        UploadPart {
            part_number: n,
            size: 10,
            etag: etag.into(),
            last_modified: 8,
            layout: Layout {
                scheme: Scheme::Erasure { data: 4, parity: 2 },
                encryption: Encryption::None,
                segment_size: 16,
                segments: vec![],
                inline: None,
                parts: vec![],
            },
        }
    }

    fn parts_are_replaced_listed_and_uploads_end_once(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        assert!(matches!(
            s.create_upload(&Upload {
                bucket: "nope".into(),
                ..upload("u0", "k")
            }),
            Err(MetaError::NoSuchBucket(_))
        ));
        s.create_upload(&upload("u1", "k")).unwrap();
        s.create_upload(&upload("u2", "k")).unwrap();
        s.create_upload(&upload("u3", "j")).unwrap();
        assert_eq!(
            s.upload("b", "k", "u1").unwrap().unwrap(),
            upload("u1", "k")
        );
        assert!(
            s.upload("b", "j", "u1").unwrap().is_none(),
            "upload ids belong to their key"
        );

        assert!(
            s.put_part("b", "k", "u1", &part(1, "e1"))
                .unwrap()
                .is_none()
        );
        assert!(
            s.put_part("b", "k", "u1", &part(2, "e2"))
                .unwrap()
                .is_none()
        );
        let old = s.put_part("b", "k", "u1", &part(1, "e1b")).unwrap();
        assert_eq!(old.unwrap().etag, "e1");
        let parts = s.parts("b", "k", "u1", 0, 100).unwrap();
        let tags: Vec<_> = parts.iter().map(|p| p.etag.as_str()).collect();
        assert_eq!(tags, ["e1b", "e2"]);
        assert_eq!(s.parts("b", "k", "u1", 1, 100).unwrap().len(), 1);
        assert!(matches!(
            s.delete_bucket("b"),
            Err(MetaError::BucketNotEmpty(_))
        ));

        // Uploads list by key, then age, and page on (key, upload id).
        let ids = |q: UploadQuery<'_>| -> Vec<String> {
            let page = s
                .uploads(
                    "b",
                    &UploadQuery {
                        max_uploads: 100,
                        ..q
                    },
                )
                .unwrap();
            page.uploads
                .into_iter()
                .map(|u| u.upload_id)
                .chain(page.common_prefixes)
                .collect()
        };
        assert_eq!(ids(UploadQuery::default()), ["u3", "u1", "u2"]);
        assert_eq!(
            ids(UploadQuery {
                key_marker: "k",
                upload_id_marker: "u1",
                ..Default::default()
            }),
            ["u2"]
        );
        assert_eq!(
            ids(UploadQuery {
                prefix: "k",
                ..Default::default()
            }),
            ["u1", "u2"]
        );
        s.create_upload(&upload("u4", "d/x")).unwrap();
        s.create_upload(&upload("u5", "d/y")).unwrap();
        assert_eq!(
            ids(UploadQuery {
                delimiter: Some("/"),
                ..Default::default()
            }),
            ["u3", "u1", "u2", "d/"]
        );
        let first = s
            .uploads(
                "b",
                &UploadQuery {
                    delimiter: Some("/"),
                    max_uploads: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(first.common_prefixes, ["d/"]);
        assert_eq!(first.next, Some(("d/".to_string(), String::new())));
        s.abort_upload("b", "d/x", "u4").unwrap();
        s.abort_upload("b", "d/y", "u5").unwrap();

        // A completion naming a replaced part fails and changes nothing.
        let mut v = version("k", NULL_VERSION, 20);
        assert!(matches!(
            s.complete_upload("u1", &[(1, "e1".into())], &v),
            Err(MetaError::PartChanged { part_number: 1, .. })
        ));
        assert!(s.version("b", "k", None).unwrap().is_none());
        v.content_type = Some("text/csv".into());
        let done = s.complete_upload("u1", &[(1, "e1b".into())], &v).unwrap();
        assert_eq!(done.unused.len(), 1);
        assert_eq!(done.unused[0].etag, "e2");
        assert_eq!(s.version("b", "k", None).unwrap().unwrap(), v);
        assert!(matches!(
            s.complete_upload("u1", &[(1, "e1b".into())], &v),
            Err(MetaError::NoSuchUpload { .. })
        ));
        assert!(matches!(
            s.put_part("b", "k", "u1", &part(3, "e3")),
            Err(MetaError::NoSuchUpload { .. })
        ));
        assert!(matches!(
            s.parts("b", "k", "u1", 0, 10),
            Err(MetaError::NoSuchUpload { .. })
        ));

        s.put_part("b", "k", "u2", &part(1, "x")).unwrap();
        assert_eq!(s.abort_upload("b", "k", "u2").unwrap().len(), 1);
        assert!(matches!(
            s.abort_upload("b", "k", "u2"),
            Err(MetaError::NoSuchUpload { .. })
        ));
        s.abort_upload("b", "j", "u3").unwrap();
        s.delete_version("b", "k", NULL_VERSION).unwrap();
        s.delete_bucket("b").unwrap();
    }

    /// A 4+2 version with `segments` segments, shard `i` on provider `n{i}`.
    fn striped(key: &str, segments: usize) -> ObjectVersion {
        use crate::datapath::layout::{Segment, ShardLocation};
        let mut v = version(key, NULL_VERSION, 100);
        let layout = v.layout.as_mut().unwrap();
        layout.inline = None;
        layout.segments = (0..segments)
            .map(|g| Segment {
                plain_length: 50,
                sealed_length: 66,
                shards: (0..6)
                    .map(|i| ShardLocation {
                        provider: format!("n{i}"),
                        shard_id: format!("{key}.{g}.{i}"),
                        hash: "h".into(),
                        length: 17,
                    })
                    .collect(),
            })
            .collect();
        v
    }

    fn one_group(s: &dyn MetadataStore, cut: i64) -> Vec<(u64, u64, u64)> {
        s.plan_health("family-photos", cut, 1000)
            .unwrap()
            .iter()
            .map(|g| (g.healthy, g.reachable, g.objects))
            .collect()
    }

    fn shard_index_follows_versions_providers_and_bad_shards(s: &dyn MetadataStore) {
        s.create_bucket(&bucket("b")).unwrap();
        let all: Vec<(String, bool)> = (0..6).map(|i| (format!("n{i}"), true)).collect();
        s.record_probes(&all, 1_000).unwrap();
        s.put_version(&striped("a", 2)).unwrap();
        s.put_version(&striped("b", 1)).unwrap();
        assert_eq!(one_group(s, 0), [(6, 6, 2)]);
        assert_eq!(s.provider_usage().unwrap()["n0"], (3, 51));
        s.record_pools(
            &[("n0".into(), "home".into()), ("gone".into(), "old".into())],
            1_000,
        )
        .unwrap();
        let pools = s.provider_pools().unwrap();
        assert_eq!(pools["n0"], "home");
        assert_eq!(pools["gone"], "old");
        assert!(s.providers_seen().unwrap()["gone"].down_since.is_none());

        // n5 stops answering at 2000: reachable drops at once, healthy only past the cut.
        s.record_probes(&[("n5".into(), false)], 2_000).unwrap();
        assert_eq!(one_group(s, 500), [(6, 5, 2)]);
        assert_eq!(one_group(s, 1_500), [(5, 5, 2)]);
        // A corrupt shard of "a" segment 1 makes "a" weaker still.
        s.mark_bad_shards(
            "b",
            "a",
            NULL_VERSION,
            &[((0, 1, 0), "a.1.0".into())],
            3_000,
        )
        .unwrap();
        s.mark_bad_shards(
            "b",
            "a",
            NULL_VERSION,
            &[((0, 1, 1), "elsewhere".into())],
            3_000,
        )
        .unwrap();
        let mut groups = one_group(s, 1_500);
        groups.sort_unstable();
        assert_eq!(groups, [(4, 4, 1), (5, 5, 1)]);
        let queued = s
            .queued_versions("family-photos", 1_500, 1000, None, false, 10)
            .unwrap();
        assert_eq!(queued.len(), 2);
        assert_eq!((queued[0].key.as_str(), queued[0].healthy), ("a", 4));
        assert!(
            s.queued_versions("family-photos", 1_500, 1000, Some(4), false, 10)
                .unwrap()
                .is_empty(),
            "minHealthyShards 4 queues neither"
        );
        // n5 answers again before the grace period ends: back to healthy.
        s.record_probes(&[("n5".into(), true)], 2_500).unwrap();
        let mut groups = one_group(s, 1_500);
        groups.sort_unstable();
        assert_eq!(groups, [(5, 5, 1), (6, 6, 1)]);

        // Compare-and-swap: only against the layout stored now.
        let a = s.version("b", "a", None).unwrap().unwrap();
        let seq = s
            .queued_versions("family-photos", 0, 1000, None, false, 10)
            .unwrap()[0]
            .seq;
        assert_eq!(s.bad_shards(seq).unwrap(), [(0, 1, 0)]);
        let old = a.layout.clone().unwrap();
        let mut new = old.clone();
        new.segments[1].shards[0].provider = "n9".into();
        assert!(
            !s.replace_layout(seq, &new, &new).unwrap(),
            "stale expectation"
        );
        s.record_probes(&[("n9".into(), true)], 2_600).unwrap();
        assert!(s.replace_layout(seq, &old, &new).unwrap());
        assert!(
            s.bad_shards(seq).unwrap().is_empty(),
            "the rebuilt shard starts clean"
        );
        assert!(
            !s.replace_layout(seq, &old, &new).unwrap(),
            "a second repairer loses"
        );
        assert_eq!(one_group(s, 0), [(6, 6, 2)]);

        // Replacing and deleting versions removes their shards from the index.
        s.put_version(&striped("a", 1)).unwrap();
        assert!(
            !s.replace_layout(seq, &new, &new).unwrap(),
            "an overwritten version is not repaired"
        );
        s.delete_version("b", "a", NULL_VERSION).unwrap();
        s.delete_version("b", "b", NULL_VERSION).unwrap();
        assert!(one_group(s, 0).is_empty());
        assert!(s.provider_usage().unwrap().is_empty());
    }

    #[test]
    fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create_bucket(&bucket("b")).unwrap();
            s.put_version(&version("k", NULL_VERSION, 9)).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.version("b", "k", None).unwrap().unwrap().size, 9);
    }

    #[test]
    fn concurrent_writes_commit_in_groups_and_a_failed_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let s = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        s.create_bucket(&bucket("b")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..40u64 {
                        let key = format!("t{t}-{i}");
                        s.put_version(&version(&key, NULL_VERSION, i)).unwrap();
                        // Between good ones, a write into a missing bucket, and a delete.
                        let mut lost = version(&key, NULL_VERSION, 1);
                        lost.bucket = "missing".into();
                        assert!(matches!(
                            s.put_version(&lost),
                            Err(MetaError::NoSuchBucket(_))
                        ));
                        if i % 4 == 0 {
                            let old = s.delete_version("b", &key, NULL_VERSION).unwrap();
                            assert_eq!(old.unwrap().size, i);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        let page = s
            .list(
                "b",
                &ListQuery {
                    prefix: "",
                    delimiter: None,
                    start_after: "",
                    max_keys: 1000,
                },
            )
            .unwrap();
        assert_eq!(page.objects.len(), 8 * 30, "every write but the deleted");
        for t in 0..8 {
            for i in 0..40u64 {
                let v = s.version("b", &format!("t{t}-{i}"), None).unwrap();
                assert_eq!(v.map(|v| v.size), (i % 4 != 0).then_some(i));
            }
        }
    }
}
