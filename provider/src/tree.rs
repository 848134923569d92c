//! A BLAKE3 tree over 16 KiB chunk groups: the outboard of format-2 shards, and the proof
//! an audit answers.
//!
//! BLAKE3 hashes 1 KiB chunks into a binary tree whose left subtrees are full powers of
//! two. Cut that tree at 16-chunk subtrees and the same root hash is reached from the
//! chaining values of 16 KiB groups, each hashed in one SIMD pass
//! ([`blake3::hazmat`]). So a shard's identity stays `blake3(bytes)`, while its outboard
//! keeps one 64-byte parent node per group instead of per chunk (0.4% of the shard,
//! not 6.25%) and costs a tenth of the hashing. This is what the `bao-tree` crate does; the
//! format here is sublet's own:
//!
//! - **Outboard**: the parent nodes (left chaining value, then right) in post-order, so a
//!   writer appends them as subtrees complete. A shard of one group has none.
//! - **Proof** of a byte range: the shard length (8 bytes, little-endian), then, in the
//!   order a depth-first walk from the root meets them, the parent node of every subtree
//!   that holds part of the range and the whole bytes of every group that does.
//!
//! [`Walk`] is that walk, over a file (a verified read) or over a proof (its check), so
//! reading, proving and checking cannot disagree on the order.

use std::io;

use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

/// Bytes per group (16 BLAKE3 chunks).
pub const GROUP_LEN: u64 = 16 * 1024;
/// Bytes per parent node: two chaining values.
pub const NODE_LEN: u64 = 64;

type Cv = [u8; 32];

/// Groups in a shard of `length` bytes (an empty shard is one empty group).
pub fn groups(length: u64) -> u64 {
    length.div_ceil(GROUP_LEN).max(1)
}

/// Bytes of the outboard of a shard of `length` bytes.
pub fn outboard_len(length: u64) -> u64 {
    (groups(length) - 1) * NODE_LEN
}

/// The chaining value of group `index` (not the root: a shard of one group has no tree).
fn group_cv(index: u64, bytes: &[u8]) -> Cv {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * GROUP_LEN);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// The chaining value of a parent node (the root hash for the root).
fn parent_cv(left: &Cv, right: &Cv, root: bool) -> Cv {
    if root {
        *merge_subtrees_root(left, right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(left, right, Mode::Hash)
    }
}

/// A parent node's two children: the left chaining value, then the right.
fn children(node: &[u8; 64]) -> (Cv, Cv) {
    let (mut left, mut right) = ([0u8; 32], [0u8; 32]);
    left.copy_from_slice(&node[..32]);
    right.copy_from_slice(&node[32..]);
    (left, right)
}

/// The left subtree of `n > 1` groups: the largest power of two below `n`, as in BLAKE3.
fn left_groups(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Hashes a shard's bytes as they arrive and yields its outboard.
pub struct Encoder {
    length: u64,
    groups: u64,
    /// Bytes taken so far.
    taken: u64,
    /// The group being hashed.
    group: u64,
    hasher: blake3::Hasher,
    /// Chaining values of the completed subtrees not yet merged, left to right.
    stack: Vec<Cv>,
    /// Parent nodes not yet taken by [`Encoder::take_outboard`].
    nodes: Vec<u8>,
}

impl Encoder {
    /// For a shard of exactly `length` bytes.
    pub fn new(length: u64) -> Self {
        Encoder {
            length,
            groups: groups(length),
            taken: 0,
            group: 0,
            hasher: blake3::Hasher::new(),
            stack: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Hash more of the shard; the caller keeps the total at most the announced length.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let in_group = self.taken - self.group * GROUP_LEN;
            let take = (GROUP_LEN - in_group).min(data.len() as u64) as usize;
            self.hasher.update(&data[..take]);
            self.taken += take as u64;
            data = &data[take..];
            if self.taken == (self.group + 1) * GROUP_LEN && self.group + 1 < self.groups {
                let cv = self.hasher.finalize_non_root();
                self.push(cv);
                self.group += 1;
                self.hasher = blake3::Hasher::new();
                self.hasher.set_input_offset(self.group * GROUP_LEN);
            }
        }
    }

    /// Push the chaining value of group `self.group`, first merging the subtrees that
    /// group completes (BLAKE3's lazy merge: the stack keeps one entry per set bit of the
    /// number of groups before it). Merges append their parent node.
    fn push(&mut self, cv: Cv) {
        while self.stack.len() > self.group.count_ones() as usize {
            self.merge(false);
        }
        self.stack.push(cv);
    }

    fn merge(&mut self, root: bool) -> Cv {
        let right = self.stack.pop().unwrap_or_default();
        let left = self.stack.pop().unwrap_or_default();
        self.nodes.extend_from_slice(&left);
        self.nodes.extend_from_slice(&right);
        let cv = parent_cv(&left, &right, root);
        if !root {
            self.stack.push(cv);
        }
        cv
    }

    /// Bytes of parent nodes waiting for [`Encoder::take_outboard`].
    pub fn pending_outboard(&self) -> usize {
        self.nodes.len()
    }

    /// Parent nodes completed since the last call, in outboard order.
    pub fn take_outboard(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.nodes)
    }

    /// The root hash (the BLAKE3 hash of the bytes) once all of them were given; the last
    /// parent nodes are left for [`Encoder::take_outboard`]. `None` if bytes are missing.
    pub fn finalize(&mut self) -> Option<Cv> {
        if self.taken != self.length {
            return None;
        }
        if self.groups == 1 {
            return Some(*self.hasher.finalize().as_bytes());
        }
        let cv = self.hasher.finalize_non_root();
        self.push(cv);
        while self.stack.len() > 2 {
            self.merge(false);
        }
        Some(self.merge(true))
    }
}

/// Where a [`Walk`] gets parent nodes and group bytes from.
pub trait Source {
    /// Parent node number `index` of the outboard (post-order).
    fn node(&mut self, index: u64) -> io::Result<[u8; 64]>;
    /// The bytes of group `index`, exactly `buf.len()` of them.
    fn group(&mut self, index: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// A subtree still to visit: groups `[start, end)`, its first parent node's index in the
/// outboard, and the chaining value its parent (or the shard's hash) promised.
struct Pending {
    start: u64,
    end: u64,
    first_node: u64,
    cv: Cv,
}

/// A depth-first walk from the root to the groups holding a byte range, checking every
/// parent node and every group against the chaining value above it.
pub struct Walk {
    length: u64,
    groups: u64,
    /// The range, cut at the end of the shard.
    offset: u64,
    end: u64,
    /// Groups `[first, last)` hold the range.
    first: u64,
    last: u64,
    stack: Vec<Pending>,
}

impl Walk {
    /// Over `[offset, offset + len)` of a shard of `length` bytes whose BLAKE3 hash is
    /// `root`; the range is cut at the end of the shard.
    pub fn new(length: u64, root: Cv, offset: u64, len: u64) -> Self {
        let end = offset.saturating_add(len).min(length);
        let groups = groups(length);
        let (first, last) = if offset >= end {
            (0, 0)
        } else {
            (offset / GROUP_LEN, end.div_ceil(GROUP_LEN))
        };
        let stack = if first < last {
            vec![Pending {
                start: 0,
                end: groups,
                first_node: 0,
                cv: root,
            }]
        } else {
            Vec::new()
        };
        Walk {
            length,
            groups,
            offset,
            end,
            first,
            last,
            stack,
        }
    }

    /// Bytes group `index` holds.
    pub fn group_len(&self, index: u64) -> usize {
        let start = index * GROUP_LEN;
        (GROUP_LEN.min(self.length - start)) as usize
    }

    /// Bytes in the range (cut at the end of the shard).
    pub fn range_len(&self) -> u64 {
        self.end.saturating_sub(self.offset)
    }

    /// Bytes of the range in group `index`, as positions in the group.
    pub fn in_range(&self, index: u64) -> std::ops::Range<usize> {
        let start = index * GROUP_LEN;
        let from = self.offset.saturating_sub(start).min(GROUP_LEN);
        let to = self.end.saturating_sub(start).min(GROUP_LEN).max(from);
        from as usize..to as usize
    }

    /// The next group holding part of the range, its bytes read into `buf` and checked:
    /// `Some(index)`, or `None` once the range is done. A node or group that does not
    /// match is an `InvalidData` error.
    pub fn next_group(
        &mut self,
        source: &mut impl Source,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<u64>> {
        while let Some(p) = self.stack.pop() {
            let root = p.start == 0 && p.end == self.groups;
            if p.end - p.start == 1 {
                buf.resize(self.group_len(p.start), 0);
                source.group(p.start, buf)?;
                let cv = if root {
                    *blake3::hash(buf).as_bytes()
                } else {
                    group_cv(p.start, buf)
                };
                if cv != p.cv {
                    return Err(mismatch(format!(
                        "bytes {}..{} do not match the shard's hash",
                        p.start * GROUP_LEN,
                        p.start * GROUP_LEN + buf.len() as u64
                    )));
                }
                return Ok(Some(p.start));
            }
            let groups = p.end - p.start;
            let index = p.first_node + groups - 2;
            let (left, right) = children(&source.node(index)?);
            if parent_cv(&left, &right, root) != p.cv {
                return Err(mismatch(format!(
                    "tree node {index} does not match the shard's hash"
                )));
            }
            let mid = p.start + left_groups(groups);
            // Right first: the stack pops the left subtree next.
            if mid < self.last {
                self.stack.push(Pending {
                    start: mid,
                    end: p.end,
                    first_node: p.first_node + (mid - p.start - 1),
                    cv: right,
                });
            }
            if self.first < mid {
                self.stack.push(Pending {
                    start: p.start,
                    end: mid,
                    first_node: p.first_node,
                    cv: left,
                });
            }
        }
        Ok(None)
    }
}

fn mismatch(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// A proof being read: the nodes and groups in the order the walk asks for them.
struct ProofReader<'a> {
    rest: &'a [u8],
}

impl ProofReader<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.rest.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proof ends early",
            ));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
}

impl Source for ProofReader<'_> {
    fn node(&mut self, _index: u64) -> io::Result<[u8; 64]> {
        let mut node = [0u8; 64];
        node.copy_from_slice(self.take(64)?);
        Ok(node)
    }

    fn group(&mut self, _index: u64, buf: &mut [u8]) -> io::Result<()> {
        let bytes = self.take(buf.len())?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// Records what a walk reads from `inner`, in order: the proof.
pub struct Recorder<S> {
    pub inner: S,
    pub proof: Vec<u8>,
}

impl<S: Source> Source for Recorder<S> {
    fn node(&mut self, index: u64) -> io::Result<[u8; 64]> {
        let node = self.inner.node(index)?;
        self.proof.extend_from_slice(&node);
        Ok(node)
    }

    fn group(&mut self, index: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.group(index, buf)?;
        self.proof.extend_from_slice(buf);
        Ok(())
    }
}

/// Prove `[offset, offset + len)` of a shard of `length` bytes whose hash is `root`,
/// reading it from `source` and checking it on the way (a store must not send what it
/// cannot vouch for).
pub fn prove(
    source: impl Source,
    length: u64,
    root: Cv,
    offset: u64,
    len: u64,
) -> io::Result<Vec<u8>> {
    let mut recorder = Recorder {
        inner: source,
        proof: length.to_le_bytes().to_vec(),
    };
    let mut walk = Walk::new(length, root, offset, len);
    let mut buf = Vec::new();
    while walk.next_group(&mut recorder, &mut buf)?.is_some() {}
    Ok(recorder.proof)
}

/// Check a proof of `[offset, offset + len)` against a shard's hash; answers the proven
/// bytes of the range (cut at the end of the shard) and the shard length the proof gives.
/// That length is bound by the tree shape it implies; only a proof that reaches the last
/// group pins it to the byte (as with bao). The bytes proven are the shard's either way.
pub fn verify(proof: &[u8], root: Cv, offset: u64, len: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut reader = ProofReader { rest: proof };
    let mut length = [0u8; 8];
    length.copy_from_slice(reader.take(8)?);
    let length = u64::from_le_bytes(length);
    let mut walk = Walk::new(length, root, offset, len);
    let mut out = Vec::with_capacity(walk.range_len() as usize);
    let mut buf = Vec::new();
    while let Some(index) = walk.next_group(&mut reader, &mut buf)? {
        out.extend_from_slice(&buf[walk.in_range(index)]);
    }
    if !reader.rest.is_empty() {
        return Err(mismatch(format!(
            "{} bytes follow the proof",
            reader.rest.len()
        )));
    }
    if (out.len() as u64) != walk.range_len() {
        return Err(mismatch("the proof does not cover the range".into()));
    }
    Ok((out, length))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    /// Shard bytes and outboard in memory.
    struct Mem<'a> {
        bytes: &'a [u8],
        outboard: &'a [u8],
    }

    impl Source for Mem<'_> {
        fn node(&mut self, index: u64) -> io::Result<[u8; 64]> {
            let at = (index * NODE_LEN) as usize;
            let mut node = [0u8; 64];
            node.copy_from_slice(self.outboard.get(at..at + 64).ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "outboard ends early")
            })?);
            Ok(node)
        }

        fn group(&mut self, index: u64, buf: &mut [u8]) -> io::Result<()> {
            let at = (index * GROUP_LEN) as usize;
            buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
            Ok(())
        }
    }

    /// Encode `d` in pieces of `piece` bytes: its outboard and root.
    fn encode(d: &[u8], piece: usize) -> (Vec<u8>, Cv) {
        let mut e = Encoder::new(d.len() as u64);
        let mut outboard = Vec::new();
        for p in d.chunks(piece.max(1)) {
            e.update(p);
            outboard.extend(e.take_outboard());
        }
        let root = e.finalize().unwrap();
        outboard.extend(e.take_outboard());
        (outboard, root)
    }

    fn read(d: &[u8], outboard: &[u8], root: Cv, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut walk = Walk::new(d.len() as u64, root, offset, len);
        let mut source = Mem { bytes: d, outboard };
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(g) = walk.next_group(&mut source, &mut buf)? {
            out.extend_from_slice(&buf[walk.in_range(g)]);
        }
        Ok(out)
    }

    const G: usize = GROUP_LEN as usize;

    fn lengths() -> Vec<usize> {
        vec![
            0,
            1,
            1024,
            G - 1,
            G,
            G + 1,
            2 * G,
            3 * G - 7,
            3 * G,
            4 * G + 1,
            5 * G,
            7 * G + 100,
            8 * G,
            17 * G + 3,
            (1 << 20) + 9,
        ]
    }

    #[test]
    fn the_root_is_the_blake3_hash_and_the_outboard_has_its_size() {
        for n in lengths() {
            let d = data(n);
            for piece in [1000, G, 3 * G + 5, n] {
                let (outboard, root) = encode(&d, piece);
                assert_eq!(root, *blake3::hash(&d).as_bytes(), "length {n}");
                assert_eq!(outboard.len() as u64, outboard_len(n as u64), "length {n}");
            }
        }
        let mut e = Encoder::new(10);
        e.update(b"short");
        assert_eq!(e.finalize(), None, "five of ten bytes");
    }

    #[test]
    fn every_range_reads_back_through_the_outboard() {
        for n in lengths() {
            let d = data(n);
            let (outboard, root) = encode(&d, 4096);
            let n = n as u64;
            let g = GROUP_LEN;
            let mut ranges = vec![(0, n), (0, u64::MAX), (n, 10), (n / 2, 1), (n / 3, n / 3)];
            for start in [0, 1, g - 1, g, g + 1, 2 * g, 3 * g - 1, n.saturating_sub(1)] {
                for len in [1, 2, g - 1, g, g + 1, 2 * g + 3, 5 * g] {
                    ranges.push((start, len));
                }
            }
            for (offset, len) in ranges {
                let got = read(&d, &outboard, root, offset, len).unwrap();
                let end = offset.saturating_add(len).min(n) as usize;
                let want = &d[(offset as usize).min(end)..end];
                assert_eq!(got, want, "length {n} range {offset}+{len}");
                let proof = prove(
                    Mem {
                        bytes: &d,
                        outboard: &outboard,
                    },
                    n,
                    root,
                    offset,
                    len,
                )
                .unwrap();
                let (proven, length) = verify(&proof, root, offset, len).unwrap();
                assert_eq!((proven.as_slice(), length), (want, n));
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_caught() {
        let d = data(9 * G + 500);
        let (outboard, root) = encode(&d, G);
        let n = d.len() as u64;
        for at in (0..d.len()).step_by(G / 2) {
            let mut bad = d.clone();
            bad[at] ^= 1;
            let e = read(&bad, &outboard, root, 0, n).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "byte {at}");
            // A range elsewhere does not read the flipped group.
            let group = (at / G) as u64;
            let other = if group == 0 { 8 } else { 0 };
            read(&bad, &outboard, root, other * GROUP_LEN, 10).unwrap();
        }
        for at in 0..outboard.len() {
            let mut bad = outboard.clone();
            bad[at] ^= 0x80;
            let e = read(&d, &bad, root, 0, n).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "outboard byte {at}");
        }
        let e = read(&d, &outboard[..outboard.len() - 1], root, 0, n).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let other = *blake3::hash(b"another shard").as_bytes();
        assert!(read(&d, &outboard, other, 5, 5).is_err());
    }

    #[test]
    fn a_forged_proof_is_refused() {
        let d = data(6 * G + 10);
        let (outboard, root) = encode(&d, G);
        let n = d.len() as u64;
        let mem = || Mem {
            bytes: &d,
            outboard: &outboard,
        };
        let (offset, len) = (2 * GROUP_LEN + 100, GROUP_LEN);
        let proof = prove(mem(), n, root, offset, len).unwrap();
        // (The length is bound only through the tree shape it implies, as in bao: a proof
        // that does not reach the last group cannot tell 6G+10 from 6G+14 bytes. The
        // bytes it proves are the shard's either way.)
        for at in 8..proof.len() {
            let mut bad = proof.clone();
            bad[at] ^= 4;
            assert!(verify(&bad, root, offset, len).is_err(), "byte {at}");
        }
        assert!(verify(&proof[..proof.len() - 1], root, offset, len).is_err());
        let mut long = proof.clone();
        long.push(0);
        assert!(verify(&long, root, offset, len).is_err());
        // A proof of another range does not answer this one.
        let elsewhere = prove(mem(), n, root, 0, len).unwrap();
        assert!(verify(&elsewhere, root, offset, len).is_err());
        // A length that cuts the range short is caught by the tree it implies.
        let mut short = proof.clone();
        short[..8].copy_from_slice(&(3 * GROUP_LEN).to_le_bytes());
        assert!(verify(&short, root, offset, len).is_err());
    }

    #[test]
    fn proofs_are_small() {
        // 4 MiB shard, one 4 KiB audit: one group and one node per level.
        let d = data(4 << 20);
        let (outboard, root) = encode(&d, 65536);
        assert_eq!(outboard.len(), 255 * 64);
        let proof = prove(
            Mem {
                bytes: &d,
                outboard: &outboard,
            },
            d.len() as u64,
            root,
            1 << 20,
            4096,
        )
        .unwrap();
        assert_eq!(proof.len(), 8 + 8 * 64 + G);
    }
}
