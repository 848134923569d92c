//! `StorageGateway`: the S3 endpoint, where its metadata lives and who may use it.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::Duration;
use crate::size::ByteSize;
use crate::validate::{Problems, ValidationError, is_dns_subdomain};

/// An S3-compatible endpoint. In a cluster the operator runs it as a Deployment with a
/// Service; standalone, `sublet serve` runs it from this spec and the `listen`, `dataDir`,
/// `masterKeyFile`, `credentials` and `providerToken` fields.
// Each printcolumn repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sublet.dev",
    version = "v1alpha1",
    kind = "StorageGateway",
    doc = "An S3-compatible endpoint over sublet storage.",
    namespaced,
    status = "StorageGatewayStatus",
    shortname = "sgw",
    derive = "PartialEq",
    printcolumn(
        name = "Default Plan",
        type_ = "string",
        json_path = ".spec.defaultPlan"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StorageGatewaySpec {
    /// Gateway pods; more than 1 needs `metadata.postgres`. Default 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: u32,
    /// The StoragePlan for objects whose bucket and request name none.
    pub default_plan: String,
    /// Where bucket and object metadata is kept; default SQLite on a 10Gi volume.
    #[serde(default)]
    pub metadata: MetadataStore,
    /// How the gateway is exposed in the cluster.
    #[serde(default)]
    pub service: ServiceSpec,
    /// The Secret holding S3 access keys; created with fresh keys when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Standalone only: the address to listen on, e.g. `127.0.0.1:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Standalone only: the directory for the SQLite database and gateway state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Standalone only: a file holding the master key that wraps object keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<String>,
    /// Standalone only: S3 access keys and the buckets each may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<GatewayCredential>,
    /// Standalone only: the token the gateway presents to providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_token: Option<String>,
    /// Standalone only: the address serving `/metrics` and `/healthz`, e.g.
    /// `127.0.0.1:9001`; not served when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// Standalone only: serve S3 over HTTPS with this certificate; plain HTTP when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTls>,
    /// How often the gateway asks every provider and cloud bucket for its Info (liveness,
    /// free space); a lost provider is noticed within this interval. Default 15s, 1s to 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval: Option<Duration>,
    /// How often the gateway stores an encrypted snapshot of its metadata on its providers
    /// (what `sublet recover` restores): with SQLite metadata, the most a lost gateway disk
    /// can take is what changed since. Default 1h, 1m to 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_interval: Option<Duration>,
    /// How long the S3 listener waits on a client and how many connections it serves at
    /// once, so slow or stalled clients cannot hold what others need. Defaults suit phones
    /// on bad networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_limits: Option<ClientLimits>,
    /// How S3 clients address buckets. Path style (`host/bucket/key`) always works;
    /// `domains` adds virtual-host style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Addressing>,
}

/// How S3 clients address buckets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Addressing {
    /// Domains served with virtual-host-style addressing, e.g. `s3.example.org`: a request
    /// to `photos.s3.example.org` is for bucket `photos`. A request to a domain itself, to
    /// an IP address or to any other host is path style. Point a wildcard DNS record
    /// (`*.s3.example.org`) and a wildcard certificate at the gateway. Default none (path
    /// style only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Proxies that terminate TLS in front of the gateway (an ingress controller, a load
    /// balancer), as addresses or CIDRs, e.g. `10.0.0.0/8`: a request from one of them
    /// carrying `X-Forwarded-Proto: https` counts as made over TLS, so it may carry a
    /// customer's encryption key (SSE-C) and satisfies `aws:SecureTransport`. The header is
    /// never believed from any other peer. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

impl S3Addressing {
    fn validate(&self, p: &mut Problems) {
        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            if !is_cidr(proxy) {
                p.add(
                    format!("spec.s3.trustedProxies[{i}]"),
                    format!(
                        "{proxy:?} is not an IP address or CIDR; write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8"
                    ),
                );
            }
        }
        for (i, domain) in self.domains.iter().enumerate() {
            let field = format!("spec.s3.domains[{i}]");
            if !is_dns_subdomain(domain) {
                p.add(
                    field,
                    format!(
                        "{domain:?} is not a domain name; use lowercase letters, digits, '-' and '.' without a port or scheme (e.g. s3.example.org)"
                    ),
                );
            } else if let Some(other) = self.domains[..i].iter().find(|o| {
                *o == domain
                    || o.ends_with(&format!(".{domain}"))
                    || domain.ends_with(&format!(".{o}"))
            }) {
                p.add(
                    field,
                    format!(
                        "{domain:?} overlaps {other:?}: a host under both could name two buckets; keep one of them"
                    ),
                );
            }
        }
    }
}

/// Whether `text` is an IP address, or one with a prefix length within its family's bits
/// (`10.0.0.0/8`, `fd00::/8`).
pub fn is_cidr(text: &str) -> bool {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let Ok(addr) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u8>().is_ok_and(|p| p <= max)
    })
}

/// How long the S3 listener waits on a client, and how many connections it serves at once.
/// Every field is optional; each default is named on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientLimits {
    /// Longest a connection may take to send a whole request head, counted from its
    /// opening or from the end of its previous request (so also how long an idle
    /// keep-alive connection stays open). Default 30s, 1s to 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Duration>,
    /// Longest a TLS handshake may take. Default 10s, 1s to 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake_timeout: Option<Duration>,
    /// Longest a request body may go without a byte while the gateway waits for it; the
    /// request then ends with `RequestTimeout` and gives back its upload buffers.
    /// Default 30s, 1s to 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<Duration>,
    /// Longest a client may leave an answer unread (its receive window full) before its
    /// connection is closed, freeing what the answer holds. Default 60s, 1s to 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout: Option<Duration>,
    /// Connections served at once; further ones wait in the listen backlog until one
    /// closes. Default 1024, 1 to 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_connections: Option<u32>,
}

impl ClientLimits {
    pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: std::time::Duration =
        std::time::Duration::from_secs(10);
    pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    pub const DEFAULT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

    /// `headerTimeout`, or its default.
    pub fn header_timeout(&self) -> std::time::Duration {
        or_default(&self.header_timeout, Self::DEFAULT_HEADER_TIMEOUT)
    }

    /// `tlsHandshakeTimeout`, or its default.
    pub fn tls_handshake_timeout(&self) -> std::time::Duration {
        or_default(
            &self.tls_handshake_timeout,
            Self::DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        )
    }

    /// `bodyTimeout`, or its default.
    pub fn body_timeout(&self) -> std::time::Duration {
        or_default(&self.body_timeout, Self::DEFAULT_BODY_TIMEOUT)
    }

    /// `sendTimeout`, or its default.
    pub fn send_timeout(&self) -> std::time::Duration {
        or_default(&self.send_timeout, Self::DEFAULT_SEND_TIMEOUT)
    }

    /// `maxConnections`, or its default.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
            .unwrap_or(Self::DEFAULT_MAX_CONNECTIONS)
    }

    fn validate(&self, p: &mut Problems) {
        for (field, value) in [
            ("headerTimeout", &self.header_timeout),
            ("tlsHandshakeTimeout", &self.tls_handshake_timeout),
            ("bodyTimeout", &self.body_timeout),
            ("sendTimeout", &self.send_timeout),
        ] {
            if let Some(d) = value
                && !(1..=600).contains(&d.as_secs())
            {
                p.add(
                    format!("spec.clientLimits.{field}"),
                    format!("{d} is out of range; use 1s to 10m (e.g. 30s)"),
                );
            }
        }
        if let Some(n) = self.max_connections
            && !(1..=65_536).contains(&n)
        {
            p.add(
                "spec.clientLimits.maxConnections",
                format!("{n} is out of range; use 1 to 65536 (e.g. 1024)"),
            );
        }
    }
}

fn or_default(value: &Option<Duration>, default: std::time::Duration) -> std::time::Duration {
    value.as_ref().map_or(default, Duration::as_std)
}

impl StorageGatewaySpec {
    /// The probe interval when `spec.probeInterval` is omitted.
    pub const DEFAULT_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

    /// The snapshot interval when `spec.snapshotInterval` is omitted.
    pub const DEFAULT_SNAPSHOT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

    /// `spec.snapshotInterval`, or its default.
    pub fn snapshot_interval(&self) -> std::time::Duration {
        self.snapshot_interval
            .as_ref()
            .map_or(Self::DEFAULT_SNAPSHOT_INTERVAL, Duration::as_std)
    }

    /// `spec.probeInterval`, or its default.
    pub fn probe_interval(&self) -> std::time::Duration {
        self.probe_interval
            .as_ref()
            .map_or(Self::DEFAULT_PROBE_INTERVAL, Duration::as_std)
    }
}

/// The certificate an HTTPS gateway presents (standalone).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTls {
    /// A PEM file with the certificate chain, leaf first.
    pub cert_file: String,
    /// A PEM file with the certificate's private key.
    pub key_file: String,
}

fn default_replicas() -> u32 {
    1
}

/// Where metadata lives. Set exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.sqlite) != has(self.postgres)",
    "message": "set sqlite (e.g. {storage: 10Gi}) or postgres (e.g. {secretRef: {name: sublet-db}})"
}]))]
pub struct MetadataStore {
    /// An SQLite database on a volume of the gateway pod (one replica only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteMetadata>,
    /// A PostgreSQL database shared by all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresMetadata>,
}

impl Default for MetadataStore {
    fn default() -> Self {
        MetadataStore {
            sqlite: Some(SqliteMetadata::default()),
            postgres: None,
        }
    }
}

/// SQLite metadata.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqliteMetadata {
    /// Size of the volume claimed for the database, e.g. `10Gi`; default 10Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ByteSize>,
    /// The StorageClass of that claim, e.g. `local-path`; the cluster's default class when
    /// omitted (a cluster without one leaves the claim, and the gateway, Pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The database file; default `metadata.db` in the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// PostgreSQL metadata.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresMetadata {
    /// The Secret with the connection URL (`postgres://user:password@host:5432/db`); the
    /// operator hands it to the gateway in the `urlEnv` environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// The environment variable the gateway reads the connection URL from, so no password
    /// sits in the YAML; default `SUBLET_METADATA_URL`. For standalone `sublet serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// The most connections each gateway replica keeps open to the database, 1 to 64;
    /// default 16. Replicas × poolSize must stay under the server's `max_connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub pool_size: Option<u32>,
    /// How long a request waits for a free connection when all are busy before it is
    /// answered 503 SlowDown, e.g. `10s`; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_wait: Option<Duration>,
}

/// Where the gateway reads the PostgreSQL URL from when `urlEnv` is not set.
pub const DEFAULT_METADATA_URL_ENV: &str = "SUBLET_METADATA_URL";
/// Connections per gateway replica when `poolSize` is not set.
pub const DEFAULT_METADATA_POOL_SIZE: u32 = 16;
/// The most connections `poolSize` may ask for.
pub const MAX_METADATA_POOL_SIZE: u32 = 64;
/// Seconds a request waits for a connection when `poolWait` is not set.
pub const DEFAULT_METADATA_POOL_WAIT_SECS: u64 = 10;

impl PostgresMetadata {
    /// The environment variable holding the connection URL.
    pub fn url_env(&self) -> &str {
        self.url_env
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or(DEFAULT_METADATA_URL_ENV)
    }

    /// The most connections open at once.
    pub fn pool_size(&self) -> u32 {
        self.pool_size.unwrap_or(DEFAULT_METADATA_POOL_SIZE)
    }

    /// How long a request waits for a free connection.
    pub fn pool_wait(&self) -> std::time::Duration {
        self.pool_wait.as_ref().map_or(
            std::time::Duration::from_secs(DEFAULT_METADATA_POOL_WAIT_SECS),
            Duration::as_std,
        )
    }
}

/// A reference to a key of a Secret in the gateway's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
    /// The key holding the value; default `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The Service in front of the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// The S3 port; default 9000.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        ServiceSpec {
            type_: ServiceType::default(),
            port: default_port(),
        }
    }
}

fn default_port() -> u16 {
    9000
}

/// Kubernetes Service types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Through the cluster's load balancer.
    LoadBalancer,
}

/// An S3 key pair (standalone).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayCredential {
    /// The access key id clients send.
    pub access_key: String,
    /// The secret key clients sign with, written here; or use `secretKeyFile` or
    /// `secretKeyEnv` to keep it out of the file. Exactly one of the three.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_key: String,
    /// A file whose content (trimmed) is the secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<String>,
    /// An environment variable holding the secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
    /// Buckets this key may use and how; every bucket with read and write when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<BucketGrant>,
    /// Whether this key may remove or shorten GOVERNANCE object lock retention (with the
    /// `x-amz-bypass-governance-retention: true` header, in buckets it may write). Off by
    /// default; COMPLIANCE retention and legal holds bind every key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bypass_governance: bool,
}

/// Access to one bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketGrant {
    /// The bucket name, or `*` for every bucket.
    pub bucket: String,
    /// `read`, `write` or `readwrite` (default).
    #[serde(default)]
    pub access: Access,
}

/// What a key may do in a bucket.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// List and get.
    Read,
    /// Put and delete.
    Write,
    /// Both.
    #[default]
    Readwrite,
}

impl Access {
    /// Whether reads are allowed.
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Readwrite)
    }

    /// Whether writes are allowed.
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Readwrite)
    }
}

/// What the operator observed about a gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageGatewayStatus {
    /// `Ready` and other conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The S3 URL inside the cluster, e.g. `http://s3.storage.svc:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Gateway pods ready.
    #[serde(default)]
    pub ready_replicas: u32,
}

impl StorageGatewaySpec {
    /// Every problem with this spec, each with its field path and a fix.
    pub fn validate(&self) -> Vec<ValidationError> {
        let mut p = Problems::default();
        p.at_least("spec.replicas", self.replicas, 1);
        p.name("spec.defaultPlan", &self.default_plan);
        if let Some(interval) = &self.probe_interval
            && !(1..=300).contains(&interval.as_secs())
        {
            p.add(
                "spec.probeInterval",
                format!("{interval} is out of range; use 1s to 5m (e.g. 15s)"),
            );
        }
        if let Some(interval) = &self.snapshot_interval
            && !(60..=86_400).contains(&interval.as_secs())
        {
            p.add(
                "spec.snapshotInterval",
                format!("{interval} is out of range; use 1m to 24h (e.g. 15m)"),
            );
        }
        match (&self.metadata.sqlite, &self.metadata.postgres) {
            (Some(_), Some(_)) => p.add("spec.metadata", "set either sqlite or postgres, not both"),
            (None, None) => p.add(
                "spec.metadata",
                "set sqlite (e.g. {storage: 10Gi}) or postgres (e.g. {secretRef: {name: sublet-db}})",
            ),
            _ => {}
        }
        if let Some(limits) = &self.client_limits {
            limits.validate(&mut p);
        }
        if let Some(s3) = &self.s3 {
            s3.validate(&mut p);
        }
        if self.metadata.sqlite.is_some() && self.replicas > 1 {
            p.add(
                "spec.replicas",
                format!(
                    "{} replicas cannot share an SQLite database; use replicas: 1 or metadata.postgres",
                    self.replicas
                ),
            );
        }
        if let Some(sqlite) = &self.metadata.sqlite
            && sqlite.storage.as_ref().is_some_and(|s| s.bytes() == 0)
        {
            p.add(
                "spec.metadata.sqlite.storage",
                "must be more than 0 (e.g. 10Gi)",
            );
        }
        if let Some(class) = self
            .metadata
            .sqlite
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            && !is_dns_subdomain(class)
        {
            p.add(
                "spec.metadata.sqlite.storageClassName",
                format!(
                    "{class:?} is not a StorageClass name; use lowercase letters, digits, '-' and '.' (e.g. local-path; `kubectl get storageclass` lists them), or leave it out for the default class"
                ),
            );
        }
        if let Some(postgres) = &self.metadata.postgres {
            if postgres
                .secret_ref
                .as_ref()
                .is_some_and(|r| r.name.is_empty())
            {
                p.add(
                    "spec.metadata.postgres.secretRef.name",
                    "must name the Secret holding the connection URL",
                );
            }
            if let Some(var) = &postgres.url_env
                && (var.is_empty()
                    || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || var.starts_with(|c: char| c.is_ascii_digit()))
            {
                p.add(
                    "spec.metadata.postgres.urlEnv",
                    format!(
                        "{var:?} is not an environment variable name; use letters, digits and _ (e.g. SUBLET_METADATA_URL)"
                    ),
                );
            }
            if let Some(size) = postgres.pool_size
                && !(1..=MAX_METADATA_POOL_SIZE).contains(&size)
            {
                p.add(
                    "spec.metadata.postgres.poolSize",
                    format!(
                        "{size} connections: use 1 to {MAX_METADATA_POOL_SIZE} (default {DEFAULT_METADATA_POOL_SIZE})"
                    ),
                );
            }
            if postgres
                .pool_wait
                .as_ref()
                .is_some_and(|w| w.as_secs() == 0)
            {
                p.add(
                    "spec.metadata.postgres.poolWait",
                    "must be at least 1s (e.g. 10s): a request finding every connection busy waits this long",
                );
            }
        }
        if self.service.port == 0 {
            p.add(
                "spec.service.port",
                "must be a port from 1 to 65535 (e.g. 9000)",
            );
        }
        if let Some(listen) = &self.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            p.add(
                "spec.listen",
                format!(
                    "\"{listen}\" is not an address to listen on; use IP:port (e.g. 127.0.0.1:9000)"
                ),
            );
        }
        if let Some(admin) = &self.admin_listen
            && admin.parse::<std::net::SocketAddr>().is_err()
        {
            p.add(
                "spec.adminListen",
                format!(
                    "\"{admin}\" is not an address to listen on; use IP:port (e.g. 127.0.0.1:9001)"
                ),
            );
        }
        if let Some(tls) = &self.tls {
            for (field, value) in [
                ("spec.tls.certFile", &tls.cert_file),
                ("spec.tls.keyFile", &tls.key_file),
            ] {
                if value.trim().is_empty() {
                    p.add(field, "must name a PEM file; omit tls to serve plain HTTP");
                }
            }
        }
        for (field, value) in [
            ("spec.dataDir", &self.data_dir),
            ("spec.masterKeyFile", &self.master_key_file),
            ("spec.providerToken", &self.provider_token),
            ("spec.credentialsSecret", &self.credentials_secret),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                p.add(field, "must not be empty; omit it to use the default");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, credential) in self.credentials.iter().enumerate() {
            let field = format!("spec.credentials[{i}]");
            if credential.access_key.len() < 3 {
                p.add(
                    format!("{field}.accessKey"),
                    "must be at least 3 characters (e.g. family-laptop)",
                );
            } else if !seen.insert(credential.access_key.as_str()) {
                p.add(
                    format!("{field}.accessKey"),
                    format!(
                        "\"{}\" is used twice; give each key pair its own access key",
                        credential.access_key
                    ),
                );
            }
            let sources = usize::from(!credential.secret_key.is_empty())
                + usize::from(credential.secret_key_file.is_some())
                + usize::from(credential.secret_key_env.is_some());
            if sources != 1 {
                p.add(
                    format!("{field}.secretKey"),
                    format!(
                        "set exactly one of secretKey, secretKeyFile or secretKeyEnv (got {sources})"
                    ),
                );
            } else if let Some((name, _)) = [
                ("secretKeyFile", &credential.secret_key_file),
                ("secretKeyEnv", &credential.secret_key_env),
            ]
            .into_iter()
            .find(|(_, v)| v.as_deref().is_some_and(|v| v.trim().is_empty()))
            {
                p.add(
                    format!("{field}.{name}"),
                    "must not be empty; name the file or variable holding the secret key",
                );
            } else if !credential.secret_key.is_empty() && credential.secret_key.len() < 8 {
                p.add(
                    format!("{field}.secretKey"),
                    "must be at least 8 characters; use a long random string (e.g. from `openssl rand -hex 20`)",
                );
            }
            for (j, grant) in credential.buckets.iter().enumerate() {
                if grant.bucket != "*" && !is_bucket_name(&grant.bucket) {
                    p.add(
                        format!("{field}.buckets[{j}].bucket"),
                        format!(
                            "\"{}\" is not a bucket name; use 3 to 63 lowercase letters, digits, '.' and '-' (e.g. photos), or * for every bucket",
                            grant.bucket
                        ),
                    );
                }
            }
        }
        p.0
    }
}

/// S3 bucket naming rules, simplified: 3 to 63 of `a-z0-9.-`, starting and ending with a
/// letter or digit.
fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> StorageGatewaySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        spec(&format!("defaultPlan: photos\n{yaml}"))
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn minimal_gateway_takes_defaults() {
        let g = spec("defaultPlan: photos");
        assert!(g.validate().is_empty());
        assert_eq!(g.replicas, 1);
        assert!(g.metadata.sqlite.is_some());
        assert_eq!(g.service.type_, ServiceType::ClusterIP);
        assert_eq!(g.service.port, 9000);
    }

    #[test]
    fn snapshot_interval_defaults_to_an_hour_and_is_bounded() {
        assert_eq!(
            spec("defaultPlan: photos").snapshot_interval(),
            std::time::Duration::from_secs(3600)
        );
        let often = spec("defaultPlan: photos\nsnapshotInterval: 5m");
        assert!(often.validate().is_empty());
        assert_eq!(
            often.snapshot_interval(),
            std::time::Duration::from_secs(300)
        );
        assert_eq!(
            problems("snapshotInterval: 10s"),
            ["spec.snapshotInterval: 10s is out of range; use 1m to 24h (e.g. 15m)"]
        );
    }

    #[test]
    fn client_limits_default_and_are_bounded() {
        let none = spec("defaultPlan: photos");
        let limits = none.client_limits.clone().unwrap_or_default();
        assert_eq!(limits.header_timeout(), std::time::Duration::from_secs(30));
        assert_eq!(
            limits.tls_handshake_timeout(),
            std::time::Duration::from_secs(10)
        );
        assert_eq!(limits.body_timeout(), std::time::Duration::from_secs(30));
        assert_eq!(limits.send_timeout(), std::time::Duration::from_secs(60));
        assert_eq!(limits.max_connections(), 1024);
        let set = spec(
            "defaultPlan: photos\nclientLimits: {headerTimeout: 5s, bodyTimeout: 2m, maxConnections: 64}",
        );
        assert!(set.validate().is_empty());
        let limits = set.client_limits.unwrap();
        assert_eq!(limits.header_timeout(), std::time::Duration::from_secs(5));
        assert_eq!(limits.body_timeout(), std::time::Duration::from_secs(120));
        assert_eq!(limits.max_connections(), 64);
        assert_eq!(
            problems("clientLimits: {headerTimeout: 0s, sendTimeout: 1h, maxConnections: 0}"),
            [
                "spec.clientLimits.headerTimeout: 0s is out of range; use 1s to 10m (e.g. 30s)",
                "spec.clientLimits.sendTimeout: 1h is out of range; use 1s to 10m (e.g. 30s)",
                "spec.clientLimits.maxConnections: 0 is out of range; use 1 to 65536 (e.g. 1024)",
            ]
        );
    }

    #[test]
    fn virtual_host_domains_are_domain_names_that_do_not_overlap() {
        let none = spec("defaultPlan: photos");
        assert_eq!(none.s3, None);
        let set = spec("defaultPlan: photos\ns3: {domains: [s3.example.org, s3.local]}");
        assert!(set.validate().is_empty());
        assert_eq!(set.s3.unwrap().domains, ["s3.example.org", "s3.local"]);
        assert_eq!(
            problems(
                "s3: {domains: ['https://s3.example.org', 's3.local:9000', '', S3.Example.org]}"
            ),
            [
                "spec.s3.domains[0]: \"https://s3.example.org\" is not a domain name; use lowercase letters, digits, '-' and '.' without a port or scheme (e.g. s3.example.org)",
                "spec.s3.domains[1]: \"s3.local:9000\" is not a domain name; use lowercase letters, digits, '-' and '.' without a port or scheme (e.g. s3.example.org)",
                "spec.s3.domains[2]: \"\" is not a domain name; use lowercase letters, digits, '-' and '.' without a port or scheme (e.g. s3.example.org)",
                "spec.s3.domains[3]: \"S3.Example.org\" is not a domain name; use lowercase letters, digits, '-' and '.' without a port or scheme (e.g. s3.example.org)",
            ]
        );
        assert_eq!(
            problems("s3: {domains: [example.org, s3.example.org, example.org]}"),
            [
                "spec.s3.domains[1]: \"s3.example.org\" overlaps \"example.org\": a host under both could name two buckets; keep one of them",
                "spec.s3.domains[2]: \"example.org\" overlaps \"example.org\": a host under both could name two buckets; keep one of them",
            ]
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidrs() {
        let set = spec(
            "defaultPlan: photos\ns3: {trustedProxies: [10.0.0.0/8, 192.168.1.7, 'fd00::/8']}",
        );
        assert!(set.validate().is_empty());
        assert_eq!(
            set.s3.unwrap().trusted_proxies,
            ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]
        );
        assert_eq!(
            problems("s3: {trustedProxies: [10.0.0.0/33, ingress.local, '10.0.0.0/', '::/129']}"),
            [
                "spec.s3.trustedProxies[0]: \"10.0.0.0/33\" is not an IP address or CIDR; write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8",
                "spec.s3.trustedProxies[1]: \"ingress.local\" is not an IP address or CIDR; write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8",
                "spec.s3.trustedProxies[2]: \"10.0.0.0/\" is not an IP address or CIDR; write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8",
                "spec.s3.trustedProxies[3]: \"::/129\" is not an IP address or CIDR; write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8",
            ]
        );
    }

    #[test]
    fn probe_interval_defaults_to_15s_and_is_bounded() {
        assert_eq!(
            spec("defaultPlan: photos").probe_interval(),
            std::time::Duration::from_secs(15)
        );
        let fast = spec("defaultPlan: photos\nprobeInterval: 2s");
        assert!(fast.validate().is_empty());
        assert_eq!(fast.probe_interval(), std::time::Duration::from_secs(2));
        assert_eq!(
            problems("probeInterval: 0s"),
            ["spec.probeInterval: 0s is out of range; use 1s to 5m (e.g. 15s)"]
        );
        assert_eq!(
            problems("probeInterval: 1h"),
            ["spec.probeInterval: 1h is out of range; use 1s to 5m (e.g. 15s)"]
        );
    }

    #[test]
    fn replicas_and_metadata() {
        assert_eq!(
            problems("replicas: 0"),
            ["spec.replicas: must be at least 1 (got 0)"]
        );
        assert_eq!(
            problems("replicas: 2\nmetadata: {sqlite: {storage: 10Gi}}"),
            [
                "spec.replicas: 2 replicas cannot share an SQLite database; use replicas: 1 or metadata.postgres"
            ]
        );
        assert!(problems("replicas: 3\nmetadata: {postgres: {secretRef: {name: db}}}").is_empty());
        assert_eq!(
            problems("metadata: {}"),
            [
                "spec.metadata: set sqlite (e.g. {storage: 10Gi}) or postgres (e.g. {secretRef: {name: sublet-db}})"
            ]
        );
        assert_eq!(
            problems("metadata: {sqlite: {}, postgres: {secretRef: {name: db}}}"),
            ["spec.metadata: set either sqlite or postgres, not both"]
        );
        assert_eq!(
            problems("metadata: {postgres: {secretRef: {name: \"\"}}}"),
            [
                "spec.metadata.postgres.secretRef.name: must name the Secret holding the connection URL"
            ]
        );
        assert_eq!(
            problems("metadata: {postgres: {urlEnv: \"my url\"}}"),
            [
                "spec.metadata.postgres.urlEnv: \"my url\" is not an environment variable name; use letters, digits and _ (e.g. SUBLET_METADATA_URL)"
            ]
        );
        assert!(problems("metadata: {postgres: {urlEnv: DB_URL}}").is_empty());
        assert_eq!(
            problems("metadata: {postgres: {poolSize: 65, poolWait: 0s}}"),
            [
                "spec.metadata.postgres.poolSize: 65 connections: use 1 to 64 (default 16)",
                "spec.metadata.postgres.poolWait: must be at least 1s (e.g. 10s): a request finding every connection busy waits this long"
            ]
        );
        let pg = spec("defaultPlan: p\nmetadata: {postgres: {poolSize: 4, poolWait: 2m}}")
            .metadata
            .postgres
            .unwrap();
        assert_eq!(
            (pg.pool_size(), pg.pool_wait()),
            (4, std::time::Duration::from_secs(120))
        );
        let pg = PostgresMetadata {
            secret_ref: None,
            url_env: None,
            pool_size: None,
            pool_wait: None,
        };
        assert_eq!(
            (pg.pool_size(), pg.pool_wait()),
            (16, std::time::Duration::from_secs(10))
        );
        assert!(problems("metadata: {postgres: {}}").is_empty());
        assert_eq!(
            problems("metadata: {sqlite: {storage: 0}}"),
            ["spec.metadata.sqlite.storage: must be more than 0 (e.g. 10Gi)"]
        );
        assert!(problems("metadata: {sqlite: {storageClassName: local-path}}").is_empty());
        assert!(problems("metadata: {sqlite: {storageClassName: fast.ssd}}").is_empty());
        assert_eq!(
            problems("metadata: {sqlite: {storageClassName: Fast_SSD}}"),
            [
                "spec.metadata.sqlite.storageClassName: \"Fast_SSD\" is not a StorageClass name; use lowercase letters, digits, '-' and '.' (e.g. local-path; `kubectl get storageclass` lists them), or leave it out for the default class"
            ]
        );
    }

    #[test]
    fn default_plan_is_a_name() {
        assert_eq!(
            spec("defaultPlan: Family Photos").validate()[0].to_string(),
            "spec.defaultPlan: \"Family Photos\" is not a valid name; use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. home-lab)"
        );
    }

    #[test]
    fn service_and_standalone_fields() {
        assert_eq!(
            problems("service: {type: NodePort, port: 0}"),
            ["spec.service.port: must be a port from 1 to 65535 (e.g. 9000)"]
        );
        assert!(problems("listen: \"[::1]:9000\"").is_empty());
        assert_eq!(
            problems("listen: localhost"),
            [
                "spec.listen: \"localhost\" is not an address to listen on; use IP:port (e.g. 127.0.0.1:9000)"
            ]
        );
        assert_eq!(
            problems("dataDir: \"\"\nproviderToken: \" \""),
            [
                "spec.dataDir: must not be empty; omit it to use the default",
                "spec.providerToken: must not be empty; omit it to use the default",
            ]
        );
    }

    #[test]
    fn credentials() {
        let g = spec(
            "defaultPlan: p\ncredentials: [{accessKey: frame, secretKey: 0123456789, buckets: [{bucket: photos, access: read}, {bucket: backups}]}]",
        );
        assert!(g.validate().is_empty());
        let grants = &g.credentials[0].buckets;
        assert_eq!(grants[0].access, Access::Read);
        assert!(grants[0].access.can_read() && !grants[0].access.can_write());
        assert_eq!(grants[1].access, Access::Readwrite);
        assert_eq!(
            problems(
                "credentials: [{accessKey: ab, secretKey: short, buckets: [{bucket: Photos}]}]"
            ),
            [
                "spec.credentials[0].accessKey: must be at least 3 characters (e.g. family-laptop)",
                "spec.credentials[0].secretKey: must be at least 8 characters; use a long random string (e.g. from `openssl rand -hex 20`)",
                "spec.credentials[0].buckets[0].bucket: \"Photos\" is not a bucket name; use 3 to 63 lowercase letters, digits, '.' and '-' (e.g. photos), or * for every bucket",
            ]
        );
        assert_eq!(
            problems(
                "credentials: [{accessKey: abc, secretKey: 0123456789}, {accessKey: abc, secretKey: 0123456789}]"
            ),
            [
                "spec.credentials[1].accessKey: \"abc\" is used twice; give each key pair its own access key"
            ]
        );
        let err = serde_yaml::from_str::<StorageGatewaySpec>(
            "defaultPlan: p\ncredentials: [{accessKey: abc, secretKey: x, buckets: [{bucket: b, access: admin}]}]",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("credentials[0].buckets[0].access: unknown variant `admin`"),
            "{err}"
        );
    }

    #[test]
    fn secret_key_sources_and_wildcard_grants() {
        assert!(
            problems(
                "credentials: [{accessKey: abc, secretKeyFile: /etc/sublet/abc, buckets: [{bucket: \"*\", access: read}]}, {accessKey: def, secretKeyEnv: DEF_SECRET}]"
            )
            .is_empty()
        );
        assert_eq!(
            problems("credentials: [{accessKey: abc}]"),
            [
                "spec.credentials[0].secretKey: set exactly one of secretKey, secretKeyFile or secretKeyEnv (got 0)"
            ]
        );
        assert_eq!(
            problems("credentials: [{accessKey: abc, secretKey: 0123456789, secretKeyEnv: X}]"),
            [
                "spec.credentials[0].secretKey: set exactly one of secretKey, secretKeyFile or secretKeyEnv (got 2)"
            ]
        );
        assert_eq!(
            problems("credentials: [{accessKey: abc, secretKeyEnv: \"\"}]"),
            [
                "spec.credentials[0].secretKeyEnv: must not be empty; name the file or variable holding the secret key"
            ]
        );
    }

    #[test]
    fn admin_listen_and_tls() {
        assert!(
            problems("adminListen: 127.0.0.1:9001\ntls: {certFile: a.pem, keyFile: k.pem}")
                .is_empty()
        );
        assert_eq!(
            problems("adminListen: metrics\ntls: {certFile: a.pem, keyFile: \"\"}"),
            [
                "spec.adminListen: \"metrics\" is not an address to listen on; use IP:port (e.g. 127.0.0.1:9001)",
                "spec.tls.keyFile: must name a PEM file; omit tls to serve plain HTTP",
            ]
        );
    }

    #[test]
    fn yaml_round_trip_keeps_what_was_written() {
        let text = "replicas: 1\ndefaultPlan: family-photos\nmetadata:\n  sqlite:\n    storage: 10Gi\nservice:\n  type: ClusterIP\n  port: 9000\ncredentialsSecret: sublet-s3\n";
        assert_eq!(serde_yaml::to_string(&spec(text)).unwrap(), text);
    }
}
