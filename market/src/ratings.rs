//! Ratings computed from the market's own records. Each score lists its
//! inputs — the numbers, their weights and what they mean — so a party can
//! see why it has the score it has and what would raise it.

use crate::db::Db;
use serde::Serialize;
use sublet_market_api::Result;
use sublet_market_api::identity::{Party, Role};
use sublet_market_api::receipts::{UsageReceipt, agree};

use crate::attestations::{AttestationKind, Trust, TrustLevel};
use crate::disputes;
use crate::quality::{self, ProviderQuality, log_score};

pub mod credit;

/// Scores run from 0 to this.
pub const MAX_SCORE: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rating {
    pub party: String,
    pub role: Role,
    /// What the market's attestors say about the party (see the `attestations` input).
    pub trust_level: TrustLevel,
    /// 0 ..= 1000: the weighted sum of the inputs' scores.
    pub score: u32,
    pub inputs: Vec<RatingInput>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RatingInput {
    pub name: &'static str,
    /// The measured value, e.g. `"97/100 audits passed"`.
    pub value: String,
    /// 0 ..= 1000.
    pub score: u32,
    /// Share of the total score, in percent; the weights of one rating sum to 100.
    pub weight_percent: u32,
    pub explanation: String,
}

/// `good / total` on the 0..=1000 scale; `None` without any observation.
pub(crate) fn ratio(good: u64, total: u64) -> Option<u32> {
    (total > 0).then(|| (good.min(total) * u64::from(MAX_SCORE) / total) as u32)
}

/// Without observations an input counts as middling, neither rewarding nor
/// punishing a newcomer.
pub(crate) const NEUTRAL: u32 = MAX_SCORE / 2;

pub(crate) fn disputes_input(lost: u32, weight_percent: u32) -> RatingInput {
    RatingInput {
        name: "disputes_lost",
        value: format!("{lost} lost"),
        score: MAX_SCORE.saturating_sub(lost.saturating_mul(250)),
        weight_percent,
        explanation: "each dispute an arbiter decided against the party costs 250 of 1000".into(),
    }
}

fn combine(party: &Party, trust: &Trust, inputs: Vec<RatingInput>) -> Rating {
    debug_assert_eq!(inputs.iter().map(|i| i.weight_percent).sum::<u32>(), 100);
    let score = inputs
        .iter()
        .map(|i| i.score * i.weight_percent)
        .sum::<u32>()
        / 100;
    Rating {
        party: party.id.clone(),
        role: party.role,
        trust_level: trust.level,
        score,
        inputs,
    }
}

impl Trust {
    /// The rating input that explains the trust level.
    pub fn rating_input(&self, weight_percent: u32) -> RatingInput {
        let mut said: Vec<String> = Vec::new();
        for a in &self.active {
            let line = match a.kind {
                AttestationKind::Email => format!("email verified by {}", a.attestor_id),
                AttestationKind::Operator => format!("vouched for by {}", a.attestor_id),
            };
            if !said.contains(&line) {
                said.push(line);
            }
        }
        if !self.contacts.is_empty() {
            said.push(format!(
                "{} e-mail contact(s) verified by the market",
                self.contacts.len()
            ));
        }
        RatingInput {
            name: "attestations",
            value: if said.is_empty() {
                "no valid attestation".into()
            } else {
                said.join("; ")
            },
            score: match self.level {
                TrustLevel::Unverified => 0,
                TrustLevel::Verified => 500,
                TrustLevel::Vouched => 1000,
            },
            weight_percent,
            explanation: format!(
                "trust level {}: an e-mail address verified by one of the market's attestors or by the market's own code challenge counts 500, an attestor vouching for the party (operator) 1000, none 0; revoked and expired attestations don't count",
                self.level.as_str()
            ),
        }
    }
}

/// Uptime (15), latency (10), responsiveness (5) and feedback (10) of a provider.
fn quality_inputs(q: &ProviderQuality) -> Vec<RatingInput> {
    let uptime = match ratio(q.probes_answered, q.probes) {
        Some(score) => RatingInput {
            name: "uptime",
            value: format!(
                "{}.{:02}% of {} probes answered",
                q.probes_answered * 100 / q.probes,
                q.probes_answered * 10_000 / q.probes % 100,
                q.probes
            ),
            score,
            weight_percent: 15,
            explanation: "health probes of the demanders' gateways the provider answered".into(),
        },
        None => RatingInput {
            name: "uptime",
            value: "no probes reported yet".into(),
            score: NEUTRAL,
            weight_percent: 15,
            explanation: "counts as 500 until a demander's gateway reports its probes".into(),
        },
    };
    let latency = match q.latency_ms {
        Some(ms) => RatingInput {
            name: "latency",
            value: format!("{ms} ms typical probe answer"),
            score: log_score(ms, 50, 5_000),
            weight_percent: 10,
            explanation:
                "median probe latency the demanders' gateways saw: 1000 at 50 ms or less, 0 at 5 s"
                    .into(),
        },
        None => RatingInput {
            name: "latency",
            value: "no probes reported yet".into(),
            score: NEUTRAL,
            weight_percent: 10,
            explanation: "counts as 500 until a demander's gateway reports its probes".into(),
        },
    };
    let responsiveness = {
        let scores: Vec<u32> = [
            q.accept_delay_secs.map(|s| log_score(s, 60, 86_400)),
            q.receipt_delay_secs.map(|s| log_score(s, 60, 86_400)),
            q.ticket_response_secs.map(credit::ticket_score),
        ]
        .into_iter()
        .flatten()
        .collect();
        let describe = |s: Option<u64>| s.map_or("none yet".to_owned(), |s| format!("{s} s"));
        RatingInput {
            name: "responsiveness",
            value: format!(
                "proposals accepted after {}, receipts sent {} after a period, tickets answered after {}",
                describe(q.accept_delay_secs),
                describe(q.receipt_delay_secs),
                describe(q.ticket_response_secs)
            ),
            score: if scores.is_empty() {
                NEUTRAL
            } else {
                scores.iter().sum::<u32>() / scores.len() as u32
            },
            weight_percent: 5,
            explanation: "mean of the delays to accept proposals and to report receipts (1000 within a minute, 0 after a day) and to answer tickets about it (1000 within an hour, 0 after a week; an unanswered open ticket counts for as long as it waits)".into(),
        }
    };
    let feedback = match q.stars_x100 {
        Some(stars) => RatingInput {
            name: "feedback",
            value: format!(
                "{}.{:02} stars from {} demanders",
                stars / 100,
                stars % 100,
                q.feedback_count
            ),
            score: ((stars.saturating_sub(100)) * 1000 / 400).min(1000) as u32,
            weight_percent: 10,
            explanation: "what demanders say in their reviews (1 to 5 stars, one per contract): 1000 at 5 stars, 0 at 1".into(),
        },
        None => RatingInput {
            name: "feedback",
            value: "no feedback yet".into(),
            score: NEUTRAL,
            weight_percent: 10,
            explanation: "counts as 500 until a demander reviews the provider".into(),
        },
    };
    vec![uptime, latency, responsiveness, feedback]
}

/// `party`'s rating as of `now`; receipts agree within `tolerance_bps` as settlement takes
/// them; `trust` is what the market's attestors (and its own contact checks) say about it.
pub fn rating(
    conn: &dyn Db,
    party: &Party,
    tolerance_bps: i64,
    trust: &Trust,
    now: i64,
) -> Result<Rating> {
    let lost = disputes::lost_by(conn, &party.id)?;
    Ok(match party.role {
        Role::Provider => {
            // Audits as both sides agreed them, in settled periods only.
            let (passed, failed): (i64, i64) = conn.query_row(
                "SELECT CAST(COALESCE(SUM(r.audits_passed), 0) AS BIGINT),
                        CAST(COALESCE(SUM(r.audits_failed), 0) AS BIGINT)
                 FROM receipts r
                 JOIN contracts c ON c.id = r.contract
                 JOIN settled_periods s ON s.contract = r.contract AND s.period_start = r.period_start
                 WHERE c.provider = ?1 AND r.role = 'provider'",
                [&party.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // Shards its demanders' gateways found bad outside audits, on their word, in
            // every period they reported: a provider that lies about what it serves does
            // not count its lies, and the periods it lies in may never settle.
            let shards_failed: i64 = conn.query_row(
                "SELECT CAST(COALESCE(SUM(r.shards_failed), 0) AS BIGINT)
                 FROM receipts r JOIN contracts c ON c.id = r.contract
                 WHERE c.provider = ?1 AND r.role = 'demander'",
                [&party.id],
                |r| r.get(0),
            )?;
            let (passed, failed, bad) = (
                passed.max(0) as u64,
                failed.max(0) as u64,
                shards_failed.max(0) as u64,
            );
            let checks = passed.saturating_add(failed).saturating_add(bad);
            let audits = match ratio(passed, checks) {
                Some(score) => RatingInput {
                    name: "audit_pass_rate",
                    value: if bad == 0 {
                        format!("{passed}/{} audits passed", passed.saturating_add(failed))
                    } else {
                        format!(
                            "{passed}/{} audits passed, {bad} shards found bad by demanders",
                            passed.saturating_add(failed)
                        )
                    },
                    score,
                    weight_percent: 40,
                    explanation: "audits in settled periods, each shard its demanders' gateways found bad on a read, write or scrub counting as a failed one: a provider that can serve random slices of its shards, and serves them whole, holds the data".into(),
                },
                None => RatingInput {
                    name: "audit_pass_rate",
                    value: "no audits yet".into(),
                    score: NEUTRAL,
                    weight_percent: 40,
                    explanation: "no settled period with audits yet; counts as 500 until there is one".into(),
                },
            };
            let (agreed, reported) = receipt_agreement(conn, &party.id, "provider", tolerance_bps)?;
            let agreement = match ratio(agreed, reported) {
                Some(score) => RatingInput {
                    name: "receipt_agreement",
                    value: format!("{agreed}/{reported} periods agreed"),
                    score,
                    weight_percent: 10,
                    explanation: "periods where the provider's receipt matches the demander's; open mismatches count against it".into(),
                },
                None => RatingInput {
                    name: "receipt_agreement",
                    value: "no periods reported by both sides yet".into(),
                    score: NEUTRAL,
                    weight_percent: 10,
                    explanation: "counts as 500 until both sides have reported a period".into(),
                },
            };
            combine(party, trust, {
                let mut q = quality::of_provider(conn, &party.id)?;
                q.ticket_response_secs =
                    crate::tickets::response_delay(conn, &party.id, now)?.map(|(secs, _)| secs);
                let mut inputs = vec![
                    audits,
                    agreement,
                    disputes_input(lost, 5),
                    trust.rating_input(5),
                ];
                inputs.extend(quality_inputs(&q));
                inputs
            })
        }
        Role::Demander => {
            let record = credit::demander_record(conn, &party.id, tolerance_bps, now)?;
            combine(party, trust, credit::demander_inputs(&record, trust))
        }
        Role::Arbiter | Role::Support => Rating {
            party: party.id.clone(),
            role: party.role,
            trust_level: trust.level,
            score: MAX_SCORE,
            inputs: Vec::new(),
        },
    })
}

/// (periods whose two receipts agree within `tolerance_bps`, periods both sides reported)
/// on the contracts where `party` is `side`.
pub(crate) fn receipt_agreement(
    conn: &dyn Db,
    party: &str,
    side: &str,
    tolerance_bps: i64,
) -> Result<(u64, u64)> {
    let column = if side == "provider" {
        "provider"
    } else {
        "demander"
    };
    let rows = conn.query_map(
        &format!(
            "SELECT d.period_start, d.period_end, d.gib_hours, d.egress_bytes, d.audits_passed,
                d.audits_failed, p.period_end, p.gib_hours, p.egress_bytes, p.audits_passed,
                p.audits_failed
         FROM receipts d
         JOIN receipts p ON p.contract = d.contract AND p.period_start = d.period_start
             AND p.role = 'provider'
         JOIN contracts c ON c.id = d.contract
         WHERE d.role = 'demander' AND c.{column} = ?1"
        ),
        [party],
        |r| {
            let n = |i: usize| r.get::<i64>(i).map(|v| v.max(0) as u64);
            let start: i64 = r.get(0)?;
            let d = UsageReceipt {
                period_start: start,
                period_end: r.get(1)?,
                gib_hours: n(2)?,
                egress_bytes: n(3)?,
                audits_passed: r.get(4)?,
                audits_failed: r.get(5)?,
                shards_failed: 0,
            };
            let p = UsageReceipt {
                period_start: start,
                period_end: r.get(6)?,
                gib_hours: n(7)?,
                egress_bytes: n(8)?,
                audits_passed: r.get(9)?,
                audits_failed: r.get(10)?,
                shards_failed: 0,
            };
            Ok((d, p))
        },
    )?;
    let (mut agreed, mut reported) = (0, 0);
    for (d, p) in rows {
        reported += 1;
        if agree(&d, &p, tolerance_bps) {
            agreed += 1;
        }
    }
    Ok((agreed, reported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_scales_and_handles_no_data() {
        assert_eq!(ratio(7, 10), Some(700));
        assert_eq!(ratio(0, 0), None);
        assert_eq!(ratio(11, 10), Some(1000));
    }

    #[test]
    fn weights_combine_into_the_score() {
        let party = Party {
            id: "p".into(),
            public_key: String::new(),
            role: Role::Provider,
            name: "p".into(),
            registered_at: 0,
        };
        let input = |score, weight_percent| RatingInput {
            name: "x",
            value: String::new(),
            score,
            weight_percent,
            explanation: String::new(),
        };
        let r = combine(
            &party,
            &Trust::default(),
            vec![
                input(700, 65),
                input(1000, 20),
                input(750, 10),
                input(1000, 5),
            ],
        );
        assert_eq!(r.score, 455 + 200 + 75 + 50);
        assert_eq!(r.trust_level, TrustLevel::Unverified);
    }
}
