//! Usage receipts and their settlement. The demander's gateway and the provider
//! each sign a receipt per period; a period whose two receipts agree is paid
//! from escrow, one whose receipts disagree is flagged and left unpaid. The receipt
//! itself and the arithmetic both sides share are `sublet_market_api::receipts`,
//! re-exported here.

use crate::db::{Db, Row};
use crate::params;
use serde::Serialize;
use sublet_market_api::contracts::{Contract, ContractState};
use sublet_market_api::credits::Micros;
use sublet_market_api::identity::Party;
use sublet_market_api::receipts::mismatched_fields;
use sublet_market_api::{Error, Result};

pub use sublet_market_api::receipts::{
    EGRESS_SLACK_BYTES, GIB, HOURS_PER_MONTH, MAX_PERIOD_SECS, UsageReceipt, agree, gib_hours,
    gross_charge, period_containing,
};

use crate::Policy;
use crate::contracts;
use crate::identity;
use crate::ledger::{self, Account, Payout, SettledPeriod};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS receipts (
    contract TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    period_end INTEGER NOT NULL,
    role TEXT NOT NULL,
    gib_hours INTEGER NOT NULL,
    egress_bytes INTEGER NOT NULL,
    audits_passed INTEGER NOT NULL,
    audits_failed INTEGER NOT NULL,
    evidence INTEGER NOT NULL,
    shards_failed INTEGER NOT NULL DEFAULT 0,
    submitted_at INTEGER NOT NULL,
    PRIMARY KEY (contract, period_start, role)
);
";

/// Brings a receipts table made before a column was added up to [`SCHEMA`].
pub fn migrate(conn: &dyn Db) -> Result<()> {
    if !conn.has_column("receipts", "shards_failed")? {
        conn.schema("ALTER TABLE receipts ADD COLUMN shards_failed INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodStatus {
    AwaitingDemander,
    AwaitingProvider,
    /// Both receipts are in and disagree: nothing is paid until one side corrects its receipt.
    Mismatch,
    /// Both receipts agree but the escrow holds less than the charge: the demander must prepay.
    AwaitingFunds,
    Settled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    pub contract: String,
    pub period_start: i64,
    pub period_end: i64,
    pub status: PeriodStatus,
    pub demander_receipt: Option<UsageReceipt>,
    pub provider_receipt: Option<UsageReceipt>,
    /// The receipt fields the two sides disagree on.
    pub mismatched_fields: Vec<&'static str>,
    /// What the agreed receipts cost and how it is split, once they agree.
    pub charge: Option<Payout>,
    pub settlement: Option<SettledPeriod>,
}

/// Failed audits cost the provider the same share of the period's charge.
pub fn audit_penalty(gross: Micros, r: &UsageReceipt) -> Micros {
    let total = u64::from(r.audits_passed) + u64::from(r.audits_failed);
    ledger::proportion(gross, u64::from(r.audits_failed), total)
}

/// The share held back from a provider still in its vetting period.
pub fn held_back_bps(policy: &Policy, provider: &Party, now: i64) -> i64 {
    if now < vetting_ends(policy, provider) {
        policy.held_back_bps
    } else {
        0
    }
}

pub fn vetting_ends(policy: &Policy, provider: &Party) -> i64 {
    provider
        .registered_at
        .saturating_add(policy.vetting_period_secs)
}

pub fn payout(
    policy: &Policy,
    c: &Contract,
    provider: &Party,
    r: &UsageReceipt,
    now: i64,
) -> Payout {
    let gross = gross_charge(c, r);
    ledger::split_payout(
        gross,
        audit_penalty(gross, r),
        policy.platform_fee_bps,
        held_back_bps(policy, provider, now),
    )
}

fn receipt_from_row(r: &Row) -> Result<(String, UsageReceipt)> {
    Ok((
        r.get(0)?,
        UsageReceipt {
            period_start: r.get(1)?,
            period_end: r.get(2)?,
            gib_hours: r.get::<i64>(3)?.max(0) as u64,
            egress_bytes: r.get::<i64>(4)?.max(0) as u64,
            audits_passed: r.get(5)?,
            audits_failed: r.get(6)?,
            shards_failed: u32::try_from(r.get::<i64>(7)?.max(0)).unwrap_or(u32::MAX),
        },
    ))
}

const RECEIPT_COLUMNS: &str = "role, period_start, period_end, gib_hours, egress_bytes, \
     audits_passed, audits_failed, shards_failed";

pub fn period(
    conn: &dyn Db,
    policy: &Policy,
    c: &Contract,
    period_start: i64,
    now: i64,
) -> Result<Period> {
    let rows: Vec<(String, UsageReceipt)> = conn.query_map(
        &format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE contract = ?1 AND period_start = ?2"
        ),
        params![c.id, period_start],
        receipt_from_row,
    )?;
    let pick = |role: &str| rows.iter().find(|(r, _)| r == role).map(|(_, r)| r.clone());
    let (demander, provider) = (pick("demander"), pick("provider"));
    let settlement = ledger::settled_period(conn, &c.id, period_start)?;
    let period_end = demander
        .as_ref()
        .or(provider.as_ref())
        .map(|r| r.period_end)
        .ok_or_else(|| {
            Error::not_found(format!(
                "period starting {period_start} of contract {}",
                c.id
            ))
        })?;
    let mismatched = match (&demander, &provider) {
        (Some(d), Some(p)) => mismatched_fields(d, p, policy.receipt_tolerance_bps),
        _ => Vec::new(),
    };
    let charge = match (&demander, &provider) {
        (Some(d), Some(p)) if mismatched.is_empty() => {
            let provider_party = identity::party(conn, &c.provider)?;
            // Receipts that agree within the tolerance are paid on the lower figures.
            let agreed = UsageReceipt {
                gib_hours: d.gib_hours.min(p.gib_hours),
                egress_bytes: d.egress_bytes.min(p.egress_bytes),
                ..d.clone()
            };
            Some(match &settlement {
                Some(s) => s.payout,
                None => payout(policy, c, &provider_party, &agreed, now),
            })
        }
        _ => None,
    };
    let status = match (&settlement, &demander, &provider) {
        (Some(_), _, _) => PeriodStatus::Settled,
        (None, None, _) => PeriodStatus::AwaitingDemander,
        (None, _, None) => PeriodStatus::AwaitingProvider,
        _ if !mismatched.is_empty() => PeriodStatus::Mismatch,
        _ => PeriodStatus::AwaitingFunds,
    };
    Ok(Period {
        contract: c.id.clone(),
        period_start,
        period_end,
        status,
        demander_receipt: demander,
        provider_receipt: provider,
        mismatched_fields: mismatched,
        charge,
        settlement,
    })
}

/// Every period of a contract that has at least one receipt, oldest first.
pub fn periods(conn: &dyn Db, policy: &Policy, c: &Contract, now: i64) -> Result<Vec<Period>> {
    let starts: Vec<i64> = conn.query_map(
        "SELECT DISTINCT period_start FROM receipts WHERE contract = ?1 ORDER BY period_start",
        [&c.id],
        |r| r.get(0),
    )?;
    starts
        .into_iter()
        .map(|s| period(conn, policy, c, s, now))
        .collect()
}

fn check_receipt(c: &Contract, r: &UsageReceipt) -> Result<()> {
    let bad = |m: String| Err(Error::BadRequest(m));
    let len = r.period_end - r.period_start;
    if len <= 0 || len > MAX_PERIOD_SECS {
        return bad(format!(
            "period_end must be after period_start and at most {MAX_PERIOD_SECS} s later, got {} .. {}",
            r.period_start, r.period_end
        ));
    }
    if let Some(accepted) = c.accepted_at
        && r.period_start < accepted
    {
        return bad(format!(
            "period_start {} is before the contract was accepted at {accepted}",
            r.period_start
        ));
    }
    if let Some(accepted) = c.accepted_at {
        let term_ends = accepted.saturating_add(i64::from(c.term_days) * 24 * 3600);
        if r.period_end > term_ends {
            return bad(format!(
                "period_end {} is after the contract's term ends at {term_ends} ({} days from acceptance)",
                r.period_end, c.term_days
            ));
        }
    }
    let hours = (len as u64).div_ceil(3600);
    let most = c.reserved_bytes.div_ceil(GIB).saturating_mul(hours);
    if r.gib_hours > most {
        return bad(format!(
            "gib_hours {} exceeds what the contract reserves over the period ({most} GiB-hours)",
            r.gib_hours
        ));
    }
    Ok(())
}

/// Stores `who`'s receipt for a period, then settles the period if both sides
/// now agree and the escrow covers it. A party may correct its receipt until
/// the period is settled.
pub fn submit(
    conn: &dyn Db,
    policy: &Policy,
    who: &Party,
    contract_id: &str,
    r: &UsageReceipt,
    evidence: i64,
    now: i64,
) -> Result<Period> {
    let c = contracts::get(conn, contract_id)?;
    c.check_party(who)?;
    if c.state != ContractState::Active {
        return Err(Error::Conflict(format!(
            "contract {contract_id} is not active; receipts are taken for active contracts only"
        )));
    }
    check_receipt(&c, r)?;
    let role = if who.id == c.demander {
        "demander"
    } else {
        "provider"
    };
    let stored: Option<UsageReceipt> = conn
        .query_opt(
            &format!(
                "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE contract = ?1 AND period_start = ?2 AND role = ?3"
            ),
            params![contract_id, r.period_start, role],
            receipt_from_row,
        )?
        .map(|(_, r)| r);
    if let Some(done) = ledger::settled_period(conn, contract_id, r.period_start)? {
        if stored.as_ref() == Some(r) {
            return period(conn, policy, &c, r.period_start, now);
        }
        return Err(Error::AlreadySettled {
            contract: contract_id.into(),
            period_start: r.period_start,
            op_id: done.op_id,
        });
    }
    let overlapping: Option<(i64, i64)> = conn.query_opt(
        "SELECT period_start, period_end FROM receipts
             WHERE contract = ?1 AND period_start < ?3 AND period_end > ?2 AND period_start != ?2
             LIMIT 1",
        params![contract_id, r.period_start, r.period_end],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if let Some((s, e)) = overlapping {
        return Err(Error::Conflict(format!(
            "period {} .. {} overlaps the period {s} .. {e} already reported for contract {contract_id}",
            r.period_start, r.period_end
        )));
    }
    conn.execute(
        "INSERT INTO receipts (contract, period_start, period_end, role, gib_hours, egress_bytes,
             audits_passed, audits_failed, evidence, submitted_at, shards_failed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (contract, period_start, role) DO UPDATE SET
             period_end = excluded.period_end, gib_hours = excluded.gib_hours,
             egress_bytes = excluded.egress_bytes, audits_passed = excluded.audits_passed,
             audits_failed = excluded.audits_failed, evidence = excluded.evidence,
             submitted_at = excluded.submitted_at, shards_failed = excluded.shards_failed",
        params![
            contract_id,
            r.period_start,
            r.period_end,
            role,
            r.gib_hours.min(i64::MAX as u64) as i64,
            r.egress_bytes.min(i64::MAX as u64) as i64,
            r.audits_passed,
            r.audits_failed,
            evidence,
            now,
            i64::from(r.shards_failed)
        ],
    )?;
    try_settle(conn, policy, &c, r.period_start, now)
}

/// Pays a period whose receipts agree, if the escrow covers it. Settling a
/// settled period again is a no-op (same operation id).
pub fn try_settle(
    conn: &dyn Db,
    policy: &Policy,
    c: &Contract,
    period_start: i64,
    now: i64,
) -> Result<Period> {
    let p = period(conn, policy, c, period_start, now)?;
    let (PeriodStatus::AwaitingFunds, Some(charge)) = (p.status, p.charge) else {
        return Ok(p);
    };
    if ledger::balance(conn, &Account::Escrow(c.id.clone()))? < charge.gross {
        return Ok(p);
    }
    ledger::settle(
        conn,
        &format!("settle:{}:{period_start}", c.id),
        &ledger::Parties::of(c),
        period_start,
        &charge,
        now,
    )?;
    tracing::info!(
        contract = %c.id,
        period_start,
        gross = charge.gross,
        penalty = charge.penalty,
        to_provider = charge.to_provider,
        held_back = charge.held_back,
        "period settled"
    );
    period(conn, policy, c, period_start, now)
}

/// Settles every period of the contract waiting for funds, oldest first (after a prepayment).
pub fn settle_waiting(conn: &dyn Db, policy: &Policy, c: &Contract, now: i64) -> Result<()> {
    for p in periods(conn, policy, c, now)? {
        if p.status == PeriodStatus::AwaitingFunds {
            let p = try_settle(conn, policy, c, p.period_start, now)?;
            if p.status != PeriodStatus::Settled {
                break;
            }
        }
    }
    Ok(())
}
