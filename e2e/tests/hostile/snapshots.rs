//! A provider that forges metadata snapshot manifests and journal segments (dated in the
//! future, real ones replayed under other ids, the unsealed format of older gateways): the
//! gateway's snapshot pass keeps the real snapshots, a gateway that lost its metadata file
//! recovers the real metadata by itself, and every object reads back byte for byte.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sublet_e2e::cluster::{Cluster, JOURNAL_PREFIX, SNAPSHOT_PREFIX, TOKEN, test_objects};
use sublet_provider::client::{ClientConfig, ProviderClient};
use sublet_provider::identity::{NodeId, NodeIdentity};

const PLAN: &str = "standard";
const BUCKET: &str = "kept";

const POLICIES: &str = r#"
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: standard}
spec:
  redundancy: {erasure: {dataShards: 2, parityShards: 1}}
  segmentSize: 64Ki
  placement: {spreadBy: node, maxPerDomain: 1}
"#;

/// What the hostile provider's operator has: its own gRPC API, as any client with the
/// cluster token (it could as well write the files).
fn client(c: &Cluster, index: usize) -> ProviderClient {
    let p = &c.providers[index];
    ProviderClient::new(
        &p.grpc.to_string(),
        p.node_id.parse::<NodeId>().unwrap(),
        &ClientConfig {
            identity: Arc::new(NodeIdentity::generate()),
            token: Some(TOKEN.into()),
        },
    )
    .unwrap()
}

async fn manifests_on(client: &ProviderClient) -> Vec<String> {
    let (listed, result) = client.list_all(SNAPSHOT_PREFIX).await;
    result.unwrap();
    listed.into_iter().map(|s| s.shard_id).collect()
}

#[test]
fn forged_manifests_and_segments_dated_in_the_future_are_ignored_and_recovery_restores_the_real_metadata()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, POLICIES, PLAN);
    let rt = tokio::runtime::Runtime::new().unwrap();
    c.create_bucket(BUCKET);
    let mut objects = test_objects("before", 4, 300_000);
    for o in &objects {
        c.put(BUCKET, o);
    }
    c.admin_post("/admin/v1/snapshot");

    // Provider 0 turns hostile. It sees this installation's manifest id (and so its tag)
    // and plants, dated days ahead: the real manifest replayed under later ids, junk, a
    // manifest in the unsealed format of older gateways, and a journal segment.
    let (hostile, honest) = {
        let _in = rt.enter();
        (client(&c, 0), client(&c, 1))
    };
    let real = rt.block_on(manifests_on(&hostile));
    assert_eq!(real.len(), 1, "{real:?}");
    let (tag, _) = real[0]
        .strip_prefix(SNAPSHOT_PREFIX)
        .unwrap()
        .rsplit_once('-')
        .unwrap();
    let tag = tag.to_owned();
    let real_blob = rt.block_on(hostile.get_shard(&real[0], None)).unwrap();
    let day = 86_400_000i64;
    let future = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + day;
    let forged = [
        (
            format!("{SNAPSHOT_PREFIX}{tag}-{:015}", future),
            real_blob.clone(),
        ),
        (
            format!("{SNAPSHOT_PREFIX}{tag}-{:015}", future + day),
            real_blob,
        ),
        (
            format!("{SNAPSHOT_PREFIX}{tag}-{:015}", future + 2 * day),
            Bytes::from_static(b"{\"created\":1}"),
        ),
        (
            format!("{SNAPSHOT_PREFIX}{:015}", future + 3 * day),
            Bytes::from(format!(
                "{{\"created\":{},\"size\":1,\"blake3\":\"00\",\"plan\":\"{PLAN}\",\
                 \"layout\":{{\"scheme\":{{\"erasure\":{{\"data\":2,\"parity\":1}}}},\
                 \"encryption\":\"none\",\"segmentSize\":16,\"segments\":[]}}}}",
                future + 3 * day
            )),
        ),
        (
            format!("{JOURNAL_PREFIX}{tag}-{:015}-{:010}", future, 1),
            Bytes::from_static(b"SJL1 forged entries"),
        ),
    ];
    for (id, blob) in &forged {
        rt.block_on(hostile.put_shard(id, blob.clone())).unwrap();
    }

    // More writes, three more snapshots: the real oldest goes, the three newest real ones
    // stay, on every provider; the forgeries stay where they were planted.
    let after = test_objects("after", 3, 200_000);
    for o in &after {
        c.put(BUCKET, o);
    }
    objects.extend(after);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(20));
        c.admin_post("/admin/v1/snapshot");
    }
    let kept = rt.block_on(manifests_on(&honest));
    assert_eq!(
        kept.len(),
        3,
        "the real snapshots were pushed out: {kept:?}"
    );
    assert!(
        !kept.contains(&real[0]),
        "the real oldest is kept: {kept:?}"
    );
    let on_hostile = rt.block_on(manifests_on(&hostile));
    for id in &kept {
        assert!(on_hostile.contains(id), "{id} missing on provider 0");
    }
    for (id, _) in &forged[..4] {
        assert!(on_hostile.contains(id), "forged {id} was deleted");
    }
    let metrics = c.metrics();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("sublet_gateway_forged_metadata_total{kind=\"manifest\"}")
            && !l.ends_with(" 0")),
        "forgeries not counted:\n{metrics}"
    );

    // Written after the last snapshot: only the journal has them.
    let late = test_objects("late", 2, 100_000);
    for o in &late {
        c.put(BUCKET, o);
    }
    objects.extend(late);

    // The gateway's disk loses its metadata; restarted, it recovers by itself from the
    // real newest snapshot and the journal, not from a forgery.
    c.kill_gateway();
    c.lose_metadata();
    c.start_gateway();
    let log = c.log_text();
    assert!(
        log.contains("recovered it from the providers before serving"),
        "{}",
        c.log_tail()
    );
    assert!(log.contains("failed authentication"), "{}", c.log_tail());
    c.assert_all_read_back(BUCKET, &objects);
}
