//! Retiring: shards a version no longer references are kept a while for reads that
//! started before the change, then freed.

use super::{Node, now_ms};
use crate::datapath::layout::Layout;

/// How long the shards a transition replaced are kept for reads that started before the
/// switch; they are freed by the first lifecycle pass after that (or, should the gateway
/// stop first, by garbage collection).
pub const RETIRE_DELAY_MS: i64 = 15 * 60 * 1000;

impl Node {
    fn retired_layouts(&self) -> std::sync::MutexGuard<'_, Vec<(i64, Layout)>> {
        self.retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `layout`'s shards (no longer referenced) for [`RETIRE_DELAY_MS`]: reads that
    /// began before the change may still stream them.
    pub fn retire(&self, layout: Layout) {
        self.retired_layouts().push((now_ms(), layout));
    }

    /// Frees the layouts replaced more than [`RETIRE_DELAY_MS`] ago (by the clock, not a
    /// pass's `now`, which may run ahead).
    pub async fn free_retired(&self) {
        let cut = now_ms() - RETIRE_DELAY_MS;
        let due: Vec<Layout> = {
            let mut retired = self.retired_layouts();
            let (due, kept) = retired.drain(..).partition(|(at, _)| *at <= cut);
            *retired = kept;
            due.into_iter().map(|(_, layout)| layout).collect()
        };
        for layout in &due {
            self.free(Some(layout)).await;
        }
    }

    /// Shard ids of layouts transitions replaced and not freed yet: not garbage.
    pub fn retired_shards(&self) -> std::collections::HashSet<String> {
        self.retired_layouts()
            .iter()
            .flat_map(|(_, layout)| layout.shards().map(|s| s.shard_id.clone()))
            .collect()
    }
}
