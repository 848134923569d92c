//! The in-memory index: every shard's [`ShardMeta`], space used and reserved, what each market
//! tenant's namespace holds, and listing in id order.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::{ShardMeta, Store};

pub(super) struct Index {
    pub(super) shards: BTreeMap<String, ShardMeta>,
    pub(super) used: u64,
    pub(super) reserved: u64,
    /// Per tenant namespace (see [`namespace_of`]).
    pub(super) tenants: HashMap<String, TenantUsage>,
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
    pub(super) fn tenant_add(&mut self, id: &str, meta: &ShardMeta) {
        if let Some(ns) = namespace_of(id) {
            let t = self.tenants.entry(ns.to_string()).or_default();
            t.bytes = t.bytes.saturating_add(meta.length);
            t.file_bytes = t.file_bytes.saturating_add(meta.file_size);
            t.shards += 1;
        }
    }

    pub(super) fn tenant_remove(&mut self, id: &str, meta: &ShardMeta) {
        if let Some(ns) = namespace_of(id)
            && let Some(t) = self.tenants.get_mut(ns)
        {
            t.bytes = t.bytes.saturating_sub(meta.length);
            t.file_bytes = t.file_bytes.saturating_sub(meta.file_size);
            t.shards = t.shards.saturating_sub(1);
        }
    }

    pub(super) fn tenant_unreserve(&mut self, id: &str, bytes: u64) {
        if let Some(ns) = namespace_of(id)
            && let Some(t) = self.tenants.get_mut(ns)
        {
            t.reserved = t.reserved.saturating_sub(bytes);
        }
    }
}

impl Store {
    /// What a tenant namespace (`t-NAME.`) holds.
    pub fn tenant_usage(&self, namespace: &str) -> TenantUsage {
        self.lock()
            .tenants
            .get(namespace)
            .copied()
            .unwrap_or_default()
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
}
