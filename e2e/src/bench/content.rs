//! Object bodies the benchmark writes and checks: every key has its own reproducible,
//! incompressible bytes, made and compared at memory speed so that checking every GET
//! costs the client little and a server returning wrong, stale or foreign bytes is caught.

use std::sync::OnceLock;

use bytes::Bytes;

/// Bodies are made of pages: a 16-byte stamp (key seed, page index) then bytes from a
/// shared random pool at an offset drawn from seed and page.
pub const PAGE: usize = 4096;
const STAMP: usize = 16;
const POOL_LEN: usize = 4 << 20;

/// The shared random pool (xorshift64*), made once.
fn pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut state: u64 = 0x5EED_5B1E_7000_0001;
        let mut pool = Vec::with_capacity(POOL_LEN + PAGE);
        while pool.len() < POOL_LEN + PAGE {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            pool.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        pool
    })
}

/// SplitMix64 finaliser: spreads page offsets over the pool.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The body of one object: which bytes, how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    pub seed: u64,
    pub len: u64,
}

impl Content {
    /// The body of `key` when it is `len` bytes long.
    pub fn for_key(key: &str, len: u64) -> Self {
        let hash = blake3::hash(key.as_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&hash.as_bytes()[..8]);
        Content {
            seed: u64::from_le_bytes(seed),
            len,
        }
    }

    /// Writes the body's bytes from `offset` into `buf` (which must not reach past the end).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let pool = pool();
        let mut pos = offset;
        let mut out = 0;
        while out < buf.len() {
            let page = pos / PAGE as u64;
            let in_page = (pos % PAGE as u64) as usize;
            let n = (PAGE - in_page).min(buf.len() - out);
            let start = (mix(self.seed ^ mix(page)) % POOL_LEN as u64) as usize;
            let dst = &mut buf[out..out + n];
            dst.copy_from_slice(&pool[start + in_page..start + in_page + n]);
            if in_page < STAMP {
                let mut stamp = [0u8; STAMP];
                stamp[..8].copy_from_slice(&self.seed.to_le_bytes());
                stamp[8..].copy_from_slice(&page.to_le_bytes());
                let m = (STAMP - in_page).min(n);
                dst[..m].copy_from_slice(&stamp[in_page..in_page + m]);
            }
            pos += n as u64;
            out += n;
        }
    }

    /// `len` bytes of the body from `offset`.
    pub fn chunk(&self, offset: u64, len: usize) -> Bytes {
        let mut buf = vec![0u8; len];
        self.fill(offset, &mut buf);
        Bytes::from(buf)
    }

    /// The whole body (for small objects and tests).
    pub fn bytes(&self) -> Bytes {
        self.chunk(0, usize::try_from(self.len).unwrap_or(usize::MAX))
    }
}

/// Why a body did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The byte at this offset (from the start of the object) differs.
    Bytes { at: u64 },
    /// More bytes arrived than expected.
    TooLong { expected: u64 },
    /// The body ended early.
    TooShort { expected: u64, got: u64 },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Bytes { at } => write!(f, "wrong bytes at offset {at}"),
            Mismatch::TooLong { expected } => {
                write!(f, "body longer than the expected {expected} bytes")
            }
            Mismatch::TooShort { expected, got } => {
                write!(f, "body ended after {got} of {expected} bytes")
            }
        }
    }
}

/// Checks a body arriving in pieces against `[start, end)` of a [`Content`].
pub struct Verifier {
    content: Content,
    start: u64,
    end: u64,
    pos: u64,
    scratch: Vec<u8>,
    mismatch: Option<Mismatch>,
}

impl Verifier {
    /// Expects the whole body.
    pub fn new(content: Content) -> Self {
        Self::range(content, 0, content.len)
    }

    /// Expects bytes `[start, end)` of the body (a ranged GET).
    pub fn range(content: Content, start: u64, end: u64) -> Self {
        Verifier {
            content,
            start,
            end,
            pos: start,
            scratch: Vec::new(),
            mismatch: None,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.mismatch.is_some() || data.is_empty() {
            return;
        }
        let left = self.end - self.pos;
        if data.len() as u64 > left {
            self.mismatch = Some(Mismatch::TooLong {
                expected: self.end - self.start,
            });
            return;
        }
        self.scratch.resize(data.len(), 0);
        self.content.fill(self.pos, &mut self.scratch);
        if self.scratch != data {
            let first = self
                .scratch
                .iter()
                .zip(data)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            self.mismatch = Some(Mismatch::Bytes {
                at: self.pos + first as u64,
            });
            return;
        }
        self.pos += data.len() as u64;
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.pos - self.start
    }

    pub fn finish(self) -> Result<(), Mismatch> {
        if let Some(m) = self.mismatch {
            return Err(m);
        }
        if self.pos != self.end {
            return Err(Mismatch::TooShort {
                expected: self.end - self.start,
                got: self.pos - self.start,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(content: Content, pieces: &[&[u8]]) -> Result<(), Mismatch> {
        let mut v = Verifier::new(content);
        for p in pieces {
            v.update(p);
        }
        v.finish()
    }

    #[test]
    fn a_key_always_gets_the_same_bytes_and_other_keys_other_bytes() {
        let a = Content::for_key("bench/obj/00000001", 10_000);
        assert_eq!(
            a.bytes(),
            Content::for_key("bench/obj/00000001", 10_000).bytes()
        );
        let b = Content::for_key("bench/obj/00000002", 10_000);
        assert_ne!(a.bytes(), b.bytes());
        // No two pages of one object alike either, so a server repeating a page is caught.
        let body = Content::for_key("k", 64 * PAGE as u64).bytes();
        let pages: std::collections::HashSet<&[u8]> = body.chunks(PAGE).collect();
        assert_eq!(pages.len(), 64);
    }

    #[test]
    fn bytes_from_an_offset_are_those_of_the_whole_body() {
        let c = Content::for_key("offsets", 3 * PAGE as u64 + 123);
        let whole = c.bytes();
        for (start, len) in [(0, 1), (5, 20), (4090, 30), (4096, 4096), (7000, 5411)] {
            assert_eq!(
                c.chunk(start as u64, len),
                whole.slice(start..start + len),
                "{start}+{len}"
            );
        }
    }

    #[test]
    fn the_right_body_passes_in_any_split() {
        let c = Content::for_key("split", 20_000);
        let body = c.bytes();
        assert_eq!(check(c, &[&body]), Ok(()));
        assert_eq!(
            check(c, &[&body[..1], &body[1..4097], &body[4097..]]),
            Ok(())
        );
        let mut v = Verifier::range(c, 5000, 9000);
        v.update(&body[5000..6000]);
        v.update(&body[6000..9000]);
        assert_eq!(v.received(), 4000);
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(check(Content::for_key("empty", 0), &[]), Ok(()));
    }

    #[test]
    fn wrong_short_long_and_foreign_bodies_fail() {
        let c = Content::for_key("victim", 10_000);
        let body = c.bytes().to_vec();
        let mut flipped = body.clone();
        flipped[7777] ^= 1;
        assert_eq!(check(c, &[&flipped]), Err(Mismatch::Bytes { at: 7777 }));
        assert_eq!(
            check(c, &[&body[..9999]]),
            Err(Mismatch::TooShort {
                expected: 10_000,
                got: 9999
            })
        );
        assert_eq!(
            check(c, &[&body, b"x"]),
            Err(Mismatch::TooLong { expected: 10_000 })
        );
        let other = Content::for_key("other", 10_000).bytes();
        assert!(matches!(check(c, &[&other]), Err(Mismatch::Bytes { .. })));
        // The right bytes for the wrong range.
        let mut v = Verifier::range(c, 4096, 8192);
        v.update(&body[0..4096]);
        assert!(matches!(v.finish(), Err(Mismatch::Bytes { .. })));
    }
}
