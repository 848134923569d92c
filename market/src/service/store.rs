//! Where the books are kept: one SQLite connection, or PostgreSQL with every transaction
//! under the market's advisory lock; and the schema both start from.

use std::sync::Mutex;

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

/// One PostgreSQL connection, reconnected when it breaks.
pub(super) struct PgStore {
    config: postgres::Config,
    client: Mutex<Option<postgres::Client>>,
}

impl Drop for PgStore {
    /// The client's drop blocks on its own runtime, which panics on a tokio thread: there
    /// it is dropped on a plain thread (or leaked, should none start).
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(client) = client
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let client = std::mem::ManuallyDrop::new(client);
            let _ = std::thread::Builder::new()
                .name("sublet-market-pg-close".into())
                .spawn(move || drop(std::mem::ManuallyDrop::into_inner(client)));
        }
    }
}

impl PgStore {
    pub(super) fn connect(url: &str) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            Error::BadRequest(format!(
                "PostgreSQL URL does not parse ({e}); expected postgres://user:password@host:5432/dbname"
            ))
        })?;
        // Without one, an unreachable host holds a request for the OS's TCP timeout.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        Ok(Self {
            config,
            client: Mutex::new(None),
        })
    }

    /// Runs `f` in one transaction holding the market lock, off any tokio runtime.
    pub(super) fn tx<T: Send>(&self, f: impl FnOnce(&dyn Db) -> Result<T> + Send) -> Result<T> {
        let work = || {
            let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
            if guard.as_ref().is_none_or(postgres::Client::is_closed) {
                let client = self.config.connect(postgres::NoTls).map_err(|e| {
                    Error::Database(format!(
                        "connecting to PostgreSQL: {}",
                        crate::db::pg_message(&e)
                    ))
                })?;
                *guard = Some(client);
            }
            let Some(client) = guard.as_mut() else {
                return Err(Error::Internal("no PostgreSQL connection".into()));
            };
            let mut tx = client.transaction().map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MARKET_LOCK])
                .map_err(pg_error)?;
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
