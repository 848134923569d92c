//! Parties and their ed25519 keys, as both sides of a signed request see them: what a
//! party signs to register and to send a request, the client's key ([`Signer`]), and the
//! checks of a signature and its headers. The market's records of parties, challenges
//! and spent nonces are in `sublet-market`'s `identity` module.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Headers of a signed request.
pub const HEADER_PARTY: &str = "x-sublet-party";
pub const HEADER_TIMESTAMP: &str = "x-sublet-timestamp";
pub const HEADER_NONCE: &str = "x-sublet-nonce";
pub const HEADER_SIGNATURE: &str = "x-sublet-signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Demander,
    Provider,
    /// Decides disputes; only keys the market was started with may register as one.
    Arbiter,
    /// Answers support tickets; only keys given to the market's `--support-key` may
    /// register as one.
    Support,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Demander => "demander",
            Role::Provider => "provider",
            Role::Arbiter => "arbiter",
            Role::Support => "support",
        }
    }

    /// The role named by [`Role::as_str`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "demander" => Ok(Role::Demander),
            "provider" => Ok(Role::Provider),
            "arbiter" => Ok(Role::Arbiter),
            "support" => Ok(Role::Support),
            other => Err(Error::Internal(format!(
                "unknown role {other:?} in database"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Party {
    /// Derived from the public key: the first 16 bytes of its SHA-256, in hex.
    pub id: String,
    /// The ed25519 public key, 32 bytes in hex.
    pub public_key: String,
    pub role: Role,
    pub name: String,
    /// Unix seconds.
    pub registered_at: i64,
}

pub fn party_id(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    hex::encode(&digest.as_ref()[..16])
}

/// SHA-256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// What a party signs to register: binds the challenge to the role and name it asks for.
pub fn registration_message(challenge: &str, role: Role, name: &str) -> String {
    format!(
        "sublet-market-register-v1\n{challenge}\n{}\n{name}",
        role.as_str()
    )
}

/// What a party signs for every request. The body enters as its SHA-256, so the
/// signature covers exactly the bytes the server parses.
pub fn canonical_request(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    format!(
        "sublet-market-request-v1\n{}\n{path_and_query}\n{timestamp}\n{nonce}\n{}",
        method.to_ascii_uppercase(),
        sha256_hex(body)
    )
}

/// `bytes` random bytes from the system generator, in hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::Internal("system random number generator failed".into()))?;
    Ok(hex::encode(buf))
}

/// A random identifier with a readable prefix, e.g. `ct_0f3a...`.
pub fn new_id(prefix: &str) -> Result<String> {
    Ok(format!("{prefix}_{}", random_hex(8)?))
}

/// A 32-byte ed25519 public key from its hex form.
pub fn decode_public_key(public_key: &str) -> Result<Vec<u8>> {
    match hex::decode(public_key) {
        Ok(k) if k.len() == 32 => Ok(k),
        _ => Err(Error::BadRequest(format!(
            "public_key must be a 32-byte ed25519 public key in hex (64 characters), got {public_key:?}"
        ))),
    }
}

/// Checks a base64 ed25519 signature over `message` against `public_key` (32 bytes).
pub fn verify_signature(public_key: &[u8], message: &[u8], signature_b64: &str) -> Result<()> {
    let signature = B64
        .decode(signature_b64.trim())
        .map_err(|_| Error::Unauthorized("signature is not valid base64".into()))?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, &signature)
        .map_err(|_| {
            Error::Unauthorized("signature does not verify against the party's public key".into())
        })
}

/// A registration request: the key, what it asks to be, and its signature over
/// [`registration_message`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub public_key: String,
    pub role: Role,
    pub name: String,
    pub challenge: String,
    pub signature: String,
}

/// The signature headers of one request, as received.
#[derive(Debug, Clone, Default)]
pub struct RequestSignature {
    pub party: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub signature: Option<String>,
}

/// A request whose signature checked out: who sent it and the proof, kept as
/// evidence for contracts and receipts.
#[derive(Debug, Clone)]
pub struct Verified {
    pub party: Party,
    pub canonical: String,
    pub signature: String,
}

/// The signature headers of a request, present and well formed: (party, timestamp, nonce,
/// signature). Checks the timestamp window and the nonce's shape, not the signature.
pub fn check_headers(
    sig: &RequestSignature,
    now: i64,
    window: i64,
) -> Result<(&str, i64, &str, &str)> {
    let missing = |h: &str| Error::Unauthorized(format!("signed request is missing header {h}"));
    let party_id = sig.party.as_deref().ok_or_else(|| missing(HEADER_PARTY))?;
    let timestamp = sig
        .timestamp
        .as_deref()
        .ok_or_else(|| missing(HEADER_TIMESTAMP))?;
    let nonce = sig.nonce.as_deref().ok_or_else(|| missing(HEADER_NONCE))?;
    let signature = sig
        .signature
        .as_deref()
        .ok_or_else(|| missing(HEADER_SIGNATURE))?;
    let timestamp: i64 = timestamp.parse().map_err(|_| {
        Error::Unauthorized(format!(
            "{HEADER_TIMESTAMP} must be unix seconds, got {timestamp:?}"
        ))
    })?;
    // `abs_diff` cannot overflow, as `timestamp - now` does for a timestamp far in the past.
    if timestamp.abs_diff(now) > window.unsigned_abs() {
        return Err(Error::Unauthorized(format!(
            "request timestamp {timestamp} is more than {window} s from the server clock {now}; sign it again"
        )));
    }
    if nonce.len() < 16
        || nonce.len() > 64
        || !nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::Unauthorized(format!(
            "{HEADER_NONCE} must be 16 to 64 letters, digits, '-' or '_'"
        )));
    }
    Ok((party_id, timestamp, nonce, signature))
}

/// A party's key, on the client side: registers and signs requests.
pub struct Signer {
    key: Ed25519KeyPair,
}

impl Signer {
    /// A fresh key; returns it with its PKCS#8 encoding, which is what to store.
    pub fn generate() -> Result<(Self, Vec<u8>)> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| Error::Internal("could not generate an ed25519 key".into()))?;
        let signer = Self::from_pkcs8(pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| Error::BadRequest(format!("not an ed25519 PKCS#8 key: {e}")))?;
        Ok(Self { key })
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.public_key().as_ref())
    }

    pub fn party_id(&self) -> String {
        party_id(self.key.public_key().as_ref())
    }

    /// Signs `message`, base64.
    pub fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.key.sign(message).as_ref())
    }

    /// The registration body answering `challenge`.
    pub fn registration(&self, challenge: &str, role: Role, name: &str) -> Registration {
        Registration {
            public_key: self.public_key_hex(),
            role,
            name: name.into(),
            challenge: challenge.into(),
            signature: self.sign(registration_message(challenge, role, name).as_bytes()),
        }
    }

    /// The headers that sign a request, with a fresh nonce.
    pub fn sign_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now: i64,
    ) -> Result<Vec<(&'static str, String)>> {
        let nonce = random_hex(16)?;
        let canonical = canonical_request(method, path_and_query, now, &nonce, body);
        Ok(vec![
            (HEADER_PARTY, self.party_id()),
            (HEADER_TIMESTAMP, now.to_string()),
            (HEADER_NONCE, nonce),
            (HEADER_SIGNATURE, self.sign(canonical.as_bytes())),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn signed_at(timestamp: &str) -> RequestSignature {
        RequestSignature {
            party: Some("p".into()),
            timestamp: Some(timestamp.into()),
            nonce: Some("0123456789abcdef".into()),
            signature: Some("s".into()),
        }
    }

    fn headers(timestamp: &str) -> RequestSignature {
        RequestSignature {
            party: Some("0123456789abcdef0123456789abcdef".into()),
            timestamp: Some(timestamp.into()),
            nonce: Some("0123456789abcdef".into()),
            signature: Some("AAAA".into()),
        }
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_are_refused_without_overflow() {
        let now = 1_800_000_000;
        assert!(check_headers(&signed_at("1800000100"), now, 300).is_ok());
        for far in [i64::MIN.to_string(), i64::MAX.to_string(), "-1".into()] {
            let err = check_headers(&signed_at(&far), now, 300).unwrap_err();
            assert!(
                err.to_string().contains("from the server clock"),
                "{far}: {err}"
            );
        }
    }

    #[test]
    fn timestamps_inside_the_window_pass() {
        let now = 1_700_000_000;
        for ts in [now, now - 300, now + 300] {
            let (_, got, _, _) = check_headers(&headers(&ts.to_string()), now, 300).unwrap();
            assert_eq!(got, ts);
        }
        for ts in [now - 301, now + 301, 0] {
            assert!(
                check_headers(&headers(&ts.to_string()), now, 300).is_err(),
                "{ts}"
            );
        }
    }

    /// Found writing the `market_signature` fuzz target: `(timestamp - now).abs()` overflowed for a
    /// timestamp near i64::MIN (a panic with overflow checks; without them `abs` of i64::MIN
    /// stayed negative and the request passed the window).
    #[test]
    fn timestamps_far_in_the_past_are_refused_not_overflowed() {
        for now in [0, 1, 1_700_000_000, i64::MAX] {
            for ts in [i64::MIN, i64::MIN + now.max(0), i64::MIN + 1] {
                let err = check_headers(&headers(&ts.to_string()), now, 300).unwrap_err();
                assert!(
                    err.to_string().contains("from the server clock"),
                    "{ts} at {now}: {err}"
                );
            }
        }
    }
}
