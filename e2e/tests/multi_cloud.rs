//! The multi-cloud backup story on real binaries: restic backs a directory up to a sublet
//! gateway whose plan spreads each stripe over own providers and two cloud accounts (two
//! more `sublet serve` processes stand in for the clouds' S3 endpoints), at most one shard
//! per cloud. One cloud vanishes: restic still checks and restores every byte, and repair
//! rebuilds that cloud's shards elsewhere until the plan is whole again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use sublet_e2e::bench::client::BenchBody;
use sublet_e2e::clients::run_ok;
use sublet_e2e::cluster::{ACCESS_KEY, Cluster, SECRET_KEY, wait_for};
use sublet_e2e::data::{assert_same_tree, write_mixed_tree};

const PLAN: &str = "backup";
/// Own providers: with the two clouds, one failure domain more than a stripe's 6 shards.
const LOCAL: usize = 5;
const CLOUDS: [&str; 2] = ["cloud-a", "cloud-b"];
/// The bucket every cloud lends.
const SPARE: &str = "spare";
const SHARD_PREFIX: &str = "sublet-shards/";
/// Longest a lost cloud may take to be noticed (the gateway probes every 15s) and its
/// shards to be rebuilt.
const HEAL_TIMEOUT: Duration = Duration::from_secs(90);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A cloud account: a gateway over one provider keeping one copy of each shard it is given.
fn start_cloud(dir: &Path) -> Cluster {
    let plan = r#"
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: single}
spec:
  redundancy: {replicas: 1}
"#;
    let cloud = Cluster::start(dir, 1, plan, "single");
    cloud.create_bucket(SPARE);
    cloud
}

/// A 4+2 plan in 1 MiB segments over the own providers `p0..` and the clouds' buckets, one
/// shard per zone (each provider and each cloud is a zone of its own) and at most one per
/// cloud account.
fn policies(clouds: &[Cluster], secret_file: &Path) -> String {
    let mut yaml = String::new();
    for (name, cloud) in CLOUDS.iter().zip(clouds) {
        yaml.push_str(&format!(
            "apiVersion: sublet.dev/v1alpha1\nkind: ProviderPool\nmetadata: {{name: {name}}}\n\
             spec:\n  class: cloud\n  buckets:\n    - {{name: {name}, endpoint: \"http://{}\", \
             bucket: {SPARE}, accessKey: {ACCESS_KEY}, secretKeyFile: \"{}\", zone: {name}}}\n---\n",
            cloud.s3,
            secret_file.display()
        ));
    }
    let mut pools: Vec<String> = (0..LOCAL).map(|i| format!("{{name: p{i}}}")).collect();
    pools.extend(
        CLOUDS
            .iter()
            .map(|c| format!("{{name: {c}, maxShards: 1}}")),
    );
    yaml.push_str(&format!(
        r#"apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {{name: fast}}
spec:
  rebuild: {{gracePeriod: 1s, maxConcurrentJobs: 2}}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: {PLAN}}}
spec:
  redundancy: {{erasure: {{dataShards: 4, parityShards: 2}}}}
  segmentSize: 1Mi
  placement: {{spreadBy: zone, maxPerDomain: 1, pools: [{}]}}
  schedule: fast
"#,
        pools.join(", ")
    ));
    yaml
}

/// restic on the gateway's `restic` bucket.
fn restic(gateway: &Cluster, args: &[&str]) -> String {
    let mut cmd: Command = sublet_e2e::clients::command("restic");
    cmd.env(
        "RESTIC_REPOSITORY",
        format!("s3:http://{}/restic", gateway.s3),
    )
    .env("RESTIC_PASSWORD", "e2e-restic-password")
    .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    .arg("--no-cache")
    .args(args);
    run_ok(&mut cmd, CLIENT_TIMEOUT)
}

/// A shard id's stripe (the id without its index and repair suffix).
fn stripe_of(id: &str) -> String {
    let base = match id.rsplit_once("-r") {
        Some((base, suffix)) if suffix.len() == 8 => base,
        _ => id,
    };
    base.rsplit_once('.')
        .unwrap_or_else(|| panic!("shard id {id} has no index"))
        .0
        .to_string()
}

/// Shards per stripe in a cloud's bucket, from a listing of the shard prefix.
fn stripes_in(cloud: &Cluster) -> BTreeMap<String, u64> {
    let listing = cloud
        .request(
            Method::GET,
            SPARE,
            None,
            &[("list-type", "2"), ("prefix", SHARD_PREFIX)],
            BenchBody::empty(),
        )
        .unwrap();
    assert!(
        !listing.contains("<IsTruncated>true</IsTruncated>"),
        "more shards than one listing page: {listing}"
    );
    let mut stripes = BTreeMap::new();
    for chunk in listing.split("<Key>").skip(1) {
        let key = chunk.split("</Key>").next().unwrap();
        let id = key.strip_prefix(SHARD_PREFIX).unwrap();
        *stripes.entry(stripe_of(id)).or_default() += 1;
    }
    stripes
}

fn plan_health(c: &Cluster) -> Value {
    c.admin_get(&format!("/admin/v1/plans/{PLAN}"))
}

/// Ok when every object has all its shards healthy, none is due for repair and the lost
/// cloud holds none in the metadata.
fn whole_without(c: &Cluster, lost: &str) -> Result<Value, String> {
    let h = plan_health(c);
    let on_lost = c.pool_shards(lost);
    let ok = h["objects"].as_u64().is_some_and(|n| n > 0)
        && h["objectsByHealth"]["healthy"] == h["objects"]
        && h["shards"]["degraded"] == 0
        && h["shards"]["lost"] == 0
        && h["repair"]["due"] == 0
        && h["repair"]["waiting"] == 0
        && on_lost == 0;
    if ok {
        Ok(h)
    } else {
        Err(format!("plan health {h}; shards on {lost}: {on_lost}"))
    }
}

#[test]
fn restic_backups_spread_over_two_clouds_survive_losing_one_and_are_repaired() {
    if !sublet_e2e::skip::clients_present(&["restic"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut clouds: Vec<Cluster> = CLOUDS
        .iter()
        .map(|name| start_cloud(&tmp.path().join(name)))
        .collect();
    let secret_file = tmp.path().join("cloud.secret");
    std::fs::write(&secret_file, format!("{SECRET_KEY}\n")).unwrap();
    let gateway = Cluster::start(
        &tmp.path().join("home"),
        LOCAL,
        &policies(&clouds, &secret_file),
        PLAN,
    );

    let tree = tmp.path().join("tree");
    let bytes = write_mixed_tree(&tree, 8, 41);
    restic(&gateway, &["init"]);
    restic(&gateway, &["backup", tree.to_str().unwrap()]);
    let checked = restic(&gateway, &["check", "--read-data"]);
    assert!(checked.contains("no errors were found"), "{checked}");

    // Both clouds hold shards, never two of one stripe, and just what the metadata says.
    let h = plan_health(&gateway);
    let objects = h["objects"].as_u64().unwrap();
    assert!(objects > 0, "{h}");
    assert_eq!(h["objectsByHealth"]["healthy"], objects, "{h}");
    for (name, cloud) in CLOUDS.iter().zip(&clouds) {
        let stripes = stripes_in(cloud);
        let shards: u64 = stripes.values().sum();
        assert!(shards > 0, "{name} holds no shard: {h}");
        assert_eq!(
            shards,
            gateway.pool_shards(name),
            "{name}: bucket vs metadata"
        );
        let doubled: Vec<_> = stripes.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubled.is_empty(),
            "{name}: stripes with 2 shards {doubled:?}"
        );
    }
    eprintln!(
        "{bytes} bytes backed up: {objects} objects; shards in cloud-a {}, cloud-b {}",
        gateway.pool_shards(CLOUDS[0]),
        gateway.pool_shards(CLOUDS[1])
    );

    // cloud-a's endpoint is gone for good.
    let lost = CLOUDS[0];
    clouds[0].kill_gateway();
    clouds[0].providers[0].kill();
    let checked = restic(&gateway, &["check", "--read-data"]);
    assert!(checked.contains("no errors were found"), "{checked}");
    let target = tmp.path().join("restored");
    restic(
        &gateway,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    // restic restores a backed-up absolute path under the target.
    assert_same_tree(&tree, &target.join(tree.strip_prefix("/").unwrap()));

    // Repair rebuilds cloud-a's shards on the own providers and cloud-b, within the plan.
    wait_for("the loss of cloud-a noticed", HEAL_TIMEOUT, || {
        let h = plan_health(&gateway);
        if h["repair"]["due"].as_u64().unwrap_or(0) > 0 && h["repair"]["waiting"] == 0 {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
    let healed = wait_for("full health after repair", HEAL_TIMEOUT, || {
        gateway.admin_post(&format!("/admin/v1/plans/{PLAN}/repair?limit=1000"));
        whole_without(&gateway, lost)
    });
    assert_eq!(healed["objects"], objects, "{healed}");
    let on_local: u64 = (0..LOCAL).map(|i| gateway.shards_on(i)).sum();
    assert_eq!(
        on_local + gateway.pool_shards(CLOUDS[1]),
        healed["shards"]["healthy"].as_u64().unwrap(),
        "every shard on a live provider: {healed}"
    );
    let stripes = stripes_in(&clouds[1]);
    assert_eq!(
        stripes.values().sum::<u64>(),
        gateway.pool_shards(CLOUDS[1]),
        "cloud-b: bucket vs metadata"
    );
    assert!(
        stripes.values().all(|n| *n == 1),
        "cloud-b: a stripe with 2 shards after repair {stripes:?}"
    );
    let checked = restic(&gateway, &["check", "--read-data"]);
    assert!(checked.contains("no errors were found"), "{checked}");
}
