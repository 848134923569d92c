//! Users and access keys made at runtime: `sublet user` and `sublet key` against a running
//! `sublet dev`, the keys used by the AWS CLI, and what disabling, rotating and quotas do
//! to it. Skips (one `SKIP` line) without the AWS CLI, as the client tests do.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use sublet_e2e::clients::{run, run_ok};
use sublet_e2e::dev::{SubletDev, printed_field};
use sublet_e2e::skip;

const TIMEOUT: Duration = Duration::from_secs(120);

/// `aws --endpoint-url ... ARGS` signed with `access`/`secret`.
fn aws(dev: &SubletDev, access: &str, secret: &str, args: &[&str]) -> Command {
    let mut cmd = dev.client("aws");
    cmd.env("AWS_ACCESS_KEY_ID", access)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["--endpoint-url", &dev.endpoint()])
        .args(args);
    cmd
}

#[test]
fn users_and_keys_are_managed_at_runtime_and_quotas_hold() {
    if !skip::clients_present(&["aws"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let file = tmp.path().join("object.txt");
    std::fs::write(&file, b"hello from alice").unwrap();
    let file = file.to_str().unwrap();

    let out = run_ok(
        &mut dev.admin_command(&["user", "create", "alice", "--max-objects", "2"]),
        TIMEOUT,
    );
    assert_eq!(out, "user alice created\n");
    let out = run_ok(
        &mut dev.admin_command(&["key", "create", "--user", "alice", "--grant", "photos:rw"]),
        TIMEOUT,
    );
    let access = printed_field(&out, "access key:");
    let secret = printed_field(&out, "secret key:");

    // The new key works at once, within its grants; its bucket is alice's.
    run_ok(
        &mut aws(
            &dev,
            &access,
            &secret,
            &["s3api", "create-bucket", "--bucket", "photos"],
        ),
        TIMEOUT,
    );
    // `aws s3api put-object` of the file as `key` into alice's bucket, with her key.
    let put = |key: &str| {
        aws(
            &dev,
            &access,
            &secret,
            &[
                "s3api",
                "put-object",
                "--bucket",
                "photos",
                "--key",
                key,
                "--body",
                file,
            ],
        )
    };
    for key in ["a.txt", "b.txt"] {
        run_ok(&mut put(key), TIMEOUT);
    }
    let denied = run(
        &mut aws(
            &dev,
            &access,
            &secret,
            &["s3api", "create-bucket", "--bucket", "other"],
        ),
        TIMEOUT,
    );
    assert!(
        !denied.status.success() && denied.stderr.contains("AccessDenied"),
        "{denied:?}"
    );

    // Quota: a third object is refused, naming the user and the limit.
    let over = run(&mut put("c.txt"), TIMEOUT);
    assert!(
        !over.status.success()
            && over.stderr.contains("QuotaExceeded")
            && over
                .stderr
                .contains("user alice is over its quota of 2 objects"),
        "{over:?}"
    );
    let users = run_ok(&mut dev.admin_command(&["user", "list"]), TIMEOUT);
    let alice = users.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(
        alice.split_whitespace().collect::<Vec<_>>()[..4] == ["alice", "alice", "2", "2"],
        "{users}"
    );
    let scraped = dev.metrics();
    assert!(
        scraped.contains("sublet_gateway_user_objects{user=\"alice\"} 2"),
        "{scraped}"
    );

    // `none` lifts the quota: the third object goes in.
    let out = run_ok(
        &mut dev.admin_command(&["user", "create", "alice", "--max-objects", "none"]),
        TIMEOUT,
    );
    assert_eq!(out, "user alice configured\n");
    run_ok(&mut put("c.txt"), TIMEOUT);

    // Lists never show a secret; the configuration's key is listed and kept.
    let keys = run_ok(&mut dev.admin_command(&["key", "list"]), TIMEOUT);
    assert!(keys.contains(&access) && !keys.contains(&secret), "{keys}");
    assert!(keys.contains(&dev.access_key), "{keys}");
    let refused = run(
        &mut dev.admin_command(&["key", "delete", &dev.access_key]),
        TIMEOUT,
    );
    assert!(
        !refused.status.success() && refused.stderr.contains("configuration file"),
        "{refused:?}"
    );

    // Rotation: the old secret is refused, the new one works.
    let out = run_ok(&mut dev.admin_command(&["key", "rotate", &access]), TIMEOUT);
    let rotated = printed_field(&out, "secret key:");
    assert_ne!(rotated, secret);
    let get = |secret: &str| {
        run(
            &mut aws(
                &dev,
                &access,
                secret,
                &[
                    "s3api",
                    "head-object",
                    "--bucket",
                    "photos",
                    "--key",
                    "a.txt",
                ],
            ),
            TIMEOUT,
        )
    };
    assert!(!get(&secret).status.success(), "the old secret still works");
    assert!(get(&rotated).status.success(), "{:?}", get(&rotated));

    // Disabled: refused within the refresh bound (here at once: the change is this
    // gateway's own); enabled again: accepted.
    run_ok(
        &mut dev.admin_command(&["key", "disable", &access]),
        TIMEOUT,
    );
    let start = Instant::now();
    let refused = get(&rotated);
    assert!(!refused.status.success(), "a disabled key was accepted");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    run_ok(&mut dev.admin_command(&["key", "enable", &access]), TIMEOUT);
    assert!(get(&rotated).status.success());

    // A user with keys stays; without, it goes.
    let refused = run(
        &mut dev.admin_command(&["user", "delete", "alice"]),
        TIMEOUT,
    );
    assert!(
        !refused.status.success() && refused.stderr.contains("still has access keys"),
        "{refused:?}"
    );
    run_ok(&mut dev.admin_command(&["key", "delete", &access]), TIMEOUT);
    assert!(
        !get(&rotated).status.success(),
        "a deleted key was accepted"
    );
}
