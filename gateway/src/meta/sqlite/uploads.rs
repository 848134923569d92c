//! Multipart uploads and their parts.

use rusqlite::{Connection, OptionalExtension, params};

use super::objects::insert_version;
use super::{PART_COLUMNS, SqliteStore, part_from_row, sql, store_err, upload_from_row};
use crate::meta::listing::{Offer, UPLOAD_COLUMNS, UploadPager};
use crate::meta::{
    CompleteOutcome, MetaError, ObjectVersion, Result, Upload, UploadPage, UploadPart, UploadQuery,
    WriteCondition, listing,
};

pub(super) fn get_upload(
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

pub(super) fn all_parts(conn: &Connection, upload_id: &str) -> rusqlite::Result<Vec<UploadPart>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = ?1 ORDER BY part_number"
    ))?;
    let rows = stmt.query_map(params![upload_id], part_from_row)?;
    rows.collect()
}

/// Removes an upload and its parts, returning the parts.
pub(super) fn end_upload(conn: &Connection, upload_id: &str) -> rusqlite::Result<Vec<UploadPart>> {
    let parts = all_parts(conn, upload_id)?;
    conn.execute("DELETE FROM parts WHERE upload_id = ?1", params![upload_id])?;
    conn.execute(
        "DELETE FROM uploads WHERE upload_id = ?1",
        params![upload_id],
    )?;
    Ok(parts)
}

pub(super) fn no_such_upload(bucket: &str, key: &str, upload_id: &str) -> MetaError {
    MetaError::NoSuchUpload {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: upload_id.into(),
    }
}

pub(super) fn create_upload(s: &SqliteStore, u: &Upload) -> Result<()> {
    let metadata = serde_json::to_string(&u.user_metadata).map_err(store_err)?;
    let mut conn = s.conn();
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
        &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            u.bucket,
            u.key,
            u.upload_id,
            u.plan,
            u.content_type,
            metadata,
            u.initiated,
            u.attrs.to_column()
        ],
    )
    .map_err(store_err)?;
    tx.commit().map_err(store_err)
}

pub(super) fn upload(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<Upload>> {
    get_upload(&s.lookup(), bucket, key, upload_id).map_err(store_err)
}

pub(super) fn put_part(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
    part: &UploadPart,
) -> Result<Option<UploadPart>> {
    let layout = serde_json::to_string(&part.layout).map_err(store_err)?;
    let checksums = part.checksums_column();
    let size = i64::try_from(part.size).map_err(store_err)?;
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    if get_upload(&tx, bucket, key, upload_id)
        .map_err(store_err)?
        .is_none()
    {
        return Err(no_such_upload(bucket, key, upload_id));
    }
    let old = tx
        .query_row(
            &format!("SELECT {PART_COLUMNS} FROM parts WHERE upload_id = ?1 AND part_number = ?2"),
            params![upload_id, part.part_number],
            part_from_row,
        )
        .optional()
        .map_err(store_err)?;
    tx.execute(
        &format!(
            "INSERT OR REPLACE INTO parts (upload_id, {PART_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ),
        params![
            upload_id,
            part.part_number,
            size,
            part.etag,
            part.last_modified,
            layout,
            checksums
        ],
    )
    .map_err(store_err)?;
    tx.commit().map_err(store_err)?;
    Ok(old)
}

pub(super) fn parts(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
    after: i32,
    max: usize,
) -> Result<Vec<UploadPart>> {
    let conn = s.conn();
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

pub(super) fn uploads(s: &SqliteStore, bucket: &str, q: &UploadQuery<'_>) -> Result<UploadPage> {
    let conn = s.conn();
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
    let until = listing::successor(q.prefix);
    let mut from = listing::first_key(q.prefix, q.key_marker).to_owned();
    let mut page = UploadPager::new(q);
    // Each seek past a common prefix is a new query from the key after it.
    'seek: loop {
        let mut stmt = conn
            .prepare_cached(&sql(&listing::uploads_after(until.is_some())))
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
            match page.offer(upload_from_row(row).map_err(store_err)?) {
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

pub(super) fn complete_upload(
    s: &SqliteStore,
    upload_id: &str,
    used: &[(i32, String)],
    version: &ObjectVersion,
    condition: Option<&WriteCondition>,
) -> Result<CompleteOutcome> {
    let mut conn = s.conn();
    let tx = conn.transaction().map_err(store_err)?;
    if get_upload(&tx, &version.bucket, &version.key, upload_id)
        .map_err(store_err)?
        .is_none()
    {
        return Err(no_such_upload(&version.bucket, &version.key, upload_id));
    }
    super::objects::check_condition(&tx, &version.bucket, &version.key, condition)?;
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

pub(super) fn abort_upload(
    s: &SqliteStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Vec<UploadPart>> {
    let mut conn = s.conn();
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
