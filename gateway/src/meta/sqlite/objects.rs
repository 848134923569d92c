//! Object versions: writing, reading, deleting and listing them, swapping a version's
//! layout and changing its tags.

use rusqlite::{Connection, OptionalExtension, params};

use super::shards::index_shards;
use super::{SqliteStore, sql, store_err, version_from_row};
use crate::datapath::layout::Layout;
use crate::meta::listing::{Offer, VERSION_COLUMNS, VersionPager};
use crate::meta::{
    ListPage, ListQuery, MetaError, ObjectAttrs, ObjectVersion, PutOutcome, Result, VersionPage,
    VersionQuery, WriteCondition, listing, lock::ObjectLock,
};

/// Inserts a version as the latest of its key; returns the version it replaced.
pub(super) fn insert_version(conn: &Connection, v: &ObjectVersion) -> Result<Vec<ObjectVersion>> {
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
        &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
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
            layout,
            v.attrs.to_column()
        ]))
    .map_err(store_err)?;
    if let Some(layout) = &v.layout {
        index_shards(conn, conn.last_insert_rowid(), layout).map_err(store_err)?;
    }
    Ok(replaced)
}

pub(super) fn get_version(
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

pub(super) fn version_by_seq(s: &SqliteStore, seq: i64) -> Result<Option<ObjectVersion>> {
    s.conn()
        .query_row(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE seq = ?1"),
            params![seq],
            version_from_row,
        )
        .optional()
        .map_err(store_err)
}

pub(super) fn versions_after(
    s: &SqliteStore,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, ObjectVersion)>> {
    let conn = s.conn();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS}, seq FROM versions WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))
        .map_err(store_err)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![after, limit], |r| {
            Ok((r.get::<_, i64>(12)?, version_from_row(r)?))
        })
        .map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}

pub(super) fn put_version(
    s: &SqliteStore,
    v: &ObjectVersion,
    condition: Option<&WriteCondition>,
) -> Result<PutOutcome> {
    let v = v.clone();
    let condition = condition.cloned();
    s.grouped(move |conn| {
        check_condition(conn, &v.bucket, &v.key, condition.as_ref())?;
        Ok(PutOutcome {
            replaced: insert_version(conn, &v)?,
        })
    })
}

/// Checks a conditional write's condition inside its transaction (SQLite runs one writer
/// at a time, so racing writers see each other's commits).
pub(super) fn check_condition(
    conn: &Connection,
    bucket: &str,
    key: &str,
    condition: Option<&WriteCondition>,
) -> Result<()> {
    let Some(condition) = condition else {
        return Ok(());
    };
    let latest = get_version(conn, bucket, key, None).map_err(store_err)?;
    condition.check(bucket, key, latest.as_ref())
}

pub(super) fn version(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Option<ObjectVersion>> {
    get_version(&s.lookup(), bucket, key, version_id).map_err(store_err)
}

pub(super) fn delete_version(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Option<ObjectVersion>> {
    let (bucket, key, version_id) = (bucket.to_owned(), key.to_owned(), version_id.to_owned());
    s.grouped(move |conn| {
        let old = get_version(conn, &bucket, &key, Some(&version_id)).map_err(store_err)?;
        conn.prepare_cached(
            "DELETE FROM versions WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
        )
        .and_then(|mut stmt| stmt.execute(params![bucket, key, version_id]))
        .map_err(store_err)?;
        Ok(old)
    })
}

pub(super) fn set_version_lock(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    expected: &ObjectLock,
    new: &ObjectLock,
) -> Result<bool> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    let Some(mut v) = get_version(&tx, bucket, key, Some(version_id)).map_err(store_err)? else {
        return Ok(false);
    };
    if v.attrs.lock != *expected {
        return Ok(false);
    }
    v.attrs.lock = *new;
    tx.execute(
        "UPDATE versions SET attrs = ?4 WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
        params![bucket, key, version_id, v.attrs.to_column()],
    )
    .map_err(store_err)?;
    tx.commit().map_err(store_err)?;
    Ok(true)
}

pub(super) fn list(s: &SqliteStore, bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
    let conn = s.conn();
    listing::read_objects(q, |range, sink| {
        let mut stmt = conn
            .prepare_cached(&sql(&listing::latest_in(range.until.is_some())))
            .map_err(store_err)?;
        let mut rows = match &range.until {
            Some(until) => stmt.query(params![bucket, range.from, range.exclude, q.prefix, until]),
            None => stmt.query(params![bucket, range.from, range.exclude, q.prefix]),
        }
        .map_err(store_err)?;
        while let Some(row) = rows.next().map_err(store_err)? {
            // Rows come one at a time: a seek is a new query, never a row read in vain.
            if sink(version_from_row(row).map_err(store_err)?) != Offer::More {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

pub(super) fn list_versions(
    s: &SqliteStore,
    bucket: &str,
    q: &VersionQuery<'_>,
) -> Result<VersionPage> {
    let conn = s.conn();
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
    let until = listing::successor(q.prefix);
    let mut from = listing::first_key(q.prefix, q.key_marker).to_owned();
    let mut page = VersionPager::new(q);
    // Each seek past a common prefix is a new query from the key after it.
    'seek: loop {
        let mut stmt = conn
            .prepare_cached(&sql(&listing::versions_after(until.is_some())))
            .map_err(store_err)?;
        let mut rows = match &until {
            Some(until) => stmt.query(params![
                bucket,
                q.key_marker,
                q.prefix,
                marker_seq,
                from,
                until
            ]),
            None => stmt.query(params![bucket, q.key_marker, q.prefix, marker_seq, from]),
        }
        .map_err(store_err)?;
        while let Some(row) = rows.next().map_err(store_err)? {
            crate::meta::probe::listed_row();
            let v = version_from_row(row).map_err(store_err)?;
            match page.offer(v, row.get(12).map_err(store_err)?) {
                Offer::More => {}
                Offer::SkipTo(Some(to)) => {
                    from = to;
                    continue 'seek;
                }
                Offer::SkipTo(None) | Offer::Full => break 'seek,
            }
        }
        break;
    }
    Ok(page.finish())
}

pub(super) fn swap_layout(
    s: &SqliteStore,
    current: &ObjectVersion,
    plan: &str,
    layout: &Layout,
) -> Result<bool> {
    let expected = current
        .layout
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(store_err)?;
    let new = serde_json::to_string(layout).map_err(store_err)?;
    let mut conn = s.conn();
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

pub(super) fn set_object_tags(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<bool> {
    let value = (!tags.is_empty())
        .then(|| serde_json::to_value(tags))
        .transpose()
        .map_err(store_err)?;
    set_version_attr(s, bucket, key, version_id, "tags", value)
}

pub(super) fn set_object_acl(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    acl: Option<&crate::meta::acl::Acl>,
) -> Result<bool> {
    let value = acl
        .map(serde_json::to_value)
        .transpose()
        .map_err(store_err)?;
    set_version_attr(s, bucket, key, version_id, "acl", value)
}

/// Replaces one field of a stored version's attributes in place.
fn set_version_attr(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    field: &str,
    value: Option<serde_json::Value>,
) -> Result<bool> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    let found: Option<(i64, Option<String>)> = tx
        .query_row(
            "SELECT seq, attrs FROM versions
             WHERE bucket = ?1 AND key = ?2 AND version_id = ?3 AND delete_marker = 0",
            params![bucket, key, version_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(store_err)?;
    let Some((seq, column)) = found else {
        return Ok(false);
    };
    let column =
        ObjectAttrs::column_with_field(column.as_deref(), field, value).map_err(store_err)?;
    tx.execute(
        "UPDATE versions SET attrs = ?2 WHERE seq = ?1",
        params![seq, column],
    )
    .map_err(store_err)?;
    tx.commit().map_err(store_err)?;
    Ok(true)
}
