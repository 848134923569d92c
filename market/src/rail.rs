//! Payment rails: how credits enter and leave the market. No real money moves
//! in sublet; a rail only confirms that an outside transfer happened.

use sublet_market_api::credits::Micros;
use sublet_market_api::{Error, Result};

pub trait PaymentRail: Send + Sync {
    /// Short name recorded with each deposit and withdrawal.
    fn name(&self) -> &'static str;
    /// Confirms that `amount` arrived for `party` under the caller's `reference`;
    /// returns the rail's own reference for the ledger.
    fn confirm_deposit(&self, party: &str, amount: Micros, reference: &str) -> Result<String>;
    /// Sends `amount` out to `party`; returns the rail's reference.
    fn pay_out(&self, party: &str, amount: Micros, reference: &str) -> Result<String>;
}

/// Trusts every request: for tests, demos and private markets whose operator
/// hands out credits by hand. Never expose it to strangers.
#[derive(Debug, Default, Clone, Copy)]
pub struct ManualRail;

impl PaymentRail for ManualRail {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn confirm_deposit(&self, _party: &str, _amount: Micros, reference: &str) -> Result<String> {
        check_reference(reference)?;
        Ok(format!("manual:{reference}"))
    }

    fn pay_out(&self, _party: &str, _amount: Micros, reference: &str) -> Result<String> {
        check_reference(reference)?;
        Ok(format!("manual:{reference}"))
    }
}

fn check_reference(reference: &str) -> Result<()> {
    if reference.len() > 128 || reference.chars().any(char::is_control) {
        return Err(Error::BadRequest(
            "reference must be at most 128 printable characters".into(),
        ));
    }
    Ok(())
}
