//! The market's records of parties: registration proven by signing a server challenge,
//! verification of signed requests (timestamp window, single-use nonces) and the signed
//! requests kept as evidence. What is signed, and the client side ([`Signer`]), are in
//! `sublet_market_api::identity`; its types are re-exported here.

use crate::db::Db;
use crate::params;
pub use sublet_market_api::identity::{
    HEADER_NONCE, HEADER_PARTY, HEADER_SIGNATURE, HEADER_TIMESTAMP, Party, Registration,
    RequestSignature, Role, Signer, Verified, canonical_request, new_id, party_id,
    registration_message, sha256_hex,
};
use sublet_market_api::identity::{check_headers, decode_public_key, random_hex, verify_signature};
use sublet_market_api::{Error, Result};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS challenges (
    challenge TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS challenges_by_key ON challenges (public_key);
CREATE TABLE IF NOT EXISTS parties (
    id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    registered_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    party TEXT NOT NULL,
    nonce TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (party, nonce)
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY,
    party TEXT NOT NULL,
    canonical TEXT NOT NULL,
    body TEXT NOT NULL,
    signature TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

/// How long a registration challenge stays valid, in seconds.
pub const CHALLENGE_TTL: i64 = 300;

/// How many registration challenges may be open at once. Asking for one needs no
/// signature (the party is not registered yet, and a fresh key proves nothing), so the
/// table is bounded instead: one open challenge per public key, at most this many in all.
pub const MAX_OPEN_CHALLENGES: i64 = 10_000;

/// Issues a single-use challenge for `public_key` to sign at registration. It replaces the
/// key's earlier challenge, if any; none is issued for a key already registered, nor while
/// [`MAX_OPEN_CHALLENGES`] are open.
pub fn new_challenge(conn: &dyn Db, public_key: &str, now: i64) -> Result<(String, i64)> {
    decode_public_key(public_key)?;
    let registered: Option<String> = conn.query_opt(
        "SELECT id FROM parties WHERE public_key = ?1",
        [public_key.to_ascii_lowercase()],
        |r| r.get(0),
    )?;
    if let Some(id) = registered {
        return Err(Error::Conflict(format!(
            "public key is already registered as party {id}"
        )));
    }
    conn.execute("DELETE FROM challenges WHERE expires_at < ?1", [now])?;
    conn.execute("DELETE FROM challenges WHERE public_key = ?1", [public_key])?;
    let open: i64 = conn
        .query_opt("SELECT COUNT(*) FROM challenges", [0i64; 0], |r| r.get(0))?
        .unwrap_or(0);
    if open >= MAX_OPEN_CHALLENGES {
        return Err(Error::TooMany(format!(
            "{open} registrations are in progress, the most this market keeps; \
             retry within {CHALLENGE_TTL} seconds"
        )));
    }
    let challenge = random_hex(32)?;
    let expires_at = now + CHALLENGE_TTL;
    conn.execute(
        "INSERT INTO challenges (challenge, public_key, expires_at) VALUES (?1, ?2, ?3)",
        params![challenge, public_key, expires_at],
    )?;
    Ok((challenge, expires_at))
}

/// Registers a party. `arbiter_keys` are the public keys (hex) allowed to register as arbiters.
pub fn register(
    conn: &dyn Db,
    reg: &Registration,
    arbiter_keys: &[String],
    now: i64,
) -> Result<Party> {
    let key = decode_public_key(&reg.public_key)?;
    if reg.role == Role::Arbiter
        && !arbiter_keys
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&reg.public_key))
    {
        return Err(Error::Forbidden(
            "this public key is not one of the market's arbiter keys (serve --arbiter-key)".into(),
        ));
    }
    let name = reg.name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(Error::BadRequest(
            "name must be 1 to 64 printable characters".into(),
        ));
    }
    let issued: Option<(String, i64)> = conn.query_opt(
        "SELECT public_key, expires_at FROM challenges WHERE challenge = ?1",
        [&reg.challenge],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    match issued {
        Some((k, expires)) if k == reg.public_key && expires >= now => {}
        Some((k, _)) if k != reg.public_key => {
            return Err(Error::Unauthorized(
                "challenge was issued for another public key".into(),
            ));
        }
        _ => {
            return Err(Error::Unauthorized(
                "challenge is unknown, used or expired; request a new one from POST /v1/challenges"
                    .into(),
            ));
        }
    }
    verify_signature(
        &key,
        registration_message(&reg.challenge, reg.role, name).as_bytes(),
        &reg.signature,
    )?;
    conn.execute(
        "DELETE FROM challenges WHERE challenge = ?1",
        [&reg.challenge],
    )?;
    let party = Party {
        id: party_id(&key),
        public_key: reg.public_key.to_ascii_lowercase(),
        role: reg.role,
        name: name.into(),
        registered_at: now,
    };
    let inserted = conn.execute(
        "INSERT INTO parties (id, public_key, role, name, registered_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO NOTHING",
        params![party.id, party.public_key, party.role.as_str(), party.name, now],
    )?;
    if inserted == 0 {
        return Err(Error::Conflict(format!(
            "public key is already registered as party {}",
            party.id
        )));
    }
    Ok(party)
}

pub fn party(conn: &dyn Db, id: &str) -> Result<Party> {
    conn.query_opt(
        "SELECT id, public_key, role, name, registered_at FROM parties WHERE id = ?1",
        [id],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
                r.get::<i64>(4)?,
            ))
        },
    )?
    .ok_or_else(|| Error::not_found(format!("party {id}")))
    .and_then(|(id, public_key, role, name, registered_at)| {
        Ok(Party {
            id,
            public_key,
            role: Role::parse(&role)?,
            name,
            registered_at,
        })
    })
}

/// Spends `nonce` of `party`; a nonce used before is a replay.
fn spend_nonce(conn: &dyn Db, party: &str, nonce: &str, now: i64, window: i64) -> Result<()> {
    // Nonces older than twice the window can't come back: their timestamps are refused.
    conn.execute("DELETE FROM nonces WHERE at < ?1", [now - 2 * window])?;
    let fresh = conn.execute(
        "INSERT INTO nonces (party, nonce, at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![party, nonce, now],
    )?;
    if fresh == 0 {
        return Err(Error::Replayed {
            party: party.into(),
            nonce: nonce.into(),
        });
    }
    Ok(())
}

/// Verifies a signed request and spends its nonce. `window` is how far, in
/// seconds, the request's timestamp may be from the server's clock.
pub fn verify_request(
    conn: &dyn Db,
    method: &str,
    path_and_query: &str,
    sig: &RequestSignature,
    body: &[u8],
    now: i64,
    window: i64,
) -> Result<Verified> {
    let (party_id, timestamp, nonce, signature) = check_headers(sig, now, window)?;
    let party = party(conn, party_id).map_err(|e| match e {
        Error::NotFound { .. } => {
            Error::Unauthorized(format!("party {party_id} is not registered"))
        }
        e => e,
    })?;
    let key = decode_public_key(&party.public_key)?;
    let canonical = canonical_request(method, path_and_query, timestamp, nonce, body);
    verify_signature(&key, canonical.as_bytes(), signature)?;
    spend_nonce(conn, &party.id, nonce, now, window)?;
    Ok(Verified {
        party,
        canonical,
        signature: signature.into(),
    })
}

/// Verifies a request signed like [`verify_request`] by a key that need not be a
/// registered party (an attestor's): `public_key` (hex) must be the signer, named in
/// the party header by its id, [`party_id`] of the key. Spends the nonce.
#[allow(clippy::too_many_arguments)]
pub fn verify_request_by_key(
    conn: &dyn Db,
    method: &str,
    path_and_query: &str,
    sig: &RequestSignature,
    body: &[u8],
    now: i64,
    window: i64,
    public_key: &str,
) -> Result<()> {
    let (signer_id, timestamp, nonce, signature) = check_headers(sig, now, window)?;
    let key = decode_public_key(public_key)?;
    let expected = party_id(&key);
    if signer_id != expected {
        return Err(Error::Forbidden(format!(
            "this request must be signed by key {expected} ({HEADER_PARTY}: {expected}), not {signer_id}"
        )));
    }
    let canonical = canonical_request(method, path_and_query, timestamp, nonce, body);
    verify_signature(&key, canonical.as_bytes(), signature)?;
    spend_nonce(conn, &expected, nonce, now, window)
}

/// Keeps a verified request and its body, so a third party can later check who
/// agreed to what. Returns the evidence id.
pub fn record_evidence(conn: &dyn Db, v: &Verified, body: &[u8], now: i64) -> Result<i64> {
    let body = String::from_utf8_lossy(body).into_owned();
    conn.query_row(
        "INSERT INTO evidence (party, canonical, body, signature, at) VALUES (?1, ?2, ?3, ?4, ?5)
         RETURNING id",
        params![v.party.id, v.canonical, body, v.signature, now],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use rusqlite::Connection;

    const WINDOW: i64 = 300;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(SCHEMA).expect("schema");
        conn
    }

    fn registered(conn: &Connection, role: Role, name: &str) -> Result<(Signer, Party)> {
        let (signer, _) = Signer::generate()?;
        let (challenge, _) = new_challenge(conn, &signer.public_key_hex(), 1000)?;
        let party = register(
            conn,
            &signer.registration(&challenge, role, name),
            &[],
            1000,
        )?;
        Ok((signer, party))
    }

    fn headers(h: Vec<(&'static str, String)>) -> RequestSignature {
        let get = |name: &str| h.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        RequestSignature {
            party: get(HEADER_PARTY),
            timestamp: get(HEADER_TIMESTAMP),
            nonce: get(HEADER_NONCE),
            signature: get(HEADER_SIGNATURE),
        }
    }

    #[test]
    fn registration_proves_the_key() -> Result<()> {
        let conn = db();
        let (signer, party) = registered(&conn, Role::Provider, "bob")?;
        assert_eq!(party.id, signer.party_id());
        // A challenge is single use.
        let (other, _) = Signer::generate()?;
        let (challenge, _) = new_challenge(&conn, &other.public_key_hex(), 1000)?;
        let reg = other.registration(&challenge, Role::Demander, "eve");
        register(&conn, &reg, &[], 1000)?;
        let again = register(&conn, &reg, &[], 1000);
        assert!(matches!(again, Err(Error::Unauthorized(_))), "{again:?}");
        Ok(())
    }

    fn open_challenges(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM challenges", [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn challenges_are_one_per_key_none_for_a_registered_key_and_capped() -> Result<()> {
        let conn = db();
        let (signer, _) = Signer::generate()?;
        let key = signer.public_key_hex();
        let (first, _) = new_challenge(&conn, &key, 1000)?;
        let (second, _) = new_challenge(&conn, &key, 1001)?;
        assert_eq!(
            open_challenges(&conn),
            1,
            "asking again replaces the challenge"
        );
        let stale = register(
            &conn,
            &signer.registration(&first, Role::Provider, "p"),
            &[],
            1001,
        );
        assert!(matches!(stale, Err(Error::Unauthorized(_))), "{stale:?}");
        register(
            &conn,
            &signer.registration(&second, Role::Provider, "p"),
            &[],
            1001,
        )?;
        let again = new_challenge(&conn, &key, 1002);
        assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
        assert_eq!(
            open_challenges(&conn),
            0,
            "nothing stored for a registered key"
        );

        // Fill the table with other keys' challenges: the next key must wait.
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO challenges SELECT printf('c%d', i), printf('%064x', i), 5000 FROM n",
            [MAX_OPEN_CHALLENGES],
        )
        .expect("fill");
        let (late, _) = Signer::generate()?;
        let refused = new_challenge(&conn, &late.public_key_hex(), 1002);
        assert!(matches!(refused, Err(Error::TooMany(_))), "{refused:?}");
        assert_eq!(open_challenges(&conn), MAX_OPEN_CHALLENGES);
        // Once they expire, room again.
        new_challenge(&conn, &late.public_key_hex(), 5001)?;
        assert_eq!(open_challenges(&conn), 1);
        Ok(())
    }

    #[test]
    fn registration_signed_by_another_key_is_refused() -> Result<()> {
        let conn = db();
        let (victim, _) = Signer::generate()?;
        let (mallory, _) = Signer::generate()?;
        let (challenge, _) = new_challenge(&conn, &victim.public_key_hex(), 1000)?;
        let mut reg = mallory.registration(&challenge, Role::Provider, "victim");
        reg.public_key = victim.public_key_hex();
        let err = register(&conn, &reg, &[], 1000);
        assert!(matches!(err, Err(Error::Unauthorized(_))), "{err:?}");
        // Signing a different role than the one asked for doesn't pass either.
        let mut reg = victim.registration(&challenge, Role::Provider, "v");
        reg.role = Role::Demander;
        assert!(matches!(
            register(&conn, &reg, &[], 1000),
            Err(Error::Unauthorized(_))
        ));
        Ok(())
    }

    #[test]
    fn only_configured_keys_become_arbiters() -> Result<()> {
        let conn = db();
        let (judge, _) = Signer::generate()?;
        let (pretender, _) = Signer::generate()?;
        let arbiters = [judge.public_key_hex()];
        let (challenge, _) = new_challenge(&conn, &pretender.public_key_hex(), 1000)?;
        let err = register(
            &conn,
            &pretender.registration(&challenge, Role::Arbiter, "judge"),
            &arbiters,
            1000,
        );
        assert!(matches!(err, Err(Error::Forbidden(_))), "{err:?}");
        let (challenge, _) = new_challenge(&conn, &judge.public_key_hex(), 1000)?;
        let party = register(
            &conn,
            &judge.registration(&challenge, Role::Arbiter, "judge"),
            &arbiters,
            1000,
        )?;
        assert_eq!(party.role, Role::Arbiter);
        Ok(())
    }

    #[test]
    fn expired_challenge_is_refused() -> Result<()> {
        let conn = db();
        let (signer, _) = Signer::generate()?;
        let (challenge, expires) = new_challenge(&conn, &signer.public_key_hex(), 1000)?;
        let err = register(
            &conn,
            &signer.registration(&challenge, Role::Provider, "late"),
            &[],
            expires + 1,
        );
        assert!(matches!(err, Err(Error::Unauthorized(_))), "{err:?}");
        Ok(())
    }

    #[test]
    fn signed_request_verifies_once() -> Result<()> {
        let conn = db();
        let (signer, party) = registered(&conn, Role::Demander, "dee")?;
        let body = br#"{"amount":5}"#;
        let sig = headers(signer.sign_request("POST", "/v1/deposits", body, 1000)?);
        let v = verify_request(&conn, "POST", "/v1/deposits", &sig, body, 1010, WINDOW)?;
        assert_eq!(v.party, party);
        let replay = verify_request(&conn, "POST", "/v1/deposits", &sig, body, 1010, WINDOW);
        assert!(matches!(replay, Err(Error::Replayed { .. })), "{replay:?}");
        Ok(())
    }

    #[test]
    fn tampered_requests_are_refused() -> Result<()> {
        let conn = db();
        let (signer, _) = registered(&conn, Role::Demander, "dee")?;
        let body = br#"{"amount":5}"#;
        let fresh = || -> Result<RequestSignature> {
            Ok(headers(signer.sign_request(
                "POST",
                "/v1/deposits",
                body,
                1000,
            )?))
        };
        let cases: Vec<(&str, &str, &[u8], RequestSignature)> = vec![
            ("POST", "/v1/deposits", br#"{"amount":500}"#, fresh()?),
            ("POST", "/v1/withdrawals", body, fresh()?),
            ("PUT", "/v1/deposits", body, fresh()?),
            ("POST", "/v1/deposits", body, {
                let mut s = fresh()?;
                s.timestamp = Some("1001".into());
                s
            }),
            ("POST", "/v1/deposits", body, {
                let mut s = fresh()?;
                s.signature = Some(signer.sign(b"something else"));
                s
            }),
            ("POST", "/v1/deposits", body, {
                let mut s = fresh()?;
                s.signature = None;
                s
            }),
        ];
        for (method, path, body, sig) in cases {
            let err = verify_request(&conn, method, path, &sig, body, 1000, WINDOW);
            assert!(
                matches!(err, Err(Error::Unauthorized(_))),
                "{method} {path}: {err:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn nobody_can_sign_for_another_party() -> Result<()> {
        let conn = db();
        let (_, victim) = registered(&conn, Role::Provider, "victim")?;
        let (mallory, _) = registered(&conn, Role::Provider, "mallory")?;
        let mut sig = headers(mallory.sign_request("POST", "/v1/offers", b"{}", 1000)?);
        sig.party = Some(victim.id.clone());
        let err = verify_request(&conn, "POST", "/v1/offers", &sig, b"{}", 1000, WINDOW);
        assert!(matches!(err, Err(Error::Unauthorized(_))), "{err:?}");
        // An unregistered key can't sign at all.
        let (stranger, _) = Signer::generate()?;
        let sig = headers(stranger.sign_request("POST", "/v1/offers", b"{}", 1000)?);
        let err = verify_request(&conn, "POST", "/v1/offers", &sig, b"{}", 1000, WINDOW);
        assert!(matches!(err, Err(Error::Unauthorized(_))), "{err:?}");
        Ok(())
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() -> Result<()> {
        let conn = db();
        let (signer, _) = registered(&conn, Role::Demander, "dee")?;
        for signed_at in [1000 - WINDOW - 1, 1000 + WINDOW + 1] {
            let sig = headers(signer.sign_request("POST", "/x", b"", signed_at)?);
            let err = verify_request(&conn, "POST", "/x", &sig, b"", 1000, WINDOW);
            assert!(matches!(err, Err(Error::Unauthorized(_))), "{err:?}");
        }
        Ok(())
    }

    #[test]
    fn a_request_signed_by_an_unregistered_key_verifies_against_that_key_only() -> Result<()> {
        let conn = db();
        let (attestor, _) = Signer::generate()?;
        let (other, _) = Signer::generate()?;
        let key = attestor.public_key_hex();
        let sig = headers(attestor.sign_request("POST", "/x", b"{}", 1000)?);
        verify_request_by_key(&conn, "POST", "/x", &sig, b"{}", 1000, WINDOW, &key)?;
        let replay = verify_request_by_key(&conn, "POST", "/x", &sig, b"{}", 1000, WINDOW, &key);
        assert!(matches!(replay, Err(Error::Replayed { .. })), "{replay:?}");
        // Another key naming itself: not this key's request.
        let sig = headers(other.sign_request("POST", "/x", b"{}", 1000)?);
        let err = verify_request_by_key(&conn, "POST", "/x", &sig, b"{}", 1000, WINDOW, &key);
        assert!(matches!(err, Err(Error::Forbidden(_))), "{err:?}");
        // Another key signing in this key's name: the signature fails.
        let mut sig = headers(other.sign_request("POST", "/x", b"{}", 1000)?);
        sig.party = Some(attestor.party_id());
        let err = verify_request_by_key(&conn, "POST", "/x", &sig, b"{}", 1000, WINDOW, &key);
        assert!(matches!(err, Err(Error::Unauthorized(_))), "{err:?}");
        Ok(())
    }

    proptest::proptest! {
        /// Changing any byte of the body, or any character of the signature,
        /// of a validly signed request makes it fail verification.
        #[test]
        fn any_tampering_is_detected(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..200),
            pos in proptest::prelude::any::<usize>(),
            flip in 1u8..=255,
            in_signature in proptest::prelude::any::<bool>(),
        ) {
            let conn = db();
            let (signer, _) = registered(&conn, Role::Demander, "dee").expect("register");
            let mut sig = headers(signer.sign_request("POST", "/v1/x", &body, 1000).expect("sign"));
            let mut body = body;
            if in_signature {
                let mut raw = B64.decode(sig.signature.clone().unwrap_or_default()).expect("base64");
                let i = pos % raw.len();
                raw[i] ^= flip;
                sig.signature = Some(B64.encode(raw));
            } else {
                let i = pos % body.len();
                body[i] ^= flip;
            }
            let result = verify_request(&conn, "POST", "/v1/x", &sig, &body, 1000, WINDOW);
            proptest::prop_assert!(matches!(result, Err(Error::Unauthorized(_))), "{:?}", result);
        }
    }
}
