//! The shard index and what is read from it: plan usage and health, the repair queue, bad
//! shards, audit samples, provider usage; and what the gateway saw of each provider.

use std::collections::{BTreeMap, HashSet};

use postgres::Transaction;

use super::{PostgresStore, count, pg_err, store_err};
use crate::datapath::layout::Layout;
use crate::meta::{
    AuditSample, HealthGroup, PlanUsage, ProviderSeen, QueuedVersion, Result, ShardPos, queue,
};

/// Adds one `shards` row per shard of `layout` for version `seq`, in one statement.
pub(super) fn index_shards(tx: &mut Transaction<'_>, seq: i64, layout: &Layout) -> Result<()> {
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

pub(super) fn plan_usage(s: &PostgresStore) -> Result<Vec<PlanUsage>> {
    s.run_aggregate(|c| {
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

pub(super) fn record_probes(
    s: &PostgresStore,
    outcomes: &[(String, bool)],
    now: i64,
) -> Result<()> {
    // One order for every replica, so two recording at once cannot deadlock.
    let mut sorted: Vec<&(String, bool)> = outcomes.iter().collect();
    sorted.sort();
    s.tx(|tx| {
        for (node, ok) in sorted {
            let sql = if *ok {
                queue::PROBE_ANSWERED
            } else {
                queue::PROBE_FAILED
            };
            tx.execute(sql, &[node, &now]).map_err(pg_err)?;
        }
        Ok(())
    })
}

pub(super) fn record_pools(s: &PostgresStore, pools: &[(String, String)], now: i64) -> Result<()> {
    let mut sorted: Vec<&(String, String)> = pools.iter().collect();
    sorted.sort();
    s.tx(|tx| {
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

pub(super) fn provider_pools(s: &PostgresStore) -> Result<BTreeMap<String, String>> {
    s.run(|c| {
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

pub(super) fn providers_seen(s: &PostgresStore) -> Result<BTreeMap<String, ProviderSeen>> {
    s.run(|c| {
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

pub(super) fn plan_health(
    s: &PostgresStore,
    plan: &str,
    lost_cut: i64,
    grace_ms: i64,
) -> Result<Vec<HealthGroup>> {
    s.run_aggregate(|c| {
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

pub(super) fn queued_versions(
    s: &PostgresStore,
    plan: &str,
    lost_cut: i64,
    grace_ms: i64,
    min_healthy: Option<u64>,
    lost: bool,
    limit: usize,
) -> Result<Vec<QueuedVersion>> {
    let min = queue::min_healthy_param(min_healthy);
    let limit = queue::limit_param(limit);
    s.run_aggregate(|c| {
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

pub(super) fn bad_shards(s: &PostgresStore, seq: i64) -> Result<Vec<ShardPos>> {
    s.run(|c| {
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

pub(super) fn mark_bad_shards(
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    shards: &[(ShardPos, String)],
    now: i64,
) -> Result<()> {
    s.tx(|tx| {
        for ((piece, segment, idx), shard_id) in shards {
            tx.execute(
                queue::MARK_BAD_SHARD,
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

pub(super) fn replace_layout(
    s: &PostgresStore,
    seq: i64,
    expected: &Layout,
    new: &Layout,
) -> Result<bool> {
    let text = serde_json::to_string(new).map_err(store_err)?;
    s.tx(|tx| {
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

pub(super) fn audit_samples(
    s: &PostgresStore,
    provider: &str,
    samples: usize,
) -> Result<Vec<AuditSample>> {
    let limit = i64::try_from(samples).unwrap_or(i64::MAX);
    s.run_aggregate(|c| {
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

pub(super) fn referenced_shards(s: &PostgresStore, provider: &str) -> Result<HashSet<String>> {
    // One snapshot for both reads, so a part completed in between is counted once or the
    // other way, never missed.
    s.run_aggregate(|c| {
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

pub(super) fn provider_usage(s: &PostgresStore) -> Result<BTreeMap<String, (u64, u64)>> {
    s.run_aggregate(|c| {
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

pub(super) fn versions_on(
    s: &PostgresStore,
    provider: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    s.run_aggregate(|c| {
        c.query(queue::VERSIONS_ON, &[&provider, &after, &limit])
            .map_err(pg_err)?
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?)))
            .collect()
    })
}

pub(super) fn provider_plans(
    s: &PostgresStore,
    provider: &str,
) -> Result<BTreeMap<String, (u64, u64)>> {
    s.run_aggregate(|c| {
        c.query(queue::PROVIDER_PLANS, &[&provider])
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

pub(super) fn claim_repair(
    s: &PostgresStore,
    seq: i64,
    holder: &str,
    now: i64,
    lease_ms: i64,
) -> Result<bool> {
    s.run(|c| {
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

pub(super) fn release_repair(s: &PostgresStore, seq: i64, holder: &str) -> Result<()> {
    s.run(|c| {
        c.execute(
            "DELETE FROM repair_claims WHERE seq = $1 AND holder = $2",
            &[&seq, &holder],
        )
        .map_err(pg_err)?;
        Ok(())
    })
}

/// Holds `write_ids` of `holder` until `until_ms` (rows of `writes_in_flight`).
pub(super) fn hold_writes(
    s: &PostgresStore,
    holder: &str,
    write_ids: &[String],
    until_ms: i64,
) -> Result<()> {
    if write_ids.is_empty() {
        return Ok(());
    }
    s.run(|c| {
        c.execute(
            "INSERT INTO writes_in_flight (holder, write_id, until)
             SELECT $1, id, $3 FROM UNNEST($2::text[]) AS id
             ON CONFLICT (holder, write_id) DO UPDATE SET until = excluded.until",
            &[&holder, &write_ids, &until_ms],
        )
        .map_err(pg_err)?;
        Ok(())
    })
}

/// Ends `holder`'s writes but `keep`, and forgets every hold expired before `now_ms`.
pub(super) fn end_writes(
    s: &PostgresStore,
    holder: &str,
    keep: &[String],
    now_ms: i64,
) -> Result<()> {
    s.run(|c| {
        c.execute(
            "DELETE FROM writes_in_flight
             WHERE (holder = $1 AND NOT (write_id = ANY($2::text[]))) OR until < $3",
            &[&holder, &keep, &now_ms],
        )
        .map_err(pg_err)?;
        Ok(())
    })
}

/// The write ids held and not expired at `now_ms`.
pub(super) fn held_writes(s: &PostgresStore, now_ms: i64) -> Result<Vec<String>> {
    s.run(|c| {
        c.query(
            "SELECT DISTINCT write_id FROM writes_in_flight WHERE until >= $1",
            &[&now_ms],
        )
        .map_err(pg_err)?
        .iter()
        .map(|r| r.try_get(0).map_err(pg_err))
        .collect()
    })
}
