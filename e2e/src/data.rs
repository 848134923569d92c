//! Test data written to disk in streams (no test holds a big file in memory)
//! and comparison of files and trees by BLAKE3 digest.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const BLOCK: usize = 1 << 20;

/// A pseudo-random MiB from `seed` (xorshift64*): incompressible, reproducible.
fn random_block(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut block = Vec::with_capacity(BLOCK);
    while block.len() < BLOCK {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        block.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    block
}

/// Writes `len` incompressible bytes derived from `seed` to `path`, one MiB at
/// a time; every MiB differs from the others (its index is stamped in front).
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent directory");
    }
    let mut block = random_block(seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create data file"));
    let mut written = 0u64;
    let mut index = 0u64;
    while written < len {
        block[..8].copy_from_slice(&index.to_le_bytes());
        let n = (len - written).min(BLOCK as u64) as usize;
        file.write_all(&block[..n]).expect("write data file");
        written += n as u64;
        index += 1;
    }
    file.flush().expect("flush data file");
}

/// Writes a text file of about `len` bytes: compressible, like logs or sources.
pub fn write_text_file(path: &Path, len: usize, seed: u64) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent directory");
    }
    let mut text = String::with_capacity(len + 80);
    let mut line = 0u64;
    while text.len() < len {
        text.push_str(&format!(
            "{seed:08x} line {line:06} the quick brown fox jumps over the lazy dog\n"
        ));
        line += 1;
    }
    std::fs::write(path, text).expect("write text file");
}

/// BLAKE3 digest of a file, read in a stream.
pub fn file_digest(path: &Path) -> blake3::Hash {
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = file.read(&mut buf).expect("read file");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize()
}

/// MD5 of a file in hex: the ETag S3 gives a single-PUT object.
pub fn file_md5_hex(path: &Path) -> String {
    use md5::Digest;
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut hasher = md5::Md5::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = file.read(&mut buf).expect("read file");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Fails unless `a` and `b` hold the same bytes.
pub fn assert_same_file(a: &Path, b: &Path) {
    let (la, lb) = (len(a), len(b));
    assert_eq!(
        la,
        lb,
        "{} has {la} bytes, {} has {lb}",
        a.display(),
        b.display()
    );
    assert_eq!(
        file_digest(a),
        file_digest(b),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// Paths of the files under `dir`, relative to it, sorted.
pub fn relative_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = crate::files_under(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).expect("file under dir").to_path_buf())
        .collect();
    files.sort();
    files
}

/// Fails unless the trees under `a` and `b` hold the same files with the same bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let files = relative_files(a);
    assert!(!files.is_empty(), "{} holds no file", a.display());
    assert_eq!(
        files,
        relative_files(b),
        "{} and {} hold different files",
        a.display(),
        b.display()
    );
    for f in &files {
        assert_same_file(&a.join(f), &b.join(f));
    }
}

/// Makes a small tree of mixed files under `dir`: random and text files in
/// nested directories, names with spaces and other odd characters; returns
/// its size in bytes.
pub fn write_mixed_tree(dir: &Path, random_mib: u64, seed: u64) -> u64 {
    let mut total = 0;
    for i in 0..random_mib {
        let path = dir.join(format!("blobs/part-{i:02}.bin"));
        // Some files are not a whole number of MiB.
        let len = (1 << 20) - i * 4099;
        write_random_file(&path, len, seed + i);
        total += len;
    }
    for i in 0..12u64 {
        let path = dir.join(format!("src/module {}/file-{i}.txt", i % 3));
        write_text_file(&path, 3000 + 7919 * i as usize, seed + 100 + i);
        total += len(&path);
    }
    write_text_file(&dir.join("README"), 500, seed);
    total += len(&dir.join("README"));
    // Characters SigV4 canonical URIs and listings must escape right.
    let odd = dir.join("src/plus+sign & ünïcødé ✓ 100%.txt");
    write_text_file(&odd, 700, seed + 1);
    total += len(&odd);
    total
}
