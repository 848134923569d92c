//! Audits: a proof that a provider still holds a range of a shard, checked before it is
//! sent; bao slices for shards of format 1 and for callers from before format 2.

use std::io::{self, Read, Seek};
use std::sync::Arc;

use super::format::{BAO_FORMAT, outboard_size};
use super::read::{ShardFile, data_loss_or_io};
use super::region::{AUDIT_BLOCK_SIZE, Region};
use super::{ShardMeta, Store};
use crate::tree;
use crate::{Error, Result};

/// Audits answer at most this many bytes.
pub const MAX_AUDIT_LEN: u64 = 1024 * 1024;

impl Store {
    /// A proof of `[offset, offset + len)` that the caller verifies against the hash it
    /// recorded, in the format of the shard's outboard ([`crate::tree`], or a bao slice
    /// for a format-1 shard); also the shard length. A caller that does not take tree
    /// proofs (`takes_tree` false: gateways from before format 2) gets a bao slice of a
    /// format-2 shard too, from a bao outboard built in memory for the occasion.
    pub fn audit(&self, id: &str, offset: u64, len: u64, takes_tree: bool) -> Result<AuditProof> {
        if len > MAX_AUDIT_LEN {
            return Err(Error::InvalidArgument(format!(
                "audit length {len} exceeds the maximum of {MAX_AUDIT_LEN} bytes"
            )));
        }
        let (meta, file, header_len, version) = self.open_checked(id)?;
        if version != BAO_FORMAT && !takes_tree {
            return self.audit_as_bao(id, &meta, offset, len);
        }
        let outboard = Region::with_blocks(
            Arc::clone(&file),
            header_len + meta.length,
            outboard_size(meta.length, version),
            AUDIT_BLOCK_SIZE,
        );
        if version != BAO_FORMAT {
            // The walk checks every node and group it reads before they go in the proof.
            let source = ShardFile {
                file,
                data_base: header_len,
                outboard,
            };
            let proof = tree::prove(source, meta.length, meta.hash, offset, len)
                .map_err(|e| data_loss_or_io(id, e))?;
            return Ok(AuditProof {
                proof,
                shard_length: meta.length,
                bao: false,
            });
        }
        let data = Region::with_blocks(file, header_len, meta.length, AUDIT_BLOCK_SIZE);
        let slice = bao_slice(id, data, outboard, offset, len)?;
        // The extractor copies bytes as they are on disk; check them before answering, so a
        // provider with rotten bytes says so (and counts the audit failed) instead of
        // sending a slice the caller will reject.
        let mut decoder =
            bao::decode::SliceDecoder::new(&slice[..], &blake3::Hash::from(meta.hash), offset, len);
        io::copy(&mut decoder, &mut io::sink()).map_err(|e| data_loss_or_io(id, e))?;
        Ok(AuditProof {
            proof: slice,
            shard_length: meta.length,
            bao: true,
        })
    }

    /// A bao slice of a format-2 shard: the whole shard read and checked, its bao outboard
    /// built in memory, the slice cut from both.
    fn audit_as_bao(
        &self,
        id: &str,
        meta: &ShardMeta,
        offset: u64,
        len: u64,
    ) -> Result<AuditProof> {
        let mut reader = self.read_range(id, 0, 0)?;
        let mut data = Vec::with_capacity(usize::try_from(meta.length).unwrap_or(0));
        while reader.remaining() > 0 {
            data.extend_from_slice(&reader.next_chunk(crate::CHUNK_SIZE)?);
        }
        let (outboard, _) = bao::encode::outboard(&data);
        let slice = bao_slice(
            id,
            io::Cursor::new(&data),
            io::Cursor::new(&outboard),
            offset,
            len,
        )?;
        Ok(AuditProof {
            proof: slice,
            shard_length: meta.length,
            bao: true,
        })
    }
}

/// An audit's answer; see [`Store::audit`].
#[derive(Debug)]
pub struct AuditProof {
    pub proof: Vec<u8>,
    pub shard_length: u64,
    /// The proof is a bao slice (a format-1 shard), not a [`crate::tree`] proof.
    pub bao: bool,
}

/// bao's slice of `[offset, offset + len)`, cut from a shard's bytes and its bao outboard
/// as they are (the caller checks them, or built them).
fn bao_slice(
    id: &str,
    data: impl Read + Seek,
    outboard: impl Read + Seek,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let mut extractor = bao::encode::SliceExtractor::new_outboard(data, outboard, offset, len);
    let mut slice = Vec::new();
    extractor
        .read_to_end(&mut slice)
        .map_err(|e| data_loss_or_io(id, e))?;
    Ok(slice)
}
