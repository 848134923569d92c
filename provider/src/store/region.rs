//! [`Region`]: a window of a shard file behind a small block cache, what the tree walk and
//! bao read the shard's bytes and outboard through.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A window `[base, base + len)` of a file behind a small block cache, so the many
/// 64-byte reads of tree nodes (and bao's chunk-sized ones) don't each become a syscall.
pub(super) struct Region {
    file: Arc<File>,
    base: u64,
    len: u64,
    /// Bytes read per block; see [`BLOCK_SIZE`] and [`AUDIT_BLOCK_SIZE`].
    block_size: u64,
    pos: u64,
    blocks: Vec<Block>,
    tick: u64,
}

struct Block {
    start: u64,
    /// The valid bytes of the block (shorter at the end of the region).
    data: Vec<u8>,
    last_used: u64,
}

const BLOCK_SIZE: u64 = 128 * 1024;
/// Block size for audits: a slice of at most 64 KiB and one 64-byte parent node per tree
/// level, so page-sized reads fetch little more than what the proof needs (128 KiB blocks
/// read about 9x what an audit answers).
pub(super) const AUDIT_BLOCK_SIZE: u64 = 4 * 1024;
const MAX_BLOCKS: usize = 4;

impl Region {
    pub(super) fn new(file: Arc<File>, base: u64, len: u64) -> Self {
        Self::with_blocks(file, base, len, BLOCK_SIZE)
    }

    pub(super) fn with_blocks(file: Arc<File>, base: u64, len: u64, block_size: u64) -> Self {
        Region {
            file,
            base,
            len,
            block_size,
            pos: 0,
            blocks: Vec::new(),
            tick: 0,
        }
    }

    /// The index of the cached block holding `pos`, loading it if needed.
    fn block_at(&mut self, pos: u64) -> io::Result<usize> {
        let start = pos - pos % self.block_size;
        self.tick += 1;
        if let Some(i) = self.blocks.iter().position(|b| b.start == start) {
            self.blocks[i].last_used = self.tick;
            return Ok(i);
        }
        if self.blocks.len() >= MAX_BLOCKS
            && let Some(lru) = (0..self.blocks.len()).min_by_key(|&i| self.blocks[i].last_used)
        {
            self.blocks.swap_remove(lru);
        }
        let want = self.block_size.min(self.len.saturating_sub(start)) as usize;
        let mut data = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let n = self
                .file
                .read_at(&mut data[filled..], self.base + start + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        data.truncate(filled);
        self.blocks.push(Block {
            start,
            data,
            last_used: self.tick,
        });
        Ok(self.blocks.len() - 1)
    }
}

impl Read for Region {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let i = self.block_at(self.pos)?;
        let block = &self.blocks[i];
        let at = (self.pos - block.start) as usize;
        if at >= block.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shard file is shorter than its header says",
            ));
        }
        let n = buf
            .len()
            .min(block.data.len() - at)
            .min((self.len - self.pos) as usize);
        buf[..n].copy_from_slice(&block.data[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Region {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}
