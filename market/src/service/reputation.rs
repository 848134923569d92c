//! Reputation: ratings, the demander's observations and feedback, and disputes.

use sublet_market_api::Result;
use sublet_market_api::identity::{Party, Verified};
use tracing::info;

use super::Market;
use crate::attestations;
use crate::contracts;
use crate::disputes::{self, Decision, Dispute, DisputeState, NewDispute};
use crate::identity;
use crate::ratings::{self, Rating};

impl Market {
    pub fn rating(&self, party_id: &str) -> Result<Rating> {
        let now = self.now();
        self.read(|c| {
            let party = identity::party(c, party_id)?;
            let trust = attestations::trust(c, party_id, &self.policy.attestor_keys, now)?;
            ratings::rating(c, &party, self.policy.receipt_tolerance_bps, &trust, now)
        })
    }

    /// The demander's gateway reports the provider's uptime and latency for a period.
    pub fn observe(
        &self,
        who: &Verified,
        body: &[u8],
        contract: &str,
        o: &crate::quality::Observation,
    ) -> Result<()> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            crate::quality::observe(c, &who.party, contract, o, evidence, now)
        })
    }

    /// The demander rates the contract's provider (1 to 5 stars).
    pub fn give_feedback(
        &self,
        who: &Verified,
        body: &[u8],
        contract: &str,
        f: &crate::quality::Feedback,
    ) -> Result<crate::quality::Feedback> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let given = crate::quality::give_feedback(c, &who.party, contract, f, evidence, now)?;
            info!(contract, stars = given.stars, "feedback given");
            Ok(given)
        })
    }

    /// The feedback on a contract, for its parties and arbiters.
    pub fn feedback(
        &self,
        who: &Party,
        contract: &str,
    ) -> Result<Option<crate::quality::Feedback>> {
        self.read(|c| {
            contracts::get(c, contract)?.check_viewer(who)?;
            crate::quality::feedback_of(c, contract)
        })
    }

    pub fn open_dispute(
        &self,
        who: &Verified,
        body: &[u8],
        contract: &str,
        new: &NewDispute,
    ) -> Result<Dispute> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let d = disputes::open(c, &who.party, contract, new, evidence, now)?;
            info!(dispute = %d.id, contract, by = %who.party.id, "dispute opened");
            Ok(d)
        })
    }

    pub fn decide_dispute(
        &self,
        who: &Verified,
        body: &[u8],
        id: &str,
        decision: &Decision,
    ) -> Result<Dispute> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let d = disputes::decide(c, &who.party, id, decision, evidence, now)?;
            info!(dispute = %id, in_favour_of = decision.in_favour_of.as_str(), amount = decision.amount, "dispute decided");
            Ok(d)
        })
    }

    pub fn dispute(&self, who: &Party, id: &str) -> Result<Dispute> {
        self.read(|c| {
            let d = disputes::get(c, id)?;
            contracts::get(c, &d.contract)?.check_viewer(who)?;
            Ok(d)
        })
    }

    /// The disputes `who` may read: an arbiter's are all of the market's.
    pub fn disputes_of(&self, who: &Party, state: DisputeState) -> Result<Vec<Dispute>> {
        self.read(|c| disputes::list_visible(c, who, state))
    }

    pub fn disputes_of_contract(&self, who: &Party, contract: &str) -> Result<Vec<Dispute>> {
        self.read(|c| {
            contracts::get(c, contract)?.check_viewer(who)?;
            disputes::list_for_contract(c, contract)
        })
    }
}
