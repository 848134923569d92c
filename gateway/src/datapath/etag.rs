//! The ETag's MD5 of uploads, hashed in SIMD lanes shared by the uploads in flight.
//!
//! One MD5 stream is serial (about 2 ns a byte on a core), and every byte uploaded is hashed
//! for its ETag. Independent streams are not: `sublet-md5x` advances up to 16 of them in
//! lock-step in one vector register. [`Md5Lanes`] is the process's one meeting point: an
//! upload hands over each chunk it received ([`EtagMd5::update`]) and goes on receiving;
//! the chunk queues until its upload needs the state after it (its next chunk, or the
//! digest) or a kernel's worth of chunks is queued. Then whoever finds nobody hashing
//! becomes the *combiner* and hashes, at once and on its own thread, every queued chunk,
//! lanes in lock-step, a lane refilled as soon as its chunk is done. A lone upload therefore
//! never waits for company (it hashes its own chunk when it needs it, one lane, on the
//! scalar assembly code), and busy ones share lanes.
//!
//! Bounds: at most [`Kernel::lanes`] chunks in lanes, at most `max_queued` bytes queued (a
//! chunk that does not fit is hashed at once), and a combiner takes new chunks only until
//! it has hashed `turn` bytes, then hands what is queued to a blocking thread. Nothing waits
//! on a lock while hashing. An upload dropped with a chunk queued (the client went away)
//! takes it out of the queue; the combiner never awaits anyone.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use sublet_md5x::{BLOCK, Kernel, Lane, Md5, State, compress_lanes};
use tokio::sync::oneshot;

/// How many bytes a combiner hashes of each lane before it looks for new chunks to take
/// in: a chunk that arrives while another is hashed waits at most this long for a lane.
const STEP: usize = 16 * 1024;

/// Why an upload's MD5 could not be computed (the upload fails; nothing panics).
#[derive(Debug, thiserror::Error)]
pub enum EtagError {
    #[error("the MD5 of the upload was lost: the thread hashing it stopped ({0})")]
    Lost(&'static str),
}

/// Counters of what the lanes did (tests and the benchmark read them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LaneStats {
    /// Kernel calls.
    pub calls: u64,
    /// Lanes filled, summed over the calls (`lanes / calls` is the mean fill).
    pub lanes: u64,
    /// Bytes hashed in the lanes.
    pub bytes: u64,
    /// Chunks hashed by their own upload because the queue was full.
    pub overflow: u64,
    /// Times a combiner handed its queue to a blocking thread.
    pub handoffs: u64,
}

/// A chunk's whole blocks, waiting for or in a lane.
struct Job {
    state: State,
    data: Bytes,
    blocks: Range<usize>,
    done: oneshot::Sender<State>,
}

impl Job {
    fn remaining(&self) -> usize {
        self.blocks.len()
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    bytes: usize,
    /// Someone is hashing: new chunks queue and it will take them.
    combining: bool,
}

struct Shared {
    kernel: Kernel,
    max_queued: usize,
    turn: usize,
    queue: Mutex<Queue>,
    calls: AtomicU64,
    lanes: AtomicU64,
    bytes: AtomicU64,
    overflow: AtomicU64,
    handoffs: AtomicU64,
    /// The process's shared lanes ([`Md5Lanes::shared`]) also count into the gateway's
    /// metrics.
    exported: bool,
}

/// The lanes shared by the uploads of a process (see the module documentation).
#[derive(Clone)]
pub struct Md5Lanes {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Md5Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Md5Lanes")
            .field("kernel", &self.shared.kernel)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Md5Lanes {
    /// Lanes of `kernel` (one the CPU runs: else the scalar code), queueing at most
    /// `max_queued` bytes, a combiner taking in new chunks until it hashed `turn` bytes.
    pub fn new(kernel: Kernel, max_queued: usize, turn: usize) -> Self {
        let kernel = if kernel.available() {
            kernel
        } else {
            Kernel::Scalar
        };
        Self {
            shared: Arc::new(Shared {
                kernel,
                max_queued,
                turn: turn.max(STEP),
                queue: Mutex::new(Queue::default()),
                calls: AtomicU64::new(0),
                lanes: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                overflow: AtomicU64::new(0),
                handoffs: AtomicU64::new(0),
                exported: false,
            }),
        }
    }

    /// The process's lanes: the widest kernel of this CPU, 32 MiB queued at most, 8 MiB a
    /// turn.
    pub fn shared() -> &'static Md5Lanes {
        static LANES: OnceLock<Md5Lanes> = OnceLock::new();
        LANES.get_or_init(|| {
            let mut lanes = Md5Lanes::new(Kernel::detect(), 32 << 20, 8 << 20);
            if let Some(shared) = Arc::get_mut(&mut lanes.shared) {
                shared.exported = true;
            }
            lanes
        })
    }

    pub fn kernel(&self) -> Kernel {
        self.shared.kernel
    }

    pub fn stats(&self) -> LaneStats {
        let s = &self.shared;
        LaneStats {
            calls: s.calls.load(Ordering::Relaxed),
            lanes: s.lanes.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            overflow: s.overflow.load(Ordering::Relaxed),
            handoffs: s.handoffs.load(Ordering::Relaxed),
        }
    }

    /// A new upload's MD5.
    pub fn stream(&self) -> EtagMd5 {
        EtagMd5 {
            lanes: self.clone(),
            md5: Md5::new(),
            pending: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while the lock was held left the queue consistent (every change to it
        // is one statement): go on with it.
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `job` over. It queues (its upload goes on receiving) until its upload needs
    /// the state, or a kernel's worth of chunks is queued: then whoever finds nobody hashing
    /// hashes all of them together. A chunk that would pass the queue's bound is hashed at
    /// once: with the queue by this caller, or alone here when someone else is hashing.
    fn submit(&self, job: Job) {
        let mut q = self.lock();
        if q.bytes + job.remaining() > self.shared.max_queued {
            if q.combining {
                drop(q);
                self.shared.overflow.fetch_add(1, Ordering::Relaxed);
                let Job {
                    mut state,
                    data,
                    blocks,
                    done,
                } = job;
                sublet_md5x::compress(&mut state, &data[blocks]);
                let _ = done.send(state);
                return;
            }
            q.combining = true;
            drop(q);
            self.shared.overflow.fetch_add(1, Ordering::Relaxed);
            self.combine(Some(job));
            return;
        }
        q.bytes += job.remaining();
        q.jobs.push_back(job);
        if q.combining || q.jobs.len() < self.shared.kernel.lanes() {
            return;
        }
        q.combining = true;
        drop(q);
        self.combine(None);
    }

    /// Called by an upload that needs the state of a chunk it handed over: hashes the queue
    /// (that chunk with it) unless someone is hashing already, who then answers it.
    fn drain(&self) {
        let mut q = self.lock();
        if q.combining || q.jobs.is_empty() {
            return;
        }
        q.combining = true;
        drop(q);
        self.combine(None);
    }

    /// Forgets the queued chunks whose uploads went away.
    fn forget_abandoned(&self) {
        let mut q = self.lock();
        q.jobs.retain(|j| !j.done.is_closed());
        q.bytes = q.jobs.iter().map(Job::remaining).sum();
    }

    /// Hashes `first` and whatever is queued, lanes in lock-step, until nothing is left or
    /// this turn is over (then a blocking thread takes the rest). Never waits for anything
    /// but the queue's lock, which no one holds while hashing.
    fn combine(&self, first: Option<Job>) {
        // Whatever happens here (a panic included), `combining` is cleared or handed on,
        // and every job taken is answered or dropped (its upload then fails, never hangs).
        struct Turn<'a> {
            lanes: &'a Md5Lanes,
            done: bool,
        }
        impl Drop for Turn<'_> {
            fn drop(&mut self) {
                if !self.done {
                    let mut q = self.lanes.lock();
                    q.combining = false;
                    q.jobs.clear();
                    q.bytes = 0;
                }
            }
        }
        let mut turn = Turn {
            lanes: self,
            done: false,
        };
        let kernel = self.shared.kernel;
        let mut active: Vec<Job> = first.into_iter().collect();
        let mut hashed = 0usize;
        loop {
            {
                let mut q = self.lock();
                while active.len() < kernel.lanes() && hashed < self.shared.turn {
                    let Some(job) = q.jobs.pop_front() else { break };
                    q.bytes -= job.remaining();
                    // Its upload went away: nobody wants this state.
                    if !job.done.is_closed() {
                        active.push(job);
                    }
                }
                if active.is_empty() {
                    if q.jobs.is_empty() {
                        q.combining = false;
                        turn.done = true;
                        return;
                    }
                    // This turn is over and chunks still wait: a blocking thread takes
                    // them, `combining` stays set for it.
                    drop(q);
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        self.shared.handoffs.fetch_add(1, Ordering::Relaxed);
                        let handoff = Handoff(Some(self.clone()));
                        turn.done = true;
                        runtime.spawn_blocking(move || {
                            let mut handoff = handoff;
                            if let Some(lanes) = handoff.0.take() {
                                lanes.combine(None);
                            }
                        });
                        return;
                    }
                    hashed = 0;
                    continue;
                }
            }
            let blocks = active
                .iter()
                .map(|j| j.remaining() / BLOCK)
                .min()
                .unwrap_or(0)
                .min(STEP / BLOCK);
            let run = blocks * BLOCK;
            let mut lanes: Vec<Lane<'_>> = active
                .iter_mut()
                .map(|j| {
                    let start = j.blocks.start;
                    j.blocks.start += run;
                    Lane {
                        state: &mut j.state,
                        data: &j.data[start..start + run],
                    }
                })
                .collect();
            let n = lanes.len();
            if compress_lanes(kernel, &mut lanes).is_err() {
                // Cannot happen (equal whole blocks, at most the kernel's lanes, a kernel
                // checked at start): the jobs are dropped, their uploads fail.
                return;
            }
            hashed += run * n;
            let s = &self.shared;
            s.calls.fetch_add(1, Ordering::Relaxed);
            s.lanes.fetch_add(n as u64, Ordering::Relaxed);
            s.bytes.fetch_add((run * n) as u64, Ordering::Relaxed);
            if s.exported {
                crate::metrics::count_md5_lanes(n as u64, (run * n) as u64);
            }
            let mut i = 0;
            while i < active.len() {
                if active[i].blocks.is_empty() {
                    let job = active.swap_remove(i);
                    // Its upload went away meanwhile: nothing to tell.
                    let _ = job.done.send(job.state);
                } else {
                    i += 1;
                }
            }
        }
    }
}

/// The queue handed to a blocking thread: if that thread never runs it (the runtime is
/// shutting down), the queue is dropped and `combining` cleared, so uploads fail rather than
/// wait for ever.
struct Handoff(Option<Md5Lanes>);

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(lanes) = self.0.take() {
            let mut q = lanes.lock();
            q.combining = false;
            q.jobs.clear();
            q.bytes = 0;
        }
    }
}

/// One upload's MD5: chunks go in as they arrive, the digest comes out at the end.
pub struct EtagMd5 {
    lanes: Md5Lanes,
    md5: Md5,
    /// The state after the chunk handed over last, once it is hashed.
    pending: Option<oneshot::Receiver<State>>,
}

impl EtagMd5 {
    /// Hashes `chunk` after what came before. Needs this upload's previous chunk hashed
    /// first: hashes it (and whatever else is queued) itself when nobody is hashing, else
    /// waits for whoever is; never waits for other uploads to come along.
    pub async fn update(&mut self, chunk: Bytes) -> Result<(), EtagError> {
        self.settle().await?;
        let blocks = self.md5.split(&chunk);
        if blocks.is_empty() {
            return Ok(());
        }
        let (done, pending) = oneshot::channel();
        let job = Job {
            state: *self.md5.state_mut(),
            data: chunk,
            blocks,
            done,
        };
        self.pending = Some(pending);
        self.lanes.submit(job);
        Ok(())
    }

    /// The digest of everything updated.
    pub async fn finalize(mut self) -> Result<[u8; 16], EtagError> {
        self.settle().await?;
        Ok(std::mem::take(&mut self.md5).finalize())
    }

    async fn settle(&mut self) -> Result<(), EtagError> {
        use tokio::sync::oneshot::error::TryRecvError;
        let lost = EtagError::Lost("its chunk was dropped unhashed");
        if let Some(mut pending) = self.pending.take() {
            let state = match pending.try_recv() {
                Ok(state) => state,
                Err(TryRecvError::Closed) => return Err(lost),
                Err(TryRecvError::Empty) => {
                    self.lanes.drain();
                    pending.await.map_err(|_| lost)?
                }
            };
            *self.md5.state_mut() = state;
        }
        Ok(())
    }
}

impl Drop for EtagMd5 {
    fn drop(&mut self) {
        // Gone with a chunk still queued (the client went away): it leaves the queue now
        // rather than hold its bytes until the next upload hashes.
        if self.pending.take().is_some() {
            self.lanes.forget_abandoned();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use md5::Digest as _;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn message(seed: u64, len: usize) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random()).collect()
    }

    fn reference(data: &[u8]) -> [u8; 16] {
        md5::Md5::digest(data).into()
    }

    /// Holds the lanes busy, as a combiner elsewhere would: chunks submitted now queue.
    fn hold(lanes: &Md5Lanes) {
        lanes.lock().combining = true;
    }

    /// Runs the queued chunks as the combiner that [`hold`] pretended to be.
    fn release(lanes: &Md5Lanes) {
        lanes.combine(None);
    }

    #[tokio::test]
    async fn the_process_lanes_count_their_work_into_the_metrics() {
        let before = crate::metrics::md5_lanes("bytes");
        let calls = crate::metrics::md5_lanes("calls");
        let data = message(11, 64 * 1024);
        let mut md5 = Md5Lanes::shared().stream();
        md5.update(Bytes::from(data.clone())).await.unwrap();
        assert_eq!(md5.finalize().await.unwrap(), reference(&data));
        assert!(crate::metrics::md5_lanes("bytes") >= before + 64 * 1024);
        assert!(crate::metrics::md5_lanes("calls") > calls);
        // A private instance (as the tests use) does not.
        let own = Md5Lanes::new(Kernel::Scalar, 1 << 20, 1 << 20);
        assert!(!own.shared.exported);
    }

    #[tokio::test]
    async fn a_lone_upload_is_hashed_at_once_on_one_lane() {
        let lanes = Md5Lanes::new(Kernel::detect(), 1 << 20, 1 << 20);
        let m = message(1, 300_000);
        let mut md5 = lanes.stream();
        for piece in m.chunks(70_001) {
            md5.update(Bytes::copy_from_slice(piece)).await.unwrap();
            // Nobody else was there: its own call hashed it, nothing is left to wait for.
            use futures::FutureExt as _;
            md5.settle()
                .now_or_never()
                .expect("hashed already")
                .unwrap();
        }
        assert_eq!(md5.finalize().await.unwrap(), reference(&m));
        let stats = lanes.stats();
        assert_eq!(stats.lanes, stats.calls, "one lane a call: {stats:?}");
        assert!(!lanes.lock().combining);
    }

    #[tokio::test]
    async fn uploads_queued_together_run_in_lock_step_and_each_gets_its_digest() {
        for kernel in Kernel::all_available() {
            let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20);
            let messages: Vec<Vec<u8>> = (0..20)
                .map(|i| message(i, 1000 + i as usize * 7919))
                .collect();
            let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
            hold(&lanes);
            for (s, m) in streams.iter_mut().zip(&messages) {
                s.update(Bytes::copy_from_slice(m)).await.unwrap();
            }
            release(&lanes);
            for (i, (s, m)) in streams.into_iter().zip(&messages).enumerate() {
                assert_eq!(
                    s.finalize().await.unwrap(),
                    reference(m),
                    "{kernel:?}, upload {i}"
                );
            }
            let stats = lanes.stats();
            if kernel != Kernel::Scalar {
                assert!(
                    stats.lanes >= stats.calls * 2,
                    "{kernel:?}: lanes shared: {stats:?}"
                );
            }
            assert!(!lanes.lock().combining);
        }
    }

    #[tokio::test]
    async fn chunks_of_many_uploads_queue_until_one_needs_its_state_then_share_lanes() {
        let kernel = Kernel::detect();
        let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20);
        // Fewer than a full set of lanes, which would be hashed as soon as it is queued (8
        // is a full set for AVX2).
        let n = kernel.lanes().saturating_sub(1).clamp(2, 8);
        let messages: Vec<Vec<u8>> = (0..n as u64).map(|i| message(i, 64 * 1024)).collect();
        let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
        for (s, m) in streams.iter_mut().zip(&messages) {
            s.update(Bytes::copy_from_slice(m)).await.unwrap();
        }
        if kernel != Kernel::Scalar {
            assert_eq!(lanes.stats().calls, 0, "queued, nothing hashed yet");
        }
        for (s, m) in streams.into_iter().zip(&messages) {
            assert_eq!(s.finalize().await.unwrap(), reference(m));
        }
        let stats = lanes.stats();
        if kernel != Kernel::Scalar {
            assert_eq!(
                stats.lanes,
                stats.calls * n as u64,
                "all {n} in every call: {stats:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_set_of_lanes_is_hashed_as_soon_as_it_is_queued() {
        let kernel = Kernel::detect();
        let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20);
        let mut streams: Vec<EtagMd5> = (0..kernel.lanes()).map(|_| lanes.stream()).collect();
        for s in streams.iter_mut() {
            s.update(Bytes::from(vec![7u8; 4096])).await.unwrap();
        }
        assert!(
            lanes.lock().jobs.is_empty(),
            "the last one in hashed them all"
        );
        assert_eq!(
            lanes.stats().lanes,
            lanes.stats().calls * kernel.lanes() as u64
        );
    }

    #[tokio::test]
    async fn an_upload_dropped_with_a_chunk_queued_leaves_nothing_waiting() {
        let lanes = Md5Lanes::new(Kernel::detect(), 1 << 20, 1 << 20);
        let gone = message(1, 100_000);
        let kept = message(2, 100_000);
        let mut a = lanes.stream();
        let mut b = lanes.stream();
        hold(&lanes);
        a.update(Bytes::from(gone)).await.unwrap();
        b.update(Bytes::copy_from_slice(&kept)).await.unwrap();
        drop(a);
        assert_eq!(
            lanes.lock().jobs.len(),
            1,
            "its chunk left the queue with it"
        );
        release(&lanes);
        assert_eq!(b.finalize().await.unwrap(), reference(&kept));
        let q = lanes.lock();
        assert!(!q.combining && q.jobs.is_empty() && q.bytes == 0);
    }

    #[tokio::test]
    async fn a_chunk_past_the_queue_bound_is_hashed_by_its_own_upload() {
        let lanes = Md5Lanes::new(Kernel::detect(), 64 * 1024, 1 << 20);
        let messages: Vec<Vec<u8>> = (0..4).map(|i| message(i, 40_000)).collect();
        let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
        hold(&lanes);
        for (s, m) in streams.iter_mut().zip(&messages) {
            s.update(Bytes::copy_from_slice(m)).await.unwrap();
        }
        assert!(lanes.lock().bytes <= 64 * 1024, "the queue stays bounded");
        assert_eq!(lanes.stats().overflow, 3, "three of four did not fit");
        assert_eq!(
            lanes.lock().jobs.len(),
            1,
            "one queued, the others hashed at once"
        );
        release(&lanes);
        for (s, m) in streams.into_iter().zip(&messages) {
            assert_eq!(s.finalize().await.unwrap(), reference(m));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_combiner_past_its_turn_hands_the_queue_on() {
        // A turn of one step: the queued chunks go to a blocking thread.
        let lanes = Md5Lanes::new(Kernel::detect(), 64 << 20, STEP);
        let messages: Vec<Vec<u8>> = (0..40).map(|i| message(i, 200_000)).collect();
        let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
        hold(&lanes);
        for (s, m) in streams.iter_mut().zip(&messages) {
            s.update(Bytes::copy_from_slice(m)).await.unwrap();
        }
        release(&lanes);
        for (s, m) in streams.into_iter().zip(&messages) {
            let digest = tokio::time::timeout(std::time::Duration::from_secs(20), s.finalize())
                .await
                .expect("hashed in time")
                .unwrap();
            assert_eq!(digest, reference(m));
        }
        assert!(lanes.stats().handoffs >= 1, "{:?}", lanes.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_uploads_in_random_pieces_each_get_their_digest() {
        let lanes = Md5Lanes::new(Kernel::detect(), 1 << 20, 1 << 20);
        let tasks: Vec<_> = (0..16u64)
            .map(|i| {
                let lanes = lanes.clone();
                tokio::spawn(async move {
                    let m = message(100 + i, 50_000 * (i as usize % 5) + 17 * i as usize);
                    let mut rng = rand::rngs::StdRng::seed_from_u64(i);
                    let mut md5 = lanes.stream();
                    let mut rest = &m[..];
                    while !rest.is_empty() {
                        let n = rng.random_range(1..=40_000).min(rest.len());
                        md5.update(Bytes::copy_from_slice(&rest[..n]))
                            .await
                            .unwrap();
                        rest = &rest[n..];
                        tokio::task::yield_now().await;
                    }
                    (md5.finalize().await.unwrap(), reference(&m))
                })
            })
            .collect();
        for t in tasks {
            let (got, want) = t.await.unwrap();
            assert_eq!(got, want);
        }
        assert!(!lanes.lock().combining);
    }
}
