//! The embedded metadata store: one SQLite file in WAL mode.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::layout::Layout;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Bucket, CompleteOutcome, ListPage, ListQuery, MetaError, MetadataStore, ObjectVersion,
    PutOutcome, Result, Upload, UploadPage, UploadPart, UploadQuery, VersionEntry, VersionPage,
    VersionQuery, Versioning,
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
CREATE TABLE IF NOT EXISTS uploads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    upload_id TEXT NOT NULL UNIQUE,
    bucket TEXT NOT NULL REFERENCES buckets(name),
    key TEXT NOT NULL,
    plan TEXT NOT NULL,
    content_type TEXT,
    user_metadata TEXT NOT NULL,
    initiated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, seq);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL REFERENCES uploads(upload_id),
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    layout TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS bucket_lifecycle (
    bucket TEXT PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    rules TEXT NOT NULL
);
";

const UPLOAD_COLUMNS: &str = "bucket, key, upload_id, plan, content_type, user_metadata, initiated";
const PART_COLUMNS: &str = "part_number, size, etag, last_modified, layout";

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

/// The common prefix a key rolls up into under a delimiter, if any.
fn group_of(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    rest.find(d)
        .map(|i| key[..prefix.len() + i + d.len()].to_string())
}

fn json_err(i: usize, e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

fn upload_from_row(row: &Row<'_>) -> rusqlite::Result<Upload> {
    let metadata: String = row.get(5)?;
    Ok(Upload {
        bucket: row.get(0)?,
        key: row.get(1)?,
        upload_id: row.get(2)?,
        plan: row.get(3)?,
        content_type: row.get(4)?,
        user_metadata: serde_json::from_str(&metadata).map_err(|e| json_err(5, e))?,
        initiated: row.get(6)?,
    })
}

fn part_from_row(row: &Row<'_>) -> rusqlite::Result<UploadPart> {
    let layout: String = row.get(4)?;
    Ok(UploadPart {
        part_number: row.get(0)?,
        size: row.get::<_, i64>(1)?.try_into().unwrap_or(0),
        etag: row.get(2)?,
        last_modified: row.get(3)?,
        layout: serde_json::from_str(&layout).map_err(|e| json_err(4, e))?,
    })
}

fn get_upload(
    conn: &Connection,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> rusqlite::Result<Option<Upload>> {
    conn.query_row(
        &format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE bucket = ?1 AND key = ?2 AND upload_id = ?3"
        ),
        params![bucket, key, upload_id],
        upload_from_row,
    )
    .optional()
}

fn all_parts(conn: &Connection, upload_id: &str) -> rusqlite::Result<Vec<UploadPart>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = ?1 ORDER BY part_number"
    ))?;
    let rows = stmt.query_map(params![upload_id], part_from_row)?;
    rows.collect()
}

/// Removes an upload and its parts, returning the parts.
fn end_upload(conn: &Connection, upload_id: &str) -> rusqlite::Result<Vec<UploadPart>> {
    let parts = all_parts(conn, upload_id)?;
    conn.execute("DELETE FROM parts WHERE upload_id = ?1", params![upload_id])?;
    conn.execute(
        "DELETE FROM uploads WHERE upload_id = ?1",
        params![upload_id],
    )?;
    Ok(parts)
}

fn no_such_upload(bucket: &str, key: &str, upload_id: &str) -> MetaError {
    MetaError::NoSuchUpload {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: upload_id.into(),
    }
}

/// Inserts a version as the latest of its key; returns the version it replaced.
fn insert_version(conn: &Connection, v: &ObjectVersion) -> Result<Vec<ObjectVersion>> {
    let metadata = serde_json::to_string(&v.user_metadata).map_err(store_err)?;
    let layout = v
        .layout
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(store_err)?;
    let size = i64::try_from(v.size).map_err(store_err)?;
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM buckets WHERE name = ?1)",
            params![v.bucket],
            |r| r.get(0),
        )
        .map_err(store_err)?;
    if !exists {
        return Err(MetaError::NoSuchBucket(v.bucket.clone()));
    }
    let replaced = get_version(conn, &v.bucket, &v.key, Some(&v.version_id))
        .map_err(store_err)?
        .into_iter()
        .collect();
    conn.execute(
        "DELETE FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
        params![v.bucket, v.key, v.version_id],
    )
    .map_err(store_err)?;
    conn.execute(
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
    Ok(replaced)
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
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        let replaced = insert_version(&tx, v)?;
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
            let group = group_of(&v.key, q.prefix, q.delimiter);
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

    fn list_versions(&self, bucket: &str, q: &VersionQuery<'_>) -> Result<VersionPage> {
        let conn = self.conn();
        // Versions of the marker key older than the marker version come first;
        // an unknown version id marker resumes after the whole key.
        let marker_seq: i64 = if q.version_id_marker.is_empty() {
            -1
        } else {
            conn.query_row(
                "SELECT seq FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
                params![bucket, q.key_marker, q.version_id_marker],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)?
            .unwrap_or(-1)
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VERSION_COLUMNS},
                    seq = (SELECT MAX(seq) FROM versions w WHERE w.bucket = v.bucket AND w.key = v.key)
                 FROM versions v
                 WHERE bucket = ?1 AND substr(key, 1, length(?3)) = ?3
                   AND (key > ?2 OR (key = ?2 AND seq < ?4))
                 ORDER BY key, seq DESC"
            ))
            .map_err(store_err)?;
        let mut rows = stmt
            .query(params![bucket, q.key_marker, q.prefix, marker_seq])
            .map_err(store_err)?;
        let mut page = VersionPage::default();
        let mut count = 0usize;
        // The last entry returned, for the next page's markers.
        let mut last: Option<(String, String)> = None;
        while let Some(row) = rows.next().map_err(store_err)? {
            let v = version_from_row(row).map_err(store_err)?;
            let is_latest: bool = row.get(11).map_err(store_err)?;
            let group = group_of(&v.key, q.prefix, q.delimiter);
            if let Some(prefix) = &group
                && (page.common_prefixes.last() == Some(prefix)
                    || q.key_marker.starts_with(prefix.as_str()))
            {
                continue;
            }
            if count == q.max_keys {
                page.next = last;
                break;
            }
            count += 1;
            match group {
                Some(prefix) => {
                    last = Some((prefix.clone(), String::new()));
                    page.common_prefixes.push(prefix);
                }
                None => {
                    last = Some((v.key.clone(), v.version_id.clone()));
                    page.versions.push(VersionEntry {
                        version: v,
                        is_latest,
                    });
                }
            }
        }
        Ok(page)
    }

    fn create_upload(&self, u: &Upload) -> Result<()> {
        let metadata = serde_json::to_string(&u.user_metadata).map_err(store_err)?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM buckets WHERE name = ?1)",
                params![u.bucket],
                |r| r.get(0),
            )
            .map_err(store_err)?;
        if !exists {
            return Err(MetaError::NoSuchBucket(u.bucket.clone()));
        }
        tx.execute(
            &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                u.bucket,
                u.key,
                u.upload_id,
                u.plan,
                u.content_type,
                metadata,
                u.initiated
            ],
        )
        .map_err(store_err)?;
        tx.commit().map_err(store_err)
    }

    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>> {
        get_upload(&self.conn(), bucket, key, upload_id).map_err(store_err)
    }

    fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &UploadPart,
    ) -> Result<Option<UploadPart>> {
        let layout = serde_json::to_string(&part.layout).map_err(store_err)?;
        let size = i64::try_from(part.size).map_err(store_err)?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        if get_upload(&tx, bucket, key, upload_id)
            .map_err(store_err)?
            .is_none()
        {
            return Err(no_such_upload(bucket, key, upload_id));
        }
        let old = tx
            .query_row(
                &format!(
                    "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = ?1 AND part_number = ?2"
                ),
                params![upload_id, part.part_number],
                part_from_row,
            )
            .optional()
            .map_err(store_err)?;
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO parts (upload_id, {PART_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                upload_id,
                part.part_number,
                size,
                part.etag,
                part.last_modified,
                layout
            ],
        )
        .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(old)
    }

    fn parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: i32,
        max: usize,
    ) -> Result<Vec<UploadPart>> {
        let conn = self.conn();
        if get_upload(&conn, bucket, key, upload_id)
            .map_err(store_err)?
            .is_none()
        {
            return Err(no_such_upload(bucket, key, upload_id));
        }
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = ?1 AND part_number > ?2
                 ORDER BY part_number LIMIT ?3"
            ))
            .map_err(store_err)?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![upload_id, after, limit], part_from_row)
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn uploads(&self, bucket: &str, q: &UploadQuery<'_>) -> Result<UploadPage> {
        let conn = self.conn();
        // Uploads of the marker key started after the marker upload come first;
        // an unknown upload id marker resumes after the whole key.
        let marker_seq: i64 = if q.upload_id_marker.is_empty() {
            i64::MAX
        } else {
            conn.query_row(
                "SELECT seq FROM uploads WHERE bucket = ?1 AND key = ?2 AND upload_id = ?3",
                params![bucket, q.key_marker, q.upload_id_marker],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)?
            .unwrap_or(i64::MAX)
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads
                 WHERE bucket = ?1 AND substr(key, 1, length(?3)) = ?3
                   AND (key > ?2 OR (key = ?2 AND seq > ?4))
                 ORDER BY key, seq"
            ))
            .map_err(store_err)?;
        let mut rows = stmt
            .query(params![bucket, q.key_marker, q.prefix, marker_seq])
            .map_err(store_err)?;
        let mut page = UploadPage::default();
        let mut last: Option<(String, String)> = None;
        while let Some(row) = rows.next().map_err(store_err)? {
            let u = upload_from_row(row).map_err(store_err)?;
            let group = group_of(&u.key, q.prefix, q.delimiter);
            if let Some(prefix) = &group
                && (page.common_prefixes.last() == Some(prefix)
                    || q.key_marker.starts_with(prefix.as_str()))
            {
                continue;
            }
            if page.uploads.len() + page.common_prefixes.len() == q.max_uploads {
                page.next = last;
                break;
            }
            match group {
                Some(prefix) => {
                    last = Some((prefix.clone(), String::new()));
                    page.common_prefixes.push(prefix);
                }
                None => {
                    last = Some((u.key.clone(), u.upload_id.clone()));
                    page.uploads.push(u);
                }
            }
        }
        Ok(page)
    }

    fn complete_upload(
        &self,
        upload_id: &str,
        used: &[(i32, String)],
        version: &ObjectVersion,
    ) -> Result<CompleteOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        if get_upload(&tx, &version.bucket, &version.key, upload_id)
            .map_err(store_err)?
            .is_none()
        {
            return Err(no_such_upload(&version.bucket, &version.key, upload_id));
        }
        let mut parts = end_upload(&tx, upload_id).map_err(store_err)?;
        for (number, etag) in used {
            if !parts
                .iter()
                .any(|p| p.part_number == *number && p.etag == *etag)
            {
                return Err(MetaError::PartChanged {
                    upload_id: upload_id.into(),
                    part_number: *number,
                });
            }
        }
        parts.retain(|p| !used.iter().any(|(n, _)| *n == p.part_number));
        let replaced = insert_version(&tx, version)?;
        tx.commit().map_err(store_err)?;
        Ok(CompleteOutcome {
            replaced,
            unused: parts,
        })
    }

    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<UploadPart>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        if get_upload(&tx, bucket, key, upload_id)
            .map_err(store_err)?
            .is_none()
        {
            return Err(no_such_upload(bucket, key, upload_id));
        }
        let parts = end_upload(&tx, upload_id).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(parts)
    }

    fn set_lifecycle(&self, bucket: &str, rules: Option<&str>) -> Result<()> {
        let mut conn = self.conn();
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
        match rules {
            Some(rules) => tx.execute(
                "INSERT INTO bucket_lifecycle (bucket, rules) VALUES (?1, ?2)
                 ON CONFLICT (bucket) DO UPDATE SET rules = excluded.rules",
                params![bucket, rules],
            ),
            None => tx.execute(
                "DELETE FROM bucket_lifecycle WHERE bucket = ?1",
                params![bucket],
            ),
        }
        .map_err(store_err)?;
        tx.commit().map_err(store_err)
    }

    fn lifecycle(&self, bucket: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT rules FROM bucket_lifecycle WHERE bucket = ?1",
                params![bucket],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)
    }

    fn snapshot_into(&self, path: &Path) -> Result<()> {
        let target = path
            .to_str()
            .ok_or_else(|| store_err(format!("snapshot path {} is not UTF-8", path.display())))?;
        self.conn()
            .execute("VACUUM INTO ?1", params![target])
            .map_err(store_err)?;
        Ok(())
    }

    fn swap_layout(&self, current: &ObjectVersion, plan: &str, layout: &Layout) -> Result<bool> {
        let expected = current
            .layout
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(store_err)?;
        let new = serde_json::to_string(layout).map_err(store_err)?;
        let changed = self
            .conn()
            .execute(
                "UPDATE versions SET plan = ?1, layout = ?2
                 WHERE bucket = ?3 AND key = ?4 AND version_id = ?5 AND layout IS ?6",
                params![
                    plan,
                    new,
                    current.bucket,
                    current.key,
                    current.version_id,
                    expected
                ],
            )
            .map_err(store_err)?;
        Ok(changed == 1)
    }
}
