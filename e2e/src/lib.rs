//! Helpers shared by the end-to-end tests in `tests/`: find the workspace's
//! binaries, pick free ports, wait for daemons to come up; run `sublet dev`
//! ([`dev`]), gateways over provider processes to break ([`cluster`]), a
//! throwaway PostgreSQL for several of them ([`postgres`]), the market and the
//! providers lending space on it ([`market`]), the real S3 clients
//! ([`clients`]) and make test data ([`data`]); any
//! other daemon killed when dropped ([`daemon`]); a real Kubernetes API server
//! ([`apiserver`]) and a real single-node Kubernetes ([`kube_cluster`]); [`bench`] is the `sublet-bench`
//! load generator; [`browser`] finds headless Chromium; [`skip`] lets a test without its outside program skip with one line
//! (or fail, under `SUBLET_REQUIRE_...=1`).

pub mod apiserver;
pub mod bench;
pub mod browser;
pub mod clients;
pub mod cluster;
pub mod daemon;
pub mod data;
pub mod dev;
pub mod kube_cluster;
pub mod market;
pub mod postgres;
pub mod prometheus;
pub mod skip;
pub mod tls;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The node id of the provider whose state is in `dir` (`sublet-provider --print-node-id`,
/// which makes the node key when there is none yet).
pub fn provider_node_id(dir: &Path) -> sublet_provider::identity::NodeId {
    let out = Command::new(workspace_binary("sublet-provider", "sublet-provider"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--print-node-id")
        .output()
        .expect("run sublet-provider --print-node-id");
    assert!(
        out.status.success(),
        "sublet-provider --print-node-id: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .expect("sublet-provider --print-node-id printed a node id")
}

/// Path of a binary built from this workspace, up to date with the sources.
///
/// `cargo test --workspace` builds the binaries already, but `cargo test -p
/// sublet-e2e` does not, and a binary left by an older build would test old
/// code: so a binary missing or older than the workspace's sources is built,
/// once per test process. A fresh one is left alone: `cargo build -p` resolves
/// other features than the workspace-wide test build and would rebuild much
/// of the tree.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf();
    let bin = profile_dir.join(name);
    // Held across the build so parallel tests wait for it instead of racing it.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(name) && !is_newer_than_sources(&bin) {
        let release = profile_dir.ends_with("release");
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--quiet", "-p", package, "--bin", name]);
        // cargo gives the test the variables of the package under test; build
        // scripts that read one (ring reads CARGO_MANIFEST_DIR) would see it
        // change between this build and the next `cargo test` and rebuild
        // half the tree each time.
        for (var, _) in std::env::vars_os() {
            let var = var.to_string_lossy();
            if var.starts_with("CARGO_PKG_")
                || var.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&var.as_ref())
            {
                cargo.env_remove(var.as_ref());
            }
        }
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
        built.insert(name.to_string());
    }
    bin
}

/// Whether `bin` exists and is newer than every source file of the workspace
/// outside `e2e/` (hidden entries and target directories skipped).
fn is_newer_than_sources(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if name.starts_with('.') || name.starts_with("target") || path == root.join("e2e") {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.modified().is_ok_and(|m| m > built) {
                return false;
            }
        }
    }
    true
}

/// A loopback address with a port nothing listens on right now.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address")
}

/// Plain HTTP/1.0 GET on loopback; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    read_response(&mut stream)
}

/// Reads an HTTP/1.0 answer to its end (the server closes the connection): (status, body);
/// status 0 when the answer has no status line.
pub(crate) fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Waits until `GET path` answers 200, or panics after `timeout`.
pub fn wait_http_ok(addr: SocketAddr, path: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(addr, path) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{addr}{path} did not answer 200 within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
