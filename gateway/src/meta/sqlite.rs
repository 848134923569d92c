//! The embedded metadata store: one SQLite file in WAL mode.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Bucket, ListPage, ListQuery, MetaError, MetadataStore, ObjectVersion, PutOutcome, Result,
    Versioning,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    default_plan TEXT,
    versioning TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket TEXT NOT NULL REFERENCES buckets(name),
    key TEXT NOT NULL,
    version_id TEXT NOT NULL,
    delete_marker INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT,
    user_metadata TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    plan TEXT NOT NULL,
    layout TEXT,
    UNIQUE (bucket, key, version_id)
);
CREATE INDEX IF NOT EXISTS versions_by_key ON versions (bucket, key, seq);
";

const VERSION_COLUMNS: &str = "bucket, key, version_id, delete_marker, size, etag, content_type, user_metadata, last_modified, plan, layout";

/// SQLite behind a mutex: statements are short, and one writer is what SQLite allows.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn store_err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Store(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(store_err)?;
        }
        let conn = Connection::open(path).map_err(store_err)?;
        // WAL with full sync: a committed version survives power loss.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(store_err)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(store_err)?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(store_err)?;
        conn.execute_batch(SCHEMA).map_err(store_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn bucket_from_row(row: &Row<'_>) -> rusqlite::Result<Bucket> {
    Ok(Bucket {
        name: row.get(0)?,
        created: row.get(1)?,
        default_plan: row.get(2)?,
        versioning: Versioning::parse(&row.get::<_, String>(3)?),
    })
}

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<ObjectVersion> {
    let json_err = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let metadata: String = row.get(7)?;
    let layout: Option<String> = row.get(10)?;
    Ok(ObjectVersion {
        bucket: row.get(0)?,
        key: row.get(1)?,
        version_id: row.get(2)?,
        delete_marker: row.get(3)?,
        size: row.get::<_, i64>(4)?.try_into().unwrap_or(0),
        etag: row.get(5)?,
        content_type: row.get(6)?,
        user_metadata: serde_json::from_str(&metadata).map_err(|e| json_err(7, e))?,
        last_modified: row.get(8)?,
        plan: row.get(9)?,
        layout: layout
            .map(|l| serde_json::from_str(&l))
            .transpose()
            .map_err(|e| json_err(10, e))?,
    })
}

fn get_version(
    conn: &Connection,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> rusqlite::Result<Option<ObjectVersion>> {
    match version_id {
        Some(id) => conn
            .query_row(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3"
                ),
                params![bucket, key, id],
                version_from_row,
            )
            .optional(),
        None => conn
            .query_row(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ?1 AND key = ?2 ORDER BY seq DESC LIMIT 1"
                ),
                params![bucket, key],
                version_from_row,
            )
            .optional(),
    }
}

impl MetadataStore for SqliteStore {
    fn create_bucket(&self, bucket: &Bucket) -> Result<()> {
        let inserted = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO buckets (name, created, default_plan, versioning) VALUES (?1, ?2, ?3, ?4)",
                params![bucket.name, bucket.created, bucket.default_plan, bucket.versioning.as_str()],
            )
            .map_err(store_err)?;
        if inserted == 0 {
            return Err(MetaError::BucketExists(bucket.name.clone()));
        }
        Ok(())
    }

    fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        self.conn()
            .query_row(
                "SELECT name, created, default_plan, versioning FROM buckets WHERE name = ?1",
                params![name],
                bucket_from_row,
            )
            .optional()
            .map_err(store_err)
    }

    fn buckets(&self) -> Result<Vec<Bucket>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, created, default_plan, versioning FROM buckets ORDER BY name")
            .map_err(store_err)?;
        let rows = stmt.query_map([], bucket_from_row).map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn plan_usage(&self) -> Result<Vec<super::PlanUsage>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT plan, COUNT(*), COALESCE(SUM(size), 0) FROM versions \
                 WHERE delete_marker = 0 GROUP BY plan ORDER BY plan",
            )
            .map_err(store_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(super::PlanUsage {
                    plan: r.get(0)?,
                    objects: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                    bytes: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                })
            })
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn delete_bucket(&self, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        let used: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM versions WHERE bucket = ?1)",
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

    fn set_versioning(&self, name: &str, versioning: Versioning) -> Result<()> {
        let changed = self
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

    fn put_version(&self, v: &ObjectVersion) -> Result<PutOutcome> {
        let metadata = serde_json::to_string(&v.user_metadata).map_err(store_err)?;
        let layout = v
            .layout
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(store_err)?;
        let size = i64::try_from(v.size).map_err(store_err)?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM buckets WHERE name = ?1)",
                params![v.bucket],
                |r| r.get(0),
            )
            .map_err(store_err)?;
        if !exists {
            return Err(MetaError::NoSuchBucket(v.bucket.clone()));
        }
        let replaced = get_version(&tx, &v.bucket, &v.key, Some(&v.version_id))
            .map_err(store_err)?
            .into_iter()
            .collect();
        tx.execute(
            "DELETE FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
            params![v.bucket, v.key, v.version_id],
        )
        .map_err(store_err)?;
        tx.execute(
            &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                v.bucket,
                v.key,
                v.version_id,
                v.delete_marker,
                size,
                v.etag,
                v.content_type,
                metadata,
                v.last_modified,
                v.plan,
                layout
            ],
        )
        .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(PutOutcome { replaced })
    }

    fn version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectVersion>> {
        get_version(&self.conn(), bucket, key, version_id).map_err(store_err)
    }

    fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectVersion>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        let old = get_version(&tx, bucket, key, Some(version_id)).map_err(store_err)?;
        tx.execute(
            "DELETE FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
            params![bucket, key, version_id],
        )
        .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(old)
    }

    fn list(&self, bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions v
                 WHERE bucket = ?1 AND key > ?2 AND substr(key, 1, length(?3)) = ?3
                   AND seq = (SELECT MAX(seq) FROM versions w WHERE w.bucket = v.bucket AND w.key = v.key)
                 ORDER BY key"
            ))
            .map_err(store_err)?;
        let mut rows = stmt
            .query(params![bucket, q.start_after, q.prefix])
            .map_err(store_err)?;
        let mut page = ListPage::default();
        let mut count = 0usize;
        while let Some(row) = rows.next().map_err(store_err)? {
            let v = version_from_row(row).map_err(store_err)?;
            if v.delete_marker {
                continue;
            }
            // A common prefix group: one entry, however many keys share it.
            let group = q.delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                v.key[q.prefix.len()..]
                    .find(d)
                    .map(|i| v.key[..q.prefix.len() + i + d.len()].to_string())
            });
            if let Some(prefix) = &group
                && (page.common_prefixes.last() == Some(prefix)
                    || q.start_after.starts_with(prefix.as_str()))
            {
                continue;
            }
            if count == q.max_keys {
                page.next_marker = page
                    .objects
                    .last()
                    .map(|o| o.key.clone())
                    .max(page.common_prefixes.last().cloned());
                break;
            }
            count += 1;
            match group {
                Some(prefix) => page.common_prefixes.push(prefix),
                None => page.objects.push(v),
            }
        }
        Ok(page)
    }

    fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        max: usize,
    ) -> Result<Vec<ObjectVersion>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions
                 WHERE bucket = ?1 AND key > ?2 AND substr(key, 1, length(?3)) = ?3
                 ORDER BY key, seq DESC LIMIT ?4"
            ))
            .map_err(store_err)?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![bucket, key_marker, prefix, limit], version_from_row)
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }
}
