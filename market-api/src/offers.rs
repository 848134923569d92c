//! Providers' offers of storage, as they publish them and as the market lists them.
//! The market's checks and search over offers are in `sublet-market`.

use serde::{Deserialize, Serialize};

use crate::credits::Micros;

/// What a provider publishes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewOffer {
    /// Bytes the provider lends through this offer.
    pub capacity_bytes: u64,
    /// Micro-credits per GiB stored for a month (730 hours).
    pub price_per_gib_month: Micros,
    /// Micro-credits per GiB read back out.
    pub egress_price_per_gib: Micros,
    /// Free-form region tag, lowercase letters, digits and '-' (e.g. `eu-west`).
    pub region: String,
    /// Shortest contract the provider accepts, in days.
    pub min_term_days: u32,
    /// Promised uptime in basis points (9950 is 99.5 %).
    pub promised_uptime_bps: u32,
    /// Where a demander's gateway reaches the provider's shard store (gRPC over TLS),
    /// `https://host:port`; the node id to pin is derived from the provider's public key.
    #[serde(default)]
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub id: String,
    pub provider: String,
    pub capacity_bytes: u64,
    /// Capacity not yet reserved by proposed or active contracts.
    pub free_bytes: u64,
    pub price_per_gib_month: Micros,
    pub egress_price_per_gib: Micros,
    pub region: String,
    pub min_term_days: u32,
    pub promised_uptime_bps: u32,
    pub created_at: i64,
    pub withdrawn: bool,
    /// Where the provider's shard store listens; empty when the provider didn't say.
    #[serde(default)]
    pub endpoint: String,
}
