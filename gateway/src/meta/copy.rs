//! Copies one metadata store into another through the trait alone: `sublet migrate-metadata`
//! (SQLite to PostgreSQL) and PostgreSQL's snapshots (into an SQLite file).
//!
//! The shard index is rebuilt from the copied layouts. Row ids (`seq`) are new in the target,
//! and shards flagged bad are not carried over: audits and repair find them again.

use std::path::Path;

use super::{
    MetaError, MetadataStore, ObjectVersion, Result, SqliteStore, UploadQuery, VersionQuery,
};

/// What a copy wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyCounts {
    pub buckets: u64,
    /// Versions and delete markers.
    pub versions: u64,
    pub lifecycle_rules: u64,
    pub uploads: u64,
    pub parts: u64,
    pub providers: u64,
    pub users: u64,
    pub keys: u64,
}

impl std::fmt::Display for CopyCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} buckets, {} versions, {} lifecycle configurations, {} uploads with {} parts, {} providers, {} users, {} access keys",
            self.buckets,
            self.versions,
            self.lifecycle_rules,
            self.uploads,
            self.parts,
            self.providers,
            self.users,
            self.keys
        )
    }
}

const PAGE: usize = 1000;

/// Copies everything in `from` into `to`. Refuses a target holding buckets unless `force`,
/// in which case existing buckets are kept and versions with the same id are overwritten.
pub fn copy_store(
    from: &dyn MetadataStore,
    to: &dyn MetadataStore,
    force: bool,
) -> Result<CopyCounts> {
    let existing = to.buckets()?;
    if !existing.is_empty() && !force {
        return Err(MetaError::Store(format!(
            "the target already holds {} bucket(s) (e.g. {}); pass --force to copy into it anyway",
            existing.len(),
            existing[0].name
        )));
    }
    let mut counts = CopyCounts::default();

    // Providers first: their last sighting and pool, so health counts absences as before.
    let seen = from.providers_seen()?;
    for (node, s) in &seen {
        to.record_probes(&[(node.clone(), true)], s.last_seen)?;
        if let Some(down) = s.down_since {
            to.record_probes(&[(node.clone(), false)], down)?;
        }
        counts.providers += 1;
    }
    let pools: Vec<(String, String)> = from.provider_pools()?.into_iter().collect();
    to.record_pools(&pools, 0)?;

    // Users and their keys (secrets stay sealed: the same master key opens them).
    for user in from.users()? {
        to.put_user(&user)?;
        counts.users += 1;
    }
    for key in from.keys()? {
        to.put_key(&key)?;
        counts.keys += 1;
    }

    for bucket in from.buckets()? {
        match to.create_bucket(&bucket) {
            Ok(()) => {}
            Err(MetaError::BucketExists(_)) if force => {
                to.set_versioning(&bucket.name, bucket.versioning)?
            }
            Err(e) => return Err(e),
        }
        counts.buckets += 1;
        if let Some(rules) = from.lifecycle(&bucket.name)? {
            to.set_lifecycle(&bucket.name, Some(&rules))?;
            counts.lifecycle_rules += 1;
        }
        if let Some(config) = from.bucket_lock(&bucket.name)? {
            to.set_bucket_lock(&bucket.name, &config)?;
        }
        if let Some(tags) = from.bucket_tags(&bucket.name)? {
            to.set_bucket_tags(&bucket.name, Some(&tags))?;
        }
        if let Some(rules) = from.bucket_cors(&bucket.name)? {
            to.set_bucket_cors(&bucket.name, Some(&rules))?;
        }
        if let Some(policy) = from.bucket_policy(&bucket.name)? {
            to.set_bucket_policy(&bucket.name, Some(&policy))?;
        }
        if let Some(config) = from.public_access_block(&bucket.name)? {
            to.set_public_access_block(&bucket.name, Some(&config))?;
        }
        if let Some(config) = from.bucket_encryption(&bucket.name)? {
            to.set_bucket_encryption(&bucket.name, Some(&config))?;
        }
        if let Some(acl) = from.bucket_acl(&bucket.name)? {
            to.set_bucket_acl(&bucket.name, Some(&acl))?;
        }
        if let Some(ownership) = from.bucket_ownership(&bucket.name)? {
            to.set_bucket_ownership(&bucket.name, Some(&ownership))?;
        }
        counts.versions += copy_versions(from, to, &bucket.name)?;
        let (uploads, parts) = copy_uploads(from, to, &bucket.name)?;
        counts.uploads += uploads;
        counts.parts += parts;
    }
    Ok(counts)
}

/// Versions come newest first per key; each key's are written oldest first so the latest
/// stays the latest.
fn copy_versions(from: &dyn MetadataStore, to: &dyn MetadataStore, bucket: &str) -> Result<u64> {
    let mut copied = 0;
    let mut pending: Vec<ObjectVersion> = Vec::new();
    let flush = |pending: &mut Vec<ObjectVersion>| -> Result<u64> {
        let n = pending.len() as u64;
        for v in pending.drain(..).rev() {
            to.put_version(&v)?;
        }
        Ok(n)
    };
    let (mut key_marker, mut vid_marker) = (String::new(), String::new());
    loop {
        let page = from.list_versions(
            bucket,
            &VersionQuery {
                prefix: "",
                delimiter: None,
                key_marker: &key_marker,
                version_id_marker: &vid_marker,
                max_keys: PAGE,
            },
        )?;
        for entry in page.versions {
            if pending.last().is_some_and(|p| p.key != entry.version.key) {
                copied += flush(&mut pending)?;
            }
            pending.push(entry.version);
        }
        match page.next {
            Some((k, v)) => (key_marker, vid_marker) = (k, v),
            None => break,
        }
    }
    copied += flush(&mut pending)?;
    Ok(copied)
}

fn copy_uploads(
    from: &dyn MetadataStore,
    to: &dyn MetadataStore,
    bucket: &str,
) -> Result<(u64, u64)> {
    let (mut uploads, mut parts) = (0, 0);
    let (mut key_marker, mut id_marker) = (String::new(), String::new());
    loop {
        let page = from.uploads(
            bucket,
            &UploadQuery {
                prefix: "",
                delimiter: None,
                key_marker: &key_marker,
                upload_id_marker: &id_marker,
                max_uploads: PAGE,
            },
        )?;
        for u in &page.uploads {
            if to.upload(&u.bucket, &u.key, &u.upload_id)?.is_none() {
                to.create_upload(u)?;
            }
            uploads += 1;
            let mut after = 0;
            loop {
                let batch = from.parts(&u.bucket, &u.key, &u.upload_id, after, PAGE)?;
                for p in &batch {
                    to.put_part(&u.bucket, &u.key, &u.upload_id, p)?;
                    after = p.part_number;
                    parts += 1;
                }
                if batch.len() < PAGE {
                    break;
                }
            }
        }
        match page.next {
            Some((k, u)) => (key_marker, id_marker) = (k, u),
            None => break,
        }
    }
    Ok((uploads, parts))
}

/// A copy of `from` as an SQLite file at `path` (which must not exist),
/// which `sublet recover` and the SQLite store open like any metadata file. Writes racing the
/// copy may or may not be in it (each version is copied whole): not a point-in-time copy.
pub(super) fn snapshot_to_sqlite(from: &dyn MetadataStore, path: &Path) -> Result<()> {
    if path.exists() {
        return Err(MetaError::Store(format!(
            "snapshot target {} already exists",
            path.display()
        )));
    }
    let copy = SqliteStore::open(path)?;
    let counts = copy_store(from, &copy, false);
    drop(copy);
    if counts.is_err() {
        let _ = std::fs::remove_file(path);
    }
    counts.map(|_| ())
}

/// A store named on the command line: `sqlite:PATH`, or `postgres:URL` (a bare
/// `postgres://...` or `postgresql://...` URL works too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl std::str::FromStr for StoreLocation {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(s.to_owned()));
        }
        match s.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => Ok(StoreLocation::Sqlite(path.into())),
            Some(("postgres" | "postgresql", url)) if !url.is_empty() => {
                Ok(StoreLocation::Postgres(url.to_owned()))
            }
            _ => Err(format!(
                "{s:?} names no metadata store; use sqlite:PATH or postgres:postgres://user:password@host:5432/db"
            )),
        }
    }
}

impl StoreLocation {
    /// Opens the store; an SQLite source must exist (opening would create an empty one).
    /// PostgreSQL is reached through a pool of `pool`'s size and wait.
    pub fn open(
        &self,
        must_exist: bool,
        pool: super::PgPoolOptions,
    ) -> Result<Box<dyn MetadataStore>> {
        match self {
            StoreLocation::Sqlite(path) => {
                if must_exist && !path.exists() {
                    return Err(MetaError::Store(format!(
                        "{} does not exist",
                        path.display()
                    )));
                }
                Ok(Box::new(SqliteStore::open(path)?))
            }
            StoreLocation::Postgres(url) => {
                Ok(Box::new(super::PostgresStore::open_with(url, pool)?))
            }
        }
    }
}
