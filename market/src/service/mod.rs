//! [`Market`]: the database (SQLite, or PostgreSQL), the policy, the payment rail and the
//! clock, with one method per thing a party can do. Each method is one transaction.
//!
//! Transactions that write never overlap: on SQLite one connection behind a mutex runs
//! every transaction in IMMEDIATE mode; on PostgreSQL each takes one transaction-scoped
//! advisory lock first, so markets sharing a database (replicas) also run them one at a
//! time, and every statement after the lock sees all that earlier transactions committed
//! (READ COMMITTED). That keeps the ledger's read-check-write steps (no overdraft, no
//! double spend) as safe as on SQLite, and needs no retries: a rail payout inside a
//! transaction runs once. Read-only transactions ([`Market::read`]) take the same lock
//! shared, so on PostgreSQL they run side by side on the pool's connections and still see
//! no write half done.
//!
//! `store` holds the database connections; the methods are grouped by what a party does:
//! `parties` (signing, registration, attestations), `accounts` (balances, deposits,
//! withdrawals), `trade` (offers, contracts, receipts) and `reputation` (ratings, feedback,
//! disputes).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior};
use sublet_market_api::Result;

use crate::Policy;
use crate::db::{Db, sqlite_error};
use crate::metrics::Metrics;
use crate::rail::PaymentRail;

mod accounts;
mod evidence;
mod parties;
mod reputation;
mod store;
mod support;
mod trade;

pub use accounts::{Balances, ContractEscrow, OperationResult};
pub use parties::PartyView;
pub use trade::Termination;

pub use store::PgOptions;
use store::{PgStore, Store, init_schema};

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub struct Market {
    db: Store,
    policy: Policy,
    rail: Option<Arc<dyn PaymentRail>>,
    clock: Clock,
    metrics: Metrics,
    /// Sends the codes of the market's own contact checks; none: the market checks none.
    delivery: Option<Arc<dyn crate::contacts::Delivery>>,
}

impl Market {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, policy: Policy, rail: Option<Arc<dyn PaymentRail>>) -> Result<Self> {
        let conn = Connection::open(path).map_err(sqlite_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_error)?;
        Self::with_connection(conn, policy, rail)
    }

    pub fn in_memory(policy: Policy, rail: Option<Arc<dyn PaymentRail>>) -> Result<Self> {
        Self::with_connection(
            Connection::open_in_memory().map_err(sqlite_error)?,
            policy,
            rail,
        )
    }

    fn with_connection(
        conn: Connection,
        policy: Policy,
        rail: Option<Arc<dyn PaymentRail>>,
    ) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite_error)?;
        init_schema(&conn)?;
        Self::with_store(Store::Sqlite(Mutex::new(conn)), policy, rail)
    }

    /// Connects to PostgreSQL at `url` (`postgres://user:password@host:5432/dbname` or the
    /// key=value form; TLS with `sslmode=` and `sslrootcert=`, as libpq reads them) with the
    /// default pool, and creates the tables if needed. Markets may share one database.
    pub fn open_postgres(
        url: &str,
        policy: Policy,
        rail: Option<Arc<dyn PaymentRail>>,
    ) -> Result<Self> {
        Self::open_postgres_with(url, PgOptions::default(), policy, rail)
    }

    /// [`Market::open_postgres`] with a pool of `options.pool_size` connections.
    pub fn open_postgres_with(
        url: &str,
        options: PgOptions,
        policy: Policy,
        rail: Option<Arc<dyn PaymentRail>>,
    ) -> Result<Self> {
        let store = PgStore::connect(url, options)?;
        store.tx(false, init_schema)?;
        Self::with_store(Store::Postgres(Box::new(store)), policy, rail)
    }

    fn with_store(db: Store, policy: Policy, rail: Option<Arc<dyn PaymentRail>>) -> Result<Self> {
        Ok(Self {
            db,
            policy,
            rail,
            clock: Arc::new(sublet_market_api::unix_now),
            metrics: Metrics::new()?,
            delivery: None,
        })
    }

    /// Replaces the clock (unix seconds); tests use it to pass vetting periods.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Lets the market verify contacts itself, sending codes through `delivery`.
    pub fn with_delivery(mut self, delivery: Arc<dyn crate::contacts::Delivery>) -> Self {
        self.delivery = Some(delivery);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Which database the market keeps its books in.
    pub fn backend(&self) -> crate::db::Backend {
        match self.db {
            Store::Sqlite(_) => crate::db::Backend::Sqlite,
            Store::Postgres(_) => crate::db::Backend::Postgres,
        }
    }

    /// Whether the books are reached over TLS (PostgreSQL with `sslmode=require` or
    /// stricter); SQLite is a local file.
    pub fn database_tls(&self) -> bool {
        match &self.db {
            Store::Sqlite(_) => false,
            Store::Postgres(pg) => pg.tls(),
        }
    }

    /// PostgreSQL connections open now (0 on SQLite).
    pub fn database_connections(&self) -> usize {
        match &self.db {
            Store::Sqlite(_) => 0,
            Store::Postgres(pg) => pg.open_connections(),
        }
    }

    /// Runs `f` in one transaction (see the module comment), committed only if `f` succeeds.
    pub fn tx<T: Send>(&self, f: impl FnOnce(&dyn Db) -> Result<T> + Send) -> Result<T> {
        self.run(false, f)
    }

    /// Runs `f`, which only reads, in one transaction: on PostgreSQL readers run side by
    /// side on the pool's connections (any write `f` tried would be refused).
    pub fn read<T: Send>(&self, f: impl FnOnce(&dyn Db) -> Result<T> + Send) -> Result<T> {
        self.run(true, f)
    }

    fn run<T: Send>(
        &self,
        read_only: bool,
        f: impl FnOnce(&dyn Db) -> Result<T> + Send,
    ) -> Result<T> {
        match &self.db {
            Store::Sqlite(db) => {
                let mut conn = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sqlite_error)?;
                let out = f(&*tx as &Connection)?;
                tx.commit().map_err(sqlite_error)?;
                Ok(out)
            }
            Store::Postgres(pg) => pg.tx(read_only, f),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, with totals freshly read from the database.
    pub fn render_metrics(&self) -> Result<String> {
        let summary = self.ledger_summary()?;
        self.read(|c| self.metrics.observe(c, &summary))?;
        Ok(self.metrics.render())
    }
}
