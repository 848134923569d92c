//! Usage receipts and their settlement. The demander's gateway and the provider
//! each sign a receipt per period; a period whose two receipts agree is paid
//! from escrow, one whose receipts disagree is flagged and left unpaid.

use crate::db::{Db, Row};
use crate::params;
use serde::{Deserialize, Serialize};

use crate::Policy;
use crate::contracts::{self, Contract, ContractState};
use crate::identity::{self, Party};
use crate::ledger::{self, Account, MAX_AMOUNT, Micros, Payout, SettledPeriod};
use crate::{Error, Result};

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
    submitted_at INTEGER NOT NULL,
    PRIMARY KEY (contract, period_start, role)
);
";

pub const GIB: u64 = 1 << 30;
/// Storage is priced per GiB-month; a month is 730 hours (8760 / 12).
pub const HOURS_PER_MONTH: u64 = 730;
/// The longest period one receipt may cover.
pub const MAX_PERIOD_SECS: i64 = 31 * 24 * 3600;

/// One side's account of a period's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReceipt {
    /// Unix seconds, inclusive.
    pub period_start: i64,
    /// Unix seconds, exclusive.
    pub period_end: i64,
    /// Stored data integrated over the period, in GiB-hours.
    pub gib_hours: u64,
    /// Bytes read back from the provider during the period.
    pub egress_bytes: u64,
    /// Audits of the provider's shards during the period that passed and failed.
    pub audits_passed: u32,
    pub audits_failed: u32,
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

/// `bytes` held for `secs` seconds, in whole GiB-hours rounded down. Gateway
/// and provider both compute their receipts with it, so that the same usage
/// gives the same number on both sides and their receipts match.
pub fn gib_hours(bytes: u64, secs: i64) -> u64 {
    let held = u128::from(bytes) * u128::from(secs.max(0) as u64);
    u64::try_from(held / (u128::from(GIB) * 3600)).unwrap_or(u64::MAX)
}

/// The receipt period of `len_secs` that holds `t`, counted from the contract's
/// acceptance, so that both sides name the same periods.
pub fn period_containing(accepted_at: i64, len_secs: i64, t: i64) -> (i64, i64) {
    let len = len_secs.clamp(1, MAX_PERIOD_SECS);
    let start = accepted_at + (t - accepted_at).max(0) / len * len;
    (start, start + len)
}

/// The period's price at the contract's rates, rounded down.
pub fn gross_charge(c: &Contract, r: &UsageReceipt) -> Micros {
    let storage = u128::from(r.gib_hours) * c.price_per_gib_month.max(0) as u128
        / u128::from(HOURS_PER_MONTH);
    let egress =
        u128::from(r.egress_bytes) * c.egress_price_per_gib.max(0) as u128 / u128::from(GIB);
    i64::try_from(storage + egress)
        .unwrap_or(MAX_AMOUNT)
        .min(MAX_AMOUNT)
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

/// Egress figures this close always agree: a read the gateway gave up on (a hedged read
/// answered elsewhere first) leaves a few chunks the provider sent and the gateway dropped.
pub const EGRESS_SLACK_BYTES: u64 = 8 << 20;

/// Whether two meter readings agree within `tolerance_bps` of the larger, or `slack`.
fn close(a: u64, b: u64, tolerance_bps: i64, slack: u64) -> bool {
    let diff = a.abs_diff(b);
    let allowed = u128::from(a.max(b)) * tolerance_bps.clamp(0, 10_000) as u128 / 10_000;
    diff <= slack || u128::from(diff) <= allowed
}

/// The fields on which two receipts of one period disagree. Storage and egress are
/// metered by each side's own sampling, so they agree within the policy's tolerance (and
/// GiB-hours within one, for rounding at a boundary); the period and audit counts must
/// match exactly.
/// Whether two receipts of one period agree (see [`mismatched_fields`]).
pub fn agree(a: &UsageReceipt, b: &UsageReceipt, tolerance_bps: i64) -> bool {
    mismatched_fields(a, b, tolerance_bps).is_empty()
}

fn mismatched_fields(a: &UsageReceipt, b: &UsageReceipt, tolerance_bps: i64) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.period_end != b.period_end {
        out.push("period_end");
    }
    if !close(a.gib_hours, b.gib_hours, tolerance_bps, 1) {
        out.push("gib_hours");
    }
    if !close(
        a.egress_bytes,
        b.egress_bytes,
        tolerance_bps,
        EGRESS_SLACK_BYTES,
    ) {
        out.push("egress_bytes");
    }
    if a.audits_passed != b.audits_passed {
        out.push("audits_passed");
    }
    if a.audits_failed != b.audits_failed {
        out.push("audits_failed");
    }
    out
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
        },
    ))
}

const RECEIPT_COLUMNS: &str =
    "role, period_start, period_end, gib_hours, egress_bytes, audits_passed, audits_failed";

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
             audits_passed, audits_failed, evidence, submitted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (contract, period_start, role) DO UPDATE SET
             period_end = excluded.period_end, gib_hours = excluded.gib_hours,
             egress_bytes = excluded.egress_bytes, audits_passed = excluded.audits_passed,
             audits_failed = excluded.audits_failed, evidence = excluded.evidence,
             submitted_at = excluded.submitted_at",
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
            now
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
        &c.parties(),
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

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn gib_hours_round_down_alike_on_both_sides() {
        assert_eq!(gib_hours(10 * GIB, 3600), 10);
        assert_eq!(gib_hours(GIB, 2 * 3600), 2);
        // Half a GiB for an hour is not a whole GiB-hour.
        assert_eq!(gib_hours(GIB / 2, 3600), 0);
        assert_eq!(gib_hours(GIB / 2, 3 * 3600), 1);
        assert_eq!(gib_hours(GIB, -5), 0);
        assert_eq!(gib_hours(u64::MAX, i64::MAX), u64::MAX);
    }

    #[test]
    fn meters_agree_within_the_tolerance_and_audits_exactly() {
        let r = |gib_hours, egress_bytes, audits_failed| UsageReceipt {
            period_start: 0,
            period_end: 3600,
            gib_hours,
            egress_bytes,
            audits_passed: 10,
            audits_failed,
        };
        let none: Vec<&str> = Vec::new();
        assert_eq!(mismatched_fields(&r(100, 0, 0), &r(100, 0, 0), 100), none);
        // One GiB-hour apart is rounding; 1% of the larger is sampling.
        assert_eq!(mismatched_fields(&r(0, 0, 0), &r(1, 0, 0), 100), none);
        assert_eq!(mismatched_fields(&r(1000, 0, 0), &r(990, 0, 0), 100), none);
        assert_eq!(
            mismatched_fields(&r(1000, 0, 0), &r(980, 0, 0), 100),
            vec!["gib_hours"]
        );
        assert_eq!(
            mismatched_fields(&r(0, 100 << 20, 0), &r(0, 99 << 20, 0), 100),
            none
        );
        assert_eq!(
            mismatched_fields(&r(0, 100 << 20, 0), &r(0, 90 << 20, 0), 100),
            vec!["egress_bytes"]
        );
        assert_eq!(
            mismatched_fields(&r(0, 1000, 0), &r(0, 0, 0), 0),
            none,
            "a few dropped chunks always agree"
        );
        assert_eq!(
            mismatched_fields(&r(5, 0, 0), &r(5, 0, 1), 10_000),
            vec!["audits_failed"]
        );
    }

    #[test]
    fn periods_count_from_acceptance() {
        assert_eq!(period_containing(1_000, 60, 1_000), (1_000, 1_060));
        assert_eq!(period_containing(1_000, 60, 1_059), (1_000, 1_060));
        assert_eq!(period_containing(1_000, 60, 1_060), (1_060, 1_120));
        // Before acceptance there is only the first period.
        assert_eq!(period_containing(1_000, 60, 10), (1_000, 1_060));
    }
}
