use md5::Digest as _;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::*;

fn reference(data: &[u8]) -> [u8; 16] {
    md5::Md5::digest(data).into()
}

/// Hashes every message in lock-step lanes of `kernel` the way the gateway does: each message
/// arrives in the pieces `cuts` gives, the lanes run over the blocks they all have, a lane
/// whose piece is done leaves and the next message's piece takes its place.
fn hash_in_lanes(
    kernel: Kernel,
    messages: &[Vec<u8>],
    cuts: &mut impl FnMut() -> usize,
) -> Vec<[u8; 16]> {
    struct Stream<'a> {
        md5: Md5,
        rest: &'a [u8],
        piece: Range<usize>,
        data: &'a [u8],
    }
    let mut streams: Vec<Stream<'_>> = messages
        .iter()
        .map(|m| Stream {
            md5: Md5::new(),
            rest: m,
            piece: 0..0,
            data: &[],
        })
        .collect();
    loop {
        // Every stream without blocks pending takes its next piece.
        for s in streams.iter_mut() {
            while s.piece.is_empty() && !s.rest.is_empty() {
                let n = cuts().min(s.rest.len());
                let (piece, rest) = s.rest.split_at(n);
                s.piece = s.md5.split(piece);
                s.data = piece;
                s.rest = rest;
            }
        }
        let mut busy: Vec<&mut Stream<'_>> =
            streams.iter_mut().filter(|s| !s.piece.is_empty()).collect();
        if busy.is_empty() {
            break;
        }
        busy.truncate(kernel.lanes());
        let blocks = busy
            .iter()
            .map(|s| s.piece.len() / BLOCK)
            .min()
            .unwrap_or(0);
        let run = blocks * BLOCK;
        let mut lanes: Vec<Lane<'_>> = busy
            .iter_mut()
            .map(|s| {
                let data = &s.data[s.piece.start..s.piece.start + run];
                s.piece.start += run;
                Lane {
                    state: s.md5.state_mut(),
                    data,
                }
            })
            .collect();
        compress_lanes(kernel, &mut lanes).expect("lanes accepted");
    }
    streams.into_iter().map(|s| s.md5.finalize()).collect()
}

fn message(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random()).collect()
}

#[test]
fn the_scalar_streaming_md5_equals_md5_for_every_length_to_300() {
    for len in 0..=300 {
        let m = message(len as u64, len);
        let mut h = Md5::new();
        h.update(&m);
        assert_eq!(h.finalize(), reference(&m), "length {len}");
        // Byte by byte: every split path.
        let mut h = Md5::new();
        for b in &m {
            h.update(std::slice::from_ref(b));
        }
        assert_eq!(h.finalize(), reference(&m), "length {len}, bytewise");
    }
}

#[test]
fn every_kernel_and_lane_count_equals_md5_for_every_length_to_300() {
    for kernel in Kernel::all_available() {
        for lanes in 1..=kernel.lanes() {
            for len in 0..=300usize {
                let messages: Vec<Vec<u8>> = (0..lanes)
                    .map(|l| message((len * 31 + l) as u64, len))
                    .collect();
                let got = hash_in_lanes(kernel, &messages, &mut || usize::MAX);
                for (l, m) in messages.iter().enumerate() {
                    assert_eq!(
                        got[l],
                        reference(m),
                        "{kernel:?}, {lanes} lanes, lane {l}, length {len}"
                    );
                }
            }
        }
    }
}

#[test]
fn lanes_finishing_at_different_times_each_get_their_own_digest() {
    for kernel in Kernel::all_available() {
        // More messages than lanes, of very different lengths, arriving in odd pieces.
        let lens = [
            0,
            1,
            63,
            64,
            65,
            4096,
            100_000,
            7,
            640,
            1 << 20,
            129,
            3333,
            64 * 17,
            55,
            56,
            57,
            200_001,
            12,
        ];
        let messages: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| message(1000 + i as u64, len))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let got = hash_in_lanes(kernel, &messages, &mut || rng.random_range(1..70_000));
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(
                got[i],
                reference(m),
                "{kernel:?}, message {i} of {} bytes",
                m.len()
            );
        }
    }
}

#[test]
fn the_widest_kernel_is_the_one_detected() {
    let all = Kernel::all_available();
    assert_eq!(all.last().copied(), Some(Kernel::detect()));
    assert_eq!(all.first().copied(), Some(Kernel::Scalar));
}

#[test]
fn lanes_that_cannot_run_in_lock_step_are_refused_untouched() {
    let kernel = Kernel::detect();
    let mut s1 = INIT;
    let mut s2 = INIT;
    let a = [0u8; 128];
    let b = [0u8; 64];
    let err = compress_lanes(
        kernel,
        &mut [
            Lane {
                state: &mut s1,
                data: &a,
            },
            Lane {
                state: &mut s2,
                data: &b,
            },
        ],
    )
    .expect_err("refused");
    assert_eq!(
        err,
        LaneError::UnequalLengths {
            lane: 1,
            len: 64,
            expected: 128
        }
    );
    assert!(err.to_string().contains("lock-step"), "{err}");
    let err = compress_lanes(
        kernel,
        &mut [Lane {
            state: &mut s1,
            data: &a[..100],
        }],
    )
    .expect_err("refused");
    assert_eq!(err, LaneError::NotWholeBlocks { len: 100 });
    let mut states = vec![INIT; kernel.lanes() + 1];
    let mut lanes: Vec<Lane<'_>> = states
        .iter_mut()
        .map(|s| Lane { state: s, data: &b })
        .collect();
    let err = compress_lanes(kernel, &mut lanes).expect_err("refused");
    assert_eq!(
        err,
        LaneError::TooManyLanes {
            lanes: kernel.lanes() + 1,
            max: kernel.lanes()
        }
    );
    assert_eq!((s1, s2), (INIT, INIT), "nothing hashed");
    for k in [Kernel::Avx2, Kernel::Avx512]
        .into_iter()
        .filter(|k| !k.available())
    {
        let err = compress_lanes(
            k,
            &mut [Lane {
                state: &mut s1,
                data: &b,
            }],
        )
        .expect_err("refused");
        assert_eq!(err, LaneError::Unavailable(k));
    }
}

#[test]
fn no_lanes_is_nothing_to_do() {
    assert_eq!(compress_lanes(Kernel::detect(), &mut []), Ok(()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_messages_in_random_pieces_equal_md5(
        lens in prop::collection::vec(0usize..20_000, 1..40),
        seed in any::<u64>(),
        max_piece in 1usize..5000,
    ) {
        let messages: Vec<Vec<u8>> =
            lens.iter().enumerate().map(|(i, &len)| message(seed ^ i as u64, len)).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for kernel in Kernel::all_available() {
            let got = hash_in_lanes(kernel, &messages, &mut || rng.random_range(1..=max_piece));
            for (i, m) in messages.iter().enumerate() {
                prop_assert_eq!(got[i], reference(m), "{:?}, message {}", kernel, i);
            }
        }
    }
}

#[test]
fn a_stream_resumed_after_blocks_hashed_elsewhere_equals_md5() {
    let m = message(9, 1000);
    for cut in [0, 64, 640, 960] {
        let mut state = INIT;
        compress(&mut state, &m[..cut]);
        let mut md5 = Md5::resume(state, cut as u64).expect("whole blocks");
        md5.update(&m[cut..]);
        assert_eq!(md5.finalize(), reference(&m), "resumed at {cut}");
    }
    assert!(
        Md5::resume(INIT, 65).is_none(),
        "not a whole number of blocks"
    );
}
