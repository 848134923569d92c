//! Usage receipts: what the demander's gateway and the provider each report per period of
//! a contract, and the arithmetic both sides and the market share — GiB-hours, periods
//! counted from acceptance, a period's price, when two receipts agree. Storing and
//! settling receipts is the market's (`sublet-market`'s `receipts`).

use serde::{Deserialize, Serialize};

use crate::contracts::Contract;
use crate::credits::{MAX_AMOUNT, Micros};

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
    /// Shards of the provider the demander's gateway found bad during the period outside
    /// audits: a read answered with bytes that fail the shard's recorded hash, or with
    /// nothing where a shard was acknowledged; a write acknowledged under another hash; a
    /// scrub finding a shard corrupt or missing. Only the demander sees these (a provider
    /// that lies does not count its lies), so this field is the demander's account alone:
    /// it is never compared with the provider's receipt, does not hold up settlement, and
    /// enters the provider's rating. Left out of the JSON when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shards_failed: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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

/// Egress figures this close always agree: a read the gateway gave up on (a hedged read
/// answered elsewhere first) leaves a few chunks the provider sent and the gateway dropped.
pub const EGRESS_SLACK_BYTES: u64 = 8 << 20;

/// Whether two meter readings agree within `tolerance_bps` of the larger, or `slack`.
fn close(a: u64, b: u64, tolerance_bps: i64, slack: u64) -> bool {
    let diff = a.abs_diff(b);
    let allowed = u128::from(a.max(b)) * tolerance_bps.clamp(0, 10_000) as u128 / 10_000;
    diff <= slack || u128::from(diff) <= allowed
}

/// Whether two receipts of one period agree (see [`mismatched_fields`]).
pub fn agree(a: &UsageReceipt, b: &UsageReceipt, tolerance_bps: i64) -> bool {
    mismatched_fields(a, b, tolerance_bps).is_empty()
}

/// The fields on which two receipts of one period disagree. Storage and egress are
/// metered by each side's own sampling, so they agree within the policy's tolerance (and
/// GiB-hours within one, for rounding at a boundary); the period and audit counts must
/// match exactly. `shards_failed` is the demander's account alone and never compared.
pub fn mismatched_fields(
    a: &UsageReceipt,
    b: &UsageReceipt,
    tolerance_bps: i64,
) -> Vec<&'static str> {
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
            shards_failed: 0,
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
    #[allow(clippy::unwrap_used)]
    fn shard_failures_are_the_demanders_word_and_never_a_mismatch() {
        let provider = UsageReceipt {
            period_start: 0,
            period_end: 3600,
            gib_hours: 1,
            egress_bytes: 0,
            audits_passed: 3,
            audits_failed: 0,
            shards_failed: 0,
        };
        let demander = UsageReceipt {
            shards_failed: 7,
            ..provider.clone()
        };
        assert!(agree(&demander, &provider, 0));
        // On the wire: absent when zero (a receipt as older markets take it), read back
        // when present, and a receipt without it is a receipt with none.
        let wire = serde_json::to_value(&provider).unwrap();
        assert!(wire.get("shards_failed").is_none(), "{wire}");
        let wire = serde_json::to_value(&demander).unwrap();
        assert_eq!(wire["shards_failed"], 7);
        let back: UsageReceipt = serde_json::from_value(wire).unwrap();
        assert_eq!(back, demander);
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
