//! A demander's credit as the platform promises it: its payment record, its compliance
//! (receipts that agree with its providers', disputes lost, chargebacks), how it
//! interacts (reporting its receipts on time, answering tickets), what providers say in
//! their reviews, and its attestations — each a rating input with its weight, value and
//! meaning. [`DemanderRecord`] is what the books say; [`demander_inputs`] scores it.

use sublet_market_api::Result;

use super::{NEUTRAL, RatingInput, disputes_input, ratio, receipt_agreement};
use crate::attestations::Trust;
use crate::db::Db;
use crate::params;
use crate::quality::log_score;
use crate::{disputes, reviews, tickets};

/// What the market's books say about a demander.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemanderRecord {
    /// Periods paid from escrow, and periods both sides agreed (paid or waiting for funds).
    pub periods_paid: u64,
    pub periods_agreed: u64,
    /// Periods whose two receipts agree, of those both sides reported.
    pub receipts_agreeing: u64,
    pub receipts_compared: u64,
    pub disputes_lost: u32,
    /// Disputes lost whose amount the contract's escrow did not cover, so the arbiter's
    /// decision took it from the demander's own credits.
    pub chargebacks: u32,
    /// Mean seconds from a period's end to the demander's receipt for it.
    pub receipt_delay_secs: Option<u64>,
    /// Mean seconds to answer tickets about it, and how many tickets.
    pub ticket_response: Option<(u64, u64)>,
    /// Reviews providers gave it: how many, and their stars added up.
    pub reviews: u64,
    pub review_stars: u64,
}

/// Reads `party`'s record; receipts agree within `tolerance_bps` as settlement takes them.
pub fn demander_record(
    conn: &dyn Db,
    party: &str,
    tolerance_bps: i64,
    now: i64,
) -> Result<DemanderRecord> {
    let (agreeing, compared) = receipt_agreement(conn, party, "demander", tolerance_bps)?;
    let paid: i64 = conn.query_row(
        "SELECT COUNT(*) FROM settled_periods s JOIN contracts c ON c.id = s.contract
         WHERE c.demander = ?1",
        [party],
        |r| r.get(0),
    )?;
    let chargebacks: u32 = conn.query_row(
        "SELECT COUNT(*) FROM disputes d JOIN contracts c ON c.id = d.contract
         WHERE c.demander = ?1 AND d.in_favour_of = 'provider'
           AND EXISTS (SELECT 1 FROM operations o WHERE o.op_id = 'dispute:' || d.id || ':available')",
        [party],
        |r| r.get(0),
    )?;
    let (receipts, delay): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN r.submitted_at > r.period_end
                THEN r.submitted_at - r.period_end ELSE 0 END), 0) AS BIGINT)
         FROM receipts r JOIN contracts c ON c.id = r.contract
         WHERE c.demander = ?1 AND r.role = 'demander'",
        params![party],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (reviews, review_stars) = reviews::stars_about(conn, party)?;
    let paid = paid.max(0) as u64;
    Ok(DemanderRecord {
        periods_paid: paid,
        periods_agreed: agreeing.max(paid),
        receipts_agreeing: agreeing,
        receipts_compared: compared,
        disputes_lost: disputes::lost_by(conn, party)?,
        chargebacks,
        receipt_delay_secs: (receipts > 0).then(|| delay.max(0) as u64 / receipts as u64),
        ticket_response: tickets::response_delay(conn, party, now)?,
        reviews,
        review_stars,
    })
}

/// The stars of `count` reviews adding up to `sum` as a rating input; `by` names who gave
/// them.
pub fn reviews_input(count: u64, sum: u64, weight_percent: u32, by: &str) -> RatingInput {
    if count == 0 {
        return RatingInput {
            name: "reviews",
            value: "no reviews yet".into(),
            score: NEUTRAL,
            weight_percent,
            explanation: format!("counts as 500 until {by} review the party"),
        };
    }
    let x100 = sum * 100 / count;
    RatingInput {
        name: "reviews",
        value: format!(
            "{}.{:02} stars from {count} reviews",
            x100 / 100,
            x100 % 100
        ),
        score: stars_score(x100),
        weight_percent,
        explanation: format!(
            "mean stars {by} gave in their reviews (1 to 5, one per contract): 1000 at 5 stars, 0 at 1"
        ),
    }
}

/// Mean stars in hundredths on the 0..=1000 scale: 0 at one star, 1000 at five.
pub fn stars_score(x100: u64) -> u32 {
    (x100.saturating_sub(100) * 1000 / 400).min(1000) as u32
}

/// 1000 within an hour, 0 after a week, on a log scale.
pub fn ticket_score(secs: u64) -> u32 {
    log_score(secs, 3_600, 7 * 86_400)
}

/// A demander's rating inputs; the weights sum to 100.
pub fn demander_inputs(r: &DemanderRecord, trust: &Trust) -> Vec<RatingInput> {
    let payment = match ratio(r.periods_paid, r.periods_agreed) {
        Some(score) => RatingInput {
            name: "payment_record",
            value: format!("{}/{} agreed periods paid", r.periods_paid, r.periods_agreed),
            score,
            weight_percent: 40,
            explanation: "agreed periods the escrow covered; periods waiting for a prepayment count against it".into(),
        },
        None => RatingInput {
            name: "payment_record",
            value: "no agreed periods yet".into(),
            score: NEUTRAL,
            weight_percent: 40,
            explanation: "counts as 500 until a period is agreed".into(),
        },
    };
    let agreement = match ratio(r.receipts_agreeing, r.receipts_compared) {
        Some(score) => RatingInput {
            name: "receipt_agreement",
            value: format!("{}/{} periods agreed", r.receipts_agreeing, r.receipts_compared),
            score,
            weight_percent: 10,
            explanation: "compliance: periods where the demander's receipt matches its provider's; open mismatches count against it".into(),
        },
        None => RatingInput {
            name: "receipt_agreement",
            value: "no periods reported by both sides yet".into(),
            score: NEUTRAL,
            weight_percent: 10,
            explanation: "counts as 500 until both sides have reported a period".into(),
        },
    };
    let chargebacks = RatingInput {
        name: "chargebacks",
        value: format!("{} charged back", r.chargebacks),
        score: 1000u32.saturating_sub(r.chargebacks.saturating_mul(500)),
        weight_percent: 5,
        explanation: "compliance: disputes lost whose amount the contract's escrow did not cover, so it was taken back from the demander's own credits; each costs 500 of 1000".into(),
    };
    let responsiveness = {
        let mut parts = Vec::new();
        let mut scores = Vec::new();
        match r.receipt_delay_secs {
            Some(s) => {
                parts.push(format!("receipts sent {s} s after a period"));
                scores.push(log_score(s, 60, 86_400));
            }
            None => parts.push("no receipts yet".into()),
        }
        match r.ticket_response {
            Some((s, n)) => {
                parts.push(format!("tickets answered after {s} s ({n} tickets)"));
                scores.push(ticket_score(s));
            }
            None => parts.push("no tickets to answer yet".into()),
        }
        RatingInput {
            name: "responsiveness",
            value: parts.join(", "),
            score: if scores.is_empty() {
                NEUTRAL
            } else {
                scores.iter().sum::<u32>() / scores.len() as u32
            },
            weight_percent: 10,
            explanation: "interaction: the mean of how soon its receipts follow a period (1000 within a minute, 0 after a day) and how soon it answers tickets about it (1000 within an hour, 0 after a week; an unanswered open ticket counts for as long as it waits); 500 with neither".into(),
        }
    };
    vec![
        payment,
        agreement,
        disputes_input(r.disputes_lost, 10),
        chargebacks,
        responsiveness,
        reviews_input(r.reviews, r.review_stars, 15, "providers"),
        trust.rating_input(10),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestations::TrustLevel;

    fn score(r: &DemanderRecord) -> u32 {
        let inputs = demander_inputs(r, &Trust::default());
        assert_eq!(inputs.iter().map(|i| i.weight_percent).sum::<u32>(), 100);
        inputs
            .iter()
            .map(|i| i.score * i.weight_percent)
            .sum::<u32>()
            / 100
    }

    fn input(r: &DemanderRecord, name: &str) -> RatingInput {
        demander_inputs(r, &Trust::default())
            .into_iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no input {name}"))
    }

    /// A newcomer: every input without observations counts as 500, no disputes or
    /// chargebacks as 1000, no attestation as 0.
    #[test]
    fn a_newcomer_sits_in_the_middle() {
        let r = DemanderRecord::default();
        assert_eq!(score(&r), 200 + 50 + 100 + 50 + 50 + 75);
        assert_eq!(input(&r, "reviews").value, "no reviews yet");
    }

    #[test]
    fn each_input_moves_the_score_the_documented_way() {
        let base = DemanderRecord {
            periods_paid: 4,
            periods_agreed: 4,
            receipts_agreeing: 4,
            receipts_compared: 4,
            receipt_delay_secs: Some(30),
            ticket_response: Some((600, 1)),
            reviews: 2,
            review_stars: 10,
            ..DemanderRecord::default()
        };
        let top = score(&base);
        // payment 400, agreement 100, disputes 100, chargebacks 50, responsiveness 100,
        // reviews 150, attestations 0.
        assert_eq!(top, 900);

        let unpaid = DemanderRecord {
            periods_paid: 2,
            ..base.clone()
        };
        assert_eq!(input(&unpaid, "payment_record").score, 500);
        assert_eq!(score(&unpaid), top - 200);

        let mismatching = DemanderRecord {
            receipts_agreeing: 2,
            ..base.clone()
        };
        assert_eq!(
            input(&mismatching, "receipt_agreement").value,
            "2/4 periods agreed"
        );
        assert_eq!(score(&mismatching), top - 50);

        let lost = DemanderRecord {
            disputes_lost: 2,
            ..base.clone()
        };
        assert_eq!(score(&lost), top - 50);

        let charged_back = DemanderRecord {
            chargebacks: 1,
            ..base.clone()
        };
        assert_eq!(input(&charged_back, "chargebacks").score, 500);
        assert_eq!(score(&charged_back), top - 25);

        let slow = DemanderRecord {
            ticket_response: Some((7 * 86_400, 1)),
            ..base.clone()
        };
        assert_eq!(input(&slow, "responsiveness").score, 500);
        assert_eq!(score(&slow), top - 50);

        let disliked = DemanderRecord {
            review_stars: 2,
            ..base.clone()
        };
        assert_eq!(
            input(&disliked, "reviews").value,
            "1.00 stars from 2 reviews"
        );
        assert_eq!(score(&disliked), top - 150);

        let verified = Trust {
            level: TrustLevel::Verified,
            ..Trust::default()
        };
        let inputs = demander_inputs(&base, &verified);
        let with_trust = inputs
            .iter()
            .map(|i| i.score * i.weight_percent)
            .sum::<u32>()
            / 100;
        assert_eq!(with_trust, top + 50);
    }

    #[test]
    fn ticket_answers_score_from_an_hour_to_a_week() {
        assert_eq!(ticket_score(60), 1000);
        assert_eq!(ticket_score(3_600), 1000);
        assert_eq!(ticket_score(7 * 86_400), 0);
        let mid = ticket_score(86_400);
        assert!(mid > 0 && mid < 1000, "{mid}");
    }
}
