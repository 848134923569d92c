//! Users and access keys.

use std::collections::BTreeMap;

use rusqlite::{Row, params};

use super::{SqliteStore, json_err, sql, store_err};
use crate::meta::users::{
    KEY_COLUMNS, PUT_KEY, PUT_USER, USER_COLUMNS, USER_USAGE, grants_from_column,
};
use crate::meta::{Result, StoredKey, Usage, User};

fn size(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

pub(super) fn put_user(s: &SqliteStore, u: &User) -> Result<()> {
    s.conn()
        .execute(
            &sql(PUT_USER),
            params![
                u.id,
                u.display_name,
                size(u.max_bytes),
                size(u.max_objects),
                u.created
            ],
        )
        .map_err(store_err)?;
    Ok(())
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        display_name: r.get(1)?,
        max_bytes: r.get::<_, Option<i64>>(2)?.map(|v| v.max(0).unsigned_abs()),
        max_objects: r.get::<_, Option<i64>>(3)?.map(|v| v.max(0).unsigned_abs()),
        created: r.get(4)?,
    })
}

pub(super) fn users(s: &SqliteStore) -> Result<Vec<User>> {
    let conn = s.conn();
    let mut stmt = conn
        .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
        .map_err(store_err)?;
    let rows = stmt.query_map([], user_from_row).map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}

pub(super) fn delete_user(s: &SqliteStore, id: &str) -> Result<bool> {
    let n = s
        .conn()
        .execute("DELETE FROM users WHERE id = ?1", params![id])
        .map_err(store_err)?;
    Ok(n > 0)
}

pub(super) fn put_key(s: &SqliteStore, k: &StoredKey) -> Result<()> {
    s.conn()
        .execute(
            &sql(PUT_KEY),
            params![
                k.access_key,
                k.user,
                k.sealed_secret,
                k.grants_column(),
                k.active,
                k.created,
                k.rotated
            ],
        )
        .map_err(store_err)?;
    Ok(())
}

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<StoredKey> {
    let grants: String = r.get(3)?;
    Ok(StoredKey {
        access_key: r.get(0)?,
        user: r.get(1)?,
        sealed_secret: r.get(2)?,
        grants: grants_from_column(&grants).map_err(|e| json_err(3, e))?,
        active: r.get(4)?,
        created: r.get(5)?,
        rotated: r.get(6)?,
    })
}

pub(super) fn keys(s: &SqliteStore) -> Result<Vec<StoredKey>> {
    let conn = s.conn();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {KEY_COLUMNS} FROM access_keys ORDER BY access_key"
        ))
        .map_err(store_err)?;
    let rows = stmt.query_map([], key_from_row).map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}

pub(super) fn delete_key(s: &SqliteStore, access_key: &str) -> Result<bool> {
    let n = s
        .conn()
        .execute(
            "DELETE FROM access_keys WHERE access_key = ?1",
            params![access_key],
        )
        .map_err(store_err)?;
    Ok(n > 0)
}

pub(super) fn user_usage(s: &SqliteStore) -> Result<BTreeMap<String, Usage>> {
    let conn = s.reader();
    let mut stmt = conn.prepare(USER_USAGE).map_err(store_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Usage {
                    objects: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                    bytes: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                },
            ))
        })
        .map_err(store_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(store_err)
}
