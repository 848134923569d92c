//! `MarketOffer`: the terms a provider publishes on the sublet market, written the same way
//! in `ProviderPool.spec.offer` and in the file given to `sublet-provider --offer`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::size::ByteSize;
use crate::validate::{Problems, ValidationError};

/// Micro-credits in one credit; prices are written in micro-credits, as the market counts.
pub const MICROS_PER_CREDIT: i64 = 1_000_000;

/// The largest price the market accepts, in micro-credits (a billion credits).
pub const MAX_PRICE: i64 = 1_000_000_000 * MICROS_PER_CREDIT;

/// What a provider lends on the market and on which terms.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarketOffer {
    /// The market, `https://host:port` (`http://` only with `marketInsecureHttp`). Required
    /// in a ProviderPool; `sublet-provider --market-url` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_url: Option<String>,
    /// PEM CA certificates trusted for the market's HTTPS instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ca_file: Option<String>,
    /// In a ProviderPool: the Secret (in the pool's namespace) holding the market's CA
    /// certificates (PEM) under `key` (default `ca.crt`). The operator mounts it into every
    /// provider pod and points `marketCaFile` at it; not with `marketCaFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ca_secret_ref: Option<CaSecretRef>,
    /// Allow a plain `http://` market URL: anyone on the path could rewrite the market's
    /// answers, so only for a market on loopback or in tests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub market_insecure_http: bool,
    /// Bytes offered, e.g. `400Gi`. Defaults to the provider's capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<ByteSize>,
    /// Price per GiB stored for a month (730 hours), in micro-credits (1 credit = 1000000).
    #[schemars(range(min = 0))]
    pub price_per_gib_month: i64,
    /// Price per GiB read back out, in micro-credits. Defaults to 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub egress_price_per_gib: i64,
    /// Region tag demanders search by: lowercase letters, digits and '-', e.g. `eu-west`.
    pub region: String,
    /// Shortest contract accepted, in days. Defaults to 0.
    #[serde(default)]
    pub min_term_days: u32,
    /// Promised uptime as a percentage, e.g. `"99.5%"`.
    pub promised_uptime: String,
    /// Where demanders' gateways reach the provider, `https://host:port`. In a ProviderPool
    /// it defaults to each provider pod's IP and gRPC port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl MarketOffer {
    /// The promised uptime in basis points (`99.5%` is 9950), or `None` when it isn't a
    /// percentage between 0 and 100 with at most two decimals.
    pub fn promised_uptime_bps(&self) -> Option<u32> {
        parse_percent_bps(&self.promised_uptime)
    }

    /// Every problem with this offer; `field` is where it sits, e.g. `spec.offer`.
    pub fn validate(&self, field: &str) -> Vec<ValidationError> {
        let mut p = Problems::default();
        self.check(&mut p, field);
        p.0
    }

    pub(crate) fn check(&self, p: &mut Problems, field: &str) {
        if let Some(url) = &self.market_url
            && let Err(problem) =
                check_market_url(url, self.market_insecure_http, "marketInsecureHttp")
        {
            p.add(format!("{field}.marketUrl"), problem);
        }
        if let Some(secret) = &self.market_ca_secret_ref {
            if self.market_ca_file.is_some() {
                p.add(
                    format!("{field}.marketCaSecretRef"),
                    "set marketCaFile or marketCaSecretRef, not both",
                );
            }
            if secret.name.trim().is_empty() {
                p.add(
                    format!("{field}.marketCaSecretRef.name"),
                    "must name the Secret holding the market's CA certificates (PEM)",
                );
            }
        }
        if self.capacity.as_ref().is_some_and(|c| c.bytes() == 0) {
            p.add(
                format!("{field}.capacity"),
                "must be more than 0, or omitted to offer the provider's whole capacity",
            );
        }
        for (name, value) in [
            ("pricePerGibMonth", self.price_per_gib_month),
            ("egressPricePerGib", self.egress_price_per_gib),
        ] {
            if !(0..=MAX_PRICE).contains(&value) {
                p.add(
                    format!("{field}.{name}"),
                    format!(
                        "must be between 0 and {MAX_PRICE} micro-credits (got {value}); 1 credit is 1000000"
                    ),
                );
            }
        }
        let region_ok = !self.region.is_empty()
            && self.region.len() <= 32
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            p.add(
                format!("{field}.region"),
                format!(
                    "\"{}\" is not a region tag; use 1 to 32 lowercase letters, digits or '-' (e.g. eu-west)",
                    self.region
                ),
            );
        }
        if self.min_term_days > 3650 {
            p.add(
                format!("{field}.minTermDays"),
                format!("must be at most 3650 (got {})", self.min_term_days),
            );
        }
        if self.promised_uptime_bps().is_none() {
            p.add(
                format!("{field}.promisedUptime"),
                format!(
                    "\"{}\" is not a percentage; write e.g. \"99.5%\" (0 to 100, at most two decimals)",
                    self.promised_uptime
                ),
            );
        }
        if let Some(endpoint) = &self.endpoint
            && !is_https_endpoint(endpoint)
        {
            p.add(
                format!("{field}.endpoint"),
                format!(
                    "\"{endpoint}\" is not where gateways can reach the provider; use https://host:port (e.g. https://nas.example:7480)"
                ),
            );
        }
    }
}

/// `99.5%`, `99.5` or `100%` as basis points.
fn parse_percent_bps(text: &str) -> Option<u32> {
    let t = text.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty()
        || whole.len() > 3
        || frac.len() > 2
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let frac: u32 = format!("{frac:0<2}").parse().ok()?;
    let bps = whole * 100 + frac;
    (bps <= 10_000).then_some(bps)
}

/// A Secret holding CA certificates (PEM), in the pool's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    /// The Secret's name.
    pub name: String,
    /// The key holding the PEM certificates; default `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The key of `marketCaSecretRef` read when it names none.
pub const DEFAULT_MARKET_CA_KEY: &str = "ca.crt";

impl MarketOffer {
    /// The Secret key holding the market's CA certificates, when `marketCaSecretRef` is set.
    pub fn market_ca_key(&self) -> Option<&str> {
        self.market_ca_secret_ref.as_ref().map(|s| {
            s.key
                .as_deref()
                .filter(|k| !k.is_empty())
                .unwrap_or(DEFAULT_MARKET_CA_KEY)
        })
    }
}

/// A market URL is `https://host:port`, or `http://host:port` when `insecure` (the field
/// named `switch`) allows plain HTTP.
pub fn check_market_url(url: &str, insecure: bool, switch: &str) -> Result<(), String> {
    let (rest, plain) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => (url, false),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest == url || rest.contains('/') || !crate::validate::is_endpoint_address(rest) {
        return Err(format!(
            "\"{url}\" is not a market URL; use https://host:port (e.g. https://market.example:8480)"
        ));
    }
    if plain && !insecure {
        return Err(format!(
            "\"{url}\" is plain HTTP, which anyone on the path can rewrite; use https://, or set {switch}: true for a market on loopback or in tests"
        ));
    }
    Ok(())
}

fn is_https_endpoint(text: &str) -> bool {
    text.strip_prefix("https://")
        .is_some_and(|rest| !rest.contains('/') && crate::validate::is_endpoint_address(rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn offer(yaml: &str) -> MarketOffer {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn uptime_is_a_percentage() {
        for (text, bps) in [
            ("99.5%", Some(9950)),
            ("99.95", Some(9995)),
            ("100%", Some(10_000)),
            ("0%", Some(0)),
            ("99.999%", None),
            ("101%", None),
            ("-1%", None),
            ("high", None),
            ("", None),
        ] {
            assert_eq!(parse_percent_bps(text), bps, "{text}");
        }
    }

    #[test]
    fn a_good_offer_has_no_problems() {
        let o = offer(
            "marketUrl: https://market.example:8480\ncapacity: 400Gi\npricePerGibMonth: 4000\nregion: eu-west\npromisedUptime: \"99.5%\"",
        );
        assert!(
            o.validate("spec.offer").is_empty(),
            "{:?}",
            o.validate("spec.offer")
        );
        assert_eq!(o.promised_uptime_bps(), Some(9950));
        assert_eq!((o.egress_price_per_gib, o.min_term_days), (0, 0));
    }

    #[test]
    fn a_plain_http_market_needs_the_switch() {
        let plain = "marketUrl: http://127.0.0.1:8480\npricePerGibMonth: 4000\nregion: eu-west\npromisedUptime: \"99.5%\"";
        let problems: Vec<String> = offer(plain)
            .validate("offer")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "offer.marketUrl: \"http://127.0.0.1:8480\" is plain HTTP, which anyone on the path can rewrite; use https://, or set marketInsecureHttp: true for a market on loopback or in tests"
            ]
        );
        let allowed = offer(&format!("{plain}\nmarketInsecureHttp: true"));
        assert!(allowed.validate("offer").is_empty());
    }

    #[test]
    fn the_market_ca_comes_from_a_file_or_a_secret_not_both() {
        let base = "marketUrl: https://market.example:8480\npricePerGibMonth: 4000\nregion: eu-west\npromisedUptime: \"99.5%\"";
        let o = offer(&format!("{base}\nmarketCaSecretRef: {{name: market-ca}}"));
        assert!(o.validate("spec.offer").is_empty());
        assert_eq!(o.market_ca_key(), Some("ca.crt"));
        let o = offer(&format!(
            "{base}\nmarketCaSecretRef: {{name: market-ca, key: ca.pem}}"
        ));
        assert_eq!(o.market_ca_key(), Some("ca.pem"));
        let both = offer(&format!(
            "{base}\nmarketCaFile: /etc/ca.pem\nmarketCaSecretRef: {{name: \" \"}}"
        ));
        let problems: Vec<String> = both
            .validate("spec.offer")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "spec.offer.marketCaSecretRef: set marketCaFile or marketCaSecretRef, not both",
                "spec.offer.marketCaSecretRef.name: must name the Secret holding the market's CA certificates (PEM)",
            ]
        );
        assert_eq!(offer(base).market_ca_key(), None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let o = offer(
            "marketUrl: https://market.example\ncapacity: 0\npricePerGibMonth: -1\negressPricePerGib: 9000000000000000\nregion: EU West\nminTermDays: 4000\npromisedUptime: always\nendpoint: nas:7480",
        );
        let problems: Vec<String> = o
            .validate("spec.offer")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "spec.offer.marketUrl: \"https://market.example\" is not a market URL; use https://host:port (e.g. https://market.example:8480)",
                "spec.offer.capacity: must be more than 0, or omitted to offer the provider's whole capacity",
                "spec.offer.pricePerGibMonth: must be between 0 and 1000000000000000 micro-credits (got -1); 1 credit is 1000000",
                "spec.offer.egressPricePerGib: must be between 0 and 1000000000000000 micro-credits (got 9000000000000000); 1 credit is 1000000",
                "spec.offer.region: \"EU West\" is not a region tag; use 1 to 32 lowercase letters, digits or '-' (e.g. eu-west)",
                "spec.offer.minTermDays: must be at most 3650 (got 4000)",
                "spec.offer.promisedUptime: \"always\" is not a percentage; write e.g. \"99.5%\" (0 to 100, at most two decimals)",
                "spec.offer.endpoint: \"nas:7480\" is not where gateways can reach the provider; use https://host:port (e.g. https://nas.example:7480)",
            ]
        );
    }
}
