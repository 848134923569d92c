//! The signed requests behind a contract, handed to its parties so that each checks the
//! other's signature itself instead of trusting the market's word: the demander's proposal
//! (tenant and quota) and the provider's acceptance (the key a gateway pins).

use sublet_market_api::Result;
use sublet_market_api::contracts::{ContractEvidence, SignedEvidence};
use sublet_market_api::identity::Party;

use super::Market;
use crate::contracts;
use crate::db::Db;
use crate::identity;
use crate::params;

fn signed(conn: &dyn Db, evidence: i64) -> Result<SignedEvidence> {
    let (party, canonical, body, signature, at): (String, String, String, String, i64) = conn
        .query_row(
            "SELECT party, canonical, body, signature, at FROM evidence WHERE id = ?1",
            params![evidence],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
    let public_key = identity::party(conn, &party)?.public_key;
    Ok(SignedEvidence {
        party,
        public_key,
        canonical,
        body,
        signature,
        at,
    })
}

impl Market {
    /// What the parties of contract `id` signed; only they may read it.
    pub fn contract_evidence(&self, who: &Party, id: &str) -> Result<ContractEvidence> {
        self.tx(|c| {
            let ct = contracts::get(c, id)?;
            ct.check_party(who)?;
            Ok(ContractEvidence {
                contract: ct.id.clone(),
                proposal: signed(c, ct.proposal_evidence)?,
                acceptance: ct.acceptance_evidence.map(|e| signed(c, e)).transpose()?,
            })
        })
    }
}
