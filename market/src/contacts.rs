//! The market's own identity check: a party names an e-mail-like contact, the market
//! sends a single-use code to it through a [`Delivery`], and the party proves it controls
//! the contact by sending the code back in a request signed with its key. A verified
//! contact makes the party `verified`, like an attestor's e-mail attestation. Only the
//! SHA-256 of the trimmed, lowercased address is kept.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sublet_market_api::identity::{Party, random_hex, sha256_hex};
use sublet_market_api::{Error, Result};

use crate::db::Db;
use crate::params;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contact_challenges (
    party TEXT PRIMARY KEY,
    email_sha256 TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    party TEXT NOT NULL,
    email_sha256 TEXT NOT NULL,
    verified_at INTEGER NOT NULL,
    evidence INTEGER NOT NULL,
    PRIMARY KEY (party, email_sha256)
);
";

/// The SHA-256 (hex) of an e-mail address, trimmed and lowercased: what an
/// `email` attestation carries instead of the address, and all the market's own contact
/// check keeps of one.
pub fn email_hash(address: &str) -> Result<String> {
    let address = address.trim().to_lowercase();
    let well_formed = address.len() <= 254
        && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        && address
            .rsplit_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if !well_formed {
        return Err(Error::BadRequest(format!(
            "{address:?} is not an e-mail address like name@example.org"
        )));
    }
    Ok(sha256_hex(address.as_bytes()))
}

/// How long a code stays valid, in seconds.
pub const CODE_TTL: i64 = 3600;
/// How many wrong codes end a challenge.
pub const MAX_ATTEMPTS: i64 = 5;
/// How soon a party may ask for another code, in seconds (each one is a message sent).
pub const REISSUE_AFTER: i64 = 60;
/// The most contacts one party may have verified.
pub const MAX_CONTACTS: i64 = 5;

/// Sends a verification code to a contact. The market has no mail server of its own: a
/// deployment plugs one in here; [`FileDelivery`] writes the codes to a file for
/// development and tests.
pub trait Delivery: Send + Sync {
    /// Sends `code` for `party` to `address`; an error stops the challenge.
    fn deliver(&self, address: &str, party: &str, code: &str) -> Result<()>;
}

/// Appends each code as one JSON line `{"to", "party", "code"}` to a file: for development
/// and tests, where the "mailbox" is that file.
pub struct FileDelivery {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileDelivery {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }
}

impl Delivery for FileDelivery {
    fn deliver(&self, address: &str, party: &str, code: &str) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let line = serde_json::json!({"to": address, "party": party, "code": code});
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| {
                Error::Internal(format!(
                    "writing the verification code to {}: {e}",
                    self.path.display()
                ))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRequest {
    /// The address to verify, e.g. `ops@example.org`.
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactProof {
    pub email: String,
    /// The code the market sent to the address.
    pub code: String,
}

/// A challenge as the party sees it (the code itself goes only to the contact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactChallenge {
    pub party: String,
    pub email_sha256: String,
    pub expires_at: i64,
    pub attempts_left: i64,
}

/// A contact the market verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub party: String,
    pub email_sha256: String,
    pub verified_at: i64,
    /// The signed request that returned the code.
    pub evidence: i64,
}

fn check_self(who: &Party, party: &str) -> Result<()> {
    if who.id == party {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "party {} may verify only its own contacts, not those of party {party}",
            who.id
        )))
    }
}

/// Issues a code for `who`'s address, replacing its earlier challenge, and returns the code
/// to deliver. One challenge per party, at most one per [`REISSUE_AFTER`] seconds.
pub fn issue(
    conn: &dyn Db,
    who: &Party,
    party: &str,
    req: &ContactRequest,
    now: i64,
) -> Result<(ContactChallenge, String)> {
    check_self(who, party)?;
    let hash = email_hash(&req.email)?;
    let verified: i64 = conn.query_row(
        "SELECT COUNT(*) FROM contacts WHERE party = ?1",
        [party],
        |r| r.get(0),
    )?;
    if verified >= MAX_CONTACTS {
        return Err(Error::Conflict(format!(
            "party {party} has {verified} verified contacts, the most one party keeps"
        )));
    }
    let last: Option<i64> = conn.query_opt(
        "SELECT issued_at FROM contact_challenges WHERE party = ?1",
        [party],
        |r| r.get(0),
    )?;
    if let Some(at) = last
        && now < at.saturating_add(REISSUE_AFTER)
    {
        return Err(Error::TooMany(format!(
            "a code was sent at {at}; ask for another after {}",
            at + REISSUE_AFTER
        )));
    }
    let code = random_hex(5)?;
    let expires_at = now + CODE_TTL;
    conn.execute(
        "INSERT INTO contact_challenges (party, email_sha256, code_sha256, issued_at, expires_at,
             attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT (party) DO UPDATE SET email_sha256 = excluded.email_sha256,
             code_sha256 = excluded.code_sha256, issued_at = excluded.issued_at,
             expires_at = excluded.expires_at, attempts = 0",
        params![party, hash, sha256_hex(code.as_bytes()), now, expires_at],
    )?;
    Ok((
        ContactChallenge {
            party: party.to_owned(),
            email_sha256: hash,
            expires_at,
            attempts_left: MAX_ATTEMPTS,
        },
        code,
    ))
}

/// Checks the code `who` returned; a right one verifies the contact, a wrong one spends an
/// attempt (the last ends the challenge).
pub fn verify(
    conn: &dyn Db,
    who: &Party,
    party: &str,
    proof: &ContactProof,
    evidence: i64,
    now: i64,
) -> Result<Contact> {
    check_self(who, party)?;
    let hash = email_hash(&proof.email)?;
    let open: Option<(String, String, i64, i64)> = conn.query_opt(
        "SELECT email_sha256, code_sha256, expires_at, attempts FROM contact_challenges
         WHERE party = ?1",
        [party],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let Some((email, code_hash, expires_at, attempts)) = open else {
        return Err(Error::Conflict(format!(
            "party {party} has no code outstanding; ask for one with POST /v1/parties/{party}/contacts"
        )));
    };
    if email != hash {
        return Err(Error::BadRequest(
            "the outstanding code was sent to another address; verify that one or ask for a new code".into(),
        ));
    }
    if expires_at < now || attempts >= MAX_ATTEMPTS {
        conn.execute("DELETE FROM contact_challenges WHERE party = ?1", [party])?;
        return Err(Error::Conflict(
            "the code expired or too many wrong codes were tried; ask for a new one".into(),
        ));
    }
    let given = sha256_hex(proof.code.trim().to_ascii_lowercase().as_bytes());
    if given != code_hash {
        conn.execute(
            "UPDATE contact_challenges SET attempts = attempts + 1 WHERE party = ?1",
            [party],
        )?;
        return Err(Error::Unauthorized(format!(
            "wrong code; {} attempts left",
            (MAX_ATTEMPTS - attempts - 1).max(0)
        )));
    }
    conn.execute("DELETE FROM contact_challenges WHERE party = ?1", [party])?;
    conn.execute(
        "INSERT INTO contacts (party, email_sha256, verified_at, evidence) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (party, email_sha256) DO UPDATE SET verified_at = excluded.verified_at,
             evidence = excluded.evidence",
        params![party, hash, now, evidence],
    )?;
    Ok(Contact {
        party: party.to_owned(),
        email_sha256: hash,
        verified_at: now,
        evidence,
    })
}

/// The contacts the market verified for `party`, oldest first.
pub fn list(conn: &dyn Db, party: &str) -> Result<Vec<Contact>> {
    conn.query_map(
        "SELECT party, email_sha256, verified_at, evidence FROM contacts WHERE party = ?1
         ORDER BY verified_at, email_sha256",
        [party],
        |r| {
            Ok(Contact {
                party: r.get(0)?,
                email_sha256: r.get(1)?,
                verified_at: r.get(2)?,
                evidence: r.get(3)?,
            })
        },
    )
}
