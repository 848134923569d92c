//! The adversary plays: providers that lie, forge or stall, clients that stall or send
//! junk, a network that tampers. Real processes, bounded in time. Each part lives in
//! `hostile/`; every test ends by reading back what it wrote, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "hostile/acls.rs"]
mod acls;
#[path = "hostile/clients.rs"]
mod clients;
#[path = "hostile/market.rs"]
mod market;
#[path = "hostile/objlock.rs"]
mod objlock;
#[path = "hostile/policies.rs"]
mod policies;
#[path = "hostile/providers.rs"]
mod providers;
#[path = "hostile/rot.rs"]
mod rot;
#[path = "hostile/short_circuit.rs"]
mod short_circuit;
#[path = "hostile/snapshots.rs"]
mod snapshots;
#[path = "hostile/unix_sockets.rs"]
mod unix_sockets;

/// A StorageSchedule `fast` (a lost shard is rebuilt 1 s after it is found, two at a time)
/// and a StoragePlan `plan` on it: 4+2 in 64 KiB segments, one shard per provider, and the
/// `extra` lines (`key: value`, one a line) in its spec.
fn fast_repair_plan(plan: &str, extra: &[&str]) -> String {
    let mut yaml = format!(
        r#"
apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {{name: fast}}
spec:
  rebuild: {{gracePeriod: 1s, maxConcurrentJobs: 2}}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {{name: {plan}}}
spec:
  redundancy: {{erasure: {{dataShards: 4, parityShards: 2}}}}
  segmentSize: 64Ki
  placement: {{spreadBy: node, maxPerDomain: 1}}
  schedule: fast
"#
    );
    for line in extra {
        yaml.push_str(&format!("  {line}\n"));
    }
    yaml
}

/// Runs `e2e/scripts/SCRIPT` against `dev`, each user's keys in `WHO_KEY` and `WHO_SECRET`
/// (`users`: `WHO` and the key pair `SubletDev::user_with_key` made), within 120 s; it must
/// succeed and end saying `passed`.
fn boto3_users_script_passes(
    dev: &sublet_e2e::dev::SubletDev,
    script: &str,
    users: &[(&str, &(String, String))],
    passed: &str,
) {
    let mut cmd = dev.client("python3");
    cmd.arg(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(script),
    )
    .env("SUBLET_ENDPOINT", dev.endpoint());
    for (who, (key, secret)) in users {
        cmd.env(format!("{who}_KEY"), key)
            .env(format!("{who}_SECRET"), secret);
    }
    let out = sublet_e2e::clients::run(&mut cmd, std::time::Duration::from_secs(120));
    assert!(
        out.status.success() && out.stdout.contains(passed),
        "{script}: {out:?}"
    );
}
