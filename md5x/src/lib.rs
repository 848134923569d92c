//! Multi-buffer MD5: several independent MD5 streams advanced in lock-step, one stream per
//! SIMD lane (AVX-512: 16 lanes, AVX2: 8), chosen at run time; one stream alone, or a CPU
//! without either, runs the scalar assembly MD5 that `md-5`'s `asm` feature uses.
//!
//! One MD5 stream is serial (each 64-byte block needs the state the previous one left), so a
//! core hashes about 500 MB/s of it; independent streams have no such dependency and share a
//! vector register's lanes. The gateway hashes the ETag of every uploaded byte, many uploads
//! at once: `sublet-gateway`'s `datapath::etag` gathers their blocks into lanes.
//!
//! The API is the compression function and the block bookkeeping around it:
//! [`compress_lanes`] advances up to [`Kernel::lanes`] states over the same number of blocks
//! each, [`Md5`] is a streaming hasher whose whole blocks can be handed to a lane
//! ([`Md5::split`]) and whose padding and length it does itself ([`Md5::finalize`]).

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
mod x86;

/// An MD5 chaining state (A, B, C, D).
pub type State = [u32; 4];

/// The state every MD5 starts from (RFC 1321, 3.3).
pub const INIT: State = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The MD5 block: what one compression step consumes.
pub const BLOCK: usize = 64;

/// The kernels: which one a CPU runs comes from [`Kernel::detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// One stream at a time (assembly on x86, portable Rust elsewhere).
    Scalar,
    /// 8 streams in the 32-bit lanes of a 256-bit register.
    Avx2,
    /// 16 streams in the 32-bit lanes of a 512-bit register (AVX-512F).
    Avx512,
}

impl Kernel {
    /// The widest kernel this CPU runs.
    pub fn detect() -> Self {
        [Kernel::Avx512, Kernel::Avx2]
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Every kernel this CPU runs, narrowest first (tests run each).
    pub fn all_available() -> Vec<Self> {
        [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512]
            .into_iter()
            .filter(|k| k.available())
            .collect()
    }

    /// Whether this CPU runs this kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::avx2_available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::avx512_available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx512 => false,
        }
    }

    /// How many streams one call advances together.
    pub fn lanes(self) -> usize {
        match self {
            Kernel::Scalar => 1,
            Kernel::Avx2 => 8,
            Kernel::Avx512 => 16,
        }
    }
}

/// Why [`compress_lanes`] refused its arguments (it hashed nothing then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneError {
    /// A lane's data is not the same length as the first lane's.
    UnequalLengths {
        lane: usize,
        len: usize,
        expected: usize,
    },
    /// The lanes' length is not a whole number of 64-byte blocks.
    NotWholeBlocks { len: usize },
    /// More lanes than the kernel has.
    TooManyLanes { lanes: usize, max: usize },
    /// This CPU lacks the kernel's instructions.
    Unavailable(Kernel),
}

impl std::fmt::Display for LaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaneError::UnequalLengths {
                lane,
                len,
                expected,
            } => write!(
                f,
                "lane {lane} holds {len} bytes, lane 0 {expected}: lanes run in lock-step over equal lengths"
            ),
            LaneError::NotWholeBlocks { len } => {
                write!(f, "{len} bytes is not a whole number of 64-byte MD5 blocks")
            }
            LaneError::TooManyLanes { lanes, max } => {
                write!(f, "{lanes} lanes given, the kernel has {max}")
            }
            LaneError::Unavailable(k) => write!(f, "this CPU cannot run the {k:?} MD5 kernel"),
        }
    }
}

impl std::error::Error for LaneError {}

/// One stream in a lock-step call: its state and the whole blocks to feed it.
pub struct Lane<'a> {
    pub state: &'a mut State,
    pub data: &'a [u8],
}

/// Advances every lane's state over its data, all lanes together. Every lane's data must be
/// the same whole number of blocks, and there must be at most `kernel.lanes()` lanes; one
/// lane alone runs the scalar code whatever the kernel (a vector would waste its other lanes).
pub fn compress_lanes(kernel: Kernel, lanes: &mut [Lane<'_>]) -> Result<(), LaneError> {
    let Some(first) = lanes.first() else {
        return Ok(());
    };
    let len = first.data.len();
    if len % BLOCK != 0 {
        return Err(LaneError::NotWholeBlocks { len });
    }
    if let Some((lane, l)) = lanes.iter().enumerate().find(|(_, l)| l.data.len() != len) {
        return Err(LaneError::UnequalLengths {
            lane,
            len: l.data.len(),
            expected: len,
        });
    }
    if lanes.len() > kernel.lanes() {
        return Err(LaneError::TooManyLanes {
            lanes: lanes.len(),
            max: kernel.lanes(),
        });
    }
    if !kernel.available() {
        return Err(LaneError::Unavailable(kernel));
    }
    if lanes.len() == 1 || kernel == Kernel::Scalar {
        for lane in lanes.iter_mut() {
            compress(lane.state, lane.data);
        }
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    match kernel {
        Kernel::Avx512 => x86::compress16(lanes, len / BLOCK),
        Kernel::Avx2 => x86::compress8(lanes, len / BLOCK),
        Kernel::Scalar => {}
    }
    Ok(())
}

/// Advances one state over the whole blocks at the start of `data` (a trailing partial
/// block is not hashed: callers pass whole blocks).
pub fn compress(state: &mut State, data: &[u8]) {
    let (blocks, _) = data.as_chunks::<BLOCK>();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    md5_asm::compress(state, blocks);
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    md5_portable::block_api::compress(state, blocks);
}

/// A streaming MD5 whose whole blocks may be hashed elsewhere (in a lane).
#[derive(Clone, Debug)]
pub struct Md5 {
    state: State,
    /// A partial block waiting for the rest.
    buf: [u8; BLOCK],
    filled: usize,
    /// Bytes taken so far, all of them (the padding records it).
    len: u64,
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

impl Md5 {
    pub fn new() -> Self {
        Self {
            state: INIT,
            buf: [0; BLOCK],
            filled: 0,
            len: 0,
        }
    }

    /// Continues a stream whose first `hashed` bytes, a whole number of blocks, were hashed
    /// elsewhere into `state` (a lane): what follows goes in with [`Md5::update`]. `None`
    /// when `hashed` is not a whole number of blocks.
    pub fn resume(state: State, hashed: u64) -> Option<Self> {
        hashed.is_multiple_of(BLOCK as u64).then_some(Self {
            state,
            buf: [0; BLOCK],
            filled: 0,
            len: hashed,
        })
    }

    /// Hashes `data` here, on this core (the scalar code).
    pub fn update(&mut self, data: &[u8]) {
        let middle = self.split(data);
        compress(&mut self.state, &data[middle]);
    }

    /// Takes the bytes of `data` around its whole blocks: completes (and hashes) a partly
    /// filled block from `data`'s start, keeps the trailing partial block, and returns the
    /// range of whole blocks between them, which the caller must compress into
    /// [`Md5::state_mut`] before the next `split`, `update` or `finalize`.
    pub fn split(&mut self, data: &[u8]) -> Range<usize> {
        self.len = self.len.wrapping_add(data.len() as u64);
        let mut start = 0;
        if self.filled > 0 {
            let take = (BLOCK - self.filled).min(data.len());
            self.buf[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            start = take;
            if self.filled < BLOCK {
                return start..start;
            }
            let block = self.buf;
            compress(&mut self.state, &block);
            self.filled = 0;
        }
        let whole = (data.len() - start) / BLOCK * BLOCK;
        let end = start + whole;
        let tail = &data[end..];
        self.buf[..tail.len()].copy_from_slice(tail);
        self.filled = tail.len();
        start..end
    }

    /// The chaining state (what a lane advances).
    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// The digest: pads the last block with the length (RFC 1321, 3.1–3.2) and hashes it.
    pub fn finalize(mut self) -> [u8; 16] {
        let bits = self.len.wrapping_mul(8);
        let mut last = [0u8; 2 * BLOCK];
        last[..self.filled].copy_from_slice(&self.buf[..self.filled]);
        last[self.filled] = 0x80;
        let blocks = if self.filled < BLOCK - 8 { 1 } else { 2 };
        let end = blocks * BLOCK;
        last[end - 8..end].copy_from_slice(&bits.to_le_bytes());
        compress(&mut self.state, &last[..end]);
        let mut out = [0u8; 16];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests;
