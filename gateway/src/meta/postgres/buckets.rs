//! Buckets and what is set on them (versioning, default plan, lifecycle, tags), and the shared
//! policy overlay.

use super::{PostgresStore, bucket_from_row, pg_err};
use crate::meta::{Bucket, MetaError, Result, Versioning};

pub(super) fn create_bucket(s: &PostgresStore, bucket: &Bucket) -> Result<()> {
    let inserted = s.run(|c| {
        c.execute(
            "INSERT INTO buckets (name, created, default_plan, versioning, owner) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO NOTHING",
            &[
                &bucket.name,
                &bucket.created,
                &bucket.default_plan,
                &bucket.versioning.as_str(),
                &bucket.owner,
            ],
        )
        .map_err(pg_err)
    })?;
    if inserted == 0 {
        return Err(MetaError::BucketExists(bucket.name.clone()));
    }
    Ok(())
}

pub(super) fn bucket(s: &PostgresStore, name: &str) -> Result<Option<Bucket>> {
    s.run(|c| {
        c.query_opt(
            "SELECT name, created, default_plan, versioning, owner FROM buckets WHERE name = $1",
            &[&name],
        )
        .map_err(pg_err)?
        .as_ref()
        .map(bucket_from_row)
        .transpose()
    })
}

pub(super) fn buckets(s: &PostgresStore) -> Result<Vec<Bucket>> {
    s.run(|c| {
        c.query(
            "SELECT name, created, default_plan, versioning, owner FROM buckets ORDER BY name",
            &[],
        )
        .map_err(pg_err)?
        .iter()
        .map(bucket_from_row)
        .collect()
    })
}

pub(super) fn delete_bucket(s: &PostgresStore, name: &str) -> Result<()> {
    s.tx(|tx| {
        // Waits for commits in flight (they hold KEY SHARE), then sees their versions.
        if tx
            .query_opt("SELECT 1 FROM buckets WHERE name = $1 FOR UPDATE", &[&name])
            .map_err(pg_err)?
            .is_none()
        {
            return Err(MetaError::NoSuchBucket(name.into()));
        }
        let used: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM versions WHERE bucket = $1)
                     OR EXISTS (SELECT 1 FROM uploads WHERE bucket = $1)",
                &[&name],
            )
            .map_err(pg_err)?
            .try_get(0)
            .map_err(pg_err)?;
        if used {
            return Err(MetaError::BucketNotEmpty(name.into()));
        }
        tx.execute("DELETE FROM bucket_lifecycle WHERE bucket = $1", &[&name])
            .map_err(pg_err)?;
        tx.execute("DELETE FROM bucket_tags WHERE bucket = $1", &[&name])
            .map_err(pg_err)?;
        tx.execute("DELETE FROM bucket_cors WHERE bucket = $1", &[&name])
            .map_err(pg_err)?;
        tx.execute("DELETE FROM bucket_policies WHERE bucket = $1", &[&name])
            .map_err(pg_err)?;
        tx.execute(
            "DELETE FROM bucket_public_access WHERE bucket = $1",
            &[&name],
        )
        .map_err(pg_err)?;
        tx.execute("DELETE FROM bucket_encryption WHERE bucket = $1", &[&name])
            .map_err(pg_err)?;
        tx.execute("DELETE FROM bucket_acl WHERE bucket = $1", &[&name])
            .map_err(pg_err)?;
        tx.execute("DELETE FROM bucket_ownership WHERE bucket = $1", &[&name])
            .map_err(pg_err)?;
        tx.execute("DELETE FROM buckets WHERE name = $1", &[&name])
            .map_err(pg_err)?;
        Ok(())
    })
}

pub(super) fn set_versioning(s: &PostgresStore, name: &str, versioning: Versioning) -> Result<()> {
    let changed = s.run(|c| {
        c.execute(
            "UPDATE buckets SET versioning = $2 WHERE name = $1",
            &[&name, &versioning.as_str()],
        )
        .map_err(pg_err)
    })?;
    if changed == 0 {
        return Err(MetaError::NoSuchBucket(name.into()));
    }
    Ok(())
}

pub(super) fn shared_policies(s: &PostgresStore) -> Result<Option<(i64, String)>> {
    s.run(|c| {
        let row = c
            .query_opt("SELECT revision, overlay FROM policies WHERE id = 1", &[])
            .map_err(pg_err)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    })
}

pub(super) fn put_shared_policies(
    s: &PostgresStore,
    expected: i64,
    yaml: &str,
) -> Result<Option<i64>> {
    s.run(|c| {
        let next = expected + 1;
        let changed = if expected == 0 {
            c.execute(
                "INSERT INTO policies (id, revision, overlay) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&next, &yaml],
            )
        } else {
            c.execute(
                "UPDATE policies SET revision = $1, overlay = $2 WHERE id = 1 AND revision = $3",
                &[&next, &yaml, &expected],
            )
        }
        .map_err(pg_err)?;
        Ok((changed == 1).then_some(next))
    })
}

pub(super) fn set_bucket_plan(s: &PostgresStore, name: &str, plan: Option<&str>) -> Result<()> {
    let changed = s.run(|c| {
        c.execute(
            "UPDATE buckets SET default_plan = $2 WHERE name = $1",
            &[&name, &plan],
        )
        .map_err(pg_err)
    })?;
    if changed == 0 {
        return Err(MetaError::NoSuchBucket(name.into()));
    }
    Ok(())
}

pub(super) fn set_lifecycle(s: &PostgresStore, bucket: &str, rules: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_lifecycle", "rules", rules)
}

pub(super) fn set_bucket_tags(s: &PostgresStore, bucket: &str, tags: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_tags", "tags", tags)
}

pub(super) fn set_bucket_cors(s: &PostgresStore, bucket: &str, rules: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_cors", "rules", rules)
}

pub(super) fn set_bucket_policy(
    s: &PostgresStore,
    bucket: &str,
    policy: Option<&str>,
) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_policies", "policy", policy)
}

pub(super) fn set_public_access_block(
    s: &PostgresStore,
    bucket: &str,
    config: Option<&str>,
) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_public_access", "config", config)
}

pub(super) fn set_bucket_encryption(
    s: &PostgresStore,
    bucket: &str,
    config: Option<&str>,
) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_encryption", "config", config)
}

pub(super) fn bucket_encryption(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_encryption", "config")
}

/// Stores or removes one per-bucket setting kept in a table of its own (`table`, keyed by
/// bucket, the value in `column`).
fn set_bucket_setting(
    s: &PostgresStore,
    bucket: &str,
    table: &str,
    column: &str,
    value: Option<&str>,
) -> Result<()> {
    s.tx(|tx| {
        if tx
            .query_opt(
                "SELECT 1 FROM buckets WHERE name = $1 FOR KEY SHARE",
                &[&bucket],
            )
            .map_err(pg_err)?
            .is_none()
        {
            return Err(MetaError::NoSuchBucket(bucket.into()));
        }
        match value {
            Some(value) => tx.execute(
                &format!(
                    "INSERT INTO {table} (bucket, {column}) VALUES ($1, $2)
                     ON CONFLICT (bucket) DO UPDATE SET {column} = excluded.{column}"
                ),
                &[&bucket, &value],
            ),
            None => tx.execute(
                &format!("DELETE FROM {table} WHERE bucket = $1"),
                &[&bucket],
            ),
        }
        .map_err(pg_err)?;
        Ok(())
    })
}

/// One per-bucket setting kept in a table of its own, as [`set_bucket_setting`] stored it.
fn bucket_setting(
    s: &PostgresStore,
    bucket: &str,
    table: &str,
    column: &str,
) -> Result<Option<String>> {
    s.run(|c| {
        c.query_opt(
            &format!("SELECT {column} FROM {table} WHERE bucket = $1"),
            &[&bucket],
        )
        .map_err(pg_err)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(pg_err)
    })
}

pub(super) fn lifecycle(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_lifecycle", "rules")
}

/// Object lock: enabled by storing a configuration, which can change but not go away.
pub(super) fn set_bucket_lock(s: &PostgresStore, bucket: &str, config: &str) -> Result<()> {
    s.tx(|tx| {
        if tx
            .query_opt(
                "SELECT 1 FROM buckets WHERE name = $1 FOR KEY SHARE",
                &[&bucket],
            )
            .map_err(pg_err)?
            .is_none()
        {
            return Err(MetaError::NoSuchBucket(bucket.into()));
        }
        tx.execute(
            "INSERT INTO bucket_object_lock (bucket, config) VALUES ($1, $2)
             ON CONFLICT (bucket) DO UPDATE SET config = excluded.config",
            &[&bucket, &config],
        )
        .map_err(pg_err)?;
        Ok(())
    })
}

pub(super) fn bucket_lock(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_object_lock", "config")
}

pub(super) fn bucket_cors(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_cors", "rules")
}

pub(super) fn bucket_tags(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_tags", "tags")
}

pub(super) fn bucket_policy(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_policies", "policy")
}

pub(super) fn public_access_block(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_public_access", "config")
}

pub(super) fn set_bucket_acl(s: &PostgresStore, bucket: &str, acl: Option<&str>) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_acl", "acl", acl)
}

pub(super) fn bucket_acl(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_acl", "acl")
}

pub(super) fn set_bucket_ownership(
    s: &PostgresStore,
    bucket: &str,
    ownership: Option<&str>,
) -> Result<()> {
    set_bucket_setting(s, bucket, "bucket_ownership", "ownership", ownership)
}

pub(super) fn bucket_ownership(s: &PostgresStore, bucket: &str) -> Result<Option<String>> {
    bucket_setting(s, bucket, "bucket_ownership", "ownership")
}
