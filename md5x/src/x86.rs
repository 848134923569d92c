//! The lane kernels: the 64 MD5 steps on 16 (AVX-512F) or 8 (AVX2) 32-bit lanes at once,
//! lane `l` holding stream `l`'s A, B, C, D and message words. This file holds the crate's
//! only `unsafe`: vector loads and stores of plain arrays, and the calls of the
//! `#[target_feature]` kernels after the CPU was checked to have the feature.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::{BLOCK, Lane};

/// The 64 steps of RFC 1321, 3.4: function, the registers in turn, message word, constant
/// (floor(2^32 * |sin(i + 1)|)) and rotation.
macro_rules! steps {
    ($step:ident, $a:ident, $b:ident, $c:ident, $d:ident) => {
        $step!(F, $a, $b, $c, $d, 0, 0xd76aa478, 7);
        $step!(F, $d, $a, $b, $c, 1, 0xe8c7b756, 12);
        $step!(F, $c, $d, $a, $b, 2, 0x242070db, 17);
        $step!(F, $b, $c, $d, $a, 3, 0xc1bdceee, 22);
        $step!(F, $a, $b, $c, $d, 4, 0xf57c0faf, 7);
        $step!(F, $d, $a, $b, $c, 5, 0x4787c62a, 12);
        $step!(F, $c, $d, $a, $b, 6, 0xa8304613, 17);
        $step!(F, $b, $c, $d, $a, 7, 0xfd469501, 22);
        $step!(F, $a, $b, $c, $d, 8, 0x698098d8, 7);
        $step!(F, $d, $a, $b, $c, 9, 0x8b44f7af, 12);
        $step!(F, $c, $d, $a, $b, 10, 0xffff5bb1, 17);
        $step!(F, $b, $c, $d, $a, 11, 0x895cd7be, 22);
        $step!(F, $a, $b, $c, $d, 12, 0x6b901122, 7);
        $step!(F, $d, $a, $b, $c, 13, 0xfd987193, 12);
        $step!(F, $c, $d, $a, $b, 14, 0xa679438e, 17);
        $step!(F, $b, $c, $d, $a, 15, 0x49b40821, 22);
        $step!(G, $a, $b, $c, $d, 1, 0xf61e2562, 5);
        $step!(G, $d, $a, $b, $c, 6, 0xc040b340, 9);
        $step!(G, $c, $d, $a, $b, 11, 0x265e5a51, 14);
        $step!(G, $b, $c, $d, $a, 0, 0xe9b6c7aa, 20);
        $step!(G, $a, $b, $c, $d, 5, 0xd62f105d, 5);
        $step!(G, $d, $a, $b, $c, 10, 0x02441453, 9);
        $step!(G, $c, $d, $a, $b, 15, 0xd8a1e681, 14);
        $step!(G, $b, $c, $d, $a, 4, 0xe7d3fbc8, 20);
        $step!(G, $a, $b, $c, $d, 9, 0x21e1cde6, 5);
        $step!(G, $d, $a, $b, $c, 14, 0xc33707d6, 9);
        $step!(G, $c, $d, $a, $b, 3, 0xf4d50d87, 14);
        $step!(G, $b, $c, $d, $a, 8, 0x455a14ed, 20);
        $step!(G, $a, $b, $c, $d, 13, 0xa9e3e905, 5);
        $step!(G, $d, $a, $b, $c, 2, 0xfcefa3f8, 9);
        $step!(G, $c, $d, $a, $b, 7, 0x676f02d9, 14);
        $step!(G, $b, $c, $d, $a, 12, 0x8d2a4c8a, 20);
        $step!(H, $a, $b, $c, $d, 5, 0xfffa3942, 4);
        $step!(H, $d, $a, $b, $c, 8, 0x8771f681, 11);
        $step!(H, $c, $d, $a, $b, 11, 0x6d9d6122, 16);
        $step!(H, $b, $c, $d, $a, 14, 0xfde5380c, 23);
        $step!(H, $a, $b, $c, $d, 1, 0xa4beea44, 4);
        $step!(H, $d, $a, $b, $c, 4, 0x4bdecfa9, 11);
        $step!(H, $c, $d, $a, $b, 7, 0xf6bb4b60, 16);
        $step!(H, $b, $c, $d, $a, 10, 0xbebfbc70, 23);
        $step!(H, $a, $b, $c, $d, 13, 0x289b7ec6, 4);
        $step!(H, $d, $a, $b, $c, 0, 0xeaa127fa, 11);
        $step!(H, $c, $d, $a, $b, 3, 0xd4ef3085, 16);
        $step!(H, $b, $c, $d, $a, 6, 0x04881d05, 23);
        $step!(H, $a, $b, $c, $d, 9, 0xd9d4d039, 4);
        $step!(H, $d, $a, $b, $c, 12, 0xe6db99e5, 11);
        $step!(H, $c, $d, $a, $b, 15, 0x1fa27cf8, 16);
        $step!(H, $b, $c, $d, $a, 2, 0xc4ac5665, 23);
        $step!(I, $a, $b, $c, $d, 0, 0xf4292244, 6);
        $step!(I, $d, $a, $b, $c, 7, 0x432aff97, 10);
        $step!(I, $c, $d, $a, $b, 14, 0xab9423a7, 15);
        $step!(I, $b, $c, $d, $a, 5, 0xfc93a039, 21);
        $step!(I, $a, $b, $c, $d, 12, 0x655b59c3, 6);
        $step!(I, $d, $a, $b, $c, 3, 0x8f0ccc92, 10);
        $step!(I, $c, $d, $a, $b, 10, 0xffeff47d, 15);
        $step!(I, $b, $c, $d, $a, 1, 0x85845dd1, 21);
        $step!(I, $a, $b, $c, $d, 8, 0x6fa87e4f, 6);
        $step!(I, $d, $a, $b, $c, 15, 0xfe2ce6e0, 10);
        $step!(I, $c, $d, $a, $b, 6, 0xa3014314, 15);
        $step!(I, $b, $c, $d, $a, 13, 0x4e0811a1, 21);
        $step!(I, $a, $b, $c, $d, 4, 0xf7537e82, 6);
        $step!(I, $d, $a, $b, $c, 11, 0xbd3af235, 10);
        $step!(I, $c, $d, $a, $b, 2, 0x2ad7d2bb, 15);
        $step!(I, $b, $c, $d, $a, 9, 0xeb86d391, 21);
    };
}

pub fn avx512_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

pub fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Block `b` of every lane, transposed: `m[w][l]` is lane `l`'s message word `w`
/// (little-endian, as MD5 reads them). Lanes past `lanes.len()` stay zero (hashed, thrown away).
#[inline(always)]
fn transpose<const N: usize>(lanes: &[Lane<'_>], b: usize, m: &mut [[u32; N]; 16]) {
    for (l, lane) in lanes.iter().enumerate().take(N) {
        let block = &lane.data[b * BLOCK..(b + 1) * BLOCK];
        let (words, _) = block.as_chunks::<4>();
        for (w, word) in words.iter().enumerate() {
            m[w][l] = u32::from_le_bytes(*word);
        }
    }
}

/// The states, transposed like the message words (`st[i][l]` is lane `l`'s word `i`).
fn gather<const N: usize>(lanes: &[Lane<'_>]) -> [[u32; N]; 4] {
    let mut st = [[0u32; N]; 4];
    for (l, lane) in lanes.iter().enumerate().take(N) {
        for (i, w) in lane.state.iter().enumerate() {
            st[i][l] = *w;
        }
    }
    st
}

fn scatter<const N: usize>(st: &[[u32; N]; 4], lanes: &mut [Lane<'_>]) {
    for (l, lane) in lanes.iter_mut().enumerate().take(N) {
        for (i, w) in lane.state.iter_mut().enumerate() {
            *w = st[i][l];
        }
    }
}

/// Advances up to 16 lanes over `blocks` blocks each (the caller checked the lengths and
/// that the CPU has AVX-512F).
pub fn compress16(lanes: &mut [Lane<'_>], blocks: usize) {
    let mut st = gather::<16>(lanes);
    let mut m = [[0u32; 16]; 16];
    for b in 0..blocks {
        transpose(lanes, b, &mut m);
        // SAFETY: `compress_lanes` called this only after `Kernel::Avx512.available()`
        // (`is_x86_feature_detected!("avx512f")`) said this CPU has the instructions.
        unsafe { rounds16(&mut st, &m) };
    }
    scatter(&st, lanes);
}

/// Advances up to 8 lanes over `blocks` blocks each (the caller checked the lengths and that
/// the CPU has AVX2).
pub fn compress8(lanes: &mut [Lane<'_>], blocks: usize) {
    let mut st = gather::<8>(lanes);
    let mut m = [[0u32; 8]; 16];
    for b in 0..blocks {
        transpose(lanes, b, &mut m);
        // SAFETY: `compress_lanes` called this only after `Kernel::Avx2.available()`
        // (`is_x86_feature_detected!("avx2")`) said this CPU has the instructions.
        unsafe { rounds8(&mut st, &m) };
    }
    scatter(&st, lanes);
}

/// One block of every lane. F, G, H and I are each one `vpternlogd` (its immediate is the
/// function's truth table over B = 0xF0, C = 0xCC, D = 0xAA) and the rotation one `vprold`.
#[target_feature(enable = "avx512f")]
fn rounds16(st: &mut [[u32; 16]; 4], m: &[[u32; 16]; 16]) {
    // SAFETY: each `[u32; 16]` is 64 readable (and for stores writable) bytes, the size of
    // `__m512i`; `loadu`/`storeu` need no alignment.
    let load = |a: &[u32; 16]| unsafe { _mm512_loadu_si512(a.as_ptr().cast()) };
    let w: [__m512i; 16] = std::array::from_fn(|i| load(&m[i]));
    let (a0, b0, c0, d0) = (load(&st[0]), load(&st[1]), load(&st[2]), load(&st[3]));
    let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
    macro_rules! F {
        ($b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0xCA>($b, $c, $d)
        };
    }
    macro_rules! G {
        ($b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0xE4>($b, $c, $d)
        };
    }
    macro_rules! H {
        ($b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0x96>($b, $c, $d)
        };
    }
    macro_rules! I {
        ($b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0x39>($b, $c, $d)
        };
    }
    macro_rules! step {
        ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $g:expr, $k:expr, $s:literal) => {
            let sum = _mm512_add_epi32(
                _mm512_add_epi32($a, $f!($b, $c, $d)),
                _mm512_add_epi32(_mm512_set1_epi32($k as u32 as i32), w[$g]),
            );
            $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>(sum));
        };
    }
    steps!(step, a, b, c, d);
    let out = [
        _mm512_add_epi32(a, a0),
        _mm512_add_epi32(b, b0),
        _mm512_add_epi32(c, c0),
        _mm512_add_epi32(d, d0),
    ];
    for (s, v) in st.iter_mut().zip(out) {
        // SAFETY: as for the loads above.
        unsafe { _mm512_storeu_si512(s.as_mut_ptr().cast(), v) };
    }
}

/// One block of every lane, with AVX2's plain logic and shifts.
#[target_feature(enable = "avx2")]
fn rounds8(st: &mut [[u32; 8]; 4], m: &[[u32; 8]; 16]) {
    // SAFETY: each `[u32; 8]` is 32 readable (and for stores writable) bytes, the size of
    // `__m256i`; `loadu`/`storeu` need no alignment.
    let load = |a: &[u32; 8]| unsafe { _mm256_loadu_si256(a.as_ptr().cast()) };
    let w: [__m256i; 16] = std::array::from_fn(|i| load(&m[i]));
    let (a0, b0, c0, d0) = (load(&st[0]), load(&st[1]), load(&st[2]), load(&st[3]));
    let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
    let ones = _mm256_set1_epi32(-1);
    // F = D ^ (B & (C ^ D)); G = C ^ (D & (B ^ C)); H = B ^ C ^ D; I = C ^ (B | !D).
    macro_rules! F {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
        };
    }
    macro_rules! G {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($c, _mm256_and_si256($d, _mm256_xor_si256($b, $c)))
        };
    }
    macro_rules! H {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($b, _mm256_xor_si256($c, $d))
        };
    }
    macro_rules! I {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($c, _mm256_or_si256($b, _mm256_xor_si256($d, ones)))
        };
    }
    macro_rules! step {
        ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $g:expr, $k:expr, $s:literal) => {
            let sum = _mm256_add_epi32(
                _mm256_add_epi32($a, $f!($b, $c, $d)),
                _mm256_add_epi32(_mm256_set1_epi32($k as u32 as i32), w[$g]),
            );
            $a = _mm256_add_epi32(
                $b,
                _mm256_or_si256(
                    _mm256_slli_epi32::<$s>(sum),
                    _mm256_srli_epi32::<{ 32 - $s }>(sum),
                ),
            );
        };
    }
    steps!(step, a, b, c, d);
    let out = [
        _mm256_add_epi32(a, a0),
        _mm256_add_epi32(b, b0),
        _mm256_add_epi32(c, c0),
        _mm256_add_epi32(d, d0),
    ];
    for (s, v) in st.iter_mut().zip(out) {
        // SAFETY: as for the loads above.
        unsafe { _mm256_storeu_si256(s.as_mut_ptr().cast(), v) };
    }
}
