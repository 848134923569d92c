//! Customer support: tickets on a contract, one of its periods or a party, with a thread
//! of messages between the opener, the other side and the market's support staff (keys
//! named at start, registered with the `support` role). A ticket is `open` until someone
//! other than its opener answers (`answered`), back to `open` when the opener writes
//! again, and ends `closed` or `escalated` — the latter opens a dispute on its contract
//! with the thread as its evidence. How long the other side takes to answer feeds its
//! responsiveness rating.

use serde::{Deserialize, Serialize};
use sublet_market_api::identity::{Party, Role, new_id};
use sublet_market_api::{Error, Result};

use crate::db::{Db, Row};
use crate::disputes::{self, Dispute, NewDispute};
use crate::{contracts, identity, params};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    opened_by TEXT NOT NULL,
    counterpart TEXT,
    contract TEXT,
    period_start INTEGER,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    first_response_at INTEGER,
    counterpart_response_at INTEGER,
    closed_at INTEGER,
    dispute TEXT
);
CREATE INDEX IF NOT EXISTS tickets_by_opener ON tickets (opened_by, state);
CREATE INDEX IF NOT EXISTS tickets_by_counterpart ON tickets (counterpart, state);
CREATE TABLE IF NOT EXISTS ticket_messages (
    ticket TEXT NOT NULL,
    seq INTEGER NOT NULL,
    author TEXT NOT NULL,
    author_role TEXT NOT NULL,
    body TEXT NOT NULL,
    evidence INTEGER NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (ticket, seq)
);
";

/// The longest subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// The longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// The most messages one ticket holds.
pub const MAX_MESSAGES: i64 = 100;
/// The most tickets one party may have open (not closed or escalated) as opener.
pub const MAX_OPEN_PER_PARTY: i64 = 20;
/// The most tickets one listing answers (most recently updated first).
pub const MAX_LISTED: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Waiting for an answer.
    Open,
    /// Someone other than the opener answered last.
    Answered,
    Closed,
    /// Turned into a dispute on the ticket's contract.
    Escalated,
}

impl TicketState {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Open => "open",
            TicketState::Answered => "answered",
            TicketState::Closed => "closed",
            TicketState::Escalated => "escalated",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "open" => TicketState::Open,
            "answered" => TicketState::Answered,
            "closed" => TicketState::Closed,
            "escalated" => TicketState::Escalated,
            other => {
                return Err(Error::Internal(format!(
                    "ticket state {other:?} in the database is not one the market knows"
                )));
            }
        })
    }

    fn is_done(self) -> bool {
        matches!(self, TicketState::Closed | TicketState::Escalated)
    }
}

/// What a party opens a ticket with: about a contract (and maybe one of its periods), about
/// a party it has had a contract with, or about neither (a question to support).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    pub subject: String,
    /// The first message.
    pub message: String,
    #[serde(default)]
    pub contract: Option<String>,
    /// A receipt period of `contract`, by its start.
    #[serde(default)]
    pub period_start: Option<i64>,
    /// A party the opener has (or had) a contract with; not with `contract`.
    #[serde(default)]
    pub party: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: i64,
    pub author: String,
    /// The author's role: `demander`, `provider` or `support`.
    pub author_role: Role,
    pub body: String,
    /// The signed request that carried it, kept as evidence.
    pub evidence: i64,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub opened_by: String,
    /// The other party the ticket concerns (the contract's other side, or the named party);
    /// absent for a question to support alone.
    pub counterpart: Option<String>,
    pub contract: Option<String>,
    pub period_start: Option<i64>,
    pub subject: String,
    pub state: TicketState,
    pub opened_at: i64,
    pub updated_at: i64,
    /// The first message by anyone but the opener.
    pub first_response_at: Option<i64>,
    /// The counterpart's first message: its response time is this minus `opened_at`.
    pub counterpart_response_at: Option<i64>,
    pub closed_at: Option<i64>,
    /// The dispute an escalation opened.
    pub dispute: Option<String>,
    /// The thread, oldest first (left out of listings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
}

const COLUMNS: &str = "id, opened_by, counterpart, contract, period_start, subject, state,
    opened_at, updated_at, first_response_at, counterpart_response_at, closed_at, dispute";

fn from_row(r: &Row) -> Result<Ticket> {
    Ok(Ticket {
        id: r.get(0)?,
        opened_by: r.get(1)?,
        counterpart: r.get(2)?,
        contract: r.get(3)?,
        period_start: r.get(4)?,
        subject: r.get(5)?,
        state: TicketState::parse(&r.get::<String>(6)?)?,
        opened_at: r.get(7)?,
        updated_at: r.get(8)?,
        first_response_at: r.get(9)?,
        counterpart_response_at: r.get(10)?,
        closed_at: r.get(11)?,
        dispute: r.get(12)?,
        messages: Vec::new(),
    })
}

fn text(field: &str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(|ch| ch.is_control() && ch != '\n')
    {
        return Err(Error::BadRequest(format!(
            "{field} must be 1 to {max} printable characters (line breaks allowed)"
        )));
    }
    Ok(v.to_owned())
}

fn row(conn: &dyn Db, id: &str) -> Result<Ticket> {
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM tickets WHERE id = ?1"),
        [id],
        from_row,
    )?
    .ok_or_else(|| Error::not_found(format!("ticket {id}")))
}

/// Support staff read every ticket, arbiters the escalated ones, anyone else those it
/// opened or that concern it.
fn check_viewer(t: &Ticket, who: &Party) -> Result<()> {
    let allowed = match who.role {
        Role::Support => true,
        Role::Arbiter => t.state == TicketState::Escalated,
        _ => t.opened_by == who.id || t.counterpart.as_deref() == Some(who.id.as_str()),
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "party {} may not read ticket {}: it is for its opener, the party it concerns and support staff",
            who.id, t.id
        )))
    }
}

/// The ticket with its thread, if `who` may read it.
pub fn get(conn: &dyn Db, who: &Party, id: &str) -> Result<Ticket> {
    let mut t = row(conn, id)?;
    check_viewer(&t, who)?;
    t.messages = conn.query_map(
        "SELECT seq, author, author_role, body, evidence, at FROM ticket_messages
         WHERE ticket = ?1 ORDER BY seq",
        [id],
        |r| {
            Ok(Message {
                seq: r.get(0)?,
                author: r.get(1)?,
                author_role: Role::parse(&r.get::<String>(2)?)?,
                body: r.get(3)?,
                evidence: r.get(4)?,
                at: r.get(5)?,
            })
        },
    )?;
    Ok(t)
}

/// Which tickets a listing shows: one state, or `any`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketFilter {
    Open,
    Answered,
    Closed,
    Escalated,
    #[default]
    Any,
}

/// The tickets `who` may read, most recently updated first, without their threads.
pub fn list_visible(conn: &dyn Db, who: &Party, filter: TicketFilter) -> Result<Vec<Ticket>> {
    let state = match filter {
        TicketFilter::Open => "AND state = 'open'",
        TicketFilter::Answered => "AND state = 'answered'",
        TicketFilter::Closed => "AND state = 'closed'",
        TicketFilter::Escalated => "AND state = 'escalated'",
        TicketFilter::Any => "",
    };
    let order = format!("ORDER BY updated_at DESC, id LIMIT {MAX_LISTED}");
    match who.role {
        Role::Support => conn.query_map(
            &format!("SELECT {COLUMNS} FROM tickets WHERE 1 = 1 {state} {order}"),
            params![],
            from_row,
        ),
        Role::Arbiter => conn.query_map(
            &format!("SELECT {COLUMNS} FROM tickets WHERE state = 'escalated' {state} {order}"),
            params![],
            from_row,
        ),
        _ => conn.query_map(
            &format!(
                "SELECT {COLUMNS} FROM tickets WHERE (opened_by = ?1 OR counterpart = ?1)
                 {state} {order}"
            ),
            [&who.id],
            from_row,
        ),
    }
}

fn add_message(
    conn: &dyn Db,
    ticket: &str,
    who: &Party,
    body: &str,
    evidence: i64,
    now: i64,
) -> Result<()> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM ticket_messages WHERE ticket = ?1",
        [ticket],
        |r| r.get(0),
    )?;
    if count >= MAX_MESSAGES {
        return Err(Error::Conflict(format!(
            "ticket {ticket} holds {MAX_MESSAGES} messages, the most a ticket keeps; open a new one or escalate it"
        )));
    }
    conn.execute(
        "INSERT INTO ticket_messages (ticket, seq, author, author_role, body, evidence, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            ticket,
            count + 1,
            who.id,
            who.role.as_str(),
            body,
            evidence,
            now
        ],
    )?;
    Ok(())
}

/// Opens a ticket; `evidence` is the signed request that opened it.
pub fn open(
    conn: &dyn Db,
    who: &Party,
    new: &NewTicket,
    evidence: i64,
    now: i64,
) -> Result<Ticket> {
    if !matches!(who.role, Role::Demander | Role::Provider) {
        return Err(Error::Forbidden(format!(
            "a {} does not open tickets; demanders and providers do, and support answers them",
            who.role.as_str()
        )));
    }
    let subject = text("subject", &new.subject, MAX_SUBJECT_CHARS)?;
    let message = text("message", &new.message, MAX_MESSAGE_CHARS)?;
    let counterpart = match (&new.contract, &new.party) {
        (Some(_), Some(_)) => {
            return Err(Error::BadRequest(
                "a ticket is about a contract or about a party, not both; leave party out".into(),
            ));
        }
        (Some(contract), None) => {
            let c = contracts::get(conn, contract)?;
            c.check_party(who)?;
            if let Some(start) = new.period_start {
                let known: bool = conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM receipts WHERE contract = ?1 AND period_start = ?2)",
                    params![contract, start],
                    |r| r.get(0),
                )?;
                if !known {
                    return Err(Error::BadRequest(format!(
                        "period_start {start} is not a reported period of contract {contract}"
                    )));
                }
            }
            Some(if c.demander == who.id {
                c.provider
            } else {
                c.demander
            })
        }
        (None, Some(party)) => {
            if new.period_start.is_some() {
                return Err(Error::BadRequest(
                    "period_start names a period of a contract; give contract too".into(),
                ));
            }
            let other = identity::party(conn, party)?;
            let shared: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM contracts WHERE (demander = ?1 AND provider = ?2)
                     OR (demander = ?2 AND provider = ?1))",
                params![who.id, other.id],
                |r| r.get(0),
            )?;
            if !shared {
                return Err(Error::Forbidden(format!(
                    "party {} has no contract with party {}; a ticket about a party is for its trading partners (ask support with no party named)",
                    who.id, other.id
                )));
            }
            Some(other.id)
        }
        (None, None) => {
            if new.period_start.is_some() {
                return Err(Error::BadRequest(
                    "period_start names a period of a contract; give contract too".into(),
                ));
            }
            None
        }
    };
    let open: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tickets WHERE opened_by = ?1 AND state IN ('open', 'answered')",
        [&who.id],
        |r| r.get(0),
    )?;
    if open >= MAX_OPEN_PER_PARTY {
        return Err(Error::TooMany(format!(
            "party {} has {open} tickets open, the most one party may; close some first",
            who.id
        )));
    }
    let id = new_id("tk")?;
    conn.execute(
        "INSERT INTO tickets (id, opened_by, counterpart, contract, period_start, subject, state,
             opened_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?7)",
        params![
            id,
            who.id,
            counterpart,
            new.contract,
            new.period_start,
            subject,
            now
        ],
    )?;
    add_message(conn, &id, who, &message, evidence, now)?;
    get(conn, who, &id)
}

/// Only the opener, the party the ticket concerns and support staff take part.
fn check_participant(t: &Ticket, who: &Party) -> Result<()> {
    if who.role == Role::Support
        || t.opened_by == who.id
        || t.counterpart.as_deref() == Some(who.id.as_str())
    {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "party {} does not take part in ticket {}",
            who.id, t.id
        )))
    }
}

/// Adds `who`'s message to the thread.
pub fn reply(
    conn: &dyn Db,
    who: &Party,
    id: &str,
    new: &NewMessage,
    evidence: i64,
    now: i64,
) -> Result<Ticket> {
    let t = row(conn, id)?;
    check_participant(&t, who)?;
    if t.state.is_done() {
        return Err(Error::Conflict(format!(
            "ticket {id} is {}; it takes no more messages",
            t.state.as_str()
        )));
    }
    let body = text("message", &new.message, MAX_MESSAGE_CHARS)?;
    add_message(conn, id, who, &body, evidence, now)?;
    let by_opener = who.id == t.opened_by;
    let state = if by_opener {
        TicketState::Open
    } else {
        TicketState::Answered
    };
    let first_response_at = match t.first_response_at {
        None if !by_opener => Some(now),
        earlier => earlier,
    };
    let counterpart_response_at = match t.counterpart_response_at {
        None if t.counterpart.as_deref() == Some(who.id.as_str()) => Some(now),
        earlier => earlier,
    };
    conn.execute(
        "UPDATE tickets SET state = ?2, updated_at = ?3, first_response_at = ?4,
             counterpart_response_at = ?5
         WHERE id = ?1",
        params![
            id,
            state.as_str(),
            now,
            first_response_at,
            counterpart_response_at
        ],
    )?;
    get(conn, who, id)
}

/// Closes the ticket; closing a closed ticket changes nothing.
pub fn close(conn: &dyn Db, who: &Party, id: &str, now: i64) -> Result<Ticket> {
    let t = row(conn, id)?;
    check_participant(&t, who)?;
    match t.state {
        TicketState::Closed => {}
        TicketState::Escalated => {
            return Err(Error::Conflict(format!(
                "ticket {id} was escalated to dispute {}; the arbiter's decision ends it",
                t.dispute.as_deref().unwrap_or("?")
            )));
        }
        TicketState::Open | TicketState::Answered => {
            conn.execute(
                "UPDATE tickets SET state = 'closed', closed_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
    }
    get(conn, who, id)
}

/// Turns the ticket into a dispute on its contract (by its opener or the other side), with
/// the thread — every message a signed request kept as evidence — named in the claim.
/// `evidence` is the escalating request, which becomes the dispute's opening evidence.
pub fn escalate(
    conn: &dyn Db,
    who: &Party,
    id: &str,
    evidence: i64,
    now: i64,
) -> Result<(Ticket, Dispute)> {
    let t = get(conn, who, id)?;
    if t.opened_by != who.id && t.counterpart.as_deref() != Some(who.id.as_str()) {
        return Err(Error::Forbidden(format!(
            "only the parties of ticket {id} escalate it; support staff answer or close it"
        )));
    }
    if let (TicketState::Escalated, Some(dispute)) = (t.state, &t.dispute) {
        let d = disputes::get(conn, dispute)?;
        return Ok((t, d));
    }
    if t.state == TicketState::Closed {
        return Err(Error::Conflict(format!(
            "ticket {id} is closed; open a new one or a dispute directly"
        )));
    }
    let Some(contract) = t.contract.clone() else {
        return Err(Error::Conflict(format!(
            "ticket {id} is not about a contract; disputes are decided on a contract"
        )));
    };
    let claim = escalation_claim(&t);
    let d = disputes::open(
        conn,
        who,
        &contract,
        &NewDispute {
            period_start: t.period_start,
            claim,
        },
        evidence,
        now,
    )?;
    conn.execute(
        "UPDATE tickets SET state = 'escalated', dispute = ?2, closed_at = ?3, updated_at = ?3
         WHERE id = ?1",
        params![id, d.id, now],
    )?;
    Ok((get(conn, who, id)?, d))
}

/// The dispute's claim: the ticket, the evidence ids of its thread, then as much of the
/// thread's text as the claim's 4000 characters hold.
fn escalation_claim(t: &Ticket) -> String {
    const CLAIM_CHARS: usize = 4000;
    let evidence: Vec<String> = t.messages.iter().map(|m| m.evidence.to_string()).collect();
    let mut claim = format!(
        "Escalated from support ticket {} ({}): {} messages, signed requests kept as evidence {}. Thread at GET /v1/tickets/{}.",
        t.id,
        t.subject,
        t.messages.len(),
        evidence.join(", "),
        t.id
    );
    for m in &t.messages {
        let line = format!(
            "\n[{} {} at {}] {}",
            m.author_role.as_str(),
            m.author,
            m.at,
            m.body
        );
        claim.push_str(&line);
    }
    if claim.chars().count() > CLAIM_CHARS {
        let cut: String = claim.chars().take(CLAIM_CHARS - 20).collect();
        claim = format!("{cut}\n[thread cut here]");
    }
    claim
}

/// How quickly `party` answers tickets that concern it: (mean seconds from opening to its
/// first message, how many tickets). A ticket it has not answered counts for as long as it
/// stays open; one closed or escalated without its answer does not count.
pub fn response_delay(conn: &dyn Db, party: &str, now: i64) -> Result<Option<(u64, u64)>> {
    let (count, total): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CASE
                 WHEN counterpart_response_at IS NOT NULL THEN counterpart_response_at - opened_at
                 ELSE ?2 - opened_at END), 0) AS BIGINT)
         FROM tickets WHERE counterpart = ?1
             AND (counterpart_response_at IS NOT NULL OR state IN ('open', 'answered'))",
        params![party, now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((count > 0).then(|| (total.max(0) as u64 / count as u64, count as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escalation_claim_names_the_thread_and_fits_a_dispute() {
        let message = |seq, body: &str| Message {
            seq,
            author: format!("p{seq}"),
            author_role: Role::Demander,
            body: body.into(),
            evidence: 40 + seq,
            at: 100 + seq,
        };
        let mut t = Ticket {
            id: "tk_1".into(),
            opened_by: "p1".into(),
            counterpart: Some("p2".into()),
            contract: Some("ct_1".into()),
            period_start: None,
            subject: "missing shards".into(),
            state: TicketState::Answered,
            opened_at: 100,
            updated_at: 102,
            first_response_at: Some(102),
            counterpart_response_at: Some(102),
            closed_at: None,
            dispute: None,
            messages: vec![message(1, "where are they?"), message(2, "lost a disk")],
        };
        let claim = escalation_claim(&t);
        assert!(claim.starts_with("Escalated from support ticket tk_1 (missing shards): 2 messages, signed requests kept as evidence 41, 42."), "{claim}");
        assert!(claim.contains("lost a disk"), "{claim}");
        t.messages = (1..=5).map(|i| message(i, &"x".repeat(3000))).collect();
        let long = escalation_claim(&t);
        assert!(long.chars().count() <= 4000, "{}", long.chars().count());
        assert!(long.ends_with("[thread cut here]"));
    }
}
