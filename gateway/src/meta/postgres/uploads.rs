//! Multipart uploads and their parts.

use postgres::{GenericClient, Transaction};

use super::objects::insert_version;
use super::{
    PART_COLUMNS, PostgresStore, i64_of, part_from_row, pg_err, store_err, upload_from_row,
};
use crate::meta::listing::{Offer, UPLOAD_COLUMN_COUNT, UPLOAD_COLUMNS, UploadPager};
use crate::meta::{
    CompleteOutcome, MetaError, ObjectVersion, Result, Upload, UploadPage, UploadPart, UploadQuery,
    WriteCondition, listing,
};

pub(super) fn no_such_upload(bucket: &str, key: &str, upload_id: &str) -> MetaError {
    MetaError::NoSuchUpload {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: upload_id.into(),
    }
}

/// The upload, row-locked until the transaction ends (`None` once completed or aborted:
/// a transaction that waited for a concurrent completion sees the row gone).
pub(super) fn lock_upload(
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

pub(super) fn all_parts(c: &mut impl GenericClient, upload_id: &str) -> Result<Vec<UploadPart>> {
    c.query(
        &format!("SELECT {PART_COLUMNS} FROM parts WHERE upload_id = $1 ORDER BY part_number"),
        &[&upload_id],
    )
    .map_err(pg_err)?
    .iter()
    .map(part_from_row)
    .collect()
}

pub(super) fn end_upload(tx: &mut Transaction<'_>, upload_id: &str) -> Result<Vec<UploadPart>> {
    let parts = all_parts(tx, upload_id)?;
    tx.execute("DELETE FROM parts WHERE upload_id = $1", &[&upload_id])
        .map_err(pg_err)?;
    tx.execute("DELETE FROM uploads WHERE upload_id = $1", &[&upload_id])
        .map_err(pg_err)?;
    Ok(parts)
}

pub(super) fn create_upload(s: &PostgresStore, u: &Upload) -> Result<()> {
    let metadata = serde_json::to_string(&u.user_metadata).map_err(store_err)?;
    s.tx(|tx| {
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
                "INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                &u.bucket,
                &u.key,
                &u.upload_id,
                &u.plan,
                &u.content_type,
                &metadata,
                &u.initiated,
                &u.attrs.to_column(),
            ],
        )
        .map_err(pg_err)?;
        Ok(())
    })
}

pub(super) fn upload(
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<Upload>> {
    s.run(|c| {
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

pub(super) fn put_part(
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
    part: &UploadPart,
) -> Result<Option<UploadPart>> {
    let layout = serde_json::to_string(&part.layout).map_err(store_err)?;
    let checksums = part.checksums_column();
    let size = i64_of(part.size)?;
    s.tx(|tx| {
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
                "INSERT INTO parts (upload_id, {PART_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET size = excluded.size,
                    etag = excluded.etag, last_modified = excluded.last_modified,
                    layout = excluded.layout, checksums = excluded.checksums"
            ),
            &[
                &upload_id,
                &part.part_number,
                &size,
                &part.etag,
                &part.last_modified,
                &layout,
                &checksums,
            ],
        )
        .map_err(pg_err)?;
        Ok(old)
    })
}

pub(super) fn parts(
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
    after: i32,
    max: usize,
) -> Result<Vec<UploadPart>> {
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let found = s.run(|c| {
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

pub(super) fn uploads(s: &PostgresStore, bucket: &str, q: &UploadQuery<'_>) -> Result<UploadPage> {
    /// Rows read per query: a page of uploads takes one or two, a page whose uploads
    /// fold into few common prefixes a few more. Tiny under test, so the store tests
    /// cross batch boundaries.
    const BATCH: i64 = if cfg!(test) { 2 } else { 1000 };
    let marker = if q.upload_id_marker.is_empty() {
        None
    } else {
        s.run(|c| {
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
    let mut from = listing::first_key(q.prefix, q.key_marker).to_owned();
    let until = listing::successor(q.prefix);
    let query = match until {
        Some(_) => format!("{} LIMIT $7", listing::uploads_after(true)),
        None => format!("{} LIMIT $6", listing::uploads_after(false)),
    };
    let mut cursor = (q.key_marker.to_owned(), listing::uploads_resume_seq(marker));
    let mut page = UploadPager::new(q);
    loop {
        let rows = s.run(|c| {
            match &until {
                Some(until) => c.query(
                    &query,
                    &[
                        &bucket, &cursor.0, &q.prefix, &cursor.1, &from, until, &BATCH,
                    ],
                ),
                None => c.query(
                    &query,
                    &[&bucket, &cursor.0, &q.prefix, &cursor.1, &from, &BATCH],
                ),
            }
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
            match page.offer(u) {
                Offer::Full | Offer::SkipTo(None) => return Ok(page.finish()),
                // The next batch starts past the common prefix; what is left of this
                // one is offered (and passed over) as it is already here.
                Offer::SkipTo(Some(to)) => from = from.max(to),
                Offer::More => {}
            }
        }
        if exhausted {
            return Ok(page.finish());
        }
    }
}

pub(super) fn complete_upload(
    s: &PostgresStore,
    upload_id: &str,
    used: &[(i32, String)],
    version: &ObjectVersion,
    condition: Option<&WriteCondition>,
) -> Result<CompleteOutcome> {
    s.tx(|tx| {
        // A second completion waits here, then finds the upload gone.
        if lock_upload(tx, &version.bucket, &version.key, upload_id)?.is_none() {
            return Err(no_such_upload(&version.bucket, &version.key, upload_id));
        }
        super::objects::check_condition(tx, &version.bucket, &version.key, condition)?;
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

pub(super) fn abort_upload(
    s: &PostgresStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Vec<UploadPart>> {
    s.tx(|tx| {
        if lock_upload(tx, bucket, key, upload_id)?.is_none() {
            return Err(no_such_upload(bucket, key, upload_id));
        }
        end_upload(tx, upload_id)
    })
}
