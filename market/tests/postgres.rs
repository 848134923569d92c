//! The market's books on PostgreSQL: two markets sharing one database (as two replicas
//! would) race prepayments for the same credits and never overspend; a market opened
//! later sees the same books; bad URLs are refused naming the problem.

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
