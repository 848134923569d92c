//! Parties: signed requests, registration, and the attestations that set a party's trust.

use serde::Serialize;
use sublet_market_api::identity::{Party, Registration, RequestSignature, Verified};
use sublet_market_api::{Error, Result};
use tracing::info;

use super::Market;
use crate::attestations::{self, Attestation, SignedAttestation, TrustLevel};
use crate::identity;

/// A party as `GET /v1/parties/{id}` shows it: with its trust level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartyView {
    #[serde(flatten)]
    pub party: Party,
    pub trust_level: TrustLevel,
}

impl Market {
    /// Verifies a signed request and spends its nonce (committed even if the
    /// request then fails, so a captured request can never be replayed).
    pub fn authenticate(
        &self,
        method: &str,
        path_and_query: &str,
        sig: &RequestSignature,
        body: &[u8],
    ) -> Result<Verified> {
        let now = self.now();
        let window = self.policy.signature_window_secs;
        self.tx(|c| identity::verify_request(c, method, path_and_query, sig, body, now, window))
    }

    pub fn challenge(&self, public_key: &str) -> Result<(String, i64)> {
        let now = self.now();
        self.tx(|c| identity::new_challenge(c, public_key, now))
    }

    pub fn register(&self, reg: &Registration) -> Result<Party> {
        let now = self.now();
        self.check_support_key(reg)?;
        let party = self.tx(|c| identity::register(c, reg, &self.policy.arbiter_keys, now))?;
        info!(party = %party.id, role = party.role.as_str(), "party registered");
        Ok(party)
    }

    pub fn party(&self, id: &str) -> Result<Party> {
        self.read(|c| identity::party(c, id))
    }

    /// A party with its trust level.
    pub fn party_view(&self, id: &str) -> Result<PartyView> {
        let now = self.now();
        self.read(|c| {
            Ok(PartyView {
                party: identity::party(c, id)?,
                trust_level: attestations::trust(c, id, &self.policy.attestor_keys, now)?.level,
            })
        })
    }

    /// Checks and stores an attestation about `party`, signed by one of the attestor keys.
    pub fn submit_attestation(&self, party: &str, att: &SignedAttestation) -> Result<Attestation> {
        let now = self.now();
        let a = self.tx(|c| {
            attestations::submit(
                c,
                party,
                att,
                &self.policy.attestor_keys,
                now,
                self.policy.signature_window_secs,
            )
        })?;
        info!(attestation = %a.id, party, kind = a.kind.as_str(), attestor = %a.attestor_id, "attestation submitted");
        Ok(a)
    }

    pub fn attestations(&self, party: &str) -> Result<Vec<Attestation>> {
        let now = self.now();
        self.read(|c| attestations::list(c, party, &self.policy.attestor_keys, now))
    }

    /// Revokes an attestation; the request must be signed by the attestation's own
    /// attestor key (its nonce is spent even if the revocation then fails).
    #[allow(clippy::too_many_arguments)]
    pub fn revoke_attestation(
        &self,
        method: &str,
        path_and_query: &str,
        sig: &RequestSignature,
        body: &[u8],
        party: &str,
        id: &str,
        reason: &str,
    ) -> Result<Attestation> {
        let now = self.now();
        let keys = &self.policy.attestor_keys;
        let window = self.policy.signature_window_secs;
        self.tx(|c| {
            let a = attestations::get(c, party, id, keys, now)?;
            identity::verify_request_by_key(
                c,
                method,
                path_and_query,
                sig,
                body,
                now,
                window,
                &a.attestor,
            )
            .map_err(|e| match e {
                Error::Forbidden(m) => Error::Forbidden(format!(
                    "only the attestor that signed attestation {id} may revoke it: {m}"
                )),
                e => e,
            })
        })?;
        let a = self.tx(|c| attestations::revoke(c, party, id, reason, keys, now))?;
        info!(attestation = %id, party, "attestation revoked");
        Ok(a)
    }
}
