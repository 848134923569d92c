//! Bucket policies against users who want more than they were given, and strangers with
//! no key at all: a bucket shared read-only by policy, a write-only backup key, a public
//! prefix read without a signature (and nothing else readable that way), PublicAccessBlock
//! shutting it, the owner keeping the policy APIs. A real `sublet dev`, runtime users made
//! with `sublet`, the requests made by boto3 and by plain unsigned HTTP
//! (`e2e/scripts/boto3_policies.py`). Skips without boto3, as the client tests do.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sublet_e2e::clients::{run, run_ok};
use sublet_e2e::dev::SubletDev;
use sublet_e2e::{skip, workspace_binary};

const TIMEOUT: Duration = Duration::from_secs(120);

fn sublet(dev: &SubletDev, args: &[&str]) -> Command {
    let mut cmd = Command::new(workspace_binary("sublet", "sublet"));
    cmd.args(args)
        .args(["--admin-url", &format!("http://{}", dev.admin_addr)])
        .args(["--token", &dev.admin_token()]);
    cmd
}

/// A user and one key of it with `grants`: (access key, secret key).
fn user_with_key(dev: &SubletDev, user: &str, grants: &[&str]) -> (String, String) {
    run_ok(&mut sublet(dev, &["user", "create", user]), TIMEOUT);
    let mut args = vec!["key", "create", "--user", user];
    for g in grants {
        args.extend(["--grant", g]);
    }
    let out = run_ok(&mut sublet(dev, &args), TIMEOUT);
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in {out}"))
            .trim()
            .to_owned()
    };
    (field("access key:"), field("secret key:"))
}

fn metrics(dev: &SubletDev) -> String {
    let mut s = std::net::TcpStream::connect(dev.admin_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn policies_share_read_only_make_write_only_keys_and_open_only_a_public_prefix() {
    if !skip::clients_present(&["boto3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let (alice_key, alice_secret) = user_with_key(&dev, "alice", &["photos:rw", "backups:rw"]);
    // bob's key has no grant on alice's buckets: only her policy lets him in.
    let (bob_key, bob_secret) = user_with_key(&dev, "bob", &["bobs:rw"]);
    let (backup_key, backup_secret) = user_with_key(&dev, "backupbot", &["backups:rw"]);

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
    let scraped = metrics(&dev);
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
    let (carol_key, carol_secret) = user_with_key(&dev, "carol", &["homes:rw"]);
    // Their keys have no grant on `homes`: only the policy lets them in.
    let (alice_key, alice_secret) = user_with_key(&dev, "alice", &["alices:rw"]);
    let (bob_key, bob_secret) = user_with_key(&dev, "bob", &["bobs:rw"]);
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
