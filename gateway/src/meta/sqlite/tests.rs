//! The group commit's undoing of failed changes, and the point reads' connection.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};

use super::{GroupDelivery, GroupJob, SqliteStore, commit_group};
use crate::meta::{Bucket, MetadataStore, ObjectVersion, Upload, Versioning};

type Outcomes = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A change that inserts bucket `name` and then succeeds or fails as `fails` says (having
/// written its row either way); `ends_transaction` makes it fail as SQLITE_FULL does, by
/// ending the whole transaction. Its delivery records the commit's outcome.
fn job(name: &str, fails: bool, ends_transaction: bool, outcomes: &Outcomes) -> (u64, GroupJob) {
    let (name, outcomes) = (name.to_owned(), Arc::clone(outcomes));
    let job: GroupJob = Box::new(move |conn: &Connection| {
        conn.execute(
            "INSERT INTO buckets (name, created, versioning) VALUES (?1, 1, 'Unversioned')",
            params![name],
        )
        .unwrap();
        if ends_transaction {
            conn.execute_batch("ROLLBACK").unwrap();
        }
        let deliver: GroupDelivery = Box::new(move |error: Option<&str>| {
            outcomes
                .lock()
                .unwrap()
                .push((name, error.map(str::to_owned)));
        });
        (!fails, deliver)
    });
    (0, job)
}

fn bucket_names(s: &SqliteStore) -> Vec<String> {
    s.buckets().unwrap().into_iter().map(|b| b.name).collect()
}

#[test]
fn a_failed_change_is_undone_alone_wherever_it_falls_in_its_group() {
    let s = SqliteStore::open_in_memory().unwrap();
    let outcomes = Outcomes::default();
    // Two failures before the first success (no savepoint: the transaction is rolled back
    // and begun again), then failures and successes under savepoints.
    let jobs = vec![
        job("a1", true, false, &outcomes),
        job("a2", true, false, &outcomes),
        job("b", false, false, &outcomes),
        job("c", true, false, &outcomes),
        job("d", false, false, &outcomes),
        job("e", true, false, &outcomes),
    ];
    commit_group(&mut s.conn(), jobs);
    assert_eq!(bucket_names(&s), ["b", "d"]);
    let outcomes = outcomes.lock().unwrap();
    let names: Vec<_> = outcomes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a1", "a2", "b", "c", "d", "e"]);
    assert!(
        outcomes.iter().all(|(_, e)| e.is_none()),
        "the commit itself succeeded: {outcomes:?}"
    );
}

#[test]
fn a_first_change_whose_failure_ended_the_transaction_fails_alone() {
    let s = SqliteStore::open_in_memory().unwrap();
    let outcomes = Outcomes::default();
    let jobs = vec![
        job("gone", true, true, &outcomes),
        job("kept", false, false, &outcomes),
    ];
    commit_group(&mut s.conn(), jobs);
    assert_eq!(bucket_names(&s), ["kept"]);
    assert!(outcomes.lock().unwrap().iter().all(|(_, e)| e.is_none()));
}

#[test]
fn a_lone_change_that_fails_commits_nothing_and_the_next_group_works() {
    let s = SqliteStore::open_in_memory().unwrap();
    let outcomes = Outcomes::default();
    commit_group(&mut s.conn(), vec![job("x", true, false, &outcomes)]);
    assert!(bucket_names(&s).is_empty());
    commit_group(&mut s.conn(), vec![job("y", false, false, &outcomes)]);
    assert_eq!(bucket_names(&s), ["y"]);
}

fn version(key: &str, size: u64) -> ObjectVersion {
    ObjectVersion {
        bucket: "b".into(),
        key: key.into(),
        version_id: "null".into(),
        delete_marker: false,
        size,
        etag: format!("etag-{size}"),
        content_type: None,
        user_metadata: Default::default(),
        last_modified: 5,
        plan: "standard".into(),
        layout: None,
        attrs: Default::default(),
    }
}

fn store_with_bucket(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    let s = SqliteStore::open(&dir.path().join("meta.db")).unwrap();
    s.create_bucket(&Bucket {
        name: "b".into(),
        created: 1,
        default_plan: None,
        versioning: Versioning::Unversioned,
        owner: None,
    })
    .unwrap();
    Arc::new(s)
}

#[test]
fn point_reads_do_not_wait_for_the_writing_connection() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_bucket(&dir);
    s.put_version(&version("k", 7)).unwrap();
    s.set_bucket_tags("b", Some("{\"t\":\"1\"}")).unwrap();
    s.create_upload(&Upload {
        bucket: "b".into(),
        key: "k".into(),
        upload_id: "u1".into(),
        plan: "standard".into(),
        content_type: None,
        user_metadata: Default::default(),
        initiated: 7,
        attrs: Default::default(),
    })
    .unwrap();
    // As a group commit does across its fsync.
    let writing = s.conn();
    let (tx, rx) = mpsc::channel();
    let reads = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let found = (
                s.bucket("b").unwrap().map(|b| b.name),
                s.version("b", "k", None).unwrap().map(|v| v.size),
                s.bucket_tags("b").unwrap(),
                s.upload("b", "k", "u1").unwrap().map(|u| u.initiated),
            );
            tx.send(found).unwrap();
        })
    };
    let found = rx.recv_timeout(Duration::from_secs(20));
    drop(writing);
    reads.join().unwrap();
    assert_eq!(
        found.expect("the point reads waited for the writing connection"),
        (
            Some("b".to_owned()),
            Some(7),
            Some("{\"t\":\"1\"}".to_owned()),
            Some(7)
        )
    );
}

#[test]
fn a_point_read_sees_every_write_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_bucket(&dir);
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let key = format!("t{t}");
                    s.put_version(&version(&key, i)).unwrap();
                    let seen = s.version("b", &key, None).unwrap().map(|v| v.size);
                    assert_eq!(seen, Some(i), "{key} read back after its write {i}");
                }
                s.delete_version("b", &format!("t{t}"), "null").unwrap();
                assert!(s.version("b", &format!("t{t}"), None).unwrap().is_none());
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
}
