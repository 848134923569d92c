//! Buckets and what is set on them (versioning, default plan, lifecycle, tags), and the shared
//! policy overlay.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, bucket_from_row, store_err};
use crate::meta::{Bucket, MetaError, Result, Versioning};

pub(super) fn create_bucket(s: &SqliteStore, bucket: &Bucket) -> Result<()> {
    let inserted = s
        .conn()
        .execute(
            "INSERT OR IGNORE INTO buckets (name, created, default_plan, versioning, owner) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![bucket.name, bucket.created, bucket.default_plan, bucket.versioning.as_str(), bucket.owner],
        )
        .map_err(store_err)?;
    if inserted == 0 {
        return Err(MetaError::BucketExists(bucket.name.clone()));
    }
    Ok(())
}

pub(super) fn bucket(s: &SqliteStore, name: &str) -> Result<Option<Bucket>> {
    s.lookup()
        .prepare_cached(
            "SELECT name, created, default_plan, versioning, owner FROM buckets WHERE name = ?1",
        )
        .and_then(|mut stmt| stmt.query_row(params![name], bucket_from_row).optional())
        .map_err(store_err)
}

pub(super) fn buckets(s: &SqliteStore) -> Result<Vec<Bucket>> {
    let conn = s.conn();
    let mut stmt = conn
        .prepare("SELECT name, created, default_plan, versioning, owner FROM buckets ORDER BY name")
        .map_err(store_err)?;
    let rows = stmt.query_map([], bucket_from_row).map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}

pub(super) fn delete_bucket(s: &SqliteStore, name: &str) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    let used: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM versions WHERE bucket = ?1)
                 OR EXISTS (SELECT 1 FROM uploads WHERE bucket = ?1)",
            params![name],
            |r| r.get(0),
        )
        .map_err(store_err)?;
    if used {
        return Err(MetaError::BucketNotEmpty(name.into()));
    }
    let deleted = tx
        .execute("DELETE FROM buckets WHERE name = ?1", params![name])
        .map_err(store_err)?;
    if deleted == 0 {
        return Err(MetaError::NoSuchBucket(name.into()));
    }
    tx.commit().map_err(store_err)
}

pub(super) fn set_versioning(s: &SqliteStore, name: &str, versioning: Versioning) -> Result<()> {
    let changed = s
        .conn()
        .execute(
            "UPDATE buckets SET versioning = ?2 WHERE name = ?1",
            params![name, versioning.as_str()],
        )
        .map_err(store_err)?;
    if changed == 0 {
        return Err(MetaError::NoSuchBucket(name.into()));
    }
    Ok(())
}

pub(super) fn set_bucket_plan(s: &SqliteStore, name: &str, plan: Option<&str>) -> Result<()> {
    let changed = s
        .conn()
        .execute(
            "UPDATE buckets SET default_plan = ?2 WHERE name = ?1",
            params![name, plan],
        )
        .map_err(store_err)?;
    if changed == 0 {
        return Err(MetaError::NoSuchBucket(name.into()));
    }
    Ok(())
}

pub(super) fn set_lifecycle(s: &SqliteStore, bucket: &str, rules: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_lifecycle", "rules", rules)
}

pub(super) fn set_bucket_tags(s: &SqliteStore, bucket: &str, tags: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_tags", "tags", tags)
}

pub(super) fn set_bucket_cors(s: &SqliteStore, bucket: &str, rules: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_cors", "rules", rules)
}

pub(super) fn set_bucket_policy(s: &SqliteStore, bucket: &str, policy: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_policies", "policy", policy)
}

pub(super) fn set_public_access_block(
    s: &SqliteStore,
    bucket: &str,
    config: Option<&str>,
) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_public_access", "config", config)
}

pub(super) fn set_bucket_encryption(
    s: &SqliteStore,
    bucket: &str,
    config: Option<&str>,
) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_encryption", "config", config)
}

pub(super) fn bucket_encryption(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_encryption", "config")
}

/// Stores or removes one per-bucket setting kept in a table of its own (`table`, keyed by
/// bucket, the value in `column`).
fn set_bucket_setting(
    s: &SqliteStore,
    bucket: &str,
    table: &str,
    column: &str,
    value: Option<&str>,
) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    let exists: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM buckets WHERE name = ?1)",
            params![bucket],
            |r| r.get(0),
        )
        .map_err(store_err)?;
    if !exists {
        return Err(MetaError::NoSuchBucket(bucket.into()));
    }
    match value {
        Some(value) => tx.execute(
            &format!(
                "INSERT INTO {table} (bucket, {column}) VALUES (?1, ?2)
                 ON CONFLICT (bucket) DO UPDATE SET {column} = excluded.{column}"
            ),
            params![bucket, value],
        ),
        None => tx.execute(
            &format!("DELETE FROM {table} WHERE bucket = ?1"),
            params![bucket],
        ),
    }
    .map_err(store_err)?;
    tx.commit().map_err(store_err)
}

/// One per-bucket setting kept in a table of its own, as [`set_bucket_setting`] stored it.
fn bucket_setting(
    s: &SqliteStore,
    bucket: &str,
    table: &str,
    column: &str,
) -> Result<Option<String>> {
    s.lookup()
        .prepare_cached(&format!("SELECT {column} FROM {table} WHERE bucket = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![bucket], |r| r.get(0)).optional())
        .map_err(store_err)
}

/// A copy of the policy overlay: the file in the data directory is what runs, and this
/// copy travels with snapshots and the journal so `sublet recover` can put it back.
pub(super) fn shared_policies(s: &SqliteStore) -> Result<Option<(i64, String)>> {
    s.conn()
        .query_row(
            "SELECT revision, overlay FROM policies WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(store_err)
}

pub(super) fn put_shared_policies(
    s: &SqliteStore,
    expected: i64,
    yaml: &str,
) -> Result<Option<i64>> {
    let next = expected + 1;
    let changed = if expected == 0 {
        s.conn().execute(
            "INSERT INTO policies (id, revision, overlay) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO NOTHING",
            params![next, yaml],
        )
    } else {
        s.conn().execute(
            "UPDATE policies SET revision = ?1, overlay = ?2 WHERE id = 1 AND revision = ?3",
            params![next, yaml, expected],
        )
    }
    .map_err(store_err)?;
    Ok((changed == 1).then_some(next))
}

pub(super) fn lifecycle(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_lifecycle", "rules")
}

/// Object lock: enabled by storing a configuration, which can change but not go away.
pub(super) fn set_bucket_lock(s: &SqliteStore, bucket: &str, config: &str) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    let exists: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM buckets WHERE name = ?1)",
            params![bucket],
            |r| r.get(0),
        )
        .map_err(store_err)?;
    if !exists {
        return Err(MetaError::NoSuchBucket(bucket.into()));
    }
    tx.execute(
        "INSERT INTO bucket_object_lock (bucket, config) VALUES (?1, ?2)
         ON CONFLICT (bucket) DO UPDATE SET config = excluded.config",
        params![bucket, config],
    )
    .map_err(store_err)?;
    tx.commit().map_err(store_err)
}

pub(super) fn bucket_lock(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_object_lock", "config")
}

pub(super) fn bucket_cors(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_cors", "rules")
}

pub(super) fn bucket_tags(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_tags", "tags")
}

pub(super) fn bucket_policy(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_policies", "policy")
}

pub(super) fn public_access_block(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_public_access", "config")
}

pub(super) fn set_bucket_acl(s: &SqliteStore, bucket: &str, acl: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_acl", "acl", acl)
}

pub(super) fn bucket_acl(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_acl", "acl")
}

pub(super) fn set_bucket_ownership(
    s: &SqliteStore,
    bucket: &str,
    ownership: Option<&str>,
) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_ownership", "ownership", ownership)
}

pub(super) fn bucket_ownership(s: &SqliteStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_ownership", "ownership")
}
