//! The durable shard store: one file per shard under `<data dir>/shards`, an
//! in-memory index rebuilt from the files' headers on start.
//!
//! File layout: a self-describing header, the shard bytes, then the outboard (the BLAKE3
//! tree above 16 KiB groups, see [`crate::tree`]) that lets any byte range be verified on
//! its own. Shards written before format 2 keep bao's outboard (one node per 1 KiB chunk),
//! and are read and audited as before.
//! A shard becomes visible only by an atomic rename after its bytes are durable (an fsync
//! of the file, or with [`SyncMode::Batch`] one `syncfs` shared by the writes finishing
//! together), followed by an fsync of the directory (one for all the writes waiting at that
//! moment, see `dirsync`); temp files start with `.tmp-`
//! (never a valid shard id) and are removed on start.
//!
//! The store's parts: `format` (the file header and sizes), `index` (the in-memory index,
//! tenant namespaces, listing), `write` (reserve, write, commit), `read` (verified reads),
//! `region` (the block cache reads go through), `audit` (proofs) and `upgrade` (format 1
//! to 2).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tracing::{info, warn};

use crate::{Error, Result};

mod audit;
mod dirsync;
mod format;
mod index;
mod read;
mod region;
mod upgrade;
mod write;

pub use audit::{AuditProof, MAX_AUDIT_LEN};
pub use format::{MAX_ID_LEN, MAX_SHARD_LEN, check_shard_length, reseal_header, validate_shard_id};
pub use index::{TENANT_PREFIX, TenantUsage, namespace_of};
pub use read::{ShardReader, WHOLE_READ_MAX};
pub use upgrade::UpgradeReport;
pub use write::PutWriter;

use format::{Header, SHARD_SUFFIX, TEMP_PREFIX, file_size_for};
use index::Index;

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

/// Space accounting of the store.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub capacity: u64,
    pub used: u64,
    pub free: u64,
    pub shards: u64,
}

/// How a stored shard's bytes are made durable before it is renamed into place. Either way
/// a write is acknowledged only once its bytes and its name are on the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// An fsync of each shard file (the default: on a filesystem shared with other programs
    /// it measured fastest, see docs/running.md).
    #[default]
    File,
    /// One `syncfs(2)` of the store's filesystem for all the writes finishing together:
    /// fewer flushes, faster on a filesystem of the store's own where a flush is dear, but
    /// each flush also writes back every other dirty file of that filesystem.
    Batch,
}

impl std::str::FromStr for SyncMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "file" => Ok(SyncMode::File),
            "batch" => Ok(SyncMode::Batch),
            _ => Err(format!(
                "`{s}` is not a sync mode: write `file` (an fsync per shard file) or `batch` \
                 (one syncfs for the writes finishing together)"
            )),
        }
    }
}

/// The shard store of one provider.
pub struct Store {
    dir: PathBuf,
    capacity: u64,
    reserve: u64,
    index: Mutex<Index>,
    /// The directory's fsyncs after renames and removals, shared by concurrent writes.
    dir_sync: dirsync::GroupSync,
    /// With [`SyncMode::Batch`], the filesystem's syncfs that makes written bytes durable,
    /// shared by concurrent writes; `None`: each write fsyncs its file.
    data_sync: Option<dirsync::GroupSync>,
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
    /// a crash and rebuilding the index from the shard headers; each shard file fsynced.
    pub fn open(data_dir: &Path, capacity: u64, reserve: u64) -> Result<Store> {
        Self::open_with(data_dir, capacity, reserve, SyncMode::File)
    }

    /// [`Store::open`] with the way written bytes are made durable.
    pub fn open_with(
        data_dir: &Path,
        capacity: u64,
        reserve: u64,
        sync_mode: SyncMode,
    ) -> Result<Store> {
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
                    used = used.saturating_add(meta.file_size);
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
        let data_sync = match sync_mode {
            SyncMode::File => None,
            SyncMode::Batch => Some(dirsync::GroupSync::filesystem(&dir)?),
        };
        Ok(Store {
            dir_sync: dirsync::GroupSync::directory(&dir),
            data_sync,
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

    /// How this store makes written bytes durable.
    pub fn sync_mode(&self) -> SyncMode {
        if self.data_sync.is_some() {
            SyncMode::Batch
        } else {
            SyncMode::File
        }
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

    /// Space accounting: capacity is the configured capacity minus the reserve.
    pub fn usage(&self) -> Usage {
        let index = self.lock();
        let usable = self.usable();
        Usage {
            capacity: usable,
            used: index.used,
            free: usable.saturating_sub(index.used.saturating_add(index.reserved)),
            shards: index.shards.len() as u64,
        }
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
        self.dir_sync.after_change()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
