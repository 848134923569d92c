//! Metadata: buckets, object versions and where their shards live. The S3 layer
//! talks to the [`MetadataStore`] trait only; SQLite is the embedded default.

mod sqlite;

use std::collections::BTreeMap;

pub use sqlite::SqliteStore;

use crate::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("bucket {0} already exists")]
    BucketExists(String),
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    #[error("metadata store: {0}")]
    Store(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Whether a bucket keeps old versions (S3 bucket versioning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    Unversioned,
    Enabled,
    Suspended,
}

impl Versioning {
    fn as_str(self) -> &'static str {
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

#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The narrow interface between the S3 layer and wherever metadata lives.
pub trait MetadataStore: Send + Sync + 'static {
    fn create_bucket(&self, bucket: &Bucket) -> Result<()>;
    fn bucket(&self, name: &str) -> Result<Option<Bucket>>;
    fn buckets(&self) -> Result<Vec<Bucket>>;
    /// Stored versions (not delete markers) and their bytes, by plan, for usage gauges.
    fn plan_usage(&self) -> Result<Vec<PlanUsage>> {
        Ok(Vec::new())
    }
    /// Fails with `BucketNotEmpty` while any version or upload remains.
    fn delete_bucket(&self, name: &str) -> Result<()>;
    fn set_versioning(&self, name: &str, versioning: Versioning) -> Result<()>;

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
    /// Latest non-deleted versions in key order.
    fn list(&self, bucket: &str, query: &ListQuery<'_>) -> Result<ListPage>;
    /// Every version of keys under `prefix` after `key_marker`, newest first per key.
    fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        max: usize,
    ) -> Result<Vec<ObjectVersion>>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::layout::{Encryption, Scheme};

    fn store() -> SqliteStore {
        SqliteStore::open_in_memory().unwrap()
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
            }),
        }
    }

    #[test]
    fn buckets_are_created_once_and_deleted_only_when_empty() {
        let s = store();
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

    #[test]
    fn versions_round_trip_and_null_version_is_replaced() {
        let s = store();
        s.create_bucket(&bucket("b")).unwrap();
        let v1 = version("k", NULL_VERSION, 3);
        assert!(s.put_version(&v1).unwrap().replaced.is_empty());
        assert_eq!(s.version("b", "k", None).unwrap().unwrap(), v1);
        let v2 = version("k", NULL_VERSION, 4);
        let out = s.put_version(&v2).unwrap();
        assert_eq!(out.replaced, vec![v1]);
        assert_eq!(s.version("b", "k", None).unwrap().unwrap().size, 4);
    }

    #[test]
    fn latest_version_wins_and_old_ones_stay_addressable() {
        let s = store();
        s.create_bucket(&bucket("b")).unwrap();
        s.put_version(&version("k", "v1", 1)).unwrap();
        s.put_version(&version("k", "v2", 2)).unwrap();
        assert_eq!(s.version("b", "k", None).unwrap().unwrap().version_id, "v2");
        assert_eq!(s.version("b", "k", Some("v1")).unwrap().unwrap().size, 1);
        let all = s.list_versions("b", "", "", 100).unwrap();
        let ids: Vec<_> = all.iter().map(|v| v.version_id.as_str()).collect();
        assert_eq!(ids, ["v2", "v1"]);
        s.delete_version("b", "k", "v2").unwrap();
        assert_eq!(s.version("b", "k", None).unwrap().unwrap().version_id, "v1");
    }

    #[test]
    fn listing_hides_delete_markers_and_groups_prefixes() {
        let s = store();
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

    #[test]
    fn listing_pages_with_markers() {
        let s = store();
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
}
