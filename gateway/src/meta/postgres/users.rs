//! Users and access keys.

use std::collections::BTreeMap;

use postgres::Row;

use super::{PostgresStore, count, pg_err, store_err};
use crate::meta::users::{
    KEY_COLUMNS, PUT_KEY, PUT_USER, USER_COLUMNS, USER_USAGE, grants_from_column,
};
use crate::meta::{Result, StoredKey, Usage, User};

fn size(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

pub(super) fn put_user(s: &PostgresStore, u: &User) -> Result<()> {
    let (max_bytes, max_objects) = (size(u.max_bytes), size(u.max_objects));
    s.run(|c| {
        c.execute(
            PUT_USER,
            &[&u.id, &u.display_name, &max_bytes, &max_objects, &u.created],
        )
        .map_err(pg_err)
    })?;
    Ok(())
}

fn user_from_row(r: &Row) -> Result<User> {
    let limit = |i: usize| -> Result<Option<u64>> {
        Ok(r.try_get::<_, Option<i64>>(i)
            .map_err(pg_err)?
            .map(|v| v.max(0).unsigned_abs()))
    };
    Ok(User {
        id: r.try_get(0).map_err(pg_err)?,
        display_name: r.try_get(1).map_err(pg_err)?,
        max_bytes: limit(2)?,
        max_objects: limit(3)?,
        created: r.try_get(4).map_err(pg_err)?,
    })
}

pub(super) fn users(s: &PostgresStore) -> Result<Vec<User>> {
    s.run(|c| {
        c.query(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"),
            &[],
        )
        .map_err(pg_err)?
        .iter()
        .map(user_from_row)
        .collect()
    })
}

pub(super) fn delete_user(s: &PostgresStore, id: &str) -> Result<bool> {
    let n = s.run(|c| {
        c.execute("DELETE FROM users WHERE id = $1", &[&id])
            .map_err(pg_err)
    })?;
    Ok(n > 0)
}

pub(super) fn put_key(s: &PostgresStore, k: &StoredKey) -> Result<()> {
    let grants = k.grants_column();
    s.run(|c| {
        c.execute(
            PUT_KEY,
            &[
                &k.access_key,
                &k.user,
                &k.sealed_secret,
                &grants,
                &k.active,
                &k.created,
                &k.rotated,
            ],
        )
        .map_err(pg_err)
    })?;
    Ok(())
}

fn key_from_row(r: &Row) -> Result<StoredKey> {
    let grants: &str = r.try_get(3).map_err(pg_err)?;
    Ok(StoredKey {
        access_key: r.try_get(0).map_err(pg_err)?,
        user: r.try_get(1).map_err(pg_err)?,
        sealed_secret: r.try_get(2).map_err(pg_err)?,
        grants: grants_from_column(grants).map_err(store_err)?,
        active: r.try_get(4).map_err(pg_err)?,
        created: r.try_get(5).map_err(pg_err)?,
        rotated: r.try_get(6).map_err(pg_err)?,
    })
}

pub(super) fn keys(s: &PostgresStore) -> Result<Vec<StoredKey>> {
    s.run(|c| {
        c.query(
            &format!("SELECT {KEY_COLUMNS} FROM access_keys ORDER BY access_key"),
            &[],
        )
        .map_err(pg_err)?
        .iter()
        .map(key_from_row)
        .collect()
    })
}

pub(super) fn delete_key(s: &PostgresStore, access_key: &str) -> Result<bool> {
    let n = s.run(|c| {
        c.execute(
            "DELETE FROM access_keys WHERE access_key = $1",
            &[&access_key],
        )
        .map_err(pg_err)
    })?;
    Ok(n > 0)
}

pub(super) fn user_usage(s: &PostgresStore) -> Result<BTreeMap<String, Usage>> {
    s.run_aggregate(|c| {
        c.query(USER_USAGE, &[])
            .map_err(pg_err)?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(pg_err)?,
                    Usage {
                        objects: count(r.try_get(1).map_err(pg_err)?),
                        bytes: count(r.try_get(2).map_err(pg_err)?),
                    },
                ))
            })
            .collect()
    })
}
