//! Fault injection on real binaries: providers killed two at a time, shard files corrupted
//! on disk, the gateway killed in the middle of a repair, its metadata file deleted, objects
//! moved to a wider plan while they are read. Every test ends by reading back everything it
//! wrote, byte for byte. Time is kept short by a 1s grace period and by asking the admin
//! API for repairs, audits, snapshots and lifecycle passes instead of waiting for their
//! timers; a lost provider is noticed at the gateway's next probe (every 15s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use sublet_e2e::cluster::{
    Cluster, TestObject, corrupt_shard_file, metric_sum, stripe_of, test_objects, wait_for,
};

const PLAN: &str = "standard";
const SEGMENT: u64 = 64 << 10;
/// Data plus parity shards of the plan.
const WIDTH: u64 = 6;
const BUCKET: &str = "faults";
/// Longest a lost provider may take to be noticed (the gateway probes every 15s) and its
/// shards to be rebuilt.
const HEAL_TIMEOUT: Duration = Duration::from_secs(90);

/// A 4+2 plan in 64 KiB segments, one shard per provider, a 1s grace period and, when
/// given, a bandwidth limit for repairs.
fn policies(bandwidth_limit: Option<&str>) -> String {
    let limit = bandwidth_limit.map_or(String::new(), |l| format!(", bandwidthLimit: {l}"));
    format!(
        r#"
apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {{name: fast}}
spec:
  rebuild: {{gracePeriod: 1s, maxConcurrentJobs: 2{limit}}}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: {PLAN}}}
spec:
  redundancy: {{erasure: {{dataShards: 4, parityShards: 2}}}}
  segmentSize: 64Ki
  placement: {{spreadBy: node, maxPerDomain: 1}}
  schedule: fast
"#
    )
}

/// A cluster of `providers` with `objects` written to [`BUCKET`] and checked healthy.
fn cluster_with_objects(
    dir: &std::path::Path,
    providers: usize,
    bandwidth_limit: Option<&str>,
    objects: &[TestObject],
) -> Cluster {
    let cluster = Cluster::start(dir, providers, &policies(bandwidth_limit), PLAN);
    cluster.create_bucket(BUCKET);
    for o in objects {
        cluster.put(BUCKET, o);
    }
    let h = plan_health(&cluster);
    assert_eq!(h["objects"], objects.len() as u64, "{h}");
    assert_eq!(h["shards"]["healthy"], total_shards(objects), "{h}");
    cluster
}

fn total_shards(objects: &[TestObject]) -> u64 {
    objects.iter().map(|o| o.segments(SEGMENT) * WIDTH).sum()
}

fn plan_health(c: &Cluster) -> Value {
    c.admin_get(&format!("/admin/v1/plans/{PLAN}"))
}

/// Ok when every object has all its shards healthy and none sits on a provider of `dead`.
fn fully_healthy(c: &Cluster, objects: &[TestObject], dead: &[usize]) -> Result<(), String> {
    let h = plan_health(c);
    let on_dead: Vec<(usize, u64)> = dead.iter().map(|&i| (i, c.shards_on(i))).collect();
    let n = objects.len() as u64;
    let ok = h["objects"] == n
        && h["objectsByHealth"]["healthy"] == n
        && h["shards"]["healthy"] == total_shards(objects)
        && h["repair"]["due"] == 0
        && h["repair"]["waiting"] == 0
        && on_dead.iter().all(|(_, s)| *s == 0);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plan health {h}; shards on dead providers {on_dead:?}"
        ))
    }
}

/// Asks for repair passes until [`fully_healthy`]; `bandwidth` (bytes/s) overrides the
/// schedule's limit.
fn repair_until_healthy(c: &Cluster, objects: &[TestObject], dead: &[usize], bandwidth: u64) {
    wait_for("full health after repair", HEAL_TIMEOUT, || {
        c.admin_post(&format!(
            "/admin/v1/plans/{PLAN}/repair?limit=1000&bandwidthLimit={bandwidth}"
        ));
        fully_healthy(c, objects, dead)
    });
}

/// Waits until the gateway counts the shards of killed providers as lost: repairs are due
/// and none waits for the grace period.
fn wait_until_loss_noticed(c: &Cluster) -> Value {
    wait_for("the loss noticed", HEAL_TIMEOUT, || {
        let h = plan_health(c);
        if h["repair"]["due"].as_u64().unwrap_or(0) > 0 && h["repair"]["waiting"] == 0 {
            Ok(h)
        } else {
            Err(h.to_string())
        }
    })
}

const UNLIMITED: u64 = 1 << 40;

#[test]
fn losing_four_of_eight_providers_two_at_a_time_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = test_objects("photo", 24, 640 << 10);
    let logical: u64 = objects.iter().map(|o| o.len).sum();
    let mut c = cluster_with_objects(tmp.path(), 8, None, &objects);

    // One provider lost: measure how long until every object is whole again.
    let killed = Instant::now();
    c.providers[0].kill();
    let before = metric_sum(&c.metrics(), "sublet_gateway_rebuilt_bytes_total", &[PLAN]);
    wait_until_loss_noticed(&c);
    let noticed = killed.elapsed();
    let started = Instant::now();
    let pass = c.admin_post(&format!(
        "/admin/v1/plans/{PLAN}/repair?limit=1000&bandwidthLimit={UNLIMITED}"
    ));
    let pass_secs = started.elapsed().as_secs_f64();
    let written = pass["bytesWritten"].as_f64().unwrap_or(0.0);
    eprintln!(
        "first repair pass: {} objects, {} shards, {written} bytes written in {pass_secs:.2}s \
         = {:.2} MB/s written (plus 4 shards read per rebuilt one)",
        pass["repaired"],
        pass["shardsRebuilt"],
        written / pass_secs / 1e6
    );
    repair_until_healthy(&c, &objects, &[0], UNLIMITED);
    let healed = killed.elapsed();
    let rebuilt = metric_sum(&c.metrics(), "sublet_gateway_rebuilt_bytes_total", &[PLAN]) - before;
    let repair_secs = (healed - noticed).as_secs_f64();
    eprintln!(
        "one provider of 8 lost ({logical} logical bytes in {} objects): noticed after {:.1}s, \
         full health after {:.1}s; {rebuilt} bytes rebuilt in {repair_secs:.1}s = {:.2} MB/s \
         (debug build, repair passes asked every 100 ms)",
        objects.len(),
        noticed.as_secs_f64(),
        healed.as_secs_f64(),
        rebuilt / repair_secs / 1e6
    );
    assert!(rebuilt > 0.0, "no shard was rebuilt");
    c.assert_all_read_back(BUCKET, &objects);

    // It comes back empty-handed as far as the metadata knows: its old shards are garbage.
    c.providers[0].start();
    // Two at once: stripes that had a shard on each are left with exactly dataShards.
    c.providers[1].kill();
    c.providers[2].kill();
    let h = wait_until_loss_noticed(&c);
    assert!(
        h["repair"]["atRisk"].as_u64().unwrap_or(0) > 0,
        "losing 2 of 8 providers left no object at risk: {h}"
    );
    // Provider 0 must be back in placement for 6 homes: repair retries until it is.
    repair_until_healthy(&c, &objects, &[1, 2], UNLIMITED);
    let on_live: u64 = [0, 3, 4, 5, 6, 7].iter().map(|&i| c.shards_on(i)).sum();
    assert_eq!(
        on_live,
        total_shards(&objects),
        "every shard on a live provider"
    );

    // Two more: 4 of the 6 homes left, every object readable from data shards alone.
    c.providers[3].kill();
    c.providers[4].kill();
    c.assert_all_read_back(BUCKET, &objects);
}

#[test]
fn corrupt_shards_fail_audits_and_scrubs_cost_the_provider_its_score_and_are_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = test_objects("doc", 16, 400 << 10);
    let c = cluster_with_objects(tmp.path(), 8, None, &objects);
    let shards: Vec<u64> = (0..8).map(|i| c.shards_on(i)).collect();

    // Provider 0 answers every audit with wrong bytes: its whole disk is damaged. Provider
    // 1 lost one shard to bit rot.
    let on_disk = c.providers[0].shard_files();
    assert_eq!(
        on_disk.len() as u64,
        shards[0],
        "metadata and disk disagree"
    );
    for (_, path) in &on_disk {
        corrupt_shard_file(path);
    }
    let rotten = &c.providers[1].shard_files()[0];
    corrupt_shard_file(&rotten.1);
    let corrupted = shards[0] + 1;

    // Only the holder of the admin token may start an audit.
    for token in [None, Some("not-the-admin-token-0123")] {
        let (status, body) = sublet_e2e::cluster::http_call(
            c.admin,
            "POST",
            "/admin/v1/audit?samples=1000",
            token,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("admin token"), "{body}");
    }
    let report = c.admin_post("/admin/v1/audit?samples=1000");
    let total: u64 = shards.iter().sum();
    assert_eq!(report["failed"], corrupted, "{report}");
    assert_eq!(report["passed"], total - corrupted, "{report}");
    let metrics = c.metrics();
    let score = |i: usize| {
        metric_sum(
            &metrics,
            "sublet_gateway_provider_score",
            &[&format!("provider=\"{}\"", c.providers[i].node_id)],
        )
    };
    assert_eq!(score(0), 0.0, "the lying provider keeps a score");
    let expected_1 = ((shards[1] - 1) * 100 / shards[1]) as f64;
    assert_eq!(score(1), expected_1, "one failed audit of {}", shards[1]);
    for i in 2..8 {
        assert_eq!(score(i), 100.0, "provider {i} passed every audit");
    }

    // Bit rot after the audit, on a shard that passed it: a scrub reads every shard whole
    // and finds it too (and the shards already known bad, still bad).
    // Another stripe than the first rotten shard's: no stripe loses more than its 2 parity
    // shards (provider 0's and one more).
    let scrubbed = &c.providers[2]
        .shard_files()
        .into_iter()
        .find(|(id, _)| stripe_of(id).0 != stripe_of(&rotten.0).0)
        .expect("provider 2 holds shards of another stripe");
    corrupt_shard_file(&scrubbed.1);
    let report = c.admin_post("/admin/v1/scrub");
    assert_eq!(report["bad"], corrupted + 1, "{report}");
    assert_eq!(report["intact"], total - corrupted - 1, "{report}");
    assert_eq!(report["unchecked"], 0, "{report}");
    assert_eq!(report["versions"], objects.len() as u64, "{report}");

    // Reads never return the damage: providers verify what they send and the gateway what
    // it gets, falling back to parity.
    c.assert_all_read_back(BUCKET, &objects);

    // Repair replaces every bad shard, never onto the provider that failed its audits, and
    // removes the bad copies.
    repair_until_healthy(&c, &objects, &[0], UNLIMITED);
    wait_for(
        "bad copies removed from provider 0",
        Duration::from_secs(10),
        || {
            let left = c.providers[0].shard_files();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} shard files left", left.len()))
            }
        },
    );
    for (p, (id, _)) in [(1, rotten), (2, scrubbed)] {
        assert!(
            !c.providers[p].shard_files().iter().any(|(i, _)| i == id),
            "the rotten shard {id} is still on provider {p}"
        );
    }
    let report = c.admin_post("/admin/v1/audit?samples=1000");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["passed"], total_shards(&objects), "{report}");
    let report = c.admin_post("/admin/v1/scrub");
    assert_eq!(report["bad"], 0, "{report}");
    assert_eq!(report["intact"], total_shards(&objects), "{report}");
    c.assert_all_read_back(BUCKET, &objects);
}

#[test]
fn a_deleted_metadata_file_is_recovered_from_the_providers() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = test_objects("note", 12, 300 << 10);
    let mut c = cluster_with_objects(tmp.path(), 6, None, &objects);
    let snapshot = c.admin_post("/admin/v1/snapshot");
    assert!(snapshot["size"].as_u64().unwrap_or(0) > 0, "{snapshot}");
    // Changed after the snapshot: one written, one deleted. Both were acknowledged, so
    // the metadata journal holds them.
    let late = TestObject {
        key: "late".into(),
        len: 10_000,
    };
    c.put(BUCKET, &late);
    let (deleted, kept) = objects.split_first().unwrap();
    c.request(
        http::Method::DELETE,
        BUCKET,
        Some(&deleted.key),
        &[],
        sublet_e2e::bench::client::BenchBody::empty(),
    )
    .unwrap();

    // The gateway's disk is gone (and a provider is down while recovering).
    c.kill_gateway();
    c.lose_metadata();
    c.providers[5].kill();

    let said = c.recover();
    // The journal after the snapshot is replayed (its copies on the other providers stand
    // in for the one that is down), so nothing acknowledged is left out; the provider it
    // could not ask is named.
    assert!(said.contains("2 changes applied"), "{said}");
    assert!(!said.contains("NOT RECOVERED"), "{said}");
    assert!(!said.contains("NOT REPLAYED"), "{said}");
    assert!(said.contains("could not list 1 providers"), "{said}");

    c.start_gateway();
    let h = plan_health(&c);
    assert_eq!(h["objects"], objects.len() as u64, "{h}");
    c.assert_all_read_back(BUCKET, kept);
    c.read_back(BUCKET, &late).unwrap();
    let err = c.read_back(BUCKET, deleted).unwrap_err();
    assert!(err.contains("NoSuchKey"), "{err}");

    // The disk goes again, and this time `sublet serve` is simply started: it finds its
    // metadata missing and recovers before serving.
    c.kill_gateway();
    c.lose_metadata();
    c.start_gateway();
    c.assert_all_read_back(BUCKET, kept);
    c.read_back(BUCKET, &late).unwrap();
    assert!(
        c.log_text()
            .contains("recovered it from the providers before serving"),
        "{}",
        c.log_tail()
    );
}

/// Stripes of the shard files on providers `live`: stripe -> (index, provider) of each
/// shard file.
fn stripes_on_disk(c: &Cluster, live: &[usize]) -> BTreeMap<String, Vec<(u64, usize)>> {
    let mut out: BTreeMap<String, Vec<(u64, usize)>> = BTreeMap::new();
    for &p in live {
        for (id, _) in c.providers[p].shard_files() {
            let (stripe, index) = stripe_of(&id);
            out.entry(stripe).or_default().push((index, p));
        }
    }
    out
}

#[test]
fn a_gateway_killed_mid_repair_finishes_after_restart_without_placing_a_shard_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = test_objects("clip", 16, 512 << 10);
    // Repairs crawl at 256 KiB/s so the kill lands in the middle of a pass.
    let mut c = cluster_with_objects(tmp.path(), 8, Some("256Ki"), &objects);
    c.providers[0].kill();
    c.providers[1].kill();
    let due = wait_until_loss_noticed(&c)["repair"]["due"]
        .as_u64()
        .unwrap();

    let admin = c.admin;
    let pass = std::thread::spawn(move || {
        sublet_e2e::cluster::http_call(
            admin,
            "POST",
            &format!("/admin/v1/plans/{PLAN}/repair?limit=1000"),
            Some(sublet_e2e::cluster::ADMIN_TOKEN),
            Duration::from_secs(120),
        )
    });
    // Each object's new layout is switched in as soon as it is rebuilt.
    let left = wait_for("a first object repaired", Duration::from_secs(60), || {
        let h = plan_health(&c);
        let left = h["repair"]["due"].as_u64().unwrap_or(0);
        if left < due && left > 0 {
            Ok(left)
        } else {
            Err(h.to_string())
        }
    });
    c.kill_gateway();
    let _ = pass.join().unwrap();
    eprintln!("gateway killed with {left} of {due} objects still due for repair");
    assert!(left < due && left > 0);

    c.start_gateway();
    // Reads go on while the restarted gateway repairs.
    let reader = c.reader(BUCKET);
    let read_objects = objects.clone();
    let reads = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        read_objects
            .iter()
            .filter_map(|o| reader.read_back(&rt, o).err())
            .collect::<Vec<_>>()
    });
    repair_until_healthy(&c, &objects, &[0, 1], UNLIMITED);
    let failed = reads.join().unwrap();
    assert!(failed.is_empty(), "reads during repair: {failed:?}");

    // Shards the killed pass wrote but never switched in are garbage; once collected, the
    // disks hold exactly what the metadata says, each stripe on 6 distinct providers.
    std::thread::sleep(Duration::from_millis(1100));
    let gc = c.admin_post("/admin/v1/gc?minAgeSeconds=0");
    eprintln!("garbage collection after the restart: {gc}");
    let live: Vec<usize> = (2..8).collect();
    for &p in &live {
        assert_eq!(
            c.providers[p].shard_files().len() as u64,
            c.shards_on(p),
            "provider {p}: shard files on disk vs shards in metadata"
        );
    }
    let stripes = stripes_on_disk(&c, &live);
    let segments: u64 = objects.iter().map(|o| o.segments(SEGMENT)).sum();
    assert_eq!(stripes.len() as u64, segments, "stripes on disk");
    for (stripe, shards) in &stripes {
        let indices: BTreeSet<u64> = shards.iter().map(|s| s.0).collect();
        let homes: BTreeSet<usize> = shards.iter().map(|s| s.1).collect();
        assert_eq!(
            (shards.len(), indices.len(), homes.len()),
            (WIDTH as usize, WIDTH as usize, WIDTH as usize),
            "stripe {stripe}: {shards:?}"
        );
    }
    c.assert_all_read_back(BUCKET, &objects);
}

#[test]
fn a_lifecycle_transition_from_4_plus_2_to_10_plus_4_keeps_every_object_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = r#"
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: archive}
spec:
  redundancy: {erasure: {dataShards: 10, parityShards: 4}}
  segmentSize: 64Ki
  placement: {spreadBy: node, maxPerDomain: 1}
  schedule: fast
"#;
    let c = Cluster::start(
        tmp.path(),
        14,
        &format!("{}{archive}", policies(None)),
        PLAN,
    );
    c.create_bucket(BUCKET);
    let old = test_objects("old/scan", 10, 512 << 10);
    let new = test_objects("new/scan", 4, 256 << 10);
    let all: Vec<TestObject> = old.iter().chain(&new).cloned().collect();
    for o in &all {
        c.put(BUCKET, o);
    }
    c.put_lifecycle(
        BUCKET,
        "<LifecycleConfiguration><Rule><ID>cool-down</ID><Filter><Prefix>old/</Prefix></Filter>\
         <Status>Enabled</Status><Transition><Days>1</Days><StorageClass>archive</StorageClass>\
         </Transition></Rule></LifecycleConfiguration>",
    );
    // Rules count in days: nothing is due yet.
    let report = c.admin_post("/admin/v1/lifecycle");
    assert_eq!(report["transitioned"], 0, "{report}");

    // Readers go over every object while the objects move.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = c.reader(BUCKET);
    let (objects, stopped) = (all.clone(), std::sync::Arc::clone(&stop));
    let reads = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut done, mut failed) = (0u64, Vec::new());
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            for o in &objects {
                match reader.read_back(&rt, o) {
                    Ok(()) => done += 1,
                    Err(e) => failed.push(e),
                }
            }
        }
        (done, failed)
    });
    let started = Instant::now();
    let report = c.admin_post("/admin/v1/lifecycle?daysAhead=2");
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (done, failed) = reads.join().unwrap();
    eprintln!(
        "lifecycle moved {} objects to 10+4 in {:.1}s; {done} reads meanwhile",
        report["transitioned"],
        took.as_secs_f64()
    );
    assert_eq!(report["transitioned"], old.len() as u64, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(failed.is_empty(), "reads during the transition: {failed:?}");
    assert!(done > 0, "no read happened during the transition");

    let moved = c.admin_get("/admin/v1/plans/archive");
    let segments = |objs: &[TestObject]| objs.iter().map(|o| o.segments(SEGMENT)).sum::<u64>();
    assert_eq!(moved["objects"], old.len() as u64, "{moved}");
    assert_eq!(moved["shards"]["healthy"], segments(&old) * 14, "{moved}");
    let stayed = plan_health(&c);
    assert_eq!(stayed["objects"], new.len() as u64, "{stayed}");
    // The 4+2 shards of moved objects are gone from the metadata.
    let placed: u64 = (0..14).map(|i| c.shards_on(i)).sum();
    assert_eq!(placed, segments(&old) * 14 + segments(&new) * WIDTH);
    c.assert_all_read_back(BUCKET, &all);

    // 10+4 for real: any 4 of the 14 providers may go.
    let mut c = c;
    for p in &mut c.providers[..4] {
        p.kill();
    }
    c.assert_all_read_back(BUCKET, &old);
}

#[test]
fn a_get_in_flight_when_its_object_is_overwritten_ends_with_the_bytes_it_began_with() {
    let tmp = tempfile::tempdir().unwrap();
    let object = TestObject {
        key: "big".into(),
        // More than loopback socket buffers hold (about 4.5 MiB here).
        len: 12 << 20,
    };
    let c = cluster_with_objects(tmp.path(), 6, None, std::slice::from_ref(&object));

    // A slow reader: the answer's head and the first 64 KiB, then a pause.
    let get = c.slow_get(BUCKET, &object.key);

    // Meanwhile the key is overwritten (a longer object: its first 4 MiB are the same bytes,
    // but the old version's shards are released).
    c.put(
        BUCKET,
        &TestObject {
            key: object.key.clone(),
            len: (12 << 20) + 1,
        },
    );
    get.finish(&object);
}
