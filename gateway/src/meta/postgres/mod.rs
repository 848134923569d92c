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

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Condvar, Mutex};

use postgres::{Client, GenericClient, NoTls, Row, Transaction};

use super::listing::{
    self, ObjectPager, UPLOAD_COLUMN_COUNT, UPLOAD_COLUMNS, UploadPager, VERSION_COLUMNS,
    VersionPager,
};
use super::postgres_tls::{RustlsConnector, SslMode, split_tls};
use super::{
    AuditSample, Bucket, CompleteOutcome, HealthGroup, ListPage, ListQuery, MetaError,
    MetadataStore, ObjectVersion, PlanUsage, ProviderSeen, PutOutcome, QueuedVersion, Result,
    ShardPos, Upload, UploadPage, UploadPart, UploadQuery, VersionPage, VersionQuery, Versioning,
    queue,
};
use crate::datapath::layout::Layout;

/// Keys sort and compare bytewise (S3 order), whatever the database's default collation.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT COLLATE "C" PRIMARY KEY,
    created BIGINT NOT NULL,
    default_plan TEXT,
    versioning TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket TEXT COLLATE "C" NOT NULL REFERENCES buckets(name),
    key TEXT COLLATE "C" NOT NULL,
    version_id TEXT COLLATE "C" NOT NULL,
    delete_marker BOOLEAN NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT,
    user_metadata TEXT NOT NULL,
    last_modified BIGINT NOT NULL,
    plan TEXT NOT NULL,
    layout TEXT,
    UNIQUE (bucket, key, version_id)
);
CREATE INDEX IF NOT EXISTS versions_by_key ON versions (bucket, key, seq);
CREATE INDEX IF NOT EXISTS versions_by_plan ON versions (plan);
CREATE TABLE IF NOT EXISTS shards (
    version_seq BIGINT NOT NULL REFERENCES versions(seq) ON DELETE CASCADE,
    piece BIGINT NOT NULL,
    segment BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    provider TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    length BIGINT NOT NULL,
    width BIGINT NOT NULL,
    needed BIGINT NOT NULL,
    bad_since BIGINT,
    PRIMARY KEY (version_seq, piece, segment, idx)
);
CREATE INDEX IF NOT EXISTS shards_by_provider ON shards (provider);
CREATE TABLE IF NOT EXISTS providers (
    node_id TEXT PRIMARY KEY,
    last_seen BIGINT NOT NULL,
    down_since BIGINT,
    pool TEXT
);
CREATE TABLE IF NOT EXISTS uploads (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    upload_id TEXT COLLATE "C" NOT NULL UNIQUE,
    bucket TEXT COLLATE "C" NOT NULL REFERENCES buckets(name),
    key TEXT COLLATE "C" NOT NULL,
    plan TEXT NOT NULL,
    content_type TEXT,
    user_metadata TEXT NOT NULL,
    initiated BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, seq);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT COLLATE "C" NOT NULL REFERENCES uploads(upload_id),
    part_number INTEGER NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    last_modified BIGINT NOT NULL,
    layout TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS bucket_lifecycle (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    rules TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repair_claims (
    seq BIGINT PRIMARY KEY,
    holder TEXT NOT NULL,
    until BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL,
    overlay TEXT NOT NULL
);
"#;

/// Serializes concurrent schema creation by several replicas starting at once.
const SCHEMA_LOCK: i64 = 0x5375_626c_6574; // "Sublet"

const PART_COLUMNS: &str = "part_number, size, etag, last_modified, layout";

/// Connections kept open per store; callers beyond that wait for one.
const MAX_CONNECTIONS: usize = 16;

/// PostgreSQL behind a small connection pool.
pub struct PostgresStore {
    config: postgres::Config,
    /// Set when the URL asks for TLS (`sslmode=require` and stricter).
    tls: Option<RustlsConnector>,
    pool: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Client>,
    open: usize,
}

fn store_err(e: impl std::fmt::Display) -> MetaError {
    MetaError::Store(e.to_string())
}

fn pg_err(e: postgres::Error) -> MetaError {
    // The server's message says what went wrong; the client's Display alone is often "db error".
    match e.as_db_error() {
        Some(db) => MetaError::Store(format!("postgres: {}", db.message())),
        // The kind alone ("error performing TLS handshake") hides the cause that names the fix.
        None => {
            let mut message = format!("postgres: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                message.push_str(&format!(": {c}"));
                cause = c.source();
            }
            MetaError::Store(message)
        }
    }
}

impl Drop for PostgresStore {
    /// A pooled client's own drop blocks on the connection's runtime, which panics on a tokio
    /// thread (a gateway shutting down): the idle ones are closed on a plain thread there.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.state().idle);
        if idle.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        // Should the thread not start, the clients are leaked rather than dropped here (the
        // server drops the connections when the process exits).
        let idle = std::mem::ManuallyDrop::new(idle);
        let closing = std::thread::Builder::new()
            .name("sublet-postgres-close".into())
            .spawn(move || drop(std::mem::ManuallyDrop::into_inner(idle)));
        if let Err(e) = closing {
            tracing::warn!(error = %e, "closing PostgreSQL connections");
        }
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db` or key=value form; TLS
    /// with `sslmode=require` and `sslrootcert=`, see [`super::postgres_tls`]) and creates
    /// the tables if needed.
    pub fn open(url: &str) -> Result<Self> {
        let (url, ssl) = split_tls(url).map_err(MetaError::Store)?;
        let tls = match ssl {
            SslMode::Plain => None,
            SslMode::Verified { root_cert } => Some(
                RustlsConnector::new(root_cert.as_deref())
                    .map_err(|e| MetaError::Store(format!("postgres URL: {e}")))?,
            ),
        };
        let mut config: postgres::Config = url.parse().map_err(|e| {
            MetaError::Store(format!(
                "postgres URL does not parse ({e}); expected postgres://user:password@host:5432/dbname"
            ))
        })?;
        // Without one, an unreachable host holds a request for the OS's TCP timeout.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if tls.is_some() {
            config.ssl_mode(postgres::config::SslMode::Require);
        }
        let store = Self {
            config,
            tls,
            pool: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
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

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self) -> Result<Client> {
        let mut state = self.state();
        loop {
            if let Some(client) = state.idle.pop() {
                if client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(client);
            }
            if state.open < MAX_CONNECTIONS {
                state.open += 1;
                drop(state);
                let connected = match &self.tls {
                    Some(tls) => self.config.connect(tls.clone()),
                    None => self.config.connect(NoTls),
                };
                return connected.map_err(|e| {
                    self.state().open -= 1;
                    self.freed.notify_one();
                    pg_err(e)
                });
            }
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn checkin(&self, client: Client) {
        let mut state = self.state();
        if client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(client);
        }
        drop(state);
        self.freed.notify_one();
    }

    /// Runs `f` on a pooled connection, off any tokio runtime (see the module comment).
    fn run<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        let work = || {
            let mut client = self.checkout()?;
            let out = f(&mut client);
            self.checkin(client);
            out
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
    })
}

fn version_from_row(row: &Row) -> Result<ObjectVersion> {
    let metadata: &str = row.try_get(7).map_err(pg_err)?;
    let layout: Option<&str> = row.try_get(10).map_err(pg_err)?;
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
    })
}

fn no_such_upload(bucket: &str, key: &str, upload_id: &str) -> MetaError {
    MetaError::NoSuchUpload {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: upload_id.into(),
    }
}

/// The upload, row-locked until the transaction ends (`None` once completed or aborted:
/// a transaction that waited for a concurrent completion sees the row gone).
fn lock_upload(
    tx: &mut Transaction<'_>,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<Upload>> {
    tx.query_opt(
        &format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE bucket = $1 AND key = $2 AND upload_id = $3 FOR UPDATE"
        ),
        &[&bucket, &key, &upload_id],
    )
    .map_err(pg_err)?
    .as_ref()
    .map(upload_from_row)
    .transpose()
}

fn all_parts(c: &mut impl GenericClient, upload_id: &str) -> Result<Vec<UploadPart>> {
    c.query(
        &format!("SELECT {PART_COLUMNS} FROM parts WHERE upload_id = $1 ORDER BY part_number"),
        &[&upload_id],
    )
    .map_err(pg_err)?
    .iter()
    .map(part_from_row)
    .collect()
}

fn end_upload(tx: &mut Transaction<'_>, upload_id: &str) -> Result<Vec<UploadPart>> {
    let parts = all_parts(tx, upload_id)?;
    tx.execute("DELETE FROM parts WHERE upload_id = $1", &[&upload_id])
        .map_err(pg_err)?;
    tx.execute("DELETE FROM uploads WHERE upload_id = $1", &[&upload_id])
        .map_err(pg_err)?;
    Ok(parts)
}

fn get_version(
    c: &mut impl GenericClient,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Option<ObjectVersion>> {
    let row = match version_id {
        Some(id) => c.query_opt(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = $1 AND key = $2 AND version_id = $3"
            ),
            &[&bucket, &key, &id],
        ),
        None => c.query_opt(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = $1 AND key = $2 ORDER BY seq DESC LIMIT 1"
            ),
            &[&bucket, &key],
        ),
    }
    .map_err(pg_err)?;
    row.as_ref().map(version_from_row).transpose()
}

/// Adds one `shards` row per shard of `layout` for version `seq`, in one statement.
fn index_shards(tx: &mut Transaction<'_>, seq: i64, layout: &Layout) -> Result<()> {
    let (mut piece, mut segment, mut idx) = (Vec::new(), Vec::new(), Vec::new());
    let (mut provider, mut shard_id, mut hash) = (Vec::new(), Vec::new(), Vec::new());
    let (mut length, mut width, mut needed) = (Vec::new(), Vec::new(), Vec::new());
    for (p, part) in layout.pieces().enumerate() {
        for (g, seg) in part.segments.iter().enumerate() {
            for (i, shard) in seg.shards.iter().enumerate() {
                piece.push(p as i64);
                segment.push(g as i64);
                idx.push(i as i64);
                provider.push(shard.provider.as_str());
                shard_id.push(shard.shard_id.as_str());
                hash.push(shard.hash.as_str());
                length.push(i64::try_from(shard.length).unwrap_or(i64::MAX));
                width.push(part.scheme.width() as i64);
                needed.push(part.scheme.needed() as i64);
            }
        }
    }
    if piece.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO shards (version_seq, piece, segment, idx, provider, shard_id, hash, length, width, needed)
         SELECT $1, * FROM unnest($2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[],
                                  $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[])
         ON CONFLICT (version_seq, piece, segment, idx) DO UPDATE SET
            provider = excluded.provider, shard_id = excluded.shard_id, hash = excluded.hash,
            length = excluded.length, width = excluded.width, needed = excluded.needed,
            bad_since = NULL",
        &[
            &seq, &piece, &segment, &idx, &provider, &shard_id, &hash, &length, &width, &needed,
        ],
    )
    .map_err(pg_err)?;
    Ok(())
}

/// Inserts a version as the latest of its key; returns the version it replaced.
fn insert_version(tx: &mut Transaction<'_>, v: &ObjectVersion) -> Result<Vec<ObjectVersion>> {
    let metadata = serde_json::to_string(&v.user_metadata).map_err(store_err)?;
    let layout = v
        .layout
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(store_err)?;
    let size = i64_of(v.size)?;
    // KEY SHARE keeps the bucket from being deleted under the commit.
    if tx
        .query_opt(
            "SELECT 1 FROM buckets WHERE name = $1 FOR KEY SHARE",
            &[&v.bucket],
        )
        .map_err(pg_err)?
        .is_none()
    {
        return Err(MetaError::NoSuchBucket(v.bucket.clone()));
    }
    lock_key(tx, &v.bucket, &v.key)?;
    let replaced: Vec<ObjectVersion> = tx
        .query(
            &format!(
                "DELETE FROM versions WHERE bucket = $1 AND key = $2 AND version_id = $3 RETURNING {VERSION_COLUMNS}"
            ),
            &[&v.bucket, &v.key, &v.version_id],
        )
        .map_err(pg_err)?
        .iter()
        .map(version_from_row)
        .collect::<Result<_>>()?;
    let seq: i64 = tx
        .query_one(
            &format!(
                "INSERT INTO versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq"
            ),
            &[
                &v.bucket,
                &v.key,
                &v.version_id,
                &v.delete_marker,
                &size,
                &v.etag,
                &v.content_type,
                &metadata,
                &v.last_modified,
                &v.plan,
                &layout,
            ],
        )
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    if let Some(layout) = &v.layout {
        index_shards(tx, seq, layout)?;
    }
    Ok(replaced)
}

impl MetadataStore for PostgresStore {
    fn create_bucket(&self, bucket: &Bucket) -> Result<()> {
        let inserted = self.run(|c| {
            c.execute(
                "INSERT INTO buckets (name, created, default_plan, versioning) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING",
                &[
                    &bucket.name,
                    &bucket.created,
                    &bucket.default_plan,
                    &bucket.versioning.as_str(),
                ],
            )
            .map_err(pg_err)
        })?;
        if inserted == 0 {
            return Err(MetaError::BucketExists(bucket.name.clone()));
        }
        Ok(())
    }

    fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        self.run(|c| {
            c.query_opt(
                "SELECT name, created, default_plan, versioning FROM buckets WHERE name = $1",
                &[&name],
            )
            .map_err(pg_err)?
            .as_ref()
            .map(bucket_from_row)
            .transpose()
        })
    }

    fn buckets(&self) -> Result<Vec<Bucket>> {
        self.run(|c| {
            c.query(
                "SELECT name, created, default_plan, versioning FROM buckets ORDER BY name",
                &[],
            )
            .map_err(pg_err)?
            .iter()
            .map(bucket_from_row)
            .collect()
        })
    }

    fn plan_usage(&self) -> Result<Vec<PlanUsage>> {
        self.run(|c| {
            c.query(
                "SELECT plan, COUNT(*)::BIGINT, COALESCE(SUM(size), 0)::BIGINT FROM versions
                 WHERE NOT delete_marker GROUP BY plan ORDER BY plan",
                &[],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| {
                Ok(PlanUsage {
                    plan: r.try_get(0).map_err(pg_err)?,
                    objects: count(r.try_get(1).map_err(pg_err)?),
                    bytes: count(r.try_get(2).map_err(pg_err)?),
                })
            })
            .collect()
        })
    }

    fn record_probes(&self, outcomes: &[(String, bool)], now: i64) -> Result<()> {
        // One order for every replica, so two recording at once cannot deadlock.
        let mut sorted: Vec<&(String, bool)> = outcomes.iter().collect();
        sorted.sort();
        self.tx(|tx| {
            for (node, ok) in sorted {
                let sql = if *ok {
                    "INSERT INTO providers (node_id, last_seen, down_since) VALUES ($1, $2, NULL)
                     ON CONFLICT (node_id) DO UPDATE SET last_seen = $2, down_since = NULL"
                } else {
                    "INSERT INTO providers (node_id, last_seen, down_since) VALUES ($1, $2, $2)
                     ON CONFLICT (node_id) DO UPDATE SET down_since = COALESCE(providers.down_since, $2)"
                };
                tx.execute(sql, &[node, &now]).map_err(pg_err)?;
            }
            Ok(())
        })
    }

    fn record_pools(&self, pools: &[(String, String)], now: i64) -> Result<()> {
        let mut sorted: Vec<&(String, String)> = pools.iter().collect();
        sorted.sort();
        self.tx(|tx| {
            for (node, pool) in sorted {
                tx.execute(
                    "INSERT INTO providers (node_id, last_seen, down_since, pool) VALUES ($1, $3, NULL, $2)
                     ON CONFLICT (node_id) DO UPDATE SET pool = $2",
                    &[node, pool, &now],
                )
                .map_err(pg_err)?;
            }
            Ok(())
        })
    }

    fn provider_pools(&self) -> Result<BTreeMap<String, String>> {
        self.run(|c| {
            c.query(
                "SELECT node_id, pool FROM providers WHERE pool IS NOT NULL",
                &[],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?)))
            .collect()
        })
    }

    fn providers_seen(&self) -> Result<BTreeMap<String, ProviderSeen>> {
        self.run(|c| {
            c.query("SELECT node_id, last_seen, down_since FROM providers", &[])
                .map_err(pg_err)?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get(0).map_err(pg_err)?,
                        ProviderSeen {
                            last_seen: r.try_get(1).map_err(pg_err)?,
                            down_since: r.try_get(2).map_err(pg_err)?,
                        },
                    ))
                })
                .collect()
        })
    }

    fn plan_health(&self, plan: &str, lost_cut: i64, grace_ms: i64) -> Result<Vec<HealthGroup>> {
        self.run(|c| {
            c.query(&queue::plan_health(), &[&plan, &lost_cut, &grace_ms])
                .map_err(pg_err)?
                .iter()
                .map(|r| {
                    let mut n = [None; 8];
                    for (i, n) in n.iter_mut().enumerate() {
                        *n = r.try_get(i).map_err(pg_err)?;
                    }
                    Ok(queue::health_group(n, r.try_get(8).map_err(pg_err)?))
                })
                .collect()
        })
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
        let min = queue::min_healthy_param(min_healthy);
        let limit = queue::limit_param(limit);
        self.run(|c| {
            c.query(
                &queue::queued_versions(lost),
                &[&plan, &lost_cut, &grace_ms, &min, &limit],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| {
                let n = |i: usize| r.try_get::<_, Option<i64>>(i).map_err(pg_err);
                Ok(queue::queued_version(
                    (
                        r.try_get(0).map_err(pg_err)?,
                        r.try_get(1).map_err(pg_err)?,
                        r.try_get(2).map_err(pg_err)?,
                        r.try_get(3).map_err(pg_err)?,
                    ),
                    [n(4)?, n(5)?, n(6)?],
                    r.try_get(7).map_err(pg_err)?,
                ))
            })
            .collect()
        })
    }

    fn version_by_seq(&self, seq: i64) -> Result<Option<ObjectVersion>> {
        self.run(|c| {
            c.query_opt(
                &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE seq = $1"),
                &[&seq],
            )
            .map_err(pg_err)?
            .as_ref()
            .map(version_from_row)
            .transpose()
        })
    }

    fn versions_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, ObjectVersion)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(|c| {
            c.query(
                &format!(
                    "SELECT {VERSION_COLUMNS}, seq FROM versions WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[&after, &limit],
            )
            .map_err(pg_err)?
            .iter()
            .map(|row| Ok((row.try_get::<_, i64>(11).map_err(pg_err)?, version_from_row(row)?)))
            .collect()
        })
    }

    fn bad_shards(&self, seq: i64) -> Result<Vec<ShardPos>> {
        self.run(|c| {
            c.query(
                "SELECT piece, segment, idx FROM shards WHERE version_seq = $1 AND bad_since IS NOT NULL
                 ORDER BY piece, segment, idx",
                &[&seq],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| {
                let n = |i: usize| {
                    r.try_get::<_, i64>(i)
                        .map(|v| usize::try_from(v).unwrap_or(0))
                        .map_err(pg_err)
                };
                Ok((n(0)?, n(1)?, n(2)?))
            })
            .collect()
        })
    }

    fn mark_bad_shards(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        shards: &[(ShardPos, String)],
        now: i64,
    ) -> Result<()> {
        self.tx(|tx| {
            for ((piece, segment, idx), shard_id) in shards {
                tx.execute(
                    "UPDATE shards SET bad_since = COALESCE(bad_since, $7)
                     WHERE version_seq = (SELECT seq FROM versions WHERE bucket = $1 AND key = $2 AND version_id = $3)
                       AND piece = $4 AND segment = $5 AND idx = $6 AND shard_id = $8",
                    &[
                        &bucket,
                        &key,
                        &version_id,
                        &(*piece as i64),
                        &(*segment as i64),
                        &(*idx as i64),
                        &now,
                        shard_id,
                    ],
                )
                .map_err(pg_err)?;
            }
            Ok(())
        })
    }

    fn replace_layout(&self, seq: i64, expected: &Layout, new: &Layout) -> Result<bool> {
        let text = serde_json::to_string(new).map_err(store_err)?;
        self.tx(|tx| {
            // The row lock makes a second repairer wait and then see the first one's layout.
            let current: Option<Option<String>> = tx
                .query_opt(
                    "SELECT layout FROM versions WHERE seq = $1 FOR UPDATE",
                    &[&seq],
                )
                .map_err(pg_err)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(pg_err)?;
            let Some(Some(current)) = current else {
                return Ok(false);
            };
            let current: Layout = serde_json::from_str(&current).map_err(store_err)?;
            if &current != expected {
                return Ok(false);
            }
            tx.execute(
                "UPDATE versions SET layout = $2 WHERE seq = $1",
                &[&seq, &text],
            )
            .map_err(pg_err)?;
            // Bad flags go with the shards they flagged: a rebuilt shard starts clean, a kept
            // one keeps its flag.
            let bad: Vec<(i64, i64, i64, i64)> = tx
                .query(
                    "SELECT piece, segment, idx, bad_since FROM shards WHERE version_seq = $1 AND bad_since IS NOT NULL",
                    &[&seq],
                )
                .map_err(pg_err)?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get(0).map_err(pg_err)?,
                        r.try_get(1).map_err(pg_err)?,
                        r.try_get(2).map_err(pg_err)?,
                        r.try_get(3).map_err(pg_err)?,
                    ))
                })
                .collect::<Result<_>>()?;
            tx.execute("DELETE FROM shards WHERE version_seq = $1", &[&seq])
                .map_err(pg_err)?;
            index_shards(tx, seq, new)?;
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
                        "UPDATE shards SET bad_since = $5 WHERE version_seq = $1 AND piece = $2 AND segment = $3 AND idx = $4",
                        &[&seq, &p, &g, &i, &since],
                    )
                    .map_err(pg_err)?;
                }
            }
            Ok(true)
        })
    }

    fn audit_samples(&self, provider: &str, samples: usize) -> Result<Vec<AuditSample>> {
        let limit = i64::try_from(samples).unwrap_or(i64::MAX);
        self.run(|c| {
            c.query(
                "SELECT v.bucket, v.key, v.version_id, s.piece, s.segment, s.idx, s.shard_id, s.hash, s.length
                 FROM shards s JOIN versions v ON v.seq = s.version_seq
                 WHERE s.provider = $1 AND s.bad_since IS NULL
                 ORDER BY random() LIMIT $2",
                &[&provider, &limit],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| {
                let n = |i: usize| {
                    r.try_get::<_, i64>(i)
                        .map(|v| usize::try_from(v).unwrap_or(0))
                        .map_err(pg_err)
                };
                Ok(AuditSample {
                    bucket: r.try_get(0).map_err(pg_err)?,
                    key: r.try_get(1).map_err(pg_err)?,
                    version_id: r.try_get(2).map_err(pg_err)?,
                    pos: (n(3)?, n(4)?, n(5)?),
                    shard_id: r.try_get(6).map_err(pg_err)?,
                    hash: r.try_get(7).map_err(pg_err)?,
                    length: count(r.try_get(8).map_err(pg_err)?),
                })
            })
            .collect()
        })
    }

    fn referenced_shards(&self, provider: &str) -> Result<HashSet<String>> {
        // One snapshot for both reads, so a part completed in between is counted once or the
        // other way, never missed.
        self.run(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pg_err)?;
            let mut out = HashSet::new();
            for r in tx
                .query(
                    "SELECT shard_id FROM shards WHERE provider = $1",
                    &[&provider],
                )
                .map_err(pg_err)?
            {
                out.insert(r.try_get::<_, String>(0).map_err(pg_err)?);
            }
            for r in tx.query("SELECT layout FROM parts", &[]).map_err(pg_err)? {
                let layout: Layout =
                    serde_json::from_str(r.try_get(0).map_err(pg_err)?).map_err(store_err)?;
                out.extend(
                    layout
                        .shards()
                        .filter(|s| s.provider == provider)
                        .map(|s| s.shard_id.clone()),
                );
            }
            tx.commit().map_err(pg_err)?;
            Ok(out)
        })
    }

    fn provider_usage(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        self.run(|c| {
            c.query(
                "SELECT provider, COUNT(*)::BIGINT, COALESCE(SUM(length), 0)::BIGINT FROM shards
                 WHERE provider <> '' GROUP BY provider",
                &[],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(pg_err)?,
                    (
                        count(r.try_get(1).map_err(pg_err)?),
                        count(r.try_get(2).map_err(pg_err)?),
                    ),
                ))
            })
            .collect()
        })
    }

    fn delete_bucket(&self, name: &str) -> Result<()> {
        self.tx(|tx| {
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
            tx.execute("DELETE FROM buckets WHERE name = $1", &[&name])
                .map_err(pg_err)?;
            Ok(())
        })
    }

    fn set_versioning(&self, name: &str, versioning: Versioning) -> Result<()> {
        let changed = self.run(|c| {
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

    fn shares_policies(&self) -> bool {
        true
    }

    fn shared_policies(&self) -> Result<Option<(i64, String)>> {
        self.run(|c| {
            let row = c
                .query_opt("SELECT revision, overlay FROM policies WHERE id = 1", &[])
                .map_err(pg_err)?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    fn put_shared_policies(&self, expected: i64, yaml: &str) -> Result<Option<i64>> {
        self.run(|c| {
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

    fn set_bucket_plan(&self, name: &str, plan: Option<&str>) -> Result<()> {
        let changed = self.run(|c| {
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

    fn put_version(&self, v: &ObjectVersion) -> Result<PutOutcome> {
        let replaced = self.tx(|tx| insert_version(tx, v))?;
        Ok(PutOutcome { replaced })
    }

    fn version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectVersion>> {
        self.run(|c| get_version(c, bucket, key, version_id))
    }

    fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectVersion>> {
        self.tx(|tx| {
            lock_key(tx, bucket, key)?;
            tx.query_opt(
                &format!(
                    "DELETE FROM versions WHERE bucket = $1 AND key = $2 AND version_id = $3 RETURNING {VERSION_COLUMNS}"
                ),
                &[&bucket, &key, &version_id],
            )
            .map_err(pg_err)?
            .as_ref()
            .map(version_from_row)
            .transpose()
        })
    }

    fn list(&self, bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
        // Rows come in key order; the page (after prefix rollup) may need more rows than
        // `max_keys`, so read in batches until the page is full.
        const BATCH: i64 = 1000;
        let query = format!("{} LIMIT $4", listing::latest_after());
        let mut page = ObjectPager::new(q);
        let mut after = q.start_after.to_owned();
        loop {
            let rows = self.run(|c| {
                c.query(&query, &[&bucket, &after, &q.prefix, &BATCH])
                    .map_err(pg_err)?
                    .iter()
                    .map(version_from_row)
                    .collect::<Result<Vec<_>>>()
            })?;
            let exhausted = (rows.len() as i64) < BATCH;
            for v in rows {
                after.clone_from(&v.key);
                if !page.offer(v) {
                    return Ok(page.finish());
                }
            }
            if exhausted {
                return Ok(page.finish());
            }
        }
    }

    fn list_versions(&self, bucket: &str, q: &VersionQuery<'_>) -> Result<VersionPage> {
        self.run(|c| {
            let marker = if q.version_id_marker.is_empty() {
                None
            } else {
                c.query_opt(
                    listing::VERSION_MARKER,
                    &[&bucket, &q.key_marker, &q.version_id_marker],
                )
                .map_err(pg_err)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(pg_err)?
            };
            let marker_seq = listing::versions_resume_seq(marker);
            // A portal streams the rows, so a page of a huge bucket reads only what it needs.
            let mut tx = c.transaction().map_err(pg_err)?;
            let stmt = tx.prepare(&listing::versions_after()).map_err(pg_err)?;
            let portal = tx
                .bind(&stmt, &[&bucket, &q.key_marker, &q.prefix, &marker_seq])
                .map_err(pg_err)?;
            let mut page = VersionPager::new(q);
            'rows: loop {
                let rows = tx.query_portal(&portal, 1000).map_err(pg_err)?;
                if rows.is_empty() {
                    break;
                }
                for row in &rows {
                    let v = version_from_row(row)?;
                    if !page.offer(v, row.try_get(11).map_err(pg_err)?) {
                        break 'rows;
                    }
                }
            }
            tx.commit().map_err(pg_err)?;
            Ok(page.finish())
        })
    }

    fn create_upload(&self, u: &Upload) -> Result<()> {
        let metadata = serde_json::to_string(&u.user_metadata).map_err(store_err)?;
        self.tx(|tx| {
            if tx
                .query_opt(
                    "SELECT 1 FROM buckets WHERE name = $1 FOR KEY SHARE",
                    &[&u.bucket],
                )
                .map_err(pg_err)?
                .is_none()
            {
                return Err(MetaError::NoSuchBucket(u.bucket.clone()));
            }
            tx.execute(
                &format!(
                    "INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ),
                &[
                    &u.bucket,
                    &u.key,
                    &u.upload_id,
                    &u.plan,
                    &u.content_type,
                    &metadata,
                    &u.initiated,
                ],
            )
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<Upload>> {
        self.run(|c| {
            c.query_opt(
                &format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE bucket = $1 AND key = $2 AND upload_id = $3"
                ),
                &[&bucket, &key, &upload_id],
            )
            .map_err(pg_err)?
            .as_ref()
            .map(upload_from_row)
            .transpose()
        })
    }

    fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &UploadPart,
    ) -> Result<Option<UploadPart>> {
        let layout = serde_json::to_string(&part.layout).map_err(store_err)?;
        let size = i64_of(part.size)?;
        self.tx(|tx| {
            // Locking the upload orders this against completion, abort and other parts.
            if lock_upload(tx, bucket, key, upload_id)?.is_none() {
                return Err(no_such_upload(bucket, key, upload_id));
            }
            let old = tx
                .query_opt(
                    &format!(
                        "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = $1 AND part_number = $2"
                    ),
                    &[&upload_id, &part.part_number],
                )
                .map_err(pg_err)?
                .as_ref()
                .map(part_from_row)
                .transpose()?;
            tx.execute(
                &format!(
                    "INSERT INTO parts (upload_id, {PART_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (upload_id, part_number) DO UPDATE SET size = excluded.size,
                        etag = excluded.etag, last_modified = excluded.last_modified,
                        layout = excluded.layout"
                ),
                &[
                    &upload_id,
                    &part.part_number,
                    &size,
                    &part.etag,
                    &part.last_modified,
                    &layout,
                ],
            )
            .map_err(pg_err)?;
            Ok(old)
        })
    }

    fn parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: i32,
        max: usize,
    ) -> Result<Vec<UploadPart>> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let found = self.run(|c| {
            let exists = c
                .query_opt(
                    "SELECT 1 FROM uploads WHERE bucket = $1 AND key = $2 AND upload_id = $3",
                    &[&bucket, &key, &upload_id],
                )
                .map_err(pg_err)?
                .is_some();
            if !exists {
                return Ok(None);
            }
            c.query(
                &format!(
                    "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = $1 AND part_number > $2
                     ORDER BY part_number LIMIT $3"
                ),
                &[&upload_id, &after, &limit],
            )
            .map_err(pg_err)?
            .iter()
            .map(part_from_row)
            .collect::<Result<Vec<_>>>()
            .map(Some)
        })?;
        found.ok_or_else(|| no_such_upload(bucket, key, upload_id))
    }

    fn uploads(&self, bucket: &str, q: &UploadQuery<'_>) -> Result<UploadPage> {
        /// Rows read per query: a page of uploads takes one or two, a page whose uploads
        /// fold into few common prefixes a few more. Tiny under test, so the store tests
        /// cross batch boundaries.
        const BATCH: i64 = if cfg!(test) { 2 } else { 1000 };
        let marker = if q.upload_id_marker.is_empty() {
            None
        } else {
            self.run(|c| {
                c.query_opt(
                    listing::UPLOAD_MARKER,
                    &[&bucket, &q.key_marker, &q.upload_id_marker],
                )
                .map_err(pg_err)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(pg_err)
            })?
        };
        let query = format!("{} LIMIT $5", listing::uploads_after());
        let mut cursor = (q.key_marker.to_owned(), listing::uploads_resume_seq(marker));
        let mut page = UploadPager::new(q);
        loop {
            let rows = self.run(|c| {
                c.query(&query, &[&bucket, &cursor.0, &q.prefix, &cursor.1, &BATCH])
                    .map_err(pg_err)?
                    .iter()
                    .map(|row| {
                        let seq: i64 = row.try_get(UPLOAD_COLUMN_COUNT).map_err(pg_err)?;
                        Ok((upload_from_row(row)?, seq))
                    })
                    .collect::<Result<Vec<_>>>()
            })?;
            let exhausted = rows.len() < usize::try_from(BATCH).unwrap_or(usize::MAX);
            for (u, seq) in rows {
                cursor = (u.key.clone(), seq);
                if !page.offer(u) {
                    return Ok(page.finish());
                }
            }
            if exhausted {
                return Ok(page.finish());
            }
        }
    }

    fn complete_upload(
        &self,
        upload_id: &str,
        used: &[(i32, String)],
        version: &ObjectVersion,
    ) -> Result<CompleteOutcome> {
        self.tx(|tx| {
            // A second completion waits here, then finds the upload gone.
            if lock_upload(tx, &version.bucket, &version.key, upload_id)?.is_none() {
                return Err(no_such_upload(&version.bucket, &version.key, upload_id));
            }
            let mut parts = end_upload(tx, upload_id)?;
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
            let replaced = insert_version(tx, version)?;
            Ok(CompleteOutcome {
                replaced,
                unused: parts,
            })
        })
    }

    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Vec<UploadPart>> {
        self.tx(|tx| {
            if lock_upload(tx, bucket, key, upload_id)?.is_none() {
                return Err(no_such_upload(bucket, key, upload_id));
            }
            end_upload(tx, upload_id)
        })
    }

    fn set_lifecycle(&self, bucket: &str, rules: Option<&str>) -> Result<()> {
        self.tx(|tx| {
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
            match rules {
                Some(rules) => tx.execute(
                    "INSERT INTO bucket_lifecycle (bucket, rules) VALUES ($1, $2)
                     ON CONFLICT (bucket) DO UPDATE SET rules = excluded.rules",
                    &[&bucket, &rules],
                ),
                None => tx.execute("DELETE FROM bucket_lifecycle WHERE bucket = $1", &[&bucket]),
            }
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn lifecycle(&self, bucket: &str) -> Result<Option<String>> {
        self.run(|c| {
            c.query_opt(
                "SELECT rules FROM bucket_lifecycle WHERE bucket = $1",
                &[&bucket],
            )
            .map_err(pg_err)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(pg_err)
        })
    }

    fn swap_layout(&self, current: &ObjectVersion, plan: &str, layout: &Layout) -> Result<bool> {
        let expected = current
            .layout
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(store_err)?;
        let new = serde_json::to_string(layout).map_err(store_err)?;
        self.tx(|tx| {
            // A conditional UPDATE: a concurrent writer's change is waited for and then
            // re-checked against the condition.
            let seq: Option<i64> = tx
                .query_opt(
                    "UPDATE versions SET plan = $1, layout = $2
                     WHERE bucket = $3 AND key = $4 AND version_id = $5 AND layout IS NOT DISTINCT FROM $6
                     RETURNING seq",
                    &[
                        &plan,
                        &new,
                        &current.bucket,
                        &current.key,
                        &current.version_id,
                        &expected,
                    ],
                )
                .map_err(pg_err)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(pg_err)?;
            let Some(seq) = seq else {
                return Ok(false);
            };
            tx.execute("DELETE FROM shards WHERE version_seq = $1", &[&seq])
                .map_err(pg_err)?;
            index_shards(tx, seq, layout)?;
            Ok(true)
        })
    }

    fn snapshot_into(&self, path: &Path) -> Result<()> {
        super::copy::snapshot_to_sqlite(self, path)
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim_repair(&self, seq: i64, holder: &str, now: i64, lease_ms: i64) -> Result<bool> {
        self.run(|c| {
            let until = now.saturating_add(lease_ms);
            let claimed = c
                .query_opt(
                    "INSERT INTO repair_claims (seq, holder, until) VALUES ($1, $2, $3)
                     ON CONFLICT (seq) DO UPDATE SET holder = excluded.holder, until = excluded.until
                     WHERE repair_claims.until <= $4 OR repair_claims.holder = excluded.holder
                     RETURNING seq",
                    &[&seq, &holder, &until, &now],
                )
                .map_err(pg_err)?;
            Ok(claimed.is_some())
        })
    }

    fn release_repair(&self, seq: i64, holder: &str) -> Result<()> {
        self.run(|c| {
            c.execute(
                "DELETE FROM repair_claims WHERE seq = $1 AND holder = $2",
                &[&seq, &holder],
            )
            .map_err(pg_err)?;
            Ok(())
        })
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
        // The config holds the password: show where, not how.
        f.debug_struct("PostgresStore")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
