//! Rewriting shards kept in format 1 (bao's outboard) in format 2.

use std::sync::Arc;

use tracing::warn;

use super::format::BAO_FORMAT;
use super::{ShardMeta, Store};
use crate::{Error, Result};

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

impl Store {
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

    pub(super) fn upgrade_one(
        self: &Arc<Self>,
        id: &str,
        meta: &ShardMeta,
    ) -> Result<Option<ShardMeta>> {
        let mut reader = self.read_range(id, 0, 0)?;
        let mut writer = self.begin_put(id, meta.length, Some(meta.hash))?;
        writer.stored_at = meta.stored_at;
        while reader.remaining() > 0 {
            writer.write(&reader.next_chunk(crate::CHUNK_SIZE)?)?;
        }
        writer.commit_if(Some(meta))
    }
}
