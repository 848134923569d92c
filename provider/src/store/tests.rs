#![allow(clippy::unwrap_used)]
use std::sync::Arc;

use super::format::{BAO_FORMAT, FORMAT_VERSION};
use super::*;
use crate::tree;

const GIB: u64 = 1 << 30;

fn put(store: &Arc<Store>, id: &str, data: &[u8]) -> Result<ShardMeta> {
    let mut w = store.begin_put(id, data.len() as u64, None)?;
    for chunk in data.chunks(100_000) {
        w.write(chunk)?;
    }
    w.commit()
}

fn read_all(store: &Store, id: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut r = store.read_range(id, offset, len)?;
    let mut out = Vec::new();
    while r.remaining() > 0 {
        out.extend(r.next_chunk(65536)?);
    }
    Ok(out)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 1000) as u8).collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(dir.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn shard_ids_are_validated() {
    for ok in ["a", "shard-1.part_2", &"x".repeat(200)] {
        assert!(validate_shard_id(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".hidden", "a/b", "..", "é", &"x".repeat(201), "a b"] {
        assert!(validate_shard_id(bad).is_err(), "{bad}");
    }
}

/// A shard file as providers wrote them before format 2 (bao's outboard), in `dir`'s
/// store; answers the file's bytes.
fn write_format_1(dir: &Path, id: &str, d: &[u8]) -> Vec<u8> {
    fs::create_dir_all(dir.join("shards")).unwrap();
    let (outboard, hash) = bao::encode::outboard(d);
    let mut file = Header {
        version: BAO_FORMAT,
        id: id.into(),
        length: d.len() as u64,
        stored_at: 1,
        hash: *hash.as_bytes(),
    }
    .encode();
    file.extend_from_slice(d);
    file.extend_from_slice(&outboard);
    fs::write(dir.join(format!("shards/{id}.shard")), &file).unwrap();
    file
}

#[test]
fn format_1_shards_are_rewritten_in_format_2() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (data(300_000), data(20_000_000));
    let old_a = write_format_1(dir.path(), "a", &a);
    write_format_1(dir.path(), "b", &b);
    let mut rotten = write_format_1(dir.path(), "rotten", &a);
    rotten[Header::len_for("rotten") as usize + 5] ^= 1;
    fs::write(dir.path().join("shards/rotten.shard"), &rotten).unwrap();
    write_format_1(dir.path(), "empty", &[]);
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    let before = store.stat("a").unwrap();
    assert_eq!((before.format, before.file_size), (1, old_a.len() as u64));
    let used = store.usage().used;

    // A shard replaced since it was listed is left alone.
    let stale = ShardMeta {
        stored_at: 2,
        ..before.clone()
    };
    assert_eq!(store.upgrade_one("a", &stale).unwrap(), None);
    assert_eq!(store.stat("a").unwrap(), before);

    let report = store.upgrade_shards();
    let after = store.stat("a").unwrap();
    let reclaimed = (before.file_size - after.file_size)
        + (file_size_for("b", b.len() as u64, 1) - file_size_for("b", b.len() as u64, 2))
        + (file_size_for("empty", 0, 1) - file_size_for("empty", 0, 2));
    assert_eq!(
        report,
        UpgradeReport {
            upgraded: 3,
            reclaimed,
            skipped: 1
        }
    );
    assert_eq!(store.usage().used, used - reclaimed);
    assert_eq!(
        (after.format, after.hash, after.stored_at, after.length),
        (2, before.hash, before.stored_at, before.length)
    );
    assert_eq!(store.stat("rotten").unwrap().format, 1);
    assert_eq!(store.upgrade_shards().upgraded, 0, "nothing left to do");
    assert!(
        !dir_entries(dir.path())
            .iter()
            .any(|n| n.starts_with(TEMP_PREFIX))
    );

    // The files are what a format-2 writer makes, and read, audit and reopen as such.
    let mut encoder = tree::Encoder::new(a.len() as u64);
    encoder.update(&a);
    encoder.finalize().unwrap();
    let file = fs::read(dir.path().join("shards/a.shard")).unwrap();
    let header_len = Header::len_for("a") as usize;
    assert_eq!(&file[header_len..header_len + a.len()], &a[..]);
    assert_eq!(&file[header_len + a.len()..], &encoder.take_outboard()[..]);
    assert_eq!(read_all(&store, "b", 0, 0).unwrap(), b);
    assert_eq!(
        read_all(&store, "a", 1_000, 2_000).unwrap(),
        &a[1_000..3_000]
    );
    assert!(!store.audit("b", 19_000_000, 4096, true).unwrap().bao);
    drop(store);
    let store = Store::open(dir.path(), GIB, 0).unwrap();
    assert_eq!(store.stat("a").unwrap(), after);
    assert_eq!(store.stat("empty").unwrap().format, 2);
}

#[test]
fn callers_from_before_format_2_get_bao_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    let d = data(300_000);
    let meta = put(&store, "s", &d).unwrap();
    let answer = store.audit("s", 70_000, 5_000, false).unwrap();
    assert!(answer.bao);
    let proven = crate::client::verify_audit(
        &answer.proof,
        crate::proto::ProofFormat::Bao,
        70_000,
        5_000,
        &meta.hash,
    )
    .unwrap();
    assert_eq!(proven, &d[70_000..75_000]);
    // A rotten shard is refused this way too.
    let path = dir.path().join("shards/s.shard");
    let mut bytes = fs::read(&path).unwrap();
    bytes[Header::len_for("s") as usize + 10] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        store.audit("s", 70_000, 5_000, false),
        Err(Error::DataLoss { .. })
    ));
}

#[test]
fn format_1_shards_are_still_read_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(300_000);
    let mut file = write_format_1(dir.path(), "old", &d);
    let hash = blake3::hash(&d);
    let path = dir.path().join("shards/old.shard");

    let store = Store::open(dir.path(), GIB, 0).unwrap();
    assert_eq!(store.stat("old").unwrap().file_size, file.len() as u64);
    assert_eq!(read_all(&store, "old", 0, 0).unwrap(), d);
    assert_eq!(read_all(&store, "old", 0, d.len() as u64).unwrap(), d);
    assert_eq!(
        read_all(&store, "old", 70_000, 5_000).unwrap(),
        &d[70_000..75_000]
    );
    let answer = store.audit("old", 1_000, 4_000, true).unwrap();
    assert!(answer.bao);
    let proven = crate::client::verify_audit(
        &answer.proof,
        crate::proto::ProofFormat::Bao,
        1_000,
        4_000,
        hash.as_bytes(),
    )
    .unwrap();
    assert_eq!(proven, &d[1_000..5_000]);

    file[Header::len_for("old") as usize + 72_000] ^= 1;
    fs::write(&path, &file).unwrap();
    assert!(matches!(
        read_all(&store, "old", 70_000, 5_000),
        Err(Error::DataLoss { .. })
    ));
    assert!(matches!(
        store.audit("old", 71_000, 2_000, true),
        Err(Error::DataLoss { .. })
    ));
}

#[test]
fn put_read_range_and_index_rebuilt_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    let d = data(1_000_000);
    let meta = put(&store, "s1", &d).unwrap();
    assert_eq!(meta.hash, *blake3::hash(&d).as_bytes());
    assert_eq!(read_all(&store, "s1", 0, 0).unwrap(), d);
    assert_eq!(
        read_all(&store, "s1", 12_345, 70_000).unwrap(),
        &d[12_345..82_345]
    );
    assert_eq!(read_all(&store, "s1", 999_990, 100).unwrap(), &d[999_990..]);
    put(&store, "empty", &[]).unwrap();
    assert_eq!(read_all(&store, "empty", 0, 0).unwrap(), Vec::<u8>::new());
    let used = store.usage().used;
    drop(store);

    let store = Store::open(dir.path(), GIB, 0).unwrap();
    assert_eq!(store.stat("s1").unwrap(), meta);
    assert_eq!(store.usage().used, used);
    assert_eq!(store.usage().shards, 2);
    assert_eq!(read_all(&store, "s1", 5, 10).unwrap(), &d[5..15]);
    assert!(matches!(store.stat("nope"), Err(Error::NotFound(_))));
}

#[test]
fn the_stored_outboard_is_the_tree_s() {
    // Larger than a whole read and than the writer's outboard buffer, and more
    // outboard blocks than the read cache holds.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    let d = data(40_000_000);
    let meta = put(&store, "big", &d).unwrap();
    let mut encoder = tree::Encoder::new(d.len() as u64);
    encoder.update(&d);
    assert_eq!(encoder.finalize(), Some(*blake3::hash(&d).as_bytes()));
    let outboard = encoder.take_outboard();
    assert_eq!(meta.hash, *blake3::hash(&d).as_bytes());
    assert_eq!(meta.file_size, file_size_for("big", d.len() as u64, 2));
    let file = fs::read(dir.path().join("shards/big.shard")).unwrap();
    let header_len = Header::len_for("big") as usize;
    assert_eq!(&file[header_len..header_len + d.len()], &d[..]);
    assert_eq!(&file[header_len + d.len()..], &outboard[..]);
    // Past WHOLE_READ_MAX a whole read streams through the tree too.
    assert_eq!(read_all(&store, "big", 0, 0).unwrap(), d);
    assert_eq!(
        read_all(&store, "big", 33_333_333, 1_000_000).unwrap(),
        &d[33_333_333..34_333_333]
    );
}

#[test]
fn cut_stream_stores_nothing_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    let mut w = store.begin_put("cut", 1000, None).unwrap();
    w.write(&[1u8; 500]).unwrap();
    assert_eq!(
        dir_entries(dir.path()).len(),
        1,
        "temp file exists while writing"
    );
    drop(w);
    assert!(dir_entries(dir.path()).is_empty());
    assert!(matches!(store.stat("cut"), Err(Error::NotFound(_))));
    assert_eq!(store.usage().free, GIB);

    // Short and long streams and a wrong expected hash are refused too.
    let mut w = store.begin_put("short", 1000, None).unwrap();
    w.write(&[1u8; 500]).unwrap();
    assert!(matches!(w.commit(), Err(Error::InvalidArgument(_))));
    let mut w = store.begin_put("long", 10, None).unwrap();
    assert!(w.write(&[1u8; 11]).is_err());
    drop(w);
    let mut w = store.begin_put("hash", 3, Some([0; 32])).unwrap();
    w.write(b"abc").unwrap();
    assert!(w.commit().is_err());
    assert!(dir_entries(dir.path()).is_empty());
    assert_eq!(store.usage().shards, 0);
}

#[test]
fn stale_temp_files_are_removed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    put(&store, "kept", b"hello").unwrap();
    let w = store.begin_put("crashed", 10, None).unwrap();
    // A kill -9 mid-write: the writer never runs its cleanup.
    std::mem::forget(w);
    assert_eq!(dir_entries(dir.path()).len(), 2);
    drop(store);
    let store = Store::open(dir.path(), GIB, 0).unwrap();
    assert_eq!(dir_entries(dir.path()), vec!["kept.shard".to_string()]);
    assert!(store.stat("crashed").is_err());
    assert_eq!(store.stat("kept").unwrap().length, 5);
}

#[test]
fn a_flipped_byte_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    let d = data(200_000);
    let meta = put(&store, "victim", &d).unwrap();
    let path = dir.path().join("shards/victim.shard");
    let mut bytes = fs::read(&path).unwrap();
    let header_len = Header::len_for("victim") as usize;
    bytes[header_len + 150_000] ^= 1;
    fs::write(&path, &bytes).unwrap();

    assert!(matches!(
        read_all(&store, "victim", 0, 0),
        Err(Error::DataLoss { .. })
    ));
    assert!(matches!(
        read_all(&store, "victim", 149_000, 2_000),
        Err(Error::DataLoss { .. })
    ));
    // Ranges far from the damage still verify.
    assert_eq!(read_all(&store, "victim", 0, 1000).unwrap(), &d[..1000]);
    // A rotted outboard: a whole read (one pass over the bytes) still serves the intact
    // bytes; the same shard asked for by its length checks the outboard and refuses.
    let rot = put(&store, "rot", &d).unwrap();
    let path = dir.path().join("shards/rot.shard");
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(read_all(&store, "rot", 0, 0).unwrap(), d);
    assert!(matches!(
        read_all(&store, "rot", 0, rot.length),
        Err(Error::DataLoss { .. })
    ));
    // A shard cut short is lost too, read whole or in part.
    let short = put(&store, "short", &d).unwrap();
    let path = dir.path().join("shards/short.shard");
    let cut = Header::len_for("short") as usize + 100_000;
    fs::write(&path, &fs::read(&path).unwrap()[..cut]).unwrap();
    assert_eq!(short.length, 200_000);
    for (offset, len) in [(0, 0), (150_000, 1_000)] {
        assert!(
            matches!(
                read_all(&store, "short", offset, len),
                Err(Error::DataLoss { .. })
            ),
            "{offset}+{len}"
        );
    }

    // An audit of the damaged range is answered DATA_LOSS by the provider itself, so its
    // own count of failed audits agrees with the caller's.
    assert!(matches!(
        store.audit("victim", 149_500, 1000, true),
        Err(Error::DataLoss { .. })
    ));
    let answer = store.audit("victim", 0, 1000, true).unwrap();
    assert!(!answer.bao);
    let (out, length) = tree::verify(&answer.proof, meta.hash, 0, 1000).unwrap();
    assert_eq!((&out[..], length), (&d[..1000], 200_000));
}

#[test]
fn an_unchecked_read_sends_a_whole_shard_as_stored_and_nothing_else_skips_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    let d = data(200_000);
    let meta = put(&store, "rotten", &d).unwrap();
    let intact = put(&store, "intact", &d).unwrap();
    let whole = |id: &str| {
        let mut r = store.read_unchecked(id)?;
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.extend(r.next_chunk(65536)?);
        }
        Ok::<_, Error>(out)
    };
    assert_eq!(whole("intact").unwrap(), d);
    assert_eq!(intact.hash, meta.hash);

    let path = dir.path().join("shards/rotten.shard");
    let mut bytes = fs::read(&path).unwrap();
    let header_len = Header::len_for("rotten") as usize;
    bytes[header_len + 150_000] ^= 1;
    fs::write(&path, &bytes).unwrap();
    // The bytes as stored, rot included: the caller's own check is what finds it.
    let mut rotten = d.clone();
    rotten[150_000] ^= 1;
    assert_eq!(whole("rotten").unwrap(), rotten);
    // Every other read of it still checks.
    assert!(matches!(
        read_all(&store, "rotten", 0, 0),
        Err(Error::DataLoss { .. })
    ));
    assert!(matches!(
        read_all(&store, "rotten", 149_000, 2_000),
        Err(Error::DataLoss { .. })
    ));
    assert!(matches!(
        store.audit("rotten", 149_500, 1000, true),
        Err(Error::DataLoss { .. })
    ));
    // A file cut short, a header that disagrees with the index, a shard not held: errors,
    // never short or foreign bytes.
    let path = dir.path().join("shards/intact.shard");
    let cut = Header::len_for("intact") as usize + 100_000;
    fs::write(&path, &fs::read(&path).unwrap()[..cut]).unwrap();
    assert!(matches!(whole("intact"), Err(Error::DataLoss { .. })));
    fs::copy(dir.path().join("shards/rotten.shard"), &path).unwrap();
    assert!(matches!(whole("intact"), Err(Error::DataLoss { .. })));
    assert!(matches!(whole("absent"), Err(Error::NotFound(_))));
}

#[test]
fn tenant_namespaces_are_counted_and_held_to_their_quota() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    assert_eq!(namespace_of("t-abc.s1"), Some("t-abc."));
    assert_eq!(namespace_of("t-abc"), None);
    assert_eq!(namespace_of("plain.1.2"), None);

    put(&store, "own.1", &data(10_000)).unwrap();
    put(&store, "t-aa.x", &data(1_000)).unwrap();
    put(&store, "t-aa.y", &data(2_000)).unwrap();
    put(&store, "t-bb.x", &data(4_000)).unwrap();
    let aa = store.tenant_usage("t-aa.");
    assert_eq!((aa.bytes, aa.shards, aa.reserved), (3_000, 2, 0));
    assert!(aa.file_bytes > 3_000);
    assert_eq!(store.tenant_usage("t-bb.").bytes, 4_000);

    // The quota counts bytes on disk, and writes in progress.
    let quota = aa.file_bytes + file_size_for("t-aa.z", 500, FORMAT_VERSION);
    let w = store
        .begin_put_within("t-aa.z", 500, None, Some(quota))
        .unwrap();
    let Err(err) = store.begin_put_within("t-aa.w", 1, None, Some(quota)) else {
        panic!("a write past the quota was taken");
    };
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
    assert!(err.to_string().contains("contract"), "{err}");
    drop(w);
    assert_eq!(store.tenant_usage("t-aa.").reserved, 0);

    // Overwrites and deletes keep the counts right, and a restart rebuilds them.
    put(&store, "t-aa.x", &data(1_500)).unwrap();
    assert!(store.delete("t-aa.y").unwrap());
    assert_eq!(store.tenant_usage("t-aa.").bytes, 1_500);
    drop(store);
    let store = Store::open(dir.path(), GIB, 0).unwrap();
    assert_eq!(store.tenant_usage("t-aa.").bytes, 1_500);
    assert_eq!(store.tenant_usage("t-aa.").shards, 1);
    assert_eq!(store.tenant_usage("t-bb.").bytes, 4_000);
}

#[test]
fn capacity_and_reserve_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 300_000, 100_000).unwrap());
    put(&store, "a", &data(100_000)).unwrap();
    let err = store.begin_put("b", 100_000, None).err().unwrap();
    assert!(matches!(err, Error::CapacityExhausted { .. }), "{err}");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(store.delete("a").unwrap());
    assert!(!store.delete("a").unwrap());
    put(&store, "b", &data(100_000)).unwrap();
}

#[test]
fn listing_pages_in_id_order_with_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    for id in ["a1", "a2", "a3", "b1", "c"] {
        put(&store, id, id.as_bytes()).unwrap();
    }
    let ids = |v: Vec<(String, ShardMeta)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    let (page, next) = store.list("a", "", 2);
    assert_eq!(ids(page), ["a1", "a2"]);
    assert_eq!(next.as_deref(), Some("a2"));
    let (page, next) = store.list("a", "a2", 2);
    assert_eq!(ids(page), ["a3"]);
    assert_eq!(next, None);
    let (page, _) = store.list("", "a3", 10);
    assert_eq!(ids(page), ["b1", "c"]);
}

#[test]
fn a_length_from_the_wire_beyond_the_maximum_is_refused_and_never_wraps_a_quota() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    put(&store, "t-aa.x", &data(1_000)).unwrap();
    let before = store.usage();
    let quota = 1 << 20;
    // Lengths whose file size (header + bytes + outboard) wraps a u64, and one just past
    // the maximum: each refused by name, before anything is reserved.
    for length in [u64::MAX, u64::MAX - 100, u64::MAX / 2, MAX_SHARD_LEN + 1] {
        for quota in [None, Some(quota)] {
            let Err(err) = store.begin_put_within("t-aa.huge", length, None, quota) else {
                panic!("a shard of {length} bytes was taken (quota {quota:?})");
            };
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
            assert!(
                err.to_string().contains(&format!(
                    "shard t-aa.huge announces {length} bytes; a shard is at most {MAX_SHARD_LEN} bytes"
                )),
                "{err}"
            );
        }
    }
    let after = store.usage();
    assert_eq!((after.used, after.free), (before.used, before.free));
    assert_eq!(store.tenant_usage("t-aa.").reserved, 0);
    // The largest shard allowed is still measured against the quota, not waved through.
    let Err(err) = store.begin_put_within("t-aa.big", MAX_SHARD_LEN, None, Some(quota)) else {
        panic!("a shard past the quota was taken");
    };
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
}

#[test]
fn a_shard_file_whose_header_announces_a_huge_length_is_skipped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), GIB, 0).unwrap());
    put(&store, "good", &data(1_000)).unwrap();
    put(&store, "forged", &data(1_000)).unwrap();
    drop(store);
    // A header claiming u64::MAX bytes, with a valid checksum: the file size check would
    // wrap without the bound.
    let header = format::Header {
        version: FORMAT_VERSION,
        id: "forged".into(),
        length: u64::MAX,
        stored_at: 0,
        hash: [0; 32],
    }
    .encode();
    let path = dir.path().join("shards").join("forged.shard");
    let mut bytes = fs::read(&path).unwrap();
    bytes[..header.len()].copy_from_slice(&header);
    fs::write(&path, bytes).unwrap();
    let store = Store::open(dir.path(), GIB, 0).unwrap();
    assert!(store.stat("good").is_ok());
    assert!(matches!(store.stat("forged"), Err(Error::NotFound(_))));
}

#[test]
fn batch_mode_stores_concurrent_writes_durably_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_with(dir.path(), GIB, 0, SyncMode::Batch).unwrap());
    assert_eq!(store.sync_mode(), SyncMode::Batch);
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || put(&store, &format!("batch-{i}"), &data(300_000 + i)))
        })
        .collect();
    for w in writers {
        w.join().unwrap().unwrap();
    }
    let flushes = store.data_sync.as_ref().unwrap().syncs();
    assert!((1..=8).contains(&flushes), "{flushes} syncfs for 8 writes");
    drop(store);
    // What was acknowledged is there after a restart, and no temp file is left.
    let store = Store::open_with(dir.path(), GIB, 0, SyncMode::Batch).unwrap();
    for i in 0..8 {
        let id = format!("batch-{i}");
        assert_eq!(
            read_all(&store, &id, 0, 300_000 + i as u64).unwrap(),
            data(300_000 + i)
        );
    }
    assert!(
        dir_entries(dir.path())
            .iter()
            .all(|e| !e.starts_with(".tmp-"))
    );
    assert_eq!(
        Store::open(dir.path(), GIB, 0).unwrap().sync_mode(),
        SyncMode::File
    );
}

#[test]
fn a_failed_syncfs_fails_the_write_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), GIB, 0, SyncMode::Batch).unwrap();
    store.data_sync = Some(dirsync::GroupSync::scripted(|| {
        Err(io::Error::other("EIO from the disk"))
    }));
    let store = Arc::new(store);
    let free = store.usage().free;
    let err = put(&store, "lost", &data(100_000)).unwrap_err();
    assert!(format!("{err}").contains("EIO"), "{err}");
    assert!(matches!(store.stat("lost"), Err(Error::NotFound(_))));
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
    assert_eq!(store.usage().free, free, "the reservation is given back");
}
