//! The market as real processes, for the tests that rent space through it
//! (`tests/market_flow.rs`, `tests/hostile/market.rs`): `sublet market serve` over HTTPS
//! with a certificate of a [`PrivateCa`], `sublet-provider --offer` processes lending
//! space on it, and a `sublet serve` gateway whose `rented` pool contracts them. Every
//! process is killed when its handle is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sublet_market_api::client::{Client, ClientTls};
use sublet_market_api::identity::Signer;

use crate::cluster::{ACCESS_KEY, GatewayProcess, SECRET_KEY, wait_for};
pub use crate::daemon::Daemon;
use crate::tls::PrivateCa;
use crate::{free_addr, wait_http_ok, workspace_binary};

/// How long the market or a provider may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `sublet market` command (keygen, register, treasurer-sign) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The `sublet` binary with none of the caller's market settings leaking in.
pub fn sublet() -> Command {
    let mut cmd = Command::new(workspace_binary("sublet", "sublet"));
    cmd.env("RUST_LOG", "info")
        .env_remove("SUBLET_MARKET_KEY")
        .env_remove("SUBLET_MARKET_URL")
        .env_remove("SUBLET_MARKET_CA_FILE")
        .env_remove("SUBLET_MARKET_INSECURE_HTTP");
    cmd
}

/// Runs `cmd` (a `sublet market` subcommand) within a minute; its stdout. Fails the test,
/// with what it printed, unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    crate::clients::run_ok(cmd.stdin(Stdio::null()), COMMAND_TIMEOUT)
}

/// `sublet market keygen --out key`: writes a party key to `key`; its public key (hex).
pub fn keygen(key: &Path) -> String {
    let printed = run(sublet().args(["market", "keygen", "--out"]).arg(key));
    printed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("public_key="))
        .unwrap_or_else(|| panic!("keygen printed no public key: {printed}"))
        .to_owned()
}

/// The signer of the party key (PKCS#8) in `key`, such as a provider's `identity.key`.
pub fn signer_of(key: &Path) -> Signer {
    let der = std::fs::read(key).unwrap_or_else(|e| panic!("reading {}: {e}", key.display()));
    Signer::from_pkcs8(&der).unwrap_or_else(|e| panic!("{}: {e}", key.display()))
}

/// A running `sublet market serve`, and HTTPS calls to it.
pub struct MarketProcess {
    pub addr: SocketAddr,
    /// `https://addr`.
    pub url: String,
    /// The private CA its certificate chains to, which every party is given.
    pub ca_file: PathBuf,
    pub daemon: Daemon,
    /// A client trusting `ca_file`.
    pub client: Client,
    /// Runs the client's calls; gateways of the test may run their S3 calls on it too.
    pub runtime: tokio::runtime::Runtime,
}

impl MarketProcess {
    /// Starts `sublet market serve` on a free port with its database and log in `root`,
    /// serving HTTPS with `ca`'s server certificate, receipt periods of `period`, and
    /// `args` more (arbiter, treasurer and support keys); returns once `/healthz` answers
    /// over HTTPS.
    pub fn start(root: &Path, ca: &PrivateCa, period: &str, args: &[&str]) -> Self {
        let addr = free_addr();
        let url = format!("https://{addr}");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let tls = ClientTls {
            ca_file: Some(ca.ca_file.clone()),
            insecure_http: false,
        };
        let client = Client::with_tls(&url, &tls).unwrap_or_else(|e| panic!("{url}: {e}"));
        let daemon = Daemon::spawn(
            sublet()
                .args(["market", "serve", "--db"])
                .arg(root.join("market.db"))
                .args(["--listen", &addr.to_string()])
                .arg("--tls-cert")
                .arg(&ca.cert_file)
                .arg("--tls-key")
                .arg(&ca.key_file)
                .args(["--receipt-period", period])
                .args(args),
            root.join("market.log"),
        );
        let market = MarketProcess {
            addr,
            url,
            ca_file: ca.ca_file.clone(),
            daemon,
            client,
            runtime,
        };
        wait_for(
            "the market to answer over HTTPS",
            START_TIMEOUT,
            || match market
                .runtime
                .block_on(market.client.send(None, "GET", "/healthz", b""))
            {
                Ok(reply) if reply.status == 200 => Ok(()),
                Ok(reply) => Err(format!("{}: {}", reply.status, reply.text)),
                Err(e) => Err(format!("{e}\n{}", market.daemon.log_tail())),
            },
        );
        market
    }

    /// An unsigned GET over HTTPS; fails the test unless it answers 200.
    pub fn get(&self, path: &str) -> Value {
        self.signed_get(None, path)
    }

    /// A GET over HTTPS signed by `signer` (unsigned when `None`); fails the test unless
    /// it answers 200.
    pub fn signed_get(&self, signer: Option<&Signer>, path: &str) -> Value {
        let reply = self
            .runtime
            .block_on(self.client.json(signer, "GET", path, &Value::Null))
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.daemon.log_tail()));
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
        reply.body
    }

    /// Waits until `count` offers are open.
    pub fn wait_for_offers(&self, count: usize) {
        wait_for(
            &format!("{count} open offers"),
            Duration::from_secs(60),
            || {
                let offers = self.get("/v1/offers");
                (offers.as_array().map(Vec::len) == Some(count))
                    .then_some(())
                    .ok_or(offers.to_string())
            },
        );
    }
}

/// What a lending provider offers, in the market's micro-credits.
#[derive(Clone, Copy, Debug)]
pub struct Offer {
    pub price_per_gib_month: i64,
    pub egress_price_per_gib: i64,
}

/// A `sublet-provider` lending 1 GiB of its 2 GiB on `market` at `offer` (region
/// `eu-west`), trusting the market's certificate through its CA; `extra` are more switches
/// (a `--fault-*`). Its data directory is `root/name`, its log `root/name.log`; returns
/// once it answers `/healthz`.
pub fn lending_provider(
    root: &Path,
    name: &str,
    market: &MarketProcess,
    offer: Offer,
    extra: &[&str],
) -> LendingProvider {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let (grpc, http) = (free_addr(), free_addr());
    let offer = format!(
        "{{pricePerGibMonth: {}, egressPricePerGib: {}, region: eu-west, \
         promisedUptime: \"99%\", endpoint: \"https://{grpc}\"}}",
        offer.price_per_gib_month, offer.egress_price_per_gib
    );
    let daemon = Daemon::spawn(
        Command::new(workspace_binary("sublet-provider", "sublet-provider"))
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--capacity", "2Gi", "--reserve", "1Gi"])
            .args(["--offer", &offer, "--market-url", &market.url])
            .arg("--market-ca-file")
            .arg(&market.ca_file)
            .args(["--market-interval", "1s"])
            .args(extra)
            .env("RUST_LOG", "sublet_provider=info,warn"),
        root.join(format!("{name}.log")),
    );
    wait_http_ok(http, "/healthz", START_TIMEOUT);
    LendingProvider { daemon, dir }
}

/// A provider lending space on the market; killed when dropped.
pub struct LendingProvider {
    pub daemon: Daemon,
    /// Its data directory.
    pub dir: PathBuf,
}

impl LendingProvider {
    /// Its node key, which is also its party key on the market.
    pub fn key(&self) -> PathBuf {
        self.dir.join("identity.key")
    }
}

/// A `sublet serve` gateway (not started) whose ProviderPool `rented` rents `providers`
/// providers (reserving 256 MiB of each, at most 5000 per GiB-month, in `eu-west`) from
/// `market`, with the YAML documents `policies` (plans, schedules) and `default_plan`.
/// Its config and log are in `root`, its data directory `root/gateway` (its market key
/// is `identity/identity.key` in it); S3 calls run on the market's runtime.
pub fn rented_gateway(
    root: &Path,
    market: &MarketProcess,
    providers: usize,
    policies: &str,
    default_plan: &str,
) -> GatewayProcess {
    let (s3, admin) = (free_addr(), free_addr());
    let config = root.join("sublet.yaml");
    let yaml = format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: rented}}
spec:
  class: rented
  market: {{url: "{url}", caFile: "{ca}", providers: {providers}, reserve: 256Mi, maxPricePerGibMonth: 5000, regions: [eu-west]}}
---
{policies}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: {default_plan}
  probeInterval: 2s
  listen: "{s3}"
  adminListen: "{admin}"
  dataDir: "{data}"
  credentials: [{{accessKey: {ACCESS_KEY}, secretKey: {SECRET_KEY}}}]
"#,
        url = market.url,
        ca = market.ca_file.display(),
        policies = policies.trim(),
        data = root.join("gateway").display(),
    );
    std::fs::write(&config, yaml).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    GatewayProcess::on_config(
        "g0",
        config,
        s3,
        admin,
        root.join("gateway.log"),
        market.runtime.handle().clone(),
    )
}
