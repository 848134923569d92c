//! The write path: space (and a tenant's quota) reserved up front, bytes and outboard
//! written to a temp file, made durable and visible by fsync (or a shared syncfs) and an
//! atomic rename.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::warn;

use super::format::{
    FORMAT_VERSION, Header, TEMP_PREFIX, check_shard_length, file_size_for, validate_shard_id,
};
use super::index::namespace_of;
use super::{ShardMeta, Store};
use crate::tree;
use crate::{Error, Result};

/// A writer appends the outboard's nodes once this many are waiting.
const OUTBOARD_FLUSH: usize = 64 * 1024;

impl Store {
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
        // The length comes from the caller: bounded before it goes into any sum.
        check_shard_length(id, length)?;
        let needed = file_size_for(id, length, FORMAT_VERSION);
        {
            let mut index = self.lock();
            if let Some(quota) = quota {
                let ns = namespace_of(id)
                    .ok_or_else(|| Error::Other(format!("shard {id} is in no tenant namespace")))?;
                let t = index.tenants.get(ns).copied().unwrap_or_default();
                let used = t.file_bytes.saturating_add(t.reserved);
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
                    used: index.used.saturating_add(index.reserved),
                    usable,
                });
            }
            // Below `usable`, checked above: cannot saturate.
            index.reserved = index.reserved.saturating_add(needed);
            if let Some(ns) = namespace_of(id) {
                let tenant = index.tenants.entry(ns.to_string()).or_default();
                tenant.reserved = tenant.reserved.saturating_add(needed);
            }
        }
        // Taken before the first byte is written: a failed syncfs from now on may concern it.
        let flush_epoch = self.data_sync.as_ref().map_or(0, |sync| sync.epoch());
        let mut writer = PutWriter {
            flush_epoch,
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
    pub(super) stored_at: i64,
    /// Failed flushes of the store's filesystem when the write began ([`super::SyncMode::Batch`]).
    flush_epoch: u64,
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
        let end = u64::try_from(data.len())
            .ok()
            .and_then(|n| self.written.checked_add(n))
            .unwrap_or(u64::MAX);
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
    pub(super) fn commit_if(mut self, expected: Option<&ShardMeta>) -> Result<Option<ShardMeta>> {
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
        // The bytes are durable before the name is: a crash never leaves a shard file whose
        // bytes are not on the disk under a shard's name.
        match &self.store.data_sync {
            None => file.sync_all(),
            Some(sync) => sync.after_change_since(self.flush_epoch),
        }
        .map_err(|e| self.io_error(e))?;
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
            index.used = index.used.saturating_add(file_size);
            index.tenant_add(&self.id, &meta);
            index.reserved = index.reserved.saturating_sub(self.reserved);
            index.tenant_unreserve(&self.id, self.reserved);
            self.reserved = 0;
        }
        self.store.dir_sync.after_change()?;
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

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}
