use super::*;
use crate::datapath::checksum::{Algorithm, ChecksumSpec, Kind, ObjectChecksum, PartChecksum};
use crate::datapath::layout::{Encryption, Scheme};

/// Runs each store-agnostic test on SQLite and on PostgreSQL.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite_store {
            $(#[test]
            fn $name() {
                super::$name(&super::SqliteStore::open_in_memory().unwrap());
            })*
        }
        /// On a file, the aggregate reads and the point reads go through the store's
        /// read-only connections.
        mod sqlite_file_store {
            $(#[test]
            fn $name() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(&super::SqliteStore::open(&dir.path().join("meta.db")).unwrap());
            })*
        }
        mod postgres_store {
            $(#[test]
            fn $name() {
                if let Some(s) = super::super::test_postgres::store() {
                    super::$name(&s);
                }
            })*
        }
    };
}

on_every_store!(
    buckets_are_created_once_and_deleted_only_when_empty,
    versions_round_trip_and_null_version_is_replaced,
    latest_version_wins_and_old_ones_stay_addressable,
    listing_hides_delete_markers_and_groups_prefixes,
    listing_pages_with_markers,
    version_listing_pages_through_versions_markers_and_prefixes,
    parts_are_replaced_listed_and_uploads_end_once,
    shard_index_follows_versions_providers_and_bad_shards,
    versions_are_walked_in_row_order,
    a_bucket_default_plan_is_set_and_cleared,
    bucket_policies_and_public_access_blocks_are_kept_per_bucket,
    conditional_writes_check_the_latest_version_in_the_commit,
    attributes_round_trip_on_versions_and_uploads,
    listings_agree_with_the_listing_rule_page_by_page,
    object_lock_is_stored_per_bucket_and_changed_per_version_in_place,
    tags_change_in_place_per_version_and_buckets_keep_theirs,
    cors_rules_are_stored_per_bucket_and_go_with_it,
    users_and_keys_are_stored_whole_and_usage_counts_by_bucket_owner,
    acls_and_ownership_are_kept_per_bucket_and_per_version_in_place,
);

fn acls_and_ownership_are_kept_per_bucket_and_per_version_in_place(s: &dyn MetadataStore) {
    use crate::meta::acl::Canned;
    s.create_bucket(&bucket("a")).unwrap();
    assert_eq!(s.bucket_acl("a").unwrap(), None);
    assert_eq!(s.bucket_ownership("a").unwrap(), None);
    s.set_bucket_acl("a", Some("{\"owner\":\"alice\",\"grants\":[]}"))
        .unwrap();
    s.set_bucket_ownership("a", Some("BucketOwnerEnforced"))
        .unwrap();
    assert_eq!(
        s.bucket_acl("a").unwrap().as_deref(),
        Some("{\"owner\":\"alice\",\"grants\":[]}")
    );
    assert_eq!(
        s.bucket_ownership("a").unwrap().as_deref(),
        Some("BucketOwnerEnforced")
    );
    s.set_bucket_ownership("a", None).unwrap();
    assert_eq!(s.bucket_ownership("a").unwrap(), None);
    assert!(s.bucket_acl("a").unwrap().is_some());
    assert!(matches!(
        s.set_bucket_acl("nope", Some("{}")),
        Err(MetaError::NoSuchBucket(_))
    ));
    assert!(matches!(
        s.set_bucket_ownership("nope", Some("ObjectWriter")),
        Err(MetaError::NoSuchBucket(_))
    ));
    // A version's ACL: written with it, changed in place keeping the rest, per version.
    let public = Canned::PublicRead.object_acl("bob", "alice").unwrap();
    let v1 = ObjectVersion {
        attrs: ObjectAttrs {
            acl: Some(public.clone()),
            tags: [("k".to_owned(), "v".to_owned())].into(),
            ..ObjectAttrs::default()
        },
        ..version("k", "v1", 1)
    };
    let mut v1 = v1;
    v1.bucket = "a".into();
    s.put_version(&v1).unwrap();
    let mut v2 = version("k", "v2", 2);
    v2.bucket = "a".into();
    s.put_version(&v2).unwrap();
    assert_eq!(
        s.version("a", "k", Some("v1")).unwrap().unwrap().attrs.acl,
        Some(public)
    );
    assert_eq!(s.version("a", "k", None).unwrap().unwrap().attrs.acl, None);
    let private = crate::meta::acl::Acl::private("bob");
    assert!(s.set_object_acl("a", "k", "v1", Some(&private)).unwrap());
    let got = s.version("a", "k", Some("v1")).unwrap().unwrap();
    assert_eq!(got.attrs.acl, Some(private));
    assert_eq!(got.attrs.tags.get("k").map(String::as_str), Some("v"));
    assert!(s.set_object_acl("a", "k", "v1", None).unwrap());
    assert_eq!(
        s.version("a", "k", Some("v1")).unwrap().unwrap().attrs.acl,
        None
    );
    assert!(!s.set_object_acl("a", "k", "v9", None).unwrap());
    assert!(!s.set_object_acl("a", "gone", "v1", None).unwrap());
    // A deleted bucket's go with it.
    s.set_bucket_ownership("a", Some("ObjectWriter")).unwrap();
    s.delete_version("a", "k", "v1").unwrap();
    s.delete_version("a", "k", "v2").unwrap();
    s.delete_bucket("a").unwrap();
    s.create_bucket(&bucket("a")).unwrap();
    assert_eq!(s.bucket_acl("a").unwrap(), None);
    assert_eq!(s.bucket_ownership("a").unwrap(), None);
}

fn object_lock_is_stored_per_bucket_and_changed_per_version_in_place(s: &dyn MetadataStore) {
    use crate::meta::lock::{LockMode, ObjectLock, Retention};
    s.create_bucket(&bucket("b")).unwrap();
    assert_eq!(s.bucket_lock("b").unwrap(), None);
    assert!(matches!(
        s.set_bucket_lock("nope", "{}"),
        Err(MetaError::NoSuchBucket(_))
    ));
    s.set_bucket_lock("b", "{}").unwrap();
    s.set_bucket_lock("b", "{\"defaultRetention\":null}")
        .unwrap();
    assert_eq!(
        s.bucket_lock("b").unwrap().as_deref(),
        Some("{\"defaultRetention\":null}")
    );
    let v = ObjectVersion {
        attrs: ObjectAttrs {
            cache_control: Some("no-cache".into()),
            ..ObjectAttrs::default()
        },
        ..version("k", "v1", 1)
    };
    s.put_version(&v).unwrap();
    let locked = ObjectLock {
        retention: Some(Retention {
            mode: LockMode::Compliance,
            until: 42,
        }),
        legal_hold: true,
    };
    // Only from the lock expected: a stale change does nothing.
    assert!(
        !s.set_version_lock("b", "k", "v1", &locked, &ObjectLock::default())
            .unwrap()
    );
    assert!(
        s.set_version_lock("b", "k", "v1", &ObjectLock::default(), &locked)
            .unwrap()
    );
    let got = s.version("b", "k", Some("v1")).unwrap().unwrap();
    assert_eq!(got.attrs.lock, locked);
    // Every other attribute stays.
    assert_eq!(got.attrs.cache_control.as_deref(), Some("no-cache"));
    assert_eq!(got.layout, v.layout);
    assert!(
        !s.set_version_lock("b", "k", "gone", &ObjectLock::default(), &locked)
            .unwrap()
    );
    // A transition or re-encode (new plan and layout) and a repair (new layout) keep it.
    let moved = striped("k", 1).layout.unwrap();
    assert!(s.swap_layout(&got, "archive", &moved).unwrap());
    let got = s.version("b", "k", Some("v1")).unwrap().unwrap();
    assert_eq!((got.plan.as_str(), got.attrs.lock), ("archive", locked));
    let seq = s.versions_after(0, 10).unwrap()[0].0;
    let repaired = striped("k", 2).layout.unwrap();
    assert!(s.replace_layout(seq, &moved, &repaired).unwrap());
    let got = s.version("b", "k", Some("v1")).unwrap().unwrap();
    assert_eq!(got.layout.as_ref(), Some(&repaired));
    assert_eq!(got.attrs.lock, locked);
}

pub(crate) fn user(id: &str) -> User {
    User {
        id: id.into(),
        display_name: format!("{id} display"),
        max_bytes: Some(1 << 40),
        max_objects: None,
        created: 7,
    }
}

pub(crate) fn key(access: &str, user: &str) -> StoredKey {
    StoredKey {
        access_key: access.into(),
        user: user.into(),
        sealed_secret: "00ff".into(),
        grants: vec![KeyGrant {
            bucket: "photos".into(),
            read: true,
            write: false,
        }],
        active: true,
        created: 8,
        rotated: 8,
    }
}

fn users_and_keys_are_stored_whole_and_usage_counts_by_bucket_owner(s: &dyn MetadataStore) {
    s.put_user(&user("bob")).unwrap();
    s.put_user(&user("alice")).unwrap();
    let changed = User {
        display_name: "Alice A.".into(),
        max_objects: Some(3),
        ..user("alice")
    };
    s.put_user(&changed).unwrap();
    assert_eq!(s.users().unwrap(), vec![changed, user("bob")]);
    s.put_key(&key("AK2", "bob")).unwrap();
    s.put_key(&key("AK1", "alice")).unwrap();
    let disabled = StoredKey {
        active: false,
        rotated: 9,
        sealed_secret: "abcd".into(),
        ..key("AK1", "alice")
    };
    s.put_key(&disabled).unwrap();
    assert_eq!(s.keys().unwrap(), vec![disabled, key("AK2", "bob")]);
    assert!(s.delete_key("AK2").unwrap());
    assert!(!s.delete_key("AK2").unwrap());
    assert!(s.delete_user("bob").unwrap());
    assert!(!s.delete_user("bob").unwrap());
    assert_eq!(s.users().unwrap().len(), 1);

    // Usage: by bucket owner; buckets without one under "".
    s.create_bucket(&Bucket {
        owner: Some("alice".into()),
        ..bucket("b")
    })
    .unwrap();
    s.create_bucket(&bucket("c")).unwrap();
    assert_eq!(
        s.bucket("b").unwrap().unwrap().owner.as_deref(),
        Some("alice")
    );
    s.put_version(&version("k1", "v1", 10)).unwrap();
    s.put_version(&version("k2", "v1", 5)).unwrap();
    s.put_version(&ObjectVersion {
        bucket: "c".into(),
        ..version("k1", "v1", 7)
    })
    .unwrap();
    s.put_version(&ObjectVersion {
        delete_marker: true,
        layout: None,
        size: 0,
        ..version("k3", "v1", 0)
    })
    .unwrap();
    let usage = s.user_usage().unwrap();
    assert_eq!(
        usage,
        BTreeMap::from([
            (
                "".to_string(),
                Usage {
                    objects: 1,
                    bytes: 7
                }
            ),
            (
                "alice".to_string(),
                Usage {
                    objects: 2,
                    bytes: 15
                }
            ),
        ])
    );
}

#[test]
fn a_database_from_before_users_gains_bucket_owners() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        let schema = sqlite::schema_for_tests().replace(",\n    owner TEXT\n", "\n");
        assert!(!schema.contains("owner TEXT"));
        old.execute_batch(&schema).unwrap();
        old.execute(
            "INSERT INTO buckets (name, created, versioning) VALUES ('old', 1, 'unversioned')",
            [],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.bucket("old").unwrap().unwrap().owner, None);
    s.create_bucket(&Bucket {
        owner: Some("alice".into()),
        ..bucket("new")
    })
    .unwrap();
    assert_eq!(
        s.bucket("new").unwrap().unwrap().owner.as_deref(),
        Some("alice")
    );
}

fn conditional_writes_check_the_latest_version_in_the_commit(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    let absent = WriteCondition::Absent;
    s.put_version_if(&version("k", "v1", 1), Some(&absent))
        .unwrap();
    assert!(matches!(
        s.put_version_if(&version("k", "v2", 1), Some(&absent)),
        Err(MetaError::PreconditionFailed { .. })
    ));
    let etag = s.version("b", "k", None).unwrap().unwrap().etag;
    assert!(matches!(
        s.put_version_if(
            &version("k", "v2", 1),
            Some(&WriteCondition::ETag("nope".into()))
        ),
        Err(MetaError::PreconditionFailed { .. })
    ));
    assert!(matches!(
        s.put_version_if(
            &version("other", "v2", 1),
            Some(&WriteCondition::ETag(etag.clone()))
        ),
        Err(MetaError::NoSuchKey { .. })
    ));
    s.put_version_if(&version("k", "v2", 1), Some(&WriteCondition::ETag(etag)))
        .unwrap();
    assert_eq!(
        s.version("b", "k", None).unwrap().unwrap().version_id,
        "v2",
        "a refused write changes nothing, a passing one commits"
    );
    // A delete marker is no object: If-None-Match: * may write over it.
    let marker = ObjectVersion {
        delete_marker: true,
        layout: None,
        ..version("k", "v3", 0)
    };
    s.put_version(&marker).unwrap();
    s.put_version_if(&version("k", "v4", 1), Some(&absent))
        .unwrap();
    // A completion whose condition fails leaves the upload open.
    s.create_upload(&upload("u1", "k")).unwrap();
    s.put_part("b", "k", "u1", &part(1, "e1")).unwrap();
    let done = ObjectVersion {
        layout: None,
        ..version("k", "v5", 1)
    };
    assert!(matches!(
        s.complete_upload_if("u1", &[(1, "e1".into())], &done, Some(&absent)),
        Err(MetaError::PreconditionFailed { .. })
    ));
    assert!(s.upload("b", "k", "u1").unwrap().is_some());
    s.complete_upload("u1", &[(1, "e1".into())], &done).unwrap();
    assert!(s.upload("b", "k", "u1").unwrap().is_none());
}

fn attributes_round_trip_on_versions_and_uploads(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    let attrs = ObjectAttrs {
        cache_control: Some("max-age=60".into()),
        content_disposition: Some("inline".into()),
        content_encoding: Some("gzip".into()),
        content_language: Some("en".into()),
        expires: Some("Wed, 21 Oct 2026 07:28:00 GMT".into()),
        upload_id: Some("u9".into()),
        lock: crate::meta::lock::ObjectLock {
            retention: Some(crate::meta::lock::Retention {
                mode: crate::meta::lock::LockMode::Governance,
                until: 1_800_000_000_000,
            }),
            legal_hold: true,
        },
        tags: BTreeMap::from([("project".into(), "blue".into())]),
        acl: crate::meta::acl::Canned::AuthenticatedRead.object_acl("bob", "alice"),
        checksum: Some(ObjectChecksum {
            algorithm: Algorithm::Crc32,
            kind: Kind::Composite,
            value: "1Fu2mQ==".into(),
            parts: vec![
                PartChecksum {
                    number: 1,
                    value: "7YH59g==".into(),
                },
                PartChecksum {
                    number: 3,
                    value: "OncRQw==".into(),
                },
            ],
        }),
        upload_checksum: Some(ChecksumSpec {
            algorithm: Algorithm::Sha256,
            kind: Kind::Composite,
        }),
        upload_customer_key: Some(crate::datapath::layout::CustomerSeal {
            salt: vec![1; 16],
            key_hmac: vec![2; 32],
        }),
    };
    let v = ObjectVersion {
        attrs: attrs.clone(),
        ..version("k", "v1", 1)
    };
    s.put_version(&v).unwrap();
    assert_eq!(s.version("b", "k", None).unwrap().unwrap(), v);
    assert_eq!(s.versions_after(0, 10).unwrap()[0].1.attrs, attrs);
    let u = Upload {
        attrs: attrs.clone(),
        ..upload("u1", "k")
    };
    s.create_upload(&u).unwrap();
    assert_eq!(s.upload("b", "k", "u1").unwrap().unwrap(), u);
}

fn tags_change_in_place_per_version_and_buckets_keep_theirs(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    let old = ObjectVersion {
        attrs: ObjectAttrs {
            cache_control: Some("no-store".into()),
            ..ObjectAttrs::default()
        },
        ..version("k", "v1", 1)
    };
    s.put_version(&old).unwrap();
    s.put_version(&version("k", "v2", 2)).unwrap();
    let tags = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".into(), "".into())]);
    // An older version is retagged in place: it stays older, keeps its other attributes.
    assert!(s.set_object_tags("b", "k", "v1", &tags).unwrap());
    let v1 = s.version("b", "k", Some("v1")).unwrap().unwrap();
    assert_eq!(v1.attrs.tags, tags);
    assert_eq!(v1.attrs.cache_control.as_deref(), Some("no-store"));
    assert_eq!(s.version("b", "k", None).unwrap().unwrap().version_id, "v2");
    assert!(
        s.version("b", "k", None)
            .unwrap()
            .unwrap()
            .attrs
            .tags
            .is_empty()
    );
    // Listings of versions carry the tags (lifecycle filters read them there).
    let listed = versions_page(s, "", "");
    assert_eq!(listed.versions[1].version.attrs.tags, tags);
    // Removing every tag leaves no attributes behind when there were none besides.
    assert!(s.set_object_tags("b", "k", "v2", &tags).unwrap());
    assert!(s.set_object_tags("b", "k", "v2", &BTreeMap::new()).unwrap());
    assert!(
        s.version("b", "k", Some("v2"))
            .unwrap()
            .unwrap()
            .attrs
            .is_empty()
    );
    // No such version, or a delete marker: nothing changes.
    assert!(!s.set_object_tags("b", "k", "v9", &tags).unwrap());
    let marker = ObjectVersion {
        delete_marker: true,
        layout: None,
        ..version("k", "v3", 3)
    };
    s.put_version(&marker).unwrap();
    assert!(!s.set_object_tags("b", "k", "v3", &tags).unwrap());

    assert_eq!(s.bucket_tags("b").unwrap(), None);
    s.set_bucket_tags("b", Some("{\"team\":\"ops\"}")).unwrap();
    assert_eq!(
        s.bucket_tags("b").unwrap().as_deref(),
        Some("{\"team\":\"ops\"}")
    );
    s.set_bucket_tags("b", None).unwrap();
    assert_eq!(s.bucket_tags("b").unwrap(), None);
    assert!(matches!(
        s.set_bucket_tags("nope", Some("{}")),
        Err(MetaError::NoSuchBucket(_))
    ));
    // A deleted bucket's tags go with it.
    s.create_bucket(&bucket("c")).unwrap();
    s.set_bucket_tags("c", Some("{}")).unwrap();
    s.delete_bucket("c").unwrap();
    s.create_bucket(&bucket("c")).unwrap();
    assert_eq!(s.bucket_tags("c").unwrap(), None);

    // A bucket's default encryption: set, replaced, removed, gone with its bucket.
    assert_eq!(s.bucket_encryption("b").unwrap(), None);
    s.set_bucket_encryption("b", Some("{\"algorithm\":\"AES256\"}"))
        .unwrap();
    s.set_bucket_encryption("b", Some("{\"algorithm\":\"AES256\",\"bucketKey\":true}"))
        .unwrap();
    assert_eq!(
        s.bucket_encryption("b").unwrap().as_deref(),
        Some("{\"algorithm\":\"AES256\",\"bucketKey\":true}")
    );
    s.set_bucket_encryption("b", None).unwrap();
    assert_eq!(s.bucket_encryption("b").unwrap(), None);
    assert!(matches!(
        s.set_bucket_encryption("nope", Some("{}")),
        Err(MetaError::NoSuchBucket(_))
    ));
    s.set_bucket_encryption("c", Some("{}")).unwrap();
    s.delete_bucket("c").unwrap();
    s.create_bucket(&bucket("c")).unwrap();
    assert_eq!(s.bucket_encryption("c").unwrap(), None);
}

fn cors_rules_are_stored_per_bucket_and_go_with_it(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    assert_eq!(s.bucket_cors("b").unwrap(), None);
    s.set_bucket_cors("b", Some("[1]")).unwrap();
    s.set_bucket_cors("b", Some("[2]")).unwrap();
    assert_eq!(s.bucket_cors("b").unwrap().as_deref(), Some("[2]"));
    s.set_bucket_cors("b", None).unwrap();
    assert_eq!(s.bucket_cors("b").unwrap(), None);
    assert!(matches!(
        s.set_bucket_cors("nope", Some("[]")),
        Err(MetaError::NoSuchBucket(_))
    ));
    s.create_bucket(&bucket("c")).unwrap();
    s.set_bucket_cors("c", Some("[]")).unwrap();
    s.delete_bucket("c").unwrap();
    s.create_bucket(&bucket("c")).unwrap();
    assert_eq!(s.bucket_cors("c").unwrap(), None);
}

fn bucket_policies_and_public_access_blocks_are_kept_per_bucket(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("p")).unwrap();
    assert_eq!(s.bucket_policy("p").unwrap(), None);
    assert_eq!(s.public_access_block("p").unwrap(), None);
    s.set_bucket_policy("p", Some("{\"Statement\":[]}"))
        .unwrap();
    s.set_public_access_block("p", Some("{\"blockPublicPolicy\":true}"))
        .unwrap();
    assert_eq!(
        s.bucket_policy("p").unwrap().as_deref(),
        Some("{\"Statement\":[]}")
    );
    assert_eq!(
        s.public_access_block("p").unwrap().as_deref(),
        Some("{\"blockPublicPolicy\":true}")
    );
    // Each is removed on its own.
    s.set_bucket_policy("p", None).unwrap();
    assert_eq!(s.bucket_policy("p").unwrap(), None);
    assert!(s.public_access_block("p").unwrap().is_some());
    assert!(matches!(
        s.set_bucket_policy("nope", Some("{}")),
        Err(MetaError::NoSuchBucket(_))
    ));
    assert!(matches!(
        s.set_public_access_block("nope", Some("{}")),
        Err(MetaError::NoSuchBucket(_))
    ));
    // A deleted bucket's go with it: a new bucket of the same name starts open to no one.
    s.set_bucket_policy("p", Some("{}")).unwrap();
    s.delete_bucket("p").unwrap();
    s.create_bucket(&bucket("p")).unwrap();
    assert_eq!(s.bucket_policy("p").unwrap(), None);
    assert_eq!(s.public_access_block("p").unwrap(), None);
}

fn a_bucket_default_plan_is_set_and_cleared(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    s.set_bucket_plan("b", Some("archive")).unwrap();
    assert_eq!(
        s.bucket("b").unwrap().unwrap().default_plan.as_deref(),
        Some("archive")
    );
    assert_eq!(
        s.buckets().unwrap()[0].default_plan.as_deref(),
        Some("archive")
    );
    s.set_bucket_plan("b", None).unwrap();
    assert_eq!(s.bucket("b").unwrap().unwrap().default_plan, None);
    assert!(matches!(
        s.set_bucket_plan("nope", Some("archive")),
        Err(MetaError::NoSuchBucket(_))
    ));
}

fn versions_are_walked_in_row_order(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    for (key, id) in [("z", "v1"), ("a", "v2"), ("m", "v3"), ("a", "v4")] {
        s.put_version(&version(key, id, 1)).unwrap();
    }
    s.delete_version("b", "m", "v3").unwrap();
    let all = s.versions_after(0, 100).unwrap();
    let ids: Vec<&str> = all.iter().map(|(_, v)| v.version_id.as_str()).collect();
    assert_eq!(ids, ["v1", "v2", "v4"], "row order, deleted ones gone");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    let first = s.versions_after(0, 1).unwrap();
    assert_eq!(first.len(), 1);
    let rest = s.versions_after(first[0].0, 100).unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].1.version_id, "v2");
    assert!(s.versions_after(all[2].0, 100).unwrap().is_empty());
}

fn bucket(name: &str) -> Bucket {
    Bucket {
        name: name.into(),
        created: 1,
        default_plan: None,
        versioning: Versioning::Unversioned,
        owner: None,
    }
}

fn version(key: &str, id: &str, size: u64) -> ObjectVersion {
    ObjectVersion {
        bucket: "b".into(),
        key: key.into(),
        version_id: id.into(),
        delete_marker: false,
        size,
        etag: format!("etag-{size}"),
        content_type: Some("text/plain".into()),
        user_metadata: BTreeMap::from([("owner".to_string(), "alice".to_string())]),
        last_modified: 5,
        plan: "family-photos".into(),
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

fn buckets_are_created_once_and_deleted_only_when_empty(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    assert!(matches!(
        s.create_bucket(&bucket("b")),
        Err(MetaError::BucketExists(_))
    ));
    assert_eq!(s.buckets().unwrap().len(), 1);
    s.put_version(&version("k", NULL_VERSION, 3)).unwrap();
    assert!(matches!(
        s.delete_bucket("b"),
        Err(MetaError::BucketNotEmpty(_))
    ));
    s.delete_version("b", "k", NULL_VERSION).unwrap();
    s.delete_bucket("b").unwrap();
    assert!(s.bucket("b").unwrap().is_none());
    assert!(matches!(
        s.delete_bucket("b"),
        Err(MetaError::NoSuchBucket(_))
    ));
}

fn versions_round_trip_and_null_version_is_replaced(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    let v1 = version("k", NULL_VERSION, 3);
    assert!(s.put_version(&v1).unwrap().replaced.is_empty());
    assert_eq!(s.version("b", "k", None).unwrap().unwrap(), v1);
    let v2 = version("k", NULL_VERSION, 4);
    let out = s.put_version(&v2).unwrap();
    assert_eq!(out.replaced, vec![v1]);
    assert_eq!(s.version("b", "k", None).unwrap().unwrap().size, 4);
}

fn latest_version_wins_and_old_ones_stay_addressable(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    s.put_version(&version("k", "v1", 1)).unwrap();
    s.put_version(&version("k", "v2", 2)).unwrap();
    assert_eq!(s.version("b", "k", None).unwrap().unwrap().version_id, "v2");
    assert_eq!(s.version("b", "k", Some("v1")).unwrap().unwrap().size, 1);
    let all = s
        .list_versions(
            "b",
            &VersionQuery {
                max_keys: 100,
                ..Default::default()
            },
        )
        .unwrap();
    let ids: Vec<_> = all
        .versions
        .iter()
        .map(|e| (e.version.version_id.as_str(), e.is_latest))
        .collect();
    assert_eq!(ids, [("v2", true), ("v1", false)]);
    s.delete_version("b", "k", "v2").unwrap();
    assert_eq!(s.version("b", "k", None).unwrap().unwrap().version_id, "v1");
}

fn listing_hides_delete_markers_and_groups_prefixes(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    for key in [
        "a.txt",
        "photos/1.jpg",
        "photos/2.jpg",
        "photos/2024/3.jpg",
        "z",
    ] {
        s.put_version(&version(key, NULL_VERSION, 1)).unwrap();
    }
    let mut marker = version("z", "m1", 0);
    marker.delete_marker = true;
    marker.layout = None;
    s.put_version(&marker).unwrap();

    let all = s
        .list(
            "b",
            &ListQuery {
                max_keys: 100,
                ..Default::default()
            },
        )
        .unwrap();
    let keys: Vec<_> = all.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        ["a.txt", "photos/1.jpg", "photos/2.jpg", "photos/2024/3.jpg"]
    );

    let top = s
        .list(
            "b",
            &ListQuery {
                delimiter: Some("/"),
                max_keys: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(top.objects.len(), 1);
    assert_eq!(top.common_prefixes, ["photos/"]);

    let inside = s
        .list(
            "b",
            &ListQuery {
                prefix: "photos/",
                delimiter: Some("/"),
                max_keys: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(inside.objects.len(), 2);
    assert_eq!(inside.common_prefixes, ["photos/2024/"]);
}

fn listing_pages_with_markers(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    for i in 0..25 {
        s.put_version(&version(&format!("k{i:03}"), NULL_VERSION, 1))
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = s
            .list(
                "b",
                &ListQuery {
                    start_after: &after,
                    max_keys: 10,
                    ..Default::default()
                },
            )
            .unwrap();
        seen.extend(page.objects.iter().map(|o| o.key.clone()));
        match page.next_marker {
            Some(m) => after = m,
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

fn versions_page(s: &dyn MetadataStore, key_marker: &str, vid_marker: &str) -> VersionPage {
    s.list_versions(
        "b",
        &VersionQuery {
            prefix: "",
            delimiter: Some("/"),
            key_marker,
            version_id_marker: vid_marker,
            max_keys: 2,
        },
    )
    .unwrap()
}

fn version_listing_pages_through_versions_markers_and_prefixes(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    for (key, id) in [
        ("a", "a1"),
        ("a", "a2"),
        ("a", "a3"),
        ("d/x", "x1"),
        ("d/y", "y1"),
        ("z", "z1"),
    ] {
        s.put_version(&version(key, id, 1)).unwrap();
    }
    let mut marker = version("z", "z2", 0);
    marker.delete_marker = true;
    marker.layout = None;
    s.put_version(&marker).unwrap();

    let mut seen = Vec::new();
    let (mut km, mut vm) = (String::new(), String::new());
    for _ in 0..10 {
        let page = versions_page(s, &km, &vm);
        seen.extend(page.versions.iter().map(|e| {
            format!(
                "{}{}{}",
                e.version.version_id,
                if e.is_latest { "*" } else { "" },
                if e.version.delete_marker { "m" } else { "" }
            )
        }));
        seen.extend(page.common_prefixes.iter().cloned());
        match page.next {
            Some((k, v)) => (km, vm) = (k, v),
            None => break,
        }
    }
    assert_eq!(seen, ["a3*", "a2", "a1", "d/", "z2*m", "z1"]);
}

fn upload(id: &str, key: &str) -> Upload {
    Upload {
        bucket: "b".into(),
        key: key.into(),
        upload_id: id.into(),
        plan: "standard".into(),
        content_type: Some("text/plain".into()),
        user_metadata: BTreeMap::from([("color".to_string(), "blue".to_string())]),
        initiated: 7,
        attrs: Default::default(),
    }
}

fn part(n: i32, etag: &str) -> UploadPart {
    UploadPart {
        part_number: n,
        size: 10,
        etag: etag.into(),
        last_modified: 8,
        layout: Layout {
            scheme: Scheme::Erasure { data: 4, parity: 2 },
            encryption: Encryption::None,
            segment_size: 16,
            segments: vec![],
            inline: None,
            parts: vec![],
        },
        // Part 2 carries S3 checksums (their column), the others none.
        checksums: if n == 2 {
            BTreeMap::from([
                (Algorithm::Crc32, "DUoRhQ==".to_string()),
                (Algorithm::Crc64nvme, "jSnVw/bqjr4=".to_string()),
            ])
        } else {
            BTreeMap::new()
        },
    }
}

fn parts_are_replaced_listed_and_uploads_end_once(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    assert!(matches!(
        s.create_upload(&Upload {
            bucket: "nope".into(),
            ..upload("u0", "k")
        }),
        Err(MetaError::NoSuchBucket(_))
    ));
    s.create_upload(&upload("u1", "k")).unwrap();
    s.create_upload(&upload("u2", "k")).unwrap();
    s.create_upload(&upload("u3", "j")).unwrap();
    assert_eq!(
        s.upload("b", "k", "u1").unwrap().unwrap(),
        upload("u1", "k")
    );
    assert!(
        s.upload("b", "j", "u1").unwrap().is_none(),
        "upload ids belong to their key"
    );

    assert!(
        s.put_part("b", "k", "u1", &part(1, "e1"))
            .unwrap()
            .is_none()
    );
    assert!(
        s.put_part("b", "k", "u1", &part(2, "e2"))
            .unwrap()
            .is_none()
    );
    let old = s.put_part("b", "k", "u1", &part(1, "e1b")).unwrap();
    assert_eq!(old.unwrap().etag, "e1");
    let parts = s.parts("b", "k", "u1", 0, 100).unwrap();
    let tags: Vec<_> = parts.iter().map(|p| p.etag.as_str()).collect();
    assert_eq!(tags, ["e1b", "e2"]);
    assert_eq!(parts, [part(1, "e1b"), part(2, "e2")], "checksums kept");
    assert_eq!(s.parts("b", "k", "u1", 1, 100).unwrap().len(), 1);
    assert!(matches!(
        s.delete_bucket("b"),
        Err(MetaError::BucketNotEmpty(_))
    ));

    // Uploads list by key, then age, and page on (key, upload id).
    let ids = |q: UploadQuery<'_>| -> Vec<String> {
        let page = s
            .uploads(
                "b",
                &UploadQuery {
                    max_uploads: 100,
                    ..q
                },
            )
            .unwrap();
        page.uploads
            .into_iter()
            .map(|u| u.upload_id)
            .chain(page.common_prefixes)
            .collect()
    };
    assert_eq!(ids(UploadQuery::default()), ["u3", "u1", "u2"]);
    assert_eq!(
        ids(UploadQuery {
            key_marker: "k",
            upload_id_marker: "u1",
            ..Default::default()
        }),
        ["u2"]
    );
    assert_eq!(
        ids(UploadQuery {
            prefix: "k",
            ..Default::default()
        }),
        ["u1", "u2"]
    );
    s.create_upload(&upload("u4", "d/x")).unwrap();
    s.create_upload(&upload("u5", "d/y")).unwrap();
    assert_eq!(
        ids(UploadQuery {
            delimiter: Some("/"),
            ..Default::default()
        }),
        ["u3", "u1", "u2", "d/"]
    );
    let first = s
        .uploads(
            "b",
            &UploadQuery {
                delimiter: Some("/"),
                max_uploads: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(first.common_prefixes, ["d/"]);
    assert_eq!(first.next, Some(("d/".to_string(), String::new())));
    s.abort_upload("b", "d/x", "u4").unwrap();
    s.abort_upload("b", "d/y", "u5").unwrap();

    // A completion naming a replaced part fails and changes nothing.
    let mut v = version("k", NULL_VERSION, 20);
    assert!(matches!(
        s.complete_upload("u1", &[(1, "e1".into())], &v),
        Err(MetaError::PartChanged { part_number: 1, .. })
    ));
    assert!(s.version("b", "k", None).unwrap().is_none());
    v.content_type = Some("text/csv".into());
    let done = s.complete_upload("u1", &[(1, "e1b".into())], &v).unwrap();
    assert_eq!(done.unused.len(), 1);
    assert_eq!(done.unused[0].etag, "e2");
    assert_eq!(s.version("b", "k", None).unwrap().unwrap(), v);
    assert!(matches!(
        s.complete_upload("u1", &[(1, "e1b".into())], &v),
        Err(MetaError::NoSuchUpload { .. })
    ));
    assert!(matches!(
        s.put_part("b", "k", "u1", &part(3, "e3")),
        Err(MetaError::NoSuchUpload { .. })
    ));
    assert!(matches!(
        s.parts("b", "k", "u1", 0, 10),
        Err(MetaError::NoSuchUpload { .. })
    ));

    s.put_part("b", "k", "u2", &part(1, "x")).unwrap();
    assert_eq!(s.abort_upload("b", "k", "u2").unwrap().len(), 1);
    assert!(matches!(
        s.abort_upload("b", "k", "u2"),
        Err(MetaError::NoSuchUpload { .. })
    ));
    s.abort_upload("b", "j", "u3").unwrap();
    s.delete_version("b", "k", NULL_VERSION).unwrap();
    s.delete_bucket("b").unwrap();
}

/// A 4+2 version with `segments` segments, shard `i` on provider `n{i}`.
fn striped(key: &str, segments: usize) -> ObjectVersion {
    use crate::datapath::layout::{Segment, ShardLocation};
    let mut v = version(key, NULL_VERSION, 100);
    let layout = v.layout.as_mut().unwrap();
    layout.inline = None;
    layout.segments = (0..segments)
        .map(|g| Segment {
            plain_length: 50,
            sealed_length: 66,
            shards: (0..6)
                .map(|i| ShardLocation {
                    provider: format!("n{i}"),
                    shard_id: format!("{key}.{g}.{i}"),
                    hash: "h".into(),
                    length: 17,
                })
                .collect(),
        })
        .collect();
    v
}

fn one_group(s: &dyn MetadataStore, cut: i64) -> Vec<(u64, u64, u64)> {
    s.plan_health("family-photos", cut, 1000)
        .unwrap()
        .iter()
        .map(|g| (g.healthy, g.reachable, g.objects))
        .collect()
}

fn shard_index_follows_versions_providers_and_bad_shards(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    let all: Vec<(String, bool)> = (0..6).map(|i| (format!("n{i}"), true)).collect();
    s.record_probes(&all, 1_000).unwrap();
    s.put_version(&striped("a", 2)).unwrap();
    s.put_version(&striped("b", 1)).unwrap();
    assert_eq!(one_group(s, 0), [(6, 6, 2)]);
    assert_eq!(s.provider_usage().unwrap()["n0"], (3, 51));
    s.record_pools(
        &[("n0".into(), "home".into()), ("gone".into(), "old".into())],
        1_000,
    )
    .unwrap();
    let pools = s.provider_pools().unwrap();
    assert_eq!(pools["n0"], "home");
    assert_eq!(pools["gone"], "old");
    assert!(s.providers_seen().unwrap()["gone"].down_since.is_none());

    // n5 stops answering at 2000: reachable drops at once, healthy only past the cut.
    s.record_probes(&[("n5".into(), false)], 2_000).unwrap();
    assert_eq!(one_group(s, 500), [(6, 5, 2)]);
    assert_eq!(one_group(s, 1_500), [(5, 5, 2)]);
    // A corrupt shard of "a" segment 1 makes "a" weaker still.
    s.mark_bad_shards(
        "b",
        "a",
        NULL_VERSION,
        &[((0, 1, 0), "a.1.0".into())],
        3_000,
    )
    .unwrap();
    s.mark_bad_shards(
        "b",
        "a",
        NULL_VERSION,
        &[((0, 1, 1), "elsewhere".into())],
        3_000,
    )
    .unwrap();
    let mut groups = one_group(s, 1_500);
    groups.sort_unstable();
    assert_eq!(groups, [(4, 4, 1), (5, 5, 1)]);
    let queued = s
        .queued_versions("family-photos", 1_500, 1000, None, false, 10)
        .unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!((queued[0].key.as_str(), queued[0].healthy), ("a", 4));
    assert!(
        s.queued_versions("family-photos", 1_500, 1000, Some(4), false, 10)
            .unwrap()
            .is_empty(),
        "minHealthyShards 4 queues neither"
    );
    // n5 answers again before the grace period ends: back to healthy.
    s.record_probes(&[("n5".into(), true)], 2_500).unwrap();
    let mut groups = one_group(s, 1_500);
    groups.sort_unstable();
    assert_eq!(groups, [(5, 5, 1), (6, 6, 1)]);

    // Compare-and-swap: only against the layout stored now.
    let a = s.version("b", "a", None).unwrap().unwrap();
    let seq = s
        .queued_versions("family-photos", 0, 1000, None, false, 10)
        .unwrap()[0]
        .seq;
    assert_eq!(s.bad_shards(seq).unwrap(), [(0, 1, 0)]);
    let old = a.layout.clone().unwrap();
    let mut new = old.clone();
    new.segments[1].shards[0].provider = "n9".into();
    assert!(
        !s.replace_layout(seq, &new, &new).unwrap(),
        "stale expectation"
    );
    s.record_probes(&[("n9".into(), true)], 2_600).unwrap();
    assert!(s.replace_layout(seq, &old, &new).unwrap());
    assert!(
        s.bad_shards(seq).unwrap().is_empty(),
        "the rebuilt shard starts clean"
    );
    assert!(
        !s.replace_layout(seq, &old, &new).unwrap(),
        "a second repairer loses"
    );
    assert_eq!(one_group(s, 0), [(6, 6, 2)]);

    // Replacing and deleting versions removes their shards from the index.
    s.put_version(&striped("a", 1)).unwrap();
    assert!(
        !s.replace_layout(seq, &new, &new).unwrap(),
        "an overwritten version is not repaired"
    );
    s.delete_version("b", "a", NULL_VERSION).unwrap();
    s.delete_version("b", "b", NULL_VERSION).unwrap();
    assert!(one_group(s, 0).is_empty());
    assert!(s.provider_usage().unwrap().is_empty());
}

#[test]
fn a_database_from_before_attributes_gains_their_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    {
        // The tables as the first release made them: no `attrs` column, no part checksums.
        let old = rusqlite::Connection::open(&path).unwrap();
        let schema = sqlite::schema_for_tests()
            .replace("    attrs TEXT,\n", "")
            .replace(",\n    attrs TEXT\n", "\n")
            .replace("    checksums TEXT,\n", "");
        assert!(!schema.contains("attrs") && !schema.contains("checksums"));
        old.execute_batch(&schema).unwrap();
        old.execute(
            "INSERT INTO buckets (name, created, versioning) VALUES ('b', 1, 'unversioned')",
            [],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let v = ObjectVersion {
        attrs: ObjectAttrs {
            cache_control: Some("no-cache".into()),
            ..ObjectAttrs::default()
        },
        ..version("k", "v1", 1)
    };
    s.put_version(&v).unwrap();
    s.create_upload(&upload("u1", "k")).unwrap();
    s.put_part("b", "k", "u1", &part(2, "e2")).unwrap();
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.version("b", "k", None).unwrap().unwrap(), v);
    assert_eq!(s.parts("b", "k", "u1", 0, 10).unwrap(), [part(2, "e2")]);
}

#[test]
fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create_bucket(&bucket("b")).unwrap();
        s.put_version(&version("k", NULL_VERSION, 9)).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.version("b", "k", None).unwrap().unwrap().size, 9);
}

#[test]
fn concurrent_writes_commit_in_groups_and_a_failed_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let s = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
    s.create_bucket(&bucket("b")).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let key = format!("t{t}-{i}");
                    s.put_version(&version(&key, NULL_VERSION, i)).unwrap();
                    // Between good ones, a write into a missing bucket, and a delete.
                    let mut lost = version(&key, NULL_VERSION, 1);
                    lost.bucket = "missing".into();
                    assert!(matches!(
                        s.put_version(&lost),
                        Err(MetaError::NoSuchBucket(_))
                    ));
                    if i % 4 == 0 {
                        let old = s.delete_version("b", &key, NULL_VERSION).unwrap();
                        assert_eq!(old.unwrap().size, i);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    let page = s
        .list(
            "b",
            &ListQuery {
                prefix: "",
                delimiter: None,
                start_after: "",
                max_keys: 1000,
            },
        )
        .unwrap();
    assert_eq!(page.objects.len(), 8 * 30, "every write but the deleted");
    for t in 0..8 {
        for i in 0..40u64 {
            let v = s.version("b", &format!("t{t}-{i}"), None).unwrap();
            assert_eq!(v.map(|v| v.size), (i % 4 != 0).then_some(i));
        }
    }
}

/// Keys that sort across the places a seek past a common prefix could go wrong: several
/// code point widths, the code points around the surrogate gap, U+10FFFF, a prefix that is
/// also a key, a delimiter of several characters, and delete markers.
const EDGE_KEYS: &[&str] = &[
    "a",
    "a/",
    "a/1",
    "a/2/x",
    "a//",
    "a0",
    "a.txt",
    "p",
    "p/x",
    "p/y/z",
    "pq",
    "x--y--z",
    "x--w",
    "x-y",
    "x---",
    "é/1",
    "é/2",
    "é0",
    "日本/語",
    "日本/語/b",
    "日本0",
    "k\u{D7FF}/1",
    "k\u{D7FF}/2",
    "k\u{E000}",
    "m\u{10FFFF}/1",
    "m\u{10FFFF}/2",
    "m\u{10FFFF}0",
    "\u{10FFFF}/a",
    "\u{10FFFF}/b",
    "\u{10FFFF}\u{10FFFF}",
    "z",
];
/// Of [`EDGE_KEYS`], the ones whose latest version is a delete marker.
const EDGE_DELETED: &[&str] = &["a/2/x", "p/x", "x--w", "日本0", "k\u{E000}"];

/// The listing rule, said plainly over every live key: the page a store must return.
fn expected_page(live: &[&str], q: &ListQuery<'_>) -> (Vec<String>, Vec<String>, Option<String>) {
    let mut keys = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    for key in live
        .iter()
        .filter(|k| **k > q.start_after && k.starts_with(q.prefix))
    {
        let group = q.delimiter.filter(|d| !d.is_empty()).and_then(|d| {
            key[q.prefix.len()..]
                .find(d)
                .map(|i| key[..q.prefix.len() + i + d.len()].to_string())
        });
        if let Some(g) = &group
            && (prefixes.last() == Some(g) || q.start_after.starts_with(g.as_str()))
        {
            continue;
        }
        if keys.len() + prefixes.len() == q.max_keys {
            let last = keys.last().cloned().max(prefixes.last().cloned());
            return (keys, prefixes, last);
        }
        match group {
            Some(g) => prefixes.push(g),
            None => keys.push(key.to_string()),
        }
    }
    (keys, prefixes, None)
}

fn listings_agree_with_the_listing_rule_page_by_page(s: &dyn MetadataStore) {
    s.create_bucket(&bucket("b")).unwrap();
    for key in EDGE_KEYS {
        s.put_version(&version(key, "v1", 1)).unwrap();
    }
    for key in EDGE_DELETED {
        let mut marker = version(key, "v2", 0);
        marker.delete_marker = true;
        marker.layout = None;
        s.put_version(&marker).unwrap();
    }
    let mut live: Vec<&str> = EDGE_KEYS
        .iter()
        .copied()
        .filter(|k| !EDGE_DELETED.contains(k))
        .collect();
    live.sort_unstable();
    for prefix in [
        "",
        "a",
        "a/",
        "p",
        "p/",
        "x",
        "é",
        "日本/",
        "k\u{D7FF}",
        "m\u{10FFFF}",
        "\u{10FFFF}",
        "q",
    ] {
        for delimiter in [None, Some("/"), Some("--"), Some("語")] {
            for max_keys in [1, 2, 1000] {
                let mut after = String::new();
                for _ in 0..=live.len() {
                    let q = ListQuery {
                        prefix,
                        delimiter,
                        start_after: &after,
                        max_keys,
                    };
                    let page = s.list("b", &q).unwrap();
                    let got = (
                        page.objects
                            .iter()
                            .map(|o| o.key.clone())
                            .collect::<Vec<_>>(),
                        page.common_prefixes.clone(),
                        page.next_marker.clone(),
                    );
                    assert_eq!(got, expected_page(&live, &q), "{q:?}");
                    match page.next_marker {
                        Some(next) => after = next,
                        None => break,
                    }
                }
            }
        }
    }
}

/// `keys` live keys `{dir}{i:05}` in bucket "b" of a fresh store.
fn many_keys(s: &dyn MetadataStore, dir: &str, keys: usize) {
    for i in 0..keys {
        s.put_version(&version(&format!("{dir}{i:05}"), NULL_VERSION, 1))
            .unwrap();
    }
}

#[test]
fn a_delimiter_listing_seeks_past_a_common_prefix_instead_of_reading_its_keys() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.create_bucket(&bucket("b")).unwrap();
    many_keys(&s, "big/", 10_000);
    for key in ["a", "c/1", "c/2", "d", "big0"] {
        s.put_version(&version(key, NULL_VERSION, 1)).unwrap();
    }
    crate::meta::probe::take_listed_rows();
    let page = s
        .list(
            "b",
            &ListQuery {
                delimiter: Some("/"),
                max_keys: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a", "big0", "d"]);
    assert_eq!(page.common_prefixes, ["big/", "c/"]);
    let read = crate::meta::probe::take_listed_rows();
    assert!(read <= 7, "read {read} rows for a page of 5 entries");

    // One entry a page, with markers: the same small number of rows each time.
    let mut after = String::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = s
            .list(
                "b",
                &ListQuery {
                    delimiter: Some("/"),
                    start_after: &after,
                    max_keys: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        let read = crate::meta::probe::take_listed_rows();
        assert!(
            read <= 4,
            "read {read} rows for a page of one entry after {after:?}"
        );
        seen.extend(page.objects.iter().map(|o| o.key.clone()));
        seen.extend(page.common_prefixes.iter().cloned());
        match page.next_marker {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, ["a", "big/", "big0", "c/", "d"]);

    // A versions listing seeks the same way.
    let versions = s
        .list_versions(
            "b",
            &VersionQuery {
                delimiter: Some("/"),
                max_keys: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(versions.versions.len(), 3);
    assert_eq!(versions.common_prefixes, ["big/", "c/"]);
    let read = crate::meta::probe::take_listed_rows();
    assert!(read <= 7, "read {read} versions for a page of 5 entries");

    // A prefix bounds the read: the 10 000 keys sorting before it are not read.
    let page = s
        .list(
            "b",
            &ListQuery {
                prefix: "c/",
                max_keys: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.objects.len(), 2);
    let read = crate::meta::probe::take_listed_rows();
    assert!(read <= 2, "read {read} rows for a prefix of two keys");
}

#[test]
fn a_listing_of_many_delete_markers_reads_a_bounded_number_of_rows_per_page() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.create_bucket(&bucket("b")).unwrap();
    let deleted = listing::SKIPPED_ROWS_PER_PAGE * 2 + 10;
    for i in 0..deleted {
        let mut marker = version(&format!("gone{i:05}"), NULL_VERSION, 0);
        marker.delete_marker = true;
        marker.layout = None;
        s.put_version(&marker).unwrap();
    }
    s.put_version(&version("live", NULL_VERSION, 1)).unwrap();
    crate::meta::probe::take_listed_rows();
    let mut after = String::new();
    let mut pages = 0;
    let mut found = Vec::new();
    loop {
        pages += 1;
        assert!(pages <= 4, "no end to the pages");
        let page = s
            .list(
                "b",
                &ListQuery {
                    start_after: &after,
                    max_keys: 1000,
                    ..Default::default()
                },
            )
            .unwrap();
        let read = crate::meta::probe::take_listed_rows() as usize;
        assert!(
            read <= listing::SKIPPED_ROWS_PER_PAGE + 1,
            "a page read {read} rows"
        );
        found.extend(page.objects.iter().map(|o| o.key.clone()));
        match page.next_marker {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(found, ["live"]);
    assert_eq!(pages, 3, "two pages cut short, then the last");
}

/// An admin read in progress (a scrape's plan health over many versions) holds its own
/// connection: S3 metadata calls made meanwhile do not wait for it.
#[test]
fn an_admin_read_in_progress_does_not_stall_s3_metadata_calls() {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SqliteStore::open(&dir.path().join("meta.db")).unwrap());
    s.create_bucket(&bucket("b")).unwrap();
    let all: Vec<(String, bool)> = (0..6).map(|i| (format!("n{i}"), true)).collect();
    s.record_probes(&all, 1_000).unwrap();
    for i in 0..200 {
        s.put_version(&striped(&format!("k{i:03}"), 2)).unwrap();
    }
    let (inside_tx, inside) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let admin = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let mut first = Some((inside_tx, release_rx));
            crate::meta::probe::on_aggregate_row(move || {
                if let Some((inside, release)) = first.take() {
                    inside.send(()).unwrap();
                    // Held until the S3 calls below are done (or have given up).
                    let _ = release.recv_timeout(Duration::from_secs(60));
                }
            });
            s.plan_health("family-photos", 0, 1000).unwrap()
        })
    };
    inside
        .recv_timeout(Duration::from_secs(60))
        .expect("the admin read started");
    let (done_tx, done) = mpsc::channel();
    {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            s.put_version(&version("new", NULL_VERSION, 7)).unwrap();
            let got = s.version("b", "new", None).unwrap().map(|v| v.size);
            let listed = s
                .list(
                    "b",
                    &ListQuery {
                        prefix: "new",
                        max_keys: 10,
                        ..Default::default()
                    },
                )
                .unwrap()
                .objects
                .len();
            done_tx.send((got, listed)).unwrap();
        });
    }
    // Only a store that makes S3 calls wait for the admin read gets near this timeout.
    let s3 = done.recv_timeout(Duration::from_secs(20));
    release.send(()).unwrap();
    assert_eq!(
        s3.expect("an S3 metadata call waited for the admin read"),
        (Some(7), 1)
    );
    let groups = admin.join().unwrap();
    assert_eq!(
        groups.iter().map(|g| g.objects).sum::<u64>(),
        200,
        "the admin read saw every striped version"
    );
}

/// `sublet recover` builds a store aside and moves the file alone into place: closing the
/// store (both its connections) must leave every commit in the database file itself.
#[test]
fn closing_the_store_leaves_every_commit_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("built.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create_bucket(&bucket("b")).unwrap();
        s.put_version(&version("k", NULL_VERSION, 9)).unwrap();
        // The read-only connection has read, so it is open at close.
        assert!(s.plan_usage().unwrap().len() == 1);
    }
    let moved = dir.path().join("moved.db");
    std::fs::rename(&path, &moved).unwrap();
    let s = SqliteStore::open(&moved).unwrap();
    assert_eq!(s.version("b", "k", None).unwrap().unwrap().size, 9);
}
