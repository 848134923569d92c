//! Per-byte cost of each kernel at each lane count, on one thread:
//! `cargo run --release -p sublet-md5x --example lanes`.
use std::time::Instant;

use sublet_md5x::{INIT, Kernel, Lane, compress_lanes};

fn main() {
    let piece = 64 * 1024;
    let data: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; piece]).collect();
    for kernel in Kernel::all_available() {
        for lanes in [1, 2, 4, 8, 16].into_iter().filter(|&n| n <= kernel.lanes()) {
            let mut states = vec![INIT; lanes];
            let rounds = 400;
            let start = Instant::now();
            for _ in 0..rounds {
                let mut ls: Vec<Lane<'_>> = states
                    .iter_mut()
                    .zip(&data)
                    .map(|(s, d)| Lane { state: s, data: d })
                    .collect();
                compress_lanes(kernel, &mut ls).expect("lanes");
            }
            let bytes = (rounds * lanes * piece) as f64;
            let ns = start.elapsed().as_nanos() as f64;
            println!("{kernel:?} {lanes:>2} lanes: {:.3} ns/byte, {:.0} MB/s", ns / bytes, bytes / ns * 1000.0);
        }
    }
}
