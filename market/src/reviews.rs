//! Reviews both ways: after a contract's first period (or its end) the demander reviews
//! the provider and the provider reviews the demander — 1 to 5 stars and a text, one per
//! contract and side, editable for a window after it was first given. Reviews are public:
//! anyone may list those about a party, and both ratings take them in.

use serde::{Deserialize, Serialize};
use sublet_market_api::contracts::{Contract, ContractState};
use sublet_market_api::identity::{Party, Role};
use sublet_market_api::{Error, Result};

use crate::contracts;
use crate::db::{Db, Row};
use crate::params;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reviews (
    contract TEXT NOT NULL,
    side TEXT NOT NULL,
    author TEXT NOT NULL,
    subject TEXT NOT NULL,
    stars INTEGER NOT NULL,
    text TEXT NOT NULL,
    evidence INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (contract, side)
);
CREATE INDEX IF NOT EXISTS reviews_by_subject ON reviews (subject, updated_at);
";

/// The longest review text, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// The most reviews one listing answers (newest first).
pub const MAX_LISTED: i64 = 200;

/// What a party says about the other side of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReview {
    /// 1 to 5.
    pub stars: u8,
    /// At most 2000 characters.
    #[serde(default)]
    pub text: String,
}

/// A stored review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub contract: String,
    /// The author's side of the contract: `demander` (reviewing the provider) or `provider`
    /// (reviewing the demander).
    pub side: Role,
    pub author: String,
    /// The party reviewed.
    pub subject: String,
    pub stars: u8,
    pub text: String,
    /// The signed request that last set it, kept as evidence.
    pub evidence: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Until when (unix seconds) the author may still change it.
    pub editable_until: i64,
}

/// The reviews about one party, newest first, with their mean.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewList {
    pub party: String,
    /// How many reviews there are about the party (the list holds at most 200).
    pub count: u64,
    /// Mean stars in hundredths (`450` is 4.5 stars); absent without reviews.
    pub mean_stars_x100: Option<u64>,
    pub reviews: Vec<Review>,
}

const COLUMNS: &str =
    "contract, side, author, subject, stars, text, evidence, created_at, updated_at";

fn from_row(r: &Row, window: i64) -> Result<Review> {
    let created_at: i64 = r.get(7)?;
    Ok(Review {
        contract: r.get(0)?,
        side: Role::parse(&r.get::<String>(1)?)?,
        author: r.get(2)?,
        subject: r.get(3)?,
        stars: u8::try_from(r.get::<i64>(4)?.clamp(1, 5)).unwrap_or(1),
        text: r.get(5)?,
        evidence: r.get(6)?,
        created_at,
        updated_at: r.get(8)?,
        editable_until: created_at.saturating_add(window),
    })
}

/// Whether the contract has something to review: a period is over (by the clock, or
/// because a side reported one), or it ended after it ran. A proposal never accepted has
/// none.
fn reviewable(conn: &dyn Db, c: &Contract, now: i64) -> Result<()> {
    let Some(accepted) = c.accepted_at else {
        return Err(Error::Conflict(format!(
            "contract {} was never accepted; there is nothing to review",
            c.id
        )));
    };
    let first_period_end = accepted.saturating_add(c.period_secs.max(1));
    if first_period_end <= now || c.state == ContractState::Terminated {
        return Ok(());
    }
    let reported: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM receipts WHERE contract = ?1)",
        [&c.id],
        |r| r.get(0),
    )?;
    if reported {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "contract {} is reviewable once its first period is over (at {first_period_end}), a period is reported or it has ended",
        c.id
    )))
}

/// Stores `who`'s review of the other side of `contract_id`, or changes it within
/// `window` seconds of its first submission.
pub fn give(
    conn: &dyn Db,
    who: &Party,
    contract_id: &str,
    new: &NewReview,
    evidence: i64,
    now: i64,
    window: i64,
) -> Result<Review> {
    let c = contracts::get(conn, contract_id)?;
    let (side, subject) = if who.id == c.demander {
        (Role::Demander, c.provider.clone())
    } else if who.id == c.provider {
        (Role::Provider, c.demander.clone())
    } else {
        return Err(Error::Forbidden(format!(
            "only the demander and the provider of contract {contract_id} review it"
        )));
    };
    if !(1..=5).contains(&new.stars) {
        return Err(Error::BadRequest(format!(
            "stars must be 1 to 5, got {}",
            new.stars
        )));
    }
    let text = new.text.trim();
    if text.chars().count() > MAX_TEXT_CHARS || text.chars().any(|ch| ch.is_control() && ch != '\n')
    {
        return Err(Error::BadRequest(format!(
            "text must be at most {MAX_TEXT_CHARS} printable characters (line breaks allowed)"
        )));
    }
    reviewable(conn, &c, now)?;
    let earlier: Option<i64> = conn.query_opt(
        "SELECT created_at FROM reviews WHERE contract = ?1 AND side = ?2",
        params![contract_id, side.as_str()],
        |r| r.get(0),
    )?;
    match earlier {
        Some(created) if now > created.saturating_add(window) => {
            return Err(Error::Conflict(format!(
                "the review of contract {contract_id} by its {} was given at {created} and could be changed until {}; it is final now",
                side.as_str(),
                created.saturating_add(window)
            )));
        }
        Some(_) => {
            conn.execute(
                "UPDATE reviews SET stars = ?3, text = ?4, evidence = ?5, updated_at = ?6
                 WHERE contract = ?1 AND side = ?2",
                params![
                    contract_id,
                    side.as_str(),
                    i64::from(new.stars),
                    text,
                    evidence,
                    now
                ],
            )?;
        }
        None => {
            conn.execute(
                "INSERT INTO reviews (contract, side, author, subject, stars, text, evidence,
                     created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![
                    contract_id,
                    side.as_str(),
                    who.id,
                    subject,
                    i64::from(new.stars),
                    text,
                    evidence,
                    now
                ],
            )?;
        }
    }
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM reviews WHERE contract = ?1 AND side = ?2"),
        params![contract_id, side.as_str()],
        |r| from_row(r, window),
    )?
    .ok_or_else(|| Error::Internal(format!("review of {contract_id} vanished")))
}

/// Both reviews of a contract (none, one or two), the demander's first.
pub fn of_contract(conn: &dyn Db, contract_id: &str, window: i64) -> Result<Vec<Review>> {
    contracts::get(conn, contract_id)?;
    conn.query_map(
        &format!("SELECT {COLUMNS} FROM reviews WHERE contract = ?1 ORDER BY side"),
        [contract_id],
        |r| from_row(r, window),
    )
}

/// The reviews about `party`, newest first (at most [`MAX_LISTED`]), with the count and
/// mean of all of them.
pub fn about(conn: &dyn Db, party: &str, window: i64) -> Result<ReviewList> {
    let (count, sum) = stars_about(conn, party)?;
    let reviews = conn.query_map(
        &format!(
            "SELECT {COLUMNS} FROM reviews WHERE subject = ?1
             ORDER BY updated_at DESC, contract LIMIT {MAX_LISTED}"
        ),
        [party],
        |r| from_row(r, window),
    )?;
    Ok(ReviewList {
        party: party.to_owned(),
        count,
        mean_stars_x100: (count > 0).then(|| sum * 100 / count),
        reviews,
    })
}

/// (how many reviews, the sum of their stars) about `party`.
pub fn stars_about(conn: &dyn Db, party: &str) -> Result<(u64, u64)> {
    let (count, sum): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), CAST(COALESCE(SUM(stars), 0) AS BIGINT) FROM reviews WHERE subject = ?1",
        [party],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((count.max(0) as u64, sum.max(0) as u64))
}
