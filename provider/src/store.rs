//! The durable shard store: one file per shard under `<data dir>/shards`, an
//! in-memory index rebuilt from the files' headers on start.
//!
//! File layout: a self-describing header, the shard bytes, then the outboard (the BLAKE3
//! tree above 16 KiB groups, see [`crate::tree`]) that lets any byte range be verified on
//! its own. Shards written before format 2 keep bao's outboard (one node per 1 KiB chunk),
//! and are read and audited as before.
//! A shard becomes visible only by an atomic rename after fsync of the file,
//! followed by an fsync of the directory; temp files start with `.tmp-`
//! (never a valid shard id) and are removed on start.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use tracing::{info, warn};

use crate::tree::{self, GROUP_LEN};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"SUBLSHRD";
/// The format new shards are written in: the outboard of [`crate::tree`].
const FORMAT_VERSION: u16 = 2;
/// The first format: bao's outboard. Still read and audited.
const BAO_FORMAT: u16 = 1;
/// Fixed part of the header: magic, version, id length, length, stored_at, hash.
const FIXED_HEADER: usize = 8 + 2 + 2 + 8 + 8 + 32;
/// The header ends with a BLAKE3 of everything before it.
const HEADER_CHECKSUM: usize = 32;
const TEMP_PREFIX: &str = ".tmp-";
const SHARD_SUFFIX: &str = ".shard";
pub const MAX_ID_LEN: usize = 200;
/// Audits answer at most this many bytes.
pub const MAX_AUDIT_LEN: u64 = 1024 * 1024;

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

/// What the index knows about a stored shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMeta {
    pub length: u64,
    pub hash: [u8; 32],
    /// Seconds since the Unix epoch.
    pub stored_at: i64,
    /// Bytes the shard takes on disk (header, data and outboard).
    pub file_size: u64,
    /// The file's format: 2, or 1 for a shard kept with bao's outboard (see
    /// [`Store::upgrade_shards`]).
    pub format: u16,
}

/// What [`Store::upgrade_shards`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpgradeReport {
    /// Shards rewritten in format 2.
    pub upgraded: u64,
    /// Disk bytes that freed.
    pub reclaimed: u64,
    /// Format-1 shards left as they are: unreadable, or deleted or replaced meanwhile.
    pub skipped: u64,
}

/// Space accounting of the store.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub capacity: u64,
    pub used: u64,
    pub free: u64,
    pub shards: u64,
}

struct Header {
    version: u16,
    id: String,
    length: u64,
    stored_at: i64,
    hash: [u8; 32],
}

impl Header {
    fn len_for(id: &str) -> u64 {
        (FIXED_HEADER + id.len() + HEADER_CHECKSUM) as u64
    }

    fn encode(&self) -> Vec<u8> {
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
    fn read(file: &File) -> std::result::Result<Header, String> {
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
        Ok(Header {
            version,
            id,
            length: u64_at(12),
            stored_at: u64_at(20) as i64,
            hash,
        })
    }
}

fn file_size_for(id: &str, length: u64, version: u16) -> u64 {
    Header::len_for(id) + length + outboard_size(length, version)
}

fn outboard_size(length: u64, version: u16) -> u64 {
    if version == BAO_FORMAT {
        u64::try_from(bao::encode::outboard_size(length)).unwrap_or(u64::MAX)
    } else {
        tree::outboard_len(length)
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// A window `[base, base + len)` of a file behind a small block cache, so the many
/// 64-byte reads of tree nodes (and bao's chunk-sized ones) don't each become a syscall.
struct Region {
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
const AUDIT_BLOCK_SIZE: u64 = 4 * 1024;
const MAX_BLOCKS: usize = 4;
/// A writer appends the outboard's nodes once this many are waiting.
const OUTBOARD_FLUSH: usize = 64 * 1024;

impl Region {
    fn new(file: Arc<File>, base: u64, len: u64) -> Self {
        Self::with_blocks(file, base, len, BLOCK_SIZE)
    }

    fn with_blocks(file: Arc<File>, base: u64, len: u64, block_size: u64) -> Self {
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

struct Index {
    shards: BTreeMap<String, ShardMeta>,
    used: u64,
    reserved: u64,
    /// Per tenant namespace (see [`namespace_of`]).
    tenants: HashMap<String, TenantUsage>,
}

/// Ids of shards a market tenant stored start with this, then the tenant's name and a dot.
pub const TENANT_PREFIX: &str = "t-";

/// The namespace (`t-NAME.`) a tenant's shard id lives in, if it is a tenant's.
pub fn namespace_of(id: &str) -> Option<&str> {
    if !id.starts_with(TENANT_PREFIX) {
        return None;
    }
    id.find('.').map(|dot| &id[..=dot])
}

/// What one tenant namespace holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantUsage {
    /// Shard bytes as the tenant sent them (what receipts bill).
    pub bytes: u64,
    /// Bytes on disk, headers and outboards included (what the quota counts).
    pub file_bytes: u64,
    pub shards: u64,
    /// Bytes of writes in progress.
    pub reserved: u64,
}

impl Index {
    fn tenant_add(&mut self, id: &str, meta: &ShardMeta) {
        if let Some(ns) = namespace_of(id) {
            let t = self.tenants.entry(ns.to_string()).or_default();
            t.bytes += meta.length;
            t.file_bytes += meta.file_size;
            t.shards += 1;
        }
    }

    fn tenant_remove(&mut self, id: &str, meta: &ShardMeta) {
        if let Some(ns) = namespace_of(id)
            && let Some(t) = self.tenants.get_mut(ns)
        {
            t.bytes = t.bytes.saturating_sub(meta.length);
            t.file_bytes = t.file_bytes.saturating_sub(meta.file_size);
            t.shards = t.shards.saturating_sub(1);
        }
    }

    fn tenant_unreserve(&mut self, id: &str, bytes: u64) {
        if let Some(ns) = namespace_of(id)
            && let Some(t) = self.tenants.get_mut(ns)
        {
            t.reserved = t.reserved.saturating_sub(bytes);
        }
    }
}

/// The shard store of one provider.
pub struct Store {
    dir: PathBuf,
    capacity: u64,
    reserve: u64,
    index: Mutex<Index>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store under `data_dir`, removing temp files left by
    /// a crash and rebuilding the index from the shard headers.
    pub fn open(data_dir: &Path, capacity: u64, reserve: u64) -> Result<Store> {
        let dir = data_dir.join("shards");
        fs::create_dir_all(&dir)?;
        let mut shards = BTreeMap::new();
        let mut used = 0u64;
        let mut stale = 0usize;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX) {
                fs::remove_file(&path)?;
                stale += 1;
                continue;
            }
            let Some(id) = name.strip_suffix(SHARD_SUFFIX) else {
                continue;
            };
            match Self::load_meta(&path, id) {
                Ok(meta) => {
                    used += meta.file_size;
                    shards.insert(id.to_string(), meta);
                }
                Err(reason) => {
                    warn!(path = %path.display(), reason, "skipping unreadable shard file");
                }
            }
        }
        if stale > 0 {
            info!(stale, "removed temp files of interrupted writes");
            File::open(&dir)?.sync_all()?;
        }
        info!(shards = shards.len(), used, dir = %dir.display(), "shard index rebuilt");
        let mut index = Index {
            shards: BTreeMap::new(),
            used,
            reserved: 0,
            tenants: HashMap::new(),
        };
        for (id, meta) in &shards {
            index.tenant_add(id, meta);
        }
        index.shards = shards;
        Ok(Store {
            dir,
            capacity,
            reserve,
            index: Mutex::new(index),
        })
    }

    fn load_meta(path: &Path, id: &str) -> std::result::Result<ShardMeta, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let header = Header::read(&file)?;
        if header.id != id {
            return Err(format!("header names shard {:?}", header.id));
        }
        let file_size = file.metadata().map_err(|e| e.to_string())?.len();
        if file_size != file_size_for(id, header.length, header.version) {
            return Err(format!("file is {file_size} bytes, header says otherwise"));
        }
        Ok(ShardMeta {
            length: header.length,
            hash: header.hash,
            stored_at: header.stored_at,
            file_size,
            format: header.version,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index is left consistent at every await-free step, so a panic
        // elsewhere while holding the lock does not poison its meaning.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SHARD_SUFFIX}"))
    }

    fn usable(&self) -> u64 {
        self.capacity.saturating_sub(self.reserve)
    }

    /// What a tenant namespace (`t-NAME.`) holds.
    pub fn tenant_usage(&self, namespace: &str) -> TenantUsage {
        self.lock()
            .tenants
            .get(namespace)
            .copied()
            .unwrap_or_default()
    }

    /// Space accounting: capacity is the configured capacity minus the reserve.
    pub fn usage(&self) -> Usage {
        let index = self.lock();
        let usable = self.usable();
        Usage {
            capacity: usable,
            used: index.used,
            free: usable.saturating_sub(index.used + index.reserved),
            shards: index.shards.len() as u64,
        }
    }

    /// Start storing a shard of exactly `length` bytes. Nothing is visible
    /// until [`PutWriter::commit`]; dropping the writer removes the temp file.
    pub fn begin_put(
        self: &Arc<Self>,
        id: &str,
        length: u64,
        expected_hash: Option<[u8; 32]>,
    ) -> Result<PutWriter> {
        self.begin_put_within(id, length, expected_hash, None)
    }

    /// [`Store::begin_put`] for a tenant whose namespace may hold at most
    /// `quota` bytes on disk (its contract's reservation).
    pub fn begin_put_within(
        self: &Arc<Self>,
        id: &str,
        length: u64,
        expected_hash: Option<[u8; 32]>,
        quota: Option<u64>,
    ) -> Result<PutWriter> {
        validate_shard_id(id)?;
        let needed = file_size_for(id, length, FORMAT_VERSION);
        {
            let mut index = self.lock();
            if let Some(quota) = quota {
                let ns = namespace_of(id)
                    .ok_or_else(|| Error::Other(format!("shard {id} is in no tenant namespace")))?;
                let t = index.tenants.get(ns).copied().unwrap_or_default();
                let used = t.file_bytes + t.reserved;
                if used.saturating_add(needed) > quota {
                    return Err(Error::QuotaExceeded {
                        needed,
                        used,
                        quota,
                    });
                }
            }
            let usable = self.usable();
            let after = index
                .used
                .saturating_add(index.reserved)
                .saturating_add(needed);
            if after > usable {
                return Err(Error::CapacityExhausted {
                    needed,
                    used: index.used + index.reserved,
                    usable,
                });
            }
            index.reserved += needed;
            if let Some(ns) = namespace_of(id) {
                index.tenants.entry(ns.to_string()).or_default().reserved += needed;
            }
        }
        let mut writer = PutWriter {
            store: Arc::clone(self),
            id: id.to_string(),
            length,
            expected_hash,
            reserved: needed,
            temp: self
                .dir
                .join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>())),
            file: None,
            encoder: None,
            written: 0,
            outboard_written: 0,
            header: Vec::new(),
            stored_at: now_secs(),
        };
        writer.create()?;
        Ok(writer)
    }

    /// Rewrites shards kept in format 1 (bao's outboard, 6.25% of the shard) in format 2
    /// (0.4%), one at a time: the same bytes, hash and store time, checked on the way. The
    /// new file replaces the old by a rename, so readers see one or the other, and only
    /// while the index still holds the old one (a shard deleted or replaced meanwhile is
    /// left alone). A shard whose bytes do not match its hash is left for the gateway's
    /// audits and repairs. Stops early, with what it did, when the disk is full.
    pub fn upgrade_shards(self: &Arc<Self>) -> UpgradeReport {
        let old: Vec<(String, ShardMeta)> = self
            .lock()
            .shards
            .iter()
            .filter(|(_, meta)| meta.format == BAO_FORMAT)
            .map(|(id, meta)| (id.clone(), meta.clone()))
            .collect();
        let mut report = UpgradeReport::default();
        for (id, meta) in old {
            match self.upgrade_one(&id, &meta) {
                Ok(Some(new)) => {
                    report.upgraded += 1;
                    report.reclaimed += meta.file_size.saturating_sub(new.file_size);
                }
                Ok(None) => report.skipped += 1,
                Err(e) => {
                    report.skipped += 1;
                    warn!(shard = id, error = %e, "format-1 shard left as it is");
                    if matches!(e, Error::CapacityExhausted { .. } | Error::DiskFull(_)) {
                        break;
                    }
                }
            }
        }
        report
    }

    fn upgrade_one(self: &Arc<Self>, id: &str, meta: &ShardMeta) -> Result<Option<ShardMeta>> {
        let mut reader = self.read_range(id, 0, 0)?;
        let mut writer = self.begin_put(id, meta.length, Some(meta.hash))?;
        writer.stored_at = meta.stored_at;
        while reader.remaining() > 0 {
            writer.write(&reader.next_chunk(crate::CHUNK_SIZE)?)?;
        }
        writer.commit_if(Some(meta))
    }

    /// The index entry of a shard.
    pub fn stat(&self, id: &str) -> Result<ShardMeta> {
        validate_shard_id(id)?;
        self.lock()
            .shards
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Page through shards in id order: ids with `prefix`, strictly after
    /// `start_after`; the second value is where the next page starts, if any.
    pub fn list(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> (Vec<(String, ShardMeta)>, Option<String>) {
        let index = self.lock();
        let lower = if start_after >= prefix {
            Bound::Excluded(start_after.to_string())
        } else {
            Bound::Included(prefix.to_string())
        };
        let mut out = Vec::new();
        let mut more = false;
        for (id, meta) in index.shards.range((lower, Bound::Unbounded)) {
            if !id.starts_with(prefix) {
                break;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push((id.clone(), meta.clone()));
        }
        let next = if more {
            out.last().map(|(id, _)| id.clone())
        } else {
            None
        };
        (out, next)
    }

    /// Remove a shard; answers whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool> {
        validate_shard_id(id)?;
        {
            let mut index = self.lock();
            let Some(meta) = index.shards.remove(id) else {
                return Ok(false);
            };
            index.used = index.used.saturating_sub(meta.file_size);
            index.tenant_remove(id, &meta);
            match fs::remove_file(self.path_of(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(true)
    }

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
            return Self::read_whole(id, &meta, &file, header_len);
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

    /// A whole shard, read at once and checked against its hash in one BLAKE3 pass: one read
    /// instead of one per group, and none of the tree (nor, for a format-1 shard, bao's
    /// chunk-by-chunk check, several times slower).
    fn read_whole(id: &str, meta: &ShardMeta, file: &File, header_len: u64) -> Result<ShardReader> {
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
        if blake3::hash(&data).as_bytes() != &meta.hash {
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

    /// The index entry, the open file, its header's length and its format.
    fn open_checked(&self, id: &str) -> Result<(ShardMeta, Arc<File>, u64, u16)> {
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

/// An audit's answer; see [`Store::audit`].
#[derive(Debug)]
pub struct AuditProof {
    pub proof: Vec<u8>,
    pub shard_length: u64,
    /// The proof is a bao slice (a format-1 shard), not a [`crate::tree`] proof.
    pub bao: bool,
}

/// A format-2 shard file as the tree walk reads it.
struct ShardFile {
    file: Arc<File>,
    data_base: u64,
    outboard: Region,
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

fn data_loss_or_io(id: &str, e: io::Error) -> Error {
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

/// A shard being written; see [`Store::begin_put`].
pub struct PutWriter {
    store: Arc<Store>,
    id: String,
    length: u64,
    expected_hash: Option<[u8; 32]>,
    reserved: u64,
    temp: PathBuf,
    file: Option<Arc<File>>,
    encoder: Option<tree::Encoder>,
    written: u64,
    /// Outboard bytes written so far (they follow the shard's bytes).
    outboard_written: u64,
    header: Vec<u8>,
    stored_at: i64,
}

impl PutWriter {
    fn io_error(&self, e: io::Error) -> Error {
        if is_disk_full(&e) {
            Error::DiskFull(self.id.clone())
        } else {
            Error::Io(e)
        }
    }

    fn create(&mut self) -> Result<()> {
        let file = fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&self.temp)
            .map_err(|e| self.io_error(e))?;
        let file = Arc::new(file);
        // The hash is filled in at commit; until then the file is a temp file.
        self.header = Header {
            version: FORMAT_VERSION,
            id: self.id.clone(),
            length: self.length,
            stored_at: self.stored_at,
            hash: [0; 32],
        }
        .encode();
        file.write_all_at(&self.header, 0)
            .map_err(|e| self.io_error(e))?;
        self.encoder = Some(tree::Encoder::new(self.length));
        self.file = Some(file);
        Ok(())
    }

    /// Append shard bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let end = self.written + data.len() as u64;
        if end > self.length {
            return Err(Error::InvalidArgument(format!(
                "shard {} is longer than the {} bytes announced in its header",
                self.id, self.length
            )));
        }
        let (Some(file), Some(encoder)) = (&self.file, &mut self.encoder) else {
            return Err(Error::Other("writer is closed".into()));
        };
        let at = self.header.len() as u64 + self.written;
        if let Err(e) = file.write_all_at(data, at) {
            return Err(self.io_error(e));
        }
        encoder.update(data);
        self.written = end;
        if encoder.pending_outboard() >= OUTBOARD_FLUSH {
            self.write_outboard()?;
        }
        Ok(())
    }

    /// Append the outboard's completed nodes to the file.
    fn write_outboard(&mut self) -> Result<()> {
        let (Some(file), Some(encoder)) = (&self.file, &mut self.encoder) else {
            return Err(Error::Other("writer is closed".into()));
        };
        let nodes = encoder.take_outboard();
        let at = self.header.len() as u64 + self.length + self.outboard_written;
        if let Err(e) = file.write_all_at(&nodes, at) {
            return Err(self.io_error(e));
        }
        self.outboard_written += nodes.len() as u64;
        Ok(())
    }

    /// Make the shard durable and visible; answers its index entry.
    pub fn commit(self) -> Result<ShardMeta> {
        let id = self.id.clone();
        self.commit_if(None)?
            .ok_or_else(|| Error::Other(format!("shard {id} was not committed")))
    }

    /// [`PutWriter::commit`], but only while the index still holds `expected` for this id
    /// (when given); `None` (and nothing stored) otherwise.
    fn commit_if(mut self, expected: Option<&ShardMeta>) -> Result<Option<ShardMeta>> {
        if self.written != self.length {
            return Err(Error::InvalidArgument(format!(
                "shard {} ended after {} of the {} bytes announced in its header",
                self.id, self.written, self.length
            )));
        }
        let (Some(file), Some(encoder)) = (self.file.clone(), self.encoder.as_mut()) else {
            return Err(Error::Other("writer is closed".into()));
        };
        let hash = encoder
            .finalize()
            .ok_or_else(|| Error::Other(format!("shard {} is missing bytes", self.id)))?;
        self.write_outboard()?;
        if let Some(expected) = self.expected_hash
            && expected != hash
        {
            return Err(Error::InvalidArgument(format!(
                "shard {} has BLAKE3 {} but the caller expected {}; nothing stored",
                self.id,
                hex::encode(hash),
                hex::encode(expected)
            )));
        }
        let header = Header {
            version: FORMAT_VERSION,
            id: self.id.clone(),
            length: self.length,
            stored_at: self.stored_at,
            hash,
        }
        .encode();
        file.write_all_at(&header, 0)
            .map_err(|e| self.io_error(e))?;
        file.sync_all().map_err(|e| self.io_error(e))?;
        let file_size = file.metadata()?.len();
        let meta = ShardMeta {
            length: self.length,
            hash,
            stored_at: self.stored_at,
            file_size,
            format: FORMAT_VERSION,
        };
        {
            let mut index = self.store.lock();
            if let Some(expected) = expected
                && index.shards.get(&self.id) != Some(expected)
            {
                return Ok(None);
            }
            fs::rename(&self.temp, self.store.path_of(&self.id))?;
            self.file = None;
            if let Some(old) = index.shards.insert(self.id.clone(), meta.clone()) {
                index.used = index.used.saturating_sub(old.file_size);
                index.tenant_remove(&self.id, &old);
            }
            index.used += file_size;
            index.tenant_add(&self.id, &meta);
            index.reserved = index.reserved.saturating_sub(self.reserved);
            index.tenant_unreserve(&self.id, self.reserved);
            self.reserved = 0;
        }
        File::open(&self.store.dir)?.sync_all()?;
        Ok(Some(meta))
    }
}

impl Drop for PutWriter {
    fn drop(&mut self) {
        if self.file.take().is_some()
            && let Err(e) = fs::remove_file(&self.temp)
        {
            warn!(path = %self.temp.display(), error = %e, "could not remove temp file");
        }
        if self.reserved > 0 {
            let mut index = self.store.lock();
            index.reserved = index.reserved.saturating_sub(self.reserved);
            index.tenant_unreserve(&self.id, self.reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
}
