//! Contracts between a demander and a provider: proposed by the demander on an
//! offer, accepted (or rejected) by the provider, prepaid into escrow and
//! ended by termination, which refunds the unused prepayment. The contract types are
//! `sublet_market_api::contracts`, re-exported here.

use crate::db::{Db, Row};
use crate::params;
use sublet_market_api::credits::Micros;
use sublet_market_api::identity::{Party, Role, new_id};
use sublet_market_api::receipts::MAX_PERIOD_SECS;
use sublet_market_api::{Error, Result};

pub use sublet_market_api::contracts::{Contract, ContractState, NewContract};

use crate::ledger::{self, Account, Applied};
use crate::offers;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contracts (
    id TEXT PRIMARY KEY,
    offer_id TEXT NOT NULL REFERENCES offers(id),
    demander TEXT NOT NULL,
    provider TEXT NOT NULL,
    reserved_bytes INTEGER NOT NULL,
    term_days INTEGER NOT NULL,
    price_per_gib_month INTEGER NOT NULL,
    egress_price_per_gib INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    accepted_at INTEGER,
    ended_at INTEGER,
    proposal_evidence INTEGER NOT NULL,
    acceptance_evidence INTEGER,
    period_secs INTEGER NOT NULL DEFAULT 3600
);
";

/// Brings a contracts table made before a column was added up to [`SCHEMA`].
pub fn migrate(conn: &dyn Db) -> Result<()> {
    if !conn.has_column("contracts", "period_secs")? {
        conn.schema("ALTER TABLE contracts ADD COLUMN period_secs INTEGER NOT NULL DEFAULT 3600")?;
    }
    Ok(())
}

fn from_row(r: &Row) -> Result<Contract> {
    Ok(Contract {
        id: r.get(0)?,
        offer_id: r.get(1)?,
        demander: r.get(2)?,
        provider: r.get(3)?,
        reserved_bytes: r.get::<i64>(4)?.max(0) as u64,
        term_days: r.get(5)?,
        price_per_gib_month: r.get(6)?,
        egress_price_per_gib: r.get(7)?,
        state: ContractState::parse(&r.get::<String>(8)?)?,
        created_at: r.get(9)?,
        accepted_at: r.get(10)?,
        ended_at: r.get(11)?,
        proposal_evidence: r.get(12)?,
        acceptance_evidence: r.get(13)?,
        escrow: r.get(14)?,
        period_secs: r.get(15)?,
    })
}

const COLUMNS: &str = "c.id, c.offer_id, c.demander, c.provider, c.reserved_bytes, c.term_days,
    c.price_per_gib_month, c.egress_price_per_gib, c.state, c.created_at, c.accepted_at,
    c.ended_at, c.proposal_evidence, c.acceptance_evidence,
    COALESCE((SELECT balance FROM accounts WHERE account = 'escrow:' || c.id), 0),
    c.period_secs";

pub fn get(conn: &dyn Db, id: &str) -> Result<Contract> {
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM contracts c WHERE c.id = ?1"),
        [id],
        from_row,
    )?
    .ok_or_else(|| Error::not_found(format!("contract {id}")))
}

/// The contracts a party is on, newest first.
pub fn list_for(conn: &dyn Db, party: &str) -> Result<Vec<Contract>> {
    conn.query_map(
        &format!(
            "SELECT {COLUMNS} FROM contracts c WHERE c.demander = ?1 OR c.provider = ?1
             ORDER BY c.created_at DESC, c.id"
        ),
        [party],
        from_row,
    )
}

pub fn propose(
    conn: &dyn Db,
    demander: &Party,
    new: &NewContract,
    period_secs: i64,
    evidence: i64,
    now: i64,
) -> Result<Contract> {
    if demander.role != Role::Demander {
        return Err(Error::Forbidden(format!(
            "party {} is registered as a {}; only demanders propose contracts",
            demander.id,
            demander.role.as_str()
        )));
    }
    expire_proposals(conn, now)?;
    let offer = offers::get(conn, &new.offer_id)?;
    if offer.withdrawn {
        return Err(Error::Conflict(format!("offer {} was withdrawn", offer.id)));
    }
    if new.reserved_bytes == 0 {
        return Err(Error::BadRequest(
            "reserved_bytes must be at least 1".into(),
        ));
    }
    if new.reserved_bytes > offer.free_bytes {
        return Err(Error::Conflict(format!(
            "offer {} has {} bytes free, the contract asks for reserved_bytes {}",
            offer.id, offer.free_bytes, new.reserved_bytes
        )));
    }
    if new.term_days < offer.min_term_days || new.term_days == 0 {
        return Err(Error::BadRequest(format!(
            "term_days must be at least the offer's min_term_days {} (and at least 1), got {}",
            offer.min_term_days, new.term_days
        )));
    }
    let id = new_id("ct")?;
    conn.execute(
        "INSERT INTO contracts (id, offer_id, demander, provider, reserved_bytes, term_days,
             price_per_gib_month, egress_price_per_gib, state, created_at, proposal_evidence,
             period_secs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'proposed', ?9, ?10, ?11)",
        params![
            id,
            offer.id,
            demander.id,
            offer.provider,
            new.reserved_bytes as i64,
            new.term_days,
            offer.price_per_gib_month,
            offer.egress_price_per_gib,
            now,
            evidence,
            period_secs.clamp(1, MAX_PERIOD_SECS)
        ],
    )?;
    get(conn, &id)
}

fn set_state(conn: &dyn Db, id: &str, state: ContractState) -> Result<()> {
    conn.execute(
        "UPDATE contracts SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

pub fn accept(
    conn: &dyn Db,
    provider: &Party,
    id: &str,
    evidence: i64,
    now: i64,
) -> Result<Contract> {
    let c = get(conn, id)?;
    if c.provider != provider.id {
        return Err(Error::Forbidden(format!(
            "only the contract's provider {} may accept contract {id}",
            c.provider
        )));
    }
    match c.state {
        ContractState::Proposed if c.created_at < now - PROPOSAL_TTL_SECS => {
            return Err(Error::Conflict(format!(
                "the proposal of contract {id} lapsed after {} days unanswered; the demander must propose again",
                PROPOSAL_TTL_SECS / 86_400
            )));
        }
        ContractState::Proposed => {}
        ContractState::Active => return Ok(c),
        s => {
            return Err(Error::Conflict(format!(
                "contract {id} is {}, only a proposed contract can be accepted",
                s.as_str()
            )));
        }
    }
    set_state(conn, id, ContractState::Active)?;
    conn.execute(
        "UPDATE contracts SET accepted_at = ?2, acceptance_evidence = ?3 WHERE id = ?1",
        params![id, now, evidence],
    )?;
    get(conn, id)
}

/// The provider declines, or the demander withdraws, a proposal. Any
/// prepayment already made goes back to the demander.
pub fn reject(conn: &dyn Db, party: &Party, id: &str, now: i64) -> Result<Contract> {
    let c = get(conn, id)?;
    c.check_party(party)?;
    match c.state {
        ContractState::Proposed => {}
        ContractState::Rejected => return Ok(c),
        s => {
            return Err(Error::Conflict(format!(
                "contract {id} is {}, only a proposed contract can be rejected; terminate it instead",
                s.as_str()
            )));
        }
    }
    close_proposal(conn, &c, now)?;
    get(conn, id)
}

/// How long a proposal waits for the provider: after this it lapses, so
/// unanswered proposals can't hold an offer's capacity forever.
pub const PROPOSAL_TTL_SECS: i64 = 7 * 24 * 3600;

fn close_proposal(conn: &dyn Db, c: &Contract, now: i64) -> Result<()> {
    ledger::refund_escrow(conn, &format!("refund:{}", c.id), &c.id, &c.demander, now)?;
    set_state(conn, &c.id, ContractState::Rejected)?;
    conn.execute(
        "UPDATE contracts SET ended_at = ?2 WHERE id = ?1",
        params![c.id, now],
    )?;
    Ok(())
}

/// Rejects proposals older than [`PROPOSAL_TTL_SECS`], refunding their
/// prepayments. Returns how many lapsed.
pub fn expire_proposals(conn: &dyn Db, now: i64) -> Result<usize> {
    let lapsed: Vec<Contract> = conn.query_map(
        &format!(
            "SELECT {COLUMNS} FROM contracts c WHERE c.state = 'proposed' AND c.created_at < ?1"
        ),
        [now - PROPOSAL_TTL_SECS],
        from_row,
    )?;
    for c in &lapsed {
        close_proposal(conn, c, now)?;
        tracing::info!(contract = %c.id, "proposal lapsed unanswered");
    }
    Ok(lapsed.len())
}

/// The demander moves `amount` of its available credits into the contract's escrow.
pub fn prepay(
    conn: &dyn Db,
    demander: &Party,
    id: &str,
    op_id: &str,
    amount: Micros,
    now: i64,
) -> Result<(Applied, Contract)> {
    let c = get(conn, id)?;
    if c.demander != demander.id {
        return Err(Error::Forbidden(format!(
            "only the contract's demander {} may prepay contract {id}",
            c.demander
        )));
    }
    if !matches!(c.state, ContractState::Proposed | ContractState::Active) {
        return Err(Error::Conflict(format!(
            "contract {id} is {}; prepay only proposed or active contracts",
            c.state.as_str()
        )));
    }
    let applied = ledger::prepay(conn, op_id, id, &c.demander, amount, now)?;
    Ok((applied, get(conn, id)?))
}

/// Either party ends an active contract. Whatever the escrow still holds (the
/// prepayment not yet spent on settled periods) goes back to the demander, so
/// settle outstanding periods first. Terminating twice changes nothing.
pub fn terminate(conn: &dyn Db, party: &Party, id: &str, now: i64) -> Result<(Contract, Micros)> {
    let c = get(conn, id)?;
    c.check_party(party)?;
    match c.state {
        ContractState::Active => {}
        ContractState::Terminated => {
            let refunded =
                ledger::refund_escrow(conn, &format!("refund:{id}"), id, &c.demander, now)?.1;
            return Ok((c, refunded));
        }
        s => {
            return Err(Error::Conflict(format!(
                "contract {id} is {}, only an active contract can be terminated",
                s.as_str()
            )));
        }
    }
    let (_, refunded) = ledger::refund_escrow(conn, &format!("refund:{id}"), id, &c.demander, now)?;
    set_state(conn, id, ContractState::Terminated)?;
    conn.execute(
        "UPDATE contracts SET ended_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    debug_assert_eq!(ledger::balance(conn, &Account::Escrow(id.into()))?, 0);
    Ok((get(conn, id)?, refunded))
}
