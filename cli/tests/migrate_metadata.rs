//! `sublet migrate-metadata`: the command line around the copy (the copy into PostgreSQL
//! itself is tested in the library, where the tests start a PostgreSQL server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use sublet_gateway::datapath::layout::{Encryption, Layout, Scheme};
use sublet_gateway::meta::{
    Bucket, MetadataStore, NULL_VERSION, ObjectVersion, SqliteStore, Versioning,
};

fn sublet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sublet"))
        .args(args)
        .output()
        .expect("running sublet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn version(key: &str) -> ObjectVersion {
    ObjectVersion {
        bucket: "photos".into(),
        key: key.into(),
        version_id: NULL_VERSION.into(),
        delete_marker: false,
        size: 3,
        etag: "e".into(),
        content_type: None,
        user_metadata: BTreeMap::new(),
        last_modified: 1,
        plan: "p".into(),
        layout: Some(Layout {
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encryption: Encryption::None,
            segment_size: 16,
            segments: vec![],
            inline: Some(vec![1, 2, 3]),
            parts: vec![],
        }),
        attrs: Default::default(),
    }
}

#[test]
fn copies_a_store_reports_counts_and_refuses_a_full_target_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("from.db");
    let to = dir.path().join("to.db");
    {
        let s = SqliteStore::open(&from).unwrap();
        s.create_bucket(&Bucket {
            name: "photos".into(),
            created: 1,
            default_plan: None,
            versioning: Versioning::Unversioned,
            owner: None,
        })
        .unwrap();
        s.put_version(&version("a")).unwrap();
        s.put_version(&version("b")).unwrap();
        s.record_probes(&[("n1".into(), true)], 5).unwrap();
    }
    let from_arg = format!("sqlite:{}", from.display());
    let to_arg = format!("sqlite:{}", to.display());

    let (ok, stdout, stderr) = sublet(&["migrate-metadata", "--from", &from_arg, "--to", &to_arg]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "copied 1 buckets, 2 versions, 0 lifecycle configurations, 0 uploads with 0 parts, 1 providers, 0 users, 0 access keys"
    );
    let copy = SqliteStore::open(&to).unwrap();
    assert_eq!(
        copy.version("photos", "b", None).unwrap().unwrap(),
        version("b")
    );
    drop(copy);

    let (ok, _, stderr) = sublet(&["migrate-metadata", "--from", &from_arg, "--to", &to_arg]);
    assert!(!ok);
    assert!(
        stderr.contains("the target already holds 1 bucket(s) (e.g. photos); pass --force"),
        "{stderr}"
    );
    let (ok, _, stderr) = sublet(&[
        "migrate-metadata",
        "--from",
        &from_arg,
        "--to",
        &to_arg,
        "--force",
    ]);
    assert!(ok, "{stderr}");
}

#[test]
fn bad_store_names_and_missing_sources_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite:{}", dir.path().join("nope.db").display());
    let to = format!("sqlite:{}", dir.path().join("to.db").display());
    let (ok, _, stderr) = sublet(&["migrate-metadata", "--from", &missing, "--to", &to]);
    assert!(!ok);
    assert!(
        stderr.contains("--from:") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("nope.db").exists(),
        "the source is not created"
    );

    let (ok, _, stderr) = sublet(&["migrate-metadata", "--from", "mysql:x", "--to", &to]);
    assert!(!ok);
    assert!(stderr.contains("use sqlite:PATH or postgres:"), "{stderr}");
}
