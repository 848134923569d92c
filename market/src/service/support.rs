//! Support and two-way trust: support tickets, reviews both ways, and the market's own
//! contact checks.

use sublet_market_api::identity::{Party, Registration, Role, Verified};
use sublet_market_api::{Error, Result};
use tracing::info;

use super::Market;
use crate::contacts::{self, Contact, ContactChallenge, ContactProof, ContactRequest};
use crate::disputes::Dispute;
use crate::identity;
use crate::reviews::{self, NewReview, Review, ReviewList};
use crate::tickets::{self, NewMessage, NewTicket, Ticket, TicketFilter};

impl Market {
    /// Only keys given to `--support-key` register as support staff.
    pub(super) fn check_support_key(&self, reg: &Registration) -> Result<()> {
        if reg.role == Role::Support
            && !self
                .policy
                .support_keys
                .iter()
                .any(|k| k.trim().eq_ignore_ascii_case(&reg.public_key))
        {
            return Err(Error::Forbidden(
                "this public key is not one of the market's support keys (serve --support-key)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `who` reviews the other side of a contract (or changes its review within the window).
    pub fn give_review(
        &self,
        who: &Verified,
        body: &[u8],
        contract: &str,
        new: &NewReview,
    ) -> Result<Review> {
        let now = self.now();
        let window = self.policy.review_window_secs;
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let r = reviews::give(c, &who.party, contract, new, evidence, now, window)?;
            info!(
                contract,
                side = r.side.as_str(),
                stars = r.stars,
                "review given"
            );
            Ok(r)
        })
    }

    /// The reviews of one contract: public.
    pub fn contract_reviews(&self, contract: &str) -> Result<Vec<Review>> {
        let window = self.policy.review_window_secs;
        self.tx(|c| reviews::of_contract(c, contract, window))
    }

    /// The reviews about a party: public.
    pub fn party_reviews(&self, party: &str) -> Result<ReviewList> {
        let window = self.policy.review_window_secs;
        self.tx(|c| {
            identity::party(c, party)?;
            reviews::about(c, party, window)
        })
    }

    pub fn open_ticket(&self, who: &Verified, body: &[u8], new: &NewTicket) -> Result<Ticket> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let t = tickets::open(c, &who.party, new, evidence, now)?;
            info!(ticket = %t.id, by = %who.party.id, "ticket opened");
            Ok(t)
        })
    }

    pub fn reply_ticket(
        &self,
        who: &Verified,
        body: &[u8],
        id: &str,
        new: &NewMessage,
    ) -> Result<Ticket> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            tickets::reply(c, &who.party, id, new, evidence, now)
        })
    }

    pub fn close_ticket(&self, who: &Party, id: &str) -> Result<Ticket> {
        let now = self.now();
        self.tx(|c| tickets::close(c, who, id, now))
    }

    /// Turns a ticket into a dispute on its contract, the thread its evidence.
    pub fn escalate_ticket(
        &self,
        who: &Verified,
        body: &[u8],
        id: &str,
    ) -> Result<(Ticket, Dispute)> {
        let now = self.now();
        self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            let (t, d) = tickets::escalate(c, &who.party, id, evidence, now)?;
            info!(ticket = %id, dispute = %d.id, "ticket escalated to a dispute");
            Ok((t, d))
        })
    }

    pub fn ticket(&self, who: &Party, id: &str) -> Result<Ticket> {
        self.tx(|c| tickets::get(c, who, id))
    }

    pub fn tickets_of(&self, who: &Party, filter: TicketFilter) -> Result<Vec<Ticket>> {
        self.tx(|c| tickets::list_visible(c, who, filter))
    }

    /// Sends a code to `who`'s address through the market's delivery. The code is stored
    /// only once it was handed over, so a failed delivery leaves nothing to guess.
    pub fn request_contact_check(
        &self,
        who: &Party,
        party: &str,
        req: &ContactRequest,
    ) -> Result<ContactChallenge> {
        let Some(delivery) = self.delivery.clone() else {
            return Err(Error::Conflict(
                "this market checks no contacts itself (start it with --contact-delivery-file); ask one of its attestors".into(),
            ));
        };
        let now = self.now();
        let address = req.email.trim().to_owned();
        let challenge = self.tx(|c| {
            let (challenge, code) = contacts::issue(c, who, party, req, now)?;
            delivery.deliver(&address, party, &code)?;
            Ok(challenge)
        })?;
        info!(party, "contact verification code sent");
        Ok(challenge)
    }

    pub fn verify_contact(
        &self,
        who: &Verified,
        body: &[u8],
        party: &str,
        proof: &ContactProof,
    ) -> Result<Contact> {
        let now = self.now();
        // A wrong code must count as an attempt even though the request fails, so the check
        // commits on its own before the answer is known.
        let outcome = self.tx(|c| {
            let evidence = identity::record_evidence(c, who, body, now)?;
            Ok(contacts::verify(c, &who.party, party, proof, evidence, now))
        })?;
        let contact = outcome?;
        info!(party, "contact verified");
        Ok(contact)
    }

    pub fn contacts(&self, party: &str) -> Result<Vec<Contact>> {
        self.tx(|c| {
            identity::party(c, party)?;
            contacts::list(c, party)
        })
    }
}
