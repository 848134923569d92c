//! Per-byte cost of each kernel at each lane count, in this thread's CPU time (so other
//! processes on the cores do not count): `cargo run --release -p sublet-md5x --example lanes`.

use sublet_md5x::{INIT, Kernel, Lane, compress_lanes};

/// Nanoseconds this thread has run (`/proc/thread-self/schedstat`; 0 where unreadable).
fn cpu_ns() -> u128 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    println!("| kernel | streams | CPU ns/byte | MB/s per core |");
    println!("|---|---|---|---|");
    let piece = 64 * 1024;
    let data: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; piece]).collect();
    for kernel in Kernel::all_available() {
        for lanes in [1, 2, 4, 8, 16]
            .into_iter()
            .filter(|&n| n <= kernel.lanes())
        {
            let mut states = vec![INIT; lanes];
            let rounds = 400;
            let start = cpu_ns();
            for _ in 0..rounds {
                let mut ls: Vec<Lane<'_>> = states
                    .iter_mut()
                    .zip(&data)
                    .map(|(s, d)| Lane { state: s, data: d })
                    .collect();
                compress_lanes(kernel, &mut ls).expect("lanes");
            }
            let bytes = (rounds * lanes * piece) as f64;
            let ns = (cpu_ns() - start) as f64;
            println!(
                "| {kernel:?} | {lanes} | {:.3} | {:.0} |",
                ns / bytes,
                bytes / ns * 1000.0
            );
        }
    }
}
