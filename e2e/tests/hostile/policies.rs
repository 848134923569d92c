//! Bucket policies against users who want more than they were given, and strangers with
//! no key at all: a bucket shared read-only by policy, a write-only backup key, a public
//! prefix read without a signature (and nothing else readable that way), PublicAccessBlock
//! shutting it, the owner keeping the policy APIs. A real `sublet dev`, runtime users made
//! with `sublet`, the requests made by boto3 and by plain unsigned HTTP
//! (`e2e/scripts/boto3_policies.py`). Skips without boto3, as the client tests do.

use sublet_e2e::dev::SubletDev;
use sublet_e2e::skip;

#[test]
fn policies_share_read_only_make_write_only_keys_and_open_only_a_public_prefix() {
    if !skip::clients_present(&["boto3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let alice = dev.user_with_key("alice", &["photos:rw", "backups:rw"]);
    // bob's key has no grant on alice's buckets: only her policy lets him in.
    let bob = dev.user_with_key("bob", &["bobs:rw"]);
    let backup = dev.user_with_key("backupbot", &["backups:rw"]);
    crate::boto3_users_script_passes(
        &dev,
        "boto3_policies.py",
        &[("ALICE", &alice), ("BOB", &bob), ("BACKUP", &backup)],
        "policy checks passed",
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
    let carol = dev.user_with_key("carol", &["homes:rw"]);
    // Their keys have no grant on `homes`: only the policy lets them in.
    let alice = dev.user_with_key("alice", &["alices:rw"]);
    let bob = dev.user_with_key("bob", &["bobs:rw"]);
    crate::boto3_users_script_passes(
        &dev,
        "boto3_policy_variables.py",
        &[("CAROL", &carol), ("ALICE", &alice), ("BOB", &bob)],
        "policy variable checks passed",
    );
}
