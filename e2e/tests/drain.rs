//! Draining a ProviderPool on real binaries: the pool marked `drain: true` through the
//! policy API gets no new shards, every shard moves off it (each written and hash-checked
//! elsewhere before the old one is dropped), every object reads back byte for byte with
//! the pool's providers gone, and the pool reports `drained`. A drain no plan can take
//! reports `blocked`, naming the plan and the rule. Passes are asked of the admin API
//! instead of waiting for the 30s timer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use sublet_e2e::cluster::{Cluster, http_call, test_objects, wait_for};

const BUCKET: &str = "drain";

/// A `data`+`parity` plan in 64 KiB segments, one shard per provider, any pool.
fn plan(data: u32, parity: u32) -> String {
    format!(
        r#"
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: standard}}
spec:
  redundancy: {{erasure: {{dataShards: {data}, parityShards: {parity}}}}}
  segmentSize: 64Ki
  placement: {{spreadBy: node, maxPerDomain: 1}}
"#
    )
}

/// Marks pool `name` (the cluster's pool of provider `index`) `drain: true` through the
/// policy API.
fn start_drain(c: &Cluster, index: usize) {
    let p = &c.providers[index];
    let body = format!(
        "spec:\n  class: owned\n  drain: true\n  endpoints:\n    - {{name: {name}, address: \"{}\", nodeId: \"{}\", zone: z-{name}}}\n",
        p.grpc,
        p.node_id,
        name = p.name,
    );
    let (status, answer) = c.admin_put(&format!("/admin/v1/policy/pools/{}", p.name), &body);
    assert_eq!(status, 200, "{answer}");
}

fn pool(c: &Cluster, index: usize) -> Value {
    c.admin_get(&format!("/admin/v1/pools/{}", c.providers[index].name))
}

#[test]
fn a_drained_pool_holds_nothing_and_every_object_reads_back_without_it() {
    let dir = tempfile::tempdir().unwrap();
    // 3+2 over 7 providers: two may drain and every stripe still has 5 homes.
    let mut c = Cluster::start(dir.path(), 7, &plan(3, 2), "standard");
    c.create_bucket(BUCKET);
    let objects = test_objects("before", 16, 300_000);
    for o in &objects {
        c.put(BUCKET, o);
    }
    let draining = [0, 1];
    let before: u64 = draining.iter().map(|&i| c.shards_on(i)).sum();
    assert!(before > 0, "the draining pools hold nothing to move");

    for &i in &draining {
        start_drain(&c, i);
        let status = pool(&c, i);
        assert_eq!(status["drain"]["state"], "draining", "{status}");
        assert!(status["shards"].as_u64().unwrap() > 0, "{status}");
    }
    // New objects stay off the draining pools at once (the background pass may move some
    // of what they hold meanwhile, never add to it).
    let mut after = test_objects("during", 6, 200_000);
    let held: u64 = draining.iter().map(|&i| c.shards_on(i)).sum();
    for o in &after {
        c.put(BUCKET, o);
    }
    let now: u64 = draining.iter().map(|&i| c.shards_on(i)).sum();
    assert!(
        now <= held,
        "a new object was placed on a draining pool: {held} -> {now}"
    );

    // Passes of 5 versions, until nothing is left.
    let mut moved = 0;
    wait_for("the pools to drain", Duration::from_secs(60), || {
        for &i in &draining {
            let report = c.admin_post(&format!(
                "/admin/v1/pools/{}/drain?limit=5",
                c.providers[i].name
            ));
            assert_eq!(report["failed"], 0, "{report}");
            assert_eq!(report["blocked"], 0, "{report}");
            moved += report["movedShards"].as_u64().unwrap();
        }
        let left: Vec<Value> = draining.iter().map(|&i| pool(&c, i)).collect();
        left.iter()
            .all(|p| p["shards"] == 0 && p["drain"]["state"] == "drained")
            .then_some(())
            .ok_or(format!("{left:?}"))
    });
    // The background pass (every 30s) may have moved some too.
    assert!(moved <= before, "{moved} shards moved of {before}");
    let late = test_objects("drained", 4, 200_000);
    for o in &late {
        c.put(BUCKET, o);
    }
    assert_eq!(
        draining.iter().map(|&i| c.shards_on(i)).sum::<u64>(),
        0,
        "a new object was placed on a drained pool"
    );
    after.extend(late);
    let health = c.admin_get("/admin/v1/plans/standard");
    let total = (objects.len() + after.len()) as u64;
    assert_eq!(health["objectsByHealth"]["healthy"], total, "{health}");

    // The drained providers go: everything still reads back byte for byte.
    for &i in &draining {
        c.providers[i].kill();
    }
    c.assert_all_read_back(BUCKET, &objects);
    c.assert_all_read_back(BUCKET, &after);
}

#[test]
fn a_drain_no_plan_can_take_is_reported_blocked_with_the_plan_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    // 4+2 over 6 providers: without one of them a stripe has 5 homes for 6 shards.
    let c = Cluster::start(dir.path(), 6, &plan(4, 2), "standard");
    c.create_bucket(BUCKET);
    for o in &test_objects("stuck", 4, 150_000) {
        c.put(BUCKET, o);
    }
    let held = c.shards_on(0);
    assert!(held > 0);
    start_drain(&c, 0);
    let status = pool(&c, 0);
    assert_eq!(status["drain"]["state"], "blocked", "{status}");
    let reason = status["drain"]["blocked"][0].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("plan standard places 6 shards per stripe, but the 5 providers"),
        "{status}"
    );
    assert!(reason.contains("can hold 5"), "{status}");
    // A pass moves nothing and says why.
    let report = c.admin_post("/admin/v1/pools/p0/drain");
    assert_eq!(report["movedShards"], 0, "{report}");
    assert!(report["blocked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(c.shards_on(0), held, "a blocked drain moved shards");
    // A pool that is not draining refuses a pass.
    let (code, body) = http_call(
        c.admin,
        "POST",
        "/admin/v1/pools/p1/drain",
        Some(sublet_e2e::cluster::ADMIN_TOKEN),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("pool p1 is not draining"), "{body}");
}
