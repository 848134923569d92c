//! `ProviderPool`: a set of storage providers with a class and an owner.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::offer::{CaSecretRef, DEFAULT_MARKET_CA_KEY, MarketOffer};
use crate::size::ByteSize;
use crate::validate::{
    Problems, ValidationError, is_dns_label, is_endpoint_address, is_unix_socket_address,
};

/// A group of providers that plans place shards on: in-cluster nodes running a provider pod,
/// endpoints outside the cluster, or both.
// Each printcolumn repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sublet.dev",
    version = "v1alpha1",
    kind = "ProviderPool",
    doc = "A pool of storage providers: in-cluster nodes or endpoints outside the cluster.",
    namespaced,
    status = "ProviderPoolStatus",
    shortname = "pp",
    derive = "PartialEq",
    printcolumn(name = "Class", type_ = "string", json_path = ".spec.class"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "ready members / all members",
        json_path = ".status.readyMembers"
    ),
    printcolumn(name = "Capacity", type_ = "string", json_path = ".status.capacity"),
    printcolumn(
        name = "Drain",
        type_ = "string",
        description = "Draining, Drained or Blocked while the pool drains",
        json_path = ".status.drain.state"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderPoolSpec {
    /// Who pays for and controls the hardware: `owned`, `rented` or `cloud`. Plans limit how
    /// many shards of a stripe may sit on each class.
    pub class: PoolClass,
    /// The person or organisation owning the hardware; the failure domain for
    /// `spreadBy: owner`. Defaults to the pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// In-cluster providers: one provider pod runs on every node matching the selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<PoolNodes>,
    /// Providers outside the cluster (a friend's NAS, a rented box), reached over the network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// S3-compatible buckets (any cloud, or another S3 server) holding shards as objects
    /// under a prefix; shards are encrypted before they leave the gateway, like everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<BucketMember>,
    /// Move every shard off this pool to the pools the plans allow and place no new ones on
    /// it; progress shows in `status.drain` and the `Draining` condition. A deleted pool
    /// drains by itself before its finalizer lets it go. A plan that cannot place its stripes
    /// without the pool (too few failure domains elsewhere, `minShards` here) blocks the drain
    /// of its shards, and writes with it fail until the plan changes or the drain is undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<bool>,
    /// Lend the pool's in-cluster providers on the sublet market: each provider pod
    /// publishes this offer, signed with its node key, and keeps it current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<MarketOffer>,
    /// Rent providers on the sublet market instead of (or besides) listing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market: Option<MarketPool>,
}

/// Who pays for and controls a pool's hardware.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolClass {
    /// Your own hardware.
    Owned,
    /// Hardware rented from someone else (a VPS, a friend's box for a fee).
    Rented,
    /// A cloud provider's storage.
    Cloud,
}

impl PoolClass {
    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolClass::Owned => "owned",
            PoolClass::Rented => "rented",
            PoolClass::Cloud => "cloud",
        }
    }
}

/// Which cluster nodes run a provider and where it keeps its shards.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolNodes {
    /// The nodes that run a provider pod.
    pub selector: NodeSelector,
    /// Where each provider pod stores shards.
    pub storage: NodeStorage,
}

/// A label selector for nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// Nodes carrying all these labels are selected, e.g. `sublet.dev/provider: "true"`.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Storage for an in-cluster provider: a host directory or a persistent volume claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.hostPath) != has(self.volumeClaimTemplate)",
    "message": "set hostPath (e.g. /var/lib/sublet) or volumeClaimTemplate (e.g. {size: 200Gi})"
}]))]
pub struct NodeStorage {
    /// An absolute directory on the node, e.g. `/var/lib/sublet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// How much of `hostPath` the provider may fill, e.g. `500Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<ByteSize>,
    /// A persistent volume claim per provider pod instead of `hostPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim_template: Option<VolumeClaimTemplate>,
}

/// The claim made for each provider pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaimTemplate {
    /// The storage class to claim from; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The size of each claim, e.g. `200Gi`.
    pub size: ByteSize,
}

/// A provider outside the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// A name unique in the pool, e.g. `bob-nas`.
    pub name: String,
    /// Where the provider listens: `https://host:port` or `host:port`; or, for a provider
    /// on the gateway's own machine, its Unix socket `unix:/path/to/socket` (no TLS: the
    /// kernel carries the bytes, and a handshake with the node key still pins `nodeId`).
    pub address: String,
    /// The provider's node id, pinned so a different machine at the same address is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The failure domain for `spreadBy: zone`, e.g. `bob-home`. Defaults to the endpoint name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The failure domain for `spreadBy: owner` when it differs from the pool's (providers
    /// contracted on the market each have their own). Defaults to the pool's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Providers rented on the sublet market: the gateway searches offers matching these
/// criteria, contracts enough providers (each a different owner) and places shards on them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarketPool {
    /// The market, `https://host:port` (`http://` only with `insecureHttp`).
    pub url: String,
    /// PEM CA certificates trusted for the market's HTTPS instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Under Kubernetes: the Secret (in the gateway's namespace) holding the market's CA
    /// certificates (PEM) under `key` (default `ca.crt`). The operator mounts it into the
    /// gateway pods and points `caFile` at it; not with `caFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
    /// Allow a plain `http://` market URL: anyone on the path could rewrite the market's
    /// answers (which providers to trust), so only for a market on loopback or in tests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
    /// How many providers to contract, each from a different owner.
    #[schemars(range(min = 1))]
    pub providers: u32,
    /// Space reserved with each provider, e.g. `50Gi`.
    pub reserve: ByteSize,
    /// Length of each contract in days; offers with a longer minimum term are skipped.
    /// Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_days: Option<u32>,
    /// Highest price per GiB-month accepted, in micro-credits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_per_gib_month: Option<i64>,
    /// Lowest provider score accepted (the market's rating, 0 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<u32>,
    /// Regions accepted; any region when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

impl MarketPool {
    /// Contract length in days.
    pub fn term_days(&self) -> u32 {
        self.term_days.unwrap_or(30)
    }

    /// The Secret key holding the market's CA certificates, when `caSecretRef` is set.
    pub fn ca_key(&self) -> Option<&str> {
        self.ca_secret_ref.as_ref().map(|s| {
            s.key
                .as_deref()
                .filter(|k| !k.is_empty())
                .unwrap_or(DEFAULT_MARKET_CA_KEY)
        })
    }
}

/// An S3-compatible bucket used as a provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketMember {
    /// A name unique in the pool, e.g. `b2-eu`.
    pub name: String,
    /// The S3 endpoint, e.g. `https://s3.eu-central-003.backblazeb2.com` or
    /// `http://minio.lan:9000`; requests are path-style.
    pub endpoint: String,
    /// The bucket, which must exist.
    pub bucket: String,
    /// Key prefix of the shards in the bucket. Defaults to `sublet-shards/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The region requests are signed for. Defaults to `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The access key id.
    pub access_key: String,
    /// A file whose content (trimmed) is the secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<String>,
    /// An environment variable holding the secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
    /// In Kubernetes: the Secret (and key, default `secretKey`) holding the secret key;
    /// the operator hands it to the gateway pod as an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<crate::SecretRef>,
    /// The failure domain for `spreadBy: zone`. Defaults to the bucket member's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl BucketMember {
    /// The key prefix of shards.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("sublet-shards/")
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or("us-east-1")
    }
}

/// What the operator observed about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderPoolStatus {
    /// `Ready` and other conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Every provider in the pool and its health.
    #[serde(default)]
    pub members: Vec<PoolMember>,
    /// Ready members over all members, e.g. `3/4`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_members: Option<String>,
    /// Free over total capacity of ready members, e.g. `1.2Ti/2Ti`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// While the pool drains (`spec.drain: true`, or deleted): what the namespace's gateways
    /// still store on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainProgress>,
}

/// A draining pool's progress over every gateway of the namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainProgress {
    /// `Draining` (shards moving), `Blocked` (a plan cannot place them elsewhere; see the
    /// `Draining` condition) or `Drained` (nothing left: the providers may go).
    pub state: String,
    /// Shards still stored on the pool's providers.
    #[serde(default)]
    pub shards_left: u64,
    /// Their bytes.
    #[serde(default)]
    pub bytes_left: u64,
}

/// One provider of a pool as last seen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolMember {
    /// The endpoint or node name.
    pub name: String,
    /// The provider's node id.
    #[serde(default)]
    pub node_id: String,
    /// Where gateways reach it, e.g. `https://10.42.0.7:7480`; empty while unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Its failure domain for `spreadBy: zone`.
    #[serde(default)]
    pub zone: String,
    /// Whether it answered its last health check; a `unix:` endpoint, which the operator
    /// cannot reach, is counted ready (the pool's `Probed` condition names it).
    #[serde(default)]
    pub ready: bool,
    /// Bytes it may store.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Bytes it stores.
    #[serde(default)]
    pub used_bytes: u64,
    /// Reliability score from audits, 0 to 100.
    #[serde(default)]
    pub score: u32,
    /// When it last answered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

impl ProviderPoolSpec {
    /// Every problem with this spec, each with its field path and a fix.
    pub fn validate(&self) -> Vec<ValidationError> {
        let mut p = Problems::default();
        if let Some(owner) = &self.owner
            && owner.trim().is_empty()
        {
            p.add(
                    "spec.owner",
                    "must not be empty; name the person or organisation owning the hardware, or omit it",
                );
        }
        if self.nodes.is_none()
            && self.endpoints.is_empty()
            && self.buckets.is_empty()
            && self.market.is_none()
        {
            p.add(
                "spec",
                "a pool needs providers; add `nodes` (in-cluster), `endpoints` (outside the cluster), `buckets` (S3-compatible storage) or `market` (rented on the sublet market)",
            );
        }
        if let Some(m) = &self.market {
            validate_market(&mut p, m);
        }
        p.unique_names("spec.buckets", self.buckets.iter().map(|b| b.name.as_str()));
        for (i, b) in self.buckets.iter().enumerate() {
            let field = format!("spec.buckets[{i}]");
            p.name(format!("{field}.name"), &b.name);
            let scheme_ok = b.endpoint.starts_with("https://") || b.endpoint.starts_with("http://");
            if !scheme_ok || !is_endpoint_url(&b.endpoint) {
                p.add(
                    format!("{field}.endpoint"),
                    format!(
                        "\"{}\" is not an S3 endpoint URL; use https://host[:port] (e.g. https://s3.us-west-004.backblazeb2.com)",
                        b.endpoint
                    ),
                );
            }
            if !is_bucket_name(&b.bucket) {
                p.add(
                    format!("{field}.bucket"),
                    format!(
                        "\"{}\" is not a bucket name; use 3-63 characters of a-z, 0-9, '.' and '-'",
                        b.bucket
                    ),
                );
            }
            if b.access_key.trim().is_empty() {
                p.add(format!("{field}.accessKey"), "must not be empty");
            }
            let sources = usize::from(b.secret_key_file.is_some())
                + usize::from(b.secret_key_env.is_some())
                + usize::from(b.secret_ref.is_some());
            if sources != 1 {
                p.add(
                    format!("{field}.secretKeyFile"),
                    "set exactly one of secretKeyFile, secretKeyEnv or secretRef (secrets are never written in the resource)",
                );
            }
            if let Some(prefix) = &b.prefix
                && (prefix.starts_with('/') || prefix.contains(".."))
            {
                p.add(
                    format!("{field}.prefix"),
                    format!(
                        "\"{prefix}\" must not start with / or contain .. (e.g. sublet-shards/)"
                    ),
                );
            }
        }
        if let Some(nodes) = &self.nodes {
            validate_storage(&mut p, &nodes.storage);
        }
        if let Some(offer) = &self.offer {
            if self.nodes.is_none() {
                p.add(
                    "spec.offer",
                    "only in-cluster providers publish offers; add `nodes`, or let the owners of `endpoints` run `sublet-provider --offer` themselves",
                );
            }
            if offer.market_url.is_none() {
                p.add(
                    "spec.offer.marketUrl",
                    "is required; name the market the offer goes to (e.g. https://market.example:8480)",
                );
            }
            offer.check(&mut p, "spec.offer");
        }
        p.unique_names(
            "spec.endpoints",
            self.endpoints.iter().map(|e| e.name.as_str()),
        );
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let field = format!("spec.endpoints[{i}]");
            p.name(format!("{field}.name"), &endpoint.name);
            if endpoint.address.starts_with("unix:") {
                if !is_unix_socket_address(&endpoint.address) {
                    p.add(
                        format!("{field}.address"),
                        format!(
                            "\"{}\" is not a Unix socket address; use unix:/path/to/socket (an absolute path of at most 107 bytes)",
                            endpoint.address
                        ),
                    );
                }
            } else if !is_endpoint_address(&endpoint.address) {
                p.add(
                    format!("{field}.address"),
                    format!(
                        "\"{}\" is not an address; use https://host:port or host:port (e.g. https://nas.example:7480)",
                        endpoint.address
                    ),
                );
            }
            if endpoint
                .node_id
                .as_deref()
                .is_some_and(|id| id.trim().is_empty())
            {
                p.add(
                    format!("{field}.nodeId"),
                    "must not be empty; paste the id the provider prints at start, or omit it to pin on first contact",
                );
            }
        }
        p.0
    }
}

fn validate_market(p: &mut Problems, m: &MarketPool) {
    if let Err(problem) = crate::offer::check_market_url(&m.url, m.insecure_http, "insecureHttp") {
        p.add("spec.market.url", problem);
    }
    if let Some(secret) = &m.ca_secret_ref {
        if m.ca_file.is_some() {
            p.add(
                "spec.market.caSecretRef",
                "set caFile or caSecretRef, not both",
            );
        }
        if secret.name.trim().is_empty() {
            p.add(
                "spec.market.caSecretRef.name",
                "must name the Secret holding the market's CA certificates (PEM)",
            );
        }
    }
    p.at_least("spec.market.providers", m.providers, 1);
    if m.reserve.bytes() == 0 {
        p.add("spec.market.reserve", "must be more than 0 (e.g. 50Gi)");
    }
    if m.term_days.is_some_and(|d| d == 0 || d > 3650) {
        p.add("spec.market.termDays", "must be between 1 and 3650 days");
    }
    if m.max_price_per_gib_month.is_some_and(|v| v < 0) {
        p.add(
            "spec.market.maxPricePerGibMonth",
            "must not be negative; prices are micro-credits (1 credit = 1000000)",
        );
    }
    if m.min_score.is_some_and(|s| s > 1000) {
        p.add(
            "spec.market.minScore",
            "market scores go from 0 to 1000; use e.g. 600",
        );
    }
    for (i, region) in m.regions.iter().enumerate() {
        if !is_dns_label(region) {
            p.add(
                format!("spec.market.regions[{i}]"),
                format!("\"{region}\" is not a region tag; use lowercase letters, digits and '-' (e.g. eu-west)"),
            );
        }
    }
}

fn validate_storage(p: &mut Problems, storage: &NodeStorage) {
    const FIELD: &str = "spec.nodes.storage";
    match (&storage.host_path, &storage.volume_claim_template) {
        (Some(_), Some(_)) => p.add(
            FIELD,
            "set either hostPath or volumeClaimTemplate, not both",
        ),
        (None, None) => p.add(
            FIELD,
            "set hostPath (e.g. /var/lib/sublet) or volumeClaimTemplate (e.g. {size: 200Gi})",
        ),
        _ => {}
    }
    if let Some(path) = &storage.host_path {
        if !path.starts_with('/') {
            p.add(
                format!("{FIELD}.hostPath"),
                format!(
                    "\"{path}\" is not an absolute path; start it with / (e.g. /var/lib/sublet)"
                ),
            );
        }
        if storage.capacity.is_none() {
            p.add(
                format!("{FIELD}.capacity"),
                "is required with hostPath; say how much the provider may fill (e.g. 500Gi)",
            );
        }
    }
    if storage.volume_claim_template.is_some() && storage.capacity.is_some() {
        p.add(
            format!("{FIELD}.capacity"),
            "applies to hostPath only; size the claim with volumeClaimTemplate.size",
        );
    }
    if storage.capacity.as_ref().is_some_and(|c| c.bytes() == 0) {
        p.add(
            format!("{FIELD}.capacity"),
            "must be more than 0 (e.g. 500Gi)",
        );
    }
    if let Some(claim) = &storage.volume_claim_template
        && claim.size.bytes() == 0
    {
        p.add(
            format!("{FIELD}.volumeClaimTemplate.size"),
            "must be more than 0 (e.g. 200Gi)",
        );
    }
}

/// `https://host[:port][/]` or `http://...`: a scheme, a host, an optional port, no path.
fn is_endpoint_url(text: &str) -> bool {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or("");
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    !host.is_empty()
        && !host.contains('/')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ProviderPoolSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        spec(yaml)
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const NODES: &str = "nodes: {selector: {matchLabels: {sublet.dev/provider: \"true\"}}, storage: {hostPath: /var/lib/sublet, capacity: 500Gi}}";

    #[test]
    fn in_cluster_pool_is_valid() {
        let pool = spec(&format!("class: owned\nowner: alice\n{NODES}"));
        assert!(pool.validate().is_empty());
        let nodes = pool.nodes.unwrap();
        assert_eq!(nodes.storage.capacity.unwrap().bytes(), 500 << 30);
        assert_eq!(nodes.selector.match_labels["sublet.dev/provider"], "true");
    }

    #[test]
    fn class_is_an_enum() {
        assert_eq!(
            spec(&format!("class: cloud\n{NODES}")).class,
            PoolClass::Cloud
        );
        let err = serde_yaml::from_str::<ProviderPoolSpec>(&format!("class: borrowed\n{NODES}"))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "class: unknown variant `borrowed`, expected one of `owned`, `rented`, `cloud`"
            ),
            "{err}"
        );
    }

    #[test]
    fn pool_needs_providers() {
        assert_eq!(
            problems("class: owned"),
            [
                "spec: a pool needs providers; add `nodes` (in-cluster), `endpoints` (outside the cluster), `buckets` (S3-compatible storage) or `market` (rented on the sublet market)"
            ]
        );
    }

    #[test]
    fn bucket_members_are_checked() {
        let ok = spec(
            "class: cloud\nbuckets:\n- {name: b2, endpoint: \"https://s3.us-west-004.backblazeb2.com\", bucket: my-shards, accessKey: K1, secretKeyEnv: B2_SECRET}\n- {name: lan, endpoint: \"http://127.0.0.1:9000\", bucket: spare, prefix: x/, accessKey: K2, secretKeyFile: /etc/k}",
        );
        assert!(ok.validate().is_empty(), "{:?}", ok.validate());
        assert_eq!(ok.buckets[0].prefix(), "sublet-shards/");
        assert_eq!(ok.buckets[1].region(), "us-east-1");
        assert_eq!(
            problems(
                "class: cloud\nbuckets:\n- {name: a, endpoint: \"s3.example.com/x\", bucket: Bad_Name, accessKey: \"\", secretKeyEnv: S, secretKeyFile: /f, prefix: /abs}"
            ),
            [
                "spec.buckets[0].endpoint: \"s3.example.com/x\" is not an S3 endpoint URL; use https://host[:port] (e.g. https://s3.us-west-004.backblazeb2.com)",
                "spec.buckets[0].bucket: \"Bad_Name\" is not a bucket name; use 3-63 characters of a-z, 0-9, '.' and '-'",
                "spec.buckets[0].accessKey: must not be empty",
                "spec.buckets[0].secretKeyFile: set exactly one of secretKeyFile, secretKeyEnv or secretRef (secrets are never written in the resource)",
                "spec.buckets[0].prefix: \"/abs\" must not start with / or contain .. (e.g. sublet-shards/)",
            ]
        );
    }

    #[test]
    fn storage_is_host_path_or_claim() {
        assert_eq!(
            problems("class: owned\nnodes: {selector: {}, storage: {}}"),
            [
                "spec.nodes.storage: set hostPath (e.g. /var/lib/sublet) or volumeClaimTemplate (e.g. {size: 200Gi})"
            ]
        );
        assert_eq!(
            problems(
                "class: owned\nnodes: {selector: {}, storage: {hostPath: /x, capacity: 1Gi, volumeClaimTemplate: {size: 1Gi}}}"
            ),
            [
                "spec.nodes.storage: set either hostPath or volumeClaimTemplate, not both",
                "spec.nodes.storage.capacity: applies to hostPath only; size the claim with volumeClaimTemplate.size",
            ]
        );
        assert!(problems("class: rented\nnodes: {selector: {}, storage: {volumeClaimTemplate: {storageClassName: fast, size: 200Gi}}}").is_empty());
    }

    #[test]
    fn host_path_rules() {
        assert_eq!(
            problems("class: owned\nnodes: {selector: {}, storage: {hostPath: var/lib/sublet}}"),
            [
                "spec.nodes.storage.hostPath: \"var/lib/sublet\" is not an absolute path; start it with / (e.g. /var/lib/sublet)",
                "spec.nodes.storage.capacity: is required with hostPath; say how much the provider may fill (e.g. 500Gi)",
            ]
        );
        assert_eq!(
            problems("class: owned\nnodes: {selector: {}, storage: {hostPath: /x, capacity: 0}}"),
            ["spec.nodes.storage.capacity: must be more than 0 (e.g. 500Gi)"]
        );
    }

    #[test]
    fn capacity_that_does_not_parse_names_the_field() {
        let err = serde_yaml::from_str::<ProviderPoolSpec>(
            "class: owned\nnodes: {selector: {}, storage: {hostPath: /x, capacity: 500GB}}",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("nodes.storage.capacity: \"500GB\" is not a size"),
            "{err}"
        );
    }

    #[test]
    fn endpoint_rules() {
        assert!(problems("class: owned\nendpoints: [{name: nas, address: \"https://nas.example:7480\", nodeId: abc, zone: home}]").is_empty());
        assert_eq!(
            problems("class: owned\nendpoints: [{name: nas, address: nas.example}]"),
            [
                "spec.endpoints[0].address: \"nas.example\" is not an address; use https://host:port or host:port (e.g. https://nas.example:7480)"
            ]
        );
        assert!(problems("class: owned\nendpoints: [{name: disk1, address: \"unix:/run/sublet/disk1.sock\", nodeId: abc}]").is_empty());
        assert_eq!(
            problems("class: owned\nendpoints: [{name: disk1, address: \"unix:disk1.sock\"}]"),
            [
                "spec.endpoints[0].address: \"unix:disk1.sock\" is not a Unix socket address; use unix:/path/to/socket (an absolute path of at most 107 bytes)"
            ]
        );
        assert_eq!(
            problems(
                "class: owned\nendpoints: [{name: nas, address: \"nas:1\"}, {name: nas, address: \"nas:2\"}]"
            ),
            ["spec.endpoints[1].name: \"nas\" is used twice; give each entry its own name"]
        );
        assert_eq!(
            problems(
                "class: owned\nendpoints: [{name: Bob NAS, address: \"nas:1\", nodeId: \"\"}]"
            ),
            [
                "spec.endpoints[0].name: \"Bob NAS\" is not a valid name; use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. home-lab)",
                "spec.endpoints[0].nodeId: must not be empty; paste the id the provider prints at start, or omit it to pin on first contact",
            ]
        );
    }

    #[test]
    fn offer_rules() {
        let offer = "offer: {marketUrl: \"https://market:8480\", pricePerGibMonth: 4000, region: eu-west, promisedUptime: \"99.5%\"}";
        let pool = spec(&format!("class: rented\n{NODES}\n{offer}"));
        assert!(pool.validate().is_empty(), "{:?}", pool.validate());
        assert_eq!(pool.offer.unwrap().promised_uptime_bps(), Some(9950));
        assert_eq!(
            problems(
                "class: rented\nendpoints: [{name: nas, address: \"nas:1\"}]\noffer: {pricePerGibMonth: 1, region: eu, promisedUptime: \"120%\"}"
            ),
            [
                "spec.offer: only in-cluster providers publish offers; add `nodes`, or let the owners of `endpoints` run `sublet-provider --offer` themselves",
                "spec.offer.marketUrl: is required; name the market the offer goes to (e.g. https://market.example:8480)",
                "spec.offer.promisedUptime: \"120%\" is not a percentage; write e.g. \"99.5%\" (0 to 100, at most two decimals)",
            ]
        );
    }

    #[test]
    fn market_pool_rules() {
        let pool = spec(
            "class: rented\nmarket: {url: \"https://market:8480\", providers: 3, reserve: 50Gi, maxPricePerGibMonth: 5000, minScore: 600, regions: [eu-west]}",
        );
        assert!(pool.validate().is_empty(), "{:?}", pool.validate());
        assert_eq!(pool.market.unwrap().term_days(), 30);
        assert_eq!(
            problems(
                "class: rented\nmarket: {url: \"http://market:8480\", providers: 1, reserve: 1Gi}"
            ),
            [
                "spec.market.url: \"http://market:8480\" is plain HTTP, which anyone on the path can rewrite; use https://, or set insecureHttp: true for a market on loopback or in tests"
            ]
        );
        let ca = spec(
            "class: rented\nmarket: {url: \"https://market:8480\", caSecretRef: {name: market-ca}, providers: 1, reserve: 1Gi}",
        );
        assert!(ca.validate().is_empty(), "{:?}", ca.validate());
        assert_eq!(ca.market.unwrap().ca_key(), Some("ca.crt"));
        assert_eq!(
            problems(
                "class: rented\nmarket: {url: \"https://market:8480\", caFile: /ca.pem, caSecretRef: {name: \" \", key: ca.pem}, providers: 1, reserve: 1Gi}"
            ),
            [
                "spec.market.caSecretRef: set caFile or caSecretRef, not both",
                "spec.market.caSecretRef.name: must name the Secret holding the market's CA certificates (PEM)",
            ]
        );
        let plain = spec(
            "class: rented\nmarket: {url: \"http://127.0.0.1:8480\", insecureHttp: true, providers: 1, reserve: 1Gi}",
        );
        assert!(plain.validate().is_empty(), "{:?}", plain.validate());
        assert_eq!(
            problems(
                "class: rented\nmarket: {url: \"market:8480\", providers: 0, reserve: 0, termDays: 0, maxPricePerGibMonth: -1, minScore: 2000, regions: [EU]}"
            ),
            [
                "spec.market.url: \"market:8480\" is not a market URL; use https://host:port (e.g. https://market.example:8480)",
                "spec.market.providers: must be at least 1 (got 0)",
                "spec.market.reserve: must be more than 0 (e.g. 50Gi)",
                "spec.market.termDays: must be between 1 and 3650 days",
                "spec.market.maxPricePerGibMonth: must not be negative; prices are micro-credits (1 credit = 1000000)",
                "spec.market.minScore: market scores go from 0 to 1000; use e.g. 600",
                "spec.market.regions[0]: \"EU\" is not a region tag; use lowercase letters, digits and '-' (e.g. eu-west)",
            ]
        );
    }

    #[test]
    fn owner_not_blank() {
        assert_eq!(
            problems(&format!("class: owned\nowner: \" \"\n{NODES}")),
            [
                "spec.owner: must not be empty; name the person or organisation owning the hardware, or omit it"
            ]
        );
    }

    #[test]
    fn yaml_round_trip_keeps_what_was_written() {
        let text = "class: rented\nowner: hetzner\nnodes:\n  selector:\n    matchLabels:\n      sublet.dev/pool: rented\n  storage:\n    volumeClaimTemplate:\n      storageClassName: fast\n      size: 200Gi\nendpoints:\n- name: box-1\n  address: https://box1.example:7480\n  nodeId: abc\n  zone: fsn1\n";
        assert_eq!(serde_yaml::to_string(&spec(text)).unwrap(), text);
    }
}
