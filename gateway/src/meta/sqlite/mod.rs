//! The embedded metadata store: one SQLite file in WAL mode.
//!
//! Besides buckets, versions (layouts as JSON), uploads and parts it keeps a shard index,
//! `shards`, one row per shard of every stored version (maintained with the version, removed
//! with it by a cascading foreign key), and `providers`, when each provider was last seen.
//! Health, the repair queue and pool usage are SQL aggregates over those two tables, so a
//! scrape never deserializes a layout.
//!
//! A store opened on a file has a second, read-only connection for the long aggregate reads
//! (plan usage and health, the repair queue, provider usage, audit samples, referenced
//! shards): in WAL mode it reads a committed snapshot without holding the connection every
//! S3 call needs, so an admin scrape or a background job never stalls S3 traffic.
//! A third, also read-only, answers the point reads of every S3 request (a bucket and its
//! settings, a version, an upload): they read the last commit and never wait for a group
//! commit, which holds the writing connection across its fsync.

mod buckets;
mod objects;
mod schema;
mod shards;
mod uploads;
mod users;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Row, params};

use self::schema::SCHEMA;
use self::shards::backfill_shard_index;
use super::{
    AuditSample, Bucket, CompleteOutcome, HealthGroup, ListPage, ListQuery, MetaError,
    MetadataStore, ObjectAttrs, ObjectVersion, ProviderSeen, PutOutcome, QueuedVersion, Result,
    ShardPos, Upload, UploadPage, UploadPart, UploadQuery, VersionPage, VersionQuery, Versioning,
    WriteCondition,
};
use crate::datapath::layout::Layout;
use crate::meta::lock::ObjectLock;

const PART_COLUMNS: &str = "part_number, size, etag, last_modified, layout, checksums";

/// A query shared with the PostgreSQL store (`$n` placeholders) in SQLite's spelling, `?n`.
/// The shared texts use `$` for nothing else.
fn sql(shared: &str) -> String {
    shared.replace('$', "?")
}

/// SQLite behind a mutex: statements are short, and one writer is what SQLite allows.
/// Object writes and deletes are committed in groups (see [`SqliteStore::grouped`]).
pub struct SqliteStore {
    /// The read-only connection of the aggregate reads; `None` for an in-memory store
    /// (whose data no second connection can see), which reads them on `conn`. Declared
    /// first so it closes first: the last connection to close checkpoints the WAL into
    /// the database file, and only `conn` can write.
    reader: Option<Mutex<Connection>>,
    /// The read-only connection of the point reads ([`SqliteStore::lookup`]); `None` for an
    /// in-memory store, which reads them on `conn`.
    lookup: Option<Mutex<Connection>>,
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
        let mut store = Self::init(conn)?;
        // Opened once the schema exists. In WAL mode a reader sees the last commit and
        // neither waits for the writer nor makes it wait.
        store.reader = Some(Mutex::new(Self::open_reader(path, 16)?));
        store.lookup = Some(Mutex::new(Self::open_reader(path, 32)?));
        Ok(store)
    }

    /// A read-only connection to the store's file, keeping up to `statements` prepared.
    fn open_reader(path: &Path, statements: usize) -> Result<Connection> {
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(store_err)?;
        // Only a checkpoint that restarts the WAL can hold a reader back, briefly.
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(store_err)?;
        reader.set_prepared_statement_cache_capacity(statements);
        Ok(reader)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(store_err)?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(store_err)?;
        conn.execute_batch(SCHEMA).map_err(store_err)?;
        add_missing_columns(&conn).map_err(store_err)?;
        backfill_shard_index(&conn).map_err(store_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            conn: Mutex::new(conn),
            reader: None,
            lookup: None,
            group: Mutex::default(),
            order: Mutex::new(()),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection of the long aggregate reads: the read-only one when there is one.
    /// What it reads is the last committed state, as on `conn`; but the reads must not
    /// write, and a read of several statements runs them in one transaction.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        match &self.reader {
            Some(reader) => reader.lock().unwrap_or_else(|p| p.into_inner()),
            None => self.conn(),
        }
    }

    /// The connection of the point reads of S3 requests: the read-only one when there is
    /// one. It reads the last committed state, as `conn` does outside a transaction, but
    /// does not wait while a group commit holds `conn` (its fsync included). A change
    /// acknowledged before the read began is seen: its commit ended before.
    fn lookup(&self) -> MutexGuard<'_, Connection> {
        match &self.lookup {
            Some(lookup) => lookup.lock().unwrap_or_else(|p| p.into_inner()),
            None => self.conn(),
        }
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

/// Runs `jobs` in one transaction, commits, and delivers. A change that fails is undone
/// alone: each runs under a savepoint, except the ones before the first that succeeded,
/// which have nothing of the group's to keep: one of them that fails rolls the whole
/// transaction back and a new one begins. (A savepoint copies every page its change touches
/// first into the statement journal, in memory up to SQLite's 64 KiB spill threshold and a
/// temporary file past it; a lone change, the usual group when writes are few, now writes
/// no statement journal at all.) The savepoint statements are prepared once.
fn commit_group(conn: &mut Connection, jobs: Vec<(u64, GroupJob)>) {
    let mut deliveries = Vec::with_capacity(jobs.len());
    let committed = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        let run = |sql: &str| tx.prepare_cached(sql).and_then(|mut stmt| stmt.execute([]));
        let mut kept = false;
        for (_, job) in jobs {
            if !kept {
                let (ok, deliver) = job(&tx);
                deliveries.push(deliver);
                if ok {
                    kept = true;
                } else {
                    // Nothing before it to keep. An error that ended the transaction
                    // already (SQLITE_FULL, an I/O error) leaves none to roll back.
                    if !tx.is_autocommit() {
                        run("ROLLBACK")?;
                    }
                    run("BEGIN")?;
                }
                continue;
            }
            run("SAVEPOINT change")?;
            let (ok, deliver) = job(&tx);
            deliveries.push(deliver);
            if !ok {
                // A failed change may have written part of itself: undo that part only.
                run("ROLLBACK TO change")?;
            }
            run("RELEASE change")?;
        }
        tx.commit()
    })();
    let error = committed.err().map(|e| e.to_string());
    for deliver in deliveries {
        deliver(error.as_deref());
    }
}

/// Columns added after the first release, which a database made before them lacks
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("versions", "attrs", "TEXT"),
    ("uploads", "attrs", "TEXT"),
    ("parts", "checksums", "TEXT"),
    ("buckets", "owner", "TEXT"),
];

/// The tables as this release makes them, for the migration test.
#[cfg(test)]
pub(crate) fn schema_for_tests() -> &'static str {
    SCHEMA
}

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, kind) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1)"),
            params![column],
            |r| r.get(0),
        )?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
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
        owner: row.get(4)?,
    })
}

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<ObjectVersion> {
    let metadata: String = row.get(7)?;
    let layout: Option<String> = row.get(10)?;
    let attrs: Option<String> = row.get(11)?;
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
        attrs: ObjectAttrs::from_column(attrs.as_deref()).map_err(|e| json_err(11, e))?,
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
        attrs: ObjectAttrs::from_column(row.get::<_, Option<String>>(7)?.as_deref())
            .map_err(|e| json_err(7, e))?,
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
        checksums: row
            .get::<_, Option<String>>(5)?
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(|e| json_err(5, e))?
            .unwrap_or_default(),
    })
}

impl MetadataStore for SqliteStore {
    fn create_bucket(&self, bucket: &Bucket) -> Result<()> {
        buckets::create_bucket(self, bucket)
    }

    fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        buckets::bucket(self, name)
    }

    fn buckets(&self) -> Result<Vec<Bucket>> {
        buckets::buckets(self)
    }

    fn plan_usage(&self) -> Result<Vec<super::PlanUsage>> {
        shards::plan_usage(self)
    }

    fn record_probes(&self, outcomes: &[(String, bool)], now: i64) -> Result<()> {
        shards::record_probes(self, outcomes, now)
    }

    fn record_pools(&self, pools: &[(String, String)], now: i64) -> Result<()> {
        shards::record_pools(self, pools, now)
    }

    fn provider_pools(&self) -> Result<BTreeMap<String, String>> {
        shards::provider_pools(self)
    }

    fn providers_seen(&self) -> Result<BTreeMap<String, ProviderSeen>> {
        shards::providers_seen(self)
    }

    fn plan_health(&self, plan: &str, lost_cut: i64, grace_ms: i64) -> Result<Vec<HealthGroup>> {
        shards::plan_health(self, plan, lost_cut, grace_ms)
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
        shards::queued_versions(self, plan, lost_cut, grace_ms, min_healthy, lost, limit)
    }

    fn version_by_seq(&self, seq: i64) -> Result<Option<ObjectVersion>> {
        objects::version_by_seq(self, seq)
    }

    fn versions_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, ObjectVersion)>> {
        objects::versions_after(self, after, limit)
    }

    fn bad_shards(&self, seq: i64) -> Result<Vec<ShardPos>> {
        shards::bad_shards(self, seq)
    }

    fn mark_bad_shards(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        shards: &[(ShardPos, String)],
        now: i64,
    ) -> Result<()> {
        shards::mark_bad_shards(self, bucket, key, version_id, shards, now)
    }

    fn audit_samples(&self, provider: &str, samples: usize) -> Result<Vec<AuditSample>> {
        shards::audit_samples(self, provider, samples)
    }

    fn referenced_shards(&self, provider: &str) -> Result<HashSet<String>> {
        shards::referenced_shards(self, provider)
    }

    fn replace_layout(&self, seq: i64, expected: &Layout, new: &Layout) -> Result<bool> {
        shards::replace_layout(self, seq, expected, new)
    }

    fn provider_usage(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        shards::provider_usage(self)
    }

    fn put_user(&self, user: &super::User) -> Result<()> {
        users::put_user(self, user)
    }

    fn users(&self) -> Result<Vec<super::User>> {
        users::users(self)
    }

    fn delete_user(&self, id: &str) -> Result<bool> {
        users::delete_user(self, id)
    }

    fn put_key(&self, key: &super::StoredKey) -> Result<()> {
        users::put_key(self, key)
    }

    fn keys(&self) -> Result<Vec<super::StoredKey>> {
        users::keys(self)
    }

    fn delete_key(&self, access_key: &str) -> Result<bool> {
        users::delete_key(self, access_key)
    }

    fn user_usage(&self) -> Result<BTreeMap<String, super::Usage>> {
        users::user_usage(self)
    }

    fn versions_on(&self, provider: &str, after: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        shards::versions_on(self, provider, after, limit)
    }

    fn provider_plans(&self, provider: &str) -> Result<BTreeMap<String, (u64, u64)>> {
        shards::provider_plans(self, provider)
    }

    fn delete_bucket(&self, name: &str) -> Result<()> {
        buckets::delete_bucket(self, name)
    }

    fn set_versioning(&self, name: &str, versioning: Versioning) -> Result<()> {
        buckets::set_versioning(self, name, versioning)
    }

    fn set_bucket_plan(&self, name: &str, plan: Option<&str>) -> Result<()> {
        buckets::set_bucket_plan(self, name, plan)
    }

    fn put_version_if(
        &self,
        v: &ObjectVersion,
        condition: Option<&WriteCondition>,
    ) -> Result<PutOutcome> {
        objects::put_version(self, v, condition)
    }

    fn version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectVersion>> {
        objects::version(self, bucket, key, version_id)
    }

    fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectVersion>> {
        objects::delete_version(self, bucket, key, version_id)
    }

    fn list(&self, bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
        objects::list(self, bucket, q)
    }

    fn list_versions(&self, bucket: &str, q: &VersionQuery<'_>) -> Result<VersionPage> {
        objects::list_versions(self, bucket, q)
    }

    fn create_upload(&self, u: &Upload) -> Result<()> {
        uploads::create_upload(self, u)
    }

    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>> {
        uploads::upload(self, bucket, key, upload_id)
    }

    fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &UploadPart,
    ) -> Result<Option<UploadPart>> {
        uploads::put_part(self, bucket, key, upload_id, part)
    }

    fn parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: i32,
        max: usize,
    ) -> Result<Vec<UploadPart>> {
        uploads::parts(self, bucket, key, upload_id, after, max)
    }

    fn uploads(&self, bucket: &str, q: &UploadQuery<'_>) -> Result<UploadPage> {
        uploads::uploads(self, bucket, q)
    }

    fn complete_upload_if(
        &self,
        upload_id: &str,
        used: &[(i32, String)],
        version: &ObjectVersion,
        condition: Option<&WriteCondition>,
    ) -> Result<CompleteOutcome> {
        uploads::complete_upload(self, upload_id, used, version, condition)
    }

    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<UploadPart>> {
        uploads::abort_upload(self, bucket, key, upload_id)
    }

    fn set_lifecycle(&self, bucket: &str, rules: Option<&str>) -> Result<()> {
        buckets::set_lifecycle(self, bucket, rules)
    }

    /// A copy of the policy overlay: the file in the data directory is what runs, and this
    /// copy travels with snapshots and the journal so `sublet recover` can put it back.
    fn shared_policies(&self) -> Result<Option<(i64, String)>> {
        buckets::shared_policies(self)
    }

    fn put_shared_policies(&self, expected: i64, yaml: &str) -> Result<Option<i64>> {
        buckets::put_shared_policies(self, expected, yaml)
    }

    fn lifecycle(&self, bucket: &str) -> Result<Option<String>> {
        buckets::lifecycle(self, bucket)
    }

    fn set_bucket_lock(&self, bucket: &str, config: &str) -> Result<()> {
        buckets::set_bucket_lock(self, bucket, config)
    }

    fn bucket_lock(&self, bucket: &str) -> Result<Option<String>> {
        buckets::bucket_lock(self, bucket)
    }

    fn set_version_lock(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        expected: &ObjectLock,
        new: &ObjectLock,
    ) -> Result<bool> {
        objects::set_version_lock(self, bucket, key, version_id, expected, new)
    }

    fn set_bucket_tags(&self, bucket: &str, tags: Option<&str>) -> Result<()> {
        buckets::set_bucket_tags(self, bucket, tags)
    }

    fn bucket_tags(&self, bucket: &str) -> Result<Option<String>> {
        buckets::bucket_tags(self, bucket)
    }
    fn set_bucket_encryption(&self, bucket: &str, config: Option<&str>) -> Result<()> {
        buckets::set_bucket_encryption(self, bucket, config)
    }
    fn bucket_encryption(&self, bucket: &str) -> Result<Option<String>> {
        buckets::bucket_encryption(self, bucket)
    }
    fn set_bucket_acl(&self, bucket: &str, acl: Option<&str>) -> Result<()> {
        buckets::set_bucket_acl(self, bucket, acl)
    }
    fn bucket_acl(&self, bucket: &str) -> Result<Option<String>> {
        buckets::bucket_acl(self, bucket)
    }
    fn set_bucket_ownership(&self, bucket: &str, ownership: Option<&str>) -> Result<()> {
        buckets::set_bucket_ownership(self, bucket, ownership)
    }
    fn bucket_ownership(&self, bucket: &str) -> Result<Option<String>> {
        buckets::bucket_ownership(self, bucket)
    }
    fn set_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        acl: Option<&crate::meta::acl::Acl>,
    ) -> Result<bool> {
        objects::set_object_acl(self, bucket, key, version_id, acl)
    }

    fn set_bucket_cors(&self, bucket: &str, rules: Option<&str>) -> Result<()> {
        buckets::set_bucket_cors(self, bucket, rules)
    }

    fn bucket_cors(&self, bucket: &str) -> Result<Option<String>> {
        buckets::bucket_cors(self, bucket)
    }

    fn set_bucket_policy(&self, bucket: &str, policy: Option<&str>) -> Result<()> {
        buckets::set_bucket_policy(self, bucket, policy)
    }

    fn bucket_policy(&self, bucket: &str) -> Result<Option<String>> {
        buckets::bucket_policy(self, bucket)
    }

    fn set_public_access_block(&self, bucket: &str, config: Option<&str>) -> Result<()> {
        buckets::set_public_access_block(self, bucket, config)
    }

    fn public_access_block(&self, bucket: &str) -> Result<Option<String>> {
        buckets::public_access_block(self, bucket)
    }

    fn set_object_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<bool> {
        objects::set_object_tags(self, bucket, key, version_id, tags)
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
        objects::swap_layout(self, current, plan, layout)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
