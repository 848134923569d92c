//! Audit proofs as a gateway checks them (`tree::verify`, `client::verify_audit`): what a
//! provider answers is untrusted. Two modes, by the first byte:
//! - even: the rest is a proof from a hostile provider, checked against a hash, range and
//!   format it also gives; no panic, and what passes is exactly the range asked for.
//! - odd: an honest shard (length and content from the input) is encoded with
//!   `tree::Encoder` (its root must be the shard's BLAKE3 hash), a range of it proven with
//!   `tree::prove`, and the proof must verify to exactly those bytes; then the input's
//!   byte flips are applied to the proof, and whatever still verifies must be the same
//!   bytes (a provider cannot pass off other bytes as the shard's).
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use sublet_provider::client::verify_audit;
use sublet_provider::proto::ProofFormat;
use sublet_provider::tree::{self, GROUP_LEN, NODE_LEN, Source};

/// Honest shards stay under this many bytes (8 groups and a bit: trees of several levels).
const MAX_SHARD: u64 = 8 * GROUP_LEN + 100;

struct Mem<'a> {
    bytes: &'a [u8],
    outboard: &'a [u8],
}

impl Source for Mem<'_> {
    fn node(&mut self, index: u64) -> io::Result<[u8; 64]> {
        let at = usize::try_from(index * NODE_LEN).map_err(io::Error::other)?;
        let node = self
            .outboard
            .get(at..at + 64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "outboard ends"))?;
        let mut out = [0u8; 64];
        out.copy_from_slice(node);
        Ok(out)
    }

    fn group(&mut self, index: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = usize::try_from(index * GROUP_LEN).map_err(io::Error::other)?;
        let bytes = self
            .bytes
            .get(at..at + buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "shard ends"))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

fn u64_at(input: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = input.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

fn hostile(input: &[u8]) {
    // format, hash (32), offset (8), len (8), then the proof.
    if input.len() < 49 {
        return;
    }
    let format = if input[0] & 2 == 0 {
        ProofFormat::Groups
    } else {
        ProofFormat::Bao
    };
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&input[1..33]);
    let offset = u64_at(input, 33);
    // A gateway audits at most MAX_AUDIT_LEN bytes at once.
    let len = u64_at(input, 41) % (sublet_provider::store::MAX_AUDIT_LEN + 1);
    let proof = &input[49..];
    if let Ok(bytes) = verify_audit(proof, format, offset, len, &hash) {
        assert!(
            bytes.len() as u64 <= len,
            "{} bytes proven for {len}",
            bytes.len()
        );
    }
    if let Ok((bytes, length)) = tree::verify(proof, hash, offset, len) {
        let expected = offset
            .saturating_add(len)
            .min(length)
            .saturating_sub(offset);
        assert_eq!(bytes.len() as u64, expected);
    }
}

fn honest(input: &[u8]) {
    // length (8), offset (8), len (8), piece size (2), fill (1), then flips: (at u32, xor u8).
    let length = u64_at(input, 1) % MAX_SHARD;
    let size = usize::try_from(length).unwrap_or(0);
    let fill = input.get(27).copied().unwrap_or(0);
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(fill) ^ (i >> 11) as u8)
        .collect();
    let offset = u64_at(input, 9) % (length + 2);
    let len = u64_at(input, 17) % (length + 2);
    let piece = usize::from(u16::from_le_bytes([
        input.get(25).copied().unwrap_or(0),
        input.get(26).copied().unwrap_or(0),
    ]))
    .max(1);

    let mut encoder = tree::Encoder::new(length);
    let mut outboard = Vec::new();
    for p in data.chunks(piece) {
        encoder.update(p);
        outboard.extend(encoder.take_outboard());
    }
    let root = encoder.finalize().expect("every byte was given");
    outboard.extend(encoder.take_outboard());
    assert_eq!(
        root,
        *blake3::hash(&data).as_bytes(),
        "the tree's root is not BLAKE3"
    );
    assert_eq!(outboard.len() as u64, tree::outboard_len(length));

    let source = Mem {
        bytes: &data,
        outboard: &outboard,
    };
    let proof = tree::prove(source, length, root, offset, len).expect("an honest shard proves");
    let end = offset.saturating_add(len).min(length);
    let want = if offset < end {
        &data[offset as usize..end as usize]
    } else {
        &[][..]
    };
    let (got, proven_length) = tree::verify(&proof, root, offset, len).expect("an honest proof");
    assert_eq!(got, want);
    assert_eq!(proven_length, length);

    let mut bad = proof.clone();
    for flip in input.get(28..).unwrap_or_default().chunks_exact(5) {
        if proof.is_empty() {
            break;
        }
        let at = u32::from_le_bytes([flip[0], flip[1], flip[2], flip[3]]) as usize % bad.len();
        bad[at] ^= flip[4];
    }
    if bad != proof
        && let Ok((got, _)) = tree::verify(&bad, root, offset, len)
    {
        assert_eq!(got, want, "a changed proof verified to other bytes");
    }
}

fuzz_target!(|input: &[u8]| {
    match input.first() {
        Some(mode) if mode & 1 == 1 => honest(input),
        Some(_) => hostile(input),
        None => {}
    }
});
