//! Provider configuration: flags, `SUBLET_PROVIDER_*` environment variables
//! and an optional YAML file (`--config`); flags and environment win.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;
use sublet_crds::MarketOffer;

use crate::identity::NodeId;
use crate::market::MarketSettings;
use sublet_market_api::client::ClientTls;

/// Connections (TLS handshakes included) a provider serves at once by default; more are
/// closed as they arrive, so a peer opening connections without end cannot exhaust the
/// provider's memory or file descriptors.
pub const MAX_CONNECTIONS: usize = 1024;
/// A connection from which no byte arrives for this long is closed by default. A live but
/// quiet gateway stays connected: it answers the provider's HTTP/2 keepalive pings
/// ([`crate::server::KEEPALIVE_INTERVAL`]), and its own pings count too.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Everything a provider needs to run.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Directory holding the identity key and the shards.
    pub data_dir: PathBuf,
    /// gRPC (TLS) listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// A Unix socket to serve gRPC on as well, without TLS, for gateways on this machine
    /// (`--listen-unix`): callers are named by the kernel (their uid) and by the node key
    /// they prove in a handshake; see docs/security.md.
    pub listen_unix: Option<PathBuf>,
    /// Uids besides the provider's own allowed to connect to the Unix socket
    /// (`--unix-allow-uid`); the socket is then mode 0660, reached through its group.
    pub unix_allow_uids: Vec<u32>,
    /// HTTP listen address for `/metrics` and `/healthz`; port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// Bytes this provider offers for shards (headers and proofs included).
    pub capacity: u64,
    /// Bytes of `capacity` kept free; writes that would eat into it are refused.
    pub reserve: u64,
    /// Failure domain reported in `Info` (e.g. a house or a rack).
    pub zone: String,
    /// Node ids of clients (gateways) allowed to call, by their TLS certificate.
    pub allowed_clients: Vec<NodeId>,
    /// Shared cluster token accepted in the `x-sublet-token` metadata.
    pub token: Option<String>,
    /// Fault injection for tests: answer audits with forged proofs while shards stay intact
    /// and reads stay right, like a provider that cheats on proofs of storage. Never set in
    /// production; [`crate::server::RunningProvider::forge_audits`] flips it at runtime.
    pub forge_audits: bool,
    /// More fault injection for tests: the other ways a provider can lie. Never set in
    /// production.
    pub faults: Faults,
    /// Connections served at once (TLS handshakes included); more are closed on arrival.
    pub max_connections: usize,
    /// A connection from which nothing arrives for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// The offer published on the sublet market, when this provider lends its space there.
    pub market: Option<MarketSettings>,
    /// How written shard bytes are made durable (`--sync-mode file|batch`).
    pub sync_mode: crate::store::SyncMode,
    /// Whether gateways on the Unix socket may ask for a shard's file descriptor instead of
    /// its bytes and hand whole shards to store as sealed memfds (short-circuit reads and
    /// writes, see [`crate::shortcircuit`]); on unless `--short-circuit false`.
    pub short_circuit: bool,
}

impl ProviderConfig {
    /// Defaults for an embedded provider: loopback, free ports, 10 GiB.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ProviderConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen_unix: None,
            unix_allow_uids: Vec::new(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            capacity: 10 << 30,
            reserve: 0,
            zone: String::new(),
            allowed_clients: Vec::new(),
            token: None,
            forge_audits: false,
            faults: Faults::default(),
            max_connections: MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
            market: None,
            sync_mode: crate::store::SyncMode::File,
            short_circuit: true,
        }
    }

    /// Refuses settings the provider must not start with.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(token) = &self.token {
            check_token(token)?;
        }
        if let Some(path) = &self.listen_unix {
            crate::unix::check_socket_path(path)
                .map_err(|e| anyhow::anyhow!("`listenUnix`: {e}"))?;
        }
        if self.max_connections == 0 {
            bail!("`max_connections` is 0: no gateway could connect; leave it at its default");
        }
        Ok(())
    }
}

/// Ways a provider can be made to lie, for tests of the gateway's defences (each one a
/// hidden `--fault-*` switch). A gateway must read every object back in spite of each,
/// flag the liar's shards and repair them elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Stores junk instead of the bytes it was sent, and acknowledges the junk's hash.
    pub store_junk: bool,
    /// Answers a read of one shard with the bytes of another shard it holds.
    pub swap_shards: bool,
    /// Sends shard bytes at one byte a second.
    pub slow_reads: bool,
    /// Acknowledges writes (with the right hash) and keeps nothing.
    pub drop_writes: bool,
    /// Reports far more free space than it has ([`OVERSTATED_FREE`]).
    pub overstate_free: bool,
}

/// The free space a provider with [`Faults::overstate_free`] claims: a pebibyte.
pub const OVERSTATED_FREE: u64 = 1 << 50;

impl Faults {
    /// Whether any switch is on.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

/// The shortest cluster token a provider accepts: a shorter one can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// Refuses a cluster token shorter than [`MIN_TOKEN_LEN`].
pub fn check_token(token: &str) -> anyhow::Result<()> {
    if token.chars().count() < MIN_TOKEN_LEN {
        bail!(
            "`token` is {} characters; a cluster token must be at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 16`)",
            token.chars().count()
        );
    }
    Ok(())
}

/// Parse a size such as `500Gi`, `10G`, `1.5Ti`, `4096` or `16MiB` into bytes.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.trim_end_matches(['B', 'b']) {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => bail!("invalid size {text:?}: unknown unit {unit:?}; use e.g. 500Gi, 10G or 4096"),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid size {text:?}: use e.g. 500Gi, 10G or 4096"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        bail!("invalid size {text:?}: out of range");
    }
    Ok(bytes as u64)
}

/// Command line of `sublet-provider`.
#[derive(Debug, Parser)]
#[command(name = "sublet-provider", version, about = "sublet shard store daemon")]
pub struct Args {
    /// YAML configuration file; flags and environment override its values.
    #[arg(long, env = "SUBLET_PROVIDER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the identity key and shards [default: /var/lib/sublet].
    #[arg(long, env = "SUBLET_PROVIDER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:7480].
    #[arg(long, env = "SUBLET_PROVIDER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Also serve gRPC on this Unix socket, without TLS, for gateways on this machine
    /// (they use the address `unix:PATH`); the directory must belong to the provider's user.
    #[arg(long, env = "SUBLET_PROVIDER_LISTEN_UNIX")]
    pub listen_unix: Option<PathBuf>,
    /// A uid besides the provider's own allowed to connect to the Unix socket (repeat, or
    /// comma-separate in the environment); the socket is then mode 0660.
    #[arg(
        long = "unix-allow-uid",
        env = "SUBLET_PROVIDER_UNIX_ALLOW_UIDS",
        value_delimiter = ','
    )]
    pub unix_allow_uids: Vec<u32>,
    /// Metrics and health listen address [default: 0.0.0.0:7481].
    #[arg(long, env = "SUBLET_PROVIDER_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Capacity offered, e.g. 500Gi [default: 10Gi].
    #[arg(long, env = "SUBLET_PROVIDER_CAPACITY")]
    pub capacity: Option<String>,
    /// Part of the capacity kept free, e.g. 10Gi [default: 0].
    #[arg(long, env = "SUBLET_PROVIDER_RESERVE")]
    pub reserve: Option<String>,
    /// Failure domain reported to gateways.
    #[arg(long, env = "SUBLET_PROVIDER_ZONE")]
    pub zone: Option<String>,
    /// Node id of a client allowed to call (repeat, or comma-separate in the environment).
    #[arg(
        long = "allowed-client",
        env = "SUBLET_PROVIDER_ALLOWED_CLIENTS",
        value_delimiter = ','
    )]
    pub allowed_clients: Vec<NodeId>,
    /// Cluster token accepted from clients in `x-sublet-token`.
    #[arg(long, env = "SUBLET_PROVIDER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Publish an offer on the sublet market: a YAML/JSON file, or the offer itself inline
    /// (`{pricePerGibMonth: 4000, region: eu-west, promisedUptime: "99.5%", ...}`); the
    /// fields are those of `ProviderPool.spec.offer`.
    #[arg(long, env = "SUBLET_PROVIDER_OFFER")]
    pub offer: Option<String>,
    /// The market the offer goes to, `https://host:port` (overrides the offer's `marketUrl`).
    #[arg(long, env = "SUBLET_PROVIDER_MARKET_URL")]
    pub market_url: Option<String>,
    /// PEM CA certificates trusted for the market's HTTPS instead of the system's roots
    /// (overrides the offer's `marketCaFile`).
    #[arg(long, env = "SUBLET_PROVIDER_MARKET_CA_FILE")]
    pub market_ca_file: Option<PathBuf>,
    /// Allow a plain `http://` market URL: anyone on the path could grant tenancy by
    /// rewriting the market's answers, so only for a market on loopback or in tests.
    #[arg(
        long,
        env = "SUBLET_PROVIDER_MARKET_INSECURE_HTTP",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub market_insecure_http: bool,
    /// How often the offer is checked on the market and proposed contracts are accepted,
    /// e.g. `1m` [default: 1m].
    #[arg(long, env = "SUBLET_PROVIDER_MARKET_INTERVAL")]
    pub market_interval: Option<String>,
    /// How a shard's bytes are made durable before it is acknowledged: `file` (an fsync of
    /// each shard file) or `batch` (one syncfs(2) of the filesystem shared by the writes
    /// finishing together; for a filesystem the store has to itself) [default: file].
    #[arg(long, env = "SUBLET_PROVIDER_SYNC_MODE")]
    pub sync_mode: Option<String>,
    /// Hand gateways on the Unix socket a read-only file descriptor of a whole shard they
    /// authenticate themselves instead of streaming its bytes, and take whole shards they
    /// hand over as sealed memfds (`true` or `false`) [default: true].
    #[arg(long, env = "SUBLET_PROVIDER_SHORT_CIRCUIT")]
    pub short_circuit: Option<bool>,
    /// The former name of `--short-circuit`, from when it covered reads alone.
    #[arg(long, env = "SUBLET_PROVIDER_SHORT_CIRCUIT_READS", hide = true)]
    pub short_circuit_reads: Option<bool>,
    /// Print this node's id (creating the identity if needed) and exit.
    #[arg(long)]
    pub print_node_id: bool,
    /// Fault-injection switch for tests: forge every audit answer (wrong proofs) while
    /// keeping shards and reads intact. Hidden: a provider that does this gets its shards
    /// flagged for repair and no new placements.
    #[arg(long, env = "SUBLET_PROVIDER_FAULT_FORGE_AUDITS", hide = true)]
    pub fault_forge_audits: bool,
    /// Fault-injection switch for tests: store junk instead of the bytes sent, and
    /// acknowledge the junk's hash.
    #[arg(long, hide = true)]
    pub fault_store_junk: bool,
    /// Fault-injection switch for tests: answer a read with another shard's bytes.
    #[arg(long, hide = true)]
    pub fault_swap_shards: bool,
    /// Fault-injection switch for tests: send shard bytes at one byte a second.
    #[arg(long, hide = true)]
    pub fault_slow_reads: bool,
    /// Fault-injection switch for tests: acknowledge writes and keep nothing.
    #[arg(long, hide = true)]
    pub fault_drop_writes: bool,
    /// Fault-injection switch for tests: report a pebibyte free, whatever is.
    #[arg(long, hide = true)]
    pub fault_overstate_free: bool,
}

/// The YAML file; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub listen_unix: Option<PathBuf>,
    #[serde(default)]
    pub unix_allow_uids: Vec<u32>,
    pub http_listen: Option<SocketAddr>,
    pub capacity: Option<String>,
    pub reserve: Option<String>,
    pub zone: Option<String>,
    #[serde(default)]
    pub allowed_clients: Vec<NodeId>,
    pub token: Option<String>,
    pub offer: Option<MarketOffer>,
    pub market_url: Option<String>,
    pub market_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub market_insecure_http: bool,
    pub market_interval: Option<String>,
    /// `file` or `batch`, as `--sync-mode`.
    pub sync_mode: Option<String>,
    /// As `--short-circuit` (`shortCircuitReads`, its former name, is read too).
    #[serde(alias = "shortCircuitReads")]
    pub short_circuit: Option<bool>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        serde_yaml::from_str(&text)
            .with_context(|| format!("config file {} is invalid", path.display()))
    }
}

impl Args {
    /// Merge flags and environment over the file (if any) over the defaults.
    pub fn resolve(&self) -> anyhow::Result<ProviderConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let size =
            |field: &str, flag: &Option<String>, file: &Option<String>, default: u64| match flag
                .as_ref()
                .or(file.as_ref())
            {
                Some(text) => parse_size(text).with_context(|| format!("field `{field}`")),
                None => Ok(default),
            };
        let capacity = size("capacity", &self.capacity, &file.capacity, 10 << 30)?;
        let reserve = size("reserve", &self.reserve, &file.reserve, 0)?;
        if reserve >= capacity {
            bail!("`reserve` ({reserve} bytes) must be smaller than `capacity` ({capacity} bytes)");
        }
        let allowed_clients = if self.allowed_clients.is_empty() {
            file.allowed_clients
        } else {
            self.allowed_clients.clone()
        };
        let token = self.token.clone().or(file.token).filter(|t| !t.is_empty());
        if let Some(token) = &token {
            check_token(token)?;
        }
        let offer = match &self.offer {
            Some(text) => Some(parse_offer(text)?),
            None => file.offer,
        };
        let sync_mode = match self.sync_mode.as_ref().or(file.sync_mode.as_ref()) {
            Some(text) => text
                .parse()
                .map_err(|e: String| anyhow::anyhow!("field `syncMode`: {e}"))?,
            None => crate::store::SyncMode::File,
        };
        let market_url = self.market_url.clone().or(file.market_url);
        let interval = match self
            .market_interval
            .as_ref()
            .or(file.market_interval.as_ref())
        {
            Some(text) => sublet_crds::Duration::parse(text)
                .map_err(|e| anyhow::anyhow!("field `marketInterval`: {e}"))?
                .as_std(),
            None => std::time::Duration::from_secs(60),
        };
        let market = match (offer, market_url) {
            (None, None) => None,
            (None, Some(_)) => bail!(
                "`marketUrl` is set but there is no offer; give the terms with --offer (see sublet-provider --help)"
            ),
            (Some(offer), url) => {
                let Some(url) = url.or_else(|| offer.market_url.clone()) else {
                    bail!(
                        "the offer needs a market; pass --market-url https://host:port or set `marketUrl` in the offer"
                    );
                };
                let tls = ClientTls {
                    ca_file: self
                        .market_ca_file
                        .clone()
                        .or(file.market_ca_file)
                        .or_else(|| offer.market_ca_file.as_ref().map(PathBuf::from)),
                    insecure_http: self.market_insecure_http
                        || file.market_insecure_http
                        || offer.market_insecure_http,
                };
                if let Some(problem) = offer.validate("offer").first() {
                    bail!("{problem}");
                }
                if offer.market_ca_secret_ref.is_some() {
                    bail!(
                        "offer.marketCaSecretRef is for a ProviderPool (the operator mounts the Secret); \
                         name the CA file with marketCaFile or --market-ca-file"
                    );
                }
                if let Err(problem) = sublet_crds::offer::check_market_url(
                    &url,
                    tls.insecure_http,
                    "--market-insecure-http",
                ) {
                    bail!("the market url: {problem}");
                }
                Some(MarketSettings {
                    url,
                    offer,
                    interval,
                    tls,
                })
            }
        };
        Ok(ProviderConfig {
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/sublet")),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 7480))),
            listen_unix: self.listen_unix.clone().or(file.listen_unix),
            unix_allow_uids: if self.unix_allow_uids.is_empty() {
                file.unix_allow_uids
            } else {
                self.unix_allow_uids.clone()
            },
            http_listen: self
                .http_listen
                .or(file.http_listen)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 7481))),
            capacity,
            reserve,
            zone: self.zone.clone().or(file.zone).unwrap_or_default(),
            allowed_clients,
            token,
            forge_audits: self.fault_forge_audits,
            faults: Faults {
                store_junk: self.fault_store_junk,
                swap_shards: self.fault_swap_shards,
                slow_reads: self.fault_slow_reads,
                drop_writes: self.fault_drop_writes,
                overstate_free: self.fault_overstate_free,
            },
            max_connections: MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
            market,
            sync_mode,
            short_circuit: self
                .short_circuit
                .or(self.short_circuit_reads)
                .or(file.short_circuit)
                .unwrap_or(true),
        })
    }
}

/// `--offer`: the offer inline (it starts with `{`) or the path of a file holding it.
fn parse_offer(text: &str) -> anyhow::Result<MarketOffer> {
    if text.trim_start().starts_with('{') {
        return serde_yaml::from_str(text).context("--offer is not a valid offer");
    }
    let content =
        std::fs::read_to_string(text).with_context(|| format!("reading the offer file {text}"))?;
    serde_yaml::from_str(&content).with_context(|| format!("offer file {text} is invalid"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_parse_in_human_forms() {
        assert_eq!(parse_size("500Gi").unwrap(), 500 << 30);
        assert_eq!(parse_size("10G").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1.5Ki").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5Xi").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provider.yaml");
        let id = crate::identity::NodeIdentity::generate().node_id();
        std::fs::write(
            &path,
            format!(
                "dataDir: /srv/sublet\ncapacity: 500Gi\nreserve: 10Gi\nzone: attic\nallowedClients: [\"{id}\"]\n"
            ),
        )
        .unwrap();
        let args = Args::try_parse_from([
            "sublet-provider",
            "--config",
            path.to_str().unwrap(),
            "--zone",
            "basement",
        ])
        .unwrap();
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/sublet"));
        assert_eq!(cfg.capacity, 500 << 30);
        assert_eq!(cfg.reserve, 10 << 30);
        assert_eq!(cfg.zone, "basement");
        assert_eq!(cfg.allowed_clients, vec![id]);

        assert_eq!(cfg.sync_mode, crate::store::SyncMode::File, "the default");

        std::fs::write(&path, "syncMode: batch\n").unwrap();
        let from_file =
            Args::try_parse_from(["sublet-provider", "--config", path.to_str().unwrap()]);
        assert_eq!(
            from_file.unwrap().resolve().unwrap().sync_mode,
            crate::store::SyncMode::Batch
        );
        let flag = Args::try_parse_from([
            "sublet-provider",
            "--config",
            path.to_str().unwrap(),
            "--sync-mode",
            "file",
        ]);
        assert_eq!(
            flag.unwrap().resolve().unwrap().sync_mode,
            crate::store::SyncMode::File
        );
        let wrong = Args::try_parse_from(["sublet-provider", "--sync-mode", "never"]);
        let err = wrong.unwrap().resolve().unwrap_err();
        assert!(
            format!("{err:#}").contains("syncMode") && format!("{err:#}").contains("batch"),
            "{err:#}"
        );

        std::fs::write(&path, "capacity: 1Gi\nbogus: 1\n").unwrap();
        let err = args.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }

    #[test]
    fn a_short_token_is_refused() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(["sublet-provider"].iter().chain(args))
                .unwrap()
                .resolve()
        };
        let err = parse(&["--token", "hunter2"]).unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("`token` is 7 characters; a cluster token must be at least 16"),
            "{err:#}"
        );
        let cfg = parse(&["--token", "0123456789abcdef"]).unwrap();
        assert_eq!(cfg.token.as_deref(), Some("0123456789abcdef"));
        assert!(cfg.check().is_ok());
        // An embedded provider is checked when it starts.
        let short = ProviderConfig {
            token: Some("short".into()),
            ..ProviderConfig::new("/nonexistent")
        };
        assert!(short.check().is_err());
    }

    #[test]
    fn a_unix_socket_is_configured_by_flag_or_file_and_a_bad_path_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provider.yaml");
        std::fs::write(
            &path,
            "listenUnix: /run/sublet/a.sock\nunixAllowUids: [1001]\n",
        )
        .unwrap();
        let parse = |args: &[&str]| {
            Args::try_parse_from(["sublet-provider"].iter().chain(args))
                .unwrap()
                .resolve()
                .unwrap()
        };
        let cfg = parse(&["--config", path.to_str().unwrap()]);
        assert_eq!(cfg.listen_unix, Some(PathBuf::from("/run/sublet/a.sock")));
        assert_eq!(cfg.unix_allow_uids, vec![1001]);
        let cfg = parse(&[
            "--config",
            path.to_str().unwrap(),
            "--listen-unix",
            "/run/sublet/b.sock",
            "--unix-allow-uid",
            "7",
            "--unix-allow-uid",
            "8",
        ]);
        assert_eq!(cfg.listen_unix, Some(PathBuf::from("/run/sublet/b.sock")));
        assert_eq!(cfg.unix_allow_uids, vec![7, 8]);
        assert!(cfg.check().is_ok());
        let relative = parse(&["--listen-unix", "b.sock"]);
        let err = relative.check().unwrap_err().to_string();
        assert!(
            err.contains("listenUnix") && err.contains("not absolute"),
            "{err}"
        );
    }

    #[test]
    fn fault_switches_are_hidden_and_parsed() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        assert!(!help.contains("--fault"), "{help}");
        let cfg = Args::try_parse_from([
            "sublet-provider",
            "--fault-swap-shards",
            "--fault-overstate-free",
        ])
        .unwrap()
        .resolve()
        .unwrap();
        assert!(cfg.faults.swap_shards && cfg.faults.overstate_free);
        assert!(!cfg.faults.store_junk && !cfg.faults.slow_reads && !cfg.faults.drop_writes);
    }

    #[test]
    fn offer_comes_inline_or_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offer.yaml");
        std::fs::write(
            &path,
            "marketUrl: https://market:8480\npricePerGibMonth: 4000\nregion: eu-west\npromisedUptime: \"99.5%\"\n",
        )
        .unwrap();
        let parse = |args: &[&str]| {
            Args::try_parse_from(["sublet-provider"].iter().chain(args))
                .unwrap()
                .resolve()
        };
        let cfg = parse(&["--offer", path.to_str().unwrap()]).unwrap();
        let market = cfg.market.unwrap();
        assert_eq!(market.url, "https://market:8480");
        assert_eq!(market.tls, ClientTls::default());
        assert_eq!(market.interval, std::time::Duration::from_secs(60));
        let offer = market.new_offer(cfg.capacity - cfg.reserve).unwrap();
        assert_eq!(
            (
                offer.capacity_bytes,
                offer.price_per_gib_month,
                offer.promised_uptime_bps
            ),
            (10 << 30, 4000, 9950)
        );

        // A Secret reference means nothing outside Kubernetes: refused, naming the fix.
        let refused = parse(&[
            "--offer",
            "{marketUrl: \"https://m:1\", marketCaSecretRef: {name: ca}, pricePerGibMonth: 5, region: home, promisedUptime: 99%}",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("marketCaSecretRef") && refused.contains("--market-ca-file"),
            "{refused}"
        );

        let cfg = parse(&[
            "--offer",
            "{capacity: 1Gi, pricePerGibMonth: 5, region: home, promisedUptime: 99%}",
            "--market-url",
            "http://m:1",
            "--market-insecure-http",
            "--market-interval",
            "5m",
        ])
        .unwrap();
        let market = cfg.market.unwrap();
        assert_eq!(
            (market.url.as_str(), market.interval.as_secs()),
            ("http://m:1", 300)
        );
        assert_eq!(
            market.new_offer(cfg.capacity).unwrap().capacity_bytes,
            1 << 30
        );

        let err = parse(&[
            "--offer",
            "{pricePerGibMonth: 5, region: home, promisedUptime: 99%}",
        ])
        .unwrap_err();
        assert!(format!("{err:#}").contains("--market-url"), "{err:#}");
        let err = parse(&[
            "--offer",
            "{pricePerGibMonth: 5, region: Home, promisedUptime: 99%}",
            "--market-url",
            "http://m:1",
        ])
        .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("offer.region: \"Home\" is not a region tag"),
            "{err:#}"
        );
        let err = parse(&["--market-url", "http://m:1"]).unwrap_err();
        assert!(format!("{err:#}").contains("--offer"), "{err:#}");
        // Plain HTTP is refused without the switch, wherever the URL comes from.
        let err = parse(&[
            "--offer",
            "{pricePerGibMonth: 5, region: home, promisedUptime: 99%}",
            "--market-url",
            "http://m:1",
        ])
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("is plain HTTP")
                && format!("{err:#}").contains("--market-insecure-http"),
            "{err:#}"
        );
    }
}
