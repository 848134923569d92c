//! Money: balances, deposits and withdrawals through the payment rail, and the release of
//! a provider's held-back credits.

use std::sync::Arc;

use serde::Serialize;
use sublet_market_api::credits::Micros;
use sublet_market_api::identity::{Party, Role};
use sublet_market_api::{Error, Result};
use tracing::info;

use super::Market;
use crate::contracts;
use crate::db::Db;
use crate::ledger::{self, Account, Applied, LedgerSummary};
use crate::rail::{Authorization, PaymentRail, treasurer};
use crate::receipts;

/// A party's credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balances {
    pub party: String,
    /// Spendable: may be prepaid into contracts or withdrawn.
    pub available: Micros,
    /// Earnings withheld while a provider is in vetting.
    pub held_back: Micros,
    /// When the held-back credits may be released (providers only).
    pub held_back_release_at: Option<i64>,
    /// Escrow of each contract the party is demander of.
    pub escrow: Vec<ContractEscrow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractEscrow {
    pub contract: String,
    pub amount: Micros,
}

/// The outcome of a ledger operation together with the resulting balances.
#[derive(Debug, Clone, Serialize)]
pub struct OperationResult {
    pub op_id: String,
    pub applied: Applied,
    pub amount: Micros,
    pub balances: Balances,
}

impl Market {
    pub(super) fn balances_in(&self, c: &dyn Db, party: &Party) -> Result<Balances> {
        let escrow = contracts::list_for(c, &party.id)?
            .into_iter()
            .filter(|ct| ct.demander == party.id)
            .map(|ct| ContractEscrow {
                contract: ct.id,
                amount: ct.escrow,
            })
            .collect();
        Ok(Balances {
            party: party.id.clone(),
            available: ledger::balance(c, &Account::Available(party.id.clone()))?,
            held_back: ledger::balance(c, &Account::HeldBack(party.id.clone()))?,
            held_back_release_at: (party.role == Role::Provider)
                .then(|| receipts::vetting_ends(&self.policy, party)),
            escrow,
        })
    }

    /// A party's balances; only the party itself may read them.
    pub fn balances(&self, who: &Party, party_id: &str) -> Result<Balances> {
        if who.id != party_id {
            return Err(Error::Forbidden(format!(
                "party {} may read only its own balances, not those of {party_id}",
                who.id
            )));
        }
        self.tx(|c| self.balances_in(c, who))
    }

    /// The treasurer rail's audit trail, newest first (at most `limit`): a party reads its
    /// own entries, an arbiter every party's.
    pub fn treasury(
        &self,
        who: &Party,
        party: Option<&str>,
        limit: i64,
    ) -> Result<Vec<treasurer::Entry>> {
        let limit = limit.clamp(1, 1000);
        let party = match (who.role, party) {
            (Role::Arbiter, p) => p.map(str::to_owned),
            (_, Some(p)) if p != who.id => {
                return Err(Error::Forbidden(format!(
                    "party {} may read only its own treasury entries, not those of {p}",
                    who.id
                )));
            }
            _ => Some(who.id.clone()),
        };
        self.read(|c| treasurer::entries(c, party.as_deref(), limit))
    }

    pub fn ledger_summary(&self) -> Result<LedgerSummary> {
        self.read(ledger::summary)
    }

    fn rail(&self) -> Result<&Arc<dyn PaymentRail>> {
        self.rail.as_ref().ok_or(Error::NoPaymentRail)
    }

    pub fn deposit(
        &self,
        who: &Party,
        op_id: &str,
        amount: Micros,
        reference: &str,
        authorization: Option<&Authorization>,
    ) -> Result<OperationResult> {
        let rail = self.rail()?;
        ledger::check_amount("amount", amount)?;
        let confirmed = rail.confirm_deposit(&who.id, amount, reference, authorization)?;
        let now = self.now();
        self.tx(|c| {
            if let Some(used) = &confirmed.used {
                treasurer::record(c, op_id, &who.id, amount, reference, used, now)?;
            }
            let applied = ledger::deposit(c, op_id, &who.id, amount, &confirmed.reference, now)?;
            info!(party = %who.id, op_id, amount, ?applied, "deposit");
            Ok(OperationResult {
                op_id: op_id.into(),
                applied,
                amount,
                balances: self.balances_in(c, who)?,
            })
        })
    }

    pub fn withdraw(
        &self,
        who: &Party,
        op_id: &str,
        amount: Micros,
        reference: &str,
        authorization: Option<&Authorization>,
    ) -> Result<OperationResult> {
        let rail = self.rail()?;
        let now = self.now();
        self.tx(|c| {
            let applied = ledger::withdraw(
                c,
                op_id,
                &who.id,
                amount,
                &format!("{}:{reference}", rail.name()),
                now,
            )?;
            // Paid out inside the transaction: if the rail refuses, the debit rolls back.
            if applied == Applied::New {
                let confirmed = rail.pay_out(&who.id, amount, reference, authorization)?;
                if let Some(used) = &confirmed.used {
                    treasurer::record(c, op_id, &who.id, amount, reference, used, now)?;
                }
            }
            info!(party = %who.id, op_id, amount, ?applied, "withdrawal");
            Ok(OperationResult {
                op_id: op_id.into(),
                applied,
                amount,
                balances: self.balances_in(c, who)?,
            })
        })
    }

    /// Releases a provider's held-back credits once its vetting period is over.
    pub fn release_held_back(&self, who: &Party, op_id: &str) -> Result<OperationResult> {
        let now = self.now();
        if who.role != Role::Provider {
            return Err(Error::Forbidden(
                "only providers have held-back credits".into(),
            ));
        }
        let ends = receipts::vetting_ends(&self.policy, who);
        if now < ends {
            return Err(Error::Conflict(format!(
                "provider {} is in vetting until {ends}; held-back credits are released after that",
                who.id
            )));
        }
        self.tx(|c| {
            let (applied, amount) = ledger::release_held_back(c, op_id, &who.id, now)?;
            info!(provider = %who.id, op_id, amount, ?applied, "held-back credits released");
            Ok(OperationResult {
                op_id: op_id.into(),
                applied,
                amount,
                balances: self.balances_in(c, who)?,
            })
        })
    }
}
