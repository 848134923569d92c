//! The shared metadata store: PostgreSQL, so several gateway replicas see one database.
//!
//! Same tables as the SQLite store. SQLite gets atomicity from one connection behind a mutex;
//! here each replica has its own connections, so every read-modify-write holds a row or
//! advisory lock for its transaction: commits of one key are serialized by a per-key advisory
//! lock (the latest version is the highest `seq`, and `seq` is drawn under that lock, so the
//! newest committed write is the latest), an upload's row is locked by whoever completes,
//! aborts or adds a part to it, and layout compare-and-swaps lock the version row first.
//!
//! The `postgres` crate is synchronous but drives a tokio runtime of its own, which panics
//! when entered from a thread already inside a runtime. Some callers of the trait run on
//! tokio workers (metrics, admin handlers), others in `spawn_blocking` (which also counts as
//! inside a runtime), so every call made where a runtime is current hops to a short-lived
//! plain thread (scoped, so arguments are borrowed) that has no runtime context.

mod buckets;
mod objects;
mod schema;
mod shards;
mod tls;
mod uploads;
mod users;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, Row, Transaction};
use sublet_pg::{Pool, PoolError};

use self::schema::{SCHEMA, SCHEMA_LOCK};
use super::{
    AuditSample, Bucket, CompleteOutcome, HealthGroup, ListPage, ListQuery, MetaError,
    MetadataStore, ObjectAttrs, ObjectVersion, PlanUsage, ProviderSeen, PutOutcome, QueuedVersion,
    Result, ShardPos, Upload, UploadPage, UploadPart, UploadQuery, VersionPage, VersionQuery,
    Versioning, WriteCondition,
};
use crate::datapath::layout::Layout;
use crate::meta::lock::ObjectLock;

const PART_COLUMNS: &str = "part_number, size, etag, last_modified, layout, checksums";

/// How many of the pool's connections the long aggregate reads (plan usage and health, the
/// repair queue, provider usage, audit samples, referenced shards) may hold at once, so
/// however many admin reads are asked for, the rest stay free for S3 calls.
const MAX_AGGREGATE_CONNECTIONS: usize = 2;

/// How the store reaches PostgreSQL: `spec.metadata.postgres.poolSize` and `poolWait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgPoolOptions {
    /// The most connections open at once (1 to [`sublet_pg::pool::MAX_SIZE`]).
    pub size: usize,
    /// How long a call waits for a free connection before it fails as busy
    /// ([`MetaError::Busy`], an S3 503 `SlowDown`).
    pub wait: Duration,
}

impl Default for PgPoolOptions {
    fn default() -> Self {
        Self {
            size: sublet_crds::DEFAULT_METADATA_POOL_SIZE as usize,
            wait: Duration::from_secs(sublet_crds::DEFAULT_METADATA_POOL_WAIT_SECS),
        }
    }
}

/// PostgreSQL behind a bounded connection pool ([`sublet_pg::Pool`]; TLS as the URL asks).
pub struct PostgresStore {
    pool: Pool,
    /// The pool's wait, also the longest an aggregate read waits for its turn.
    wait: Duration,
    /// Aggregate reads running, and the signal that one ended.
    aggregates: Mutex<usize>,
    aggregate_done: Condvar,
}

fn store_err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Store(e.to_string())
}

fn pg_err(e: postgres::Error) -> MetaError {
    // The server's message says what went wrong; the client's Display alone is often "db
    // error", and the kind alone ("error performing TLS handshake") hides the cause.
    MetaError::Store(format!("postgres: {}", sublet_pg::message(&e)))
}

/// What a caller sees of a pool that gave no connection: busy (try again) or failed.
fn pool_err(e: PoolError) -> MetaError {
    match &e {
        PoolError::Exhausted { .. } => MetaError::Busy(format!("PostgreSQL: {e}")),
        PoolError::Config(m) => MetaError::Store(m.clone()),
        PoolError::Connect(_) => MetaError::Store(format!("postgres: {e}")),
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db` or key=value form; TLS
    /// with `sslmode=require` and `sslrootcert=`, see [`tls`]) with the default pool and
    /// creates the tables if needed.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, PgPoolOptions::default())
    }

    /// [`Self::open`] with a pool of `options.size` connections, callers waiting at most
    /// `options.wait` for one.
    pub fn open_with(url: &str, options: PgPoolOptions) -> Result<Self> {
        let pool = Pool::new(url, options.size, options.wait).map_err(pool_err)?;
        let store = Self {
            pool,
            wait: options.wait,
            aggregates: Mutex::new(0),
            aggregate_done: Condvar::new(),
        };
        store.run(|c| {
            let mut tx = c.transaction().map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .map_err(pg_err)?;
            tx.batch_execute(SCHEMA).map_err(pg_err)?;
            tx.commit().map_err(pg_err)
        })?;
        Ok(store)
    }

    /// Connections open now (handed out or idle).
    pub fn open_connections(&self) -> usize {
        self.pool.open_connections()
    }

    /// Runs `f` on a pooled connection, off any tokio runtime (see the module comment).
    fn run<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        let work = || {
            let mut client = self.pool.get().map_err(pool_err)?;
            f(&mut client)
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return work();
        }
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("sublet-postgres".into())
                .spawn_scoped(s, work)
                .map_err(store_err)?
                .join()
                .unwrap_or_else(|_| Err(store_err("postgres call panicked")))
        })
    }

    /// [`Self::run`] for an aggregate read: waits (at most the pool's wait) while
    /// [`MAX_AGGREGATE_CONNECTIONS`] others run.
    fn run_aggregate<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        {
            let started = Instant::now();
            let mut running = self.aggregates.lock().unwrap_or_else(|p| p.into_inner());
            while *running >= MAX_AGGREGATE_CONNECTIONS {
                let waited = started.elapsed();
                if waited >= self.wait {
                    return Err(MetaError::Busy(format!(
                        "PostgreSQL: all {MAX_AGGREGATE_CONNECTIONS} connections for aggregate reads \
                         (usage, health, the repair queue) stayed busy for {} ms",
                        waited.as_millis()
                    )));
                }
                running = self
                    .aggregate_done
                    .wait_timeout(running, self.wait - waited)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            *running += 1;
        }
        /// Gives the slot back however the read ends.
        struct Slot<'a>(&'a PostgresStore);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                *self.0.aggregates.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
                self.0.aggregate_done.notify_one();
            }
        }
        let _slot = Slot(self);
        self.run(f)
    }

    /// Runs `f` in a READ COMMITTED transaction, committing when it returns `Ok`.
    fn tx<T: Send>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T> + Send) -> Result<T> {
        self.run(|c| {
            let mut tx = c.transaction().map_err(pg_err)?;
            let out = f(&mut tx)?;
            tx.commit().map_err(pg_err)?;
            Ok(out)
        })
    }
}

/// Holds the per-key lock that serializes commits and deletes of one key across replicas.
fn lock_key(tx: &mut Transaction<'_>, bucket: &str, key: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
        &[&bucket, &key],
    )
    .map_err(pg_err)?;
    Ok(())
}

fn i64_of(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(store_err)
}

fn count(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

fn bucket_from_row(row: &Row) -> Result<Bucket> {
    Ok(Bucket {
        name: row.try_get(0).map_err(pg_err)?,
        created: row.try_get(1).map_err(pg_err)?,
        default_plan: row.try_get(2).map_err(pg_err)?,
        versioning: Versioning::parse(row.try_get(3).map_err(pg_err)?),
        owner: row.try_get(4).map_err(pg_err)?,
    })
}

fn version_from_row(row: &Row) -> Result<ObjectVersion> {
    let metadata: &str = row.try_get(7).map_err(pg_err)?;
    let layout: Option<&str> = row.try_get(10).map_err(pg_err)?;
    let attrs: Option<&str> = row.try_get(11).map_err(pg_err)?;
    Ok(ObjectVersion {
        bucket: row.try_get(0).map_err(pg_err)?,
        key: row.try_get(1).map_err(pg_err)?,
        version_id: row.try_get(2).map_err(pg_err)?,
        delete_marker: row.try_get(3).map_err(pg_err)?,
        size: count(row.try_get(4).map_err(pg_err)?),
        etag: row.try_get(5).map_err(pg_err)?,
        content_type: row.try_get(6).map_err(pg_err)?,
        user_metadata: serde_json::from_str(metadata).map_err(store_err)?,
        last_modified: row.try_get(8).map_err(pg_err)?,
        plan: row.try_get(9).map_err(pg_err)?,
        layout: layout
            .map(serde_json::from_str)
            .transpose()
            .map_err(store_err)?,
        attrs: ObjectAttrs::from_column(attrs).map_err(store_err)?,
    })
}

fn upload_from_row(row: &Row) -> Result<Upload> {
    let metadata: &str = row.try_get(5).map_err(pg_err)?;
    Ok(Upload {
        bucket: row.try_get(0).map_err(pg_err)?,
        key: row.try_get(1).map_err(pg_err)?,
        upload_id: row.try_get(2).map_err(pg_err)?,
        plan: row.try_get(3).map_err(pg_err)?,
        content_type: row.try_get(4).map_err(pg_err)?,
        user_metadata: serde_json::from_str(metadata).map_err(store_err)?,
        initiated: row.try_get(6).map_err(pg_err)?,
        attrs: ObjectAttrs::from_column(row.try_get(7).map_err(pg_err)?).map_err(store_err)?,
    })
}

fn part_from_row(row: &Row) -> Result<UploadPart> {
    let layout: &str = row.try_get(4).map_err(pg_err)?;
    Ok(UploadPart {
        part_number: row.try_get(0).map_err(pg_err)?,
        size: count(row.try_get(1).map_err(pg_err)?),
        etag: row.try_get(2).map_err(pg_err)?,
        last_modified: row.try_get(3).map_err(pg_err)?,
        layout: serde_json::from_str(layout).map_err(store_err)?,
        checksums: row
            .try_get::<_, Option<&str>>(5)
            .map_err(pg_err)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(store_err)?
            .unwrap_or_default(),
    })
}

impl MetadataStore for PostgresStore {
    fn create_bucket(&self, bucket: &Bucket) -> Result<()> {
        buckets::create_bucket(self, bucket)
    }

    fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        buckets::bucket(self, name)
    }

    fn buckets(&self) -> Result<Vec<Bucket>> {
        buckets::buckets(self)
    }

    fn plan_usage(&self) -> Result<Vec<PlanUsage>> {
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

    fn replace_layout(&self, seq: i64, expected: &Layout, new: &Layout) -> Result<bool> {
        shards::replace_layout(self, seq, expected, new)
    }

    fn audit_samples(&self, provider: &str, samples: usize) -> Result<Vec<AuditSample>> {
        shards::audit_samples(self, provider, samples)
    }

    fn referenced_shards(&self, provider: &str) -> Result<HashSet<String>> {
        shards::referenced_shards(self, provider)
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

    fn shares_policies(&self) -> bool {
        true
    }

    fn shared_policies(&self) -> Result<Option<(i64, String)>> {
        buckets::shared_policies(self)
    }

    fn put_shared_policies(&self, expected: i64, yaml: &str) -> Result<Option<i64>> {
        buckets::put_shared_policies(self, expected, yaml)
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

    fn swap_layout(&self, current: &ObjectVersion, plan: &str, layout: &Layout) -> Result<bool> {
        objects::swap_layout(self, current, plan, layout)
    }

    fn snapshot_into(&self, path: &Path) -> Result<()> {
        super::copy::snapshot_to_sqlite(self, path)
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim_repair(&self, seq: i64, holder: &str, now: i64, lease_ms: i64) -> Result<bool> {
        shards::claim_repair(self, seq, holder, now, lease_ms)
    }

    fn release_repair(&self, seq: i64, holder: &str) -> Result<()> {
        shards::release_repair(self, seq, holder)
    }

    fn hold_writes(&self, holder: &str, write_ids: &[String], until_ms: i64) -> Result<()> {
        shards::hold_writes(self, holder, write_ids, until_ms)
    }

    fn end_writes(&self, holder: &str, keep: &[String], now_ms: i64) -> Result<()> {
        shards::end_writes(self, holder, keep, now_ms)
    }

    fn held_writes(&self, now_ms: i64) -> Result<Vec<String>> {
        shards::held_writes(self, now_ms)
    }
}

impl PostgresStore {
    /// True when the database holds no bucket and no provider yet.
    pub fn is_empty(&self) -> Result<bool> {
        self.run(|c| {
            c.query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM buckets) AND NOT EXISTS (SELECT 1 FROM providers)",
                &[],
            )
            .map_err(pg_err)?
            .try_get(0)
            .map_err(pg_err)
        })
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's Debug shows where, never the password.
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
