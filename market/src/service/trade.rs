//! Trade: offers, contracts from proposal to termination, prepaid escrow, and the usage
//! receipts that settle each period.

use serde::Serialize;
use sublet_market_api::Result;
use sublet_market_api::contracts::{Contract, NewContract};
use sublet_market_api::credits::Micros;
use sublet_market_api::identity::{Party, Verified};
use sublet_market_api::offers::{NewOffer, Offer};
use sublet_market_api::receipts::UsageReceipt;
use tracing::info;

use super::Market;
use super::accounts::OperationResult;
use crate::attestations;
use crate::contracts;
use crate::identity;
use crate::offers::{self, OfferFilter};
use crate::ratings;
use crate::receipts::{self, Period};

#[derive(Debug, Clone, Serialize)]
pub struct Termination {
    pub contract: Contract,
    pub refunded: Micros,
}

impl Market {
    pub fn publish_offer(&self, who: &Party, offer: &NewOffer) -> Result<Offer> {
        let now = self.now();
        self.tx(|c| offers::publish(c, who, offer, now))
    }

    pub fn withdraw_offer(&self, who: &Party, id: &str) -> Result<Offer> {
        self.tx(|c| offers::withdraw(c, who, id))
    }

    pub fn offer(&self, id: &str) -> Result<Offer> {
        let now = self.now();
        self.tx(|c| {
            contracts::expire_proposals(c, now)?;
            offers::get(c, id)
        })
    }

    pub fn search_offers(&self, filter: &OfferFilter) -> Result<Vec<Offer>> {
        let now = self.now();
        self.tx(|c| {
            contracts::expire_proposals(c, now)?;
            let found = offers::search(c, filter)?;
            if filter.min_trust.is_none() && filter.min_score.is_none() {
                return Ok(found);
            }
            // Each provider's trust level and score, looked up once.
            let mut seen: std::collections::HashMap<String, (attestations::TrustLevel, u32)> =
                std::collections::HashMap::new();
            let mut kept = Vec::with_capacity(found.len());
            for offer in found {
                let (level, score) = match seen.get(&offer.provider) {
                    Some(&v) => v,
                    None => {
                        let trust = attestations::trust(
                            c,
                            &offer.provider,
                            &self.policy.attestor_keys,
                            now,
                        )?;
                        let score = match filter.min_score {
                            Some(_) => {
                                let party = identity::party(c, &offer.provider)?;
                                ratings::rating(
                                    c,
                                    &party,
                                    self.policy.receipt_tolerance_bps,
                                    &trust,
                                    now,
                                )?
                                .score
                            }
                            None => 0,
                        };
                        seen.insert(offer.provider.clone(), (trust.level, score));
                        (trust.level, score)
                    }
                };
                if filter.min_trust.is_some_and(|min| level < min)
                    || filter.min_score.is_some_and(|min| score < min)
                {
                    continue;
                }
                kept.push(offer);
            }
            Ok(kept)
        })
    }

    /// Proposes a contract; the signed request is kept as the demander's signature.
    pub fn propose_contract(
        &self,
        who: &Verified,
        body: &[u8],
        new: &NewContract,
    ) -> Result<Contract> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let ct = contracts::propose(
                c,
                &who.party,
                new,
                self.policy.receipt_period_secs,
                evidence,
                now,
            )?;
            info!(contract = %ct.id, demander = %ct.demander, provider = %ct.provider, reserved_bytes = ct.reserved_bytes, "contract proposed");
            Ok(ct)
        })
    }

    pub fn accept_contract(&self, who: &Verified, body: &[u8], id: &str) -> Result<Contract> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let ct = contracts::accept(c, &who.party, id, evidence, now)?;
            info!(contract = %ct.id, "contract accepted");
            Ok(ct)
        })
    }

    pub fn reject_contract(&self, who: &Party, id: &str) -> Result<Contract> {
        let now = self.now();
        self.tx(|c| contracts::reject(c, who, id, now))
    }

    pub fn contract(&self, who: &Party, id: &str) -> Result<Contract> {
        self.tx(|c| {
            let ct = contracts::get(c, id)?;
            ct.check_viewer(who)?;
            Ok(ct)
        })
    }

    pub fn contracts_of(&self, who: &Party) -> Result<Vec<Contract>> {
        self.read(|c| contracts::list_for(c, &who.id))
    }

    /// Prepays into escrow, then settles periods that were waiting for funds.
    pub fn prepay(
        &self,
        who: &Party,
        id: &str,
        op_id: &str,
        amount: Micros,
    ) -> Result<OperationResult> {
        let now = self.now();
        self.tx(|c| {
            let (applied, ct) = contracts::prepay(c, who, id, op_id, amount, now)?;
            receipts::settle_waiting(c, &self.policy, &ct, now)?;
            Ok(OperationResult {
                op_id: op_id.into(),
                applied,
                amount,
                balances: self.balances_in(c, who)?,
            })
        })
    }

    pub fn terminate_contract(&self, who: &Party, id: &str) -> Result<Termination> {
        let now = self.now();
        self.tx(|c| {
            let (contract, refunded) = contracts::terminate(c, who, id, now)?;
            info!(contract = %contract.id, by = %who.id, refunded, "contract terminated");
            Ok(Termination { contract, refunded })
        })
    }

    pub fn submit_receipt(
        &self,
        who: &Verified,
        body: &[u8],
        id: &str,
        r: &UsageReceipt,
    ) -> Result<Period> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let period = receipts::submit(c, &self.policy, &who.party, id, r, evidence, now)?;
            info!(contract = %id, party = %who.party.id, period_start = r.period_start, status = ?period.status, "receipt received");
            Ok(period)
        })
    }

    pub fn periods(&self, who: &Party, id: &str) -> Result<Vec<Period>> {
        let now = self.now();
        self.tx(|c| {
            let ct = contracts::get(c, id)?;
            ct.check_viewer(who)?;
            receipts::periods(c, &self.policy, &ct, now)
        })
    }

    pub fn settle_period(&self, who: &Party, id: &str, period_start: i64) -> Result<Period> {
        let now = self.now();
        self.tx(|c| {
            let ct = contracts::get(c, id)?;
            ct.check_party(who)?;
            receipts::try_settle(c, &self.policy, &ct, period_start, now)
        })
    }
}
