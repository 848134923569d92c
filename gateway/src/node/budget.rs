//! Budgets of segment buffers: how much memory the writes, and the reads, in flight may
//! hold together.

use std::sync::Arc;

use crate::error::{Error, Result};

/// Bytes of stripes all uploads of a gateway may hold at once (see [`BufferBudget`]): a
/// segment counts with every shard it is coded into, parity included
/// ([`crate::datapath::codec::stripe_bytes`]: 24 MiB for a 16 MiB segment in 4+2), so four
/// 16 MiB segments of 4+2 fit, as many as four streams keep in flight.
pub const UPLOAD_BUDGET_BYTES: usize = 96 << 20;

/// Bytes of shards and decoded segments all reads in flight may hold at once while they
/// fetch and decode (twice the segment each: a 16 MiB segment takes 32 MiB).
pub const READ_BUDGET_BYTES: usize = 64 << 20;

/// Caps the segment buffers all writes (or all reads) in flight hold together, so a
/// gateway's memory does not grow with the number of concurrent requests. A write takes a
/// segment's stripe (its data, tag, padding and parity shards) before filling its buffer
/// (only what is left of the body when its length is known, so small objects take little)
/// and gives it back once the segment is stored; a read takes twice the segment (its
/// shards and the result) while it fetches and decodes. A whole segment is taken at once,
/// so requests never wait on each other half-way; one larger than the whole budget waits
/// for all of it.
#[derive(Clone)]
pub struct BufferBudget {
    units: Arc<tokio::sync::Semaphore>,
    total: usize,
}

/// One permit of [`BufferBudget`] stands for this many bytes.
const BUDGET_UNIT: usize = 64 << 10;

impl BufferBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Self {
        let total = (bytes / BUDGET_UNIT).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(tokio::sync::Semaphore::new(total)),
            total,
        }
    }

    /// Waits until `bytes` of segment buffer may be held.
    pub(super) async fn take(&self, bytes: usize) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let units = bytes.div_ceil(BUDGET_UNIT).clamp(1, self.total);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        Arc::clone(&self.units)
            .acquire_many_owned(units)
            .await
            .map_err(|_| Error::internal("the gateway is shutting down"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_upload_budget_caps_segments_in_flight_not_small_objects() {
        let budget = BufferBudget::new(UPLOAD_BUDGET_BYTES);
        let total = UPLOAD_BUDGET_BYTES / BUDGET_UNIT;
        // A 4 KiB object takes one unit: thousands fit.
        let small: Vec<_> = futures::future::join_all((0..1000).map(|_| budget.take(4096)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(budget.units.available_permits(), total - 1000);
        drop(small);
        // 16 MiB segments: as many as the budget holds; the next waits for one to be stored.
        let mut held = Vec::new();
        for _ in 0..UPLOAD_BUDGET_BYTES / (16 << 20) {
            held.push(budget.take(16 << 20).await.unwrap());
        }
        let wait = std::time::Duration::from_millis(50);
        let next = tokio::time::timeout(wait, budget.take(16 << 20)).await;
        assert!(next.is_err(), "a segment beyond the budget fit in it");
        held.pop();
        let wait = std::time::Duration::from_secs(1);
        let next = tokio::time::timeout(wait, budget.take(16 << 20)).await;
        held.push(next.unwrap().unwrap());
        // A segment larger than the whole budget still goes through, alone.
        drop(held);
        let _whole = budget.take(1 << 30).await.unwrap();
    }
}
