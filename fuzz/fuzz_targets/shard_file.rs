//! Shard files as a provider finds them on its disk (`Store::open` rebuilding its index
//! from their headers, then verified reads and audits): a disk may rot, and a format-1 file
//! from an older release must still be read. By the first byte:
//! - even: the rest is the file's bytes;
//! - odd: an honest shard (length and content from the input) is written through the
//!   store (`begin_put`, `commit`), then the input's byte flips are applied to its file.
//!
//! Bit 1 of the first byte rewrites the header's checksum (`store::reseal_header`) so a
//! changed header reaches the checks after it. Whatever the store then serves must be
//! vouched for: a whole read hashes to the hash the index holds, a ranged read is that
//! part of it, and an audit's proof verifies (`client::verify_audit`) to the same bytes.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sublet_provider::client::verify_audit;
use sublet_provider::proto::ProofFormat;
use sublet_provider::store::{MAX_AUDIT_LEN, Store, reseal_header};

const ID: &str = "fuzz-shard";
const CAPACITY: u64 = 1 << 30;

/// One data directory for the whole run, in memory when /dev/shm exists.
fn data_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("sublet-fuzz-")
                .tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a temp dir");
        dir.keep()
    })
}

fn u32_at(input: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = input.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// Reads the whole shard and checks it against the hash the index holds.
fn read_all(store: &Store) -> Option<Vec<u8>> {
    let meta = store.stat(ID).ok()?;
    let mut reader = store.read_range(ID, 0, 0).ok()?;
    let mut out = Vec::new();
    while reader.remaining() > 0 {
        let chunk = reader.next_chunk(sublet_provider::CHUNK_SIZE).ok()?;
        out.extend_from_slice(&chunk);
    }
    assert_eq!(
        out.len() as u64,
        meta.length,
        "a whole read of the wrong length"
    );
    assert_eq!(
        *blake3::hash(&out).as_bytes(),
        meta.hash,
        "a whole read served bytes that do not hash to the shard's hash"
    );
    Some(out)
}

fn read_range(store: &Store, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut reader = store.read_range(ID, offset, len).ok()?;
    let mut out = Vec::new();
    while reader.remaining() > 0 {
        let chunk = reader.next_chunk(64 * 1024).ok()?;
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

fn honest_file(shards: &std::path::Path, input: &[u8]) -> Option<Vec<u8>> {
    let length = u64::from(u32_at(input, 9) % (5 * 16 * 1024 + 7));
    let data: Vec<u8> = (0..length)
        .map(|i| (i as u8).wrapping_mul(13) ^ (i >> 9) as u8)
        .collect();
    let store = Arc::new(Store::open(shards.parent()?, CAPACITY, 0).ok()?);
    let mut writer = store.begin_put(ID, length, None).ok()?;
    writer.write(&data).ok()?;
    writer.commit().ok()?;
    let path = shards.join(format!("{ID}.shard"));
    let mut file = std::fs::read(&path).ok()?;
    for flip in input.get(13..).unwrap_or_default().chunks_exact(5) {
        if file.is_empty() {
            break;
        }
        let at = u32::from_le_bytes([flip[0], flip[1], flip[2], flip[3]]) as usize % file.len();
        file[at] ^= flip[4];
    }
    Some(file)
}

fuzz_target!(|input: &[u8]| {
    let Some(&mode) = input.first() else {
        return;
    };
    let dir = data_dir();
    let shards = dir.join("shards");
    let _ = std::fs::remove_dir_all(&shards);
    std::fs::create_dir_all(&shards).expect("the shard dir");
    let offset = u64::from(u32_at(input, 1) % 100_000);
    let len = u64::from(u32_at(input, 5) % 100_000);
    let mut file = if mode & 1 == 1 {
        match honest_file(&shards, input) {
            Some(f) => f,
            None => return,
        }
    } else {
        input.get(9..).unwrap_or_default().to_vec()
    };
    if mode & 2 == 2 {
        reseal_header(&mut file);
    }
    std::fs::write(shards.join(format!("{ID}.shard")), &file).expect("writing the shard file");

    let Ok(store) = Store::open(dir, CAPACITY, 0) else {
        return;
    };
    let Ok(meta) = store.stat(ID) else {
        return;
    };
    let whole = read_all(&store);
    if let Some(range) = read_range(&store, offset, len) {
        if let Some(whole) = &whole {
            let start = offset.min(meta.length) as usize;
            let end = if len == 0 {
                whole.len()
            } else {
                offset.saturating_add(len).min(meta.length) as usize
            };
            assert_eq!(
                range,
                whole[start..end],
                "a ranged read differs from the shard"
            );
        }
    }
    let audit_len = len.min(MAX_AUDIT_LEN);
    for takes_tree in [true, false] {
        let Ok(proof) = store.audit(ID, offset, audit_len, takes_tree) else {
            continue;
        };
        let format = if proof.bao {
            ProofFormat::Bao
        } else {
            ProofFormat::Groups
        };
        let proven = verify_audit(&proof.proof, format, offset, audit_len, &meta.hash)
            .expect("an audit the store answered verifies against the shard's hash");
        if let Some(whole) = &whole {
            let start = offset.min(meta.length) as usize;
            let end = offset.saturating_add(audit_len).min(meta.length) as usize;
            assert_eq!(proven[..], whole[start..end], "an audit proved other bytes");
        }
    }
});
