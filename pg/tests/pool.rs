//! The pool on a real PostgreSQL (skipped without one, see `e2e/src/postgres.rs`): at most
//! its size open, callers beyond it wait and then get a clear error, broken connections
//! replaced, and TLS only to a server whose certificate chains to the CA named.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sublet_pg::{Pool, PoolError};

#[path = "../../e2e/src/postgres.rs"]
mod server;

#[test]
fn callers_beyond_the_pool_wait_then_hear_it_is_exhausted() {
    let Some(url) = server::database() else {
        return;
    };
    let pool = Pool::new(&url, 2, Duration::from_millis(300)).unwrap();
    let mut a = pool.get().unwrap();
    let b = pool.get().unwrap();
    assert_eq!(pool.open_connections(), 2);
    let started = Instant::now();
    let e = pool.get().map(|_| ()).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(e, PoolError::Exhausted { size: 2, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("all 2 PostgreSQL connections of the pool stayed busy for"),
        "{e}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // A connection given back while a caller waits is handed to it, not a new one opened.
    let waiter = std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            let mut c = pool.get().map_err(|e| e.to_string())?;
            c.query_one("SELECT 1", &[])
                .map(|r| r.get::<_, i32>(0))
                .map_err(|e| e.to_string())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(b);
        waiting.join().unwrap()
    });
    assert_eq!(waiter, Ok(1));
    assert_eq!(pool.open_connections(), 2);
    // The idle one is reused: still two open.
    let row = a.query_one("SELECT 2", &[]).unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[test]
fn a_broken_connection_is_replaced() {
    let Some(url) = server::database() else {
        return;
    };
    let pool = Pool::new(&url, 1, Duration::from_secs(2)).unwrap();
    for round in 0..5 {
        let mut c = pool.get().unwrap();
        assert_eq!(c.query_one("SELECT 3", &[]).unwrap().get::<_, i32>(0), 3);
        // The server ends this very session and the connection goes back to the pool at
        // once, before its client may have noticed: the next caller still gets a working one.
        let e = c
            .batch_execute("SELECT pg_terminate_backend(pg_backend_pid())")
            .unwrap_err();
        assert!(!e.to_string().is_empty(), "round {round}");
    }
    let mut c = pool.get().unwrap();
    assert_eq!(c.query_one("SELECT 3", &[]).unwrap().get::<_, i32>(0), 3);
    assert_eq!(pool.open_connections(), 1);
}

#[test]
fn the_pool_runs_queries_side_by_side() {
    let Some(url) = server::database() else {
        return;
    };
    let pool = Pool::new(&url, 4, Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    std::thread::scope(|s| {
        let sleepers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut c = pool.get().unwrap();
                    c.batch_execute("SELECT pg_sleep(0.3)").unwrap();
                })
            })
            .collect();
        for t in sleepers {
            t.join().unwrap();
        }
    });
    let took = started.elapsed();
    // Eight 300 ms queries on four connections: two rounds, not eight.
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    assert_eq!(pool.open_connections(), 4);
}

#[test]
fn tls_only_to_a_server_the_named_ca_vouches_for() {
    let Some((url, ca)) = server::tls_server_database() else {
        return;
    };
    let wait = Duration::from_secs(5);
    // The server takes no plain TCP; without sslmode the pool does not try TLS.
    let e = Pool::new(&url, 1, wait)
        .unwrap()
        .get()
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&e, PoolError::Connect(m) if m.contains("no encryption")),
        "{e}"
    );
    // Another CA (a private one of its own, not the server's) is refused in the handshake.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(&other, other_ca.pem()).unwrap();
    let e = Pool::new(
        &format!("{url}?sslmode=verify-full&sslrootcert={}", other.display()),
        1,
        wait,
    )
    .unwrap()
    .get()
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(&e, PoolError::Connect(m) if m.contains("TLS handshake") && m.contains("certificate")),
        "{e}"
    );
    // Its own CA: connected over TLS.
    let pool = Pool::new(
        &format!("{url}?sslmode=verify-ca&sslrootcert={}", ca.display()),
        1,
        wait,
    )
    .unwrap();
    assert!(pool.tls());
    let mut c = pool.get().unwrap();
    let ssl: bool = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl);
}
