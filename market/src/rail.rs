//! Payment rails: how credits enter and leave the market. No real money moves
//! in sublet; a rail only confirms that an outside transfer happened: the
//! [`treasurer`] rail on a treasurer's signature, the [`ManualRail`] on anyone's word
//! (loopback markets only).

use sublet_market_api::credits::Micros;
use sublet_market_api::{Error, Result};

pub mod treasurer;

pub use treasurer::{Authorization, TreasurerRail};

/// What a rail confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    /// The reference the ledger records with the operation.
    pub reference: String,
    /// The one-time authorization it took, kept so that it is never used again.
    pub used: Option<UsedAuthorization>,
}

/// A treasurer's authorization as spent by one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedAuthorization {
    pub kind: treasurer::Kind,
    pub nonce: String,
    /// The treasurer's public key, hex.
    pub treasurer: String,
    pub signed_at: i64,
}

pub trait PaymentRail: Send + Sync {
    /// Short name recorded with each deposit and withdrawal.
    fn name(&self) -> &'static str;
    /// Confirms that `amount` arrived for `party` under the caller's `reference` (with
    /// the `authorization` the caller sent, if any).
    fn confirm_deposit(
        &self,
        party: &str,
        amount: Micros,
        reference: &str,
        authorization: Option<&Authorization>,
    ) -> Result<Confirmed>;
    /// Sends `amount` out to `party`.
    fn pay_out(
        &self,
        party: &str,
        amount: Micros,
        reference: &str,
        authorization: Option<&Authorization>,
    ) -> Result<Confirmed>;
}

/// Trusts every request: for tests and `sublet dev`-style local use; `serve` refuses it
/// on a listener that is not loopback. Never expose it to strangers.
#[derive(Debug, Default, Clone, Copy)]
pub struct ManualRail;

impl PaymentRail for ManualRail {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn confirm_deposit(
        &self,
        _party: &str,
        _amount: Micros,
        reference: &str,
        _authorization: Option<&Authorization>,
    ) -> Result<Confirmed> {
        check_reference(reference)?;
        Ok(Confirmed {
            reference: format!("manual:{reference}"),
            used: None,
        })
    }

    fn pay_out(
        &self,
        _party: &str,
        _amount: Micros,
        reference: &str,
        _authorization: Option<&Authorization>,
    ) -> Result<Confirmed> {
        check_reference(reference)?;
        Ok(Confirmed {
            reference: format!("manual:{reference}"),
            used: None,
        })
    }
}

pub(crate) fn check_reference(reference: &str) -> Result<()> {
    if reference.len() > 128 || reference.chars().any(char::is_control) {
        return Err(Error::BadRequest(
            "reference must be at most 128 printable characters".into(),
        ));
    }
    Ok(())
}
