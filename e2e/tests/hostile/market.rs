//! A provider rented through the market that lies: every party a real process (`sublet
//! market serve` over HTTPS with a private CA, four `sublet-provider --offer` processes, one
//! of them with `--fault-swap-shards`, and a `sublet serve` gateway renting all four through
//! a market pool). The liar answers reads with another shard's bytes; it does not count
//! that on its own receipts, but the gateway's signed receipts for its contract do, the
//! market shows them in the liar's rating, its shards are repaired onto the honest
//! providers, and every object reads back byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sublet_e2e::cluster::{GatewayProcess, TestObject, test_objects, wait_for};
use sublet_e2e::tls::PrivateCa;
use sublet_e2e::{free_addr, wait_http_ok, workspace_binary};
use sublet_market::client::{Client, ClientTls};
use sublet_market::identity::Signer;

/// Receipt periods this short end while the test watches.
const PERIOD: &str = "4s";
const PROVIDERS: usize = 4;
/// The provider that lies.
const LIAR: usize = 0;
const TIMEOUT: Duration = Duration::from_secs(60);

/// A daemon killed when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn daemon");
        Daemon { child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sublet() -> Command {
    let mut cmd = Command::new(workspace_binary("sublet", "sublet"));
    cmd.env("RUST_LOG", "info")
        .env_remove("SUBLET_MARKET_KEY")
        .env_remove("SUBLET_MARKET_URL")
        .env_remove("SUBLET_MARKET_CA_FILE")
        .env_remove("SUBLET_MARKET_INSECURE_HTTP");
    cmd
}

/// A provider lending space on the market at `url`; `extra` are more switches (a fault).
fn lending_provider(root: &Path, name: &str, url: &str, ca: &Path, extra: &[&str]) -> Daemon {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (grpc, http) = (free_addr(), free_addr());
    let offer = format!(
        "{{pricePerGibMonth: 3000, egressPricePerGib: 1000, region: eu-west, \
         promisedUptime: \"99%\", endpoint: \"https://{grpc}\"}}"
    );
    let daemon = Daemon::spawn(
        Command::new(workspace_binary("sublet-provider", "sublet-provider"))
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--capacity", "2Gi", "--reserve", "1Gi"])
            .args(["--offer", &offer, "--market-url", url])
            .arg("--market-ca-file")
            .arg(ca)
            .args(["--market-interval", "1s"])
            .args(extra)
            .env("RUST_LOG", "sublet_provider=info,warn"),
        root.join(format!("{name}.log")),
    );
    wait_http_ok(http, "/healthz", Duration::from_secs(30));
    daemon
}

fn signer_of(key: &Path) -> Signer {
    Signer::from_pkcs8(&std::fs::read(key).unwrap()).unwrap()
}

#[test]
fn a_rented_provider_serving_other_shards_bytes_shows_it_on_the_demanders_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let ca = PrivateCa::create(&root.join("ca"));
    let addr = free_addr();
    let url = format!("https://{addr}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = Client::with_tls(
        &url,
        &ClientTls {
            ca_file: Some(ca.ca_file.clone()),
            insecure_http: false,
        },
    )
    .unwrap();
    let market = Daemon::spawn(
        sublet()
            .args(["market", "serve", "--db"])
            .arg(root.join("market.db"))
            .args(["--listen", &addr.to_string()])
            .arg("--tls-cert")
            .arg(&ca.cert_file)
            .arg("--tls-key")
            .arg(&ca.key_file)
            .args(["--receipt-period", PERIOD]),
        root.join("market.log"),
    );
    let call = |signer: Option<&Signer>, path: &str| -> Value {
        let reply = runtime
            .block_on(client.json(signer, "GET", path, &Value::Null))
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", market.log_tail()));
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
        reply.body
    };
    wait_for(
        "the market to answer",
        Duration::from_secs(30),
        || match runtime.block_on(client.send(None, "GET", "/healthz", b"")) {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(r.text),
            Err(e) => Err(e.to_string()),
        },
    );

    let providers: Vec<Daemon> = (0..PROVIDERS)
        .map(|i| {
            let fault: &[&str] = if i == LIAR {
                &["--fault-swap-shards"]
            } else {
                &[]
            };
            lending_provider(root, &format!("p{i}"), &url, &ca.ca_file, fault)
        })
        .collect();
    let party = |i: usize| signer_of(&root.join(format!("p{i}")).join("identity.key")).party_id();
    wait_for("every offer to be open", TIMEOUT, || {
        let offers = call(None, "/v1/offers");
        (offers.as_array().map(Vec::len) == Some(PROVIDERS))
            .then_some(())
            .ok_or(offers.to_string())
    });

    // 2+1 over three of the four rented providers: a liar's shard has somewhere to go.
    let (s3, admin) = (free_addr(), free_addr());
    let gateway_dir = root.join("gateway");
    let config = root.join("sublet.yaml");
    std::fs::write(
        &config,
        format!(
            r#"apiVersion: sublet.dev/v1alpha1
kind: ProviderPool
metadata: {{name: rented}}
spec:
  class: rented
  market: {{url: "{url}", caFile: "{}", providers: {PROVIDERS}, reserve: 256Mi, maxPricePerGibMonth: 5000, regions: [eu-west]}}
---
apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {{name: fast}}
spec:
  rebuild: {{gracePeriod: 1s, maxConcurrentJobs: 2}}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: rented-2-1}}
spec:
  redundancy: {{erasure: {{dataShards: 2, parityShards: 1}}}}
  segmentSize: 64Ki
  schedule: fast
  placement:
    spreadBy: owner
    maxPerDomain: 1
    pools: [{{name: rented, minShards: 3}}]
---
apiVersion: sublet.dev/v1alpha1
kind: StorageGateway
metadata: {{name: s3}}
spec:
  defaultPlan: rented-2-1
  probeInterval: 2s
  listen: "{s3}"
  adminListen: "{admin}"
  dataDir: "{}"
  credentials: [{{accessKey: {}, secretKey: {}}}]
"#,
            ca.ca_file.display(),
            gateway_dir.display(),
            sublet_e2e::cluster::ACCESS_KEY,
            sublet_e2e::cluster::SECRET_KEY,
        ),
    )
    .unwrap();
    let mut gateway = GatewayProcess::on_config(
        "g0",
        config,
        s3,
        admin,
        root.join("gateway.log"),
        runtime.handle().clone(),
    );
    gateway.start();
    let dee = signer_of(&gateway_dir.join("identity").join("identity.key"));
    let contracts = call(Some(&dee), "/v1/contracts");
    let contract_of = |i: usize| -> String {
        let p = party(i);
        contracts
            .as_array()
            .and_then(|all| all.iter().find(|c| c["provider"] == p.as_str()))
            .and_then(|c| c["id"].as_str())
            .unwrap_or_else(|| panic!("no contract with provider {i}: {contracts}"))
            .to_owned()
    };
    let liar_contract = contract_of(LIAR);

    gateway.create_bucket("rented");
    let objects: Vec<TestObject> = test_objects("obj", 8, 256 << 10);
    for o in &objects {
        gateway.put("rented", o);
    }
    let liar_node = node_of(&root.join(format!("p{LIAR}")));
    let liar_status = || -> Value {
        let all = gateway.admin_get("/admin/v1/providers");
        all["items"]
            .as_array()
            .and_then(|items| items.iter().find(|p| p["nodeId"] == liar_node.as_str()))
            .cloned()
            .unwrap_or_else(|| panic!("the liar is not listed: {all}"))
    };
    assert!(
        liar_status()["shards"].as_u64() > Some(1),
        "the liar holds too little to swap: {}",
        liar_status()
    );

    // Reads (and a scrub, which reads every shard) find the liar's answers fail their
    // hashes; they go on from the others, and its shards are repaired elsewhere.
    for o in &objects {
        gateway
            .read_back("rented", o)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    gateway.admin_post("/admin/v1/scrub?limit=1000");

    // The gateway's receipt for the liar's contract shows them; the liar's does not.
    let found = wait_for("the liar's failures on a receipt", TIMEOUT, || {
        let periods = call(
            Some(&dee),
            &format!("/v1/contracts/{liar_contract}/periods"),
        );
        let found: u64 = periods
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["demander_receipt"]["shards_failed"].as_u64())
            .sum();
        (found > 0).then_some(found).ok_or(periods.to_string())
    });
    let periods = call(
        Some(&dee),
        &format!("/v1/contracts/{liar_contract}/periods"),
    );
    for p in periods.as_array().unwrap() {
        assert!(
            p["provider_receipt"].get("shards_failed").is_none(),
            "a liar does not count its lies: {p}"
        );
    }
    // The honest providers' receipts show none.
    for i in (0..PROVIDERS).filter(|&i| i != LIAR) {
        let periods = call(
            Some(&dee),
            &format!("/v1/contracts/{}/periods", contract_of(i)),
        );
        for p in periods.as_array().unwrap() {
            assert!(
                p["demander_receipt"].get("shards_failed").is_none(),
                "provider {i} is honest: {p}"
            );
        }
    }
    // And the market's rating of the liar says so, below every honest provider's.
    let audit_input = |i: usize| -> Value {
        let r = call(None, &format!("/v1/parties/{}/rating", party(i)));
        r["inputs"]
            .as_array()
            .and_then(|inputs| inputs.iter().find(|x| x["name"] == "audit_pass_rate"))
            .cloned()
            .unwrap_or_else(|| panic!("no audit input: {r}"))
    };
    let liar = audit_input(LIAR);
    assert!(
        liar["value"]
            .as_str()
            .is_some_and(|v| v.contains("shards found bad by demanders")),
        "{liar} ({found} found)"
    );
    for i in (0..PROVIDERS).filter(|&i| i != LIAR) {
        let honest = audit_input(i);
        assert!(
            liar["score"].as_u64() < honest["score"].as_u64(),
            "liar {liar} vs provider {i}: {honest}"
        );
    }

    // Its score drops, its shards are repaired onto the others, and everything reads
    // back byte for byte.
    assert!(
        liar_status()["score"].as_u64().is_some_and(|s| s < 100),
        "{}",
        liar_status()
    );
    wait_for("the liar's shards to be repaired away", TIMEOUT, || {
        gateway.admin_post(&format!(
            "/admin/v1/plans/rented-2-1/repair?limit=1000&bandwidthLimit={}",
            1u64 << 40
        ));
        let liar = liar_status();
        (liar["shards"] == 0).then_some(()).ok_or(liar.to_string())
    });
    for o in &objects {
        gateway
            .read_back("rented", o)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    drop(providers);
}

/// The node id of the provider whose data directory is `dir`.
fn node_of(dir: &Path) -> String {
    sublet_provider::identity::NodeIdentity::load_or_create(dir)
        .unwrap()
        .node_id()
        .to_string()
}
