//! Where the books are kept: one SQLite connection, or a pool of PostgreSQL connections
//! with every transaction under the market's advisory lock (shared by read-only ones); and
//! the schema both start from.

use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;
use sublet_market_api::{Error, Result};

use crate::db::{Db, PgTx, pg_error};
use crate::{attestations, contracts, disputes, identity, ledger, offers, receipts};

/// The key of the advisory lock every PostgreSQL transaction of the market holds.
const PG_MARKET_LOCK: i64 = 0x7375_626c_6574_6d6b; // "subletmk"

pub(super) enum Store {
    Sqlite(Mutex<Connection>),
    Postgres(Box<PgStore>),
}

/// How the market reaches PostgreSQL: how many connections it keeps and how long a request
/// waits for one, and then for the market's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// The most connections open at once (1 to [`sublet_pg::pool::MAX_SIZE`]).
    pub pool_size: usize,
    /// How long a transaction waits for a free connection, and then for the market's lock,
    /// before it is refused as unavailable.
    pub wait: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            wait: Duration::from_secs(10),
        }
    }
}

/// PostgreSQL behind a bounded pool ([`sublet_pg::Pool`]; TLS as the URL asks).
pub(super) struct PgStore {
    pool: sublet_pg::Pool,
    /// `SET LOCAL lock_timeout` of every transaction: the pool's wait, as PostgreSQL text.
    lock_timeout: String,
}

impl PgStore {
    pub(super) fn connect(url: &str, options: PgOptions) -> Result<Self> {
        let pool = sublet_pg::Pool::new(url, options.pool_size, options.wait)
            .map_err(|e| pool_error(&e))?;
        Ok(Self {
            pool,
            lock_timeout: format!("{}ms", options.wait.as_millis().max(1)),
        })
    }

    /// Whether the connections are made over TLS.
    pub(super) fn tls(&self) -> bool {
        self.pool.tls()
    }

    /// Connections open now.
    pub(super) fn open_connections(&self) -> usize {
        self.pool.open_connections()
    }

    /// Runs `f` in one transaction holding the market lock, off any tokio runtime: a
    /// writing one holds it alone, a `read_only` one shares it with other readers (and
    /// PostgreSQL refuses any write it tries).
    pub(super) fn tx<T: Send>(
        &self,
        read_only: bool,
        f: impl FnOnce(&dyn Db) -> Result<T> + Send,
    ) -> Result<T> {
        let work = || {
            let mut client = self.pool.get().map_err(|e| pool_error(&e))?;
            let mut tx = client
                .build_transaction()
                .read_only(read_only)
                .start()
                .map_err(pg_error)?;
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{}'", self.lock_timeout))
                .map_err(pg_error)?;
            let lock = if read_only {
                "SELECT pg_advisory_xact_lock_shared($1)"
            } else {
                "SELECT pg_advisory_xact_lock($1)"
            };
            tx.execute(lock, &[&PG_MARKET_LOCK]).map_err(|e| {
                if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                    Error::Unavailable(format!(
                        "the market's lock in PostgreSQL stayed taken for {}; try again",
                        self.lock_timeout
                    ))
                } else {
                    pg_error(e)
                }
            })?;
            let db = PgTx::new(tx);
            let out = f(&db)?;
            db.commit()?;
            Ok(out)
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return work();
        }
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("sublet-market-pg".into())
                .spawn_scoped(s, work)
                .map_err(|e| Error::Internal(format!("starting a database thread: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("database work panicked".into())))
        })
    }
}

/// What a request sees of a pool that gave no connection.
fn pool_error(e: &sublet_pg::PoolError) -> Error {
    match e {
        sublet_pg::PoolError::Config(m) => Error::BadRequest(m.clone()),
        sublet_pg::PoolError::Connect(_) => Error::Database(e.to_string()),
        sublet_pg::PoolError::Exhausted { .. } => Error::Unavailable(e.to_string()),
    }
}

/// Creates the tables if needed and brings older ones up to date.
pub(super) fn init_schema(db: &dyn Db) -> Result<()> {
    for schema in [
        ledger::SCHEMA,
        identity::SCHEMA,
        offers::SCHEMA,
        contracts::SCHEMA,
        receipts::SCHEMA,
        disputes::SCHEMA,
        crate::quality::SCHEMA,
        attestations::SCHEMA,
        crate::rail::treasurer::SCHEMA,
        crate::reviews::SCHEMA,
        crate::tickets::SCHEMA,
        crate::contacts::SCHEMA,
    ] {
        db.schema(schema)?;
    }
    offers::migrate(db)?;
    receipts::migrate(db)?;
    contracts::migrate(db)
}
