//! Bucket policies against users who want more than they were given, and strangers with
//! no key at all: a bucket shared read-only by policy, a write-only backup key, a public
//! prefix read without a signature (and nothing else readable that way), PublicAccessBlock
//! shutting it, the owner keeping the policy APIs. A real `sublet dev`, runtime users made
//! with `sublet`, the requests made by boto3 and by plain unsigned HTTP
//! (`e2e/scripts/boto3_policies.py`). Skips without boto3, as the client tests do.

use std::path::Path;
use std::time::Duration;

use sublet_e2e::clients::run;
use sublet_e2e::dev::SubletDev;
use sublet_e2e::skip;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn policies_share_read_only_make_write_only_keys_and_open_only_a_public_prefix() {
    if !skip::clients_present(&["boto3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let (alice_key, alice_secret) = dev.user_with_key("alice", &["photos:rw", "backups:rw"]);
    // bob's key has no grant on alice's buckets: only her policy lets him in.
    let (bob_key, bob_secret) = dev.user_with_key("bob", &["bobs:rw"]);
    let (backup_key, backup_secret) = dev.user_with_key("backupbot", &["backups:rw"]);

    let mut cmd = dev.client("python3");
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join("boto3_policies.py"),
    )
    .env("SUBLET_ENDPOINT", dev.endpoint())
    .env("ALICE_KEY", &alice_key)
    .env("ALICE_SECRET", &alice_secret)
    .env("BOB_KEY", &bob_key)
    .env("BOB_SECRET", &bob_secret)
    .env("BACKUP_KEY", &backup_key)
    .env("BACKUP_SECRET", &backup_secret);
    let out = run(&mut cmd, TIMEOUT);
    assert!(
        out.status.success() && out.stdout.contains("policy checks passed"),
        "{out:?}"
    );

    // Anonymous requests are counted like any other: the refused anonymous ListBuckets
    // (nobody signed can be refused it) and the public GETs.
    let scraped = dev.metrics();
    assert!(
        scraped.contains("sublet_gateway_requests_total{op=\"ListBuckets\",status=\"403\"} 1"),
        "{scraped}"
    );
    assert!(
        scraped.contains("sublet_gateway_requests_total{op=\"HeadObject\",status=\"200\"}"),
        "{scraped}"
    );
}

/// A per-user home prefix by one policy with `${aws:username}`: alice may only touch
/// `home/alice/*`, bob only `home/bob/*` (`e2e/scripts/boto3_policy_variables.py`).
#[test]
fn policy_variables_keep_each_user_in_their_own_home() {
    if !skip::clients_present(&["boto3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let (carol_key, carol_secret) = dev.user_with_key("carol", &["homes:rw"]);
    // Their keys have no grant on `homes`: only the policy lets them in.
    let (alice_key, alice_secret) = dev.user_with_key("alice", &["alices:rw"]);
    let (bob_key, bob_secret) = dev.user_with_key("bob", &["bobs:rw"]);
    let mut cmd = dev.client("python3");
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join("boto3_policy_variables.py"),
    )
    .env("SUBLET_ENDPOINT", dev.endpoint())
    .env("CAROL_KEY", &carol_key)
    .env("CAROL_SECRET", &carol_secret)
    .env("ALICE_KEY", &alice_key)
    .env("ALICE_SECRET", &alice_secret)
    .env("BOB_KEY", &bob_key)
    .env("BOB_SECRET", &bob_secret);
    let out = run(&mut cmd, TIMEOUT);
    assert!(
        out.status.success() && out.stdout.contains("policy variable checks passed"),
        "{out:?}"
    );
}
