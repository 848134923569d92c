//! Group commit of the shard directory's fsync.
//!
//! A stored shard is durable once its file is fsynced, renamed into place and the directory
//! fsynced after the rename. Concurrent writes each used to fsync the directory on their
//! own; on one disk every such fsync waits for a journal commit and a cache flush of its
//! own. Here a write that has renamed its file takes a ticket and waits until a directory
//! fsync that *started after* its ticket was taken has succeeded: one fsync, started by
//! whichever waiter finds none running, covers every rename before it. No write is
//! acknowledged before a directory fsync that follows its rename, as before.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    /// Tickets handed out so far (one per rename waiting to be made durable).
    taken: u64,
    /// Every ticket up to this one is covered by a directory fsync that succeeded.
    synced: u64,
    /// A directory fsync is running.
    running: bool,
    /// Directory fsyncs started (tests count them).
    syncs: u64,
}

/// See the module documentation.
pub(super) struct DirSync {
    dir: PathBuf,
    state: Mutex<State>,
    done: Condvar,
}

impl DirSync {
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            state: Mutex::new(State::default()),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters, consistent at every step: a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once a directory fsync started after this call has succeeded, so that
    /// everything renamed into or removed from the directory before the call is durable. A failed fsync
    /// fails the write of the waiter that ran it; the others run their own.
    pub(super) fn after_change(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.taken += 1;
        let ticket = state.taken;
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.running {
                // Bounded by the running fsync: its end wakes every waiter.
                state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.running = true;
            state.syncs += 1;
            let covers = state.taken;
            drop(state);
            let result = File::open(&self.dir).and_then(|d| d.sync_all());
            state = self.lock();
            state.running = false;
            if result.is_ok() {
                state.synced = state.synced.max(covers);
            }
            self.done.notify_all();
            result?;
        }
    }

    /// Directory fsyncs started so far.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn every_waiter_returns_after_a_sync_that_started_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::new(dir.path()));
        let returned = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let sync = Arc::clone(&sync);
                let returned = Arc::clone(&returned);
                std::thread::spawn(move || {
                    let started_before = sync.syncs();
                    sync.after_change().unwrap();
                    // At least one sync started after this call began (a running one
                    // that began earlier does not count for it).
                    assert!(sync.syncs() > started_before);
                    returned.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(returned.load(Ordering::SeqCst), 32);
        let syncs = sync.syncs();
        assert!((1..=32).contains(&syncs), "{syncs} directory fsyncs");
        // Alone, a waiter runs its own sync.
        let before = sync.syncs();
        sync.after_change().unwrap();
        assert_eq!(sync.syncs(), before + 1);
    }

    #[test]
    fn a_failed_sync_fails_its_waiter_and_is_not_counted_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let sync = DirSync::new(&gone);
        assert!(sync.after_change().is_err(), "the directory does not exist");
        std::fs::create_dir(&gone).unwrap();
        sync.after_change().unwrap();
        assert_eq!(
            sync.syncs(),
            2,
            "the failed sync was not taken as covering anything"
        );
    }
}
