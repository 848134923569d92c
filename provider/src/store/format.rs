//! The shard file format: a self-describing header (with its own checksum), the shard's
//! bytes, then the outboard. Format 2 keeps [`crate::tree`]'s outboard, format 1 bao's.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::tree;
use crate::{Error, Result};

pub(super) const MAGIC: &[u8; 8] = b"SUBLSHRD";
/// The format new shards are written in: the outboard of [`crate::tree`].
pub(super) const FORMAT_VERSION: u16 = 2;
/// The first format: bao's outboard. Still read and audited.
pub(super) const BAO_FORMAT: u16 = 1;
/// Fixed part of the header: magic, version, id length, length, stored_at, hash.
const FIXED_HEADER: usize = 8 + 2 + 2 + 8 + 8 + 32;
/// The header ends with a BLAKE3 of everything before it.
const HEADER_CHECKSUM: usize = 32;
pub(super) const TEMP_PREFIX: &str = ".tmp-";
pub(super) const SHARD_SUFFIX: &str = ".shard";
pub const MAX_ID_LEN: usize = 200;
/// The longest shard a provider stores: a segment of the largest size a plan may have
/// (1 GiB) sealed and kept whole (a replica), with room to spare for manifests. A length
/// from the wire or a file header beyond it is refused before any arithmetic on it, so no
/// space or quota sum can wrap.
pub const MAX_SHARD_LEN: u64 = (1 << 30) + (1 << 20);

/// Refuses a shard length beyond [`MAX_SHARD_LEN`], naming the shard and both numbers.
pub fn check_shard_length(id: &str, length: u64) -> Result<()> {
    if length > MAX_SHARD_LEN {
        return Err(Error::InvalidArgument(format!(
            "shard {} announces {length} bytes; a shard is at most {MAX_SHARD_LEN} bytes",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// Check that a shard id is 1..=200 characters of `[A-Za-z0-9._-]` not starting with '.'.
pub fn validate_shard_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidShardId(id.chars().take(64).collect()))
    }
}

pub(super) struct Header {
    pub(super) version: u16,
    pub(super) id: String,
    pub(super) length: u64,
    pub(super) stored_at: i64,
    pub(super) hash: [u8; 32],
}

impl Header {
    pub(super) fn len_for(id: &str) -> u64 {
        (FIXED_HEADER + id.len() + HEADER_CHECKSUM) as u64
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::len_for(&self.id) as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.id.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.stored_at.to_le_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(self.id.as_bytes());
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Read and check the header at the start of `file`.
    pub(super) fn read(file: &File) -> std::result::Result<Header, String> {
        let mut fixed = [0u8; FIXED_HEADER];
        file.read_exact_at(&mut fixed, 0)
            .map_err(|e| format!("header unreadable: {e}"))?;
        if &fixed[..8] != MAGIC {
            return Err("bad magic".into());
        }
        let u16_at = |i: usize| u16::from_le_bytes([fixed[i], fixed[i + 1]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&fixed[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let version = u16_at(8);
        if version != FORMAT_VERSION && version != BAO_FORMAT {
            return Err(format!("unknown format version {version}"));
        }
        let id_len = u16_at(10) as usize;
        if id_len == 0 || id_len > MAX_ID_LEN {
            return Err("bad id length".into());
        }
        let mut rest = vec![0u8; id_len + HEADER_CHECKSUM];
        file.read_exact_at(&mut rest, FIXED_HEADER as u64)
            .map_err(|e| format!("header unreadable: {e}"))?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&fixed);
        hasher.update(&rest[..id_len]);
        if hasher.finalize().as_bytes() != &rest[id_len..] {
            return Err("header checksum mismatch".into());
        }
        let id = String::from_utf8(rest[..id_len].to_vec()).map_err(|_| "id is not utf-8")?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&fixed[28..60]);
        let length = u64_at(12);
        if length > MAX_SHARD_LEN {
            return Err(format!(
                "header announces {length} bytes, more than a shard may hold ({MAX_SHARD_LEN})"
            ));
        }
        Ok(Header {
            version,
            id,
            length,
            stored_at: u64_at(20) as i64,
            hash,
        })
    }
}

/// Rewrites the checksum of the header at the start of `file` (a shard file's bytes) to
/// match the header as it stands, when the file is long enough to hold one. The `shard_file`
/// fuzz target's entry: a mutated header then reaches the checks after the checksum.
pub fn reseal_header(file: &mut [u8]) {
    let Some(id_len) = file
        .get(10..12)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    else {
        return;
    };
    let end = FIXED_HEADER + id_len;
    if file.len() >= end + HEADER_CHECKSUM {
        let checksum = blake3::hash(&file[..end]);
        file[end..end + HEADER_CHECKSUM].copy_from_slice(checksum.as_bytes());
    }
}

/// Bytes a shard file takes on disk. Saturates instead of wrapping; lengths are checked
/// against [`MAX_SHARD_LEN`] before they get here, which keeps it far below.
pub(super) fn file_size_for(id: &str, length: u64, version: u16) -> u64 {
    Header::len_for(id)
        .saturating_add(length)
        .saturating_add(outboard_size(length, version))
}

pub(super) fn outboard_size(length: u64, version: u16) -> u64 {
    if version == BAO_FORMAT {
        u64::try_from(bao::encode::outboard_size(length)).unwrap_or(u64::MAX)
    } else {
        tree::outboard_len(length)
    }
}
