//! Object lock against a key that wants data gone (ransomware with the backup key, or an
//! operator's mistake): versions under COMPLIANCE retention, GOVERNANCE retention and a
//! legal hold survive version deletes (with and without a governance bypass the key may
//! not use), a lifecycle pass that expires them, garbage collection, a transition to a
//! wider plan (the re-encode path) and the loss of the gateway's metadata disk, recovered
//! from the providers with every lock in place.

use http::Method;
use sublet_e2e::bench::client::BenchBody;
use sublet_e2e::cluster::{Cluster, TestObject, test_objects};

const BUCKET: &str = "vault";

const POLICIES: &str = r#"
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: standard}
spec:
  redundancy: {erasure: {dataShards: 2, parityShards: 1}}
  segmentSize: 64Ki
  placement: {spreadBy: node, maxPerDomain: 1}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: archive}
spec:
  redundancy: {erasure: {dataShards: 3, parityShards: 1}}
  segmentSize: 64Ki
  placement: {spreadBy: node, maxPerDomain: 1}
"#;

fn xml_body(xml: &str) -> BenchBody {
    BenchBody::Bytes(Some(bytes::Bytes::from(xml.to_string())))
}

fn md5_of(xml: &str) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml))
}

/// `(key, version id)` of every data version (not delete markers) in the bucket.
fn versions(c: &Cluster) -> Vec<(String, String)> {
    let xml = c
        .request(
            Method::GET,
            BUCKET,
            None,
            &[("versions", "")],
            BenchBody::empty(),
        )
        .unwrap();
    xml.split("<Version>")
        .skip(1)
        .map(|block| {
            let field = |name: &str| {
                let open = format!("<{name}>");
                let start = block.find(&open).unwrap() + open.len();
                let end = block[start..].find('<').unwrap() + start;
                block[start..end].to_string()
            };
            (field("Key"), field("VersionId"))
        })
        .collect()
}

fn version_of(all: &[(String, String)], key: &str) -> String {
    all.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no version of {key} in {all:?}"))
}

fn delete_version(c: &Cluster, key: &str, id: &str, bypass: bool) -> Result<String, String> {
    let headers: &[(&str, &str)] = if bypass {
        &[("x-amz-bypass-governance-retention", "true")]
    } else {
        &[]
    };
    c.request_with(
        Method::DELETE,
        BUCKET,
        Some(key),
        &[("versionId", id)],
        headers,
        BenchBody::empty(),
    )
}

fn assert_locked(c: &Cluster, key: &str, id: &str, bypass: bool, why: &str) {
    let err = delete_version(c, key, id, bypass).unwrap_err();
    assert!(
        err.contains("AccessDenied") && err.contains(why),
        "deleting {key} {id}: {err}"
    );
}

fn read_every_version(c: &Cluster, objects: &[TestObject], all: &[(String, String)]) {
    for o in objects {
        let id = version_of(all, &o.key);
        c.verify(BUCKET, &o.key, &[("versionId", &id)], o.content())
            .unwrap_or_else(|e| panic!("{} {id}: {e}", o.key));
    }
}

#[test]
fn locked_versions_outlive_deletes_lifecycle_gc_a_transition_and_a_metadata_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(tmp.path(), 4, POLICIES, "standard");
    c.request_with(
        Method::PUT,
        BUCKET,
        None,
        &[],
        &[("x-amz-bucket-object-lock-enabled", "true")],
        BenchBody::empty(),
    )
    .unwrap();
    let config = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
        <Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>1</Days></DefaultRetention></Rule>\
        </ObjectLockConfiguration>";
    c.request_with(
        Method::PUT,
        BUCKET,
        None,
        &[("object-lock", "")],
        &[("content-md5", &md5_of(config))],
        xml_body(config),
    )
    .unwrap();
    // Versioning cannot be suspended under object lock.
    let suspend = "<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>";
    let err = c
        .request(
            Method::PUT,
            BUCKET,
            None,
            &[("versioning", "")],
            xml_body(suspend),
        )
        .unwrap_err();
    assert!(err.contains("InvalidBucketState"), "{err}");

    // Backups under the bucket's default (COMPLIANCE, 1 day), scans to be moved to the
    // archive plan, a note under GOVERNANCE retention asked for by its PUT.
    let backups = test_objects("x/backup", 3, 200 << 10);
    let scans = test_objects("t/scan", 2, 150 << 10);
    for o in backups.iter().chain(&scans) {
        c.put(BUCKET, o);
    }
    let note = TestObject {
        key: "g/note".into(),
        len: 5_000,
    };
    c.request_with(
        Method::PUT,
        BUCKET,
        Some(&note.key),
        &[],
        &[
            ("x-amz-object-lock-mode", "GOVERNANCE"),
            (
                "x-amz-object-lock-retain-until-date",
                "2099-01-01T00:00:00Z",
            ),
        ],
        BenchBody::generated(note.content(), 0, note.len),
    )
    .unwrap();
    let everything: Vec<TestObject> = backups
        .iter()
        .chain(&scans)
        .chain(std::iter::once(&note))
        .cloned()
        .collect();
    let all = versions(&c);
    assert_eq!(all.len(), everything.len(), "{all:?}");

    // The key deletes versions: refused, naming the lock and its date.
    for o in backups.iter().chain(&scans) {
        assert_locked(&c, &o.key, &version_of(&all, &o.key), false, "COMPLIANCE");
        assert_locked(&c, &o.key, &version_of(&all, &o.key), true, "COMPLIANCE");
    }
    // Asking to bypass governance retention needs a key allowed to (this one is not).
    let note_id = version_of(&all, &note.key);
    assert_locked(&c, &note.key, &note_id, true, "GOVERNANCE");
    assert_locked(&c, &note.key, &note_id, false, "GOVERNANCE");
    // Nor can the retention be shortened.
    let shorter = "<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>2098-01-01T00:00:00Z\
        </RetainUntilDate></Retention>";
    let err = c
        .request_with(
            Method::PUT,
            BUCKET,
            Some(&note.key),
            &[("retention", ""), ("versionId", &note_id)],
            &[
                ("content-md5", &md5_of(shorter)),
                ("x-amz-bypass-governance-retention", "true"),
            ],
            xml_body(shorter),
        )
        .unwrap_err();
    assert!(err.contains("AccessDenied"), "{err}");
    // A delete without a version id only stacks a delete marker, as in S3.
    c.request(
        Method::DELETE,
        BUCKET,
        Some(&backups[0].key),
        &[],
        BenchBody::empty(),
    )
    .unwrap();
    let err = c.read_back(BUCKET, &backups[0]).unwrap_err();
    assert!(err.contains("NoSuchKey"), "{err}");

    // Lifecycle rules expire the backups (and their noncurrent versions) and move the scans
    // to the archive plan, as seen 400 days from now: the locks are in real time.
    let rules = "<LifecycleConfiguration>\
        <Rule><ID>expire</ID><Filter><Prefix>x/</Prefix></Filter><Status>Enabled</Status>\
        <Expiration><Days>1</Days></Expiration>\
        <NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule>\
        <Rule><ID>cool</ID><Filter><Prefix>t/</Prefix></Filter><Status>Enabled</Status>\
        <Transition><Days>1</Days><StorageClass>archive</StorageClass></Transition></Rule>\
        </LifecycleConfiguration>";
    c.put_lifecycle(BUCKET, rules);
    let report = c.admin_post("/admin/v1/lifecycle?daysAhead=400");
    assert!(report["locked"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["transitioned"], 2, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let report = c.admin_post("/admin/v1/lifecycle?daysAhead=400");
    assert_eq!(report["noncurrentDeleted"], 0, "{report}");
    assert_eq!(versions(&c), all, "lifecycle removed a locked version");
    read_every_version(&c, &everything, &all);
    // Moved to the archive plan with their lock.
    for o in &scans {
        let id = version_of(&all, &o.key);
        let retention = c
            .request(
                Method::GET,
                BUCKET,
                Some(&o.key),
                &[("retention", ""), ("versionId", &id)],
                BenchBody::empty(),
            )
            .unwrap();
        assert!(retention.contains("COMPLIANCE"), "{retention}");
        assert_locked(&c, &o.key, &id, false, "COMPLIANCE");
    }

    // Garbage collection leaves every locked version's shards.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let gc = c.admin_post("/admin/v1/gc?minAgeSeconds=0");
    eprintln!("garbage collection: {gc}");
    read_every_version(&c, &everything, &all);

    // A snapshot, then a legal hold only the journal holds; then the metadata disk is lost
    // and recovered from the providers.
    c.admin_post("/admin/v1/snapshot");
    let hold = "<LegalHold><Status>ON</Status></LegalHold>";
    let scan_id = version_of(&all, &scans[0].key);
    c.request_with(
        Method::PUT,
        BUCKET,
        Some(&scans[0].key),
        &[("legal-hold", ""), ("versionId", &scan_id)],
        &[("content-md5", &md5_of(hold))],
        xml_body(hold),
    )
    .unwrap();
    c.kill_gateway();
    c.lose_metadata();
    c.recover();
    c.start_gateway();
    let held = c
        .request(
            Method::GET,
            BUCKET,
            Some(&scans[0].key),
            &[("legal-hold", ""), ("versionId", &scan_id)],
            BenchBody::empty(),
        )
        .unwrap();
    assert!(held.contains("<Status>ON</Status>"), "{held}");
    let config = c
        .request(
            Method::GET,
            BUCKET,
            None,
            &[("object-lock", "")],
            BenchBody::empty(),
        )
        .unwrap();
    assert!(
        config.contains("COMPLIANCE") && config.contains("<Days>1</Days>"),
        "{config}"
    );
    for o in backups.iter().chain(&scans) {
        assert_locked(&c, &o.key, &version_of(&all, &o.key), true, "locked");
    }
    assert_locked(&c, &note.key, &note_id, true, "GOVERNANCE");
    assert_eq!(versions(&c), all);
    read_every_version(&c, &everything, &all);
}
