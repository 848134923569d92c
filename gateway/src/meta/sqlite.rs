//! The embedded metadata store: one SQLite file in WAL mode.
//!
//! Besides buckets, versions (layouts as JSON), uploads and parts it keeps a shard index,
//! `shards`, one row per shard of every stored version (maintained with the version, removed
//! with it by a cascading foreign key), and `providers`, when each provider was last seen.
//! Health, the repair queue and pool usage are SQL aggregates over those two tables, so a
//! scrape never deserializes a layout.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::listing::{
    self, ObjectPager, UPLOAD_COLUMNS, UploadPager, VERSION_COLUMNS, VersionPager,
};
use super::{
    AuditSample, Bucket, CompleteOutcome, HealthGroup, ListPage, ListQuery, MetaError,
    MetadataStore, ObjectVersion, ProviderSeen, PutOutcome, QueuedVersion, Result, ShardPos,
    Upload, UploadPage, UploadPart, UploadQuery, VersionPage, VersionQuery, Versioning, queue,
};
use crate::datapath::layout::Layout;

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
CREATE INDEX IF NOT EXISTS versions_by_plan ON versions (plan);
CREATE TABLE IF NOT EXISTS shards (
    version_seq INTEGER NOT NULL REFERENCES versions(seq) ON DELETE CASCADE,
    piece INTEGER NOT NULL,
    segment INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    provider TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    length INTEGER NOT NULL,
    width INTEGER NOT NULL,
    needed INTEGER NOT NULL,
    bad_since INTEGER,
    PRIMARY KEY (version_seq, piece, segment, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shards_by_provider ON shards (provider);
CREATE TABLE IF NOT EXISTS providers (
    node_id TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL,
    down_since INTEGER,
    pool TEXT
);
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
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    overlay TEXT NOT NULL
);
";

const PART_COLUMNS: &str = "part_number, size, etag, last_modified, layout";

/// A query shared with the PostgreSQL store (`$n` placeholders) in SQLite's spelling, `?n`.
/// The shared texts use `$` for nothing else.
fn sql(shared: &str) -> String {
    shared.replace('$', "?")
}

/// SQLite behind a mutex: statements are short, and one writer is what SQLite allows.
/// Object writes and deletes are committed in groups (see [`SqliteStore::grouped`]).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    group: Mutex<Group>,
    /// Taken before the connection by whoever commits a group, and by a journal around
    /// its other changes ([`MetadataStore::commit_order`]).
    order: Mutex<()>,
}

/// One queued change: runs inside the group's transaction and returns whether it
/// succeeded and what delivers its result once the group's commit is known (the commit's
/// error, `None` when it committed).
type GroupJob = Box<dyn FnOnce(&Connection) -> (bool, GroupDelivery) + Send>;
type GroupDelivery = Box<dyn FnOnce(Option<&str>) + Send>;

/// Changes waiting for the next group commit.
#[derive(Default)]
struct Group {
    next_id: u64,
    queue: Vec<(u64, GroupJob)>,
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
        backfill_shard_index(&conn).map_err(store_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            conn: Mutex::new(conn),
            group: Mutex::default(),
            order: Mutex::new(()),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn group(&self) -> MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` in a transaction shared with the other changes queued meanwhile: one
    /// commit (one fsync of the WAL) for all of them. A caller queues its change, then
    /// waits for the connection; whoever gets it commits everything queued, so callers
    /// that find their change already committed by another return at once. Each change
    /// runs under its own savepoint: one that fails is rolled back alone. Its result counts
    /// only once the commit succeeded; then the commit hook this thread set, if any
    /// ([`crate::meta::set_commit_hook`]), runs with it, still under the commit's locks.
    fn grouped<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let slot: std::sync::Arc<Mutex<Option<Result<T>>>> = std::sync::Arc::default();
        let hook = crate::meta::take_commit_hook();
        let id = {
            let result = std::sync::Arc::clone(&slot);
            let job: GroupJob = Box::new(move |conn: &Connection| {
                let outcome = work(conn);
                let ok = outcome.is_ok();
                let deliver: GroupDelivery = Box::new(move |commit_error: Option<&str>| {
                    let outcome = match commit_error {
                        None => outcome,
                        Some(e) => Err(MetaError::Store(e.to_owned())),
                    };
                    if let (Ok(value), Some(hook)) = (&outcome, hook) {
                        hook(value);
                    }
                    *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                });
                (ok, deliver)
            });
            let mut group = self.group();
            group.next_id += 1;
            let id = group.next_id;
            group.queue.push((id, job));
            id
        };
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        let mut conn = self.conn();
        let taken =
            |slot: &Mutex<Option<Result<T>>>| slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(outcome) = taken(&slot) {
            return outcome;
        }
        let jobs = std::mem::take(&mut self.group().queue);
        if !jobs.iter().any(|(queued, _)| *queued == id) {
            // Taken by a group whose commit never delivered (it panicked).
            return Err(MetaError::Store(
                "the group commit holding this change failed".into(),
            ));
        }
        commit_group(&mut conn, jobs);
        drop(conn);
        taken(&slot).unwrap_or_else(|| Err(MetaError::Store("the change was not run".into())))
    }
}

/// Runs `jobs` in one transaction, each under a savepoint, commits, and delivers.
fn commit_group(conn: &mut Connection, jobs: Vec<(u64, GroupJob)>) {
    let mut deliveries = Vec::with_capacity(jobs.len());
    let committed = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        for (_, job) in jobs {
            tx.execute_batch("SAVEPOINT change")?;
            let (ok, deliver) = job(&tx);
            deliveries.push(deliver);
            if !ok {
                // A failed change may have written part of itself: undo that part only.
                tx.execute_batch("ROLLBACK TO change")?;
            }
            tx.execute_batch("RELEASE change")?;
        }
        tx.commit()
    })();
    let error = committed.err().map(|e| e.to_string());
    for deliver in deliveries {
        deliver(error.as_deref());
    }
}

/// `user_version` once every version's shards are in the `shards` table.
const SHARD_INDEX_VERSION: i64 = 1;

/// Indexes the shards of versions written before the shard index existed.
fn backfill_shard_index(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SHARD_INDEX_VERSION {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let rows: Vec<(i64, String)> = {
        let mut stmt = tx.prepare(
            "SELECT seq, layout FROM versions v WHERE layout IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM shards s WHERE s.version_seq = v.seq)",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (seq, text) in rows {
        match serde_json::from_str::<Layout>(&text) {
            Ok(layout) => index_shards(&tx, seq, &layout)?,
            Err(e) => {
                tracing::warn!(seq, error = %e, "layout does not parse; its shards are not indexed")
            }
        }
    }
    tx.pragma_update(None, "user_version", SHARD_INDEX_VERSION)?;
    tx.commit()
}

/// Adds one `shards` row per shard of `layout` for version `seq`.
fn index_shards(conn: &Connection, seq: i64, layout: &Layout) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO shards (version_seq, piece, segment, idx, provider, shard_id, hash, length, width, needed) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for (p, piece) in layout.pieces().enumerate() {
        let width = piece.scheme.width() as i64;
        let needed = piece.scheme.needed() as i64;
        for (g, segment) in piece.segments.iter().enumerate() {
            for (i, shard) in segment.shards.iter().enumerate() {
                stmt.execute(params![
                    seq,
                    p as i64,
                    g as i64,
                    i as i64,
                    shard.provider,
                    shard.shard_id,
                    shard.hash,
                    i64::try_from(shard.length).unwrap_or(i64::MAX),
                    width,
                    needed
                ])?;
            }
        }
    }
    Ok(())
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
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
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM buckets WHERE name = ?1)")
        .and_then(|mut stmt| stmt.query_row(params![v.bucket], |r| r.get(0)))
        .map_err(store_err)?;
    if !exists {
        return Err(MetaError::NoSuchBucket(v.bucket.clone()));
    }
    let replaced = get_version(conn, &v.bucket, &v.key, Some(&v.version_id))
        .map_err(store_err)?
        .into_iter()
        .collect();
    conn.prepare_cached("DELETE FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3")
        .and_then(|mut stmt| stmt.execute(params![v.bucket, v.key, v.version_id]))
        .map_err(store_err)?;
    conn.prepare_cached(
        &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
    )
    .and_then(|mut stmt| stmt.execute(params![
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
        ]))
    .map_err(store_err)?;
    if let Some(layout) = &v.layout {
        index_shards(conn, conn.last_insert_rowid(), layout).map_err(store_err)?;
    }
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
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3"
            ))?
            .query_row(params![bucket, key, id], version_from_row)
            .optional(),
        None => conn
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ?1 AND key = ?2 ORDER BY seq DESC LIMIT 1"
            ))?
            .query_row(params![bucket, key], version_from_row)
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
            .prepare_cached(
                "SELECT name, created, default_plan, versioning FROM buckets WHERE name = ?1",
            )
            .and_then(|mut stmt| stmt.query_row(params![name], bucket_from_row).optional())
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

    fn record_probes(&self, outcomes: &[(String, bool)], now: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        for (node, ok) in outcomes {
            let sql = if *ok {
                "INSERT INTO providers (node_id, last_seen, down_since) VALUES (?1, ?2, NULL) \
                 ON CONFLICT (node_id) DO UPDATE SET last_seen = ?2, down_since = NULL"
            } else {
                // A provider never seen before gets its grace period from now.
                "INSERT INTO providers (node_id, last_seen, down_since) VALUES (?1, ?2, ?2) \
                 ON CONFLICT (node_id) DO UPDATE SET down_since = COALESCE(down_since, ?2)"
            };
            tx.execute(sql, params![node, now]).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    fn record_pools(&self, pools: &[(String, String)], now: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        for (node, pool) in pools {
            tx.execute(
                "INSERT INTO providers (node_id, last_seen, down_since, pool) VALUES (?1, ?3, NULL, ?2) \
                 ON CONFLICT (node_id) DO UPDATE SET pool = ?2",
                params![node, pool, now],
            )
            .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    fn provider_pools(&self) -> Result<BTreeMap<String, String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT node_id, pool FROM providers WHERE pool IS NOT NULL")
            .map_err(store_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn providers_seen(&self) -> Result<BTreeMap<String, ProviderSeen>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT node_id, last_seen, down_since FROM providers")
            .map_err(store_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    ProviderSeen {
                        last_seen: r.get(1)?,
                        down_since: r.get(2)?,
                    },
                ))
            })
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn plan_health(&self, plan: &str, lost_cut: i64, grace_ms: i64) -> Result<Vec<HealthGroup>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&sql(&queue::plan_health()))
            .map_err(store_err)?;
        let rows = stmt
            .query_map(params![plan, lost_cut, grace_ms], |r| {
                let mut n = [None; 8];
                for (i, n) in n.iter_mut().enumerate() {
                    *n = r.get(i)?;
                }
                Ok(queue::health_group(n, r.get(8)?))
            })
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
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
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&sql(&queue::queued_versions(lost)))
            .map_err(store_err)?;
        let min = queue::min_healthy_param(min_healthy);
        let limit = queue::limit_param(limit);
        let rows = stmt
            .query_map(params![plan, lost_cut, grace_ms, min, limit], |r| {
                Ok(queue::queued_version(
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                    [r.get(4)?, r.get(5)?, r.get(6)?],
                    r.get(7)?,
                ))
            })
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn version_by_seq(&self, seq: i64) -> Result<Option<ObjectVersion>> {
        self.conn()
            .query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE seq = ?1"),
                params![seq],
                version_from_row,
            )
            .optional()
            .map_err(store_err)
    }

    fn versions_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, ObjectVersion)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS}, seq FROM versions WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(store_err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok((r.get::<_, i64>(11)?, version_from_row(r)?))
            })
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn bad_shards(&self, seq: i64) -> Result<Vec<ShardPos>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT piece, segment, idx FROM shards WHERE version_seq = ?1 AND bad_since IS NOT NULL",
            )
            .map_err(store_err)?;
        let rows = stmt
            .query_map(params![seq], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| usize::try_from(v).unwrap_or(0));
                Ok((n(0)?, n(1)?, n(2)?))
            })
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn mark_bad_shards(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        shards: &[(ShardPos, String)],
        now: i64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        for ((piece, segment, idx), shard_id) in shards {
            tx.execute(
                "UPDATE shards SET bad_since = COALESCE(bad_since, ?7)
                 WHERE version_seq = (SELECT seq FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3)
                   AND piece = ?4 AND segment = ?5 AND idx = ?6 AND shard_id = ?8",
                params![
                    bucket,
                    key,
                    version_id,
                    *piece as i64,
                    *segment as i64,
                    *idx as i64,
                    now,
                    shard_id
                ],
            )
            .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    fn audit_samples(&self, provider: &str, samples: usize) -> Result<Vec<AuditSample>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT v.bucket, v.key, v.version_id, s.piece, s.segment, s.idx, s.shard_id, s.hash, s.length
                 FROM shards s JOIN versions v ON v.seq = s.version_seq
                 WHERE s.provider = ?1 AND s.bad_since IS NULL
                 ORDER BY random() LIMIT ?2",
            )
            .map_err(store_err)?;
        let limit = i64::try_from(samples).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![provider, limit], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| usize::try_from(v).unwrap_or(0));
                Ok(AuditSample {
                    bucket: r.get(0)?,
                    key: r.get(1)?,
                    version_id: r.get(2)?,
                    pos: (n(3)?, n(4)?, n(5)?),
                    shard_id: r.get(6)?,
                    hash: r.get(7)?,
                    length: count(r.get(8)?),
                })
            })
            .map_err(store_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_err)
    }

    fn referenced_shards(&self, provider: &str) -> Result<HashSet<String>> {
        let conn = self.conn();
        let mut out = HashSet::new();
        {
            let mut stmt = conn
                .prepare_cached("SELECT shard_id FROM shards WHERE provider = ?1")
                .map_err(store_err)?;
            let rows = stmt
                .query_map(params![provider], |r| r.get::<_, String>(0))
                .map_err(store_err)?;
            for id in rows {
                out.insert(id.map_err(store_err)?);
            }
        }
        // Parts of uploads in progress are not versions yet but their shards are not garbage.
        let mut stmt = conn
            .prepare("SELECT layout FROM parts")
            .map_err(store_err)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(store_err)?;
        for text in rows {
            let layout: Layout =
                serde_json::from_str(&text.map_err(store_err)?).map_err(store_err)?;
            out.extend(
                layout
                    .shards()
                    .filter(|s| s.provider == provider)
                    .map(|s| s.shard_id.clone()),
            );
        }
        Ok(out)
    }

    fn replace_layout(&self, seq: i64, expected: &Layout, new: &Layout) -> Result<bool> {
        let text = serde_json::to_string(new).map_err(store_err)?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        let current: Option<Option<String>> = tx
            .query_row(
                "SELECT layout FROM versions WHERE seq = ?1",
                params![seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)?;
        let Some(Some(current)) = current else {
            return Ok(false);
        };
        let current: Layout = serde_json::from_str(&current).map_err(store_err)?;
        if &current != expected {
            return Ok(false);
        }
        tx.execute(
            "UPDATE versions SET layout = ?2 WHERE seq = ?1",
            params![seq, text],
        )
        .map_err(store_err)?;
        // Bad flags go with the shards they flagged: a rebuilt shard starts clean, a kept one
        // keeps its flag.
        let bad = {
            let mut stmt = tx
                .prepare("SELECT piece, segment, idx, bad_since FROM shards WHERE version_seq = ?1 AND bad_since IS NOT NULL")
                .map_err(store_err)?;
            stmt.query_map(params![seq], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(store_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(store_err)?
        };
        tx.execute("DELETE FROM shards WHERE version_seq = ?1", params![seq])
            .map_err(store_err)?;
        index_shards(&tx, seq, new).map_err(store_err)?;
        let shard_of = |l: &Layout, p: i64, g: i64, i: i64| {
            let (p, g, i) = (
                usize::try_from(p).ok()?,
                usize::try_from(g).ok()?,
                usize::try_from(i).ok()?,
            );
            l.pieces().nth(p)?.segments.get(g)?.shards.get(i).cloned()
        };
        for (p, g, i, since) in bad {
            if shard_of(expected, p, g, i).is_some()
                && shard_of(expected, p, g, i) == shard_of(new, p, g, i)
            {
                tx.execute(
                    "UPDATE shards SET bad_since = ?5 WHERE version_seq = ?1 AND piece = ?2 AND segment = ?3 AND idx = ?4",
                    params![seq, p, g, i, since],
                )
                .map_err(store_err)?;
            }
        }
        tx.commit().map_err(store_err)?;
        Ok(true)
    }

    fn provider_usage(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT provider, COUNT(*), COALESCE(SUM(length), 0) FROM shards \
                 WHERE provider != '' GROUP BY provider",
            )
            .map_err(store_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, (count(r.get(1)?), count(r.get(2)?))))
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

    fn set_bucket_plan(&self, name: &str, plan: Option<&str>) -> Result<()> {
        let changed = self
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

    fn put_version(&self, v: &ObjectVersion) -> Result<PutOutcome> {
        let v = v.clone();
        self.grouped(move |conn| {
            Ok(PutOutcome {
                replaced: insert_version(conn, &v)?,
            })
        })
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
        let (bucket, key, version_id) = (bucket.to_owned(), key.to_owned(), version_id.to_owned());
        self.grouped(move |conn| {
            let old = get_version(conn, &bucket, &key, Some(&version_id)).map_err(store_err)?;
            conn.prepare_cached(
                "DELETE FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![bucket, key, version_id]))
            .map_err(store_err)?;
            Ok(old)
        })
    }

    fn list(&self, bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&sql(&listing::latest_after()))
            .map_err(store_err)?;
        let mut rows = stmt
            .query(params![bucket, q.start_after, q.prefix])
            .map_err(store_err)?;
        let mut page = ObjectPager::new(q);
        while let Some(row) = rows.next().map_err(store_err)? {
            if !page.offer(version_from_row(row).map_err(store_err)?) {
                break;
            }
        }
        Ok(page.finish())
    }

    fn list_versions(&self, bucket: &str, q: &VersionQuery<'_>) -> Result<VersionPage> {
        let conn = self.conn();
        let marker = if q.version_id_marker.is_empty() {
            None
        } else {
            conn.query_row(
                &sql(listing::VERSION_MARKER),
                params![bucket, q.key_marker, q.version_id_marker],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)?
        };
        let marker_seq = listing::versions_resume_seq(marker);
        let mut stmt = conn
            .prepare(&sql(&listing::versions_after()))
            .map_err(store_err)?;
        let mut rows = stmt
            .query(params![bucket, q.key_marker, q.prefix, marker_seq])
            .map_err(store_err)?;
        let mut page = VersionPager::new(q);
        while let Some(row) = rows.next().map_err(store_err)? {
            let v = version_from_row(row).map_err(store_err)?;
            if !page.offer(v, row.get(11).map_err(store_err)?) {
                break;
            }
        }
        Ok(page.finish())
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
        let marker = if q.upload_id_marker.is_empty() {
            None
        } else {
            conn.query_row(
                &sql(listing::UPLOAD_MARKER),
                params![bucket, q.key_marker, q.upload_id_marker],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)?
        };
        let marker_seq = listing::uploads_resume_seq(marker);
        let mut stmt = conn
            .prepare(&sql(&listing::uploads_after()))
            .map_err(store_err)?;
        let mut rows = stmt
            .query(params![bucket, q.key_marker, q.prefix, marker_seq])
            .map_err(store_err)?;
        let mut page = UploadPager::new(q);
        while let Some(row) = rows.next().map_err(store_err)? {
            if !page.offer(upload_from_row(row).map_err(store_err)?) {
                break;
            }
        }
        Ok(page.finish())
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

    /// A copy of the policy overlay: the file in the data directory is what runs, and this
    /// copy travels with snapshots and the journal so `sublet recover` can put it back.
    fn shared_policies(&self) -> Result<Option<(i64, String)>> {
        self.conn()
            .query_row(
                "SELECT revision, overlay FROM policies WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(store_err)
    }

    fn put_shared_policies(&self, expected: i64, yaml: &str) -> Result<Option<i64>> {
        let next = expected + 1;
        let changed = if expected == 0 {
            self.conn().execute(
                "INSERT INTO policies (id, revision, overlay) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO NOTHING",
                params![next, yaml],
            )
        } else {
            self.conn().execute(
                "UPDATE policies SET revision = ?1, overlay = ?2 WHERE id = 1 AND revision = ?3",
                params![next, yaml, expected],
            )
        }
        .map_err(store_err)?;
        Ok((changed == 1).then_some(next))
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

    fn commit_order(&self) -> Option<&Mutex<()>> {
        Some(&self.order)
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
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        let seq: Option<i64> = tx
            .query_row(
                "UPDATE versions SET plan = ?1, layout = ?2
                 WHERE bucket = ?3 AND key = ?4 AND version_id = ?5 AND layout IS ?6
                 RETURNING seq",
                params![
                    plan,
                    new,
                    current.bucket,
                    current.key,
                    current.version_id,
                    expected
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        // The shard index follows the layout, or garbage collection would take the new
        // shards for unreferenced ones and health would count the old ones.
        tx.execute("DELETE FROM shards WHERE version_seq = ?1", params![seq])
            .map_err(store_err)?;
        index_shards(&tx, seq, layout).map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(true)
    }
}
