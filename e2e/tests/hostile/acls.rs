//! ACLs and object ownership against users who want more than they were given, and
//! strangers with no key: a public-read object fetched unsigned (and nothing private
//! beside it), PublicAccessBlock's IgnorePublicAcls and BlockPublicAcls, a grant to a
//! second user by id, BucketOwnerEnforced refusing ACLs, S3's errors for bad ACLs
//! (`e2e/scripts/boto3_acls.py`), and `aws s3api` ACL round trips. A real `sublet dev`,
//! runtime users made with `sublet`. Skips without boto3 and the aws CLI.

use std::time::Duration;

use sublet_e2e::clients::run;
use sublet_e2e::dev::SubletDev;
use sublet_e2e::skip;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn acls_open_objects_to_strangers_and_users_by_grant_and_ownership_turns_them_off() {
    if !skip::clients_present(&["boto3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let alice = dev.user_with_key("alice", &["album:rw", "dropbox:rw", "enforced:rw"]);
    // bob's key has no grant on alice's buckets: only her ACLs let him in.
    let bob = dev.user_with_key("bob", &["bobs:rw"]);
    crate::boto3_users_script_passes(
        &dev,
        "boto3_acls.py",
        &[("ALICE", &alice), ("BOB", &bob)],
        "acl checks passed",
    );
}

#[test]
fn aws_s3api_acl_round_trips() {
    if !skip::clients_present(&["aws"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dev = SubletDev::start(&tmp.path().join("state"));
    let (alice_key, alice_secret) = dev.user_with_key("alice", &["shared:rw"]);
    let (bob_key, bob_secret) = dev.user_with_key("bob", &["bobs:rw"]);
    let body = tmp.path().join("note.txt");
    std::fs::write(&body, b"for bob").unwrap();
    let aws = |key: &str, secret: &str, args: &[&str]| {
        let mut cmd = dev.client("aws");
        cmd.env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .args([
                "--endpoint-url",
                &dev.endpoint(),
                "--output",
                "json",
                "s3api",
            ])
            .args(args);
        run(&mut cmd, TIMEOUT)
    };
    let alice = |args: &[&str]| {
        let out = aws(&alice_key, &alice_secret, args);
        assert!(out.status.success(), "aws s3api {args:?}: {out:?}");
        out.stdout
    };
    alice(&["create-bucket", "--bucket", "shared"]);
    alice(&[
        "put-object",
        "--bucket",
        "shared",
        "--key",
        "note.txt",
        "--body",
        body.to_str().unwrap(),
    ]);

    // Bucket ACL: canned, then read back.
    alice(&[
        "put-bucket-acl",
        "--bucket",
        "shared",
        "--acl",
        "public-read",
    ]);
    let acl: serde_json::Value =
        serde_json::from_str(&alice(&["get-bucket-acl", "--bucket", "shared"])).unwrap();
    assert_eq!(acl["Owner"]["ID"], "alice", "{acl}");
    let grants = acl["Grants"].as_array().unwrap();
    assert!(
        grants.iter().any(|g| g["Grantee"]["URI"]
            == "http://acs.amazonaws.com/groups/global/AllUsers"
            && g["Permission"] == "READ"),
        "{acl}"
    );

    // Object ACL: a grant to bob by id, read back, and in force for bob.
    let bob_get = || {
        aws(
            &bob_key,
            &bob_secret,
            &[
                "get-object",
                "--bucket",
                "shared",
                "--key",
                "note.txt",
                tmp.path().join("got.txt").to_str().unwrap(),
            ],
        )
    };
    let refused = bob_get();
    assert!(
        !refused.status.success() && refused.stderr.contains("AccessDenied"),
        "{refused:?}"
    );
    alice(&[
        "put-object-acl",
        "--bucket",
        "shared",
        "--key",
        "note.txt",
        "--grant-read",
        "id=bob",
        "--grant-full-control",
        "id=alice",
    ]);
    let acl: serde_json::Value = serde_json::from_str(&alice(&[
        "get-object-acl",
        "--bucket",
        "shared",
        "--key",
        "note.txt",
    ]))
    .unwrap();
    let shown: Vec<(String, String)> = acl["Grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["Grantee"]["ID"].as_str().unwrap_or_default().to_owned(),
                g["Permission"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        shown.contains(&("bob".into(), "READ".into()))
            && shown.contains(&("alice".into(), "FULL_CONTROL".into())),
        "{acl}"
    );
    let got = bob_get();
    assert!(got.status.success(), "{got:?}");
    assert_eq!(
        std::fs::read(tmp.path().join("got.txt")).unwrap(),
        b"for bob"
    );

    // A bogus canned ACL: 400 InvalidArgument, not 200.
    let out = aws(
        &alice_key,
        &alice_secret,
        &["put-bucket-acl", "--bucket", "shared", "--acl", "everyone"],
    );
    assert!(
        !out.status.success() && out.stderr.contains("InvalidArgument"),
        "{out:?}"
    );
}
