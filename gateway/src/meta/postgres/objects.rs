//! Object versions: writing, reading, deleting and listing them, swapping a version's
//! layout and changing its tags.

use postgres::{GenericClient, Transaction};

use super::shards::index_shards;
use super::{PostgresStore, i64_of, lock_key, pg_err, store_err, version_from_row};
use crate::datapath::layout::Layout;
use crate::meta::listing::{Offer, VERSION_COLUMNS, VersionPager};
use crate::meta::{
    ListPage, ListQuery, MetaError, ObjectAttrs, ObjectVersion, PutOutcome, Result, VersionPage,
    VersionQuery, WriteCondition, listing, lock::ObjectLock,
};

pub(super) fn get_version(
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

/// Inserts a version as the latest of its key; returns the version it replaced.
pub(super) fn insert_version(
    tx: &mut Transaction<'_>,
    v: &ObjectVersion,
) -> Result<Vec<ObjectVersion>> {
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
                "INSERT INTO versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING seq"
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
                &v.attrs.to_column(),
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

pub(super) fn version_by_seq(s: &PostgresStore, seq: i64) -> Result<Option<ObjectVersion>> {
    s.run(|c| {
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

pub(super) fn versions_after(
    s: &PostgresStore,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, ObjectVersion)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    s.run(|c| {
        c.query(
            &format!(
                "SELECT {VERSION_COLUMNS}, seq FROM versions WHERE seq > $1 ORDER BY seq LIMIT $2"
            ),
            &[&after, &limit],
        )
        .map_err(pg_err)?
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<_, i64>(12).map_err(pg_err)?,
                version_from_row(row)?,
            ))
        })
        .collect()
    })
}

pub(super) fn put_version(
    s: &PostgresStore,
    v: &ObjectVersion,
    condition: Option<&WriteCondition>,
) -> Result<PutOutcome> {
    let replaced = s.tx(|tx| {
        check_condition(tx, &v.bucket, &v.key, condition)?;
        insert_version(tx, v)
    })?;
    Ok(PutOutcome { replaced })
}

/// Checks a conditional write's condition inside its transaction, under the key's lock
/// (which the write then holds to its commit), so two racing `If-None-Match: *` writers
/// cannot both see the key absent.
pub(super) fn check_condition(
    tx: &mut Transaction<'_>,
    bucket: &str,
    key: &str,
    condition: Option<&WriteCondition>,
) -> Result<()> {
    let Some(condition) = condition else {
        return Ok(());
    };
    lock_key(tx, bucket, key)?;
    let latest = get_version(tx, bucket, key, None)?;
    condition.check(bucket, key, latest.as_ref())
}

pub(super) fn version(
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Option<ObjectVersion>> {
    s.run(|c| get_version(c, bucket, key, version_id))
}

pub(super) fn delete_version(
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Option<ObjectVersion>> {
    s.tx(|tx| {
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

pub(super) fn set_version_lock(
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    expected: &ObjectLock,
    new: &ObjectLock,
) -> Result<bool> {
    s.tx(|tx| {
        lock_key(tx, bucket, key)?;
        let Some(mut v) = get_version(tx, bucket, key, Some(version_id))? else {
            return Ok(false);
        };
        if v.attrs.lock != *expected {
            return Ok(false);
        }
        v.attrs.lock = *new;
        tx.execute(
            "UPDATE versions SET attrs = $4 WHERE bucket = $1 AND key = $2 AND version_id = $3",
            &[&bucket, &key, &version_id, &v.attrs.to_column()],
        )
        .map_err(pg_err)?;
        Ok(true)
    })
}

pub(super) fn list(s: &PostgresStore, bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
    // Rows come in batches, one round trip each: after a seek the rest of a batch is still
    // offered (the pager passes over rows below the seek) unless the whole batch lies below
    // it, so seeking never costs more round trips than reading on would.
    const BATCH: i64 = 1000;
    listing::read_objects(q, |range, sink| {
        let rows = s.run(|c| {
            let rows = match &range.until {
                Some(until) => c.query(
                    &format!("{} LIMIT $6", listing::latest_in(true)),
                    &[
                        &bucket,
                        &range.from,
                        &range.exclude,
                        &q.prefix,
                        until,
                        &BATCH,
                    ],
                ),
                None => c.query(
                    &format!("{} LIMIT $5", listing::latest_in(false)),
                    &[&bucket, &range.from, &range.exclude, &q.prefix, &BATCH],
                ),
            }
            .map_err(pg_err)?;
            rows.iter()
                .map(version_from_row)
                .collect::<Result<Vec<_>>>()
        })?;
        let ran_out = (rows.len() as i64) < BATCH;
        let last = rows.last().map(|v| v.key.clone());
        for v in rows {
            match sink(v) {
                Offer::More => {}
                Offer::SkipTo(Some(to)) if last.as_ref().is_some_and(|l| *l >= to) => {}
                Offer::SkipTo(_) | Offer::Full => return Ok(false),
            }
        }
        Ok(ran_out)
    })
}

pub(super) fn list_versions(
    s: &PostgresStore,
    bucket: &str,
    q: &VersionQuery<'_>,
) -> Result<VersionPage> {
    s.run(|c| {
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
        let from = listing::first_key(q.prefix, q.key_marker);
        let until = listing::successor(q.prefix);
        let stmt = tx
            .prepare(&listing::versions_after(until.is_some()))
            .map_err(pg_err)?;
        let portal = match &until {
            Some(until) => tx.bind(
                &stmt,
                &[&bucket, &q.key_marker, &q.prefix, &marker_seq, &from, until],
            ),
            None => tx.bind(
                &stmt,
                &[&bucket, &q.key_marker, &q.prefix, &marker_seq, &from],
            ),
        }
        .map_err(pg_err)?;
        let mut page = VersionPager::new(q);
        'rows: loop {
            let rows = tx.query_portal(&portal, 1000).map_err(pg_err)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let v = version_from_row(row)?;
                // Rows stream from one portal: a seek would be a new query per common
                // prefix, so the rows beneath one are passed over instead.
                if page.offer(v, row.try_get(12).map_err(pg_err)?) == Offer::Full {
                    break 'rows;
                }
            }
        }
        tx.commit().map_err(pg_err)?;
        Ok(page.finish())
    })
}

pub(super) fn swap_layout(
    s: &PostgresStore,
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
    s.tx(|tx| {
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

pub(super) fn set_object_tags(
    s: &PostgresStore,
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
    s: &PostgresStore,
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
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    version_id: &str,
    field: &str,
    value: Option<serde_json::Value>,
) -> Result<bool> {
    s.tx(|tx| {
        // The row stays locked until the update: a concurrent change waits, then applies
        // to what this one wrote.
        let Some(row) = tx
            .query_opt(
                "SELECT seq, attrs FROM versions
                 WHERE bucket = $1 AND key = $2 AND version_id = $3 AND NOT delete_marker
                 FOR UPDATE",
                &[&bucket, &key, &version_id],
            )
            .map_err(pg_err)?
        else {
            return Ok(false);
        };
        let seq: i64 = row.try_get(0).map_err(pg_err)?;
        let column: Option<String> = row.try_get(1).map_err(pg_err)?;
        let column = ObjectAttrs::column_with_field(column.as_deref(), field, value.clone())
            .map_err(store_err)?;
        tx.execute(
            "UPDATE versions SET attrs = $2 WHERE seq = $1",
            &[&seq, &column],
        )
        .map_err(pg_err)?;
        Ok(true)
    })
}
