//! A provider rented through the market that lies: every party a real process (`sublet
//! market serve` over HTTPS with a private CA, four `sublet-provider --offer` processes, one
//! of them with `--fault-swap-shards`, and a `sublet serve` gateway renting all four through
//! a market pool). The liar answers reads with another shard's bytes; it does not count
//! that on its own receipts, but the gateway's signed receipts for its contract do, the
//! market shows them in the liar's rating, its shards are repaired onto the honest
//! providers, and every object reads back byte for byte.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sublet_e2e::cluster::{TestObject, test_objects, wait_for};
use sublet_e2e::market::{MarketProcess, Offer, lending_provider, rented_gateway, signer_of};
use sublet_e2e::tls::PrivateCa;

/// Receipt periods this short end while the test watches.
const PERIOD: &str = "4s";
const PROVIDERS: usize = 4;
/// The provider that lies.
const LIAR: usize = 0;
const TIMEOUT: Duration = Duration::from_secs(60);

/// 2+1 over three of the four rented providers: a liar's shard has somewhere to go.
const POLICIES: &str = r#"apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {name: fast}
spec:
  rebuild: {gracePeriod: 1s, maxConcurrentJobs: 2}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: rented-2-1}
spec:
  redundancy: {erasure: {dataShards: 2, parityShards: 1}}
  segmentSize: 64Ki
  schedule: fast
  placement:
    spreadBy: owner
    maxPerDomain: 1
    pools: [{name: rented, minShards: 3}]
"#;

#[test]
fn a_rented_provider_serving_other_shards_bytes_shows_it_on_the_demanders_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let ca = PrivateCa::create(&root.join("ca"));
    let market = MarketProcess::start(root, &ca, PERIOD, &[]);

    let offer = Offer {
        price_per_gib_month: 3000,
        egress_price_per_gib: 1000,
    };
    let providers: Vec<_> = (0..PROVIDERS)
        .map(|i| {
            let fault: &[&str] = if i == LIAR {
                &["--fault-swap-shards"]
            } else {
                &[]
            };
            lending_provider(root, &format!("p{i}"), &market, offer, fault)
        })
        .collect();
    let party = |i: usize| signer_of(&providers[i].key()).party_id();
    market.wait_for_offers(PROVIDERS);

    let mut gateway = rented_gateway(root, &market, PROVIDERS, POLICIES, "rented-2-1");
    gateway.start();
    let dee = signer_of(&root.join("gateway").join("identity").join("identity.key"));
    let contracts = market.signed_get(Some(&dee), "/v1/contracts");
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
    let liar_node = node_of(&providers[LIAR].dir);
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
        let periods = market.signed_get(
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
    let periods = market.signed_get(
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
        let periods = market.signed_get(
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
        let r = market.get(&format!("/v1/parties/{}/rating", party(i)));
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
