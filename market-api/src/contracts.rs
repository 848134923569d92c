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
