//! The market's books on PostgreSQL: two markets sharing one database (as two replicas
//! would) race prepayments for the same credits and never overspend; a market opened
//! later sees the same books; bad URLs are refused naming the problem; TLS only to a
//! server the named CA vouches for; reads side by side through the pool, and a busy pool
//! or lock answered as unavailable within the wait.

use std::sync::Arc;

use sublet_market::contracts::NewContract;
use sublet_market::db::Backend;
use sublet_market::identity::{Party, Role, Signer, Verified};
use sublet_market::offers::NewOffer;
use sublet_market::rail::ManualRail;
use sublet_market::{Error, Market, Policy, Result};

#[path = "../../e2e/src/postgres.rs"]
mod pg;

const GIB: u64 = 1 << 30;
const CREDIT: i64 = 1_000_000;

fn open(url: &str) -> Result<Market> {
    Market::open_postgres(url, Policy::default(), Some(Arc::new(ManualRail)))
}

fn party(m: &Market, role: Role, name: &str) -> Result<Party> {
    let (s, _) = Signer::generate()?;
    let (challenge, _) = m.challenge(&s.public_key_hex())?;
    m.register(&s.registration(&challenge, role, name))
}

fn verified(p: &Party) -> Verified {
    Verified {
        party: p.clone(),
        canonical: "postgres test".into(),
        signature: "-".into(),
    }
}

#[test]
fn two_markets_sharing_a_database_never_overspend() -> Result<()> {
    let Some(url) = pg::database() else {
        return Ok(());
    };
    let a = Arc::new(open(&url)?);
    let b = Arc::new(open(&url)?);
    assert_eq!(a.backend(), Backend::Postgres);
    let provider = party(&a, Role::Provider, "p")?;
    let demander = party(&b, Role::Demander, "d")?;
    let offer = a.publish_offer(
        &provider,
        &NewOffer {
            capacity_bytes: 10 * GIB,
            price_per_gib_month: 1,
            egress_price_per_gib: 0,
            region: "eu".into(),
            min_term_days: 0,
            promised_uptime_bps: 9000,
            endpoint: String::new(),
        },
    )?;
    let new = NewContract {
        offer_id: offer.id.clone(),
        reserved_bytes: GIB,
        term_days: 1,
    };
    // Proposed through one market, accepted through the other.
    let ct = b.propose_contract(&verified(&demander), b"{}", &new)?;
    a.accept_contract(&verified(&provider), b"{}", &ct.id)?;
    a.deposit(&demander, "dep", 10 * CREDIT, "ref", None)?;

    // 30 prepayments of one credit race for ten through both markets.
    let threads: Vec<_> = (0..30)
        .map(|i| {
            let m = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (d, id) = (demander.clone(), ct.id.clone());
            std::thread::spawn(move || m.prepay(&d, &id, &format!("race-{i}"), CREDIT))
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in threads {
        match t
            .join()
            .map_err(|_| Error::Internal("prepay thread panicked".into()))?
        {
            Ok(_) => ok += 1,
            Err(Error::InsufficientFunds { .. }) => refused += 1,
            Err(e) => return Err(e),
        }
    }
    assert_eq!((ok, refused), (10, 20));
    for m in [&a, &b] {
        let books = m.ledger_summary()?;
        assert!(books.balanced, "{books:?}");
        assert_eq!((books.available, books.escrow), (0, 10 * CREDIT));
        assert_eq!(m.contract(&demander, &ct.id)?.escrow, 10 * CREDIT);
    }

    // A market opened later on the same database sees the same books.
    drop((a, b));
    let c = open(&url)?;
    assert_eq!(c.contract(&demander, &ct.id)?.escrow, 10 * CREDIT);
    assert_eq!(c.balances(&demander, &demander.id)?.available, 0);
    assert_eq!(c.search_offers(&Default::default())?.len(), 1);
    Ok(())
}

#[test]
fn bad_postgres_urls_are_refused_naming_the_problem() {
    match open("this is not a url") {
        Err(Error::BadRequest(m)) => assert!(m.contains("PostgreSQL URL does not parse"), "{m}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a garbage URL opened a market"),
    }
    // Nothing listens on port 1.
    match open("postgres://sublet@127.0.0.1:1/market") {
        Err(Error::Database(m)) => assert!(m.contains("connecting to PostgreSQL"), "{m}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("an unreachable server opened a market"),
    }
}

#[test]
fn the_books_are_reached_over_tls_only_with_the_servers_ca() -> Result<()> {
    let Some((url, ca)) = pg::tls_server_database() else {
        return Ok(());
    };
    // The server takes only TLS: a URL without sslmode is refused by it, naming why.
    match open(&url) {
        Err(Error::Database(m)) => assert!(
            m.contains("connecting to PostgreSQL") && m.contains("no encryption"),
            "{m}"
        ),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a plain connection to a TLS-only server opened a market"),
    }
    // TLS to it with the system's roots, or a CA of another server, fails the handshake.
    let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
    let other = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| Error::Internal(e.to_string()))?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().map_err(|e| Error::Internal(e.to_string()))?;
    let other_ca = params
        .self_signed(&key)
        .map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&other, other_ca.pem()).map_err(|e| Error::Internal(e.to_string()))?;
    for wrong in [
        format!("{url}?sslmode=require"),
        format!("{url}?sslmode=verify-full&sslrootcert={}", other.display()),
    ] {
        match open(&wrong) {
            Err(Error::Database(m)) => assert!(
                m.contains("TLS handshake") && m.contains("certificate"),
                "{wrong}: {m}"
            ),
            Err(e) => panic!("{wrong}: unexpected error: {e}"),
            Ok(_) => panic!("{wrong}: an unverified server opened a market"),
        }
    }
    // A CA file that is not there is named.
    match open(&format!(
        "{url}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
    )) {
        Err(Error::BadRequest(m)) => assert!(m.contains("sslrootcert /nonexistent/ca.pem"), "{m}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a missing CA file opened a market"),
    }
    // Its own CA: the books are kept over TLS.
    let m = open(&format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ))?;
    assert!(m.database_tls());
    let demander = party(&m, Role::Demander, "d")?;
    m.deposit(&demander, "dep", 3 * CREDIT, "ref", None)?;
    assert_eq!(m.balances(&demander, &demander.id)?.available, 3 * CREDIT);
    let books = m.ledger_summary()?;
    assert!(books.balanced, "{books:?}");
    // Every connection of the pool is encrypted.
    let unencrypted = m.read(|db| {
        db.query_row(
            "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
             WHERE a.datname = current_database() AND NOT s.ssl",
            sublet_market::params![],
            |r| r.get::<i64>(0),
        )
    })?;
    assert_eq!(unencrypted, 0);
    Ok(())
}

fn open_pool(url: &str, pool_size: usize, wait_ms: u64) -> Result<Market> {
    Market::open_postgres_with(
        url,
        sublet_market::PgOptions {
            pool_size,
            wait: std::time::Duration::from_millis(wait_ms),
        },
        Policy::default(),
        Some(Arc::new(ManualRail)),
    )
}

/// A read that holds its connection (and the market's lock, shared) for `ms`.
fn slow_read(m: &Market, ms: u32) -> Result<i64> {
    m.read(|db| {
        db.query_row(
            &format!("SELECT 1 FROM (SELECT pg_sleep({ms} / 1000.0)) s"),
            sublet_market::params![],
            |r| r.get::<i64>(0),
        )
    })
}

#[test]
fn reads_run_side_by_side_through_the_pool_and_writes_wait_for_them() -> Result<()> {
    let Some(url) = pg::database() else {
        return Ok(());
    };
    let m = open_pool(&url, 4, 10_000)?;
    let demander = party(&m, Role::Demander, "d")?;
    let started = std::time::Instant::now();
    let deposited = std::thread::scope(|s| -> Result<std::time::Duration> {
        let readers: Vec<_> = (0..4).map(|_| s.spawn(|| slow_read(&m, 400))).collect();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // A write takes the lock alone: it waits for the readers holding it.
        m.deposit(&demander, "dep", CREDIT, "ref", None)?;
        let deposited = started.elapsed();
        for r in readers {
            assert_eq!(
                r.join()
                    .map_err(|_| Error::Internal("reader panicked".into()))??,
                1
            );
        }
        Ok(deposited)
    })?;
    let took = started.elapsed();
    // Four 400 ms reads side by side: well under the 1.6 s they take one after another.
    assert!(took < std::time::Duration::from_millis(1200), "{took:?}");
    assert!(
        deposited >= std::time::Duration::from_millis(400),
        "the deposit did not wait for the readers: {deposited:?}"
    );
    assert!(m.database_connections() <= 4);
    // A read-only transaction cannot write.
    let refused = m.read(|db| {
        db.execute(
            "DELETE FROM parties WHERE id = ?1",
            sublet_market::params![demander.id],
        )
    });
    assert!(
        matches!(&refused, Err(Error::Database(msg)) if msg.contains("read-only transaction")),
        "{refused:?}"
    );
    assert_eq!(m.balances(&demander, &demander.id)?.available, CREDIT);
    Ok(())
}

#[test]
fn a_busy_pool_or_lock_answers_unavailable_within_the_wait() -> Result<()> {
    let Some(url) = pg::database() else {
        return Ok(());
    };
    // One connection, 300 ms of patience: a second caller while a read holds it is refused.
    let m = open_pool(&url, 1, 300)?;
    let demander = party(&m, Role::Demander, "d")?;
    std::thread::scope(|s| -> Result<()> {
        let holder = s.spawn(|| slow_read(&m, 1500));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let started = std::time::Instant::now();
        let refused = m.ledger_summary();
        let waited = started.elapsed();
        assert!(
            matches!(&refused, Err(Error::Unavailable(msg))
                if msg.contains("all 1 PostgreSQL connections of the pool stayed busy")),
            "{refused:?}"
        );
        assert!(
            waited < std::time::Duration::from_millis(1200),
            "{waited:?}"
        );
        if let Err(e) = &refused {
            assert_eq!(e.status_and_code().0.as_u16(), 503);
        }
        holder
            .join()
            .map_err(|_| Error::Internal("holder panicked".into()))??;
        Ok(())
    })?;
    // Another market on the same database: while this one's read holds the lock, its
    // write gives up after its wait rather than queueing without end.
    let other = open_pool(&url, 2, 300)?;
    std::thread::scope(|s| -> Result<()> {
        let holder = s.spawn(|| slow_read(&m, 1500));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let refused = other.deposit(&demander, "dep-late", CREDIT, "ref", None);
        assert!(
            matches!(&refused, Err(Error::Unavailable(msg)) if msg.contains("market's lock")),
            "{refused:?}"
        );
        holder
            .join()
            .map_err(|_| Error::Internal("holder panicked".into()))??;
        Ok(())
    })?;
    // Nothing of the refused deposit was kept; the same operation goes through now.
    other.deposit(&demander, "dep-late", CREDIT, "ref", None)?;
    assert_eq!(m.balances(&demander, &demander.id)?.available, CREDIT);
    assert!(m.ledger_summary()?.balanced);
    Ok(())
}
