//! How a provider serves, as its demanders see it: uptime and latency their gateways
//! measure each receipt period, how quickly it answers proposals and reports its receipts
//! (the market's own records), and the feedback demanders give. All of it enters the
//! provider's rating, each input explaining itself.

use serde::{Deserialize, Serialize};
use sublet_market_api::contracts::{Contract, ContractState};
use sublet_market_api::identity::Party;
use sublet_market_api::{Error, Result};

use crate::contracts;
use crate::db::Db;
use crate::params;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS observations (
    contract TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    probes INTEGER NOT NULL,
    probes_answered INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    evidence INTEGER NOT NULL,
    submitted_at INTEGER NOT NULL,
    PRIMARY KEY (contract, period_start)
);
CREATE TABLE IF NOT EXISTS feedback (
    contract TEXT PRIMARY KEY,
    stars INTEGER NOT NULL,
    comment TEXT NOT NULL,
    evidence INTEGER NOT NULL,
    submitted_at INTEGER NOT NULL
);
";

/// The most probes one observation may count (one a second for a 31-day period is less).
const MAX_PROBES: u64 = 10_000_000;
/// Latencies above this are not measurements but timeouts.
const MAX_LATENCY_MS: u64 = 600_000;

/// What a demander's gateway measured of the provider during one receipt period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    pub period_start: i64,
    /// Health probes the gateway sent the provider, and how many it answered.
    pub probes: u64,
    pub probes_answered: u64,
    /// Median time the answered probes took, in milliseconds.
    pub latency_ms: u64,
}

/// A demander's word on a contract's provider: 1 to 5 stars and a comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    pub stars: u8,
    #[serde(default)]
    pub comment: String,
}

fn demander_of(conn: &dyn Db, who: &Party, contract_id: &str) -> Result<Contract> {
    let c = contracts::get(conn, contract_id)?;
    if who.id != c.demander {
        return Err(Error::Forbidden(format!(
            "only the demander of contract {contract_id} reports how its provider serves"
        )));
    }
    if c.state == ContractState::Proposed || c.state == ContractState::Rejected {
        return Err(Error::Conflict(format!(
            "contract {contract_id} was never accepted; there is no service to report on"
        )));
    }
    Ok(c)
}

/// Stores (or replaces) the demander's observation of one period.
pub fn observe(
    conn: &dyn Db,
    who: &Party,
    contract_id: &str,
    o: &Observation,
    evidence: i64,
    now: i64,
) -> Result<()> {
    let c = demander_of(conn, who, contract_id)?;
    let bad = |m: String| Err(Error::BadRequest(m));
    if o.probes == 0 || o.probes > MAX_PROBES {
        return bad(format!(
            "probes must be between 1 and {MAX_PROBES}, got {}",
            o.probes
        ));
    }
    if o.probes_answered > o.probes {
        return bad(format!(
            "probes_answered ({}) cannot exceed probes ({})",
            o.probes_answered, o.probes
        ));
    }
    if o.latency_ms > MAX_LATENCY_MS {
        return bad(format!(
            "latency_ms must be at most {MAX_LATENCY_MS}, got {}",
            o.latency_ms
        ));
    }
    if let Some(accepted) = c.accepted_at
        && o.period_start < accepted
    {
        return bad(format!(
            "period_start {} is before the contract was accepted at {accepted}",
            o.period_start
        ));
    }
    if o.period_start > now {
        return bad(format!(
            "period_start {} is in the future (now {now})",
            o.period_start
        ));
    }
    conn.execute(
        "INSERT INTO observations (contract, period_start, probes, probes_answered, latency_ms,
             evidence, submitted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (contract, period_start) DO UPDATE SET
             probes = excluded.probes, probes_answered = excluded.probes_answered,
             latency_ms = excluded.latency_ms, evidence = excluded.evidence,
             submitted_at = excluded.submitted_at",
        params![
            contract_id,
            o.period_start,
            o.probes.min(i64::MAX as u64) as i64,
            o.probes_answered.min(i64::MAX as u64) as i64,
            o.latency_ms.min(i64::MAX as u64) as i64,
            evidence,
            now
        ],
    )?;
    Ok(())
}

/// Stores (or replaces) the demander's feedback on a contract.
pub fn give_feedback(
    conn: &dyn Db,
    who: &Party,
    contract_id: &str,
    f: &Feedback,
    evidence: i64,
    now: i64,
) -> Result<Feedback> {
    demander_of(conn, who, contract_id)?;
    if !(1..=5).contains(&f.stars) {
        return Err(Error::BadRequest(format!(
            "stars must be 1 to 5, got {}",
            f.stars
        )));
    }
    let comment = f.comment.trim();
    if comment.chars().count() > 2000 {
        return Err(Error::BadRequest(
            "comment must be at most 2000 characters".into(),
        ));
    }
    conn.execute(
        "INSERT INTO feedback (contract, stars, comment, evidence, submitted_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (contract) DO UPDATE SET stars = excluded.stars,
             comment = excluded.comment, evidence = excluded.evidence,
             submitted_at = excluded.submitted_at",
        params![contract_id, i64::from(f.stars), comment, evidence, now],
    )?;
    Ok(Feedback {
        stars: f.stars,
        comment: comment.to_owned(),
    })
}

/// The feedback on one contract, if any.
pub fn feedback_of(conn: &dyn Db, contract_id: &str) -> Result<Option<Feedback>> {
    conn.query_opt(
        "SELECT stars, comment FROM feedback WHERE contract = ?1",
        [contract_id],
        |r| {
            Ok(Feedback {
                stars: u8::try_from(r.get::<i64>(0)?.clamp(1, 5)).unwrap_or(1),
                comment: r.get(1)?,
            })
        },
    )
}

/// What a provider's rating takes from the quality records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderQuality {
    pub probes: u64,
    pub probes_answered: u64,
    /// Probe-weighted mean of the periods' median latencies.
    pub latency_ms: Option<u64>,
    /// Mean seconds from proposal to acceptance over accepted contracts.
    pub accept_delay_secs: Option<u64>,
    /// Mean seconds from a period's end to the provider's receipt for it.
    pub receipt_delay_secs: Option<u64>,
    /// Mean seconds to answer tickets about it (filled in by the rating, which knows the
    /// time).
    pub ticket_response_secs: Option<u64>,
    pub feedback_count: u64,
    /// Mean stars, in hundredths.
    pub stars_x100: Option<u64>,
}

pub fn of_provider(conn: &dyn Db, provider: &str) -> Result<ProviderQuality> {
    let (probes, answered, weighted): (i64, i64, i64) = conn.query_row(
        "SELECT CAST(COALESCE(SUM(o.probes), 0) AS BIGINT),
                CAST(COALESCE(SUM(o.probes_answered), 0) AS BIGINT),
                CAST(COALESCE(SUM(o.latency_ms * o.probes_answered), 0) AS BIGINT)
         FROM observations o JOIN contracts c ON c.id = o.contract
         WHERE c.provider = ?1",
        [provider],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let (accepted, accept_delay): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), CAST(COALESCE(SUM(accepted_at - created_at), 0) AS BIGINT) FROM contracts
         WHERE provider = ?1 AND accepted_at IS NOT NULL",
        [provider],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (receipts, receipt_delay): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN r.submitted_at > r.period_end
                THEN r.submitted_at - r.period_end ELSE 0 END), 0) AS BIGINT)
         FROM receipts r JOIN contracts c ON c.id = r.contract
         WHERE c.provider = ?1 AND r.role = 'provider'",
        [provider],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    // Demanders' reviews, and the older one-way feedback on contracts without a review.
    let (feedback_count, stars): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), CAST(COALESCE(SUM(s.stars), 0) AS BIGINT) FROM (
             SELECT r.stars FROM reviews r WHERE r.subject = ?1 AND r.side = 'demander'
             UNION ALL
             SELECT f.stars FROM feedback f JOIN contracts c ON c.id = f.contract
             WHERE c.provider = ?1 AND NOT EXISTS (SELECT 1 FROM reviews r
                 WHERE r.contract = f.contract AND r.side = 'demander')
         ) s",
        [provider],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let n = |v: i64| v.max(0) as u64;
    Ok(ProviderQuality {
        probes: n(probes),
        probes_answered: n(answered),
        latency_ms: (answered > 0).then(|| n(weighted) / n(answered)),
        accept_delay_secs: (accepted > 0).then(|| n(accept_delay) / n(accepted)),
        receipt_delay_secs: (receipts > 0).then(|| n(receipt_delay) / n(receipts)),
        ticket_response_secs: None,
        feedback_count: n(feedback_count),
        stars_x100: (feedback_count > 0).then(|| n(stars) * 100 / n(feedback_count)),
    })
}

/// 1000 at or under `good`, 0 at or over `bad`, in between on a log scale.
pub fn log_score(value: u64, good: u64, bad: u64) -> u32 {
    if value <= good {
        return 1000;
    }
    if value >= bad {
        return 0;
    }
    let span = (bad as f64 / good.max(1) as f64).ln();
    let at = (value as f64 / good.max(1) as f64).ln();
    (1000.0 * (1.0 - at / span)).round().clamp(0.0, 1000.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scores_fall_from_good_to_bad() {
        assert_eq!(log_score(10, 100, 10_000), 1000);
        assert_eq!(log_score(100, 100, 10_000), 1000);
        assert_eq!(log_score(1000, 100, 10_000), 500);
        assert_eq!(log_score(10_000, 100, 10_000), 0);
        assert_eq!(log_score(u64::MAX, 100, 10_000), 0);
    }
}
