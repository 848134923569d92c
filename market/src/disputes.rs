//! Disputes: either party of a contract opens one with a claim; an arbiter
//! (a key the market was started with) decides it, and the decision moves
//! credits in the ledger and counts in both parties' ratings. Opening and
//! deciding requests are kept as signed evidence, so the history is auditable.

use crate::db::{Db, Row};
use crate::params;
use serde::{Deserialize, Serialize};

use sublet_market_api::contracts::Contract;
use sublet_market_api::credits::{MAX_AMOUNT, Micros};
use sublet_market_api::identity::{Party, Role, new_id};
use sublet_market_api::{Error, Result};

use crate::contracts;
use crate::ledger::{self, Account};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS disputes (
    id TEXT PRIMARY KEY,
    contract TEXT NOT NULL REFERENCES contracts(id),
    period_start INTEGER,
    opened_by TEXT NOT NULL,
    claim TEXT NOT NULL,
    opening_evidence INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    decided_by TEXT,
    in_favour_of TEXT,
    amount INTEGER,
    moved INTEGER,
    reason TEXT,
    decision_evidence INTEGER,
    decided_at INTEGER
);
";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewDispute {
    /// The receipt period in question, if the dispute is about one.
    #[serde(default)]
    pub period_start: Option<i64>,
    /// What the party claims, in its own words (at most 4000 characters).
    pub claim: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// `demander` or `provider`.
    pub in_favour_of: Role,
    /// Micro-credits the losing side pays the winner (0 for none). Against a
    /// provider: taken from its held-back then available credits, as far as
    /// they go. Against a demander: from the contract's escrow, then from its
    /// available credits, which must cover it.
    pub amount: Micros,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispute {
    pub id: String,
    pub contract: String,
    pub period_start: Option<i64>,
    pub opened_by: String,
    pub claim: String,
    pub opening_evidence: i64,
    pub opened_at: i64,
    /// `None` while open.
    pub decision: Option<DecisionRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    pub decided_by: String,
    pub in_favour_of: Role,
    pub amount: Micros,
    /// What the ledger actually moved (less than `amount` when a provider's credits ran out).
    pub moved: Micros,
    pub reason: String,
    pub evidence: i64,
    pub decided_at: i64,
    /// The ledger operations that carried it out.
    pub ledger_operations: Vec<String>,
}

fn from_row(r: &Row) -> Result<Dispute> {
    let id: String = r.get(0)?;
    let decided_by: Option<String> = r.get(7)?;
    let decision = match decided_by {
        Some(decided_by) => Some(DecisionRecord {
            decided_by,
            in_favour_of: match r.get::<String>(8)?.as_str() {
                "demander" => Role::Demander,
                _ => Role::Provider,
            },
            amount: r.get(9)?,
            moved: r.get(10)?,
            reason: r.get(11)?,
            evidence: r.get(12)?,
            decided_at: r.get(13)?,
            ledger_operations: Vec::new(),
        }),
        None => None,
    };
    Ok(Dispute {
        id,
        contract: r.get(1)?,
        period_start: r.get(2)?,
        opened_by: r.get(3)?,
        claim: r.get(4)?,
        opening_evidence: r.get(5)?,
        opened_at: r.get(6)?,
        decision,
    })
}

const COLUMNS: &str = "id, contract, period_start, opened_by, claim, opening_evidence, opened_at,
    decided_by, in_favour_of, amount, moved, reason, decision_evidence, decided_at";

fn op_ids(id: &str) -> [String; 2] {
    [format!("dispute:{id}"), format!("dispute:{id}:available")]
}

pub fn get(conn: &dyn Db, id: &str) -> Result<Dispute> {
    let mut d = conn
        .query_opt(
            &format!("SELECT {COLUMNS} FROM disputes WHERE id = ?1"),
            [id],
            from_row,
        )?
        .ok_or_else(|| Error::not_found(format!("dispute {id}")))?;
    if let Some(decision) = &mut d.decision {
        for op in op_ids(id) {
            let exists: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM operations WHERE op_id = ?1)",
                [&op],
                |r| r.get(0),
            )?;
            if exists {
                decision.ledger_operations.push(op);
            }
        }
    }
    Ok(d)
}

pub fn list_for_contract(conn: &dyn Db, contract: &str) -> Result<Vec<Dispute>> {
    let ids: Vec<String> = conn.query_map(
        "SELECT id FROM disputes WHERE contract = ?1 ORDER BY opened_at, id",
        [contract],
        |r| r.get(0),
    )?;
    ids.iter().map(|id| get(conn, id)).collect()
}

/// Which disputes a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeState {
    /// Waiting for an arbiter's decision.
    Open,
    Decided,
    /// Both.
    #[default]
    Any,
}

/// The disputes `party` may read, newest first (then last opened first): for an arbiter every dispute of
/// the market, for anyone else those on contracts it is a party to.
pub fn list_visible(conn: &dyn Db, party: &Party, state: DisputeState) -> Result<Vec<Dispute>> {
    let state_clause = match state {
        DisputeState::Open => "AND d.decided_by IS NULL",
        DisputeState::Decided => "AND d.decided_by IS NOT NULL",
        DisputeState::Any => "",
    };
    let ids: Vec<String> = if party.role == Role::Arbiter {
        conn.query_map(
            &format!(
                "SELECT d.id FROM disputes d WHERE 1 = 1 {state_clause}
                 ORDER BY d.opened_at DESC, d.opening_evidence DESC"
            ),
            params![],
            |r| r.get(0),
        )?
    } else {
        conn.query_map(
            &format!(
                "SELECT d.id FROM disputes d JOIN contracts c ON c.id = d.contract
                 WHERE (c.demander = ?1 OR c.provider = ?1) {state_clause}
                 ORDER BY d.opened_at DESC, d.opening_evidence DESC"
            ),
            [&party.id],
            |r| r.get(0),
        )?
    };
    ids.iter().map(|id| get(conn, id)).collect()
}

/// Disputes decided against `party` (on contracts it is a party to).
pub fn lost_by(conn: &dyn Db, party: &str) -> Result<u32> {
    conn.query_row(
        "SELECT COUNT(*) FROM disputes d JOIN contracts c ON c.id = d.contract
         WHERE (c.provider = ?1 AND d.in_favour_of = 'demander')
            OR (c.demander = ?1 AND d.in_favour_of = 'provider')",
        [party],
        |r| r.get(0),
    )
}

pub fn open(
    conn: &dyn Db,
    who: &Party,
    contract_id: &str,
    new: &NewDispute,
    evidence: i64,
    now: i64,
) -> Result<Dispute> {
    let c = contracts::get(conn, contract_id)?;
    c.check_party(who)?;
    let claim = new.claim.trim();
    if claim.is_empty() || claim.chars().count() > 4000 {
        return Err(Error::BadRequest(
            "claim must say what is disputed, in at most 4000 characters".into(),
        ));
    }
    if let Some(start) = new.period_start {
        let known: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM receipts WHERE contract = ?1 AND period_start = ?2)",
            params![contract_id, start],
            |r| r.get(0),
        )?;
        if !known {
            return Err(Error::BadRequest(format!(
                "period_start {start} is not a reported period of contract {contract_id}"
            )));
        }
    }
    let id = new_id("dp")?;
    conn.execute(
        "INSERT INTO disputes (id, contract, period_start, opened_by, claim, opening_evidence, opened_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, contract_id, new.period_start, who.id, claim, evidence, now],
    )?;
    get(conn, &id)
}

/// Carries out an arbiter's decision. Deciding a decided dispute again with the
/// same decision changes nothing; with another decision it is refused.
pub fn decide(
    conn: &dyn Db,
    arbiter: &Party,
    id: &str,
    decision: &Decision,
    evidence: i64,
    now: i64,
) -> Result<Dispute> {
    if arbiter.role != Role::Arbiter {
        return Err(Error::Forbidden(format!(
            "party {} is not an arbiter; only arbiters decide disputes",
            arbiter.id
        )));
    }
    if !(0..=MAX_AMOUNT).contains(&decision.amount) {
        return Err(Error::BadRequest(format!(
            "amount must be between 0 and {MAX_AMOUNT} micro-credits"
        )));
    }
    // Checked before the amount: a decision for anyone else, even of 0, would be stored
    // and later read back as one for the provider.
    if !matches!(decision.in_favour_of, Role::Demander | Role::Provider) {
        return Err(Error::BadRequest(
            "in_favour_of must be demander or provider".into(),
        ));
    }
    let reason = decision.reason.trim();
    if reason.is_empty() || reason.chars().count() > 4000 {
        return Err(Error::BadRequest(
            "reason must explain the decision in at most 4000 characters".into(),
        ));
    }
    let d = get(conn, id)?;
    if let Some(done) = &d.decision {
        if done.in_favour_of == decision.in_favour_of
            && done.amount == decision.amount
            && done.reason == reason
        {
            return Ok(d);
        }
        return Err(Error::Conflict(format!(
            "dispute {id} was already decided by {} at {}",
            done.decided_by, done.decided_at
        )));
    }
    let c: Contract = contracts::get(conn, &d.contract)?;
    let [op, op_available] = op_ids(id);
    let moved = match (decision.in_favour_of, decision.amount) {
        (_, 0) => 0,
        (Role::Demander, amount) => {
            ledger::penalize(conn, &op, &c.provider, &c.demander, amount, reason, now)?.1
        }
        (Role::Provider, amount) => {
            let escrow = Account::Escrow(c.id.clone());
            let provider = Account::Available(c.provider.clone());
            let from_escrow = amount.min(ledger::balance(conn, &escrow)?);
            if from_escrow > 0 {
                ledger::adjust(conn, &op, &escrow, &provider, from_escrow, reason, now)?;
            }
            if amount > from_escrow {
                let demander = Account::Available(c.demander.clone());
                ledger::adjust(
                    conn,
                    &op_available,
                    &demander,
                    &provider,
                    amount - from_escrow,
                    reason,
                    now,
                )?;
            }
            amount
        }
        (Role::Arbiter | Role::Support, _) => {
            return Err(Error::BadRequest(
                "in_favour_of must be demander or provider".into(),
            ));
        }
    };
    conn.execute(
        "UPDATE disputes SET decided_by = ?2, in_favour_of = ?3, amount = ?4, moved = ?5,
             reason = ?6, decision_evidence = ?7, decided_at = ?8 WHERE id = ?1",
        params![
            id,
            arbiter.id,
            decision.in_favour_of.as_str(),
            decision.amount,
            moved,
            reason,
            evidence,
            now
        ],
    )?;
    get(conn, id)
}
