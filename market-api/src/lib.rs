//! sublet-market-api: what a provider or a gateway needs to deal with the market — the
//! wire types of offers, contracts and usage receipts, party identities and request
//! signing, the signed HTTP client and the usage meter both sides keep. No database, no
//! server, no ledger: those stay in `sublet-market`, which depends on this crate.

pub mod client;
pub mod contracts;
pub mod credits;
pub mod error;
pub mod identity;
pub mod meter;
pub mod offers;
pub mod receipts;

pub use error::{Error, Result};

/// Unix seconds now (0 before 1970): the clock the market, its client and both sides'
/// usage meters count in.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
