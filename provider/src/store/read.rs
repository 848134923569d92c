//! Verified reads: a whole shard checked in one pass, or any range streamed through its
//! outboard (the tree for format 2, bao for format 1), so no byte is served unchecked;
//! and the one exception, a whole shard for a caller that authenticates it itself
//! ([`Store::read_unchecked`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::format::{BAO_FORMAT, Header, outboard_size};
use super::region::Region;
use super::{ShardMeta, Store};
use crate::tree::{self, GROUP_LEN};
use crate::{Error, Result};

impl Store {
    /// Open a verified reader over `[offset, offset + len)` of a shard (`len`
    /// 0 means to the end). Every byte it yields has been checked against the
    /// shard's BLAKE3 hash; a mismatch yields [`Error::DataLoss`]. A whole shard asked
    /// for as `(0, 0)` and at most [`WHOLE_READ_MAX`] is read at once and checked in one
    /// pass; any other range (a whole shard by its length too, as a scrub asks) streams
    /// through the outboard, which is checked along the way.
    pub fn read_range(&self, id: &str, offset: u64, len: u64) -> Result<ShardReader> {
        let (meta, file, header_len, version) = self.open_checked(id)?;
        if offset > meta.length {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} is past the end of shard {id} ({} bytes)",
                meta.length
            )));
        }
        if offset == 0 && len == 0 && meta.length <= WHOLE_READ_MAX {
            return Self::read_whole(id, &meta, &file, header_len, true);
        }
        let available = meta.length - offset;
        let len = if len == 0 {
            available
        } else {
            len.min(available)
        };
        let outboard = Region::new(
            Arc::clone(&file),
            header_len + meta.length,
            outboard_size(meta.length, version),
        );
        let source = if version == BAO_FORMAT {
            let data = Region::new(file, header_len, meta.length);
            let extractor = bao::encode::SliceExtractor::new_outboard(data, outboard, offset, len);
            let hash = blake3::Hash::from(meta.hash);
            Source::Bao(Box::new(bao::decode::SliceDecoder::new(
                extractor, &hash, offset, len,
            )))
        } else {
            Source::Tree(Box::new(TreeRead {
                walk: tree::Walk::new(meta.length, meta.hash, offset, len),
                file: ShardFile {
                    file,
                    data_base: header_len,
                    outboard,
                },
                group: Vec::new(),
                unsent: 0..0,
            }))
        };
        Ok(ShardReader {
            id: id.to_string(),
            remaining: len,
            source,
        })
    }

    /// A whole shard as stored, **not** checked against its hash, for a caller that
    /// authenticates the bytes itself (a gateway reading the data shards of an encrypted
    /// segment: AES-GCM's tag covers them, and it hashes them when the tag fails). The
    /// index entry and the file's header are checked as for any read, and a file shorter
    /// than its header says is [`Error::DataLoss`]; rot inside the data is sent as it is.
    /// A shard over [`WHOLE_READ_MAX`] streams through its outboard, checked, as
    /// [`Store::read_range`] reads it (memory per read stays bounded).
    pub fn read_unchecked(&self, id: &str) -> Result<ShardReader> {
        let (meta, file, header_len, _) = self.open_checked(id)?;
        if meta.length > WHOLE_READ_MAX {
            return self.read_range(id, 0, 0);
        }
        Self::read_whole(id, &meta, &file, header_len, false)
    }

    /// A whole shard's file, opened read-only, for a caller on this machine that reads it
    /// itself and authenticates the bytes (a short-circuit read, see
    /// [`crate::shortcircuit`]): the file, the offset of the shard's bytes in it and their
    /// length. The index entry and the header are checked as for any read, and the file
    /// must be complete (as long as its header says): a shard that fails is
    /// [`Error::DataLoss`], never handed out.
    pub fn open_whole(&self, id: &str) -> Result<(File, u64, u64)> {
        let (meta, file, header_len, version) = self.open_checked(id)?;
        let size = file.metadata()?.len();
        if size != super::format::file_size_for(id, meta.length, version) {
            return Err(Error::DataLoss {
                id: id.to_string(),
                reason: format!("shard file is {size} bytes, its header says otherwise"),
            });
        }
        let file = Arc::try_unwrap(file)
            .map_err(|_| Error::Other(format!("shard {id}: its file is shared")))?;
        Ok((file, header_len, meta.length))
    }

    /// A whole shard, read at once and (when `check`) checked against its hash in one
    /// BLAKE3 pass: one read instead of one per group, and none of the tree (nor, for a
    /// format-1 shard, bao's chunk-by-chunk check, several times slower).
    fn read_whole(
        id: &str,
        meta: &ShardMeta,
        file: &File,
        header_len: u64,
        check: bool,
    ) -> Result<ShardReader> {
        let length = usize::try_from(meta.length)
            .map_err(|_| Error::Other(format!("shard {id} is too large to read whole")))?;
        // `read_to_end` fills spare capacity as it is, without zeroing it first.
        let mut data = Vec::with_capacity(length);
        let mut reader = file;
        reader
            .seek(SeekFrom::Start(header_len))
            .and_then(|_| reader.take(meta.length).read_to_end(&mut data))
            .map_err(|e| data_loss_or_io(id, e))?;
        if data.len() != length {
            return Err(Error::DataLoss {
                id: id.to_string(),
                reason: "shard file is shorter than its header says".into(),
            });
        }
        if check && blake3::hash(&data).as_bytes() != &meta.hash {
            return Err(Error::DataLoss {
                id: id.to_string(),
                reason: "the shard's bytes do not match its hash".into(),
            });
        }
        Ok(ShardReader {
            id: id.to_string(),
            remaining: meta.length,
            source: Source::Whole(Bytes::from(data)),
        })
    }

    /// The index entry, the open file, its header's length and its format.
    pub(super) fn open_checked(&self, id: &str) -> Result<(ShardMeta, Arc<File>, u64, u16)> {
        let meta = self.stat(id)?;
        let file = match File::open(self.path_of(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::DataLoss {
                    id: id.to_string(),
                    reason: "shard file is missing".into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let header = Header::read(&file).map_err(|reason| Error::DataLoss {
            id: id.to_string(),
            reason,
        })?;
        if header.id != id || header.hash != meta.hash || header.length != meta.length {
            return Err(Error::DataLoss {
                id: id.to_string(),
                reason: "header disagrees with the index".into(),
            });
        }
        Ok((meta, Arc::new(file), Header::len_for(id), header.version))
    }
}

/// A format-2 shard file as the tree walk reads it.
pub(super) struct ShardFile {
    pub(super) file: Arc<File>,
    pub(super) data_base: u64,
    pub(super) outboard: Region,
}

impl tree::Source for ShardFile {
    fn node(&mut self, index: u64) -> io::Result<[u8; 64]> {
        let mut node = [0u8; 64];
        self.outboard
            .seek(SeekFrom::Start(index * tree::NODE_LEN))?;
        self.outboard.read_exact(&mut node)?;
        Ok(node)
    }

    fn group(&mut self, index: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file
            .read_exact_at(buf, self.data_base + index * GROUP_LEN)
    }
}

/// A range of a format-2 shard, read group by group through the tree.
struct TreeRead {
    walk: tree::Walk,
    file: ShardFile,
    /// The last group read (checked).
    group: Vec<u8>,
    /// Its bytes in the range not yet handed out.
    unsent: std::ops::Range<usize>,
}

impl TreeRead {
    /// Append up to `want` checked bytes to `out`; false once the range is done.
    fn fill(&mut self, out: &mut Vec<u8>, want: usize) -> io::Result<bool> {
        while out.len() < want {
            if self.unsent.is_empty() {
                let Some(index) = self.walk.next_group(&mut self.file, &mut self.group)? else {
                    return Ok(false);
                };
                self.unsent = self.walk.in_range(index);
            }
            let n = (want - out.len()).min(self.unsent.len());
            out.extend_from_slice(&self.group[self.unsent.start..self.unsent.start + n]);
            self.unsent.start += n;
        }
        Ok(true)
    }
}

pub(super) fn data_loss_or_io(id: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => Error::DataLoss {
            id: id.to_string(),
            reason: e.to_string(),
        },
        _ => Error::Io(e),
    }
}

type BaoReader = bao::decode::SliceDecoder<bao::encode::SliceExtractor<Region, Region>>;

/// Shards up to this size are read whole and checked in one pass (see
/// [`Store::read_range`]); larger ones, and parts of shards, stream through the outboard.
pub const WHOLE_READ_MAX: u64 = 16 << 20;

/// Verified bytes of a shard range; see [`Store::read_range`].
pub struct ShardReader {
    id: String,
    remaining: u64,
    source: Source,
}

enum Source {
    /// What is left of a whole shard, already checked.
    Whole(Bytes),
    /// A range of a format-2 shard, checked group by group against the tree as it is read.
    Tree(Box<TreeRead>),
    /// A range of a format-1 shard, checked chunk by chunk against bao's outboard.
    Bao(Box<BaoReader>),
}

impl ShardReader {
    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Fill up to `max` verified bytes; an empty answer means the range is done.
    pub fn next_chunk(&mut self, max: usize) -> Result<Bytes> {
        let want = (max as u64).min(self.remaining) as usize;
        let ended_early = || Error::DataLoss {
            id: self.id.clone(),
            reason: "shard ended early".into(),
        };
        let decoder = match &mut self.source {
            Source::Whole(rest) => {
                self.remaining -= want as u64;
                return Ok(rest.split_to(want.min(rest.len())));
            }
            Source::Tree(read) => {
                let mut out = Vec::with_capacity(want);
                let more = read
                    .fill(&mut out, want)
                    .map_err(|e| data_loss_or_io(&self.id, e))?;
                if !more {
                    return Err(ended_early());
                }
                self.remaining -= want as u64;
                return Ok(Bytes::from(out));
            }
            Source::Bao(decoder) => decoder,
        };
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let n = decoder
                .read(&mut buf[filled..])
                .map_err(|e| data_loss_or_io(&self.id, e))?;
            if n == 0 {
                return Err(ended_early());
            }
            filled += n;
        }
        self.remaining -= want as u64;
        Ok(Bytes::from(buf))
    }
}
