//! The listing rules, written once for every store: which rows a ListObjects,
//! ListObjectVersions or ListMultipartUploads page takes, how keys roll up into common
//! prefixes under a delimiter, where a page is cut and which markers continue it.
//!
//! A store only reads rows in listing order (with the queries below, or its own way of
//! streaming them) and offers each to a pager until the pager says the page is full.
//!
//! The queries are written with PostgreSQL's `$n` placeholders; the SQLite store rewrites
//! them to `?n` (see `sqlite::sql`). Both dialects run the same text otherwise.

use super::{
    ListPage, ListQuery, ObjectVersion, Upload, UploadPage, UploadQuery, VersionEntry, VersionPage,
    VersionQuery,
};

/// The version columns, in the order the stores' `version_from_row` reads them.
pub(super) const VERSION_COLUMNS: &str = "bucket, key, version_id, delete_marker, size, etag, content_type, user_metadata, last_modified, plan, layout, attrs";
/// The same columns without the layout, which listings never return.
pub(super) const LIST_COLUMNS: &str = "bucket, key, version_id, delete_marker, size, etag, content_type, user_metadata, last_modified, plan, CAST(NULL AS TEXT), CAST(NULL AS TEXT)";
/// The upload columns, in the order the stores' `upload_from_row` reads them.
pub(super) const UPLOAD_COLUMNS: &str =
    "bucket, key, upload_id, plan, content_type, user_metadata, initiated, attrs";
/// How many columns [`UPLOAD_COLUMNS`] names (the upload's `seq` follows them in
/// [`UPLOADS_AFTER`]).
pub(super) const UPLOAD_COLUMN_COUNT: usize = 8;

/// ListObjects rows: the latest version of each key of bucket `$1` after `$2` under prefix
/// `$3`, in key order (delete markers included; the pager skips them).
pub(super) fn latest_after() -> String {
    format!(
        "SELECT {LIST_COLUMNS} FROM versions v
         WHERE bucket = $1 AND key > $2 AND substr(key, 1, length($3)) = $3
           AND seq = (SELECT MAX(seq) FROM versions w WHERE w.bucket = v.bucket AND w.key = v.key)
         ORDER BY key"
    )
}

/// The row id of version `$3` of key `$2` in bucket `$1`: where a versions listing resumes.
pub(super) const VERSION_MARKER: &str =
    "SELECT seq FROM versions WHERE bucket = $1 AND key = $2 AND version_id = $3";

/// ListObjectVersions rows: every version of bucket `$1` under prefix `$3` after key `$2`, or
/// of key `$2` older than row `$4`; newest first per key. Column 12 tells the latest.
pub(super) fn versions_after() -> String {
    format!(
        "SELECT {VERSION_COLUMNS},
            seq = (SELECT MAX(seq) FROM versions w WHERE w.bucket = v.bucket AND w.key = v.key)
         FROM versions v
         WHERE bucket = $1 AND substr(key, 1, length($3)) = $3
           AND (key > $2 OR (key = $2 AND seq < $4))
         ORDER BY key, seq DESC"
    )
}

/// The row id of upload `$3` of key `$2` in bucket `$1`: where an uploads listing resumes.
pub(super) const UPLOAD_MARKER: &str =
    "SELECT seq FROM uploads WHERE bucket = $1 AND key = $2 AND upload_id = $3";

/// ListMultipartUploads rows: uploads of bucket `$1` under prefix `$3` after key `$2`, or of
/// key `$2` started after row `$4`; oldest first per key. The upload's `seq` follows its
/// columns.
pub(super) fn uploads_after() -> String {
    format!(
        "SELECT {UPLOAD_COLUMNS}, seq FROM uploads
         WHERE bucket = $1 AND substr(key, 1, length($3)) = $3
           AND (key > $2 OR (key = $2 AND seq > $4))
         ORDER BY key, seq"
    )
}

/// Where a versions listing resumes within the marker key, from the marker version's row id
/// (`None` when no version id marker was given or it names no version): versions older than
/// the marker come first; an unknown marker resumes after the whole key.
pub(super) fn versions_resume_seq(marker: Option<i64>) -> i64 {
    marker.unwrap_or(-1)
}

/// Where an uploads listing resumes within the marker key: uploads started after the marker
/// upload; no marker (or an unknown one) resumes after the whole key.
pub(super) fn uploads_resume_seq(marker: Option<i64>) -> i64 {
    marker.unwrap_or(i64::MAX)
}

/// The common prefix a key rolls up into under a delimiter, if any.
pub(super) fn group_of(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    rest.find(d)
        .map(|i| key[..prefix.len() + i + d.len()].to_string())
}

/// A listed row: its key and the id that tells it apart from other rows of that key.
pub(super) trait Listed {
    fn key(&self) -> &str;
    fn id(&self) -> &str;
}

impl Listed for ObjectVersion {
    fn key(&self) -> &str {
        &self.key
    }
    fn id(&self) -> &str {
        &self.version_id
    }
}

impl Listed for VersionEntry {
    fn key(&self) -> &str {
        &self.version.key
    }
    fn id(&self) -> &str {
        &self.version.version_id
    }
}

impl Listed for Upload {
    fn key(&self) -> &str {
        &self.key
    }
    fn id(&self) -> &str {
        &self.upload_id
    }
}

/// One page being filled from rows offered in listing order.
#[derive(Debug)]
pub(super) struct Pager<'q, T> {
    prefix: &'q str,
    delimiter: Option<&'q str>,
    /// The key marker: prefixes it lies in were returned by an earlier page.
    marker: &'q str,
    max: usize,
    entries: Vec<T>,
    common_prefixes: Vec<String>,
    /// The last entry taken, as (key or common prefix, id or empty).
    last: Option<(String, String)>,
    full: bool,
}

impl<'q, T: Listed> Pager<'q, T> {
    fn new(prefix: &'q str, delimiter: Option<&'q str>, marker: &'q str, max: usize) -> Self {
        Pager {
            prefix,
            delimiter,
            marker,
            max,
            entries: Vec::new(),
            common_prefixes: Vec::new(),
            last: None,
            full: false,
        }
    }

    /// Offers the next row. Returns false once the page is full: the row is not taken, the
    /// page is truncated and the store stops reading.
    pub fn offer(&mut self, row: T) -> bool {
        // A common prefix group: one entry, however many keys share it.
        let group = group_of(row.key(), self.prefix, self.delimiter);
        if let Some(prefix) = &group
            && (self.common_prefixes.last() == Some(prefix)
                || self.marker.starts_with(prefix.as_str()))
        {
            return true;
        }
        if self.entries.len() + self.common_prefixes.len() == self.max {
            self.full = true;
            return false;
        }
        match group {
            Some(prefix) => {
                self.last = Some((prefix.clone(), String::new()));
                self.common_prefixes.push(prefix);
            }
            None => {
                self.last = Some((row.key().to_owned(), row.id().to_owned()));
                self.entries.push(row);
            }
        }
        true
    }

    /// The (key, id) markers to continue from, when the page was cut.
    fn next(&self) -> Option<(String, String)> {
        if self.full { self.last.clone() } else { None }
    }
}

/// A ListObjects page: the latest version of each key, delete markers left out.
pub(super) struct ObjectPager<'q>(Pager<'q, ObjectVersion>);

impl<'q> ObjectPager<'q> {
    pub fn new(q: &ListQuery<'q>) -> Self {
        ObjectPager(Pager::new(q.prefix, q.delimiter, q.start_after, q.max_keys))
    }

    /// Offers the latest version of the next key; false once the page is full.
    pub fn offer(&mut self, latest: ObjectVersion) -> bool {
        if latest.delete_marker {
            // The key is deleted: nothing to list, read on.
            return true;
        }
        self.0.offer(latest)
    }

    pub fn finish(self) -> ListPage {
        let Pager {
            entries,
            common_prefixes,
            full,
            ..
        } = self.0;
        // The last key or prefix returned, whichever sorts later.
        let next_marker = if full {
            entries
                .last()
                .map(|o| o.key.clone())
                .max(common_prefixes.last().cloned())
        } else {
            None
        };
        ListPage {
            objects: entries,
            common_prefixes,
            next_marker,
        }
    }
}

/// A ListObjectVersions page.
pub(super) struct VersionPager<'q>(Pager<'q, VersionEntry>);

impl<'q> VersionPager<'q> {
    pub fn new(q: &VersionQuery<'q>) -> Self {
        VersionPager(Pager::new(q.prefix, q.delimiter, q.key_marker, q.max_keys))
    }

    /// Offers the next version; false once the page is full.
    pub fn offer(&mut self, version: ObjectVersion, is_latest: bool) -> bool {
        self.0.offer(VersionEntry { version, is_latest })
    }

    pub fn finish(self) -> VersionPage {
        let next = self.0.next();
        VersionPage {
            versions: self.0.entries,
            common_prefixes: self.0.common_prefixes,
            next,
        }
    }
}

/// A ListMultipartUploads page.
pub(super) struct UploadPager<'q>(Pager<'q, Upload>);

impl<'q> UploadPager<'q> {
    pub fn new(q: &UploadQuery<'q>) -> Self {
        UploadPager(Pager::new(
            q.prefix,
            q.delimiter,
            q.key_marker,
            q.max_uploads,
        ))
    }

    /// Offers the next upload; false once the page is full.
    pub fn offer(&mut self, upload: Upload) -> bool {
        self.0.offer(upload)
    }

    pub fn finish(self) -> UploadPage {
        let next = self.0.next();
        UploadPage {
            uploads: self.0.entries,
            common_prefixes: self.0.common_prefixes,
            next,
        }
    }
}
