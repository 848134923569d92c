//! Two real `sublet serve` processes on one PostgreSQL database and one set of providers, as
//! two replicas behind one Service: writers on the same keys through both gateways lose no
//! acknowledged version; a gateway killed (SIGKILL) in the middle of a streaming PUT and of a
//! multipart part commits nothing of either, the other gateway serves every acknowledged
//! byte, and garbage collection then leaves the disks holding exactly what the metadata says.
//! The writers' gateways reach their database over TLS, the others in plain TCP.
//!
//! Without PostgreSQL binaries the tests print why and pass, unless
//! `SUBLET_REQUIRE_POSTGRES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use sublet_e2e::bench::client::BenchBody;
use sublet_e2e::bench::content::Content;
use sublet_e2e::cluster::{
    Cluster, ClusterSpec, GatewayProcess, ProviderTransport, TestObject, wait_for,
};

const PLAN: &str = "standard";
const SEGMENT: u64 = 256 << 10;
/// Data plus parity shards of the plan.
const WIDTH: u64 = 6;
const MIB: u64 = 1 << 20;

const POLICIES: &str = r#"
apiVersion: sublet.dev/v1alpha1
kind: StorageSchedule
metadata: {name: fast}
spec:
  rebuild: {gracePeriod: 1s}
---
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: standard}
spec:
  redundancy: {erasure: {dataShards: 4, parityShards: 2}}
  segmentSize: 256Ki
  placement: {spreadBy: node, maxPerDomain: 1}
  schedule: fast
"#;

/// Six providers and two gateways on a fresh database, reached over TLS when `tls` (the
/// server then refuses plain connections); `None` without PostgreSQL.
fn two_gateways(dir: &std::path::Path, tls: bool) -> Option<Cluster> {
    let url = if tls {
        sublet_e2e::postgres::tls_database()?
    } else {
        sublet_e2e::postgres::database()?
    };
    Some(two_gateways_on(dir, url))
}

/// Six providers and two gateways on the database at `url`.
fn two_gateways_on(dir: &std::path::Path, url: String) -> Cluster {
    Cluster::start_with(
        dir,
        &ClusterSpec {
            providers: 6,
            gateways: 2,
            policies: POLICIES,
            default_plan: PLAN,
            postgres: Some(url),
            transport: ProviderTransport::Tls,
        },
    )
}

fn plan_health(g: &GatewayProcess) -> Value {
    g.admin_get(&format!("/admin/v1/plans/{PLAN}"))
}

/// The text of every `<name>` element of `xml`.
fn tags<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|s| s.split(close.as_str()).next())
        .collect()
}

/// Body of one write: its own seed, so no two writes of a key share bytes.
fn body(writer: u64, round: u64, len: u64) -> Content {
    Content {
        seed: 0x5eed_0000 + writer * 100 + round,
        len,
    }
}

/// Shards of `len` bytes in the plan.
fn shards_of(len: u64) -> u64 {
    len.div_ceil(SEGMENT).max(1) * WIDTH
}

#[test]
fn writers_on_the_same_keys_through_two_gateways_lose_no_acknowledged_version() {
    let tmp = tempfile::tempdir().unwrap();
    // Over TLS: the URL says sslmode=verify-full and names the server's CA.
    let Some(c) = two_gateways(tmp.path(), true) else {
        return;
    };
    let (g0, g1) = (&c.gateways[0], &c.gateways[1]);
    for g in [g0, g1] {
        assert!(g.log_tail().contains("tls: true"), "{}", g.log_tail());
    }
    g0.create_bucket("shared");
    // The bucket made through one gateway is there for the other.
    g1.request(
        Method::PUT,
        "shared",
        None,
        &[("versioning", "")],
        BenchBody::Bytes(Some(bytes::Bytes::from_static(
            b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
        ))),
    )
    .unwrap();

    // Four writers, two per gateway, each PUTting both keys in turn; every write has its own
    // length, which tells the versions apart in listings.
    const KEYS: [&str; 2] = ["k0", "k1"];
    let acked: Vec<(String, Content)> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let g = &c.gateways[(w % 2) as usize];
                s.spawn(move || {
                    let mut acked = Vec::new();
                    for round in 0..4u64 {
                        let key = KEYS[(round % 2) as usize];
                        let len = 100_000 + w * 37_000 + round * 151_000;
                        let content = body(w, round, len);
                        g.put_content("shared", key, content)
                            .unwrap_or_else(|e| panic!("writer {w} via {}: {e}", g.name));
                        acked.push((key.to_string(), content));
                    }
                    acked
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });

    let mut total_len = 0;
    for key in KEYS {
        let ours: BTreeMap<u64, Content> = acked
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, c)| (c.len, *c))
            .collect();
        total_len += ours.keys().sum::<u64>();
        let listing = g0
            .request(
                Method::GET,
                "shared",
                None,
                &[("versions", ""), ("prefix", key)],
                BenchBody::empty(),
            )
            .unwrap();
        let versions: Vec<&str> = listing.split("<Version>").skip(1).collect();
        let sizes: Vec<u64> = versions
            .iter()
            .map(|v| tags(v, "Size")[0].parse().unwrap())
            .collect();
        let mut sorted = sizes.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            ours.keys().copied().collect::<Vec<_>>(),
            "{key}: the versions are exactly the acknowledged writes\n{listing}"
        );
        // Every version reads back byte for byte through the other gateway.
        for (v, size) in versions.iter().zip(&sizes) {
            let id = tags(v, "VersionId")[0];
            g1.verify("shared", key, &[("versionId", id)], ours[size])
                .unwrap_or_else(|e| panic!("{key} version {id} via g1: {e}"));
        }
        // Both gateways serve the same latest version.
        let latest = versions
            .iter()
            .zip(&sizes)
            .find(|(v, _)| tags(v, "IsLatest") == ["true"])
            .map(|(_, size)| ours[size])
            .unwrap_or_else(|| panic!("{key}: no latest version\n{listing}"));
        for g in [g0, g1] {
            g.verify("shared", key, &[], latest)
                .unwrap_or_else(|e| panic!("latest {key} via {}: {e}", g.name));
        }
    }
    // Each version counted once, whichever gateway wrote it.
    for g in [g0, g1] {
        let h = plan_health(g);
        assert_eq!(h["objects"], acked.len() as u64, "{}: {h}", g.name);
        assert_eq!(h["logicalBytes"], total_len, "{}: {h}", g.name);
        let shards: u64 = acked.iter().map(|(_, c)| shards_of(c.len)).sum();
        assert_eq!(h["shards"]["healthy"], shards, "{}: {h}", g.name);
    }
}

/// A request whose body is only partly sent: the head and the first `sent` bytes of
/// `content`, on a connection kept open until it is dropped.
fn start_cut_upload(
    g: &GatewayProcess,
    bucket: &str,
    key: &str,
    query: &[(&str, &str)],
    content: Content,
    sent: u64,
) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(g.s3).unwrap();
    let head = g.signed_head("PUT", bucket, key, query, Some(content.len));
    stream.write_all(head.as_bytes()).unwrap();
    let mut offset = 0;
    while offset < sent {
        let n = (sent - offset).min(MIB);
        stream
            .write_all(&content.chunk(offset, n as usize))
            .unwrap();
        offset += n;
    }
    stream.flush().unwrap();
    stream
}

/// Shard files on every provider, and shards the metadata places on them.
fn shards_on_disk_and_in_metadata(c: &Cluster) -> (u64, u64) {
    let disk = c
        .providers
        .iter()
        .map(|p| p.shard_files().len() as u64)
        .sum();
    let meta = (0..c.providers.len()).map(|i| c.shards_on(i)).sum();
    (disk, meta)
}

#[test]
fn a_gateway_killed_mid_upload_commits_nothing_and_the_other_serves_every_acknowledged_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(url) = sublet_e2e::postgres::database() else {
        return;
    };
    let mut c = two_gateways_on(tmp.path(), url.clone());
    c.gateways[0].create_bucket("uploads");
    // Acknowledged writes through both gateways.
    let mut objects: Vec<TestObject> = (0..6u64)
        .map(|i| TestObject {
            key: format!("acked-{i}"),
            len: 50_000 + i * 300_000,
        })
        .collect();
    for (i, o) in objects.iter().enumerate() {
        c.gateways[i % 2].put("uploads", o);
    }

    // A multipart upload through g1: part 1 acknowledged, part 2 about to be cut.
    let g1 = &c.gateways[1];
    let multipart = TestObject {
        key: "mp/big".into(),
        len: 5 * MIB + 700_000,
    };
    let mp = multipart.content();
    let created = g1
        .request(
            Method::POST,
            "uploads",
            Some(&multipart.key),
            &[("uploads", "")],
            BenchBody::empty(),
        )
        .unwrap();
    let upload_id = tags(&created, "UploadId")[0].to_string();
    g1.request(
        Method::PUT,
        "uploads",
        Some(&multipart.key),
        &[("partNumber", "1"), ("uploadId", &upload_id)],
        BenchBody::generated(mp, 0, 5 * MIB),
    )
    .unwrap();

    // g1 is in the middle of a 12 MiB streaming PUT and of part 2 when it is killed.
    // Pool counts hold committed versions only; part 1 is on disk already.
    let part1 = shards_of(5 * MIB);
    let (before_disk, before_meta) = shards_on_disk_and_in_metadata(&c);
    assert_eq!(
        before_disk,
        before_meta + part1,
        "shard files before the cut: the objects' and part 1's"
    );
    let cut = TestObject {
        key: "cut/big".into(),
        len: 12 * MIB,
    };
    let put_stream = start_cut_upload(g1, "uploads", &cut.key, &[], cut.content(), 5 * MIB);
    let part2 = Content {
        seed: 0xc0ffee,
        len: 2 * MIB,
    };
    let part_stream = start_cut_upload(
        g1,
        "uploads",
        &multipart.key,
        &[("partNumber", "2"), ("uploadId", &upload_id)],
        part2,
        MIB,
    );
    // Segments of both cut bodies have reached the providers: the cut lands mid-upload.
    wait_for(
        "shards of the cut uploads on disk",
        Duration::from_secs(60),
        || {
            let (disk, meta) = shards_on_disk_and_in_metadata(&c);
            if disk >= meta + part1 + 2 * WIDTH * 2 {
                Ok(())
            } else {
                Err(format!("{disk} shard files, {meta} in metadata"))
            }
        },
    );
    c.gateways[1].kill();
    drop((put_stream, part_stream));
    let g0 = &c.gateways[0];

    // Nothing of the cut PUT is visible; every acknowledged object is, byte for byte.
    let head = g0.request(
        Method::HEAD,
        "uploads",
        Some(&cut.key),
        &[],
        BenchBody::empty(),
    );
    assert!(
        head.as_ref().is_err_and(|e| e.contains("404")),
        "HEAD of the cut object: {head:?}"
    );
    g0.assert_all_read_back("uploads", &objects);
    let listing = g0
        .request(
            Method::GET,
            "uploads",
            None,
            &[("list-type", "2")],
            BenchBody::empty(),
        )
        .unwrap();
    let mut acked_keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    acked_keys.sort_unstable();
    assert_eq!(tags(&listing, "Key"), acked_keys, "{listing}");
    let h = plan_health(g0);
    assert_eq!(h["objects"], objects.len() as u64, "{h}");
    assert_eq!(
        h["logicalBytes"],
        objects.iter().map(|o| o.len).sum::<u64>(),
        "{h}"
    );
    // The upload holds part 1 only: the cut part left nothing behind.
    let parts = g0
        .request(
            Method::GET,
            "uploads",
            Some(&multipart.key),
            &[("uploadId", &upload_id)],
            BenchBody::empty(),
        )
        .unwrap();
    assert_eq!(tags(&parts, "PartNumber"), ["1"], "{parts}");
    assert_eq!(tags(&parts, "Size"), [(5 * MIB).to_string()], "{parts}");

    // g0 finishes the upload g1 began.
    g0.request(
        Method::PUT,
        "uploads",
        Some(&multipart.key),
        &[("partNumber", "2"), ("uploadId", &upload_id)],
        BenchBody::generated(mp, 5 * MIB, mp.len),
    )
    .unwrap();
    let parts = g0
        .request(
            Method::GET,
            "uploads",
            Some(&multipart.key),
            &[("uploadId", &upload_id)],
            BenchBody::empty(),
        )
        .unwrap();
    let etags = tags(&parts, "ETag");
    assert_eq!(etags.len(), 2, "{parts}");
    let complete = format!(
        "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
        etags
            .iter()
            .enumerate()
            .map(|(i, e)| format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>",
                i + 1
            ))
            .collect::<String>()
    );
    g0.request(
        Method::POST,
        "uploads",
        Some(&multipart.key),
        &[("uploadId", &upload_id)],
        BenchBody::Bytes(Some(bytes::Bytes::from(complete))),
    )
    .unwrap();
    objects.push(multipart);
    g0.assert_all_read_back("uploads", &objects);

    // The cut uploads' shards are unreferenced; once collected, the disks hold exactly what
    // the metadata says and every acknowledged object is still whole.
    let (disk, meta) = shards_on_disk_and_in_metadata(&c);
    let expected: u64 = objects.iter().map(|o| shards_of(o.len)).sum();
    assert_eq!(meta, expected, "shards in metadata");
    assert!(disk > meta, "the cut uploads left no shard behind: {disk}");
    // stored_at has a one second resolution.
    std::thread::sleep(Duration::from_millis(1100));
    // g1 died holding its cut writes in the shared store (`writes_in_flight`): until those
    // holds expire unrenewed, collection on g0 keeps their shards whatever the minimum age,
    // as it must for a write that is only slow.
    let gc = g0.admin_post("/admin/v1/gc?minAgeSeconds=0");
    eprintln!("garbage collection while the dead gateway's holds last: {gc}");
    assert_eq!(gc["deleted"], 0, "{gc}");
    assert_eq!(gc["young"], disk - meta, "{gc}");
    // As if the holds' five minutes had passed.
    sublet_e2e::postgres::execute(&url, "UPDATE writes_in_flight SET until = 0");
    let gc = g0.admin_post("/admin/v1/gc?minAgeSeconds=0");
    eprintln!("garbage collection after the holds expired: {gc}");
    assert_eq!(gc["deleted"], disk - meta, "{gc}");
    for (i, p) in c.providers.iter().enumerate() {
        assert_eq!(
            p.shard_files().len() as u64,
            c.shards_on(i),
            "provider {}: shard files on disk vs shards in metadata",
            p.name
        );
    }
    let h = plan_health(g0);
    assert_eq!(h["objects"], objects.len() as u64, "{h}");
    assert_eq!(h["shards"]["healthy"], expected, "{h}");
    g0.assert_all_read_back("uploads", &objects);

    // g1 comes back on the same database and serves the same objects.
    c.gateways[1].start();
    c.gateways[1].assert_all_read_back("uploads", &objects);
    let head = c.gateways[1].request(
        Method::HEAD,
        "uploads",
        Some(&cut.key),
        &[],
        BenchBody::empty(),
    );
    assert!(head.is_err(), "HEAD of the cut object via g1: {head:?}");
}

/// A GET streaming through one gateway while the other overwrites the key. A gateway sees
/// only its own reads in flight (gateway/src/s3/inflight.rs); on a shared (PostgreSQL)
/// store it therefore retires a replaced version's shards for 15 minutes instead of freeing
/// them, so g1 keeps streaming what g0 replaced.
#[test]
fn a_get_through_one_gateway_survives_an_overwrite_through_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(c) = two_gateways(tmp.path(), false) else {
        return;
    };
    let (g0, g1) = (&c.gateways[0], &c.gateways[1]);
    g0.create_bucket("shared");
    let object = TestObject {
        key: "big".into(),
        // More than loopback socket buffers hold.
        len: 12 * MIB,
    };
    g0.put("shared", &object);

    // A slow reader through g1: the answer's head and the first 64 KiB, then a pause.
    let get = g1.slow_get("shared", &object.key);

    // Meanwhile g0 overwrites the key.
    g0.put(
        "shared",
        &TestObject {
            key: object.key.clone(),
            len: object.len + 1,
        },
    );
    get.finish(&object);
}

#[test]
fn a_policy_applied_through_one_gateway_runs_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = two_gateways(dir.path(), false) else {
        return;
    };
    let (g0, g1) = (&c.gateways[0], &c.gateways[1]);
    let cold = "kind: StoragePlan\nmetadata: {name: cold}\nspec:\n  redundancy: {replicas: 2}\n  segmentSize: 64Ki\n";
    let (status, body) = g0.admin_put("/admin/v1/policy/plans/cold", cold);
    assert_eq!(status, 201, "{body}");
    // The other replica takes it over from the database within a few seconds.
    wait_for(
        "the other gateway to run the new plan",
        Duration::from_secs(20),
        || {
            let (status, body) = sublet_e2e::cluster::http_call(
                g1.admin,
                "GET",
                "/admin/v1/plans/cold",
                None,
                Duration::from_secs(10),
            )
            .map_err(|e| e.to_string())?;
            (status == 200)
                .then_some(())
                .ok_or(format!("{status}: {body}"))
        },
    );
    g1.create_bucket("chilly");
    let (status, body) = g1.admin_put("/admin/v1/buckets/chilly", r#"{"defaultPlan": "cold"}"#);
    assert_eq!(status, 200, "{body}");
    let object = TestObject {
        key: "frozen".into(),
        len: 200_000,
    };
    g1.put("chilly", &object);
    g0.read_back("chilly", &object).unwrap();
    let health = plan_json(g0, "cold");
    assert_eq!(health["objectsByHealth"]["healthy"], 1, "{health}");
    let listed = g1.admin_get("/admin/v1/policy/plans");
    assert!(listed.to_string().contains("\"cold\""), "{listed}");
}

fn plan_json(g: &GatewayProcess, plan: &str) -> Value {
    g.admin_get(&format!("/admin/v1/plans/{plan}"))
}
