//! The small SQL facade the market's modules write their queries against, so the same
//! statements run on SQLite (the default) and on PostgreSQL.
//!
//! SQL is written once, in the dialect both accept: `?N` placeholders (rewritten to `$N`
//! for PostgreSQL outside string literals), `INSERT ... ON CONFLICT`, `COALESCE`, and
//! `CAST(SUM(..) AS BIGINT)` where a sum is read (PostgreSQL sums `BIGINT` into `NUMERIC`).
//! Booleans are stored and compared as integers; a PostgreSQL `boolean` result (`EXISTS`,
//! a comparison) reads as 0 or 1. Schemas are written for SQLite and translated by
//! [`pg_schema`] (`INTEGER` becomes `BIGINT`, `INTEGER PRIMARY KEY` an identity column).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use sublet_market_api::{Error, Result};

/// One SQL value, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    I64(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::I64(_) => "an integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

/// A Rust value that can be bound to a placeholder.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::I64(i64::from(*self))
            }
        }
    )*};
}
int_to_value!(i64, i32, i16, i8, u32, u16, u8, bool);

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// Placeholder values for [`Db`] calls: `params![a, b]` binds `?1` to `a` and `?2` to `b`.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::db::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::db::ToValue),+] as &[&dyn $crate::db::ToValue]
    };
}

/// What the query methods take as placeholder values: `params![a, b]` or an array of one type.
pub trait IntoParams {
    fn into_values(self) -> Vec<Value>;
}

impl IntoParams for &[&dyn ToValue] {
    fn into_values(self) -> Vec<Value> {
        self.iter().map(|p| p.to_value()).collect()
    }
}

impl<T: ToValue, const N: usize> IntoParams for [T; N] {
    fn into_values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}

/// A Rust value a column can be read into.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
    const EXPECTED: &'static str;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::I64(i) => Some(*i),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "an integer";
}

macro_rules! narrow_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::I64(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
            const EXPECTED: &'static str = concat!("an integer that fits ", stringify!($t));
        }
    )*};
}
narrow_from_value!(i32, u32, u16, u64);

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::I64(i) => Some(*i != 0),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "a boolean (integer)";
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "text";
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "a blob";
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
    const EXPECTED: &'static str = T::EXPECTED;
}

/// One result row: its values with the column names, for error messages.
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    /// The value of column `idx` as a `T`, or an error naming the column and what it held.
    pub fn get<T: FromValue>(&self, idx: usize) -> Result<T> {
        let name = self.columns.get(idx).map_or("?", String::as_str);
        let v = self.values.get(idx).ok_or_else(|| {
            Error::Internal(format!(
                "query result has {} columns, column {idx} was read",
                self.values.len()
            ))
        })?;
        T::from_value(v).ok_or_else(|| {
            Error::Internal(format!(
                "column {idx} ({name}) holds {}, expected {}",
                v.kind(),
                T::EXPECTED
            ))
        })
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Which database a [`Db`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A database transaction the market's modules run their statements in.
pub trait Db {
    fn backend(&self) -> Backend;
    /// Runs one statement; returns the number of rows it changed.
    fn execute_values(&self, sql: &str, params: Vec<Value>) -> Result<usize>;
    /// Runs one query; returns all its rows.
    fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>>;
    /// Runs schema statements (written for SQLite; translated by [`pg_schema`] on PostgreSQL).
    fn schema(&self, sql: &str) -> Result<()>;
}

impl dyn Db + '_ {
    /// Runs one statement; returns the number of rows it changed.
    pub fn execute(&self, sql: &str, params: impl IntoParams) -> Result<usize> {
        self.execute_values(sql, params.into_values())
    }

    /// Runs one query; returns all its rows.
    pub fn query(&self, sql: &str, params: impl IntoParams) -> Result<Vec<Row>> {
        self.query_values(sql, params.into_values())
    }

    /// The first row mapped by `f`, or `None` when there is none.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: impl IntoParams,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.query(sql, params)?.first().map(f).transpose()
    }

    /// The first row mapped by `f`; a query that returns no row is an internal error.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl IntoParams,
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, f)?.ok_or_else(|| {
            Error::Internal(format!(
                "query returned no row: {}",
                sql.split_whitespace().collect::<Vec<_>>().join(" ")
            ))
        })
    }

    /// Every row mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: impl IntoParams,
        f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// Whether `table` has a column named `column` (for migrations).
    pub fn has_column(&self, table: &str, column: &str) -> Result<bool> {
        let sql = match self.backend() {
            Backend::Sqlite => "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = ?1 AND column_name = ?2"
            }
        };
        Ok(self.query_row(sql, params![table, column], |r| r.get::<i64>(0))? > 0)
    }
}

// ---- SQLite ----

impl rusqlite::types::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::I64(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl Db for rusqlite::Connection {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute_values(&self, sql: &str, params: Vec<Value>) -> Result<usize> {
        let mut stmt = self.prepare_cached(sql).map_err(sqlite_error)?;
        stmt.execute(rusqlite::params_from_iter(params))
            .map_err(sqlite_error)
    }

    fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.prepare_cached(sql).map_err(sqlite_error)?;
        let columns: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(sqlite_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                values.push(match row.get_ref(i).map_err(sqlite_error)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::I64(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                    ValueRef::Real(_) => {
                        return Err(Error::Internal(format!(
                            "column {i} ({}) holds a floating-point number; the market stores only integers",
                            columns[i]
                        )));
                    }
                });
            }
            out.push(Row {
                columns: columns.clone(),
                values,
            });
        }
        Ok(out)
    }

    fn schema(&self, sql: &str) -> Result<()> {
        self.execute_batch(sql).map_err(sqlite_error)
    }
}

// ---- PostgreSQL ----

/// Rewrites `?N` placeholders to PostgreSQL's `$N`, leaving string literals, quoted
/// identifiers and comments alone.
pub fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    if q == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    if q == '\n' {
                        break;
                    }
                }
            }
            '?' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

/// Translates a schema written for SQLite to PostgreSQL: `INTEGER PRIMARY KEY` (a rowid
/// alias) becomes a `BIGINT` identity column, other `INTEGER`s `BIGINT`, `BLOB` `BYTEA`.
pub fn pg_schema(sql: &str) -> String {
    sql.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
    .replace("INTEGER", "BIGINT")
    .replace("BLOB", "BYTEA")
}

/// A SQLite error as the market's [`Error::Database`].
pub fn sqlite_error(e: rusqlite::Error) -> Error {
    Error::Database(e.to_string())
}

/// A PostgreSQL error as the market's [`Error::Database`], with the server's message
/// ([`pg_message`]).
pub fn pg_error(e: postgres::Error) -> Error {
    Error::Database(pg_message(&e))
}

/// The message of a PostgreSQL error, with the server's code, message and detail when it
/// sent one (the `Display` of `postgres::Error` is only "db error").
pub fn pg_message(e: &postgres::Error) -> String {
    sublet_pg::message(e)
}

/// A value bound to a PostgreSQL parameter, converted to the parameter's inferred type.
#[derive(Debug)]
struct PgValue(Value);

impl postgres::types::ToSql for PgValue {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use postgres::types::{IsNull, Type};
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::I64(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => Err(format!("an integer was bound to a parameter of type {ty}").into()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                _ => Err(format!("text was bound to a parameter of type {ty}").into()),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(format!("a blob was bound to a parameter of type {ty}").into()),
            },
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_row(row: &postgres::Row, columns: &Arc<[String]>) -> Result<Row> {
    use postgres::types::Type;
    let mut values = Vec::with_capacity(columns.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(pg_error)?
                .map(Value::I64),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(pg_error)?
                .map(|v| Value::I64(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(pg_error)?
                .map(|v| Value::I64(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(pg_error)?
                .map(|v| Value::I64(v.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
                .try_get::<_, Option<String>>(i)
                .map_err(pg_error)?
                .map(Value::Text),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(pg_error)?
                .map(Value::Blob),
            ref ty => {
                return Err(Error::Internal(format!(
                    "column {i} ({}) has PostgreSQL type {ty}, which the market does not read \
                     (cast sums and other numerics to BIGINT)",
                    col.name()
                )));
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row {
        columns: columns.clone(),
        values,
    })
}

/// A PostgreSQL transaction as a [`Db`].
pub struct PgTx<'a> {
    tx: RefCell<postgres::Transaction<'a>>,
}

impl<'a> PgTx<'a> {
    pub fn new(tx: postgres::Transaction<'a>) -> Self {
        Self {
            tx: RefCell::new(tx),
        }
    }

    pub fn commit(self) -> Result<()> {
        self.tx.into_inner().commit().map_err(pg_error)
    }

    fn bind(params: Vec<Value>) -> Vec<PgValue> {
        params.into_iter().map(PgValue).collect()
    }

    fn with<T>(&self, f: impl FnOnce(&mut postgres::Transaction<'a>) -> Result<T>) -> Result<T> {
        let mut tx = self.tx.try_borrow_mut().map_err(|_| {
            Error::Internal("a PostgreSQL statement ran while another was running".into())
        })?;
        f(&mut tx)
    }
}

impl Db for PgTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute_values(&self, sql: &str, params: Vec<Value>) -> Result<usize> {
        let values = Self::bind(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let n = self.with(|tx| {
            tx.execute(pg_placeholders(sql).as_str(), &refs)
                .map_err(pg_error)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        let values = Self::bind(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let rows = self.with(|tx| {
            tx.query(pg_placeholders(sql).as_str(), &refs)
                .map_err(pg_error)
        })?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let columns: Arc<[String]> = first
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        rows.iter().map(|r| pg_row(r, &columns)).collect()
    }

    fn schema(&self, sql: &str) -> Result<()> {
        self.with(|tx| tx.batch_execute(&pg_schema(sql)).map_err(pg_error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_literals() {
        assert_eq!(
            pg_placeholders(
                "SELECT '?1', \"a?2\", x FROM t WHERE a = ?1 AND b = ?12 -- ?3\n AND c = ?"
            ),
            "SELECT '?1', \"a?2\", x FROM t WHERE a = $1 AND b = $12 -- ?3\n AND c = ?"
        );
    }

    #[test]
    fn schemas_translate_integer_columns() {
        assert_eq!(
            pg_schema("CREATE TABLE e (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, b BLOB)"),
            "CREATE TABLE e (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
             n BIGINT NOT NULL, b BYTEA)"
        );
    }

    #[test]
    fn sqlite_rows_read_typed_and_name_bad_columns() -> Result<()> {
        let conn = rusqlite::Connection::open_in_memory().map_err(sqlite_error)?;
        let db: &dyn Db = &conn;
        db.schema("CREATE TABLE t (a INTEGER, b TEXT)")?;
        assert_eq!(
            db.execute("INSERT INTO t VALUES (?1, ?2)", params![7, "x"])?,
            1
        );
        assert_eq!(
            db.execute("INSERT INTO t VALUES (?1, ?2)", params![None::<i64>, "y"])?,
            1
        );
        let rows = db.query_map("SELECT a, b FROM t ORDER BY b", params![], |r| {
            Ok((r.get::<Option<i64>>(0)?, r.get::<String>(1)?))
        })?;
        assert_eq!(rows, vec![(Some(7), "x".into()), (None, "y".into())]);
        let bad = db.query_row("SELECT b FROM t", params![], |r| r.get::<i64>(0));
        assert!(
            matches!(&bad, Err(Error::Internal(m)) if m.contains("(b) holds text, expected an integer")),
            "{bad:?}"
        );
        assert!(
            db.query_opt("SELECT a FROM t WHERE b = 'z'", params![], |r| r
                .get::<i64>(0))?
                .is_none()
        );
        assert!(db.has_column("t", "a")? && !db.has_column("t", "c")?);
        Ok(())
    }
}
