//! sublet-market: the platform role of sublet — parties and their keys, offers,
//! contracts, usage receipts and the escrow ledger that settles them: the service, its
//! database, HTTP API, console and command line. What providers and gateways need to talk
//! to it (wire types, signing, the client, the meter) is the `sublet-market-api` crate;
//! its modules are re-exported here under their old paths.

pub mod api;
pub mod attestations;
pub mod cli;
pub mod contacts;
pub mod contracts;
pub mod db;
pub mod disputes;
pub mod identity;
pub mod ledger;
pub mod metrics;
pub mod offers;
pub mod quality;
pub mod rail;
pub mod ratings;
pub mod receipts;
pub mod reviews;
pub mod server;
pub mod service;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod tickets;
pub mod tls;

pub use service::{Market, PgOptions};
pub use sublet_market_api::{Error, Result, client, error, meter, unix_now};

/// The market's rules for money and signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The platform's share of what providers earn, in basis points.
    pub platform_fee_bps: i64,
    /// The share of a new provider's earnings held back until its vetting ends, in basis points.
    pub held_back_bps: i64,
    /// How long after registration a provider counts as new, in seconds.
    pub vetting_period_secs: i64,
    /// How far a signed request's timestamp may be from the server clock, in seconds.
    pub signature_window_secs: i64,
    /// Ed25519 public keys (hex) that may register as arbiters and decide disputes.
    pub arbiter_keys: Vec<String>,
    /// Ed25519 public keys (hex) whose attestations about parties raise their trust level.
    pub attestor_keys: Vec<String>,
    /// How long one receipt period of a new contract lasts, in seconds: both sides
    /// report usage once per period, counted from the contract's acceptance.
    pub receipt_period_secs: i64,
    /// How far the two receipts' storage and egress figures may differ and still agree, in
    /// basis points of the larger (meters sample at different instants); an agreed period is
    /// paid on the lower figure. Audit counts must match exactly.
    pub receipt_tolerance_bps: i64,
    /// Ed25519 public keys (hex) that may register as support staff and answer tickets.
    pub support_keys: Vec<String>,
    /// How long after its first submission a review may still be edited, in seconds.
    pub review_window_secs: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            platform_fee_bps: 100,
            held_back_bps: 2_500,
            vetting_period_secs: 30 * 24 * 3600,
            signature_window_secs: 300,
            arbiter_keys: Vec::new(),
            attestor_keys: Vec::new(),
            receipt_period_secs: 3600,
            receipt_tolerance_bps: 100,
            support_keys: Vec::new(),
            review_window_secs: 14 * 24 * 3600,
        }
    }
}
