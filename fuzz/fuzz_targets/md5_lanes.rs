//! The multi-buffer MD5 (`sublet-md5x`) against `md-5`: the input's first bytes choose the
//! kernel, the piece size and how many messages it is cut into; the rest is cut into that
//! many messages of the lengths it gives, hashed together in lock-step lanes the way the
//! gateway's `datapath::etag` feeds them (pieces arrive unevenly, a lane whose piece is done
//! leaves and another takes its place). Every digest must equal `md-5`'s.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use md5::Digest as _;
use sublet_md5x::{BLOCK, Kernel, Lane, Md5, compress_lanes};

struct Stream<'a> {
    md5: Md5,
    rest: &'a [u8],
    data: &'a [u8],
    piece: Range<usize>,
}

fuzz_target!(|input: &[u8]| {
    let [k, piece, n, rest @ ..] = input else {
        return;
    };
    let kernels = Kernel::all_available();
    let kernel = kernels[*k as usize % kernels.len()];
    let piece = 1 + *piece as usize * 37;
    let n = 1 + *n as usize % 24;
    // Message i is a slice of the rest, of a length from its own byte (0..=255 * 41).
    let (lens, mut body) = rest.split_at(n.min(rest.len()));
    let mut messages = Vec::new();
    for &l in lens {
        let (m, b) = body.split_at((l as usize * 41).min(body.len()));
        messages.push(m);
        body = b;
    }
    let mut streams: Vec<Stream<'_>> = messages
        .iter()
        .map(|m| Stream {
            md5: Md5::new(),
            rest: m,
            data: &[],
            piece: 0..0,
        })
        .collect();
    loop {
        for s in streams.iter_mut() {
            while s.piece.is_empty() && !s.rest.is_empty() {
                let (p, r) = s.rest.split_at(piece.min(s.rest.len()));
                s.piece = s.md5.split(p);
                s.data = p;
                s.rest = r;
            }
        }
        let mut busy: Vec<&mut Stream<'_>> =
            streams.iter_mut().filter(|s| !s.piece.is_empty()).collect();
        if busy.is_empty() {
            break;
        }
        busy.truncate(kernel.lanes());
        let run = busy
            .iter()
            .map(|s| s.piece.len() / BLOCK)
            .min()
            .unwrap_or(0)
            * BLOCK;
        let mut lanes: Vec<Lane<'_>> = busy
            .iter_mut()
            .map(|s| {
                let start = s.piece.start;
                s.piece.start += run;
                Lane {
                    state: s.md5.state_mut(),
                    data: &s.data[start..start + run],
                }
            })
            .collect();
        if let Err(e) = compress_lanes(kernel, &mut lanes) {
            panic!("lanes refused: {e}");
        }
    }
    for (s, m) in streams.into_iter().zip(&messages) {
        assert_eq!(
            s.md5.finalize(),
            <[u8; 16]>::from(md5::Md5::digest(m)),
            "{kernel:?}"
        );
    }
});
