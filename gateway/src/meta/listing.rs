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

/// ListObjects rows: the latest version of each key of bucket `$1` in a [`KeyRange`] (keys
/// from `$2` on, except `$3`, and before `$5` when `bounded`) under prefix `$4`, in key order
/// (delete markers included; the pager skips them). One lower bound, so the index seeks to it.
pub(super) fn latest_in(bounded: bool) -> String {
    let until = if bounded { "AND key < $5" } else { "" };
    format!(
        "SELECT {LIST_COLUMNS} FROM versions v
         WHERE bucket = $1 AND key >= $2 AND key <> $3 {until}
           AND substr(key, 1, length($4)) = $4
           AND seq = (SELECT MAX(seq) FROM versions w WHERE w.bucket = v.bucket AND w.key = v.key)
         ORDER BY key"
    )
}

/// The smallest string that sorts (bytewise, as S3 and both stores sort keys) after every
/// string starting with `prefix`; `None` when there is none (an empty prefix, or one of
/// U+10FFFF only). UTF-8 sorts as code points do, so it is `prefix` with its last code point
/// replaced by the next one, trailing U+10FFFF dropped first.
pub(super) fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            // Surrogates are not chars: the one after U+D7FF is U+E000.
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The keys a ListObjects read covers next: from `from` on, except `exclude` (the key a
/// marker or the previous read ended on), before `until` when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyRange {
    pub from: String,
    pub exclude: String,
    pub until: Option<String>,
}

/// How many rows a ListObjects page may read that add nothing to it (delete markers): past
/// that the page is cut short, truncated, and the next one resumes after the last row read.
/// With seeking past common prefixes this bounds the rows a page reads to
/// `2 * max_keys + SKIPPED_ROWS_PER_PAGE`.
pub(super) const SKIPPED_ROWS_PER_PAGE: usize = 1000;

/// Reads a ListObjects page through `read`, which streams the rows of a [`KeyRange`] in key
/// order to the sink it is given until the sink answers [`Offer::Full`] or
/// [`Offer::SkipTo`] (a store holding rows already fetched may go on offering them; the
/// sink passes over those below the seek) and says whether the range ran out. Once a key
/// rolls up into a common prefix, the next read seeks past the prefix instead of reading
/// the keys beneath it.
pub(super) fn read_objects<E>(
    q: &ListQuery<'_>,
    mut read: impl FnMut(&KeyRange, &mut dyn FnMut(ObjectVersion) -> Offer) -> Result<bool, E>,
) -> Result<ListPage, E> {
    let mut page = ObjectPager::new(q);
    let mut range = KeyRange {
        from: q.prefix.max(q.start_after).to_owned(),
        exclude: q.start_after.to_owned(),
        until: successor(q.prefix),
    };
    loop {
        let mut seek: Option<Option<String>> = None;
        let mut last: Option<String> = None;
        let mut stopped = false;
        let ran_out = read(&range, &mut |row: ObjectVersion| {
            super::probe::listed_row();
            if let Some(Some(to)) = &seek
                && row.key < *to
            {
                return Offer::SkipTo(Some(to.clone()));
            }
            if stopped || matches!(seek, Some(None)) {
                return Offer::Full;
            }
            let key = row.key.clone();
            let offer = page.offer(row);
            match &offer {
                Offer::Full => stopped = true,
                Offer::SkipTo(to) => seek = Some(to.clone()),
                Offer::More => {}
            }
            if !stopped {
                last = Some(key);
            }
            offer
        })?;
        if stopped || ran_out || matches!(seek, Some(None)) {
            break;
        }
        // Resume past the last row read, or at the seek when it lies further.
        range = match (seek.flatten(), last) {
            (Some(to), Some(last)) if to > last => KeyRange {
                from: to,
                exclude: last,
                until: range.until,
            },
            (_, Some(last)) => KeyRange {
                from: last.clone(),
                exclude: last,
                until: range.until,
            },
            // Nothing read: the range ran out.
            (_, None) => break,
        };
    }
    Ok(page.finish())
}

/// The row id of version `$3` of key `$2` in bucket `$1`: where a versions listing resumes.
pub(super) const VERSION_MARKER: &str =
    "SELECT seq FROM versions WHERE bucket = $1 AND key = $2 AND version_id = $3";

/// ListObjectVersions rows: every version of bucket `$1` under prefix `$3` after key `$2`, or
/// of key `$2` older than row `$4`; newest first per key; keys from `$5` on (where a seek
/// past a common prefix lands) and, when `bounded`, before `$6`. Column 12 tells the latest.
pub(super) fn versions_after(bounded: bool) -> String {
    let until = if bounded { "AND key < $6" } else { "" };
    format!(
        "SELECT {VERSION_COLUMNS},
            seq = (SELECT MAX(seq) FROM versions w WHERE w.bucket = v.bucket AND w.key = v.key)
         FROM versions v
         WHERE bucket = $1 AND key >= $5 {until} AND substr(key, 1, length($3)) = $3
           AND (key > $2 OR (key = $2 AND seq < $4))
         ORDER BY key, seq DESC"
    )
}

/// The row id of upload `$3` of key `$2` in bucket `$1`: where an uploads listing resumes.
pub(super) const UPLOAD_MARKER: &str =
    "SELECT seq FROM uploads WHERE bucket = $1 AND key = $2 AND upload_id = $3";

/// ListMultipartUploads rows: uploads of bucket `$1` under prefix `$3` after key `$2`, or of
/// key `$2` started after row `$4`; oldest first per key; keys from `$5` on and, when
/// `bounded`, before `$6`. The upload's `seq` follows its columns.
pub(super) fn uploads_after(bounded: bool) -> String {
    let until = if bounded { "AND key < $6" } else { "" };
    format!(
        "SELECT {UPLOAD_COLUMNS}, seq FROM uploads
         WHERE bucket = $1 AND key >= $5 {until} AND substr(key, 1, length($3)) = $3
           AND (key > $2 OR (key = $2 AND seq > $4))
         ORDER BY key, seq"
    )
}

/// Where a versions or uploads listing starts reading: the marker key or the prefix,
/// whichever sorts later (every row before it is left out anyway).
pub(super) fn first_key<'a>(prefix: &'a str, key_marker: &'a str) -> &'a str {
    prefix.max(key_marker)
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

    /// Offers the next row. [`Offer::Full`] once the page is full: the row is not taken,
    /// the page is truncated and the store stops reading. [`Offer::SkipTo`] when the row
    /// rolls up into a common prefix: the rows up to the seek add nothing.
    pub fn offer(&mut self, row: T) -> Offer {
        // A common prefix group: one entry, however many keys share it.
        let group = group_of(row.key(), self.prefix, self.delimiter);
        if let Some(prefix) = &group
            && (self.common_prefixes.last() == Some(prefix)
                || self.marker.starts_with(prefix.as_str()))
        {
            return Offer::SkipTo(successor(prefix));
        }
        if self.entries.len() + self.common_prefixes.len() == self.max {
            self.full = true;
            return Offer::Full;
        }
        match group {
            Some(prefix) => {
                let seek = successor(&prefix);
                self.last = Some((prefix.clone(), String::new()));
                self.common_prefixes.push(prefix);
                Offer::SkipTo(seek)
            }
            None => {
                self.last = Some((row.key().to_owned(), row.id().to_owned()));
                self.entries.push(row);
                Offer::More
            }
        }
    }

    /// The (key, id) markers to continue from, when the page was cut.
    fn next(&self) -> Option<(String, String)> {
        if self.full { self.last.clone() } else { None }
    }
}

/// What a pager says of a row offered to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Offer {
    /// Taken, or passed over: read the next row.
    More,
    /// The row rolled up into a common prefix the page holds: rows before this key (every
    /// row, when `None`) add nothing to the page.
    SkipTo(Option<String>),
    /// The page is full: stop reading.
    Full,
}

/// A ListObjects page: the latest version of each key, delete markers left out.
pub(super) struct ObjectPager<'q> {
    page: Pager<'q, ObjectVersion>,
    /// Rows read that added nothing (delete markers), and the last key read.
    skipped: usize,
    last_read: Option<String>,
    /// Cut short at [`SKIPPED_ROWS_PER_PAGE`].
    cut: bool,
}

impl<'q> ObjectPager<'q> {
    pub fn new(q: &ListQuery<'q>) -> Self {
        ObjectPager {
            page: Pager::new(q.prefix, q.delimiter, q.start_after, q.max_keys),
            skipped: 0,
            last_read: None,
            cut: false,
        }
    }

    /// Offers the latest version of the next key.
    pub fn offer(&mut self, latest: ObjectVersion) -> Offer {
        if latest.delete_marker {
            if self.skipped == SKIPPED_ROWS_PER_PAGE {
                // Enough read for one page: the next resumes after the last row read.
                self.cut = true;
                return Offer::Full;
            }
            // The key is deleted: nothing to list, read on.
            self.skipped += 1;
            self.last_read = Some(latest.key);
            return Offer::More;
        }
        let key = latest.key.clone();
        let offer = self.page.offer(latest);
        if offer != Offer::Full {
            self.last_read = Some(key);
        }
        offer
    }

    pub fn finish(self) -> ListPage {
        let Pager {
            entries,
            common_prefixes,
            full,
            ..
        } = self.page;
        // The last key or prefix returned, whichever sorts later; or, for a page cut short,
        // the last key read (in a prefix returned, if in any).
        let next_marker = if self.cut {
            self.last_read
                .max(entries.last().map(|o| o.key.clone()))
                .max(common_prefixes.last().cloned())
        } else if full {
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

    /// Offers the next version.
    pub fn offer(&mut self, version: ObjectVersion, is_latest: bool) -> Offer {
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

    /// Offers the next upload.
    pub fn offer(&mut self, upload: Upload) -> Offer {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::successor;

    #[test]
    fn the_successor_of_a_prefix_sorts_after_every_key_under_it_and_before_the_rest() {
        assert_eq!(successor("photos/").as_deref(), Some("photos0"));
        assert_eq!(successor("é/").as_deref(), Some("é0"));
        assert_eq!(successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("a\u{10FFFF}\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{10FFFF}"), None);
        assert_eq!(successor(""), None);
        for (prefix, under, after) in [
            ("x--", "x--\u{10FFFF}\u{10FFFF}", "x-."),
            ("日本/", "日本/語", "日本0"),
            ("a\u{7F}", "a\u{7F}\u{10FFFF}", "a\u{80}"),
        ] {
            let next = successor(prefix).unwrap();
            assert!(
                under < next.as_str() && next.as_str() <= after,
                "{prefix:?}"
            );
            assert!(!next.starts_with(prefix));
        }
    }
}
