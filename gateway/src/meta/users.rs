//! Users and their S3 access keys as the metadata store keeps them, and the SQL both stores
//! run for them (one text, `$n` placeholders; SQLite reads them as `?n`).
//!
//! Rows are written whole (upserts) so the journal can replay them any number of times; the
//! rules about them (an access key is unique, a user with keys or buckets stays) are checked
//! above the stores, in [`crate::node::users`].

use serde::{Deserialize, Serialize};

/// A user: whom buckets belong to and quotas apply to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The S3 owner id.
    pub id: String,
    pub display_name: String,
    /// Bytes the user's buckets may hold (`None`: no limit).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Objects the user's buckets may hold (`None`: no limit).
    #[serde(default)]
    pub max_objects: Option<u64>,
    /// Unix milliseconds.
    pub created: i64,
}

/// What a key may do in one bucket (`*`: every bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGrant {
    pub bucket: String,
    pub read: bool,
    pub write: bool,
}

/// An access key of a user. The secret is sealed with the master key (bound to the access
/// key), so a copy of the database, a snapshot or a journal segment alone does not reveal it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    pub access_key: String,
    pub user: String,
    /// Hex of the secret sealed by [`crate::datapath::codec::MasterKey::seal_record`].
    pub sealed_secret: String,
    pub grants: Vec<KeyGrant>,
    /// A disabled key is refused but kept (and can be enabled again).
    pub active: bool,
    /// Unix milliseconds.
    pub created: i64,
    /// Unix milliseconds of the last secret change (`created` until rotated).
    pub rotated: i64,
}

impl StoredKey {
    /// The `grants` column.
    pub(crate) fn grants_column(&self) -> String {
        serde_json::to_string(&self.grants).unwrap_or_else(|_| "[]".into())
    }
}

/// Parses the `grants` column.
pub(crate) fn grants_from_column(column: &str) -> Result<Vec<KeyGrant>, serde_json::Error> {
    serde_json::from_str(column)
}

pub(crate) const USER_COLUMNS: &str = "id, display_name, max_bytes, max_objects, created";
pub(crate) const KEY_COLUMNS: &str =
    "access_key, user_id, sealed_secret, grants, active, created, rotated";

pub(crate) const PUT_USER: &str =
    "INSERT INTO users (id, display_name, max_bytes, max_objects, created)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name,
         max_bytes = excluded.max_bytes, max_objects = excluded.max_objects";

pub(crate) const PUT_KEY: &str =
    "INSERT INTO access_keys (access_key, user_id, sealed_secret, grants, active, created, rotated)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (access_key) DO UPDATE SET user_id = excluded.user_id,
         sealed_secret = excluded.sealed_secret, grants = excluded.grants,
         active = excluded.active, rotated = excluded.rotated";

/// Stored versions (not delete markers) and their bytes by the owner of their bucket (`''`
/// for buckets without one).
pub(crate) const USER_USAGE: &str =
    "SELECT COALESCE(b.owner, ''), COUNT(*), CAST(COALESCE(SUM(v.size), 0) AS BIGINT)
     FROM versions v JOIN buckets b ON b.name = v.bucket
     WHERE NOT v.delete_marker GROUP BY COALESCE(b.owner, '')";

/// What the users' buckets hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub objects: u64,
    pub bytes: u64,
}
