//! What only several processes sharing one database can get wrong: each `PostgresStore`
//! here has its own connections, as two gateway replicas would.

use std::collections::BTreeMap;
use std::sync::Barrier;

use super::*;
use crate::datapath::layout::{Encryption, Scheme, Segment, ShardLocation};
use crate::meta::test_postgres;
use crate::meta::{NULL_VERSION, copy_store};

/// Two stores (two "gateways") on one fresh database.
fn two_gateways() -> Option<(PostgresStore, PostgresStore)> {
    let url = test_postgres::database()?;
    Some((
        PostgresStore::open(&url).unwrap(),
        PostgresStore::open(&url).unwrap(),
    ))
}

fn bucket(name: &str, versioning: Versioning) -> Bucket {
    Bucket {
        name: name.into(),
        created: 1,
        default_plan: None,
        versioning,
        owner: None,
    }
}

fn layout(provider: &str, id: &str) -> Layout {
    Layout {
        scheme: Scheme::Erasure { data: 1, parity: 1 },
        encryption: Encryption::None,
        segment_size: 16,
        segments: vec![Segment {
            plain_length: 4,
            sealed_length: 4,
            shards: ["a", "b"]
                .iter()
                .map(|i| ShardLocation {
                    provider: provider.into(),
                    shard_id: format!("{id}.{i}"),
                    hash: "h".into(),
                    length: 4,
                })
                .collect(),
        }],
        inline: None,
        parts: vec![],
    }
}

fn version(key: &str, id: &str, tag: &str) -> ObjectVersion {
    ObjectVersion {
        bucket: "b".into(),
        key: key.into(),
        version_id: id.into(),
        delete_marker: false,
        size: 4,
        etag: tag.into(),
        content_type: None,
        user_metadata: BTreeMap::new(),
        last_modified: 1,
        plan: "p".into(),
        layout: Some(layout("n1", tag)),
        attrs: Default::default(),
    }
}

/// Runs `f(i, store)` on `n` threads at once, alternating between the two stores.
fn race<T: Send>(
    stores: &(PostgresStore, PostgresStore),
    n: usize,
    f: impl Fn(usize, &PostgresStore) -> T + Sync,
) -> Vec<T> {
    let start = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (start, f) = (&start, &f);
                let store = if i % 2 == 0 { &stores.0 } else { &stores.1 };
                s.spawn(move || {
                    start.wait();
                    f(i, store)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrent_versioned_puts_all_commit_and_agree_on_the_latest() {
    let Some(g) = two_gateways() else { return };
    g.0.create_bucket(&bucket("b", Versioning::Enabled))
        .unwrap();
    let rounds = race(&g, 8, |i, s| {
        for r in 0..10 {
            s.put_version(&version("k", &format!("v{i}-{r}"), &format!("t{i}-{r}")))
                .unwrap();
        }
    });
    assert_eq!(rounds.len(), 8);
    let page =
        g.1.list_versions(
            "b",
            &VersionQuery {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        page.versions.len(),
        80,
        "every put committed its own version"
    );
    let latest: Vec<_> = page.versions.iter().filter(|e| e.is_latest).collect();
    assert_eq!(latest.len(), 1);
    // Both gateways read the same latest version, the one listed first.
    let a = g.0.version("b", "k", None).unwrap().unwrap();
    let b = g.1.version("b", "k", None).unwrap().unwrap();
    assert_eq!(a, b);
    assert_eq!(a, latest[0].version);
    assert_eq!(a, page.versions[0].version);
    // The shard index holds exactly the versions' shards.
    assert_eq!(g.0.provider_usage().unwrap()["n1"], (160, 640));
}

#[test]
fn concurrent_null_version_puts_replace_each_other_without_losing_one() {
    let Some(g) = two_gateways() else { return };
    g.0.create_bucket(&bucket("b", Versioning::Unversioned))
        .unwrap();
    let outcomes = race(&g, 8, |i, s| {
        (0..5)
            .map(|r| {
                s.put_version(&version("k", NULL_VERSION, &format!("t{i}-{r}")))
                    .unwrap()
                    .replaced
            })
            .collect::<Vec<_>>()
    });
    let mut replaced: Vec<String> = outcomes
        .into_iter()
        .flatten()
        .flatten()
        .map(|v| v.etag)
        .collect();
    // Every write but the surviving one was replaced by exactly one later write, so
    // each superseded version's shards are reported for deletion exactly once.
    assert_eq!(replaced.len(), 39);
    let survivor = g.1.version("b", "k", None).unwrap().unwrap().etag;
    replaced.push(survivor);
    replaced.sort();
    replaced.dedup();
    assert_eq!(replaced.len(), 40);
    assert_eq!(g.0.provider_usage().unwrap()["n1"], (2, 8));
}

#[test]
fn concurrent_layout_swaps_have_one_winner() {
    let Some(g) = two_gateways() else { return };
    g.0.create_bucket(&bucket("b", Versioning::Unversioned))
        .unwrap();
    g.0.put_version(&version("k", NULL_VERSION, "old")).unwrap();
    let current = g.0.version("b", "k", None).unwrap().unwrap();
    let seq = g.0.run(|c| {
        c.query_one("SELECT seq FROM versions", &[])
            .map_err(pg_err)?
            .try_get::<_, i64>(0)
            .map_err(pg_err)
    });
    let seq = seq.unwrap();
    let expected = current.layout.clone().unwrap();
    let wins = race(&g, 8, |i, s| {
        s.replace_layout(seq, &expected, &layout("n2", &format!("new{i}")))
            .unwrap()
    });
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    let winner = wins.iter().position(|w| *w).unwrap();
    let now = g.1.version("b", "k", None).unwrap().unwrap();
    assert_eq!(now.layout, Some(layout("n2", &format!("new{winner}"))));
    assert_eq!(g.1.provider_usage().unwrap().get("n1"), None);

    // The same for plan transitions (swap_layout).
    let wins = race(&g, 8, |i, s| {
        s.swap_layout(&now, &format!("plan{i}"), &layout("n3", &format!("t{i}")))
            .unwrap()
    });
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    assert_eq!(g.0.provider_usage().unwrap()["n3"], (2, 8));
    assert_eq!(g.0.provider_usage().unwrap().get("n2"), None);
}

#[test]
fn concurrent_completions_of_one_upload_have_one_winner() {
    let Some(g) = two_gateways() else { return };
    g.0.create_bucket(&bucket("b", Versioning::Enabled))
        .unwrap();
    g.0.create_upload(&Upload {
        bucket: "b".into(),
        key: "k".into(),
        upload_id: "u1".into(),
        plan: "p".into(),
        content_type: None,
        user_metadata: BTreeMap::new(),
        initiated: 1,
        attrs: Default::default(),
    })
    .unwrap();
    let part = UploadPart {
        part_number: 1,
        size: 4,
        etag: "e1".into(),
        last_modified: 1,
        layout: layout("n1", "part1"),
        checksums: Default::default(),
    };
    g.1.put_part("b", "k", "u1", &part).unwrap();
    let results = race(&g, 8, |i, s| {
        s.complete_upload(
            "u1",
            &[(1, "e1".into())],
            &version("k", &format!("v{i}"), &format!("t{i}")),
        )
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, MetaError::NoSuchUpload { .. })),
        "the losers are told the upload is gone"
    );
    let page =
        g.0.list_versions(
            "b",
            &VersionQuery {
                max_keys: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.versions.len(), 1);
    assert!(matches!(
        g.1.put_part("b", "k", "u1", &part),
        Err(MetaError::NoSuchUpload { .. })
    ));
}

#[test]
fn repair_claims_exclude_other_processes_until_released_or_expired() {
    let Some(g) = two_gateways() else { return };
    assert!(g.0.claim_repair(7, "gw-a", 1_000, 500).unwrap());
    assert!(!g.1.claim_repair(7, "gw-b", 1_200, 500).unwrap());
    assert!(g.0.claim_repair(7, "gw-a", 1_300, 500).unwrap(), "renewal");
    assert!(g.1.claim_repair(8, "gw-b", 1_300, 500).unwrap());
    g.1.release_repair(7, "gw-b").unwrap();
    assert!(
        !g.1.claim_repair(7, "gw-b", 1_400, 500).unwrap(),
        "only the holder releases"
    );
    g.0.release_repair(7, "gw-a").unwrap();
    assert!(g.1.claim_repair(7, "gw-b", 1_400, 500).unwrap());
    assert!(
        g.0.claim_repair(7, "gw-a", 1_900, 500).unwrap(),
        "an expired lease is taken over"
    );
    let wins = race(&g, 8, |i, s| {
        s.claim_repair(9, &format!("gw{i}"), 5_000, 500).unwrap()
    });
    assert_eq!(wins.iter().filter(|w| **w).count(), 1);
}

#[test]
fn migrates_from_sqlite_and_snapshots_back_into_sqlite() {
    let Some(url) = test_postgres::database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lite = crate::meta::SqliteStore::open(&dir.path().join("m.db")).unwrap();
    lite.create_bucket(&bucket("b", Versioning::Enabled))
        .unwrap();
    lite.create_bucket(&bucket("empty", Versioning::Suspended))
        .unwrap();
    lite.set_lifecycle("b", Some("{\"rules\":[]}")).unwrap();
    for i in 0..3 {
        lite.put_version(&version("k", &format!("v{i}"), &format!("t{i}")))
            .unwrap();
    }
    lite.put_version(&version("j", "v9", "t9")).unwrap();
    lite.create_upload(&Upload {
        bucket: "b".into(),
        key: "up".into(),
        upload_id: "u1".into(),
        plan: "p".into(),
        content_type: Some("text/plain".into()),
        user_metadata: BTreeMap::new(),
        initiated: 3,
        attrs: Default::default(),
    })
    .unwrap();
    for n in 1..=2 {
        lite.put_part(
            "b",
            "up",
            "u1",
            &UploadPart {
                part_number: n,
                size: 4,
                etag: format!("e{n}"),
                last_modified: 1,
                layout: layout("n4", &format!("p{n}")),
                checksums: Default::default(),
            },
        )
        .unwrap();
    }
    lite.record_probes(&[("n1".into(), true)], 100).unwrap();
    lite.record_probes(&[("n1".into(), false)], 150).unwrap();
    lite.record_pools(&[("n1".into(), "home".into())], 100)
        .unwrap();

    lite.put_user(&crate::meta::tests::user("alice")).unwrap();
    lite.put_key(&crate::meta::tests::key("AKALICE", "alice"))
        .unwrap();
    let acl = "{\"owner\":\"alice\",\"grants\":[]}";
    lite.set_bucket_acl("b", Some(acl)).unwrap();
    lite.set_bucket_ownership("b", Some("BucketOwnerPreferred"))
        .unwrap();
    let object_acl = crate::meta::acl::Canned::PublicRead
        .object_acl("bob", "alice")
        .unwrap();
    assert!(
        lite.set_object_acl("b", "k", "v1", Some(&object_acl))
            .unwrap()
    );

    let pg = PostgresStore::open(&url).unwrap();
    let counts = copy_store(&lite, &pg, false).unwrap();
    assert_eq!(
        counts,
        crate::meta::CopyCounts {
            buckets: 2,
            versions: 4,
            lifecycle_rules: 1,
            uploads: 1,
            parts: 2,
            providers: 1,
            users: 1,
            keys: 1,
        }
    );
    assert_eq!(pg.users().unwrap(), lite.users().unwrap());
    assert_eq!(pg.keys().unwrap(), lite.keys().unwrap());
    assert_eq!(pg.buckets().unwrap(), lite.buckets().unwrap());
    assert_eq!(
        pg.version("b", "k", None).unwrap().unwrap().version_id,
        "v2",
        "the latest stays the latest"
    );
    assert_eq!(pg.providers_seen().unwrap(), lite.providers_seen().unwrap());
    assert_eq!(pg.provider_pools().unwrap()["n1"], "home");
    assert_eq!(pg.provider_usage().unwrap(), lite.provider_usage().unwrap());
    assert_eq!(
        pg.lifecycle("b").unwrap().as_deref(),
        Some("{\"rules\":[]}")
    );
    assert_eq!(pg.parts("b", "up", "u1", 0, 10).unwrap().len(), 2);
    // ACLs and ownership go along: the bucket's settings and each version's own.
    assert_eq!(pg.bucket_acl("b").unwrap().as_deref(), Some(acl));
    assert_eq!(
        pg.bucket_ownership("b").unwrap().as_deref(),
        Some("BucketOwnerPreferred")
    );
    assert_eq!(
        pg.version("b", "k", Some("v1")).unwrap().unwrap().attrs.acl,
        Some(object_acl.clone())
    );
    let err = copy_store(&lite, &pg, false).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    copy_store(&lite, &pg, true).unwrap();
    assert_eq!(pg.provider_usage().unwrap(), lite.provider_usage().unwrap());

    let snap = dir.path().join("snap.db");
    pg.snapshot_into(&snap).unwrap();
    assert!(pg.snapshot_into(&snap).is_err(), "an existing file is kept");
    let back = crate::meta::SqliteStore::open(&snap).unwrap();
    assert_eq!(back.buckets().unwrap(), lite.buckets().unwrap());
    let all = |s: &dyn MetadataStore| {
        s.list_versions(
            "b",
            &VersionQuery {
                max_keys: 100,
                ..Default::default()
            },
        )
        .unwrap()
        .versions
    };
    assert_eq!(all(&back), all(&lite));
    assert_eq!(back.bucket_acl("b").unwrap().as_deref(), Some(acl));
    assert_eq!(
        back.bucket_ownership("b").unwrap().as_deref(),
        Some("BucketOwnerPreferred")
    );
    assert_eq!(back.referenced_shards("n4").unwrap().len(), 4);
}

#[test]
fn data_survives_reconnecting_and_bad_urls_are_named() {
    let Some(url) = test_postgres::database() else {
        return;
    };
    {
        let s = PostgresStore::open(&url).unwrap();
        s.create_bucket(&bucket("b", Versioning::Unversioned))
            .unwrap();
        s.put_version(&version("k", NULL_VERSION, "t")).unwrap();
    }
    let s = PostgresStore::open(&url).unwrap();
    assert_eq!(s.version("b", "k", None).unwrap().unwrap().etag, "t");
    let err = PostgresStore::open("postgres://x:y@host:notaport/db").unwrap_err();
    assert!(
        err.to_string().contains("PostgreSQL URL does not parse"),
        "{err}"
    );
    // Nothing listens on port 1: an error, not a hang or a panic.
    let err = PostgresStore::open("postgres://sublet@127.0.0.1:1/x").unwrap_err();
    assert!(
        err.to_string().starts_with("metadata store: postgres: "),
        "{err}"
    );
}

#[test]
fn calls_from_a_runtime_thread_do_not_panic() {
    let Some(url) = test_postgres::database() else {
        return;
    };
    // The bare client panics there ("cannot start a runtime from within a runtime");
    // the store must not. Directly on the only thread of a current-thread runtime, as
    // metrics and admin handlers call it, and in spawn_blocking on a multi-thread one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = PostgresStore::open(&url).unwrap();
        s.create_bucket(&bucket("b", Versioning::Unversioned))
            .unwrap();
        assert_eq!(s.buckets().unwrap().len(), 1);
        s
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = std::sync::Arc::new(s);
    let n = rt.block_on(async move {
        assert_eq!(s.buckets().unwrap().len(), 1);
        tokio::task::spawn_blocking(move || s.buckets().unwrap().len())
            .await
            .unwrap()
    });
    assert_eq!(n, 1);
}

#[test]
fn shared_policies_change_once_per_revision() {
    let Some(g) = two_gateways() else { return };
    assert!(g.0.shares_policies());
    assert_eq!(g.0.shared_policies().unwrap(), None);
    // Both gateways seed at once: one wins.
    let first = g.0.put_shared_policies(0, "applied: []").unwrap();
    assert_eq!(first, Some(1));
    assert_eq!(g.1.put_shared_policies(0, "applied: [x]").unwrap(), None);
    // A change on a stale revision is refused; on the current one it goes through.
    assert_eq!(g.1.put_shared_policies(1, "deleted: []").unwrap(), Some(2));
    assert_eq!(g.0.put_shared_policies(1, "applied: [y]").unwrap(), None);
    assert_eq!(
        g.0.shared_policies().unwrap(),
        Some((2, "deleted: []".to_owned()))
    );
}

/// Runs `f` on a plain thread and gives its result, or fails the test after `limit` (a call
/// that waits without end fails here rather than hanging the run).
fn within<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the call was still waiting: a wait without bound")
}

#[test]
fn a_caller_finding_every_connection_busy_is_told_so_within_the_wait() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let Some(url) = test_postgres::database() else {
        return;
    };
    let options = PgPoolOptions {
        size: 1,
        wait: Duration::from_millis(300),
    };
    let s = Arc::new(PostgresStore::open_with(&url, options).unwrap());
    s.create_bucket(&bucket("b", Versioning::Unversioned))
        .unwrap();
    // The one connection is taken by a call that lasts until told to end.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (taken, is_taken) = std::sync::mpsc::channel::<()>();
    let holder = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            s.run(move |_c| {
                taken.send(()).unwrap();
                held.recv().unwrap();
                Ok(())
            })
        })
    };
    is_taken.recv().unwrap();
    let started = Instant::now();
    let busy = {
        let s = Arc::clone(&s);
        within(Duration::from_secs(5), move || s.bucket("b"))
    };
    let waited = started.elapsed();
    match busy {
        Err(MetaError::Busy(m)) => assert!(
            m.contains("all 1 PostgreSQL connections") && m.contains("stayed busy"),
            "{m}"
        ),
        other => panic!("expected busy, got {other:?}"),
    }
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // Once it is given back, the next caller gets it.
    release.send(()).unwrap();
    holder.join().unwrap().unwrap();
    assert!(s.bucket("b").unwrap().is_some());
    assert_eq!(s.open_connections(), 1);
}

#[test]
fn aggregate_reads_wait_for_their_turn_within_the_wait() {
    use std::sync::Arc;
    use std::time::Duration;
    let Some(url) = test_postgres::database() else {
        return;
    };
    let options = PgPoolOptions {
        size: 8,
        wait: Duration::from_millis(300),
    };
    let s = Arc::new(PostgresStore::open_with(&url, options).unwrap());
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Arc::new(Mutex::new(held));
    let (taken, is_taken) = std::sync::mpsc::channel::<()>();
    let holders: Vec<_> = (0..MAX_AGGREGATE_CONNECTIONS)
        .map(|_| {
            let (s, held, taken) = (Arc::clone(&s), Arc::clone(&held), taken.clone());
            std::thread::spawn(move || {
                s.run_aggregate(move |_c| {
                    taken.send(()).unwrap();
                    held.lock().unwrap().recv().unwrap();
                    Ok(())
                })
            })
        })
        .collect();
    for _ in 0..MAX_AGGREGATE_CONNECTIONS {
        is_taken.recv().unwrap();
    }
    let busy = {
        let s = Arc::clone(&s);
        within(Duration::from_secs(5), move || s.plan_usage())
    };
    assert!(matches!(busy, Err(MetaError::Busy(_))), "{busy:?}");
    // Plain calls still get the connections aggregate reads leave free.
    assert!(s.buckets().unwrap().is_empty());
    for _ in 0..MAX_AGGREGATE_CONNECTIONS {
        release.send(()).unwrap();
    }
    for h in holders {
        h.join().unwrap().unwrap();
    }
    assert!(s.plan_usage().unwrap().is_empty());
}
