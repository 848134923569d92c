//! Providers' offers of storage and the search demanders run over them. The offer types
//! are `sublet_market_api::offers`, re-exported here.

use crate::db::{Db, Row};
use crate::params;
use serde::{Deserialize, Serialize};
use sublet_market_api::credits::{MAX_AMOUNT, Micros};
use sublet_market_api::identity::{Party, Role, new_id};
use sublet_market_api::{Error, Result};

pub use sublet_market_api::offers::{NewOffer, Offer};

use crate::attestations::TrustLevel;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS offers (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    capacity_bytes INTEGER NOT NULL,
    price_per_gib_month INTEGER NOT NULL,
    egress_price_per_gib INTEGER NOT NULL,
    region TEXT NOT NULL,
    min_term_days INTEGER NOT NULL,
    promised_uptime_bps INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    withdrawn INTEGER NOT NULL DEFAULT 0,
    endpoint TEXT NOT NULL DEFAULT ''
);
";

/// Brings an offers table made before a column was added up to [`SCHEMA`].
pub fn migrate(conn: &dyn Db) -> Result<()> {
    if !conn.has_column("offers", "endpoint")? {
        conn.schema("ALTER TABLE offers ADD COLUMN endpoint TEXT NOT NULL DEFAULT ''")?;
    }
    Ok(())
}

/// Search filters; every one is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfferFilter {
    pub max_price_per_gib_month: Option<Micros>,
    pub region: Option<String>,
    pub min_free_bytes: Option<u64>,
    /// Only offers of providers at this trust level or higher (`verified`, `vouched`);
    /// applied by `Market::search_offers`, which knows the attestor keys and the clock.
    pub min_trust: Option<TrustLevel>,
    /// Only offers of providers whose rating is at least this (0 to 1000); applied by
    /// `Market::search_offers`.
    pub min_score: Option<u32>,
}

fn check_offer(o: &NewOffer) -> Result<()> {
    let bad = |m: String| Err(Error::BadRequest(m));
    if o.capacity_bytes == 0 || o.capacity_bytes > i64::MAX as u64 {
        return bad("capacity_bytes must be at least 1".into());
    }
    for (field, v) in [
        ("price_per_gib_month", o.price_per_gib_month),
        ("egress_price_per_gib", o.egress_price_per_gib),
    ] {
        if !(0..=MAX_AMOUNT).contains(&v) {
            return bad(format!(
                "{field} must be between 0 and {MAX_AMOUNT} micro-credits, got {v}"
            ));
        }
    }
    if o.region.is_empty()
        || o.region.len() > 32
        || !o
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad(format!(
            "region must be 1 to 32 lowercase letters, digits or '-', got {:?}",
            o.region
        ));
    }
    if o.promised_uptime_bps > 10_000 {
        return bad(format!(
            "promised_uptime_bps is in basis points, at most 10000 (100 %), got {}",
            o.promised_uptime_bps
        ));
    }
    if o.min_term_days > 3650 {
        return bad("min_term_days must be at most 3650".into());
    }
    if !o.endpoint.is_empty() && !is_endpoint(&o.endpoint) {
        return bad(format!(
            "endpoint must be https://host:port (where gateways reach the provider), got {:?}",
            o.endpoint
        ));
    }
    Ok(())
}

/// `https://host:port` with a printable host and a port in 1..=65535.
fn is_endpoint(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("https://") else {
        return false;
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    text.len() <= 255
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

const COLUMNS: &str =
    "o.id, o.provider, o.capacity_bytes, o.price_per_gib_month, o.egress_price_per_gib,
    o.region, o.min_term_days, o.promised_uptime_bps, o.created_at, o.withdrawn, o.endpoint,
    o.capacity_bytes - COALESCE((SELECT CAST(SUM(c.reserved_bytes) AS BIGINT) FROM contracts c
        WHERE c.offer_id = o.id AND c.state IN ('proposed', 'active')), 0) AS free";

fn from_row(r: &Row) -> Result<Offer> {
    Ok(Offer {
        id: r.get(0)?,
        provider: r.get(1)?,
        capacity_bytes: r.get::<i64>(2)?.max(0) as u64,
        price_per_gib_month: r.get(3)?,
        egress_price_per_gib: r.get(4)?,
        region: r.get(5)?,
        min_term_days: r.get(6)?,
        promised_uptime_bps: r.get(7)?,
        created_at: r.get(8)?,
        withdrawn: r.get(9)?,
        endpoint: r.get(10)?,
        free_bytes: r.get::<i64>(11)?.max(0) as u64,
    })
}

pub fn publish(conn: &dyn Db, provider: &Party, offer: &NewOffer, now: i64) -> Result<Offer> {
    if provider.role != Role::Provider {
        return Err(Error::Forbidden(format!(
            "party {} is registered as a {}; only providers publish offers",
            provider.id,
            provider.role.as_str()
        )));
    }
    check_offer(offer)?;
    let id = new_id("of")?;
    conn.execute(
        "INSERT INTO offers (id, provider, capacity_bytes, price_per_gib_month, egress_price_per_gib,
             region, min_term_days, promised_uptime_bps, created_at, endpoint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            provider.id,
            offer.capacity_bytes as i64,
            offer.price_per_gib_month,
            offer.egress_price_per_gib,
            offer.region,
            offer.min_term_days,
            offer.promised_uptime_bps,
            now,
            offer.endpoint
        ],
    )?;
    get(conn, &id)
}

pub fn get(conn: &dyn Db, id: &str) -> Result<Offer> {
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM offers o WHERE o.id = ?1"),
        [id],
        from_row,
    )?
    .ok_or_else(|| Error::not_found(format!("offer {id}")))
}

/// Stops new contracts on an offer; running contracts are untouched.
pub fn withdraw(conn: &dyn Db, provider: &Party, id: &str) -> Result<Offer> {
    let offer = get(conn, id)?;
    if offer.provider != provider.id {
        return Err(Error::Forbidden(format!(
            "offer {id} belongs to provider {}",
            offer.provider
        )));
    }
    conn.execute("UPDATE offers SET withdrawn = 1 WHERE id = ?1", [id])?;
    get(conn, id)
}

/// Open offers matching `filter`, cheapest first.
pub fn search(conn: &dyn Db, filter: &OfferFilter) -> Result<Vec<Offer>> {
    // Filtered in an outer query: PostgreSQL does not see the alias `free` in the WHERE
    // clause of the query that defines it.
    let min_free = filter.min_free_bytes.map(|b| b.min(i64::MAX as u64) as i64);
    conn.query_map(
        &format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM offers o WHERE o.withdrawn = 0) s
             WHERE (CAST(?1 AS BIGINT) IS NULL OR s.price_per_gib_month <= ?1)
               AND (CAST(?2 AS TEXT) IS NULL OR s.region = ?2)
               AND (CAST(?3 AS BIGINT) IS NULL OR s.free >= ?3)
             ORDER BY s.price_per_gib_month, s.created_at, s.id"
        ),
        params![filter.max_price_per_gib_month, filter.region, min_free],
        from_row,
    )
}
