//! Contracts between a demander and a provider, as the market shows them: proposed by the
//! demander on an offer, accepted (or rejected) by the provider, prepaid into escrow and
//! ended by termination. The rules that move a contract along are in `sublet-market`.

use serde::{Deserialize, Serialize};

use crate::credits::Micros;
use crate::identity::{Party, Role};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractState {
    /// Signed by the demander, waiting for the provider.
    Proposed,
    /// Accepted by the provider: receipts may be submitted and settled.
    Active,
    /// Declined by the provider or withdrawn by the demander before acceptance.
    Rejected,
    /// Ended by either party; the unused prepayment went back to the demander.
    Terminated,
}

impl ContractState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContractState::Proposed => "proposed",
            ContractState::Active => "active",
            ContractState::Rejected => "rejected",
            ContractState::Terminated => "terminated",
        }
    }

    /// The state named by [`ContractState::as_str`].
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "proposed" => ContractState::Proposed,
            "active" => ContractState::Active,
            "rejected" => ContractState::Rejected,
            "terminated" => ContractState::Terminated,
            other => {
                return Err(Error::Internal(format!(
                    "contract state {other:?} in the database is not one the market knows"
                )));
            }
        })
    }
}

/// What a demander proposes on an offer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewContract {
    pub offer_id: String,
    /// Bytes reserved from the offer's capacity.
    pub reserved_bytes: u64,
    /// At least the offer's `min_term_days`.
    pub term_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub id: String,
    pub offer_id: String,
    pub demander: String,
    pub provider: String,
    pub reserved_bytes: u64,
    pub term_days: u32,
    /// Prices copied from the offer when the contract was proposed.
    pub price_per_gib_month: Micros,
    pub egress_price_per_gib: Micros,
    pub state: ContractState,
    pub created_at: i64,
    pub accepted_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// Evidence ids of the signed requests that proposed and accepted it.
    pub proposal_evidence: i64,
    pub acceptance_evidence: Option<i64>,
    /// Credits currently in the contract's escrow.
    pub escrow: Micros,
    /// Length of one receipt period, set from the market's policy at proposal; periods
    /// count from `accepted_at`.
    pub period_secs: i64,
}

impl Contract {
    /// Lets the contract's parties and arbiters read it.
    pub fn check_viewer(&self, party: &Party) -> Result<()> {
        if party.role == Role::Arbiter {
            Ok(())
        } else {
            self.check_party(party)
        }
    }

    /// Refuses anyone but the contract's demander and provider.
    pub fn check_party(&self, party: &Party) -> Result<()> {
        if party.id == self.demander || party.id == self.provider {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "party {} is not a party to contract {}",
                party.id, self.id
            )))
        }
    }
}

/// A signed request the market kept as evidence: the canonical text the party signed
/// ([`crate::identity::canonical_request`]), the body it covers and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEvidence {
    pub party: String,
    /// The party's ed25519 public key, hex: its id is derived from it, so a market cannot
    /// name another key for the party.
    pub public_key: String,
    pub canonical: String,
    pub body: String,
    /// Base64 ed25519 signature over `canonical`.
    pub signature: String,
    /// When the market received it, unix seconds.
    pub at: i64,
}

/// What the parties of a contract signed: the demander's proposal and the provider's
/// acceptance (`GET /v1/contracts/{id}/evidence`). Providers admit a tenant and gateways pin
/// a provider key only from these, never from the market's word alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractEvidence {
    pub contract: String,
    pub proposal: SignedEvidence,
    #[serde(default)]
    pub acceptance: Option<SignedEvidence>,
}

impl SignedEvidence {
    /// Checks that `party` signed `method path` with exactly this body; answers its key.
    pub fn verify(&self, party: &str, method: &str, path: &str) -> Result<[u8; 32]> {
        let refuse =
            |why: String| Error::Unauthorized(format!("evidence of {method} {path}: {why}"));
        let key = crate::identity::decode_public_key(&self.public_key)?;
        if crate::identity::party_id(&key) != party || self.party != party {
            return Err(refuse(format!(
                "signed by party {} (key {}), not by party {party}",
                self.party, self.public_key
            )));
        }
        crate::identity::verify_signature(&key, self.canonical.as_bytes(), &self.signature)
            .map_err(|e| refuse(e.to_string()))?;
        let lines: Vec<&str> = self.canonical.split('\n').collect();
        let [
            magic,
            signed_method,
            signed_path,
            _timestamp,
            _nonce,
            body_hash,
        ] = lines[..]
        else {
            return Err(refuse("the signed text is not a signed request".into()));
        };
        if magic != "sublet-market-request-v1" {
            return Err(refuse("the signed text is not a signed request".into()));
        }
        if signed_method != method || signed_path != path {
            return Err(refuse(format!(
                "the signature is for {signed_method} {signed_path}"
            )));
        }
        if body_hash != crate::identity::sha256_hex(self.body.as_bytes()) {
            return Err(refuse("the body is not the one signed".into()));
        }
        key.try_into()
            .map_err(|_| refuse("the key is not 32 bytes".into()))
    }
}

impl ContractEvidence {
    /// The demander's key, once its signed proposal is checked to ask for exactly `c`'s
    /// offer and reserved bytes.
    pub fn verify_proposal(&self, c: &Contract) -> Result<[u8; 32]> {
        if self.contract != c.id {
            return Err(Error::Unauthorized(format!(
                "the evidence is for contract {}, not {}",
                self.contract, c.id
            )));
        }
        let key = self.proposal.verify(&c.demander, "POST", "/v1/contracts")?;
        let asked: NewContract = serde_json::from_str(&self.proposal.body).map_err(|e| {
            Error::Unauthorized(format!(
                "the signed proposal of contract {} does not parse: {e}",
                c.id
            ))
        })?;
        if asked.offer_id != c.offer_id || asked.reserved_bytes != c.reserved_bytes {
            return Err(Error::Unauthorized(format!(
                "contract {} says offer {} with {} bytes reserved, but the demander signed offer {} with {} bytes",
                c.id, c.offer_id, c.reserved_bytes, asked.offer_id, asked.reserved_bytes
            )));
        }
        Ok(key)
    }

    /// The provider's key, once its signed acceptance of `c` is checked.
    pub fn verify_acceptance(&self, c: &Contract) -> Result<[u8; 32]> {
        let acceptance = self.acceptance.as_ref().ok_or_else(|| {
            Error::Unauthorized(format!("contract {} has no signed acceptance", c.id))
        })?;
        if self.contract != c.id {
            return Err(Error::Unauthorized(format!(
                "the evidence is for contract {}, not {}",
                self.contract, c.id
            )));
        }
        acceptance.verify(
            &c.provider,
            "POST",
            &format!("/v1/contracts/{}/accept", c.id),
        )
    }
}
