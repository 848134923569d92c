//! The health and repair-queue rules, written once for every store: when a shard counts as
//! healthy or reachable, since when a version has been losing shards, which versions are
//! lost, which are due for repair, and in which order.
//!
//! They are SQL aggregates over the shard index (`shards`) and what the gateway saw of each
//! provider (`providers`), so a scrape never deserializes a layout. The text is portable SQL
//! with PostgreSQL's `$n` placeholders (the SQLite store rewrites them to `?n`, see
//! `sqlite::sql`); each store only binds the parameters and reads the columns, handing the
//! numbers to [`health_group`] and [`queued_version`].

use super::{HealthGroup, QueuedVersion};

/// Records a provider that answered a probe (`$1` node, `$2` now): seen now, not down.
pub(super) const PROBE_ANSWERED: &str =
    "INSERT INTO providers (node_id, last_seen, down_since) VALUES ($1, $2, NULL)
     ON CONFLICT (node_id) DO UPDATE SET last_seen = $2, down_since = NULL";

/// Records a provider that failed a probe (`$1` node, `$2` now): down since its first failed
/// probe since it was last seen. A provider never seen before gets its grace period from now.
pub(super) const PROBE_FAILED: &str =
    "INSERT INTO providers (node_id, last_seen, down_since) VALUES ($1, $2, $2)
     ON CONFLICT (node_id) DO UPDATE SET down_since = COALESCE(providers.down_since, $2)";

/// Flags one shard bad (`$1` bucket, `$2` key, `$3` version id, `$4` piece, `$5` segment,
/// `$6` index, `$7` now, `$8` the shard id, so a shard rewritten since is left alone): it
/// stays bad since it was first found bad.
pub(super) const MARK_BAD_SHARD: &str = "UPDATE shards SET bad_since = COALESCE(bad_since, $7)
     WHERE version_seq = (SELECT seq FROM versions WHERE bucket = $1 AND key = $2 AND version_id = $3)
       AND piece = $4 AND segment = $5 AND idx = $6 AND shard_id = $8";

/// Versions with a shard on one provider (`$1` node) and a row id above `$2`, in row id
/// order, at most `$3`, with their plan: how a drain walks a pool's shards.
pub(super) const VERSIONS_ON: &str = "SELECT DISTINCT s.version_seq, v.plan FROM shards s
     JOIN versions v ON v.seq = s.version_seq
     WHERE s.provider = $1 AND s.version_seq > $2
     ORDER BY s.version_seq LIMIT $3";

/// Shards and their bytes on one provider (`$1` node) by the plan of their versions.
pub(super) const PROVIDER_PLANS: &str =
    "SELECT v.plan, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(s.length), 0) AS BIGINT)
     FROM shards s JOIN versions v ON v.seq = s.version_seq
     WHERE s.provider = $1 GROUP BY v.plan";

/// Per-segment health of `plan`'s versions (`$1` plan, `$2` lost cut, `$3` grace ms): a shard
/// is healthy when present, not flagged bad and its provider is known and not down since
/// before the cut; reachable when also not down now. A version's health is that of its
/// weakest segment; it has been losing shards since its earliest loss (a missing shard or
/// an unknown provider: since the version was written; a bad shard: since it was found bad;
/// a provider down past the cut: since it was last seen plus the grace period).
const SEGMENT_HEALTH: &str = "
WITH seg AS (
    SELECT s.version_seq AS seq, MAX(s.width) AS width, MAX(s.needed) AS needed,
        CAST(SUM(CASE WHEN s.provider = '' OR s.bad_since IS NOT NULL OR p.node_id IS NULL
                  OR (p.down_since IS NOT NULL AND p.last_seen <= CAST($2 AS BIGINT)) THEN 0 ELSE 1 END)
            AS BIGINT) AS healthy,
        CAST(SUM(CASE WHEN s.provider = '' OR s.bad_since IS NOT NULL OR p.node_id IS NULL
                  OR p.down_since IS NOT NULL THEN 0 ELSE 1 END) AS BIGINT) AS reachable,
        CAST(SUM(CASE WHEN s.provider = '' THEN 0 ELSE s.length END) AS BIGINT) AS bytes,
        MIN(CASE WHEN s.provider = '' OR p.node_id IS NULL THEN v.last_modified
                 WHEN s.bad_since IS NOT NULL THEN s.bad_since
                 WHEN p.down_since IS NOT NULL AND p.last_seen <= CAST($2 AS BIGINT)
                     THEN p.last_seen + CAST($3 AS BIGINT)
            END) AS lost_since
    FROM versions v
    JOIN shards s ON s.version_seq = v.seq
    LEFT JOIN providers p ON p.node_id = s.provider
    WHERE v.plan = $1 AND NOT v.delete_marker
    GROUP BY s.version_seq, s.piece, s.segment
), ver AS (
    SELECT seq, MAX(width) AS width, MAX(needed) AS needed, MIN(healthy) AS healthy,
        MIN(reachable) AS reachable, CAST(SUM(healthy) AS BIGINT) AS healthy_shards,
        CAST(COUNT(*) AS BIGINT) AS segments, CAST(SUM(bytes) AS BIGINT) AS bytes,
        MIN(lost_since) AS lost_since
    FROM seg GROUP BY seq
)";

/// A plan's versions grouped by shape and health (`$1` plan, `$2` lost cut, `$3` grace ms).
/// Columns: width, needed, healthy, reachable, objects, healthy shards, segments, stored
/// bytes, lost since; see [`health_group`].
pub(super) fn plan_health() -> String {
    format!(
        "{SEGMENT_HEALTH}
         SELECT width, needed, healthy, reachable, CAST(COUNT(*) AS BIGINT),
                CAST(SUM(healthy_shards) AS BIGINT), CAST(SUM(segments) AS BIGINT),
                CAST(SUM(bytes) AS BIGINT), MIN(lost_since)
         FROM ver GROUP BY width, needed, healthy, reachable"
    )
}

/// The repair queue of a plan (`$1` plan, `$2` lost cut, `$3` grace ms, `$4` min healthy or
/// NULL, `$5` limit), most at risk first (fewest shards to spare, then longest losing, then
/// oldest row). With `lost`, the versions with fewer healthy shards than a read needs;
/// otherwise those still readable with fewer than `min(min healthy, width)` (the width when
/// no minimum is set). Columns: seq, bucket, key, version id, healthy, needed, width, lost
/// since; see [`queued_version`].
pub(super) fn queued_versions(lost: bool) -> String {
    // Both filters mention `$4` so one parameter list fits both (PostgreSQL must know every
    // parameter's type).
    let filter = if lost {
        "ver.healthy < ver.needed
          AND (CAST($4 AS BIGINT) IS NULL OR CAST($4 AS BIGINT) IS NOT NULL)"
    } else {
        "ver.healthy >= ver.needed
          AND ver.healthy < CASE WHEN CAST($4 AS BIGINT) < ver.width THEN CAST($4 AS BIGINT)
                                 ELSE ver.width END"
    };
    format!(
        "{SEGMENT_HEALTH}
         SELECT ver.seq, v.bucket, v.key, v.version_id, ver.healthy, ver.needed, ver.width,
                ver.lost_since
         FROM ver JOIN versions v ON v.seq = ver.seq
         WHERE {filter}
         ORDER BY ver.healthy - ver.needed, ver.lost_since, ver.seq
         LIMIT $5"
    )
}

/// The `$4` parameter of [`queued_versions`].
pub(super) fn min_healthy_param(min_healthy: Option<u64>) -> Option<i64> {
    min_healthy.map(|m| i64::try_from(m).unwrap_or(i64::MAX))
}

/// The `$5` parameter of [`queued_versions`].
pub(super) fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A count read from SQL (a sum over no rows is NULL, and none is negative).
fn count(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// A [`plan_health`] row: its first eight columns, then lost since.
pub(super) fn health_group(n: [Option<i64>; 8], lost_since: Option<i64>) -> HealthGroup {
    HealthGroup {
        width: count(n[0]),
        needed: count(n[1]),
        healthy: count(n[2]),
        reachable: count(n[3]),
        objects: count(n[4]),
        healthy_shards: count(n[5]),
        segments: count(n[6]),
        stored_bytes: count(n[7]),
        lost_since,
    }
}

/// A [`queued_versions`] row: seq, bucket, key, version id, then healthy, needed and width,
/// then lost since.
pub(super) fn queued_version(
    (seq, bucket, key, version_id): (i64, String, String, String),
    n: [Option<i64>; 3],
    lost_since: Option<i64>,
) -> QueuedVersion {
    QueuedVersion {
        seq,
        bucket,
        key,
        version_id,
        healthy: count(n[0]),
        needed: count(n[1]),
        width: count(n[2]),
        lost_since,
    }
}
