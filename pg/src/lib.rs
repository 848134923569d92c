//! sublet's PostgreSQL connections, shared by the gateway's metadata store and the market:
//! libpq-style TLS from the URL ([`tls`]) and a bounded connection pool ([`pool`]).
//!
//! The `postgres` crate is synchronous and drives a tokio runtime of its own: connecting,
//! querying and dropping a client must happen off any tokio runtime (callers hop to a plain
//! thread when one is current).

pub mod pool;
pub mod tls;

pub use pool::{Pool, PoolError, Pooled};

/// The message of a PostgreSQL error, with the server's code, message and detail when it sent
/// one, or else the chain of causes (the `Display` of `postgres::Error` alone is "db error" or
/// "error performing TLS handshake", hiding what names the fix).
pub fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                m.push_str(&format!(": {detail}"));
            }
            m
        }
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                m.push_str(&format!(": {s}"));
                source = s.source();
            }
            m
        }
    }
}
