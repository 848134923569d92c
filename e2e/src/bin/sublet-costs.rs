//! `sublet-costs`: what each step of sublet's data path costs per byte on this machine,
//! single-threaded — the floor a PUT or GET can reach (docs/benchmarks.md, and the
//! per-byte table in e2e/bench/RESULTS.md). Build it in release:
//!
//! ```sh
//! cargo run --release -p sublet-e2e --bin sublet-costs -- [--dir /work/benchtmp] [--mib 64]
//! ```
//!
//! Every step runs over `--mib` MiB of data in 1 MiB pieces (a shard of a 4 MiB segment),
//! repeated until it has had 300 ms of CPU (this thread's CPU time, so a busy machine does not
//! inflate it); the best of three such runs is reported as CPU ns per byte and MB/s per core.
//! The fsync steps write real files under `--dir` and are wall time: they wait on the disk.
//! The rows of a provider's shard file (create, write, fsync, rename, fsync of the directory)
//! are CPU time: what a shard's file work takes from the cores a PUT shares.

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use md5::Digest;

const PIECE: usize = 1 << 20;

struct Args {
    dir: PathBuf,
    mib: usize,
}

/// The arguments after the program's name.
fn parse_args(given: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        dir: std::env::temp_dir(),
        mib: 64,
    };
    let mut it = given.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dir" => args.dir = PathBuf::from(value()?),
            "--mib" => {
                args.mib = value()?
                    .parse()
                    .map_err(|e| format!("--mib: {e}"))
                    .and_then(|n: usize| {
                        // The segment steps (AES-GCM, Reed–Solomon, copies) take 4 MiB.
                        if (4..=4096).contains(&n) {
                            Ok(n)
                        } else {
                            Err(format!(
                                "--mib must be 4..=4096 (one 4 MiB segment at least), not {n}"
                            ))
                        }
                    })?
            }
            "-h" | "--help" => {
                return Err("usage: sublet-costs [--dir DIR] [--mib N]".to_string());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Nanoseconds this thread has spent on a CPU (the first field of
/// `/proc/thread-self/schedstat`), so that other processes competing for the cores do not
/// count; wall time where the kernel does not say.
fn cpu_ns(wall: Instant) -> u128 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| wall.elapsed().as_nanos())
}

/// Runs `pass` (which handles `bytes` bytes) until it has had 300 ms of CPU, three times;
/// the best rate, as CPU nanoseconds per byte.
fn measure(bytes: usize, mut pass: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let per_pass = round(u32::MAX, || {
            pass();
            Ok(())
        });
        best = best.min(per_pass.unwrap_or(f64::MAX) / bytes as f64);
    }
    best
}

/// One round: runs `pass` until it has had 300 ms of CPU or ran `max_passes` times; CPU
/// nanoseconds per pass, or the first error of `pass`.
fn round(max_passes: u32, mut pass: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let origin = Instant::now();
    let start = cpu_ns(origin);
    let mut passes = 0u32;
    while cpu_ns(origin) - start < 300_000_000 && passes < max_passes {
        pass()?;
        passes += 1;
    }
    Ok((cpu_ns(origin) - start) as f64 / f64::from(passes.max(1)))
}

fn row(name: &str, ns_per_byte: f64, note: &str) {
    println!(
        "| {name} | {ns_per_byte:.3} | {:.0} | {note} |",
        1e3 / ns_per_byte
    );
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sublet-costs: {e}");
            std::process::exit(2);
        }
    };
    let total = args.mib * PIECE;
    let data: Vec<u8> = (0..total)
        .map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()[7])
        .collect();
    println!("| step (one thread) | CPU ns/byte | MB/s per core | note |");
    println!("|---|---|---|---|");

    let ns = measure(total, || {
        black_box(md5::Md5::digest(black_box(&data)));
    });
    row("MD5 (md-5, asm)", ns, "the ETag of every byte received");

    // The ETag's MD5 of several uploads at once in SIMD lanes (`sublet-md5x`, as the
    // gateway's `datapath::etag` runs them): `n` streams of `total / n` bytes each,
    // advanced in lock-step 64 KiB at a time; CPU per byte of all streams together.
    let kernel = sublet_md5x::Kernel::detect();
    for n in [1usize, 2, 4, 8, 16] {
        let each = total / n / sublet_md5x::BLOCK * sublet_md5x::BLOCK;
        let ns = measure(each * n, || {
            let mut states = vec![sublet_md5x::INIT; n];
            let streams: Vec<&[u8]> = data.chunks_exact(each).take(n).collect();
            for at in (0..each).step_by(64 * 1024) {
                let end = (at + 64 * 1024).min(each);
                for group in states
                    .chunks_mut(kernel.lanes())
                    .zip(streams.chunks(kernel.lanes()))
                {
                    let mut lanes: Vec<sublet_md5x::Lane<'_>> = group
                        .0
                        .iter_mut()
                        .zip(group.1)
                        .map(|(state, s)| sublet_md5x::Lane {
                            state,
                            data: &s[at..end],
                        })
                        .collect();
                    if let Err(e) = sublet_md5x::compress_lanes(kernel, &mut lanes) {
                        panic!("lanes: {e}");
                    }
                }
            }
            black_box(&states);
        });
        row(
            &format!("MD5, {n} streams in lanes (sublet-md5x, {kernel:?})"),
            ns,
            "the ETags of concurrent uploads (`datapath::etag`)",
        );
    }

    let ns = measure(total, || {
        black_box(crc_fast::checksum(
            crc_fast::CrcAlgorithm::Crc64Nvme,
            black_box(&data),
        ));
    });
    let target = crc_fast::get_calculator_target(crc_fast::CrcAlgorithm::Crc64Nvme);
    row(
        "CRC64NVME (crc-fast)",
        ns,
        &format!("the default S3 checksum; crc-fast runs {target}"),
    );

    let ns = measure(total, || {
        for piece in data.chunks(PIECE) {
            black_box(blake3::hash(black_box(piece)));
        }
    });
    row(
        "BLAKE3 (blake3::hash, 1 MiB pieces)",
        ns,
        "each shard: gateway and provider",
    );

    {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &[7u8; 32])
                .unwrap_or_else(|_| unreachable!("a 32-byte key is a valid AES-256 key")),
        );
        let mut buf = data[..4 * PIECE].to_vec();
        buf.reserve(16);
        let ns = measure(buf.len(), || {
            buf.truncate(4 * PIECE);
            let nonce = Nonce::assume_unique_for_key([1u8; 12]);
            key.seal_in_place_append_tag(nonce, Aad::empty(), &mut buf)
                .unwrap_or_else(|_| unreachable!("sealing in memory cannot fail"));
            black_box(&buf);
        });
        row(
            "AES-256-GCM seal (ring, 4 MiB)",
            ns,
            "a segment; TLS costs about the same per byte each way",
        );
    }

    {
        let shards: Vec<&[u8]> = data[..4 * PIECE].chunks(PIECE).collect();
        let ns = measure(4 * PIECE, || {
            black_box(
                reed_solomon_simd::encode(4, 2, black_box(&shards))
                    .unwrap_or_else(|e| unreachable!("4+2 of 1 MiB shards: {e}")),
            );
        });
        row(
            "Reed-Solomon 4+2 encode (reed-solomon-simd)",
            ns,
            "per byte of the segment; two 1 MiB parity shards",
        );
        let ns = measure(4 * PIECE, || {
            let mut dec = reed_solomon_simd::ReedSolomonDecoder::new(4, 2, PIECE)
                .unwrap_or_else(|e| unreachable!("4+2 of 1 MiB shards: {e}"));
            let parity = reed_solomon_simd::encode(4, 2, &shards).unwrap_or_default();
            let _ = dec.add_original_shard(0, shards[0]);
            let _ = dec.add_original_shard(1, shards[1]);
            for (i, p) in parity.iter().enumerate() {
                let _ = dec.add_recovery_shard(i, p);
            }
            black_box(
                dec.decode()
                    .map(|r| r.restored_original_iter().count())
                    .ok(),
            );
        });
        row(
            "Reed-Solomon 4+2 encode + rebuild of 2 data shards",
            ns,
            "a degraded read (both halves)",
        );
    }

    {
        let mut dst = vec![0u8; total];
        let ns = measure(total, || {
            dst.copy_from_slice(black_box(&data));
            black_box(&dst);
        });
        row("memcpy (warm buffers)", ns, "one copy of every byte");
        let ns = measure(4 * PIECE, || {
            let mut fresh: Vec<u8> = Vec::with_capacity(4 * PIECE);
            fresh.extend_from_slice(&data[..4 * PIECE]);
            black_box(&fresh);
        });
        row(
            "fresh 4 MiB buffer + copy",
            ns,
            "allocation, page faults and the copy",
        );
    }

    match tls_pair() {
        Ok((mut client, mut server)) => {
            let mut wire = Vec::with_capacity(64 << 10);
            let mut sink = vec![0u8; 64 << 10];
            let ns = measure(total, || {
                for record in data.chunks(TLS_RECORD) {
                    if let Err(e) =
                        tls_carry(&mut client, &mut server, record, &mut wire, &mut sink)
                    {
                        eprintln!("sublet-costs: TLS step failed: {e}");
                        std::process::exit(1);
                    }
                }
            });
            row(
                "TLS 1.3 seal + open (rustls, ring), 16 KiB records",
                ns,
                "both ends of one hop in one thread: shards to and from providers",
            );
        }
        Err(e) => eprintln!("sublet-costs: no TLS row: {e}"),
    }

    for chunk in [16 << 10, 64 << 10] {
        match loopback_pair() {
            Ok((mut tx, mut rx)) => {
                let mut sink = vec![0u8; chunk];
                let ns = measure(total, || {
                    for piece in data.chunks(chunk) {
                        let sent = std::io::Write::write_all(&mut tx, piece).and_then(|()| {
                            std::io::Read::read_exact(&mut rx, &mut sink[..piece.len()])
                        });
                        if let Err(e) = sent {
                            eprintln!("sublet-costs: loopback step failed: {e}");
                            std::process::exit(1);
                        }
                    }
                });
                row(
                    &format!("loopback TCP send + receive, {} KiB calls", chunk >> 10),
                    ns,
                    "the kernel's copies and syscalls of one hop (both ends)",
                );
            }
            Err(e) => eprintln!("sublet-costs: no loopback row: {e}"),
        }
    }

    let dir = args
        .dir
        .join(format!("sublet-costs-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("sublet-costs: cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let piece = &data[..PIECE];
    let mut n = 0u64;
    let fsync_write = |n: &mut u64, rename: bool| -> std::io::Result<()> {
        *n += 1;
        let tmp = dir.join(format!("tmp-{n}"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(piece)?;
        f.sync_all()?;
        if rename {
            std::fs::rename(&tmp, dir.join(format!("shard-{n}")))?;
            std::fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    };
    for (name, rename, note) in [
        (
            "write + fsync of a new 1 MiB file",
            false,
            "fixed cost per shard, spread over 1 MiB",
        ),
        (
            "... + rename + fsync of the directory",
            true,
            "what a provider does per shard",
        ),
    ] {
        let mut failed = None;
        let start = Instant::now();
        let mut files = 0u32;
        while start.elapsed() < Duration::from_secs(2) && files < 200 {
            if let Err(e) = fsync_write(&mut n, rename) {
                failed = Some(e);
                break;
            }
            files += 1;
        }
        if let Some(e) = failed {
            eprintln!("sublet-costs: fsync step failed: {e}");
            break;
        }
        let per_file = start.elapsed() / files.max(1);
        let ns = per_file.as_nanos() as f64 / PIECE as f64;
        row(
            name,
            ns,
            &format!("{:.2} ms per file; {note}", per_file.as_secs_f64() * 1e3),
        );
    }
    shard_file_rows(&dir, piece);
    let _ = std::fs::remove_dir_all(&dir);
}

/// How [`shard_file`] makes one shard file.
#[derive(Clone, Copy, PartialEq)]
enum ShardFileVariant {
    /// As the provider's store does (provider/src/store/write.rs).
    Store,
    /// The same right after many files of the directory were deleted (as a provider's are
    /// when objects are overwritten or deleted).
    AfterDeletes,
    /// With the whole file `fallocate`d after its creation.
    Fallocate,
}

/// The syscalls of [`sublet_provider::store`]'s write path for one shard of `piece.len()`
/// bytes: create (`create_new` of the temp file), write (header, the piece, the outboard,
/// the header again with the hash), fsync, rename, fsync of the directory. Only their sum
/// is timed: schedstat's CPU time moves at context switches and ticks, too coarse to split
/// one file's steps.
fn shard_file(
    dir: &std::path::Path,
    n: u64,
    piece: &[u8],
    variant: ShardFileVariant,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    // A format-2 header of a shard id of the gateway's length, and the outboard of the
    // piece as the store writes it.
    let header = [0x11u8; 8 + 2 + 2 + 8 + 8 + 32 + 80 + 32];
    let outboard = vec![0x22u8; sublet_provider::tree::outboard_len(piece.len() as u64) as usize];
    let tmp = dir.join(format!(".tmp-{n:016x}"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .open(&tmp)?;
    let size = (header.len() + piece.len() + outboard.len()) as u64;
    if variant == ShardFileVariant::Fallocate {
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)?;
    }
    file.write_all_at(&header, 0)?;
    file.write_all_at(piece, header.len() as u64)?;
    file.write_all_at(&outboard, (header.len() + piece.len()) as u64)?;
    file.write_all_at(&header, 0)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(format!("shard-{n}.shard")))?;
    drop(file);
    std::fs::File::open(dir)?.sync_all()
}

/// Rows of a provider's per-shard file work in CPU time: the variants in turn (each round
/// needs its own directory and, for one, deletes first), three [`round`]s of at most 2000
/// files; the best round of each.
fn shard_file_rows(dir: &std::path::Path, piece: &[u8]) {
    use ShardFileVariant::*;
    let variants = [
        (
            Store,
            "provider's shard file, CPU: create, write, fsync, rename, fsync dir",
        ),
        (
            AfterDeletes,
            "... right after 2000 deletes in the directory",
        ),
        (Fallocate, "... the file fallocated first"),
    ];
    let mut best = [f64::MAX; 3];
    let mut n = 0u64;
    for _round in 0..3 {
        for (i, (variant, _)) in variants.iter().enumerate() {
            let sub = dir.join(format!("shards-{i}"));
            if let Err(e) = std::fs::create_dir_all(&sub) {
                eprintln!("sublet-costs: cannot create {}: {e}", sub.display());
                return;
            }
            if *variant == AfterDeletes {
                let churn = (0..2000).try_for_each(|k| {
                    let path = sub.join(format!("old-{k}"));
                    std::fs::write(&path, [0u8; 4096])?;
                    std::fs::remove_file(&path)
                });
                if let Err(e) = churn {
                    eprintln!("sublet-costs: deletes before the shard file rows: {e}");
                    return;
                }
            }
            let per_file = round(2000, || {
                n += 1;
                shard_file(&sub, n, piece, *variant)
                    .map_err(|e| format!("shard file step failed: {e}"))
            });
            let per_file = match per_file {
                Ok(ns) => ns,
                Err(e) => {
                    eprintln!("sublet-costs: {e}");
                    return;
                }
            };
            best[i] = best[i].min(per_file);
            let _ = std::fs::remove_dir_all(&sub);
        }
    }
    for ((_, name), per_file) in variants.iter().zip(best) {
        row(
            name,
            per_file / piece.len() as f64,
            &format!("{:.0} µs CPU per 1 MiB shard", per_file / 1e3),
        );
    }
}

/// The plaintext of one TLS record at most (what rustls seals at a time).
const TLS_RECORD: usize = 16 << 10;

/// A TLS 1.3 client and server (rustls with ring, as the gateway and providers use) joined
/// in memory, their handshake done.
fn tls_pair() -> Result<(rustls::ClientConnection, rustls::ServerConnection), String> {
    use std::sync::Arc;
    fn err(what: &str, e: impl std::fmt::Display) -> String {
        format!("{what}: {e}")
    }
    let key = rcgen::KeyPair::generate().map_err(|e| err("key", e))?;
    let cert = rcgen::CertificateParams::new(vec!["costs.invalid".to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| err("certificate", e))?;
    let cert_der = cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| err("private key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err("server config", e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .map_err(|e| err("server certificate", e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).map_err(|e| err("root", e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err("client config", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("costs.invalid")
        .map_err(|e| err("server name", e))?;
    let mut client =
        rustls::ClientConnection::new(Arc::new(client), name).map_err(|e| err("client", e))?;
    let mut server =
        rustls::ServerConnection::new(Arc::new(server)).map_err(|e| err("server", e))?;
    let mut wire = Vec::new();
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok((client, server));
        }
        wire.clear();
        client
            .write_tls(&mut wire)
            .map_err(|e| err("handshake", e))?;
        feed(&mut server, &wire).map_err(|e| err("handshake", e))?;
        wire.clear();
        server
            .write_tls(&mut wire)
            .map_err(|e| err("handshake", e))?;
        feed(&mut client, &wire).map_err(|e| err("handshake", e))?;
    }
    Err("the TLS handshake did not finish".to_string())
}

/// Hands `bytes` from the wire to `conn` and lets it process them.
fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes)?;
        conn.process_new_packets().map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Seals `plain` on the client, opens it on the server and reads it out.
fn tls_carry(
    client: &mut rustls::ClientConnection,
    server: &mut rustls::ServerConnection,
    plain: &[u8],
    wire: &mut Vec<u8>,
    sink: &mut [u8],
) -> std::io::Result<()> {
    std::io::Write::write_all(&mut client.writer(), plain)?;
    wire.clear();
    while client.wants_write() {
        client.write_tls(wire)?;
    }
    feed(server, wire)?;
    let mut got = 0;
    while got < plain.len() {
        let n = std::io::Read::read(&mut server.reader(), sink)?;
        if n == 0 {
            return Err(std::io::Error::other("the TLS record carried nothing"));
        }
        got += n;
    }
    black_box(&sink);
    Ok(())
}

/// Both ends of a TCP connection over loopback.
fn loopback_pair() -> std::io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let tx = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (rx, _) = listener.accept()?;
    tx.set_nodelay(true)?;
    Ok((tx, rx))
}

#[cfg(test)]
mod tests {
    fn parse(args: &[&str]) -> Result<super::Args, String> {
        super::parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn fewer_mib_than_one_segment_are_refused_by_name() {
        // --mib 1 passed and then panicked slicing the first 4 MiB segment.
        for few in ["1", "3"] {
            let err = parse(&["--mib", few]).err().expect("refused");
            assert!(err.contains("--mib must be 4..=4096"), "{err}");
        }
        assert_eq!(parse(&["--mib", "4"]).map(|a| a.mib), Ok(4));
        assert_eq!(parse(&[]).map(|a| a.mib), Ok(64));
        assert!(parse(&["--mib"]).is_err());
        assert!(parse(&["--mib", "4097"]).is_err());
    }
}
