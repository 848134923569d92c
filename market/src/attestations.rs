//! Attestations: statements about a party signed by an attestor key the market
//! trusts (`Policy::attestor_keys`, `serve --attestor-key`). An `email`
//! attestation says the attestor verified that the party controls an e-mail
//! address — kept only as the SHA-256 of the address, so the market never
//! publishes it; an `operator` attestation says the attestor vouches for the
//! party (a known operator or company). Valid ones — not revoked, not expired,
//! by a key the market still trusts — raise the party's [`TrustLevel`].
//!
//! Anyone may submit an attestation (the party itself, usually): the statement
//! carries the attestor's signature over [`attestation_message`], so whoever
//! relays it can change nothing, and only the market's attestor keys can make
//! one. Revoking takes a request signed by the attestor's own key.

use crate::db::{Db, Row};
use crate::params;
use serde::{Deserialize, Serialize};

use sublet_market_api::identity::{Signer, party_id, sha256_hex, verify_signature};
use sublet_market_api::{Error, Result};

use crate::identity;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS attestations (
    id TEXT PRIMARY KEY,
    party TEXT NOT NULL,
    kind TEXT NOT NULL,
    attestor TEXT NOT NULL,
    email_sha256 TEXT,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER,
    signature TEXT NOT NULL,
    submitted_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoke_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS attestations_party ON attestations (party);
";

/// What the market's attestors say about a party, lowest first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TrustLevel {
    /// No valid attestation.
    #[default]
    Unverified,
    /// A valid `email` attestation.
    Verified,
    /// A valid `operator` attestation: the highest level.
    Vouched,
}

impl TrustLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            TrustLevel::Unverified => "unverified",
            TrustLevel::Verified => "verified",
            TrustLevel::Vouched => "vouched",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttestationKind {
    /// The attestor verified that the party controls an e-mail address.
    Email,
    /// The attestor vouches for the party, e.g. as a known operator or company.
    Operator,
}

impl AttestationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationKind::Email => "email",
            AttestationKind::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "email" => Ok(AttestationKind::Email),
            "operator" => Ok(AttestationKind::Operator),
            other => Err(Error::Internal(format!(
                "unknown attestation kind {other:?} in database"
            ))),
        }
    }

    /// The trust level a valid attestation of this kind gives.
    pub fn level(self) -> TrustLevel {
        match self {
            AttestationKind::Email => TrustLevel::Verified,
            AttestationKind::Operator => TrustLevel::Vouched,
        }
    }
}

/// What an attestor signs: the version, its own key, the kind, the party, the
/// e-mail hash (empty for `operator`), when it was issued and when it expires
/// (empty for never), one per line.
pub fn attestation_message(
    attestor: &str,
    kind: AttestationKind,
    party: &str,
    email_sha256: Option<&str>,
    issued_at: i64,
    expires_at: Option<i64>,
) -> String {
    format!(
        "sublet-market-attest-v1\n{attestor}\n{}\n{party}\n{}\n{issued_at}\n{}",
        kind.as_str(),
        email_sha256.unwrap_or(""),
        expires_at.map(|e| e.to_string()).unwrap_or_default()
    )
}

pub use crate::contacts::email_hash;

/// An attestation as the attestor signs and anyone submits it
/// (`POST /v1/parties/{id}/attestations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAttestation {
    pub kind: AttestationKind,
    /// The party it is about.
    pub party: String,
    /// The attestor's ed25519 public key, hex.
    pub attestor: String,
    /// `email` only: SHA-256 of the trimmed, lowercased address, 64 lowercase hex characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_sha256: Option<String>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; never expires when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Base64 ed25519 signature over [`attestation_message`].
    pub signature: String,
}

impl SignedAttestation {
    /// Signs a statement with the attestor's key.
    pub fn sign(
        attestor: &Signer,
        kind: AttestationKind,
        party: &str,
        email_sha256: Option<String>,
        issued_at: i64,
        expires_at: Option<i64>,
    ) -> Self {
        let public_key = attestor.public_key_hex();
        let message = attestation_message(
            &public_key,
            kind,
            party,
            email_sha256.as_deref(),
            issued_at,
            expires_at,
        );
        Self {
            kind,
            party: party.into(),
            attestor: public_key,
            email_sha256,
            issued_at,
            expires_at,
            signature: attestor.sign(message.as_bytes()),
        }
    }

    pub fn message(&self) -> String {
        attestation_message(
            &self.attestor,
            self.kind,
            &self.party,
            self.email_sha256.as_deref(),
            self.issued_at,
            self.expires_at,
        )
    }

    /// The attestation's id: the same statement always gets the same one.
    pub fn id(&self) -> String {
        format!("at_{}", &sha256_hex(self.message().as_bytes())[..32])
    }
}

/// Whether an attestation counts now, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttestationStatus {
    Active,
    Expired,
    Revoked,
    /// Its key is no longer one of the market's attestor keys.
    AttestorNotTrusted,
}

/// A stored attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub id: String,
    pub party: String,
    pub kind: AttestationKind,
    /// The attestor's public key, hex.
    pub attestor: String,
    /// The attestor's key id (like a party id: first 16 bytes of SHA-256 of the key);
    /// revocations are signed with `x-sublet-party` set to it.
    pub attestor_id: String,
    pub email_sha256: Option<String>,
    pub issued_at: i64,
    pub expires_at: Option<i64>,
    pub signature: String,
    pub submitted_at: i64,
    pub revoked_at: Option<i64>,
    pub revoke_reason: String,
    pub status: AttestationStatus,
}

fn is_trusted(keys: &[String], attestor: &str) -> bool {
    keys.iter().any(|k| k.trim().eq_ignore_ascii_case(attestor))
}

const COLUMNS: &str = "id, party, kind, attestor, email_sha256, issued_at, expires_at, signature,
    submitted_at, revoked_at, revoke_reason";

/// A row, with its status as of `now` under `keys`.
fn from_row(r: &Row, keys: &[String], now: i64) -> Result<Attestation> {
    let kind: String = r.get(2)?;
    let attestor: String = r.get(3)?;
    let expires_at: Option<i64> = r.get(6)?;
    let revoked_at: Option<i64> = r.get(9)?;
    let status = if revoked_at.is_some() {
        AttestationStatus::Revoked
    } else if expires_at.is_some_and(|e| e <= now) {
        AttestationStatus::Expired
    } else if !is_trusted(keys, &attestor) {
        AttestationStatus::AttestorNotTrusted
    } else {
        AttestationStatus::Active
    };
    let attestor_id = match hex::decode(&attestor) {
        Ok(key) => party_id(&key),
        Err(_) => {
            return Err(Error::Internal(format!(
                "attestor key {attestor:?} in database is not hex"
            )));
        }
    };
    let kind = AttestationKind::parse(&kind)?;
    Ok(Attestation {
        id: r.get(0)?,
        party: r.get(1)?,
        kind,
        attestor,
        attestor_id,
        email_sha256: r.get(4)?,
        issued_at: r.get(5)?,
        expires_at,
        signature: r.get(7)?,
        submitted_at: r.get(8)?,
        revoked_at,
        revoke_reason: r.get(10)?,
        status,
    })
}

/// Checks and stores an attestation submitted for `party`. `keys` are the market's
/// attestor keys; `window` is how far in the future `issued_at` may be (clock skew).
pub fn submit(
    conn: &dyn Db,
    party: &str,
    att: &SignedAttestation,
    keys: &[String],
    now: i64,
    window: i64,
) -> Result<Attestation> {
    identity::party(conn, party)?;
    if att.party != party {
        return Err(Error::BadRequest(format!(
            "the attestation is about party {:?}, but was submitted for party {party}; submit it to /v1/parties/{{its party}}/attestations",
            att.party
        )));
    }
    if hex::decode(&att.attestor).map(|k| k.len()) != Ok(32) {
        return Err(Error::BadRequest(format!(
            "attestor must be the attestor's 32-byte ed25519 public key in hex (64 characters), got {:?}",
            att.attestor
        )));
    }
    if !is_trusted(keys, &att.attestor) {
        return Err(Error::Forbidden(format!(
            "attestor {} is not one of the market's attestor keys (serve --attestor-key)",
            att.attestor
        )));
    }
    match (att.kind, att.email_sha256.as_deref()) {
        (AttestationKind::Email, Some(h))
            if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {}
        (AttestationKind::Email, _) => {
            return Err(Error::BadRequest(
                "an email attestation needs email_sha256: the SHA-256 of the trimmed, lowercased address, 64 lowercase hex characters".into(),
            ));
        }
        (AttestationKind::Operator, Some(_)) => {
            return Err(Error::BadRequest(
                "an operator attestation has no email_sha256; leave it out".into(),
            ));
        }
        (AttestationKind::Operator, None) => {}
    }
    if att.issued_at <= 0 {
        return Err(Error::BadRequest(format!(
            "issued_at must be unix seconds, got {}",
            att.issued_at
        )));
    }
    if att.issued_at > now + window {
        return Err(Error::BadRequest(format!(
            "issued_at {} is in the future (server clock {now})",
            att.issued_at
        )));
    }
    if let Some(expires) = att.expires_at
        && expires <= att.issued_at
    {
        return Err(Error::BadRequest(format!(
            "expires_at {expires} must be after issued_at {}",
            att.issued_at
        )));
    }
    let key = hex::decode(&att.attestor)
        .map_err(|_| Error::Internal("attestor key checked above".into()))?;
    verify_signature(&key, att.message().as_bytes(), &att.signature).map_err(|_| {
        Error::Unauthorized(format!(
            "the attestation's signature does not verify against attestor key {}; it must be base64 ed25519 over sublet-market-attest-v1\\n{{attestor}}\\n{{kind}}\\n{{party}}\\n{{email_sha256}}\\n{{issued_at}}\\n{{expires_at}}",
            att.attestor
        ))
    })?;
    if let Some(expires) = att.expires_at
        && expires <= now
    {
        return Err(Error::BadRequest(format!(
            "the attestation expired at {expires} (server clock {now}); ask the attestor for a new one"
        )));
    }
    let id = att.id();
    let earlier: Option<Option<i64>> = conn.query_opt(
        "SELECT revoked_at FROM attestations WHERE id = ?1",
        [&id],
        |r| r.get(0),
    )?;
    match earlier {
        Some(Some(revoked_at)) => {
            return Err(Error::Conflict(format!(
                "attestation {id} was already submitted and was revoked at {revoked_at}; the attestor must issue a new one"
            )));
        }
        Some(None) => {
            return Err(Error::Conflict(format!(
                "attestation {id} was already submitted"
            )));
        }
        None => {}
    }
    conn.execute(
        "INSERT INTO attestations (id, party, kind, attestor, email_sha256, issued_at, expires_at,
             signature, submitted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            party,
            att.kind.as_str(),
            att.attestor.to_ascii_lowercase(),
            att.email_sha256,
            att.issued_at,
            att.expires_at,
            att.signature,
            now
        ],
    )?;
    get(conn, party, &id, keys, now)
}

/// One attestation of `party`.
pub fn get(conn: &dyn Db, party: &str, id: &str, keys: &[String], now: i64) -> Result<Attestation> {
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM attestations WHERE id = ?1 AND party = ?2"),
        params![id, party],
        |r| from_row(r, keys, now),
    )?
    .ok_or_else(|| Error::not_found(format!("attestation {id} of party {party}")))
}

/// Every attestation about `party`, revoked and expired ones too, oldest first.
pub fn list(conn: &dyn Db, party: &str, keys: &[String], now: i64) -> Result<Vec<Attestation>> {
    identity::party(conn, party)?;
    conn.query_map(
        &format!("SELECT {COLUMNS} FROM attestations WHERE party = ?1 ORDER BY submitted_at, id"),
        [party],
        |r| from_row(r, keys, now),
    )
}

/// Revokes an attestation; the caller has checked that its attestor signed the request.
/// Revoking again changes nothing.
pub fn revoke(
    conn: &dyn Db,
    party: &str,
    id: &str,
    reason: &str,
    keys: &[String],
    now: i64,
) -> Result<Attestation> {
    if reason.len() > 500 || reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::BadRequest(
            "reason must be at most 500 printable characters".into(),
        ));
    }
    get(conn, party, id, keys, now)?;
    conn.execute(
        "UPDATE attestations SET revoked_at = ?1, revoke_reason = ?2
         WHERE id = ?3 AND revoked_at IS NULL",
        params![now, reason, id],
    )?;
    get(conn, party, id, keys, now)
}

/// A party's trust level and the attestations that give it. How it counts in a rating is
/// `Trust::rating_input`, with the other rating rules in the `ratings` module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    pub level: TrustLevel,
    /// The valid attestations, highest kind first.
    pub active: Vec<Attestation>,
    /// Contacts the market itself verified (see the `contacts` module): each makes the
    /// party at least `verified`.
    pub contacts: Vec<crate::contacts::Contact>,
}

/// `party`'s trust level as of `now`: from its attestations that are neither revoked
/// nor expired and whose attestor is still one of `keys`.
pub fn trust(conn: &dyn Db, party: &str, keys: &[String], now: i64) -> Result<Trust> {
    let mut active: Vec<Attestation> = list(conn, party, keys, now)?
        .into_iter()
        .filter(|a| a.status == AttestationStatus::Active)
        .collect();
    active.sort_by(|a, b| {
        b.kind
            .level()
            .cmp(&a.kind.level())
            .then(a.submitted_at.cmp(&b.submitted_at))
    });
    let contacts = crate::contacts::list(conn, party)?;
    let level = active
        .iter()
        .map(|a| a.kind.level())
        .chain((!contacts.is_empty()).then_some(TrustLevel::Verified))
        .max()
        .unwrap_or_default();
    Ok(Trust {
        level,
        active,
        contacts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    const NOW: i64 = 1_800_000_000;
    const WINDOW: i64 = 300;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(identity::SCHEMA).expect("schema");
        conn.execute_batch(SCHEMA).expect("schema");
        conn.execute_batch(crate::contacts::SCHEMA).expect("schema");
        conn
    }

    /// A registered party, its id.
    fn party(conn: &Connection) -> Result<String> {
        let (signer, _) = Signer::generate()?;
        let (challenge, _) = identity::new_challenge(conn, &signer.public_key_hex(), NOW)?;
        let reg = signer.registration(&challenge, identity::Role::Provider, "p");
        Ok(identity::register(conn, &reg, &[], NOW)?.id)
    }

    fn email(attestor: &Signer, party: &str, expires_at: Option<i64>) -> Result<SignedAttestation> {
        Ok(SignedAttestation::sign(
            attestor,
            AttestationKind::Email,
            party,
            Some(email_hash("Bob@Example.org")?),
            NOW - 10,
            expires_at,
        ))
    }

    #[test]
    fn the_message_is_versioned_and_names_every_field() {
        let m = attestation_message("ab", AttestationKind::Email, "p1", Some("h"), 5, Some(9));
        assert_eq!(m, "sublet-market-attest-v1\nab\nemail\np1\nh\n5\n9");
        let m = attestation_message("ab", AttestationKind::Operator, "p1", None, 5, None);
        assert_eq!(m, "sublet-market-attest-v1\nab\noperator\np1\n\n5\n");
    }

    #[test]
    fn email_hash_normalises_and_refuses_non_addresses() -> Result<()> {
        assert_eq!(
            email_hash(" Bob@Example.ORG ")?,
            email_hash("bob@example.org")?
        );
        assert_eq!(
            email_hash("bob@example.org")?,
            identity::sha256_hex(b"bob@example.org")
        );
        for bad in ["", "bob", "@example.org", "bob@", "bo b@example.org"] {
            assert!(
                matches!(email_hash(bad), Err(Error::BadRequest(_))),
                "{bad:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_signed_attestation_verifies_and_any_change_breaks_it() -> Result<()> {
        let conn = db();
        let (attestor, _) = Signer::generate()?;
        let keys = [attestor.public_key_hex()];
        let p = party(&conn)?;
        let q = party(&conn)?;
        let good = email(&attestor, &p, Some(NOW + 100))?;
        let tampered: Vec<SignedAttestation> = vec![
            SignedAttestation {
                kind: AttestationKind::Operator,
                email_sha256: None,
                ..good.clone()
            },
            SignedAttestation {
                email_sha256: Some(email_hash("eve@example.org")?),
                ..good.clone()
            },
            SignedAttestation {
                issued_at: good.issued_at - 1,
                ..good.clone()
            },
            SignedAttestation {
                expires_at: None,
                ..good.clone()
            },
            SignedAttestation {
                expires_at: Some(NOW + 10_000),
                ..good.clone()
            },
        ];
        for t in tampered {
            let err = submit(&conn, &p, &t, &keys, NOW, WINDOW);
            assert!(matches!(err, Err(Error::Unauthorized(_))), "{t:?}: {err:?}");
        }
        // Moved to another party: refused whether or not the body follows.
        let moved = SignedAttestation {
            party: q.clone(),
            ..good.clone()
        };
        let err = submit(&conn, &q, &moved, &keys, NOW, WINDOW);
        assert!(matches!(err, Err(Error::Unauthorized(_))), "{err:?}");
        let err = submit(&conn, &q, &good, &keys, NOW, WINDOW);
        assert!(matches!(err, Err(Error::BadRequest(_))), "{err:?}");

        let stored = submit(&conn, &p, &good, &keys, NOW, WINDOW)?;
        assert_eq!(stored.status, AttestationStatus::Active);
        assert_eq!(stored.id, good.id());
        assert_eq!(stored.attestor_id, attestor.party_id());
        assert_eq!(trust(&conn, &p, &keys, NOW)?.level, TrustLevel::Verified);
        assert_eq!(trust(&conn, &q, &keys, NOW)?.level, TrustLevel::Unverified);
        Ok(())
    }

    #[test]
    fn only_valid_attestations_count() -> Result<()> {
        let conn = db();
        let (attestor, _) = Signer::generate()?;
        let keys = vec![attestor.public_key_hex()];
        let p = party(&conn)?;
        submit(
            &conn,
            &p,
            &email(&attestor, &p, Some(NOW + 100))?,
            &keys,
            NOW,
            WINDOW,
        )?;
        let vouch =
            SignedAttestation::sign(&attestor, AttestationKind::Operator, &p, None, NOW, None);
        let v = submit(&conn, &p, &vouch, &keys, NOW, WINDOW)?;
        let t = trust(&conn, &p, &keys, NOW)?;
        assert_eq!(t.level, TrustLevel::Vouched);
        assert_eq!(t.active[0].kind, AttestationKind::Operator);
        let input = t.rating_input(5);
        assert_eq!(input.score, 1000);
        assert_eq!(
            input.value,
            format!(
                "vouched for by {0}; email verified by {0}",
                attestor.party_id()
            )
        );
        // Revoked: back to verified; revoking again changes nothing.
        let r = revoke(&conn, &p, &v.id, "sold the company", &keys, NOW + 1)?;
        assert_eq!(
            (r.status, r.revoked_at),
            (AttestationStatus::Revoked, Some(NOW + 1))
        );
        let again = revoke(&conn, &p, &v.id, "", &keys, NOW + 5)?;
        assert_eq!(again, r);
        assert_eq!(
            trust(&conn, &p, &keys, NOW + 1)?.level,
            TrustLevel::Verified
        );
        // Expired: unverified.
        let t = trust(&conn, &p, &keys, NOW + 100)?;
        assert_eq!(t.level, TrustLevel::Unverified);
        assert_eq!(t.rating_input(5).score, 0);
        assert_eq!(t.rating_input(5).value, "no valid attestation");
        // A key the market no longer trusts: nothing counts, and the listing says why.
        assert_eq!(trust(&conn, &p, &[], NOW)?.level, TrustLevel::Unverified);
        let listed = list(&conn, &p, &[], NOW)?;
        assert_eq!(listed.len(), 2);
        let email = listed
            .iter()
            .find(|a| a.kind == AttestationKind::Email)
            .ok_or_else(|| Error::Internal("the email attestation is not listed".into()))?;
        assert_eq!(email.status, AttestationStatus::AttestorNotTrusted);
        Ok(())
    }
}
