//! Group commit of the store's flushes.
//!
//! A stored shard is durable once its bytes are flushed, it is renamed into place and the
//! directory is flushed after the rename. Concurrent writes each used to fsync the directory
//! on their own; on one disk every such fsync waits for a journal commit and a cache flush of
//! its own. Here a write takes a ticket and waits until a flush that *started after* its
//! ticket was taken has succeeded: one flush, started by whichever waiter finds none running,
//! covers every change before it. No write is acknowledged before a flush that follows it.
//!
//! Two flushes are shared this way: the directory's fsync after renames and removals
//! ([`Flush::Directory`]), and, with `--sync-mode batch`, a `syncfs(2)` of the store's
//! filesystem that makes the bytes of every temp file written before it durable
//! ([`Flush::Filesystem`]). A directory fsync that fails fails the waiter that ran it; the
//! others run their own. A `syncfs` reports a writeback error once (Linux 5.8 and later),
//! whichever file it concerned, so one that fails fails every write that was under way when
//! it ran: see [`GroupSync::epoch`].

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    /// Tickets handed out so far (one per change waiting to be made durable).
    taken: u64,
    /// Every ticket up to this one is covered by a flush that succeeded.
    synced: u64,
    /// A flush is running.
    running: bool,
    /// Flushes started (tests and benchmarks count them).
    syncs: u64,
    /// Flushes that failed (see [`GroupSync::epoch`]).
    failures: u64,
}

/// What one flush is.
pub(super) enum Flush {
    /// fsync of the directory (opened anew for each flush).
    Directory(PathBuf),
    /// `syncfs(2)` of the filesystem holding the directory, through a descriptor opened once,
    /// so that a writeback error since the store opened is reported to it.
    Filesystem(File),
    /// Answers what the test says, for tests of failures no real disk makes on demand.
    #[cfg(test)]
    Scripted(Box<dyn Fn() -> io::Result<()> + Send + Sync>),
}

/// See the module documentation.
pub(super) struct GroupSync {
    flush: Flush,
    state: Mutex<State>,
    done: Condvar,
}

impl GroupSync {
    /// Shares the directory's fsyncs.
    pub(super) fn directory(dir: &Path) -> Self {
        Self::new(Flush::Directory(dir.to_path_buf()))
    }

    /// Shares `syncfs(2)` of the filesystem holding `dir`.
    pub(super) fn filesystem(dir: &Path) -> io::Result<Self> {
        Ok(Self::new(Flush::Filesystem(File::open(dir)?)))
    }

    fn new(flush: Flush) -> Self {
        Self {
            flush,
            state: Mutex::new(State::default()),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters, consistent at every step: a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) -> io::Result<()> {
        match &self.flush {
            Flush::Directory(dir) => File::open(dir).and_then(|d| d.sync_all()),
            Flush::Filesystem(fd) => rustix::fs::syncfs(fd).map_err(io::Error::from),
            #[cfg(test)]
            Flush::Scripted(f) => f(),
        }
    }

    /// Flushes that failed so far. A write takes it before it writes its first byte and
    /// passes it to [`GroupSync::after_change_since`]: a `syncfs` that failed in between may
    /// have been about that write's bytes, and it reports an error only once.
    pub(super) fn epoch(&self) -> u64 {
        self.lock().failures
    }

    /// Returns once a flush started after this call has succeeded, so that everything
    /// changed before the call is durable. A failed directory fsync fails the waiter that
    /// ran it; the others run their own.
    pub(super) fn after_change(&self) -> io::Result<()> {
        self.wait(None)
    }

    /// [`GroupSync::after_change`] for a write that began when [`GroupSync::epoch`] was
    /// `epoch`: fails, naming the cause, if any flush failed since.
    pub(super) fn after_change_since(&self, epoch: u64) -> io::Result<()> {
        self.wait(Some(epoch))
    }

    fn wait(&self, epoch: Option<u64>) -> io::Result<()> {
        let failed_since = |state: &State| epoch.is_some_and(|e| state.failures != e);
        let failed = || {
            io::Error::other(
                "a flush of the store's filesystem (syncfs) failed while this shard was being \
                 written; its bytes may not be on the disk",
            )
        };
        let mut state = self.lock();
        state.taken += 1;
        let ticket = state.taken;
        loop {
            if failed_since(&state) {
                return Err(failed());
            }
            if state.synced >= ticket {
                return Ok(());
            }
            if state.running {
                // Bounded by the running flush: its end wakes every waiter.
                state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.running = true;
            state.syncs += 1;
            let covers = state.taken;
            drop(state);
            let result = self.run();
            state = self.lock();
            state.running = false;
            match &result {
                Ok(()) => state.synced = state.synced.max(covers),
                Err(_) => state.failures += 1,
            }
            self.done.notify_all();
            result?;
        }
    }

    /// Flushes started so far.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// A group whose flushes run `flush`, for tests.
    #[cfg(test)]
    pub(super) fn scripted(flush: impl Fn() -> io::Result<()> + Send + Sync + 'static) -> Self {
        Self::new(Flush::Scripted(Box::new(flush)))
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
        let sync = Arc::new(GroupSync::directory(dir.path()));
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
        let sync = GroupSync::directory(&gone);
        assert!(sync.after_change().is_err(), "the directory does not exist");
        std::fs::create_dir(&gone).unwrap();
        sync.after_change().unwrap();
        assert_eq!(
            sync.syncs(),
            2,
            "the failed sync was not taken as covering anything"
        );
    }

    /// A flush that waits for the test's go (`gate`), counting the flushes that ran; the
    /// first `fail_first` of them fail.
    fn gated(fail_first: u64) -> (Arc<GroupSync>, std::sync::mpsc::SyncSender<()>) {
        let (go, gate) = std::sync::mpsc::sync_channel::<()>(8);
        let gate = Mutex::new(gate);
        let ran = AtomicU64::new(0);
        let sync = GroupSync::scripted(move || {
            gate.lock().unwrap().recv().unwrap();
            if ran.fetch_add(1, Ordering::SeqCst) < fail_first {
                Err(io::Error::other("EIO from the disk"))
            } else {
                Ok(())
            }
        });
        (Arc::new(sync), go)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn taken(sync: &GroupSync) -> u64 {
        sync.lock().taken
    }

    #[test]
    fn a_write_waits_for_a_flush_that_began_after_it_not_for_the_one_running() {
        let (sync, go) = gated(0);
        let first = std::thread::spawn({
            let sync = Arc::clone(&sync);
            move || sync.after_change_since(0)
        });
        wait_for("the first flush to start", || sync.syncs() == 1);
        // This write arrives while a flush that began before it runs.
        let second = std::thread::spawn({
            let sync = Arc::clone(&sync);
            move || sync.after_change_since(0)
        });
        wait_for("the second write's ticket", || taken(&sync) == 2);
        go.send(()).unwrap();
        first.join().unwrap().unwrap();
        // The running flush ended, yet the second write is not acknowledged: it needs a
        // flush of its own, which it has started and which waits for the gate.
        wait_for("the second flush to start", || sync.syncs() == 2);
        assert!(!second.is_finished());
        go.send(()).unwrap();
        second.join().unwrap().unwrap();
        assert_eq!(sync.syncs(), 2);
    }

    #[test]
    fn a_failed_filesystem_flush_fails_every_write_under_way() {
        let (sync, go) = gated(1);
        let began = sync.epoch();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let sync = Arc::clone(&sync);
                std::thread::spawn(move || sync.after_change_since(began))
            })
            .collect();
        wait_for("the three tickets", || taken(&sync) == 3);
        go.send(()).unwrap();
        for w in waiters {
            let err = w.join().unwrap().unwrap_err();
            assert!(
                err.to_string().contains("EIO") || err.to_string().contains("syncfs"),
                "{err}"
            );
        }
        assert_eq!(
            sync.syncs(),
            1,
            "nobody retried the flush and took it as done"
        );
        // A write that began before the failure but waits only now fails too: the error was
        // reported once, to the failed flush, and may have been about its bytes.
        let late = sync.after_change_since(began).unwrap_err();
        assert!(late.to_string().contains("syncfs"), "{late}");
        // A write that began after the failure is made durable by the next flush.
        let fresh = sync.epoch();
        go.send(()).unwrap();
        sync.after_change_since(fresh).unwrap();
        assert_eq!(sync.syncs(), 2);
    }

    #[test]
    fn a_filesystem_flush_runs_syncfs() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::filesystem(dir.path()).unwrap();
        std::fs::write(dir.path().join("a"), b"bytes").unwrap();
        sync.after_change_since(sync.epoch()).unwrap();
        assert_eq!(sync.syncs(), 1);
        assert!(GroupSync::filesystem(&dir.path().join("missing")).is_err());
    }
}
