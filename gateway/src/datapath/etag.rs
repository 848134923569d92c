//! The ETag's MD5 of uploads, hashed in SIMD lanes shared by the uploads in flight.
//!
//! One MD5 stream is serial (about 2 ns a byte on a core), and every byte uploaded is hashed
//! for its ETag. Independent streams are not: `sublet-md5x` advances up to 16 of them in
//! lock-step in one vector register. [`Md5Lanes`] is the process's one meeting point: an
//! upload hands over the whole blocks of each chunk it received ([`EtagMd5::update`]) and
//! goes on receiving, without waiting for its earlier chunks to be hashed: they queue behind
//! each other under the upload. Once `gather` bytes are queued (or a kernel's worth of
//! uploads have blocks waiting, or an upload needs its digest), whoever finds nobody hashing
//! becomes the *combiner*: it hashes, on its own thread, the queued blocks of up to
//! [`Kernel::lanes`] uploads in lock-step lanes, and a lane whose blocks are done carries on
//! with whatever its upload handed over meanwhile before it gives the lane to the next
//! upload waiting. Lanes therefore stay full while uploads keep arriving, whatever the sizes
//! of the chunks the sockets deliver. A lone upload never waits for company: its blocks wait
//! until `gather` bytes are queued or until it asks for its digest, and then it hashes them
//! itself, one lane, on the scalar assembly code.
//!
//! Bounds: at most [`Kernel::lanes`] uploads in lanes, at most `max_queued` bytes queued (an
//! upload whose chunk would pass it waits until its own blocks are hashed, then hashes that
//! chunk itself), and a combiner takes in new work only until it has hashed `turn` bytes,
//! then hands what is queued to a blocking thread. Nothing waits on a lock while hashing. An
//! upload dropped with blocks queued (the client went away) takes them out of the queue;
//! the combiner never awaits anyone.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Buf as _, Bytes};
use sublet_md5x::{BLOCK, INIT, Kernel, Lane, Md5, State, compress_lanes};
use tokio::sync::oneshot;

/// How many bytes a combiner hashes of each lane before it looks again at the queue: an
/// upload that arrives while others are hashed waits at most this long for a free lane.
const STEP: usize = 16 * 1024;

/// Why an upload's MD5 could not be computed (the upload fails; nothing panics).
#[derive(Debug, thiserror::Error)]
pub enum EtagError {
    #[error("the MD5 of the upload was lost: the thread hashing it stopped ({0})")]
    Lost(&'static str),
}

const UNKNOWN: EtagError = EtagError::Lost("its upload is unknown to the lanes");
const STOPPED: EtagError = EtagError::Lost("a combiner stopped with it");
const LOST: EtagError = EtagError::Lost("its blocks were dropped unhashed");

/// Where [`Md5Lanes::step`] left an upload.
enum Step {
    /// Every block it handed over is hashed: its state.
    Idle(State),
    /// A combiner has its blocks: told when they are hashed.
    Wait(oneshot::Receiver<()>),
    /// This call hashed the queue: look again.
    Again,
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

/// One upload's place in the queue.
struct Entry {
    /// The state after every block hashed so far; `None` while a combiner holds it.
    state: Option<State>,
    /// Whole blocks handed over and not hashed yet, in order.
    pieces: VecDeque<Bytes>,
    /// Their bytes.
    bytes: usize,
    /// In [`Queue::ready`]: blocks waiting and the state at home.
    ready: bool,
    /// The upload waits until its blocks are all hashed (its digest, or room to queue).
    waiter: Option<oneshot::Sender<()>>,
    /// The upload needs its blocks hashed now: a combiner does not leave them for company.
    wanted: bool,
    /// A combiner stopped abnormally with this upload's state or blocks: its MD5 is lost.
    lost: bool,
}

impl Entry {
    fn idle(&self) -> bool {
        self.state.is_some() && self.pieces.is_empty()
    }
}

#[derive(Default)]
struct Queue {
    entries: HashMap<u64, Entry>,
    /// Uploads with blocks waiting and no combiner holding them, oldest first.
    ready: VecDeque<u64>,
    /// Bytes queued, all uploads together.
    bytes: usize,
    /// Someone is hashing: it (or the blocking thread it handed on to) will take what queues.
    combining: bool,
    next_id: u64,
}

impl Queue {
    /// Takes `id`'s queued blocks (and its state) for a lane.
    fn take(&mut self, id: u64) -> Option<(State, VecDeque<Bytes>)> {
        let entry = self.entries.get_mut(&id)?;
        let state = entry.state.take()?;
        self.bytes -= entry.bytes;
        entry.bytes = 0;
        Some((state, std::mem::take(&mut entry.pieces)))
    }

    /// Fails upload `id`: its blocks leave the queue, its waiter is told (with an error).
    fn lose(&mut self, id: u64) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.lost = true;
            entry.waiter = None;
            entry.pieces.clear();
            entry.ready = false;
            self.bytes -= std::mem::take(&mut entry.bytes);
        }
        self.ready.retain(|r| *r != id);
    }

    /// Gives a lane's blocks not hashed yet back to its upload, ahead of what it handed over
    /// meanwhile, with its state: it waits for a lane again.
    fn put_back(&mut self, lane: Active) {
        let Active {
            id,
            state,
            current,
            rest,
        } = lane;
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let mut pieces: VecDeque<Bytes> = std::iter::once(current)
            .filter(|c| !c.is_empty())
            .chain(rest)
            .collect();
        let back: usize = pieces.iter().map(Bytes::len).sum();
        pieces.append(&mut entry.pieces);
        entry.pieces = pieces;
        entry.bytes += back;
        entry.state = Some(state);
        self.bytes += back;
        self.mark_ready(id);
    }

    /// Marks `id` ready for a lane, unless it is already.
    fn mark_ready(&mut self, id: u64) {
        if let Some(entry) = self.entries.get_mut(&id)
            && !entry.ready
            && entry.state.is_some()
            && !entry.pieces.is_empty()
        {
            entry.ready = true;
            self.ready.push_back(id);
        }
    }
}

struct Shared {
    kernel: Kernel,
    max_queued: usize,
    gather: usize,
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

/// An upload's blocks in a lane.
struct Active {
    id: u64,
    state: State,
    /// The piece being hashed (what is left of it).
    current: Bytes,
    /// The pieces after it.
    rest: VecDeque<Bytes>,
}

impl Active {
    fn new(id: u64, state: State, mut pieces: VecDeque<Bytes>) -> Self {
        let current = pieces.pop_front().unwrap_or_default();
        Self {
            id,
            state,
            current,
            rest: pieces,
        }
    }

    fn advance(&mut self, n: usize) {
        self.current.advance(n);
        if self.current.is_empty()
            && let Some(next) = self.rest.pop_front()
        {
            self.current = next;
        }
    }
}

impl Md5Lanes {
    /// Lanes of `kernel` (one the CPU runs: else the scalar code), queueing at most
    /// `max_queued` bytes, hashing once `gather` bytes are queued, a combiner taking in new
    /// work until it hashed `turn` bytes.
    pub fn new(kernel: Kernel, max_queued: usize, gather: usize, turn: usize) -> Self {
        let kernel = if kernel.available() {
            kernel
        } else {
            Kernel::Scalar
        };
        Self {
            shared: Arc::new(Shared {
                kernel,
                max_queued,
                gather: gather.min(max_queued),
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

    /// The process's lanes: the widest kernel of this CPU, 16 MiB queued at most (the queue
    /// holds the socket's buffers: memory the gateway's peak counts), hashing once every
    /// upload in flight has blocks waiting or 2 MiB wait, 8 MiB a turn.
    pub fn shared() -> &'static Md5Lanes {
        static LANES: OnceLock<Md5Lanes> = OnceLock::new();
        LANES.get_or_init(|| {
            let mut lanes = Md5Lanes::new(Kernel::detect(), 16 << 20, 2 << 20, 8 << 20);
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
        q.entries.insert(
            id,
            Entry {
                state: Some(INIT),
                pieces: VecDeque::new(),
                bytes: 0,
                ready: false,
                waiter: None,
                wanted: false,
                lost: false,
            },
        );
        EtagMd5 {
            lanes: self.clone(),
            id,
            hashed: 0,
            tail: [0; BLOCK],
            filled: 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while the lock was held left the queue consistent (a combiner that panics
        // marks what it held as lost): go on with it.
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `pieces` (whole blocks, `bytes` of them) after upload `id`'s earlier ones; hashes
    /// the queue when it has gathered enough and nobody is hashing. Past the queue's bound,
    /// waits until `id`'s earlier blocks are hashed and hashes these itself.
    async fn submit(&self, id: u64, pieces: Vec<Bytes>, bytes: usize) -> Result<(), EtagError> {
        let mut pieces = Some(pieces);
        loop {
            if self.try_submit(id, &mut pieces, bytes)? {
                return Ok(());
            }
            if let Step::Wait(told) = self.step(id)? {
                told.await.map_err(|_| LOST)?;
            }
        }
    }

    /// Queues `pieces` or, past the queue's bound with `id` idle, hashes them here; `false`
    /// (nothing done) when `id` must be settled first.
    fn try_submit(
        &self,
        id: u64,
        pieces: &mut Option<Vec<Bytes>>,
        bytes: usize,
    ) -> Result<bool, EtagError> {
        let mut q = self.lock();
        let fits = q.bytes + bytes <= self.shared.max_queued;
        let entry = q.entries.get_mut(&id).ok_or(UNKNOWN)?;
        if entry.lost {
            return Err(STOPPED);
        }
        if fits {
            entry.bytes += bytes;
            entry.pieces.extend(pieces.take().into_iter().flatten());
            q.bytes += bytes;
            q.mark_ready(id);
            let start = !q.combining && self.worth_hashing(&q);
            if start {
                q.combining = true;
                drop(q);
                self.combine();
            }
            return Ok(true);
        }
        // Over the bound: hashed here, by its own upload, once its earlier blocks are.
        if entry.idle()
            && let Some(mut state) = entry.state.take()
        {
            drop(q);
            self.shared.overflow.fetch_add(1, Ordering::Relaxed);
            for piece in pieces.take().into_iter().flatten() {
                sublet_md5x::compress(&mut state, &piece);
            }
            if let Some(entry) = self.lock().entries.get_mut(&id) {
                entry.state = Some(state);
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the queue is worth hashing now: every upload in flight (or a kernel's worth)
    /// has blocks waiting, so lanes start full; or `gather` bytes wait with company for a
    /// lane, or from an upload that is alone; or the queue is half full.
    fn worth_hashing(&self, q: &Queue) -> bool {
        let lanes = self.shared.kernel.lanes();
        let ready = q.ready.len();
        ready >= lanes.min(q.entries.len()).max(1)
            || (q.bytes >= self.shared.gather && (ready >= 2 || q.entries.len() == 1))
            || q.bytes >= self.shared.max_queued / 2
    }

    /// One step towards upload `id` being idle (every block it handed over hashed): its
    /// state when it is; else hashes the queue when nobody is, or waits for whoever is.
    fn step(&self, id: u64) -> Result<Step, EtagError> {
        let mut q = self.lock();
        let entry = q.entries.get_mut(&id).ok_or(UNKNOWN)?;
        if entry.lost {
            return Err(STOPPED);
        }
        if let (Some(state), true) = (entry.state, entry.pieces.is_empty()) {
            entry.wanted = false;
            return Ok(Step::Idle(state));
        }
        entry.wanted = true;
        if q.combining {
            let (told, wait) = oneshot::channel();
            if let Some(entry) = q.entries.get_mut(&id) {
                entry.waiter = Some(told);
            }
            return Ok(Step::Wait(wait));
        }
        // Blocks waiting and nobody hashing: `id` is ready, this turn takes it.
        q.combining = true;
        drop(q);
        self.combine();
        Ok(Step::Again)
    }

    /// Upload `id`'s state once every block it handed over is hashed.
    async fn settle(&self, id: u64) -> Result<State, EtagError> {
        loop {
            match self.step(id)? {
                Step::Idle(state) => return Ok(state),
                Step::Wait(told) => told.await.map_err(|_| LOST)?,
                Step::Again => {}
            }
        }
    }

    /// Hashes what is queued, lanes in lock-step, until nothing is left or this turn is over
    /// (then a blocking thread takes the rest). Never waits for anything but the queue's
    /// lock, which no one holds while hashing.
    fn combine(&self) {
        // Whatever happens here (a panic included), `combining` is cleared or handed on, and
        // every upload whose state or blocks this turn held is failed, never left waiting.
        struct Turn<'a> {
            lanes: &'a Md5Lanes,
            held: Vec<u64>,
            done: bool,
        }
        impl Drop for Turn<'_> {
            fn drop(&mut self) {
                if !self.done {
                    let mut q = self.lanes.lock();
                    q.combining = false;
                    for id in &self.held {
                        q.lose(*id);
                    }
                }
            }
        }
        let mut turn = Turn {
            lanes: self,
            held: Vec::new(),
            done: false,
        };
        let kernel = self.shared.kernel;
        let mut active: Vec<Active> = Vec::new();
        let mut hashed = 0usize;
        // Fewer lanes than this and those not needed now go back to wait for company: half
        // of what there was to start with, at least two (one with the scalar kernel).
        let floor = {
            let q = self.lock();
            (q.ready.len().min(kernel.lanes()) / 2)
                .clamp(2, kernel.lanes().max(2))
                .min(kernel.lanes())
        };
        loop {
            {
                let mut q = self.lock();
                // Lanes whose blocks are done carry on with what their upload handed over
                // meanwhile, or go home.
                let mut i = 0;
                while i < active.len() {
                    if !active[i].current.is_empty() {
                        i += 1;
                        continue;
                    }
                    let id = active[i].id;
                    let more = hashed < self.shared.turn
                        && q.entries.get(&id).is_some_and(|e| !e.pieces.is_empty());
                    if more {
                        if let Some(entry) = q.entries.get_mut(&id) {
                            let pieces = std::mem::take(&mut entry.pieces);
                            let taken = std::mem::take(&mut entry.bytes);
                            q.bytes -= taken;
                            let state = active[i].state;
                            active[i] = Active::new(id, state, pieces);
                        }
                        i += 1;
                        continue;
                    }
                    let lane = active.swap_remove(i);
                    turn.held.retain(|h| *h != id);
                    // Gone: its upload went away meanwhile, nobody wants this state.
                    if let Some(entry) = q.entries.get_mut(&id) {
                        entry.state = Some(lane.state);
                        if entry.pieces.is_empty() {
                            if let Some(told) = entry.waiter.take() {
                                let _ = told.send(());
                            }
                        } else {
                            q.mark_ready(id);
                        }
                    }
                }
                while active.len() < kernel.lanes() && hashed < self.shared.turn {
                    let Some(id) = q.ready.pop_front() else { break };
                    if let Some(entry) = q.entries.get_mut(&id) {
                        entry.ready = false;
                    }
                    if let Some((state, pieces)) = q.take(id) {
                        turn.held.push(id);
                        active.push(Active::new(id, state, pieces));
                    }
                }
                if active.len() < floor {
                    let pressed = q.bytes >= self.shared.max_queued / 2 || q.entries.len() == 1;
                    let mut i = 0;
                    while i < active.len() {
                        let needed =
                            pressed || q.entries.get(&active[i].id).is_none_or(|e| e.wanted);
                        if needed {
                            i += 1;
                            continue;
                        }
                        let lane = active.swap_remove(i);
                        turn.held.retain(|h| *h != lane.id);
                        q.put_back(lane);
                    }
                    if active.is_empty() && hashed < self.shared.turn {
                        q.combining = false;
                        turn.done = true;
                        return;
                    }
                }
                if active.is_empty() {
                    if q.ready.is_empty() {
                        q.combining = false;
                        turn.done = true;
                        return;
                    }
                    // This turn is over and uploads still wait: a blocking thread takes
                    // them, `combining` stays set for it.
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
            let run = active
                .iter()
                .map(|a| a.current.len())
                .min()
                .unwrap_or(0)
                .min(STEP)
                / BLOCK
                * BLOCK;
            if run == 0 {
                // Cannot happen (pieces are whole, non-empty blocks): `turn` fails the uploads
                // held rather than spin.
                return;
            }
            let mut lanes: Vec<Lane<'_>> = active
                .iter_mut()
                .map(|a| Lane {
                    state: &mut a.state,
                    data: &a.current[..run],
                })
                .collect();
            let n = lanes.len();
            if compress_lanes(kernel, &mut lanes).is_err() {
                // Cannot happen (equal whole blocks, at most the kernel's lanes, a kernel
                // checked at start): `turn` fails the uploads held.
                return;
            }
            for a in active.iter_mut() {
                a.advance(run);
            }
            hashed += run * n;
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
/// shutting down), what waits is failed and `combining` cleared, so uploads fail rather than
/// wait for ever.
struct Handoff(Option<Md5Lanes>);

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(lanes) = self.0.take() {
            let mut q = lanes.lock();
            q.combining = false;
            let ready = std::mem::take(&mut q.ready);
            for id in ready {
                q.lose(id);
            }
        }
    }
}

/// One upload's MD5: chunks go in as they arrive, the digest comes out at the end.
pub struct EtagMd5 {
    lanes: Md5Lanes,
    id: u64,
    /// Bytes handed over as whole blocks.
    hashed: u64,
    /// The partial block after them.
    tail: [u8; BLOCK],
    filled: usize,
}

impl EtagMd5 {
    /// Hashes `chunk` after what came before: its whole blocks queue for the lanes (the
    /// block it shares with the chunk before is copied). Waits only when the queue is full.
    pub async fn update(&mut self, mut chunk: Bytes) -> Result<(), EtagError> {
        let mut pieces = Vec::with_capacity(2);
        if self.filled > 0 {
            let take = (BLOCK - self.filled).min(chunk.len());
            self.tail[self.filled..self.filled + take].copy_from_slice(&chunk[..take]);
            self.filled += take;
            chunk.advance(take);
            if self.filled < BLOCK {
                return Ok(());
            }
            pieces.push(Bytes::copy_from_slice(&self.tail));
            self.filled = 0;
        }
        let whole = chunk.len() / BLOCK * BLOCK;
        let rest = chunk.split_off(whole);
        self.tail[..rest.len()].copy_from_slice(&rest);
        self.filled = rest.len();
        if !chunk.is_empty() {
            pieces.push(chunk);
        }
        let bytes: usize = pieces.iter().map(Bytes::len).sum();
        if bytes == 0 {
            return Ok(());
        }
        self.lanes.submit(self.id, pieces, bytes).await?;
        self.hashed += bytes as u64;
        Ok(())
    }

    /// The digest of everything updated.
    pub async fn finalize(self) -> Result<[u8; 16], EtagError> {
        let state = self.lanes.settle(self.id).await?;
        let mut md5 =
            Md5::resumed(state, self.hashed).ok_or(EtagError::Lost("its blocks were not whole"))?;
        md5.update(&self.tail[..self.filled]);
        Ok(md5.finalize())
    }
}

impl Drop for EtagMd5 {
    fn drop(&mut self) {
        // Done, or gone with blocks still queued (the client went away): its blocks leave the
        // queue now rather than hold memory until the next upload hashes.
        let mut q = self.lanes.lock();
        if let Some(entry) = q.entries.remove(&self.id) {
            q.bytes -= entry.bytes;
            if entry.ready {
                let id = self.id;
                q.ready.retain(|r| *r != id);
            }
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
        let own = Md5Lanes::new(Kernel::Scalar, 1 << 20, 1 << 20, 1 << 20);
        assert!(!own.shared.exported);
    }

    #[tokio::test]
    async fn a_lone_upload_hashes_its_own_blocks_on_one_lane_without_waiting() {
        let lanes = Md5Lanes::new(Kernel::detect(), 1 << 20, 128 * 1024, 1 << 20);
        let m = message(1, 300_000);
        let mut md5 = lanes.stream();
        use futures::FutureExt as _;
        for piece in m.chunks(70_001) {
            // Nobody else is there: handing a chunk over never waits...
            md5.update(Bytes::copy_from_slice(piece))
                .now_or_never()
                .expect("queued at once")
                .unwrap();
            assert!(!lanes.lock().combining);
        }
        // ... and neither does the digest: its own call hashes what is left.
        let digest = md5.finalize().now_or_never().expect("hashed at once");
        assert_eq!(digest.unwrap(), reference(&m));
        let stats = lanes.stats();
        assert!(stats.calls > 0);
        assert_eq!(stats.lanes, stats.calls, "one lane a call: {stats:?}");
        let q = lanes.lock();
        assert!(!q.combining && q.entries.is_empty() && q.bytes == 0);
    }

    #[tokio::test]
    async fn an_upload_hands_over_chunk_after_chunk_while_its_earlier_ones_wait() {
        let lanes = Md5Lanes::new(Kernel::detect(), 64 << 20, 64 << 20, 64 << 20);
        let m = message(3, 500_001);
        let mut md5 = lanes.stream();
        hold(&lanes);
        use futures::FutureExt as _;
        for piece in m.chunks(33_333) {
            md5.update(Bytes::copy_from_slice(piece))
                .now_or_never()
                .expect("no waiting for the chunk before to be hashed")
                .unwrap();
        }
        assert_eq!(lanes.stats().calls, 0, "all of it queued");
        assert_eq!(lanes.lock().bytes, 500_001 / BLOCK * BLOCK);
        release(&lanes);
        assert_eq!(md5.finalize().await.unwrap(), reference(&m));
    }

    #[tokio::test]
    async fn uploads_of_equal_length_in_uneven_chunks_keep_every_lane_full() {
        let kernel = Kernel::detect();
        if kernel == Kernel::Scalar {
            return;
        }
        let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20, 64 << 20);
        let n = kernel.lanes().min(8);
        let len = 1 << 20;
        let messages: Vec<Vec<u8>> = (0..n as u64).map(|i| message(40 + i, len)).collect();
        let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        hold(&lanes);
        for (s, m) in streams.iter_mut().zip(&messages) {
            // Chunks as a socket delivers them: any size, not block-aligned.
            let mut rest = &m[..];
            while !rest.is_empty() {
                let k = rng.random_range(1..=100_000).min(rest.len());
                s.update(Bytes::copy_from_slice(&rest[..k])).await.unwrap();
                rest = &rest[k..];
            }
        }
        release(&lanes);
        let stats = lanes.stats();
        assert_eq!(
            stats.lanes,
            stats.calls * n as u64,
            "all {n} lanes in every call: {stats:?}"
        );
        assert_eq!(stats.bytes, (n * len) as u64);
        for (s, m) in streams.into_iter().zip(&messages) {
            assert_eq!(s.finalize().await.unwrap(), reference(m));
        }
    }

    #[tokio::test]
    async fn uploads_queued_together_run_in_lock_step_and_each_gets_its_digest() {
        for kernel in Kernel::all_available() {
            let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20, 64 << 20);
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
    async fn uploads_wait_for_company_until_every_one_in_flight_has_blocks_then_share_lanes() {
        let kernel = Kernel::detect();
        let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20, 64 << 20);
        let n = kernel.lanes().clamp(2, 8);
        let messages: Vec<Vec<u8>> = (0..n as u64).map(|i| message(i, 64 * 1024)).collect();
        let mut streams: Vec<EtagMd5> = messages.iter().map(|_| lanes.stream()).collect();
        for (i, (s, m)) in streams.iter_mut().zip(&messages).enumerate() {
            if i + 1 == n && kernel != Kernel::Scalar {
                assert_eq!(
                    lanes.stats().calls,
                    0,
                    "queued, waiting for the last upload"
                );
            }
            s.update(Bytes::copy_from_slice(m)).await.unwrap();
        }
        assert_eq!(lanes.lock().bytes, 0, "the last one in hashed them all");
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
    async fn a_lane_left_alone_waits_for_company_unless_its_upload_needs_the_digest() {
        let kernel = Kernel::detect();
        if kernel == Kernel::Scalar {
            return;
        }
        let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20, 64 << 20);
        let long = message(5, 512 * 1024);
        let short = message(6, 64 * 1024);
        let mut a = lanes.stream();
        let mut b = lanes.stream();
        let _idle = lanes.stream();
        hold(&lanes);
        a.update(Bytes::copy_from_slice(&long)).await.unwrap();
        b.update(Bytes::copy_from_slice(&short)).await.unwrap();
        release(&lanes);
        // Both ran in two lanes until the short one was done; the rest of the long one waits.
        let stats = lanes.stats();
        assert_eq!(stats.lanes, stats.calls * 2, "{stats:?}");
        assert_eq!(stats.bytes, 2 * 64 * 1024);
        assert_eq!(lanes.lock().bytes, (512 - 64) * 1024);
        assert_eq!(b.finalize().await.unwrap(), reference(&short));
        // Its digest is wanted: hashed now, alone.
        assert_eq!(a.finalize().await.unwrap(), reference(&long));
        assert_eq!(lanes.lock().bytes, 0);
    }

    #[tokio::test]
    async fn a_full_set_of_lanes_is_hashed_as_soon_as_it_is_queued() {
        let kernel = Kernel::detect();
        let lanes = Md5Lanes::new(kernel, 64 << 20, 64 << 20, 64 << 20);
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
        let lanes = Md5Lanes::new(Kernel::detect(), 1 << 20, 1 << 20, 1 << 20);
        let gone = message(1, 100_000);
        let kept = message(2, 100_000);
        let mut a = lanes.stream();
        let mut b = lanes.stream();
        hold(&lanes);
        a.update(Bytes::from(gone)).await.unwrap();
        b.update(Bytes::copy_from_slice(&kept)).await.unwrap();
        drop(a);
        {
            let q = lanes.lock();
            assert_eq!(q.ready.len(), 1, "its blocks left the queue with it");
            assert_eq!(q.bytes, 100_000 / BLOCK * BLOCK);
        }
        release(&lanes);
        assert_eq!(b.finalize().await.unwrap(), reference(&kept));
        let q = lanes.lock();
        assert!(!q.combining && q.entries.is_empty() && q.bytes == 0);
    }

    #[tokio::test]
    async fn a_chunk_past_the_queue_bound_is_hashed_by_its_own_upload() {
        let lanes = Md5Lanes::new(Kernel::detect(), 64 * 1024, 64 * 1024, 1 << 20);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_combiner_past_its_turn_hands_the_queue_on() {
        // A turn of one step: the queued chunks go to a blocking thread.
        let lanes = Md5Lanes::new(Kernel::detect(), 64 << 20, 64 << 20, STEP);
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
        let lanes = Md5Lanes::new(Kernel::detect(), 1 << 20, 256 << 10, 1 << 20);
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
