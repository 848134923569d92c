//! A bounded pool of PostgreSQL connections: at most `size` open at once, idle ones kept for
//! the next caller, broken ones dropped (and reopened on demand), and a caller that finds
//! all of them busy waits at most `wait` before it gets [`PoolError::Exhausted`].

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::tls::{RustlsConnector, SslMode, split_tls};

/// The most connections a pool may be asked to keep (PostgreSQL's default
/// `max_connections` is 100, shared by every client of the server).
pub const MAX_SIZE: usize = 64;

/// Why no connection was handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// The URL does not parse, asks for an unknown `sslmode`, or names a CA file that does
    /// not load; or the pool's size is out of range.
    Config(String),
    /// Connecting (or the TLS handshake) failed: the server's or the socket's message.
    Connect(String),
    /// Every connection stayed busy for as long as a caller may wait.
    Exhausted { size: usize, waited: Duration },
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Config(m) => f.write_str(m),
            PoolError::Connect(m) => write!(f, "connecting to PostgreSQL: {m}"),
            PoolError::Exhausted { size, waited } => write!(
                f,
                "all {size} PostgreSQL connections of the pool stayed busy for {} ms; \
                 a larger pool (or a server answering faster) is needed",
                waited.as_millis()
            ),
        }
    }
}

impl std::error::Error for PoolError {}

/// How long a connection taken from the idle ones may take to answer that it still works.
const CHECK_OUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to one database, at most `size` of them.
pub struct Pool {
    config: postgres::Config,
    /// Set when the URL asks for TLS (`sslmode=require` and stricter).
    tls: Option<RustlsConnector>,
    size: usize,
    wait: Duration,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Default)]
struct State {
    idle: Vec<Client>,
    /// Connections handed out, idle, or being opened.
    open: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: show where, not how.
        f.debug_struct("Pool")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls.is_some())
            .field("size", &self.size)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool for `url` (`postgres://user:password@host:5432/dbname` or the key=value form;
    /// TLS with `sslmode=require|verify-ca|verify-full` and `sslrootcert=`, see
    /// [`crate::tls`]). Nothing is connected yet: the first [`Pool::get`] connects.
    pub fn new(url: &str, size: usize, wait: Duration) -> Result<Self, PoolError> {
        if !(1..=MAX_SIZE).contains(&size) {
            return Err(PoolError::Config(format!(
                "a PostgreSQL pool holds 1 to {MAX_SIZE} connections, not {size}"
            )));
        }
        let (url, ssl) =
            split_tls(url).map_err(|e| PoolError::Config(format!("PostgreSQL URL: {e}")))?;
        let tls = match ssl {
            SslMode::Plain => None,
            SslMode::Verified { root_cert } => Some(
                RustlsConnector::new(root_cert.as_deref())
                    .map_err(|e| PoolError::Config(format!("PostgreSQL URL: {e}")))?,
            ),
        };
        let mut config: postgres::Config = url.parse().map_err(|e| {
            PoolError::Config(format!(
                "PostgreSQL URL does not parse ({e}); expected postgres://user:password@host:5432/dbname"
            ))
        })?;
        // Without one, an unreachable host holds a caller for the OS's TCP timeout.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if tls.is_some() {
            config.ssl_mode(postgres::config::SslMode::Require);
        }
        Ok(Self {
            config,
            tls,
            size,
            wait,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    /// Whether connections are made over TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The most connections open at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Connections open now (handed out or idle).
    pub fn open_connections(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, a new one while fewer than `size` are open, or else the first one
    /// given back within the pool's wait. Must be called off any tokio runtime.
    pub fn get(&self) -> Result<Pooled<'_>, PoolError> {
        let started = Instant::now();
        let deadline = started + self.wait;
        let mut state = self.lock();
        loop {
            if let Some(mut client) = state.idle.pop() {
                // A connection the server ended may not show as closed yet: ask it, outside
                // the lock, before handing it out (as r2d2's test on check-out does).
                drop(state);
                if !client.is_closed() && client.is_valid(CHECK_OUT_TIMEOUT).is_ok() {
                    return Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    });
                }
                drop(client);
                state = self.lock();
                state.open -= 1;
                continue;
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::Exhausted {
                    size: self.size,
                    waited: now - started,
                });
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn connect(&self) -> Result<Client, PoolError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        connected.map_err(|e| PoolError::Connect(crate::message(&e)))
    }

    fn give_back(&self, client: Client) {
        let mut state = self.lock();
        if client.is_closed() {
            state.open -= 1;
            drop(state);
            drop(client);
        } else {
            state.idle.push(client);
            drop(state);
        }
        self.freed.notify_one();
    }
}

impl Drop for Pool {
    /// A client's own drop blocks on the connection's runtime, which panics on a tokio
    /// thread (a server shutting down): there the idle ones are closed on a plain thread
    /// (or leaked, should none start; the server drops them when the process exits).
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.lock().idle);
        if idle.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let idle = std::mem::ManuallyDrop::new(idle);
        let closing = std::thread::Builder::new()
            .name("sublet-pg-close".into())
            .spawn(move || drop(std::mem::ManuallyDrop::into_inner(idle)));
        if let Err(e) = closing {
            tracing::warn!(error = %e, "closing PostgreSQL connections");
        }
    }
}

/// A connection taken from a [`Pool`], given back when dropped (a broken one is closed).
pub struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        // Set from construction until drop.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.pool.give_back(client);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_naming_them() {
        let wait = Duration::from_secs(1);
        let e = Pool::new("postgres://db/m", 0, wait).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a PostgreSQL pool holds 1 to 64 connections, not 0"
        );
        let e = Pool::new("not a url", 4, wait).unwrap_err().to_string();
        assert!(e.starts_with("PostgreSQL URL does not parse"), "{e}");
        let e = Pool::new("postgres://db/m?sslmode=maybe", 4, wait)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=maybe is not known"), "{e}");
        let e = Pool::new(
            "postgres://db/m?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            4,
            wait,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        let pool = Pool::new("postgres://db/m?sslmode=disable", 4, wait).unwrap();
        assert!(!pool.tls());
        assert_eq!(pool.open_connections(), 0);
    }
}
