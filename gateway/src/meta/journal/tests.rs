use std::collections::BTreeMap;

use super::*;
use crate::datapath::layout::{Encryption, Scheme};
use crate::meta::{MetadataStore, NULL_VERSION, SqliteStore, UploadQuery, VersionQuery};

impl Journal {
    /// Journals without a flusher, so a test can read the entries back.
    fn activate(&self) {
        self.state().active = true;
    }

    fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut self.state().pending)
            .iter()
            .map(|json| serde_json::from_slice(json).unwrap())
            .collect()
    }
}

fn master() -> Arc<MasterKey> {
    Arc::new(MasterKey::from_bytes(&[7; 32]))
}

fn layout(tag: u8) -> Layout {
    Layout {
        scheme: Scheme::Erasure { data: 2, parity: 1 },
        encryption: Encryption::None,
        segment_size: 16,
        segments: vec![],
        inline: Some(vec![tag; 3]),
        parts: vec![],
    }
}

fn version(bucket: &str, key: &str, id: &str, tag: u8) -> ObjectVersion {
    ObjectVersion {
        bucket: bucket.into(),
        key: key.into(),
        version_id: id.into(),
        delete_marker: false,
        size: 3,
        etag: format!("etag-{tag}"),
        content_type: Some("image/jpeg".into()),
        user_metadata: BTreeMap::from([("owner".to_string(), "ana".to_string())]),
        last_modified: i64::from(tag),
        plan: "standard".into(),
        layout: Some(layout(tag)),
        attrs: Default::default(),
    }
}

/// Everything a client could observe of a store, for comparing two of them.
fn observe(s: &dyn MetadataStore) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(s.users().unwrap().iter().map(|u| format!("{u:?}")));
    out.extend(s.keys().unwrap().iter().map(|k| format!("{k:?}")));
    for b in s.buckets().unwrap() {
        out.push(format!(
            "{b:?} lifecycle={:?} lock={:?} tags={:?} cors={:?} policy={:?} public_access={:?} encryption={:?} acl={:?} ownership={:?}",
            s.lifecycle(&b.name).unwrap(),
            s.bucket_lock(&b.name).unwrap(),
            s.bucket_tags(&b.name).unwrap(),
            s.bucket_cors(&b.name).unwrap(),
            s.bucket_policy(&b.name).unwrap(),
            s.public_access_block(&b.name).unwrap(),
            s.bucket_encryption(&b.name).unwrap(),
            s.bucket_acl(&b.name).unwrap(),
            s.bucket_ownership(&b.name).unwrap()
        ));
        let page = s
            .list_versions(
                &b.name,
                &VersionQuery {
                    max_keys: 1000,
                    ..VersionQuery::default()
                },
            )
            .unwrap();
        out.extend(page.versions.iter().map(|v| format!("{v:?}")));
        let uploads = s
            .uploads(
                &b.name,
                &UploadQuery {
                    max_uploads: 1000,
                    ..UploadQuery::default()
                },
            )
            .unwrap();
        for u in uploads.uploads {
            out.push(format!("{u:?}"));
            let parts = s.parts(&b.name, &u.key, &u.upload_id, 0, 1000).unwrap();
            out.extend(parts.iter().map(|p| format!("{p:?}")));
        }
    }
    out
}

/// A history touching every kind of change, through a journaled store.
fn history(s: &dyn MetadataStore) {
    let bucket = |name: &str, versioning| Bucket {
        name: name.into(),
        created: 1,
        default_plan: None,
        versioning,
        owner: None,
    };
    s.create_bucket(&bucket("photos", Versioning::Unversioned))
        .unwrap();
    s.put_version(&version("photos", "a.jpg", NULL_VERSION, 1))
        .unwrap();
    s.put_version(&version("photos", "b.jpg", NULL_VERSION, 2))
        .unwrap();
    // Overwritten, deleted, moved to another plan.
    s.put_version(&version("photos", "a.jpg", NULL_VERSION, 3))
        .unwrap();
    s.delete_version("photos", "b.jpg", NULL_VERSION).unwrap();
    let a = s.version("photos", "a.jpg", None).unwrap().unwrap();
    assert!(s.swap_layout(&a, "archive", &layout(4)).unwrap());
    s.set_bucket_plan("photos", Some("archive")).unwrap();
    s.set_lifecycle("photos", Some("[{\"id\":\"r\"}]")).unwrap();
    s.set_bucket_tags("photos", Some("{\"team\":\"ops\"}"))
        .unwrap();
    s.set_bucket_cors("photos", Some("[{\"id\":\"first\"}]"))
        .unwrap();
    s.set_bucket_cors("photos", Some("[{\"id\":\"web\"}]"))
        .unwrap();
    s.set_bucket_policy("photos", Some("{\"Statement\":[]}"))
        .unwrap();
    s.set_public_access_block("photos", Some("{\"blockPublicPolicy\":true}"))
        .unwrap();
    s.set_bucket_encryption("photos", Some("{\"algorithm\":\"AES256\"}"))
        .unwrap();
    // Versions and a delete marker.
    s.create_bucket(&bucket("docs", Versioning::Unversioned))
        .unwrap();
    s.set_versioning("docs", Versioning::Enabled).unwrap();
    s.put_version(&version("docs", "d", "v1", 5)).unwrap();
    s.put_version(&version("docs", "d", "v2", 6)).unwrap();
    // Tags changed in place, on the version that becomes noncurrent.
    let tags = BTreeMap::from([("class".to_string(), "temp".to_string())]);
    assert!(s.set_object_tags("docs", "d", "v2", &tags).unwrap());
    s.set_bucket_acl("photos", Some("{\"owner\":\"default\",\"grants\":[]}"))
        .unwrap();
    s.set_bucket_ownership("photos", Some("BucketOwnerPreferred"))
        .unwrap();
    let acl = crate::meta::acl::Canned::PublicRead
        .object_acl("default", "default")
        .unwrap();
    assert!(s.set_object_acl("docs", "d", "v2", Some(&acl)).unwrap());
    let mut marker = version("docs", "d", "v3", 7);
    marker.delete_marker = true;
    marker.layout = None;
    s.put_version(&marker).unwrap();
    s.delete_version("docs", "d", "v1").unwrap();
    // Object lock: the bucket's configuration and a version's retention and legal hold.
    s.set_bucket_lock("docs", "{}").unwrap();
    let lock = crate::meta::lock::ObjectLock {
        retention: Some(crate::meta::lock::Retention {
            mode: crate::meta::lock::LockMode::Compliance,
            until: 4_000_000_000_000,
        }),
        legal_hold: true,
    };
    assert!(
        s.set_version_lock("docs", "d", "v2", &Default::default(), &lock)
            .unwrap()
    );
    // Multipart: one completed, one aborted, one left open.
    for id in ["u1", "u2", "u3"] {
        s.create_upload(&Upload {
            bucket: "docs".into(),
            key: format!("big-{id}"),
            upload_id: id.into(),
            plan: "standard".into(),
            content_type: None,
            user_metadata: BTreeMap::new(),
            initiated: 9,
            attrs: Default::default(),
        })
        .unwrap();
        for n in 1..=2 {
            s.put_part(
                "docs",
                &format!("big-{id}"),
                id,
                &UploadPart {
                    part_number: n,
                    size: 3,
                    etag: format!("p{n}"),
                    last_modified: 9,
                    layout: layout(10 + u8::try_from(n).unwrap()),
                    checksums: Default::default(),
                },
            )
            .unwrap();
        }
    }
    let mut big = version("docs", "big-u1", "v9", 12);
    big.layout = Some(Layout {
        parts: vec![layout(11), layout(12)],
        inline: None,
        ..layout(0)
    });
    s.complete_upload("u1", &[(1, "p1".into()), (2, "p2".into())], &big)
        .unwrap();
    s.abort_upload("docs", "big-u2", "u2").unwrap();
    // A repair swaps a layout by row id.
    let (seq, v) = s
        .versions_after(0, 100)
        .unwrap()
        .into_iter()
        .find(|(_, v)| v.key == "d" && v.version_id == "v2")
        .unwrap();
    assert!(
        s.replace_layout(seq, v.layout.as_ref().unwrap(), &layout(13))
            .unwrap()
    );
    // Users and keys: made, changed, removed.
    let user = |id: &str, max_bytes| crate::meta::User {
        id: id.into(),
        display_name: id.to_uppercase(),
        max_bytes,
        max_objects: None,
        created: 3,
    };
    let key = |access: &str, user: &str, active| crate::meta::StoredKey {
        access_key: access.into(),
        user: user.into(),
        sealed_secret: format!("sealed-{access}"),
        grants: vec![],
        active,
        created: 4,
        rotated: 4,
    };
    s.put_user(&user("alice", None)).unwrap();
    s.put_user(&user("bob", None)).unwrap();
    s.put_key(&key("AK1", "alice", true)).unwrap();
    s.put_key(&key("AK2", "bob", true)).unwrap();
    s.put_key(&key("AK1", "alice", false)).unwrap();
    s.put_user(&user("alice", Some(10))).unwrap();
    assert!(s.delete_key("AK2").unwrap());
    assert!(s.delete_user("bob").unwrap());
    s.create_bucket(&Bucket {
        owner: Some("alice".into()),
        ..bucket("owned", Versioning::Unversioned)
    })
    .unwrap();
    // A bucket created and removed again.
    s.create_bucket(&bucket("tmp", Versioning::Unversioned))
        .unwrap();
    s.delete_bucket("tmp").unwrap();
    // Failed changes journal nothing.
    assert!(s.delete_bucket("photos").is_err());
    assert!(
        s.delete_version("photos", "nope", NULL_VERSION)
            .unwrap()
            .is_none()
    );
}

#[test]
fn concurrent_object_writes_commit_together_and_replay_in_commit_order() {
    let journal = Journal::new(master());
    journal.activate();
    let live = JournaledStore::new(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        Arc::clone(&journal),
    );
    live.create_bucket(&Bucket {
        name: "b".into(),
        created: 1,
        default_plan: None,
        versioning: Versioning::Enabled,
        owner: None,
    })
    .unwrap();
    // Eight writers on five shared keys, with deletes and other kinds of change between:
    // the replayed journal must give the same versions in the same order.
    std::thread::scope(|scope| {
        for t in 0..8u8 {
            let live = &live;
            scope.spawn(move || {
                for i in 0..60u8 {
                    let key = format!("k{}", i % 5);
                    let id = format!("v{t}-{i}");
                    let tag = t.wrapping_mul(60).wrapping_add(i);
                    live.put_version(&version("b", &key, &id, tag)).unwrap();
                    if i % 3 == 0 {
                        assert!(live.delete_version("b", &key, &id).unwrap().is_some());
                    }
                    if i % 10 == 0 {
                        let rules = format!("[{{\"id\":\"{t}-{i}\"}}]");
                        live.set_lifecycle("b", Some(&rules)).unwrap();
                    }
                }
            });
        }
    });
    // A failed change journals nothing and leaves no hook behind.
    assert!(live.put_version(&version("nope", "k", "v", 1)).is_err());
    assert!(crate::meta::take_commit_hook().is_none());
    let entries = journal.take();
    assert_eq!(entries.len(), 1 + 8 * (60 + 20 + 6));
    let restored = SqliteStore::open_in_memory().unwrap();
    for e in &entries {
        apply(&restored, e).unwrap();
    }
    assert_eq!(observe(&restored), observe(&live));
}

#[test]
fn replaying_from_any_snapshot_rebuilds_the_store() {
    let journal = Journal::new(master());
    journal.activate();
    let live = JournaledStore::new(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        Arc::clone(&journal),
    );
    history(&live);
    let entries = journal.take();
    assert_eq!(entries.len(), 49, "{entries:#?}");
    let want = observe(&live);
    // A snapshot holds the first `copied` changes; its cut may lag behind (`cut` ≤
    // `copied`), so replay starts there and meets changes the copy already has.
    for copied in 0..=entries.len() {
        for cut in [0, copied / 2, copied] {
            let restored = SqliteStore::open_in_memory().unwrap();
            for e in &entries[..copied] {
                apply(&restored, e).unwrap();
            }
            for e in &entries[cut..] {
                apply(&restored, e).unwrap();
            }
            assert_eq!(
                observe(&restored),
                want,
                "snapshot after {copied} changes, replayed from {cut}"
            );
        }
    }
}

#[test]
fn segments_open_only_with_their_key_and_name() {
    let journal = Journal::new(master());
    let entry = Entry::DeleteBucket { name: "x".into() };
    let json = vec![serde_json::to_vec(&entry).unwrap()];
    let blob = journal.seal("seg-1", &json).unwrap();
    assert_eq!(
        open_segment(&master(), "seg-1", &blob).unwrap(),
        vec![entry]
    );
    let err = open_segment(&master(), "seg-2", &blob).unwrap_err();
    assert!(err.contains("seg-1 instead"), "{err}");
    let other = MasterKey::from_bytes(&[8; 32]);
    assert!(open_segment(&other, "seg-1", &blob).is_err());
    let mut flipped = blob.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(open_segment(&master(), "seg-1", &flipped).is_err());
    assert!(
        open_segment(&master(), "seg-1", b"PK\x03\x04")
            .unwrap_err()
            .contains("magic")
    );
    assert!(open_segment(&master(), "seg-1", &blob[..20]).is_err());
}

/// A provider in memory that can be down or lie about what it stored.
struct Fake {
    id: String,
    shards: Mutex<BTreeMap<String, Bytes>>,
    down: std::sync::atomic::AtomicBool,
    lies: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl crate::datapath::stripes::ShardBackend for Fake {
    fn node_id(&self) -> &str {
        &self.id
    }
    async fn put(
        &self,
        id: &str,
        data: Bytes,
        _: &[u8; 32],
    ) -> std::result::Result<[u8; 32], crate::datapath::stripes::BackendError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::datapath::stripes::BackendError("unavailable".into()));
        }
        if self.lies.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok([0; 32]);
        }
        let hash = *blake3::hash(&data).as_bytes();
        self.shards.lock().unwrap().insert(id.into(), data);
        Ok(hash)
    }
    async fn get(
        &self,
        id: &str,
    ) -> std::result::Result<Bytes, crate::datapath::stripes::BackendError> {
        let found = self.shards.lock().unwrap().get(id).cloned();
        found.ok_or_else(|| crate::datapath::stripes::BackendError("NotFound".into()))
    }
    async fn delete(
        &self,
        id: &str,
    ) -> std::result::Result<(), crate::datapath::stripes::BackendError> {
        self.shards.lock().unwrap().remove(id);
        Ok(())
    }
}

/// The providers `backends` and an in-memory store journaled to them, as `serve`
/// builds it (no flusher runs yet).
fn journaled_gateway(
    backends: Vec<Arc<dyn crate::datapath::stripes::ShardBackend>>,
) -> (Arc<Journal>, Arc<dyn MetadataStore>, Arc<Fleet>) {
    let journal = Journal::new(master());
    let store: Arc<dyn MetadataStore> = Arc::new(JournaledStore::new(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        Arc::clone(&journal),
    ));
    let fleet = Fleet::new(master().installation(), &backends, Arc::default());
    (journal, store, Arc::new(fleet))
}

fn set(flag: &std::sync::atomic::AtomicBool, on: bool) {
    flag.store(on, std::sync::atomic::Ordering::SeqCst);
}

#[tokio::test]
async fn requests_wait_for_three_copies_and_fail_while_none_can_be_stored() {
    let fakes: Vec<Arc<Fake>> = (0..4)
        .map(|i| {
            Arc::new(Fake {
                id: format!("p{i}"),
                shards: Mutex::default(),
                down: false.into(),
                lies: false.into(),
            })
        })
        .collect();
    let backends = fakes
        .iter()
        .map(|f| Arc::clone(f) as Arc<dyn crate::datapath::stripes::ShardBackend>)
        .collect();
    let (journal, store, gateway) = journaled_gateway(backends);
    let nodes: Vec<String> = fakes.iter().map(|f| f.id.clone()).collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    assert!(!journal.has_holders(), "no flusher yet");
    let task = journal.spawn(Arc::clone(&gateway), move || nodes.clone(), None, stopped);
    assert!(
        journal.has_holders(),
        "small objects may be kept in metadata"
    );
    let copies = |fakes: &[Arc<Fake>]| -> Vec<(String, Vec<Entry>)> {
        fakes
            .iter()
            .flat_map(|f| {
                let shards = f.shards.lock().unwrap().clone();
                shards.into_iter().map(|(id, blob)| {
                    let entries = open_segment(&master(), &id, &blob).unwrap();
                    (id, entries)
                })
            })
            .collect()
    };
    let bucket = |name: &str| Bucket {
        name: name.into(),
        created: 1,
        default_plan: None,
        versioning: Versioning::Unversioned,
        owner: None,
    };

    store.create_bucket(&bucket("a")).unwrap();
    journal.barrier().await.unwrap();
    let stored = copies(&fakes);
    assert_eq!(stored.len(), JOURNAL_COPIES, "{stored:?}");
    assert!(stored.iter().all(|(id, e)| {
        id.starts_with(&segment_prefix(master().installation()))
            && e == &[Entry::CreateBucket {
                bucket: bucket("a"),
            }]
    }));
    assert_eq!(
        journal.cut(),
        stored[0]
            .0
            .strip_prefix(&segment_prefix(master().installation()))
            .unwrap()
    );

    // One provider refuses and one acknowledges bytes it did not store: the others
    // stand in, so the change still gets its copies.
    set(&fakes[0].down, true);
    set(&fakes[1].lies, true);
    store.create_bucket(&bucket("b")).unwrap();
    journal.barrier().await.unwrap();
    let with_b = copies(&fakes)
        .into_iter()
        .filter(|(_, e)| {
            e.contains(&Entry::CreateBucket {
                bucket: bucket("b"),
            })
        })
        .count();
    assert_eq!(with_b, 2, "only two providers could take it");

    // None can: the request fails, naming why; the change is kept and stored once a
    // provider is back.
    for f in &fakes {
        set(&f.down, true);
    }
    store.create_bucket(&bucket("c")).unwrap();
    let err = journal.barrier().await.unwrap_err();
    assert!(
        err.contains("stored on 0 of") && err.contains("unavailable"),
        "{err}"
    );
    set(&fakes[3].down, false);
    store.create_bucket(&bucket("d")).unwrap();
    tokio::time::timeout(BARRIER_TIMEOUT, async {
        while journal.barrier().await.is_err() {}
    })
    .await
    .unwrap();
    let on_3: Vec<Entry> = copies(&fakes[3..])
        .into_iter()
        .flat_map(|(_, e)| e)
        .collect();
    for name in ["c", "d"] {
        assert!(
            on_3.contains(&Entry::CreateBucket {
                bucket: bucket(name)
            }),
            "{name} missing from {on_3:?}"
        );
    }
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn without_providers_writes_go_on_unjournaled() {
    let (journal, store, gateway) = journaled_gateway(Vec::new());
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let _task = journal.spawn(gateway, Vec::new, None, stopped);
    // Nothing would hold small objects beyond this disk: they are striped as usual.
    assert!(!journal.has_holders());
    let cut = journal.cut();
    store
        .create_bucket(&Bucket {
            name: "clouds-only".into(),
            created: 1,
            default_plan: None,
            versioning: Versioning::Unversioned,
            owner: None,
        })
        .unwrap();
    journal.barrier().await.unwrap();
    assert_eq!(journal.cut(), cut, "nothing was stored, so the cut stays");
}

/// One fake provider holding `shards`, and the fleet around it.
fn fleet_holding(shards: BTreeMap<String, Bytes>) -> (Arc<Fleet>, BTreeMap<String, Vec<String>>) {
    let listed = shards
        .keys()
        .map(|id| (id.clone(), vec!["p0".to_owned()]))
        .collect();
    let fake = Arc::new(Fake {
        id: "p0".into(),
        shards: Mutex::new(shards),
        down: false.into(),
        lies: false.into(),
    });
    let backends = vec![fake as Arc<dyn crate::datapath::stripes::ShardBackend>];
    let fleet = Fleet::new(master().installation(), &backends, Arc::default());
    (Arc::new(fleet), listed)
}

#[tokio::test]
async fn a_clock_behind_the_journal_numbers_after_it() {
    let journal = Journal::new(master());
    let prefix = segment_prefix(master().installation());
    let ahead = crate::clock::now_ms() + 3_600_000;
    let genuine = |pos: String| {
        let id = format!("{prefix}{pos}");
        let blob = journal.seal(&id, &[]).unwrap();
        (id, blob)
    };
    let older = genuine(position(ahead - 5, 7));
    let newest = genuine(position(ahead, 2));
    let other = format!("{JOURNAL_PREFIX}otherinstall-{}", position(ahead + 99, 1));
    let shards = BTreeMap::from([
        older.clone(),
        newest.clone(),
        (other, Bytes::from_static(b"not ours")),
    ]);
    let (fleet, listed) = fleet_holding(shards);
    journal.follow_segments(&fleet, &listed).await;
    assert_eq!(journal.cut(), position(ahead + 1, 0));
    assert!(format!("{prefix}{}", journal.cut()) > newest.0);
    // A journal already behind nobody stays where it is.
    let fresh = Journal::new(master());
    let before = fresh.cut();
    let (fleet, listed) = fleet_holding(BTreeMap::from([(
        format!("{prefix}{}", position(1, 1)),
        older.1,
    )]));
    fresh.follow_segments(&fleet, &listed).await;
    assert_eq!(fresh.cut(), before);
}

#[tokio::test]
async fn forged_segment_ids_dated_in_the_future_do_not_move_the_journal() {
    let journal = Journal::new(master());
    let before = journal.cut();
    let prefix = segment_prefix(master().installation());
    let now = crate::clock::now_ms();
    // A real segment replayed under a later id, junk, another installation's sealed
    // segment under this installation's id, and an id at the end of time (which once
    // overflowed the numbering).
    let real_id = format!("{prefix}{}", position(now - 1000, 1));
    let real = journal.seal(&real_id, &[]).unwrap();
    let stranger = Journal::new(Arc::new(MasterKey::from_bytes(&[8; 32])));
    let forged_id = |ms: i64| format!("{prefix}{}", position(ms, 1));
    let shards = BTreeMap::from([
        (real_id.clone(), real.clone()),
        (forged_id(now + 86_400_000), real),
        (
            forged_id(now + 2 * 86_400_000),
            Bytes::from_static(b"SJL1junk"),
        ),
        (
            forged_id(now + 3 * 86_400_000),
            stranger
                .seal(&forged_id(now + 3 * 86_400_000), &[])
                .unwrap(),
        ),
        (forged_id(i64::MAX), Bytes::from_static(b"junk")),
    ]);
    let forged_before = crate::metrics::forged_metadata("journal_segment");
    let (fleet, listed) = fleet_holding(shards);
    journal.follow_segments(&fleet, &listed).await;
    assert_eq!(journal.cut(), before, "the journal followed a forgery");
    assert!(
        crate::metrics::forged_metadata("journal_segment") >= forged_before + 4,
        "every forgery is counted"
    );
}

#[test]
fn positions_sort_in_write_order_across_runs() {
    let a = position(1_700_000_000_000, 9);
    let b = position(1_700_000_000_000, 10);
    let c = position(1_700_000_000_001, 1);
    assert!(a < b && b < c, "{a} {b} {c}");
}
