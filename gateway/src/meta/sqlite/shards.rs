//! The shard index and what is read from it: plan usage and health, the repair queue, bad
//! shards, audit samples, provider usage; and what the gateway saw of each provider.

use std::collections::{BTreeMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, count, sql, store_err};
use crate::datapath::layout::Layout;
use crate::meta::{AuditSample, HealthGroup, ProviderSeen, QueuedVersion, Result, ShardPos, queue};

/// `user_version` once every version's shards are in the `shards` table.
pub(super) const SHARD_INDEX_VERSION: i64 = 1;

/// Indexes the shards of versions written before the shard index existed.
pub(super) fn backfill_shard_index(conn: &Connection) -> rusqlite::Result<()> {
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
pub(super) fn index_shards(conn: &Connection, seq: i64, layout: &Layout) -> rusqlite::Result<()> {
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

pub(super) fn plan_usage(s: &SqliteStore) -> Result<Vec<crate::meta::PlanUsage>> {
    let conn = s.reader();
    let mut stmt = conn
        .prepare(
            "SELECT plan, COUNT(*), COALESCE(SUM(size), 0) FROM versions \
             WHERE delete_marker = 0 GROUP BY plan ORDER BY plan",
        )
        .map_err(store_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(crate::meta::PlanUsage {
                plan: r.get(0)?,
                objects: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                bytes: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
            })
        })
        .map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}

pub(super) fn record_probes(s: &SqliteStore, outcomes: &[(String, bool)], now: i64) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    for (node, ok) in outcomes {
        let query = if *ok {
            queue::PROBE_ANSWERED
        } else {
            queue::PROBE_FAILED
        };
        tx.execute(&sql(query), params![node, now])
            .map_err(store_err)?;
    }
    tx.commit().map_err(store_err)
}

pub(super) fn record_pools(s: &SqliteStore, pools: &[(String, String)], now: i64) -> Result<()> {
    let mut conn = s.conn();
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

pub(super) fn provider_pools(s: &SqliteStore) -> Result<BTreeMap<String, String>> {
    let conn = s.reader();
    let mut stmt = conn
        .prepare("SELECT node_id, pool FROM providers WHERE pool IS NOT NULL")
        .map_err(store_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}

pub(super) fn providers_seen(s: &SqliteStore) -> Result<BTreeMap<String, ProviderSeen>> {
    let conn = s.reader();
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

pub(super) fn plan_health(
    s: &SqliteStore,
    plan: &str,
    lost_cut: i64,
    grace_ms: i64,
) -> Result<Vec<HealthGroup>> {
    let conn = s.reader();
    let mut stmt = conn
        .prepare_cached(&sql(&queue::plan_health()))
        .map_err(store_err)?;
    let rows = stmt
        .query_map(params![plan, lost_cut, grace_ms], |r| {
            crate::meta::probe::aggregate_row();
            let mut n = [None; 8];
            for (i, n) in n.iter_mut().enumerate() {
                *n = r.get(i)?;
            }
            Ok(queue::health_group(n, r.get(8)?))
        })
        .map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}

pub(super) fn queued_versions(
    s: &SqliteStore,
    plan: &str,
    lost_cut: i64,
    grace_ms: i64,
    min_healthy: Option<u64>,
    lost: bool,
    limit: usize,
) -> Result<Vec<QueuedVersion>> {
    let conn = s.reader();
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

pub(super) fn bad_shards(s: &SqliteStore, seq: i64) -> Result<Vec<ShardPos>> {
    let conn = s.conn();
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

pub(super) fn mark_bad_shards(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    shards: &[(ShardPos, String)],
    now: i64,
) -> Result<()> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    for ((piece, segment, idx), shard_id) in shards {
        tx.execute(
            &sql(queue::MARK_BAD_SHARD),
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

pub(super) fn audit_samples(
    s: &SqliteStore,
    provider: &str,
    samples: usize,
) -> Result<Vec<AuditSample>> {
    let conn = s.reader();
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

pub(super) fn referenced_shards(s: &SqliteStore, provider: &str) -> Result<HashSet<String>> {
    let reader = s.reader();
    // One snapshot for both reads: a part completed between them is seen once, not lost.
    let conn = reader.unchecked_transaction().map_err(store_err)?;
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
        let layout: Layout = serde_json::from_str(&text.map_err(store_err)?).map_err(store_err)?;
        out.extend(
            layout
                .shards()
                .filter(|s| s.provider == provider)
                .map(|s| s.shard_id.clone()),
        );
    }
    Ok(out)
}

pub(super) fn replace_layout(
    s: &SqliteStore,
    seq: i64,
    expected: &Layout,
    new: &Layout,
) -> Result<bool> {
    let text = serde_json::to_string(new).map_err(store_err)?;
    let mut conn = s.conn();
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

pub(super) fn provider_usage(s: &SqliteStore) -> Result<BTreeMap<String, (u64, u64)>> {
    let conn = s.reader();
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

pub(super) fn versions_on(
    s: &SqliteStore,
    provider: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String)>> {
    let conn = s.reader();
    let mut stmt = conn
        .prepare_cached(&sql(queue::VERSIONS_ON))
        .map_err(store_err)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![provider, after, limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}

pub(super) fn provider_plans(
    s: &SqliteStore,
    provider: &str,
) -> Result<BTreeMap<String, (u64, u64)>> {
    let conn = s.reader();
    let mut stmt = conn
        .prepare_cached(&sql(queue::PROVIDER_PLANS))
        .map_err(store_err)?;
    let rows = stmt
        .query_map(params![provider], |r| {
            Ok((r.get::<_, String>(0)?, (count(r.get(1)?), count(r.get(2)?))))
        })
        .map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}
