//! The ETag's MD5 of uploads, hashed in SIMD lanes shared by the uploads in flight.
//!
//! One MD5 stream is serial (about 2 ns a byte on a core), and every byte uploaded is hashed
//! for its ETag. Independent streams are not: `sublet-md5x` advances up to 16 of them in
//! lock-step in one vector register. [`Md5Lanes`] is the process's one meeting point: an
//! upload hands over each chunk it received ([`EtagMd5::update`]) and goes on receiving.
//! Its chunks queue as one *chain*: nothing needs the state between them, a lane hashes the
//! chain in order. An upload asks for its digest as late as it can (a PUT: after its shards
//! are stored, before the metadata commit), so the chains of uploads whose bodies arrived
//! apart in time are still queued together then. Chains are hashed when their upload wants
//! the digest ([`EtagMd5::finalize`]), when a kernel's worth of chains is queued, or when
//! the queue reaches its byte bound. Whoever then finds nobody hashing becomes the
//! *combiner* and hashes, on its own thread, the chains wanted and every other queued one
//! riding along, lanes in lock-step, a lane refilled as soon as its chain is done; it stops
//! once nobody waits and the lanes could not be filled, handing the chains it had not
//! finished back to the queue. A lone upload therefore never waits for company (it hashes
//! its own chain when it needs the digest: one lane, the scalar assembly code), and busy
//! ones share lanes.
//!
//! Bounds: at most [`Kernel::lanes`] chains in lanes; at most `max_queued` bytes of chunks
//! held until hashed (queued or in a lane: the memory this costs). A chunk that does not fit
//! makes its upload hash its own chain first, then the queue down to half the bound, and if
//! it still does not fit the chunk is hashed at once by its upload alone. A combiner hashes
//! at most `turn` bytes, then hands what is left to a blocking thread. Nothing waits on a
//! lock while hashing. An upload dropped with chunks queued (the client went away) takes
//! its chain out of the queue (out of a lane: the combiner drops it at its next step); the
//! combiner never awaits anyone.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Buf as _, Bytes};
use sublet_md5x::{BLOCK, INIT, Kernel, Lane, Md5, State, compress_lanes};
use tokio::sync::oneshot;

/// How many bytes a combiner hashes of each lane before it looks for new chains to take
/// in: a chain wanted while others are hashed waits at most this long for a lane.
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
    /// Chunks hashed by their own upload alone because the queue was full.
    pub overflow: u64,
    /// Times a combiner handed its queue to a blocking thread.
    pub handoffs: u64,
}

/// One upload's queued chunks: whole blocks, hashed in order after `state`.
struct Chain {
    /// The state after what was hashed so far; `None` while a combiner holds the chain in a
    /// lane (or its upload hashes a chunk alone).
    state: Option<State>,
    /// Chunks (whole blocks each) waiting, in order.
    segments: VecDeque<Bytes>,
    /// Its upload waits for every chunk hashed (the digest, or room in the queue).
    waiter: Option<oneshot::Sender<State>>,
}

#[derive(Default)]
struct Queue {
    chains: HashMap<u64, Chain>,
    /// The chains with segments queued and not in a lane, wanted ones first: exactly those.
    ready: VecDeque<u64>,
    /// Bytes of chunks held until hashed: queued, or in a lane not hashed yet.
    bytes: usize,
    /// Chains whose upload waits ([`Chain::waiter`]).
    wanted: usize,
    /// The queue passed its bound: hash until it is back under half of it.
    draining: bool,
    /// Someone is hashing: chains wanted now are taken by it.
    combining: bool,
    next_id: u64,
}

impl Queue {
    /// Whether a combiner with `active` lanes going should go on: someone waits, the queue
    /// is over its bound, or the lanes can be filled.
    fn keep_going(&self, active: usize, lanes: usize) -> bool {
        self.wanted > 0 || self.draining || active + self.ready.len() >= lanes
    }

    /// Forgets everything: a combiner stopped half-way (a panic, a handoff the runtime never
    /// ran). The uploads then fail with [`EtagError::Lost`] rather than wait for ever.
    fn lose_everything(&mut self) {
        self.chains.clear();
        self.ready.clear();
        self.bytes = 0;
        self.wanted = 0;
        self.draining = false;
        self.combining = false;
    }

    /// A chain goes back to the queue with `state` and `rest`, its segments not hashed yet
    /// (in front of any queued meanwhile); answers its upload if it waits and nothing is
    /// left. A chain whose upload went away is dropped.
    fn give_back(&mut self, id: u64, state: State, rest: VecDeque<Bytes>, unhashed: usize) {
        let Some(chain) = self.chains.get_mut(&id) else {
            self.bytes -= unhashed;
            return;
        };
        chain.state = Some(state);
        if !rest.is_empty() {
            let newer = std::mem::replace(&mut chain.segments, rest);
            chain.segments.extend(newer);
        }
        if !chain.segments.is_empty() {
            if chain.waiter.is_some() {
                self.ready.push_front(id);
            } else {
                self.ready.push_back(id);
            }
        } else if let Some(waiter) = chain.waiter.take() {
            self.wanted -= 1;
            // Its upload went away meanwhile: nothing to tell.
            let _ = waiter.send(state);
        }
    }
}

/// A chain in a lane: the combiner's own copy of its state and segments.
struct Active {
    id: u64,
    state: State,
    segments: VecDeque<Bytes>,
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
    /// Lanes of `kernel` (one the CPU runs: else the scalar code), holding at most
    /// `max_queued` bytes of chunks until hashed, a combiner hashing at most `turn` bytes.
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

    /// The process's lanes: the widest kernel of this CPU, 32 MiB of chunks held at most,
    /// 8 MiB a turn.
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
        let mut q = self.lock();
        let id = q.next_id;
        q.next_id += 1;
        q.chains.insert(
            id,
            Chain {
                state: Some(INIT),
                segments: VecDeque::new(),
                waiter: None,
            },
        );
        drop(q);
        EtagMd5 {
            lanes: self.clone(),
            id,
            partial: [0; BLOCK],
            filled: 0,
            hashed: 0,
            finished: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while the lock was held left the queue consistent (every change to it
        // is made whole before anything that could panic): go on with it.
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the caller the combiner if nobody is, and hashes; else leaves the work to the
    /// one hashing (who sees whatever the caller changed under the lock).
    fn combine_unless_combining(&self, mut q: std::sync::MutexGuard<'_, Queue>) {
        if q.combining {
            return;
        }
        q.combining = true;
        drop(q);
        self.combine();
    }

    /// Hashes the queued chains, lanes in lock-step, while [`Queue::keep_going`] says so
    /// and this turn lasts (then a blocking thread takes over). Never waits for anything but
    /// the queue's lock, which no one holds while hashing.
    fn combine(&self) {
        // Whatever happens here (a panic included), `combining` is cleared or handed on,
        // and every chain taken is answered or forgotten (its upload then fails, never hangs).
        struct Turn<'a> {
            lanes: &'a Md5Lanes,
            done: bool,
        }
        impl Drop for Turn<'_> {
            fn drop(&mut self) {
                if !self.done {
                    self.lanes.lock().lose_everything();
                }
            }
        }
        let mut turn = Turn {
            lanes: self,
            done: false,
        };
        let kernel = self.shared.kernel;
        let width = kernel.lanes();
        let mut active: Vec<Active> = Vec::with_capacity(width);
        let mut hashed = 0usize;
        // Hashed since the queue's byte count was last brought down.
        let mut uncounted = 0usize;
        loop {
            {
                let mut q = self.lock();
                q.bytes -= uncounted;
                uncounted = 0;
                if q.draining && q.bytes <= self.shared.max_queued / 2 {
                    q.draining = false;
                }
                let over = hashed >= self.shared.turn;
                // Lanes that ran out take what their upload queued meanwhile (within the
                // turn), else go back.
                let mut i = 0;
                while i < active.len() {
                    if !q.chains.contains_key(&active[i].id) {
                        // Its upload went away: nobody wants this state.
                        let gone = active.swap_remove(i);
                        q.bytes -= gone.segments.iter().map(Bytes::len).sum::<usize>();
                        continue;
                    }
                    if !active[i].segments.is_empty() {
                        i += 1;
                        continue;
                    }
                    let id = active[i].id;
                    let more = match q.chains.get_mut(&id) {
                        Some(chain) if !over && !chain.segments.is_empty() => {
                            Some(std::mem::take(&mut chain.segments))
                        }
                        _ => None,
                    };
                    if let Some(more) = more {
                        active[i].segments = more;
                        i += 1;
                    } else {
                        let lane = active.swap_remove(i);
                        q.give_back(lane.id, lane.state, VecDeque::new(), 0);
                    }
                }
                let going = !over && q.keep_going(active.len(), width);
                if going {
                    while active.len() < width {
                        let Some(id) = q.ready.pop_front() else { break };
                        let Some(chain) = q.chains.get_mut(&id) else {
                            continue;
                        };
                        let Some(state) = chain.state.take() else {
                            continue;
                        };
                        let segments = std::mem::take(&mut chain.segments);
                        active.push(Active {
                            id,
                            state,
                            segments,
                        });
                    }
                } else {
                    // Nobody waits and the lanes would not be full (or the turn is over):
                    // the chains half-hashed go back, to meet others later.
                    for lane in active.drain(..) {
                        let unhashed = lane.segments.iter().map(Bytes::len).sum();
                        q.give_back(lane.id, lane.state, lane.segments, unhashed);
                    }
                }
                if active.is_empty() {
                    if !over || !q.keep_going(0, width) {
                        q.combining = false;
                        turn.done = true;
                        return;
                    }
                    // This turn is over and chains are still wanted: a blocking thread
                    // takes them, `combining` stays set for it.
                    drop(q);
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        self.shared.handoffs.fetch_add(1, Ordering::Relaxed);
                        let handoff = Handoff(Some(self.clone()));
                        turn.done = true;
                        runtime.spawn_blocking(move || {
                            let mut handoff = handoff;
                            if let Some(lanes) = handoff.0.take() {
                                lanes.combine();
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
                .map(|a| a.segments.front().map_or(0, Bytes::len) / BLOCK)
                .min()
                .unwrap_or(0)
                .min(STEP / BLOCK);
            let run = blocks * BLOCK;
            let n = active.len();
            {
                let mut lanes: Vec<Lane<'_>> = active
                    .iter_mut()
                    .filter_map(|a| {
                        let data = a.segments.front()?;
                        Some(Lane {
                            state: &mut a.state,
                            data: &data[..run],
                        })
                    })
                    .collect();
                if run == 0 || lanes.len() != n || compress_lanes(kernel, &mut lanes).is_err() {
                    // Cannot happen (segments are non-empty whole blocks, at most the
                    // kernel's lanes, a kernel checked at start): the chains are forgotten,
                    // their uploads fail.
                    return;
                }
            }
            for a in active.iter_mut() {
                if let Some(front) = a.segments.front_mut() {
                    front.advance(run);
                    if front.is_empty() {
                        a.segments.pop_front();
                    }
                }
            }
            hashed += run * n;
            uncounted += run * n;
            let s = &self.shared;
            s.calls.fetch_add(1, Ordering::Relaxed);
            s.lanes.fetch_add(n as u64, Ordering::Relaxed);
            s.bytes.fetch_add((run * n) as u64, Ordering::Relaxed);
            if s.exported {
                crate::metrics::count_md5_lanes(n as u64, (run * n) as u64);
            }
        }
    }
}

/// The queue handed to a blocking thread: if that thread never runs it (the runtime is
/// shutting down), the queue is forgotten and `combining` cleared, so uploads fail rather
/// than wait for ever.
struct Handoff(Option<Md5Lanes>);

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(lanes) = self.0.take() {
            lanes.lock().lose_everything();
        }
    }
}

/// An upload's chain left the queue before it was hashed (a bug, or a panic while hashing).
fn chain_lost() -> EtagError {
    EtagError::Lost("its chain was dropped unhashed")
}

/// One upload's MD5: chunks go in as they arrive, the digest comes out at the end.
pub struct EtagMd5 {
    lanes: Md5Lanes,
    /// Its chain in the queue.
    id: u64,
    /// The bytes after the last whole block handed over, waiting for the rest of it.
    partial: [u8; BLOCK],
    filled: usize,
    /// Bytes handed over as whole blocks.
    hashed: u64,
    /// [`EtagMd5::finalize`] took its chain out of the queue.
    finished: bool,
}

impl EtagMd5 {
    /// Hashes `chunk` after what came before: queues its whole blocks on this upload's
    /// chain and goes on, unless the queue is full (see the module documentation). Never
    /// waits for other uploads to come along.
    pub async fn update(&mut self, chunk: Bytes) -> Result<(), EtagError> {
        let mut rest = chunk;
        if self.filled > 0 {
            let take = (BLOCK - self.filled).min(rest.len());
            self.partial[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            rest.advance(take);
            if self.filled < BLOCK {
                return Ok(());
            }
            self.filled = 0;
            // The block across two chunks: a copy of its own in the chain.
            self.push(Bytes::copy_from_slice(&self.partial)).await?;
        }
        let whole = rest.len() / BLOCK * BLOCK;
        let tail = rest.split_off(whole);
        self.partial[..tail.len()].copy_from_slice(&tail);
        self.filled = tail.len();
        if !rest.is_empty() {
            self.push(rest).await?;
        }
        Ok(())
    }

    /// Queues `blocks` (whole blocks) on this upload's chain.
    async fn push(&mut self, blocks: Bytes) -> Result<(), EtagError> {
        let len = blocks.len();
        self.hashed += len as u64;
        let max = self.lanes.shared.max_queued;
        let width = self.lanes.shared.kernel.lanes();
        let fits = |q: &Queue| q.bytes + len <= max;
        let own_queued = {
            let q = self.lanes.lock();
            (!fits(&q)).then(|| {
                q.chains
                    .get(&self.id)
                    .is_none_or(|c| c.state.is_none() || !c.segments.is_empty())
            })
        };
        if let Some(own_queued) = own_queued {
            // Full: this upload's own chain first (with whatever rides along), then the
            // queue down to half its bound; a chunk that still does not fit is hashed here.
            if own_queued {
                self.settle().await?;
            }
            let q = self.lanes.lock();
            if !fits(&q) && !q.combining && q.bytes > 0 {
                let mut q = q;
                q.draining = true;
                self.lanes.combine_unless_combining(q);
            } else {
                drop(q);
            }
            let mut q = self.lanes.lock();
            if !fits(&q) {
                let mut state = q
                    .chains
                    .get_mut(&self.id)
                    .and_then(|c| c.state.take())
                    .ok_or_else(chain_lost)?;
                drop(q);
                self.lanes.shared.overflow.fetch_add(1, Ordering::Relaxed);
                sublet_md5x::compress(&mut state, &blocks);
                let mut q = self.lanes.lock();
                let chain = q.chains.get_mut(&self.id).ok_or_else(chain_lost)?;
                chain.state = Some(state);
                return Ok(());
            }
            drop(q);
        }
        let mut q = self.lanes.lock();
        let Some(chain) = q.chains.get_mut(&self.id) else {
            return Err(chain_lost());
        };
        let newly_ready = chain.state.is_some() && chain.segments.is_empty();
        chain.segments.push_back(blocks);
        q.bytes += len;
        if newly_ready {
            q.ready.push_back(self.id);
        }
        if q.ready.len() >= width {
            self.lanes.combine_unless_combining(q);
        }
        Ok(())
    }

    /// Waits until every chunk handed over is hashed and returns the state after them:
    /// hashes the queue itself (this chain first) when nobody is hashing, else waits for
    /// whoever is.
    async fn settle(&mut self) -> Result<State, EtagError> {
        let done = {
            let mut q = self.lanes.lock();
            let id = self.id;
            let chain = q.chains.get_mut(&id).ok_or_else(chain_lost)?;
            if let Some(state) = chain.state
                && chain.segments.is_empty()
            {
                return Ok(state);
            }
            let (waiter, done) = oneshot::channel();
            let first = chain.waiter.replace(waiter).is_none();
            let queued = chain.state.is_some();
            if first {
                q.wanted += 1;
            }
            if queued && let Some(at) = q.ready.iter().position(|r| *r == id) {
                q.ready.remove(at);
                q.ready.push_front(id);
            }
            self.lanes.combine_unless_combining(q);
            done
        };
        done.await.map_err(|_| chain_lost())
    }

    /// The digest of everything updated. Hashes this upload's queued chunks (with the other
    /// uploads' riding along in the lanes) if nobody has yet.
    pub async fn finalize(mut self) -> Result<[u8; 16], EtagError> {
        let state = self.settle().await?;
        self.finished = true;
        self.forget();
        let mut md5 = Md5::resume(state, self.hashed)
            .ok_or(EtagError::Lost("whole blocks were not whole"))?;
        md5.update(&self.partial[..self.filled]);
        Ok(md5.finalize())
    }

    /// Takes this upload's chain out of the queue (out of a lane: the combiner drops it).
    fn forget(&self) {
        let mut q = self.lanes.lock();
        if let Some(chain) = q.chains.remove(&self.id) {
            let queued: usize = chain.segments.iter().map(Bytes::len).sum();
            q.bytes -= queued;
            if chain.waiter.is_some() {
                q.wanted -= 1;
            }
            if chain.state.is_some() && !chain.segments.is_empty() {
                q.ready.retain(|r| *r != self.id);
            }
        }
    }
}

impl Drop for EtagMd5 {
    fn drop(&mut self) {
        // Gone with chunks still queued (the client went away): they leave the queue now
        // rather than hold their bytes until the next upload hashes.
        if !self.finished {
            self.forget();
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
        lanes.combine();
    }

    /// The queue holds nothing and nobody hashes.
    fn assert_empty(lanes: &Md5Lanes) {
        let q = lanes.lock();
        assert!(
            !q.combining && q.ready.is_empty() && q.bytes == 0 && q.wanted == 0 && !q.draining,
            "combining {}, {} ready, {} bytes, {} wanted",
            q.combining,
            q.ready.len(),
            q.bytes,
            q.wanted
        );
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
    async fn a_lone_upload_queues_its_chain_and_hashes_it_alone_for_its_digest() {
        let kernel = Kernel::detect();
        let lanes = Md5Lanes::new(kernel, 1 << 20, 1 << 20);
        let m = message(1, 300_000);
        let mut md5 = lanes.stream();
        for piece in m.chunks(70_001) {
            md5.update(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        if kernel != Kernel::Scalar {
            // Nothing needs the state between its chunks: all of them wait for company.
            assert_eq!(lanes.stats().calls, 0);
            assert_eq!(lanes.lock().bytes, 300_000 / 64 * 64);
        }
        // Asked for its digest with nobody else there: its own call hashes, one lane.
        use futures::FutureExt as _;
        let digest = md5.finalize().now_or_never().expect("hashed at once");
        assert_eq!(digest.unwrap(), reference(&m));
        let stats = lanes.stats();
        assert_eq!(stats.lanes, stats.calls, "one lane a call: {stats:?}");
        assert_empty(&lanes);
    }

    /// Sizes that are not whole blocks, none, one byte; chunks of one byte to many blocks.
    const SIZES: [usize; 9] = [0, 1, 63, 64, 65, 127, 1000, 64 * 1024 + 3, 300_001];

    #[tokio::test]
    async fn chains_of_many_uploads_hashed_in_lanes_equal_md5() {
        for kernel in Kernel::all_available() {
            let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20);
            let messages: Vec<Vec<u8>> = SIZES
                .iter()
                .enumerate()
                .map(|(i, &len)| message(i as u64, len))
                .collect();
            let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            // The uploads' chunks interleaved, in random pieces (1 byte to 20 000).
            let mut offsets = vec![0usize; messages.len()];
            while offsets.iter().zip(&messages).any(|(o, m)| *o < m.len()) {
                for (i, m) in messages.iter().enumerate() {
                    if offsets[i] < m.len() {
                        let n = rng.random_range(1..=20_000).min(m.len() - offsets[i]);
                        let piece = Bytes::copy_from_slice(&m[offsets[i]..offsets[i] + n]);
                        streams[i].update(piece).await.unwrap();
                        offsets[i] += n;
                    }
                }
            }
            if kernel == Kernel::Avx512 {
                // Fewer chains than lanes: nothing hashed until a digest is wanted.
                assert_eq!(lanes.stats().calls, 0, "{kernel:?}");
            }
            // The digests wanted from the longest upload down: the first one's turn hashes
            // the others' chains alongside.
            for (i, (s, m)) in streams.into_iter().zip(&messages).enumerate().rev() {
                assert_eq!(
                    s.finalize().await.unwrap(),
                    reference(m),
                    "{kernel:?}, {} bytes",
                    SIZES[i]
                );
            }
            let stats = lanes.stats();
            if kernel != Kernel::Scalar {
                // Six chains of whole blocks, one of them 300 kB alone at the end.
                assert!(
                    stats.lanes > stats.calls,
                    "{kernel:?}: lanes shared: {stats:?}"
                );
            }
            assert_empty(&lanes);
        }
    }

    #[tokio::test]
    async fn whole_bodies_queued_apart_meet_in_full_lanes_when_their_digests_are_wanted() {
        // The PUT's pattern: every upload's body arrived and queued, then each asks for its
        // digest once its shards are stored; the first of them hashes them all.
        let kernel = Kernel::detect();
        if kernel == Kernel::Scalar {
            return;
        }
        let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20);
        let n = kernel.lanes() - 1;
        let messages: Vec<Vec<u8>> = (0..n as u64).map(|i| message(i, 256 * 1024)).collect();
        let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
        for (s, m) in streams.iter_mut().zip(&messages) {
            for piece in m.chunks(16 * 1024 + 5) {
                s.update(Bytes::copy_from_slice(piece)).await.unwrap();
            }
        }
        assert_eq!(lanes.stats().calls, 0, "all queued");
        let mut streams = streams.into_iter().zip(&messages);
        let (first, m) = streams.next().unwrap();
        assert_eq!(first.finalize().await.unwrap(), reference(m));
        let stats = lanes.stats();
        assert_eq!(
            stats.bytes,
            (n * 256 * 1024) as u64,
            "the first digest hashed every chain: {stats:?}"
        );
        assert!(
            stats.lanes * 10 >= stats.calls * n as u64 * 9,
            "lanes at least 90% full: {stats:?}"
        );
        for (s, m) in streams {
            assert_eq!(s.finalize().await.unwrap(), reference(m));
        }
        assert_eq!(lanes.stats().calls, stats.calls, "nothing was left to hash");
        assert_empty(&lanes);
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
            lanes.lock().ready.is_empty() && lanes.lock().bytes == 0,
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
            lanes.lock().ready.len(),
            1,
            "its chain left the queue with it"
        );
        assert_eq!(lanes.lock().bytes, 100_000 / 64 * 64);
        release(&lanes);
        assert_eq!(b.finalize().await.unwrap(), reference(&kept));
        assert_empty(&lanes);
    }

    #[tokio::test]
    async fn an_upload_dropped_while_its_chain_is_in_a_lane_is_dropped_from_the_lane() {
        let kernel = Kernel::detect();
        if kernel == Kernel::Scalar {
            return;
        }
        // Upload `a` wants its digest and is hashed in a lane with `b`, whose client goes
        // away mid-chain: a turn of one step lets the test drop `b` between steps.
        let lanes = Md5Lanes::new(kernel, 64 << 20, STEP);
        let (long, gone) = (message(1, 10 * STEP), message(2, 8 * STEP));
        let mut a = lanes.stream();
        let mut b = lanes.stream();
        hold(&lanes);
        a.update(Bytes::copy_from_slice(&long)).await.unwrap();
        b.update(Bytes::from(gone)).await.unwrap();
        // `a` is wanted; one turn of the combiner takes both chains into lanes.
        let (waiter, done) = oneshot::channel();
        {
            let mut q = lanes.lock();
            q.chains.get_mut(&a.id).unwrap().waiter = Some(waiter);
            q.wanted += 1;
            q.combining = false;
        }
        {
            let q = lanes.lock();
            lanes.combine_unless_combining(q);
        }
        // No runtime handle outside a task would hash on; here the turn was handed on
        // to a blocking thread after one step of both lanes.
        drop(b);
        let state = tokio::time::timeout(std::time::Duration::from_secs(20), done)
            .await
            .expect("hashed in time")
            .unwrap();
        a.finished = true;
        a.forget();
        let mut md5 = Md5::resume(state, a.hashed).unwrap();
        md5.update(&a.partial[..a.filled]);
        assert_eq!(md5.finalize(), reference(&long));
        // `b`'s chain, in a lane or queued when it went, holds nothing any more.
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while lanes.lock().combining {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the combiner stopped");
        assert_empty(&lanes);
        assert!(
            lanes.stats().bytes < (10 * STEP + 8 * STEP) as u64,
            "{:?}",
            lanes.stats()
        );
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
            lanes.lock().ready.len(),
            1,
            "one queued, the others hashed at once"
        );
        release(&lanes);
        for (s, m) in streams.into_iter().zip(&messages) {
            assert_eq!(s.finalize().await.unwrap(), reference(m));
        }
    }

    #[tokio::test]
    async fn a_full_queue_makes_an_upload_hash_its_chain_and_the_queue_down_to_half() {
        let kernel = Kernel::detect();
        let max = 256 * 1024;
        let lanes = Md5Lanes::new(kernel, max, 64 << 20);
        let messages: Vec<Vec<u8>> = (0..3).map(|i| message(i, 200_000)).collect();
        let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
        for (s, m) in streams.iter_mut().zip(&messages) {
            for piece in m.chunks(10_000) {
                s.update(Bytes::copy_from_slice(piece)).await.unwrap();
                let q = lanes.lock();
                assert!(q.bytes <= max, "{} bytes held", q.bytes);
                assert!(!q.combining && !q.draining);
            }
        }
        if kernel != Kernel::Scalar {
            let stats = lanes.stats();
            assert!(stats.bytes > 0, "the bound was reached: {stats:?}");
            assert_eq!(
                stats.overflow, 0,
                "every chunk queued in the end: {stats:?}"
            );
            assert!(lanes.lock().bytes <= max / 2 + 200_000);
        }
        for (s, m) in streams.into_iter().zip(&messages) {
            assert_eq!(s.finalize().await.unwrap(), reference(m));
        }
        assert_empty(&lanes);
    }

    #[tokio::test]
    async fn a_chunk_larger_than_the_bound_is_hashed_by_its_upload_after_its_chain() {
        let lanes = Md5Lanes::new(Kernel::detect(), 64 * 1024, 1 << 20);
        let m = message(3, 300_000);
        let mut md5 = lanes.stream();
        md5.update(Bytes::copy_from_slice(&m[..1000]))
            .await
            .unwrap();
        md5.update(Bytes::copy_from_slice(&m[1000..]))
            .await
            .unwrap();
        assert!(lanes.stats().overflow >= 1);
        assert_eq!(md5.finalize().await.unwrap(), reference(&m));
        assert_empty(&lanes);
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
        assert_empty(&lanes);
    }
}
