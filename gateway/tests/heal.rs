//! Health and repair on an in-process cluster: providers die, the admin API and metrics show
//! the damage after the grace period, repair restores full redundancy byte for byte, a revived
//! provider's stale shards change nothing, and a corrupt shard is caught by a read and repaired.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod in_process;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use s3s::service::S3Service;
use serde_json::Value;
use sublet_gateway::datapath::codec::MasterKey;
use sublet_gateway::datapath::layout::Scheme;
use sublet_gateway::datapath::stripes::{BackendError, ShardBackend};
use sublet_gateway::meta::{MetadataStore, SqliteStore};
use sublet_gateway::node::health::RebuildPolicy;
use sublet_gateway::node::{Node, Plan};
use sublet_gateway::runtime::dev;
use sublet_gateway::upkeep::audit::{audit_round, collect_garbage};
use sublet_gateway::upkeep::repair::Repairer;
use sublet_provider::identity::NodeIdentity;
use sublet_provider::server::{self, ProviderConfig, RunningProvider};

const GRACE: Duration = Duration::from_secs(2);

async fn call(svc: &S3Service, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let (s, _, b) = in_process::call(svc, method, uri, &[], body).await;
    (s, b)
}

/// The token the admin API of these tests wants.
const ADMIN_TOKEN: &str = "heal-test-admin-token-0123";

async fn http_get_with_token(url: &str) -> (StatusCode, String) {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = http::Request::get(url)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(request).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn http_get(url: &str) -> (StatusCode, String) {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn plan_json(admin: &str) -> Value {
    let (s, body) = http_get(&format!("{admin}/admin/v1/plans/standard")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A plan named `standard`: erasure `data`+`parity`, encrypted, every shard needed for a
/// write, nothing kept in metadata.
fn erasure_plan(data: u16, parity: u16, segment_size: u64) -> Plan {
    Plan {
        name: "standard".into(),
        scheme: Scheme::Erasure { data, parity },
        encrypt: true,
        segment_size,
        write_quorum: usize::from(data + parity),
        inline_up_to: 0,
    }
}

fn data(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

/// Providers holding shards of each object, from metadata.
fn holders(meta: &dyn MetadataStore, keys: &[String]) -> HashMap<String, HashSet<String>> {
    keys.iter()
        .map(|k| {
            let v = meta.version("bkt", k, None).unwrap().unwrap();
            let nodes = v
                .layout
                .unwrap()
                .shards()
                .map(|s| s.provider.clone())
                .collect();
            (k.clone(), nodes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_providers_are_reported_repaired_and_revived_without_confusion() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(4, 2, 64 << 10);
    let policy = RebuildPolicy {
        grace_period: GRACE,
        ..RebuildPolicy::default()
    };
    let mut cluster = dev::start_cluster_with(
        tmp.path(),
        8,
        vec![plan],
        HashMap::from([("standard".to_owned(), policy)]),
    )
    .await
    .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let meta = Arc::clone(gateway.metadata());
    let svc = dev::service(Arc::clone(&gateway), None);
    let admin_addr = sublet_gateway::admin::server::spawn_admin(
        "127.0.0.1:0".parse().unwrap(),
        cluster.metrics.clone(),
        Arc::clone(&gateway),
        sublet_gateway::admin::AdminToken::new(ADMIN_TOKEN),
    )
    .await
    .unwrap();
    let admin = format!("http://{admin_addr}");
    let mut providers: Vec<Option<RunningProvider>> =
        cluster.providers.drain(..).map(Some).collect();
    let node_ids: Vec<String> = providers
        .iter()
        .map(|p| p.as_ref().unwrap().node_id.to_string())
        .collect();

    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let keys: Vec<String> = (0..12).map(|i| format!("obj-{i}")).collect();
    let mut bodies = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        let body = data(200_000 + i * 1000, i);
        let (s, b) = call(&svc, Method::PUT, &format!("/bkt/{k}"), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        bodies.insert(k.clone(), body);
    }
    let read_all = |svc: S3Service, bodies: HashMap<String, Vec<u8>>| async move {
        for (k, body) in &bodies {
            let (s, got) = call(&svc, Method::GET, &format!("/bkt/{k}"), vec![]).await;
            assert_eq!(s, StatusCode::OK, "{k}");
            assert!(got == *body, "{k} reads back byte for byte");
        }
    };

    let h = plan_json(&admin).await;
    assert_eq!(h["objects"], 12);
    // 4 segments of 6 shards per object.
    assert_eq!(h["shards"]["healthy"], 12 * 4 * 6, "{h}");
    assert_eq!(
        h["repair"],
        serde_json::json!({"due": 0, "atRisk": 0, "waiting": 0})
    );
    let (s, _) = http_get(&format!("{admin}/admin/v1/plans/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = http_get(&format!("{admin}/admin/v1/pools/default")).await;
    assert_eq!(s, StatusCode::OK);
    let pool: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pool["shards"], 12 * 4 * 6);

    // Two providers die just after answering a probe.
    sublet_gateway::runtime::probe_and_record(&cluster.probes, gateway.health(), &meta).await;
    let dead = [0usize, 1];
    let mut revive = Vec::new();
    for &n in &dead {
        let p = providers[n].take().unwrap();
        revive.push((n, p.grpc_addr, p.unix_socket.clone()));
        p.shutdown().await;
    }
    sublet_gateway::runtime::probe_and_record(&cluster.probes, gateway.health(), &meta).await;
    let before = holders(meta.as_ref(), &keys);
    let dead_ids: HashSet<&String> = dead.iter().map(|&n| &node_ids[n]).collect();
    let touched = before
        .values()
        .filter(|nodes| nodes.iter().any(|n| dead_ids.contains(n)))
        .count() as u64;
    let both = before
        .values()
        .filter(|nodes| dead_ids.iter().all(|d| nodes.contains(*d)))
        .count() as u64;
    assert!(touched > 0);

    let h = plan_json(&admin).await;
    assert_eq!(
        h["repair"]["waiting"], touched,
        "inside the grace period: {h}"
    );
    assert_eq!(h["repair"]["due"], 0);
    assert_eq!(h["objectsByHealth"]["healthy"], 12, "not lost yet: {h}");

    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
    let h = plan_json(&admin).await;
    assert_eq!(h["repair"]["due"], touched, "past the grace period: {h}");
    assert_eq!(h["repair"]["atRisk"], both);
    assert_eq!(h["repair"]["waiting"], 0);
    assert_eq!(h["objectsByHealth"]["atRisk"], both);
    assert_eq!(h["objectsByHealth"]["degraded"], touched - both);
    assert!(h["oldestQueuedSeconds"].as_u64().is_some(), "{h}");
    let (s, _) = http_get(&format!("{admin}/admin/v1/plans/standard/lost")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, lost) = http_get_with_token(&format!("{admin}/admin/v1/plans/standard/lost")).await;
    let lost: Value = serde_json::from_str(&lost).unwrap();
    assert_eq!(lost["objects"], serde_json::json!([]));
    let (_, metrics) = http_get(&format!("{admin}/metrics")).await;
    assert!(
        metrics.contains(&format!(
            "sublet_gateway_repair_queue_objects{{plan=\"standard\",state=\"due\"}} {touched}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("sublet_gateway_repair_oldest_queued_seconds{plan=\"standard\"}"));
    read_all(svc.clone(), bodies.clone()).await;

    // Repair: everything healthy again, nothing on the dead providers, same bytes.
    let repairer = Repairer::new(Arc::clone(&gateway), Some(cluster.metrics.clone()));
    let report = repairer.run_pass("standard", false, 100).await.unwrap();
    assert_eq!(report.repaired, touched, "{report:?}");
    assert_eq!(report.failed, 0);
    let h = plan_json(&admin).await;
    assert_eq!(
        h["repair"],
        serde_json::json!({"due": 0, "atRisk": 0, "waiting": 0}),
        "{h}"
    );
    assert_eq!(h["objectsByHealth"]["healthy"], 12);
    assert_eq!(h["shards"]["healthy"], 12 * 4 * 6);
    for (k, nodes) in holders(meta.as_ref(), &keys) {
        assert!(
            !nodes.iter().any(|n| dead_ids.contains(n)),
            "{k} left on a dead provider"
        );
        assert_eq!(nodes.len(), 6, "{k}: one shard per provider");
    }
    read_all(svc.clone(), bodies.clone()).await;
    let again = repairer.run_pass("standard", false, 100).await.unwrap();
    assert_eq!(again.examined, 0, "nothing left to do: {again:?}");

    // A dead provider comes back with its old shards: they are garbage, not health.
    let token = std::fs::read_to_string(tmp.path().join("cluster.token")).unwrap();
    let gateway_id = NodeIdentity::load_or_create(&tmp.path().join("gateway"))
        .unwrap()
        .node_id();
    let (n, addr, socket) = revive[0].clone();
    let mut cfg = ProviderConfig::new(tmp.path().join("providers").join(n.to_string()));
    // Where the gateway's client dials it: its socket (`sublet dev`'s default) or address.
    cfg.listen = addr;
    cfg.listen_unix = socket;
    cfg.token = Some(token.trim().to_owned());
    cfg.allowed_clients = vec![gateway_id];
    cfg.zone = format!("dev-{n}");
    providers[n] = Some(server::start(cfg).await.unwrap());
    sublet_gateway::runtime::probe_and_record(&cluster.probes, gateway.health(), &meta).await;
    let h = plan_json(&admin).await;
    assert_eq!(h["objectsByHealth"]["healthy"], 12, "{h}");
    assert_eq!(h["shards"]["healthy"], 12 * 4 * 6);
    assert!(!meta.provider_usage().unwrap().contains_key(&node_ids[n]));
    read_all(svc.clone(), bodies.clone()).await;
    assert_eq!(
        repairer
            .run_pass("standard", false, 100)
            .await
            .unwrap()
            .examined,
        0
    );

    // Garbage collection removes the revived provider's stale shards, once old enough.
    let live_dirs = |providers: &[Option<RunningProvider>]| -> Vec<std::path::PathBuf> {
        (0..providers.len())
            .filter(|&i| providers[i].is_some())
            .map(|i| tmp.path().join("providers").join(i.to_string()))
            .collect()
    };
    let referenced_live = |meta: &dyn MetadataStore, providers: &[Option<RunningProvider>]| {
        let live: HashSet<String> = (0..providers.len())
            .filter(|&i| providers[i].is_some())
            .map(|i| node_ids[i].clone())
            .collect();
        keys.iter()
            .map(|k| {
                let v = meta.version("bkt", k, None).unwrap().unwrap();
                v.layout
                    .unwrap()
                    .shards()
                    .filter(|s| live.contains(&s.provider))
                    .count()
            })
            .sum::<usize>()
    };
    let stale = shard_files(&live_dirs(&providers)) - referenced_live(meta.as_ref(), &providers);
    assert!(stale > 0, "the revived provider still holds its old shards");
    let young = collect_garbage(&gateway, None, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!((young.deleted, young.young), (0, stale as u64), "{young:?}");
    // Shards of another installation sharing the provider, and shards from before ids
    // named their installation: no collection ever takes them.
    let (_, probe) = cluster
        .probes
        .iter()
        .find(|(id, _)| {
            providers
                .iter()
                .flatten()
                .any(|p| p.node_id.to_string() == *id)
        })
        .unwrap();
    let planted = ["0123456789ab_0f0f.0.0", "legacy0123.0.1"];
    for id in planted {
        probe
            .put_shard(id, bytes::Bytes::from_static(b"not ours"))
            .await
            .unwrap();
    }
    let installation = format!("{}_", gateway.installation());
    assert_eq!(installation.len(), 13, "{installation}");
    let gc = collect_garbage(&gateway, Some(&cluster.metrics), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gc.deleted, stale as u64, "{gc:?}");
    assert_eq!(gc.foreign, planted.len() as u64, "{gc:?}");
    for id in planted {
        probe.stat_shard(id).await.unwrap();
        probe.delete_shard(id).await.unwrap();
    }
    assert_eq!(
        shard_files(&live_dirs(&providers)),
        referenced_live(meta.as_ref(), &providers)
    );
    read_all(svc.clone(), bodies.clone()).await;

    // A corrupt shard on a live provider: the read still works, and queues the shard.
    let key = &keys[3];
    let v = meta.version("bkt", key, None).unwrap().unwrap();
    let shard = v.layout.as_ref().unwrap().segments[0].shards[0].clone();
    let holder = node_ids
        .iter()
        .position(|id| *id == shard.provider)
        .unwrap();
    let file = tmp
        .path()
        .join("providers")
        .join(holder.to_string())
        .join("shards")
        .join(format!("{}.shard", shard.shard_id));
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&file, bytes).unwrap();
    let (s, got) = call(&svc, Method::GET, &format!("/bkt/{key}"), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got == bodies[key]);
    let mut due = 0;
    for _ in 0..50 {
        due = plan_json(&admin).await["repair"]["due"].as_u64().unwrap();
        if due > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(due, 1, "the corrupt shard is queued");
    let report = repairer.run_pass("standard", false, 100).await.unwrap();
    assert_eq!(
        (report.repaired, report.shards_rebuilt),
        (1, 1),
        "{report:?}"
    );
    let v2 = meta.version("bkt", key, None).unwrap().unwrap();
    assert_ne!(v2.layout.as_ref().unwrap().segments[0].shards[0], shard);
    let h = plan_json(&admin).await;
    assert_eq!(h["repair"]["due"], 0, "{h}");
    read_all(svc.clone(), bodies.clone()).await;

    // An audit catches a corrupt shard nobody read, and repair replaces it.
    let key = &keys[7];
    let v = meta.version("bkt", key, None).unwrap().unwrap();
    let shard = v.layout.as_ref().unwrap().segments[2].shards[5].clone();
    let holder = node_ids
        .iter()
        .position(|id| *id == shard.provider)
        .unwrap();
    let file = tmp
        .path()
        .join("providers")
        .join(holder.to_string())
        .join("shards")
        .join(format!("{}.shard", shard.shard_id));
    let mut bytes = std::fs::read(&file).unwrap();
    for b in bytes.iter_mut().skip(200) {
        *b ^= 0x33;
    }
    std::fs::write(&file, bytes).unwrap();
    let audit = audit_round(&gateway, Some(&cluster.metrics), 10_000)
        .await
        .unwrap();
    assert_eq!(audit.failed, 1, "{audit:?}");
    assert!(audit.passed > 100, "{audit:?}");
    assert_eq!(plan_json(&admin).await["repair"]["due"], 1);
    let (_, metrics) = http_get(&format!("{admin}/metrics")).await;
    assert!(
        metrics.contains(&format!(
            "sublet_gateway_audits_total{{provider=\"{}\",result=\"fail\"}} 1",
            shard.provider
        )),
        "{metrics}"
    );
    let report = repairer.run_pass("standard", false, 100).await.unwrap();
    assert_eq!(
        (report.repaired, report.shards_rebuilt),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(plan_json(&admin).await["repair"]["due"], 0);
    read_all(svc.clone(), bodies.clone()).await;

    // A provider dropped from the configuration is no longer probed: it counts as down from
    // now on, so its shards are repaired elsewhere once the grace period is over.
    let (dropped, _) = &cluster.probes[2];
    let fewer: Vec<_> = cluster
        .probes
        .iter()
        .filter(|(id, _)| id != dropped)
        .cloned()
        .collect();
    sublet_gateway::runtime::probe_and_record(&cluster.probes, gateway.health(), &meta).await;
    sublet_gateway::runtime::probe_and_record(&fewer, gateway.health(), &meta).await;
    let seen = meta.providers_seen().unwrap();
    assert!(seen[dropped].down_since.is_some());
    assert!(seen[&node_ids[3]].down_since.is_none());
    let h = plan_json(&admin).await;
    assert!(h["repair"]["waiting"].as_u64().unwrap() > 0, "{h}");
    assert_eq!(h["repair"]["due"], 0, "{h}");

    for p in providers.into_iter().flatten() {
        p.shutdown().await;
    }
}

/// Shard files on the providers in `dirs`.
/// A scrub reads every shard whole: it finds a corrupt shard and a missing one that no read
/// would touch (parity shards of healthy stripes), flags them, and repair replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrub_finds_corrupt_and_missing_shards_nobody_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(4, 2, 64 << 10);
    let mut cluster = dev::start_cluster_with(
        tmp.path(),
        6,
        vec![plan],
        HashMap::from([("standard".to_owned(), RebuildPolicy::default())]),
    )
    .await
    .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let meta = Arc::clone(gateway.metadata());
    let svc = dev::service(Arc::clone(&gateway), None);
    let node_ids: Vec<String> = cluster
        .providers
        .iter()
        .map(|p| p.node_id.to_string())
        .collect();
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let mut bodies = HashMap::new();
    for i in 0..4 {
        let key = format!("obj-{i}");
        let body = data(150_000 + i * 10_000, i);
        let (s, b) = call(&svc, Method::PUT, &format!("/bkt/{key}"), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        bodies.insert(key, body);
    }
    let file_of = |shard: &sublet_gateway::datapath::layout::ShardLocation| {
        let holder = node_ids
            .iter()
            .position(|id| *id == shard.provider)
            .unwrap();
        tmp.path()
            .join("providers")
            .join(holder.to_string())
            .join("shards")
            .join(format!("{}.shard", shard.shard_id))
    };
    // A parity shard of obj-1 goes bad on disk; one of obj-2 disappears.
    let v1 = meta.version("bkt", "obj-1", None).unwrap().unwrap();
    let corrupt = v1.layout.as_ref().unwrap().segments[1].shards[4].clone();
    let mut bytes = std::fs::read(file_of(&corrupt)).unwrap();
    // In the outboard the file ends with (the tree audits prove slices with): a plain
    // read does not look at it, a scrub does.
    let at = bytes.len() - 10;
    bytes[at] ^= 0x77;
    std::fs::write(file_of(&corrupt), bytes).unwrap();
    let v2 = meta.version("bkt", "obj-2", None).unwrap().unwrap();
    let gone = v2.layout.as_ref().unwrap().segments[0].shards[5].clone();
    std::fs::remove_file(file_of(&gone)).unwrap();
    let total: u64 = [&v1, &v2]
        .iter()
        .map(|v| v.layout.as_ref().unwrap().shards().count() as u64)
        .sum::<u64>()
        + ["obj-0", "obj-3"]
            .iter()
            .map(|k| {
                let v = meta.version("bkt", k, None).unwrap().unwrap();
                v.layout.unwrap().shards().count() as u64
            })
            .sum::<u64>();

    let report =
        sublet_gateway::upkeep::scrub::scrub_pass(&gateway, Some(&cluster.metrics), 0, 1000, None)
            .await
            .unwrap();
    assert_eq!(report.versions, 4, "{report:?}");
    assert_eq!((report.bad, report.unchecked), (2, 0), "{report:?}");
    assert_eq!(report.intact, total - 2, "{report:?}");
    assert_eq!(report.next, None, "{report:?}");
    // A limited pass stops where it says.
    let first = sublet_gateway::upkeep::scrub::scrub_pass(&gateway, None, 0, 1, None)
        .await
        .unwrap();
    assert_eq!(first.versions, 1);
    let rest =
        sublet_gateway::upkeep::scrub::scrub_pass(&gateway, None, first.next.unwrap(), 1000, None)
            .await
            .unwrap();
    assert_eq!(rest.versions, 3, "{rest:?}");

    let repairer = Repairer::new(Arc::clone(&gateway), None);
    let fixed = repairer.run_pass("standard", false, 100).await.unwrap();
    assert_eq!((fixed.repaired, fixed.shards_rebuilt), (2, 2), "{fixed:?}");
    let again = sublet_gateway::upkeep::scrub::scrub_pass(&gateway, None, 0, 1000, None)
        .await
        .unwrap();
    assert_eq!((again.bad, again.intact), (0, total), "{again:?}");
    for (k, body) in &bodies {
        let (s, got) = call(&svc, Method::GET, &format!("/bkt/{k}"), vec![]).await;
        assert_eq!(s, StatusCode::OK, "{k}");
        assert!(got == *body, "{k} reads back byte for byte");
    }
    let text = cluster.metrics.render();
    assert!(
        text.contains("sublet_gateway_scrubbed_shards_total"),
        "{text}"
    );
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
}

/// A plan whose redundancy changes (an edited config after a restart): its objects are
/// re-encoded under the new scheme, read back byte for byte with their ETags, and the old
/// shards are freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_plans_reencode_their_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(4, 2, 64 << 10);
    let mut cluster = dev::start_cluster_with(
        tmp.path(),
        6,
        vec![plan.clone()],
        HashMap::from([("standard".to_owned(), RebuildPolicy::default())]),
    )
    .await
    .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let meta = Arc::clone(gateway.metadata());
    let svc = dev::service(Arc::clone(&gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let mut bodies = HashMap::new();
    for i in 0..3 {
        let key = format!("obj-{i}");
        let body = data(100_000 + i * 50_000, i);
        let (s, b) = call(&svc, Method::PUT, &format!("/bkt/{key}"), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        bodies.insert(key, body);
    }
    let etags: HashMap<String, String> = bodies
        .keys()
        .map(|k| {
            (
                k.clone(),
                meta.version("bkt", k, None).unwrap().unwrap().etag,
            )
        })
        .collect();
    let nothing = sublet_gateway::upkeep::reencode::reencode_pass(&gateway, "standard", 100)
        .await
        .unwrap();
    assert_eq!(nothing.outdated, 0, "{nothing:?}");

    // The same store and providers, the plan now EC 2+1 and unencrypted.
    let ids: Vec<String> = cluster.probes.iter().map(|(id, _)| id.clone()).collect();
    let master =
        sublet_gateway::datapath::codec::MasterKey::load_or_create(&cluster.master_key_path)
            .unwrap();
    let changed = Plan {
        scheme: Scheme::Erasure { data: 2, parity: 1 },
        encrypt: false,
        write_quorum: 3,
        inline_up_to: 0,
        ..plan
    };
    let after = Arc::new(
        sublet_gateway::node::Node::new(
            Arc::clone(&meta),
            Arc::new(master),
            vec![changed.clone()],
            ids.iter().map(|id| gateway.backend(id).unwrap()).collect(),
        )
        .unwrap()
        .with_placement(
            sublet_gateway::datapath::placement::Topology::flat(ids.iter().map(String::as_str)),
            Arc::clone(gateway.health()),
        )
        .unwrap(),
    );
    let first = sublet_gateway::upkeep::reencode::reencode_pass(&after, "standard", 2)
        .await
        .unwrap();
    assert_eq!(
        (first.outdated, first.reencoded, first.failed),
        (3, 2, 0),
        "{first:?}"
    );
    let rest = sublet_gateway::upkeep::reencode::reencode_pass(&after, "standard", 100)
        .await
        .unwrap();
    assert_eq!((rest.outdated, rest.reencoded), (1, 1), "{rest:?}");
    let svc = dev::service(Arc::clone(&after), None);
    let mut segments = 0;
    for (k, body) in &bodies {
        let v = meta.version("bkt", k, None).unwrap().unwrap();
        let layout = v.layout.as_ref().unwrap();
        assert!(
            sublet_gateway::node::rules::conforms(layout, &changed),
            "{k}"
        );
        assert_eq!(v.etag, etags[k], "{k} keeps its ETag");
        segments += layout.segments.len();
        let (s, got) = call(&svc, Method::GET, &format!("/bkt/{k}"), vec![]).await;
        assert_eq!(s, StatusCode::OK, "{k}");
        assert!(got == *body, "{k} reads back byte for byte");
    }
    // The providers hold the new shards, and the old ones only while reads that started
    // before the switch may still use them (freed by the next lifecycle pass after
    // RETIRE_DELAY_MS; garbage collection keeps them until then).
    let dirs: Vec<_> = (0..6)
        .map(|n| tmp.path().join("providers").join(n.to_string()))
        .collect();
    let retired = after.retired_shards().len();
    assert_eq!(retired, segments * 6, "every old shard is retired");
    assert_eq!(shard_files(&dirs), segments * 3 + retired);
    let again = sublet_gateway::upkeep::reencode::reencode_pass(&after, "standard", 100)
        .await
        .unwrap();
    assert_eq!(again.outdated, 0, "{again:?}");
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
}

/// A pool marked `drain: true`: new objects stay off it, the drain pass moves every shard
/// it holds to the other pool (old copies retired, never deleted before the switch), the
/// pool reports drained, and everything reads back with its providers gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_pool_gets_no_new_shards_and_drains_to_zero() {
    use sublet_gateway::datapath::placement::{Site, Topology};
    use sublet_gateway::upkeep::drain::{DrainState, drain_pass, drain_status};
    use sublet_gateway::upkeep::repair::pool_usage;
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(2, 1, 64 << 10);
    let mut cluster = dev::start_cluster_with(
        tmp.path(),
        6,
        vec![plan.clone()],
        HashMap::from([("standard".to_owned(), RebuildPolicy::default())]),
    )
    .await
    .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let meta = Arc::clone(gateway.metadata());
    let ids: Vec<String> = cluster.probes.iter().map(|(id, _)| id.clone()).collect();
    let old: HashSet<&str> = ids[..2].iter().map(String::as_str).collect();
    let topology = Topology {
        sites: ids
            .iter()
            .map(|id| Site {
                node_id: id.clone(),
                pool: if old.contains(id.as_str()) {
                    "old"
                } else {
                    "home"
                }
                .into(),
                zone: id.clone(),
                owner: "me".into(),
            })
            .collect(),
        rules: HashMap::new(),
        draining: Default::default(),
    };
    let master = MasterKey::load_or_create(&cluster.master_key_path).unwrap();
    let master = Arc::new(master);
    let node = |topology: Topology| {
        Arc::new(
            Node::new(
                Arc::clone(&meta),
                Arc::clone(&master),
                vec![plan.clone()],
                ids.iter().map(|id| gateway.backend(id).unwrap()).collect(),
            )
            .unwrap()
            .with_placement(topology, Arc::clone(gateway.health()))
            .unwrap()
            .with_rebuild(HashMap::from([(
                "standard".to_owned(),
                RebuildPolicy::default(),
            )])),
        )
    };
    let before_drain = node(topology.clone());
    let svc = dev::service(Arc::clone(&before_drain), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let mut bodies = HashMap::new();
    for i in 0..8 {
        let key = format!("obj-{i}");
        let body = data(150_000 + i * 7_000, i);
        let (s, b) = call(&svc, Method::PUT, &format!("/bkt/{key}"), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        bodies.insert(key, body);
    }
    let (held, _) = pool_usage(&before_drain).unwrap()["old"];
    assert!(held > 0, "some shards start in the old pool");
    assert_eq!(drain_status(&before_drain, "old", held).unwrap(), None);

    let mut draining = topology;
    draining.draining.insert("old".into());
    let drained = node(draining);
    let status = drain_status(&drained, "old", held).unwrap().unwrap();
    assert_eq!(status.state, DrainState::Draining, "{status:?}");
    assert_eq!(status.plans["standard"], held);
    // New objects stay off the draining pool.
    let svc = dev::service(Arc::clone(&drained), None);
    for i in 8..12 {
        let key = format!("obj-{i}");
        let body = data(150_000 + i * 7_000, i);
        let (s, b) = call(&svc, Method::PUT, &format!("/bkt/{key}"), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        bodies.insert(key, body);
    }
    assert_eq!(pool_usage(&drained).unwrap()["old"].0, held);

    let repairer = Repairer::new(Arc::clone(&drained), None);
    let first = drain_pass(&repairer, "old", 3).await.unwrap();
    assert_eq!((first.examined, first.failed), (3, 0), "{first:?}");
    let rest = drain_pass(&repairer, "old", 100).await.unwrap();
    assert_eq!((rest.failed, rest.blocked), (0, 0), "{rest:?}");
    assert_eq!(first.moved_shards + rest.moved_shards, held);
    assert_eq!(pool_usage(&drained).unwrap()["old"], (0, 0));
    let status = drain_status(&drained, "old", 0).unwrap().unwrap();
    assert_eq!(status.state, DrainState::Drained, "{status:?}");
    assert!(status.plans.is_empty(), "{status:?}");
    // Nothing is forgotten before the switch: the old copies are retired, not deleted.
    assert_eq!(drained.retired_shards().len() as u64, held);
    // A drained pool is a no-op, and an undrained one refuses a pass.
    let again = drain_pass(&repairer, "old", 100).await.unwrap();
    assert_eq!(again.examined, 0, "{again:?}");
    let err = drain_pass(&repairer, "home", 100).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool home is not draining; set drain: true on it first"
    );
    // The old pool's providers go: every object still reads back byte for byte.
    let mut kept = Vec::new();
    for (n, p) in cluster.providers.drain(..).enumerate() {
        if old.contains(cluster.probes[n].0.as_str()) {
            p.shutdown().await;
        } else {
            kept.push(p);
        }
    }
    for (k, body) in &bodies {
        let (s, got) = call(&svc, Method::GET, &format!("/bkt/{k}"), vec![]).await;
        assert_eq!(s, StatusCode::OK, "{k}");
        assert!(got == *body, "{k} reads back byte for byte");
    }
    for p in kept {
        p.shutdown().await;
    }
}

/// A plan's placement rules change (a pool dropped from it): the shards in that pool are
/// flagged by the re-encode pass and repair moves them to the pools the plan names now.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_move_off_a_pool_a_plan_no_longer_names() {
    use sublet_gateway::datapath::placement::{PlacementRule, PoolRule, Site, Topology};
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(2, 1, 64 << 10);
    let mut cluster = dev::start_cluster_with(
        tmp.path(),
        6,
        vec![plan.clone()],
        HashMap::from([("standard".to_owned(), RebuildPolicy::default())]),
    )
    .await
    .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let meta = Arc::clone(gateway.metadata());
    let svc = dev::service(Arc::clone(&gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let mut bodies = HashMap::new();
    for i in 0..6 {
        let key = format!("obj-{i}");
        let body = data(150_000 + i * 7_000, i);
        let (s, b) = call(&svc, Method::PUT, &format!("/bkt/{key}"), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        bodies.insert(key, body);
    }
    // The same providers split into two pools; the plan keeps only "home".
    let ids: Vec<String> = cluster.probes.iter().map(|(id, _)| id.clone()).collect();
    let home: HashSet<&str> = ids[..3].iter().map(String::as_str).collect();
    let topology = Topology {
        sites: ids
            .iter()
            .map(|id| Site {
                node_id: id.clone(),
                pool: if home.contains(id.as_str()) {
                    "home"
                } else {
                    "rented"
                }
                .into(),
                zone: id.clone(),
                owner: "me".into(),
            })
            .collect(),
        rules: HashMap::from([(
            "standard".to_owned(),
            PlacementRule {
                pools: vec![PoolRule {
                    name: "home".into(),
                    min_shards: 0,
                    max_shards: None,
                }],
                ..PlacementRule::any()
            },
        )]),
        draining: Default::default(),
    };
    let on_rented = |meta: &dyn MetadataStore| -> usize {
        bodies
            .keys()
            .map(|k| {
                let v = meta.version("bkt", k, None).unwrap().unwrap();
                v.layout
                    .unwrap()
                    .shards()
                    .filter(|s| !home.contains(s.provider.as_str()))
                    .count()
            })
            .sum()
    };
    let before = on_rented(meta.as_ref());
    assert!(before > 0, "some shards start in the rented pool");
    let master =
        sublet_gateway::datapath::codec::MasterKey::load_or_create(&cluster.master_key_path)
            .unwrap();
    let after = Arc::new(
        sublet_gateway::node::Node::new(
            Arc::clone(&meta),
            Arc::new(master),
            vec![plan],
            ids.iter().map(|id| gateway.backend(id).unwrap()).collect(),
        )
        .unwrap()
        .with_placement(topology, Arc::clone(gateway.health()))
        .unwrap()
        .with_rebuild(HashMap::from([(
            "standard".to_owned(),
            RebuildPolicy::default(),
        )])),
    );
    let pass = sublet_gateway::upkeep::reencode::reencode_pass(&after, "standard", 100)
        .await
        .unwrap();
    assert_eq!(
        (pass.outdated, pass.misplaced, pass.moved, pass.failed),
        (0, before as u64, before as u64, 0),
        "{pass:?}"
    );
    assert_eq!(on_rented(meta.as_ref()), 0);
    // Moving is not damage: nothing was ever counted unhealthy or queued.
    let queue = Repairer::new(Arc::clone(&after), None)
        .run_pass("standard", false, 100)
        .await
        .unwrap();
    assert_eq!(queue.examined, 0, "{queue:?}");
    // The old copies stay on the rented providers, retired, only while reads that started
    // before the switch may still stream them (freed after RETIRE_DELAY_MS); the metadata
    // names none of them.
    let rented_dirs: Vec<_> = (0..6)
        .filter(|&n| !home.contains(cluster.probes[n].0.as_str()))
        .map(|n| tmp.path().join("providers").join(n.to_string()))
        .collect();
    assert_eq!(
        after.retired_shards().len(),
        before,
        "every moved shard is retired"
    );
    assert_eq!(shard_files(&rented_dirs), before);
    let again = sublet_gateway::upkeep::reencode::reencode_pass(&after, "standard", 100)
        .await
        .unwrap();
    assert_eq!(again.misplaced, 0, "{again:?}");
    let svc = dev::service(Arc::clone(&after), None);
    for (k, body) in &bodies {
        let (s, got) = call(&svc, Method::GET, &format!("/bkt/{k}"), vec![]).await;
        assert_eq!(s, StatusCode::OK, "{k}");
        assert!(got == *body, "{k} reads back byte for byte");
    }
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
}

fn shard_files(dirs: &[std::path::PathBuf]) -> usize {
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d.join("shards")).ok())
        .flat_map(|rd| rd.filter_map(Result::ok))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".shard"))
        .count()
}

fn tag(xml: &[u8], name: &str) -> String {
    let xml = String::from_utf8_lossy(xml);
    let open = format!("<{name}>");
    let start = xml.find(&open).unwrap() + open.len();
    let end = xml[start..].find(&format!("</{name}>")).unwrap();
    xml[start..start + end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_repairers_place_each_shard_once_for_multipart_and_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let plans = vec![
        Plan {
            name: "standard".into(),
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encrypt: true,
            segment_size: 1 << 20,
            write_quorum: 6,
            inline_up_to: 0,
        },
        Plan {
            name: "replicated".into(),
            scheme: Scheme::Replicas { copies: 3 },
            encrypt: true,
            segment_size: 256 << 10,
            write_quorum: 3,
            inline_up_to: 0,
        },
    ];
    let policy = RebuildPolicy {
        grace_period: Duration::ZERO,
        ..RebuildPolicy::default()
    };
    let rebuild = HashMap::from([
        ("standard".to_owned(), policy.clone()),
        ("replicated".to_owned(), policy),
    ]);
    let mut cluster = dev::start_cluster_with(tmp.path(), 7, plans, rebuild)
        .await
        .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let meta = Arc::clone(gateway.metadata());
    let svc = dev::service(Arc::clone(&gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );

    let mut bodies = HashMap::new();
    for i in 0..4 {
        let key = format!("copies-{i}");
        let body = data(600_000 + i, i);
        let (s, _, b) = in_process::call(
            &svc,
            Method::PUT,
            &format!("/bkt/{key}"),
            &[("x-amz-storage-class", "replicated")],
            body.clone(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        bodies.insert(key, body);
    }
    let (s, _, b) = in_process::call(&svc, Method::POST, "/bkt/big?uploads", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let id = tag(&b, "UploadId");
    let parts = [data(5 << 20, 1), data(1_500_000, 2)];
    let mut etags = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let (s, h, _) = in_process::call(
            &svc,
            Method::PUT,
            &format!("/bkt/big?partNumber={}&uploadId={id}", n + 1),
            &[],
            part.clone(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        etags.push(h["etag"].to_str().unwrap().to_owned());
    }
    let xml = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part>\
         <Part><PartNumber>2</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
        etags[0], etags[1]
    );
    let (s, _, b) = in_process::call(
        &svc,
        Method::POST,
        &format!("/bkt/big?uploadId={id}"),
        &[],
        xml.into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    bodies.insert("big".to_owned(), parts.concat());

    // The provider holding most shards dies; with no grace its shards are lost at once.
    let usage = meta.provider_usage().unwrap();
    let victim = (0..7)
        .max_by_key(|&n| {
            // A provider placement happened to give nothing is not in the usage map.
            usage
                .get(&cluster.providers[n].node_id.to_string())
                .map_or(0, |u| u.0)
        })
        .unwrap();
    let dead = cluster.providers.remove(victim);
    let dead_id = dead.node_id.to_string();
    dead.shutdown().await;
    sublet_gateway::runtime::probe_and_record(&cluster.probes, gateway.health(), &meta).await;
    let live_dirs: Vec<_> = (0..7)
        .filter(|&n| n != victim)
        .map(|n| tmp.path().join("providers").join(n.to_string()))
        .collect();

    // Two repairers at once over the same metadata, as a standalone `sublet repair` beside
    // a running gateway would: a second gateway object shares nothing in memory.
    let ids: Vec<String> = cluster.probes.iter().map(|(id, _)| id.clone()).collect();
    let master =
        sublet_gateway::datapath::codec::MasterKey::load_or_create(&cluster.master_key_path)
            .unwrap();
    let other = sublet_gateway::node::Node::new(
        Arc::clone(&meta),
        Arc::new(master),
        gateway.plans().to_vec(),
        ids.iter().map(|id| gateway.backend(id).unwrap()).collect(),
    )
    .unwrap()
    .with_placement(
        sublet_gateway::datapath::placement::Topology::flat(ids.iter().map(String::as_str)),
        Arc::clone(gateway.health()),
    )
    .unwrap()
    .with_rebuild(HashMap::from([
        ("standard".to_owned(), gateway.rebuild_policy("standard")),
        (
            "replicated".to_owned(),
            gateway.rebuild_policy("replicated"),
        ),
    ]));
    let a = Repairer::new(Arc::clone(&gateway), None);
    let b = Repairer::new(Arc::new(other), None);
    let mut conflicts = 0;
    for plan in ["standard", "replicated"] {
        let (ra, rb) = tokio::join!(a.run_pass(plan, false, 100), b.run_pass(plan, false, 100));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.failed + rb.failed, 0, "{ra:?} {rb:?}");
        conflicts += ra.conflicts + rb.conflicts;
        assert!(ra.repaired + rb.repaired > 0, "{plan}: {ra:?} {rb:?}");
        let left = a.run_pass(plan, false, 100).await.unwrap();
        assert_eq!(left.examined, 0, "{plan}: all repaired: {left:?}");
    }
    // Whether the two passes collided depends on scheduling; what must hold either way is
    // checked below.
    if conflicts == 0 {
        eprintln!("note: the repairers did not collide this run");
    }
    // No version references the dead provider, and the live providers hold exactly the
    // referenced shards: a losing repairer removed what it wrote.
    let mut referenced = 0;
    for key in bodies.keys() {
        let v = meta.version("bkt", key, None).unwrap().unwrap();
        for shard in v.layout.unwrap().shards() {
            assert_ne!(shard.provider, dead_id, "{key}");
            referenced += 1;
        }
    }
    assert_eq!(shard_files(&live_dirs), referenced);
    for (k, body) in &bodies {
        let (s, got) = call(&svc, Method::GET, &format!("/bkt/{k}"), vec![]).await;
        assert_eq!(s, StatusCode::OK, "{k}");
        assert!(got == *body, "{k} reads back byte for byte");
    }
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
}

/// Repair throughput on loopback: `cargo nextest run --release -p sublet-gateway --test heal
/// --run-ignored only`. Prints MB/s of rebuilt shards after losing one provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark"]
async fn repair_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(4, 2, 16 << 20);
    let policy = RebuildPolicy {
        grace_period: Duration::ZERO,
        max_concurrent: 4,
        ..RebuildPolicy::default()
    };
    let mut cluster = dev::start_cluster_with(
        tmp.path(),
        8,
        vec![plan],
        HashMap::from([("standard".to_owned(), policy)]),
    )
    .await
    .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let svc = dev::service(Arc::clone(&gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let body = data(32 << 20, 1);
    for i in 0..16 {
        let (s, _) = call(&svc, Method::PUT, &format!("/bkt/o{i}"), body.clone()).await;
        assert_eq!(s, StatusCode::OK);
    }
    let dead = cluster.providers.remove(0);
    dead.shutdown().await;
    sublet_gateway::runtime::probe_and_record(
        &cluster.probes,
        gateway.health(),
        gateway.metadata(),
    )
    .await;
    let started = std::time::Instant::now();
    let report = Repairer::new(Arc::clone(&gateway), None)
        .run_pass("standard", false, 1000)
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "repaired {} objects, {} shards, {:.1} MiB in {secs:.2} s: {:.1} MiB/s of rebuilt shards",
        report.repaired,
        report.shards_rebuilt,
        report.bytes_written as f64 / f64::from(1 << 20),
        report.bytes_written as f64 / f64::from(1 << 20) / secs
    );
    assert_eq!(report.failed, 0);
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
}

/// A provider that forges its audit answers while it keeps every shard intact (it cheats on
/// proofs of storage; reads from it stay right): audits catch it, its score drops, new
/// objects are placed elsewhere, and it regains its standing once it answers honestly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_forging_audit_answers_is_caught_and_regains_standing_when_honest() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(2, 1, 64 << 10);
    let cluster = dev::start_cluster(tmp.path(), 5, vec![plan]).await.unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let meta = Arc::clone(gateway.metadata());
    let svc = dev::service(Arc::clone(&gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let put_all = |names: Vec<String>| {
        let svc = &svc;
        async move {
            for (n, key) in names.iter().enumerate() {
                let (s, b) = call(svc, Method::PUT, &format!("/bkt/{key}"), data(100_000, n)).await;
                assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
            }
            names
        }
    };
    let first = put_all((0..10).map(|i| format!("first-{i}")).collect()).await;
    let usage = meta.provider_usage().unwrap();
    let liar = (0..5)
        .max_by_key(|&n| {
            // A provider placement happened to give nothing is not in the usage map.
            usage
                .get(&cluster.providers[n].node_id.to_string())
                .map_or(0, |u| u.0)
        })
        .unwrap();
    let liar_id = cluster.providers[liar].node_id.to_string();
    let liar_shards = usage[&liar_id].0;
    cluster.providers[liar].forge_audits(true);

    // Its data is intact: every object reads back whole.
    for (n, key) in first.iter().enumerate() {
        let (s, body) = call(&svc, Method::GET, &format!("/bkt/{key}"), vec![]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body == data(100_000, n), "{key}");
    }
    // A round of a few samples per provider (the default schedule takes 64 of thousands):
    // every one of its answers fails, every other provider's passes.
    let samples = 3;
    assert!(liar_shards >= 2 * samples as u64);
    // Placement may leave a provider with fewer shards than samples.
    let honest_samples = || -> u64 {
        meta.provider_usage()
            .unwrap()
            .iter()
            .filter(|(node, _)| **node != liar_id)
            .map(|(_, u)| u.0.min(samples as u64))
            .sum()
    };
    let report = audit_round(&gateway, Some(&cluster.metrics), samples)
        .await
        .unwrap();
    assert_eq!(report.failed, samples as u64, "{report:?}");
    assert_eq!(report.passed, honest_samples(), "{report:?}");

    let health = gateway.health();
    assert_eq!(health.score(&liar_id), Some(0));
    for p in cluster
        .providers
        .iter()
        .filter(|p| p.node_id.to_string() != liar_id)
    {
        assert_eq!(health.score(&p.node_id.to_string()), Some(100));
    }
    assert!(!health.healthy(&liar_id), "a forger stays placeable");
    let metrics = cluster.metrics.render();
    assert!(
        metrics.contains(&format!(
            "sublet_gateway_provider_score{{provider=\"{liar_id}\"}} 0"
        )),
        "{metrics}"
    );

    // New objects go elsewhere.
    let second = put_all((0..10).map(|i| format!("second-{i}")).collect()).await;
    for (key, nodes) in holders(meta.as_ref(), &second) {
        assert!(!nodes.contains(&liar_id), "{key} was placed on the forger");
    }

    // Honest again: its audits pass, its score climbs and it gets new shards again.
    cluster.providers[liar].forge_audits(false);
    let report = audit_round(&gateway, Some(&cluster.metrics), samples)
        .await
        .unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(
        report.passed,
        honest_samples() + samples as u64,
        "{report:?}"
    );
    assert!(health.healthy(&liar_id));
    assert_eq!(health.score(&liar_id), Some(50));
    let third = put_all((0..20).map(|i| format!("third-{i}")).collect()).await;
    assert!(
        holders(meta.as_ref(), &third)
            .values()
            .any(|nodes| nodes.contains(&liar_id)),
        "the provider got no shard after passing its audits again"
    );
    for p in cluster.providers {
        p.shutdown().await;
    }
}

/// Shards scrubs read so far, from the gateway's metrics.
fn scrubbed_shards(metrics: &sublet_gateway::metrics::Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("sublet_gateway_scrubbed_shards_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A scrub cycle keeps its position: a loop started again (a restarted gateway) goes on after
/// the last batch it finished, and reads nothing of a finished cycle before the interval is
/// up; without a kept position a new cycle reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_scrub_goes_on_where_it_stopped() {
    use sublet_gateway::upkeep::scrub::{ScrubPolicy, ScrubPosition, scrub_pass, spawn_loop};
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(2, 1, 64 << 10);
    let cluster = dev::start_cluster(&tmp.path().join("dev"), 3, vec![plan])
        .await
        .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let svc = dev::service(Arc::clone(&gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    for i in 0..5 {
        let (s, _) = call(&svc, Method::PUT, &format!("/bkt/o{i}"), data(50_000, i)).await;
        assert_eq!(s, StatusCode::OK);
    }
    let position = tmp.path().join("scrub.json");
    let policy = ScrubPolicy {
        interval: Duration::from_secs(3600),
        bandwidth_limit: None,
    };
    let run = |expected: u64| {
        let (gateway, metrics, policy, position) = (
            Arc::clone(&gateway),
            cluster.metrics.clone(),
            policy.clone(),
            position.clone(),
        );
        async move {
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let task = spawn_loop(gateway, Some(metrics.clone()), policy, Some(position), stop);
            let started = std::time::Instant::now();
            while scrubbed_shards(&metrics) < expected {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{} of {expected} shards scrubbed",
                    scrubbed_shards(&metrics)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Time to read more than it should.
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop_tx.send(true).unwrap();
            task.await.unwrap();
        }
    };

    // A cycle stopped after its first version goes on with the other four (3 shards each).
    let first = scrub_pass(&gateway, None, 0, 1, None).await.unwrap();
    assert_eq!(first.versions, 1);
    let kept = ScrubPosition {
        cycle_started: sublet_gateway::node::health::now_ms(),
        after: first.next,
    };
    std::fs::write(&position, serde_json::to_vec(&kept).unwrap()).unwrap();
    run(4 * 3).await;
    assert_eq!(scrubbed_shards(&cluster.metrics), 4 * 3);
    let done = ScrubPosition::load(&position).unwrap();
    assert_eq!(done.after, None, "the cycle is done");
    assert_eq!(done.cycle_started, kept.cycle_started);

    // Started again within the interval: nothing is read.
    run(0).await;
    assert_eq!(scrubbed_shards(&cluster.metrics), 4 * 3);

    // Without a kept position a new cycle reads all five versions.
    std::fs::remove_file(&position).unwrap();
    run(4 * 3 + 5 * 3).await;
    assert_eq!(scrubbed_shards(&cluster.metrics), 4 * 3 + 5 * 3);
    for p in cluster.providers {
        p.shutdown().await;
    }
}

/// CPU seconds (user + system) this process used so far, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Bytes this process read through read(2) and friends, files and sockets alike.
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// Bytes the providers sent in audit answers (the slice and its proof), from their metrics.
fn audit_bytes_sent(providers: &[RunningProvider]) -> u64 {
    providers
        .iter()
        .flat_map(|p| {
            p.metrics
                .render()
                .lines()
                .filter(|l| l.starts_with("sublet_provider_bytes_total{method=\"Audit\"}"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum::<f64>() as u64
}

/// What an audit cycle under the default schedule (64 samples per provider every 6 h) costs:
/// bytes read, time and CPU per audited shard and per cycle, on the standard plan (4+2, 16 MiB
/// segments: 4 MiB shards). A measurement, not a check; in release:
/// `cargo nextest run --release -p sublet-gateway --test heal --run-ignored only audit_cycle_cost --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release with --no-capture"]
async fn audit_cycle_cost() {
    const PROVIDERS: usize = 6;
    const OBJECTS: usize = 70;
    const CYCLES: usize = 5;
    let tmp = tempfile::tempdir().unwrap();
    let cluster = dev::start_cluster(tmp.path(), PROVIDERS, vec![Plan::standard()])
        .await
        .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let svc = dev::service(Arc::clone(&gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    // 16 MiB objects: one whole segment each, six shards of 4 MiB.
    for n in 0..OBJECTS {
        let (s, _) = call(&svc, Method::PUT, &format!("/bkt/o{n}"), data(16 << 20, n)).await;
        assert_eq!(s, StatusCode::OK);
    }
    let samples = sublet_gateway::upkeep::audit::AuditPolicy::default().samples_per_provider;
    let (sent0, read0, cpu0, start) = (
        audit_bytes_sent(&cluster.providers),
        bytes_read(),
        cpu_seconds(),
        std::time::Instant::now(),
    );
    let mut audited = 0;
    for _ in 0..CYCLES {
        let report = audit_round(&gateway, None, samples).await.unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
        audited += report.passed;
    }
    let wall = start.elapsed().as_secs_f64();
    let (sent, read, cpu) = (
        audit_bytes_sent(&cluster.providers) - sent0,
        bytes_read() - read0,
        cpu_seconds() - cpu0,
    );
    assert_eq!(audited, (CYCLES * PROVIDERS * samples) as u64);
    let per = audited as f64;
    let cycle = (PROVIDERS * samples) as f64 / per;
    println!(
        "audit cost: {CYCLES} cycles of {samples} samples x {PROVIDERS} providers ({audited} audits \
         of 4 MiB shards, {OBJECTS} objects)"
    );
    println!(
        "  per audited shard: {:.0} bytes answered (slice + proof), {:.0} bytes read by the \
         process, of which about {:.0} from the shard file (the rest is the answer on the \
         gateway's socket), {:.3} ms wall, {:.3} ms CPU (gateway and provider together)",
        sent as f64 / per,
        read as f64 / per,
        read.saturating_sub(sent) as f64 / per,
        wall * 1000.0 / per,
        cpu * 1000.0 / per
    );
    println!(
        "  per cycle (all {PROVIDERS} providers): {:.0} KiB answered, {:.0} KiB read, {:.1} ms \
         wall, {:.1} ms CPU; per provider per cycle: {:.0} KiB answered; per provider per day \
         at 4 cycles: {:.1} MiB",
        sent as f64 * cycle / 1024.0,
        read as f64 * cycle / 1024.0,
        wall * 1000.0 * cycle,
        cpu * 1000.0 * cycle,
        sent as f64 * cycle / PROVIDERS as f64 / 1024.0,
        sent as f64 * cycle / PROVIDERS as f64 * 4.0 / (1 << 20) as f64,
    );
    for p in cluster.providers {
        p.shutdown().await;
    }
}

/// How [`Liar`] lies about a write.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Stores the bytes it was sent and answers another hash.
    ForgedHash,
    /// Keeps one junk blob per length and answers the junk's hash (the cheap way to be paid
    /// for storing nothing).
    JunkWithItsHash,
}

/// A real provider behind a dishonest front: every write it acknowledges is a lie.
struct Liar {
    inner: Arc<dyn ShardBackend>,
    lie: Lie,
}

#[async_trait::async_trait]
impl ShardBackend for Liar {
    fn node_id(&self) -> &str {
        self.inner.node_id()
    }
    async fn put(&self, id: &str, data: Bytes, hash: &[u8; 32]) -> Result<[u8; 32], BackendError> {
        match self.lie {
            Lie::ForgedHash => self.inner.put(id, data, hash).await.map(|_| [7; 32]),
            Lie::JunkWithItsHash => {
                let junk = Bytes::from(vec![0x5a; data.len()]);
                let junk_hash = *blake3::hash(&junk).as_bytes();
                self.inner.put(id, junk, &junk_hash).await
            }
        }
    }
    async fn get(&self, id: &str) -> Result<Bytes, BackendError> {
        self.inner.get(id).await
    }
    async fn delete(&self, id: &str) -> Result<(), BackendError> {
        self.inner.delete(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_acknowledging_another_hash_holds_nothing_the_gateway_records() {
    let tmp = tempfile::tempdir().unwrap();
    // 4+2 on six providers: every segment puts one shard on each, the liar included; a
    // quorum of 5 lets writes commit without it.
    let plan = Plan {
        write_quorum: 5,
        ..erasure_plan(4, 2, 64 << 10)
    };
    let cluster = dev::start_cluster(tmp.path(), 6, vec![plan.clone()])
        .await
        .unwrap();
    let ids: Vec<String> = cluster
        .providers
        .iter()
        .map(|p| p.node_id.to_string())
        .collect();
    let liar_id = ids[3].clone();
    for lie in [Lie::ForgedHash, Lie::JunkWithItsHash] {
        let backends: Vec<Arc<dyn ShardBackend>> = ids
            .iter()
            .map(|id| {
                let real = cluster.gateway.backend(id).unwrap();
                if *id == liar_id {
                    Arc::new(Liar { inner: real, lie }) as Arc<dyn ShardBackend>
                } else {
                    real
                }
            })
            .collect();
        let master = MasterKey::load_or_create(&cluster.master_key_path).unwrap();
        let meta: Arc<dyn MetadataStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let node = Arc::new(
            Node::new(
                Arc::clone(&meta),
                Arc::new(master),
                vec![plan.clone()],
                backends,
            )
            .unwrap(),
        );
        let svc = dev::service(Arc::clone(&node), None);
        assert_eq!(
            call(&svc, Method::PUT, "/bkt", vec![]).await.0,
            StatusCode::OK
        );
        let mut bodies = HashMap::new();
        // A PUT.
        let body = data(200_000, 1);
        let (s, b) = call(&svc, Method::PUT, "/bkt/put", body.clone()).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "{lie:?}: {}",
            String::from_utf8_lossy(&b)
        );
        bodies.insert("put".to_owned(), body);
        // A copy.
        let (s, _, b) = in_process::call(
            &svc,
            Method::PUT,
            "/bkt/copy",
            &[("x-amz-copy-source", "/bkt/put")],
            vec![],
        )
        .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "{lie:?}: {}",
            String::from_utf8_lossy(&b)
        );
        bodies.insert("copy".to_owned(), bodies["put"].clone());
        // A multipart upload.
        let (s, _, b) = in_process::call(&svc, Method::POST, "/bkt/mp?uploads", &[], vec![]).await;
        assert_eq!(s, StatusCode::OK, "{lie:?}");
        let upload = tag(&b, "UploadId");
        let part = data(150_000, 2);
        let (s, h, b) = in_process::call(
            &svc,
            Method::PUT,
            &format!("/bkt/mp?partNumber=1&uploadId={upload}"),
            &[],
            part.clone(),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "{lie:?}: {}",
            String::from_utf8_lossy(&b)
        );
        let xml = format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
            h["etag"].to_str().unwrap()
        );
        let (s, _, b) = in_process::call(
            &svc,
            Method::POST,
            &format!("/bkt/mp?uploadId={upload}"),
            &[],
            xml.into_bytes(),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "{lie:?}: {}",
            String::from_utf8_lossy(&b)
        );
        bodies.insert("mp".to_owned(), part);

        let keys: Vec<String> = bodies.keys().cloned().collect();
        let honest: HashSet<String> = ids.iter().filter(|&id| *id != liar_id).cloned().collect();
        for (key, mut nodes) in holders(meta.as_ref(), &keys) {
            assert!(
                !nodes.contains(&liar_id),
                "{lie:?}: {key} records a shard on the provider that lied about it"
            );
            assert!(
                nodes.remove(""),
                "{lie:?}: {key}: the liar's shards are missing"
            );
            assert_eq!(nodes, honest, "{lie:?}: {key}");
        }
        for (key, body) in &bodies {
            let (s, got) = call(&svc, Method::GET, &format!("/bkt/{key}"), vec![]).await;
            assert_eq!(s, StatusCode::OK, "{lie:?}: {key}");
            assert!(got == *body, "{lie:?}: {key} reads back byte for byte");
        }
    }
}

/// SSE-C headers for the 32-byte key of all `byte`s.
fn customer_key_headers(byte: u8) -> Vec<(&'static str, String)> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use md5::Digest;
    let raw = [byte; 32];
    vec![
        (
            "x-amz-server-side-encryption-customer-algorithm",
            "AES256".to_owned(),
        ),
        (
            "x-amz-server-side-encryption-customer-key",
            STANDARD.encode(raw),
        ),
        (
            "x-amz-server-side-encryption-customer-key-md5",
            STANDARD.encode(md5::Md5::digest(raw)),
        ),
    ]
}

async fn call_keyed(
    svc: &S3Service,
    method: Method,
    uri: &str,
    key: Option<u8>,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let headers = key.map(customer_key_headers).unwrap_or_default();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, _, b) = in_process::call(svc, method, uri, &headers, body).await;
    (s, b)
}

/// An object encrypted with a customer's key (SSE-C) is kept alive without the key:
/// a lost shard is rebuilt by repair from the encrypted shards; re-encoding under a changed
/// plan leaves it as it is (it would need the key) and says so; it reads back with its key
/// only. A gateway not told its listener is safe refuses customer keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_c_objects_are_repaired_without_their_key_and_left_by_reencoding() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = erasure_plan(4, 2, 64 << 10);
    let mut cluster = dev::start_cluster_with(
        tmp.path(),
        6,
        vec![plan.clone()],
        HashMap::from([("standard".to_owned(), RebuildPolicy::default())]),
    )
    .await
    .unwrap();
    let gateway = Arc::clone(&cluster.gateway);
    let meta = Arc::clone(gateway.metadata());
    let svc = dev::service(Arc::clone(&gateway), None);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt", vec![]).await.0,
        StatusCode::OK
    );
    let secret = data(200_000, 3);
    let (s, b) = call_keyed(&svc, Method::PUT, "/bkt/secret", Some(1), secret.clone()).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "no TLS, not on loopback: refused"
    );
    assert!(
        String::from_utf8_lossy(&b).contains("secure connection"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    gateway.allow_customer_keys(true);
    let (s, b) = call_keyed(&svc, Method::PUT, "/bkt/secret", Some(1), secret.clone()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let plain = data(100_000, 4);
    assert_eq!(
        call(&svc, Method::PUT, "/bkt/plain", plain.clone()).await.0,
        StatusCode::OK
    );

    // One shard of the SSE-C object disappears; repair rebuilds it without the key.
    let v = meta.version("bkt", "secret", None).unwrap().unwrap();
    let layout = v.layout.as_ref().unwrap();
    assert!(layout.customer_seal().is_some());
    let gone = layout.segments[1].shards[2].clone();
    let node_ids: Vec<String> = cluster.probes.iter().map(|(id, _)| id.clone()).collect();
    let holder = node_ids.iter().position(|id| *id == gone.provider).unwrap();
    std::fs::remove_file(
        tmp.path()
            .join("providers")
            .join(holder.to_string())
            .join("shards")
            .join(format!("{}.shard", gone.shard_id)),
    )
    .unwrap();
    let scrub = sublet_gateway::upkeep::scrub::scrub_pass(&gateway, None, 0, 1000, None)
        .await
        .unwrap();
    assert_eq!(scrub.bad, 1, "{scrub:?}");
    let fixed = Repairer::new(Arc::clone(&gateway), None)
        .run_pass("standard", false, 100)
        .await
        .unwrap();
    assert_eq!((fixed.repaired, fixed.shards_rebuilt), (1, 1), "{fixed:?}");

    // The plan changes; only the object without a customer key is re-encoded.
    let master = MasterKey::load_or_create(&cluster.master_key_path).unwrap();
    let changed = Plan {
        scheme: Scheme::Erasure { data: 2, parity: 1 },
        write_quorum: 3,
        ..plan
    };
    let after = Arc::new(
        Node::new(
            Arc::clone(&meta),
            Arc::new(master),
            vec![changed],
            node_ids
                .iter()
                .map(|id| gateway.backend(id).unwrap())
                .collect(),
        )
        .unwrap()
        .with_placement(
            sublet_gateway::datapath::placement::Topology::flat(
                node_ids.iter().map(String::as_str),
            ),
            Arc::clone(gateway.health()),
        )
        .unwrap(),
    );
    after.allow_customer_keys(true);
    let pass = sublet_gateway::upkeep::reencode::reencode_pass(&after, "standard", 100)
        .await
        .unwrap();
    assert_eq!(
        (
            pass.outdated,
            pass.reencoded,
            pass.customer_keyed,
            pass.failed
        ),
        (1, 1, 1, 0),
        "{pass:?}"
    );

    // Reads: with the key byte for byte (the repaired shard among them), without it 400,
    // with another 403; the plain object is not readable with a key.
    let svc = dev::service(Arc::clone(&after), None);
    let (s, got) = call_keyed(&svc, Method::GET, "/bkt/secret", Some(1), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got == secret, "the SSE-C object reads back with its key");
    let (s, b) = call(&svc, Method::GET, "/bkt/secret", vec![]).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(String::from_utf8_lossy(&b).contains("InvalidRequest"));
    let (s, b) = call_keyed(&svc, Method::GET, "/bkt/secret", Some(2), vec![]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        call_keyed(&svc, Method::HEAD, "/bkt/secret", None, vec![])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call_keyed(&svc, Method::GET, "/bkt/plain", Some(1), vec![])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let (s, got) = call(&svc, Method::GET, "/bkt/plain", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got == plain);
    for p in cluster.providers.drain(..) {
        p.shutdown().await;
    }
}
