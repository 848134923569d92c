//! The treasurer rail: credits enter and leave the market only on a treasurer's word. A
//! treasurer (whoever sees the outside transfer arrive, or makes the payout) signs an
//! [`Authorization`] naming the party, the amount, the reference and a one-time nonce with
//! an ed25519 key the market was started with (`serve --treasurer-key`); the party sends
//! it along with its own signed deposit or withdrawal. A party cannot mint credits, the
//! market cannot be talked into a payout by the party alone, and every authorization is
//! used at most once: its nonce is kept in `rail_authorizations`, which is also the audit
//! trail (`GET /v1/treasury`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sublet_market_api::credits::Micros;
use sublet_market_api::identity::{Signer, decode_public_key, random_hex, verify_signature};
use sublet_market_api::{Error, Result};

use super::{Confirmed, PaymentRail, UsedAuthorization, check_reference};
use crate::db::{Db, Row};
use crate::params;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rail_authorizations (
    nonce TEXT PRIMARY KEY,
    op_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    party TEXT NOT NULL,
    amount INTEGER NOT NULL,
    reference TEXT NOT NULL,
    treasurer TEXT NOT NULL,
    signed_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rail_authorizations_party ON rail_authorizations (party);
";

/// How long a treasurer's authorization may be used after (or before, for clock skew) it
/// was signed.
pub const AUTHORIZATION_WINDOW_SECS: i64 = 7 * 24 * 3600;

/// What an authorization allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Credit the party: the treasurer saw the money arrive.
    Deposit,
    /// Debit the party: the treasurer pays it out.
    Withdrawal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deposit => "deposit",
            Kind::Withdrawal => "withdrawal",
        }
    }
}

/// A treasurer's signed word that `amount` may enter (or leave) `party`'s account once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    pub kind: Kind,
    pub party: String,
    pub amount: Micros,
    /// The outside transfer's reference (a bank or chain transaction id); the ledger keeps it.
    pub reference: String,
    /// 16 to 64 letters, digits, `-` or `_`; used once.
    pub nonce: String,
    /// Unix seconds.
    pub signed_at: i64,
    /// The treasurer's public key, hex.
    pub treasurer: String,
    /// Base64 ed25519 signature over [`Authorization::message`].
    pub signature: String,
}

impl Authorization {
    /// The bytes the treasurer signs: every field but the signature, one per line.
    pub fn message(
        kind: Kind,
        party: &str,
        amount: Micros,
        reference: &str,
        nonce: &str,
        signed_at: i64,
    ) -> String {
        format!(
            "sublet-market treasurer v1\n{}\n{party}\n{amount}\n{reference}\n{nonce}\n{signed_at}",
            kind.as_str()
        )
    }

    /// Signs a new authorization with a fresh nonce.
    pub fn sign(
        treasurer: &Signer,
        kind: Kind,
        party: &str,
        amount: Micros,
        reference: &str,
        signed_at: i64,
    ) -> Result<Authorization> {
        let nonce = random_hex(16)?;
        let message = Self::message(kind, party, amount, reference, &nonce, signed_at);
        Ok(Authorization {
            kind,
            party: party.into(),
            amount,
            reference: reference.into(),
            nonce,
            signed_at,
            treasurer: treasurer.public_key_hex(),
            signature: treasurer.sign(message.as_bytes()),
        })
    }
}

/// Credits and debits only what a treasurer key signed for.
pub struct TreasurerRail {
    /// Hex public keys.
    keys: Vec<String>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl TreasurerRail {
    /// `keys` are ed25519 public keys in hex; at least one.
    pub fn new(keys: &[String]) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::BadRequest(
                "the treasurer rail needs at least one --treasurer-key".into(),
            ));
        }
        let keys = keys
            .iter()
            .map(|k| {
                let k = k.trim().to_ascii_lowercase();
                decode_public_key(&k)
                    .map_err(|e| Error::BadRequest(format!("--treasurer-key: {e}")))?;
                Ok(k)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TreasurerRail {
            keys,
            clock: Arc::new(sublet_market_api::unix_now),
        })
    }

    /// Replaces the clock (unix seconds) authorizations are judged by.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn check(
        &self,
        kind: Kind,
        party: &str,
        amount: Micros,
        reference: &str,
        authorization: Option<&Authorization>,
    ) -> Result<Confirmed> {
        check_reference(reference)?;
        let Some(a) = authorization else {
            return Err(Error::Unauthorized(format!(
                "a {} on this market needs a treasurer's signed authorization in the field \
                 `authorization` (made with `sublet market treasurer-sign`); ask the market's treasurer",
                kind.as_str()
            )));
        };
        if a.kind != kind {
            return Err(Error::Unauthorized(format!(
                "the authorization is for a {}, not a {}",
                a.kind.as_str(),
                kind.as_str()
            )));
        }
        if a.party != party || a.amount != amount || a.reference != reference {
            return Err(Error::Unauthorized(format!(
                "the authorization is for party {} amount {} reference {:?}, not party {party} amount {amount} reference {reference:?}",
                a.party, a.amount, a.reference
            )));
        }
        if !(16..=64).contains(&a.nonce.len())
            || !a
                .nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::BadRequest(
                "authorization.nonce must be 16 to 64 letters, digits, '-' or '_'".into(),
            ));
        }
        let now = (self.clock)();
        // `abs_diff` cannot overflow, as `now - signed_at` does for a signed_at near i64::MIN.
        if now.abs_diff(a.signed_at) > AUTHORIZATION_WINDOW_SECS.unsigned_abs() {
            return Err(Error::Unauthorized(format!(
                "the authorization was signed at {} and may be used only within {} days of it",
                a.signed_at,
                AUTHORIZATION_WINDOW_SECS / 86_400
            )));
        }
        let treasurer = a.treasurer.trim().to_ascii_lowercase();
        if !self.keys.contains(&treasurer) {
            return Err(Error::Unauthorized(format!(
                "{treasurer:?} is not a treasurer key of this market"
            )));
        }
        let message = Authorization::message(kind, party, amount, reference, &a.nonce, a.signed_at);
        verify_signature(
            &decode_public_key(&treasurer)?,
            message.as_bytes(),
            &a.signature,
        )
        .map_err(|_| {
            Error::Unauthorized(
                "the authorization's signature does not verify against the treasurer key it names"
                    .into(),
            )
        })?;
        Ok(Confirmed {
            reference: format!("treasurer:{reference}"),
            used: Some(UsedAuthorization {
                kind,
                nonce: a.nonce.clone(),
                treasurer,
                signed_at: a.signed_at,
            }),
        })
    }
}

impl PaymentRail for TreasurerRail {
    fn name(&self) -> &'static str {
        "treasurer"
    }

    fn confirm_deposit(
        &self,
        party: &str,
        amount: Micros,
        reference: &str,
        authorization: Option<&Authorization>,
    ) -> Result<Confirmed> {
        self.check(Kind::Deposit, party, amount, reference, authorization)
    }

    fn pay_out(
        &self,
        party: &str,
        amount: Micros,
        reference: &str,
        authorization: Option<&Authorization>,
    ) -> Result<Confirmed> {
        self.check(Kind::Withdrawal, party, amount, reference, authorization)
    }
}

/// One credited deposit or withdrawal as the audit trail shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub nonce: String,
    pub op_id: String,
    pub kind: String,
    pub party: String,
    pub amount: Micros,
    pub reference: String,
    pub treasurer: String,
    pub signed_at: i64,
    pub recorded_at: i64,
}

/// Keeps `used` as spent by operation `op_id`: the same operation sent again is fine, any
/// other use of the nonce is refused.
pub fn record(
    conn: &dyn Db,
    op_id: &str,
    party: &str,
    amount: Micros,
    reference: &str,
    used: &UsedAuthorization,
    at: i64,
) -> Result<()> {
    let spent_by: Option<String> = conn.query_opt(
        "SELECT op_id FROM rail_authorizations WHERE nonce = ?1",
        params![used.nonce],
        |r| r.get(0),
    )?;
    match spent_by {
        Some(op) if op == op_id => Ok(()),
        Some(op) => Err(Error::Conflict(format!(
            "the treasurer's authorization with nonce {} was already used by operation {op}",
            used.nonce
        ))),
        None => {
            conn.execute(
                "INSERT INTO rail_authorizations (nonce, op_id, kind, party, amount, reference, treasurer, signed_at, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    used.nonce,
                    op_id,
                    used.kind.as_str(),
                    party,
                    amount,
                    reference,
                    used.treasurer,
                    used.signed_at,
                    at
                ],
            )?;
            Ok(())
        }
    }
}

fn entry(r: &Row) -> Result<Entry> {
    Ok(Entry {
        nonce: r.get(0)?,
        op_id: r.get(1)?,
        kind: r.get(2)?,
        party: r.get(3)?,
        amount: r.get(4)?,
        reference: r.get(5)?,
        treasurer: r.get(6)?,
        signed_at: r.get(7)?,
        recorded_at: r.get(8)?,
    })
}

/// The audit trail, newest first: every entry, or `party`'s only; at most `limit`.
pub fn entries(conn: &dyn Db, party: Option<&str>, limit: i64) -> Result<Vec<Entry>> {
    const COLUMNS: &str =
        "nonce, op_id, kind, party, amount, reference, treasurer, signed_at, recorded_at";
    match party {
        Some(p) => conn.query_map(
            &format!(
                "SELECT {COLUMNS} FROM rail_authorizations WHERE party = ?1 ORDER BY recorded_at DESC, nonce LIMIT ?2"
            ),
            params![p, limit],
            entry,
        ),
        None => conn.query_map(
            &format!(
                "SELECT {COLUMNS} FROM rail_authorizations ORDER BY recorded_at DESC, nonce LIMIT ?1"
            ),
            params![limit],
            entry,
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rail() -> (TreasurerRail, Signer) {
        let (t, _) = Signer::generate().unwrap();
        let rail = TreasurerRail::new(&[t.public_key_hex()])
            .unwrap()
            .with_clock(|| 1_000_000);
        (rail, t)
    }

    #[test]
    fn only_what_the_treasurer_signed_is_credited() {
        let (rail, t) = rail();
        let a = Authorization::sign(&t, Kind::Deposit, "alice", 50, "bank-1", 1_000_000).unwrap();
        let ok = rail
            .confirm_deposit("alice", 50, "bank-1", Some(&a))
            .unwrap();
        assert_eq!(ok.reference, "treasurer:bank-1");
        assert_eq!(ok.used.unwrap().nonce, a.nonce);

        let refused = |party: &str, amount: Micros, reference: &str, a: Option<&Authorization>| {
            rail.confirm_deposit(party, amount, reference, a)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("alice", 50, "bank-1", None).contains("treasurer's signed authorization"));
        // Another party, amount or reference than signed.
        assert!(refused("mallory", 50, "bank-1", Some(&a)).contains("not party mallory"));
        assert!(refused("alice", 5000, "bank-1", Some(&a)).contains("amount 5000"));
        assert!(refused("alice", 50, "bank-2", Some(&a)).contains("reference"));
        // A withdrawal authorization is no deposit.
        let w =
            Authorization::sign(&t, Kind::Withdrawal, "alice", 50, "bank-1", 1_000_000).unwrap();
        assert!(refused("alice", 50, "bank-1", Some(&w)).contains("not a deposit"));
        // A party's own key is no treasurer's.
        let (mallory, _) = Signer::generate().unwrap();
        let forged =
            Authorization::sign(&mallory, Kind::Deposit, "alice", 50, "bank-1", 1_000_000).unwrap();
        assert!(refused("alice", 50, "bank-1", Some(&forged)).contains("not a treasurer key"));
        // Naming the treasurer's key does not make the signature the treasurer's.
        let mut named = forged.clone();
        named.treasurer = t.public_key_hex();
        assert!(refused("alice", 50, "bank-1", Some(&named)).contains("does not verify"));
        // A changed amount breaks the signature.
        let mut raised = a.clone();
        raised.amount = 5000;
        assert!(refused("alice", 5000, "bank-1", Some(&raised)).contains("does not verify"));
        // Too old.
        let old = Authorization::sign(&t, Kind::Deposit, "alice", 50, "bank-1", 1).unwrap();
        assert!(refused("alice", 50, "bank-1", Some(&old)).contains("within 7 days"));
        let mut ancient = old.clone();
        ancient.signed_at = i64::MIN;
        assert!(refused("alice", 50, "bank-1", Some(&ancient)).contains("within 7 days"));
    }

    #[test]
    fn bad_keys_are_refused_at_start() {
        assert!(TreasurerRail::new(&[]).is_err());
        let err = TreasurerRail::new(&["abc".into()]).err().unwrap();
        assert!(err.to_string().contains("--treasurer-key"), "{err}");
    }
}
