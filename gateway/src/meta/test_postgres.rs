//! A throwaway PostgreSQL server for the store tests: the one the e2e tests use
//! (`e2e/src/postgres.rs`, included here).

#[path = "../../../e2e/src/postgres.rs"]
mod server;

pub use server::{database, tls_server_database as tls_database};

use super::PostgresStore;

/// A store on a fresh database.
pub fn store() -> Option<PostgresStore> {
    #[allow(clippy::unwrap_used)]
    database().map(|url| PostgresStore::open(&url).unwrap())
}
