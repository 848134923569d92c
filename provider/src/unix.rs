//! Providers on the gateway's own machine, over a Unix socket and without TLS: the `unix:`
//! address, the socket file (its mode, stale files), which local users may connect, and the
//! handshake in which each side proves its node key, so a gateway still pins the provider's
//! node id and a provider still learns the gateway's.
//!
//! The kernel carries the bytes: nobody on a network path can read or alter them, so TLS is
//! pure cost here. What TLS also gave — who is on the other end — comes from the kernel
//! (`SO_PEERCRED`: the peer's uid) and from the handshake (each side signs the other's fresh
//! nonce with its ed25519 node key).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ring::rand::SecureRandom;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::identity::{NodeId, NodeIdentity};

/// How an address names a Unix socket: `unix:/path` or `unix:///path`.
pub const SCHEME: &str = "unix:";

/// The longest socket path the kernel takes (`sun_path` is 108 bytes, NUL included).
pub const MAX_PATH_LEN: usize = 107;

const HELLO_CLIENT: &[u8; 8] = b"sublet\x01c";
/// A gateway's greeting on a connection for short-circuit reads ([`Mode::ShortCircuit`]).
/// A provider without them refuses it as a stranger, and the gateway then reads over gRPC.
const HELLO_CLIENT_FD: &[u8; 8] = b"sublet\x01f";
const HELLO_SERVER: &[u8; 8] = b"sublet\x01s";
const SIGNED_BY_CLIENT: &[u8] = b"sublet unix handshake v1: gateway";
const SIGNED_BY_SERVER: &[u8] = b"sublet unix handshake v1: provider";
const NONCE: usize = 32;
const PROOF: usize = 32 + 64;

/// Whether `address` names a Unix socket (whether or not it is a valid one).
pub fn is_unix_address(address: &str) -> bool {
    address.trim().starts_with(SCHEME)
}

/// The socket path of a `unix:/path` or `unix:///path` address; an error naming the
/// problem for anything else (a relative path, a host, a path the kernel cannot take).
pub fn parse_address(address: &str) -> Result<PathBuf, String> {
    let text = address.trim();
    let Some(rest) = text.strip_prefix(SCHEME) else {
        return Err(format!(
            "{address:?} is not a Unix socket address: use unix:/path/to/socket"
        ));
    };
    let path = match rest.strip_prefix("//") {
        // `unix:///path`: an empty authority, then the absolute path.
        Some(after) if after.starts_with('/') => after,
        Some(_) => {
            return Err(format!(
                "{address:?}: a Unix socket address has no host; use unix:///path/to/socket or unix:/path/to/socket"
            ));
        }
        None => rest,
    };
    check_socket_path(Path::new(path)).map_err(|e| format!("{address:?}: {e}"))?;
    Ok(PathBuf::from(path))
}

/// Refuses a socket path the provider cannot listen on or a gateway cannot dial.
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    let text = path.as_os_str().as_encoded_bytes();
    if !path.is_absolute() {
        return Err(format!(
            "the socket path {:?} is not absolute; write it from the root, e.g. /run/sublet/provider.sock",
            path.display()
        ));
    }
    if text.ends_with(b"/") {
        return Err(format!(
            "the socket path {:?} names a directory; add the socket's file name",
            path.display()
        ));
    }
    if text.contains(&0) {
        return Err("the socket path contains a NUL byte".to_string());
    }
    if text.len() > MAX_PATH_LEN {
        return Err(format!(
            "the socket path {:?} is {} bytes; the kernel takes at most {MAX_PATH_LEN}: use a shorter one",
            path.display(),
            text.len()
        ));
    }
    Ok(())
}

/// Whether a peer of uid `peer` may connect to a provider running as `own` that also lets
/// the uids `allowed` in. The uid only opens the door: every call still needs an allowed
/// node id or the cluster token, as over TLS.
pub fn peer_allowed(peer: u32, own: u32, allowed: &[u32]) -> bool {
    peer == own || allowed.contains(&peer)
}

/// A provider's Unix socket: listening, and removed again when dropped (if it is still ours).
#[derive(Debug)]
pub struct UnixSocket {
    pub listener: tokio::net::UnixListener,
    pub path: PathBuf,
    /// The uid the socket file belongs to: the provider process's own.
    pub own_uid: u32,
    inode: (u64, u64),
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        // Only the file this provider made: another provider may have replaced it since.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.inode
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listen on a Unix socket at `path`: mode 0600 (0660 when `group` is set, for the uids
/// allowed besides the provider's own, who reach it through the socket's group), in a
/// directory only the provider's user may write. A socket file already there is replaced
/// only if nothing listens on it; any other file there is left alone and refused.
/// Must be called inside a Tokio runtime.
pub fn bind(path: &Path, group: bool) -> anyhow::Result<UnixSocket> {
    check_socket_path(path).map_err(|e| anyhow::anyhow!("--listen-unix: {e}"))?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("--listen-unix: {} has no directory", path.display());
    };
    let dir_meta = std::fs::metadata(dir).with_context(|| {
        format!(
            "the directory {} of the Unix socket: create it (owned by the provider's user, mode 0700 or 0750)",
            dir.display()
        )
    })?;
    if !dir_meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    // Bound under a temporary name, made private, then renamed into place: the socket is
    // never reachable with the process umask's mode.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.as_os_str().len() > MAX_PATH_LEN {
        bail!(
            "--listen-unix: {} is too long to bind through a temporary name; use a path of at most {} bytes",
            path.display(),
            MAX_PATH_LEN - 16
        );
    }
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("binding the Unix socket {}", tmp.display()))?;
    let placed = place(listener, &tmp, path, &dir_meta, group);
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed
}

/// Checks the directory against the socket's owner, then gives the socket bound at `tmp`
/// its mode and moves it to `path`.
fn place(
    listener: std::os::unix::net::UnixListener,
    tmp: &Path,
    path: &Path,
    dir_meta: &std::fs::Metadata,
    group: bool,
) -> anyhow::Result<UnixSocket> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::symlink_metadata(tmp)?;
    let own_uid = meta.uid();
    if dir_meta.uid() != own_uid {
        bail!(
            "the directory {} of the Unix socket belongs to uid {}, not to the provider's uid {own_uid}: whoever owns it could replace the socket",
            dir.display(),
            dir_meta.uid()
        );
    }
    if dir_meta.mode() & 0o022 != 0 {
        bail!(
            "the directory {} of the Unix socket is writable by other users (mode {:o}): they could replace the socket; chmod it 0700 (or 0750)",
            dir.display(),
            dir_meta.mode() & 0o7777
        );
    }
    let mode = if group { 0o660 } else { 0o600 };
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", tmp.display()))?;
    replace_if_stale(path)?;
    std::fs::rename(tmp, path)
        .with_context(|| format!("placing the Unix socket at {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(UnixSocket {
        listener: tokio::net::UnixListener::from_std(listener)?,
        path: path.to_path_buf(),
        own_uid,
        inode: (meta.dev(), meta.ino()),
    })
}

/// Makes way for a new socket at `path`: nothing there, or a socket nobody listens on.
fn replace_if_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("looking at {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it: remove it or pick another --listen-unix path",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "another process listens on the Unix socket {}; stop it or pick another --listen-unix path",
            path.display()
        ),
        // Nothing listens: a socket left behind by a provider that died.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "checking whether anything listens on {}; refusing to replace it",
                path.display()
            )
        }),
    }
}

/// What a connection on the Unix socket carries after the handshake, as the gateway's
/// greeting says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// gRPC over HTTP/2, as over TLS.
    Grpc,
    /// Short-circuit reads: file descriptors of whole shards ([`crate::shortcircuit`]).
    ShortCircuit,
}

/// The gateway's side of the handshake: answers once the peer proved it holds the key of
/// node `expected`. Nothing else (the cluster token included) is sent before.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    identity: &NodeIdentity,
    expected: NodeId,
) -> io::Result<()> {
    client_handshake_for(stream, identity, expected, Mode::Grpc).await
}

/// [`client_handshake`] for a connection of `mode`.
pub async fn client_handshake_for<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    identity: &NodeIdentity,
    expected: NodeId,
    mode: Mode,
) -> io::Result<()> {
    let (peer, _) = exchange(stream, identity, Role::Client(mode)).await?;
    if peer != expected {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the provider on this socket is node {peer}, expected {expected}"),
        ));
    }
    Ok(())
}

/// The provider's side of the handshake: answers the node id the gateway proved it holds
/// and what the connection is for.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    identity: &NodeIdentity,
) -> io::Result<(NodeId, Mode)> {
    exchange(stream, identity, Role::Server).await
}

#[derive(Clone, Copy)]
enum Role {
    Client(Mode),
    Server,
}

/// Both sides send a greeting with a fresh nonce, then their public key and a signature over
/// their role, the other's nonce and their own; each checks the other's. Fixed sizes: a
/// peer cannot make either side read more than 136 bytes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    identity: &NodeIdentity,
    role: Role,
) -> io::Result<(NodeId, Mode)> {
    let (ours, we_sign, they_sign) = match role {
        Role::Client(Mode::Grpc) => (HELLO_CLIENT, SIGNED_BY_CLIENT, SIGNED_BY_SERVER),
        Role::Client(Mode::ShortCircuit) => (HELLO_CLIENT_FD, SIGNED_BY_CLIENT, SIGNED_BY_SERVER),
        Role::Server => (HELLO_SERVER, SIGNED_BY_SERVER, SIGNED_BY_CLIENT),
    };
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut nonce = [0u8; NONCE];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| io::Error::other("no system randomness for the handshake nonce"))?;
    let mut hello = [0u8; 8 + NONCE];
    hello[..8].copy_from_slice(ours);
    hello[8..].copy_from_slice(&nonce);
    stream.write_all(&hello).await?;
    stream.flush().await?;
    let mut got = [0u8; 8 + NONCE];
    stream.read_exact(&mut got).await?;
    let mode = match (role, &got[..8]) {
        (Role::Client(mode), hello) if hello == HELLO_SERVER => mode,
        (Role::Server, hello) if hello == HELLO_CLIENT => Mode::Grpc,
        (Role::Server, hello) if hello == HELLO_CLIENT_FD => Mode::ShortCircuit,
        _ => {
            return Err(invalid(
                "the peer does not speak sublet's Unix-socket handshake (is this a sublet provider socket?)",
            ));
        }
    };
    let their_nonce = &got[8..];

    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(identity.pkcs8_der())
        .map_err(|e| io::Error::other(format!("the node key cannot sign: {e}")))?;
    let signed = [we_sign, their_nonce, &nonce].concat();
    let mut proof = [0u8; PROOF];
    proof[..32].copy_from_slice(identity.public_key());
    proof[32..].copy_from_slice(pair.sign(&signed).as_ref());
    stream.write_all(&proof).await?;
    stream.flush().await?;

    let mut got = [0u8; PROOF];
    stream.read_exact(&mut got).await?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&got[..32]);
    let expected = [they_sign, &nonce[..], their_nonce].concat();
    UnparsedPublicKey::new(&ED25519, &key)
        .verify(&expected, &got[32..])
        .map_err(|_| invalid("the peer's handshake signature does not verify"))?;
    Ok((NodeId::from_public_key(&key), mode))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unix_addresses_parse_and_bad_ones_are_refused_by_name() {
        assert_eq!(
            parse_address("unix:/run/sublet/p.sock").unwrap(),
            PathBuf::from("/run/sublet/p.sock")
        );
        assert_eq!(
            parse_address(" unix:///run/sublet/p.sock ").unwrap(),
            PathBuf::from("/run/sublet/p.sock")
        );
        let long = format!("unix:/{}", "x".repeat(200));
        for (bad, says) in [
            ("unix:", "not absolute"),
            ("unix:relative.sock", "not absolute"),
            ("unix://host/p.sock", "no host"),
            ("unix:///run/sublet/", "names a directory"),
            ("unix:/run/a\0b", "NUL"),
            (long.as_str(), "at most 107"),
            ("nas:7480", "not a Unix socket address"),
        ] {
            let err = parse_address(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        assert!(is_unix_address("unix:/x") && !is_unix_address("https://nas:7480"));
    }

    #[test]
    fn only_the_providers_own_uid_and_the_listed_ones_may_connect() {
        assert!(peer_allowed(1000, 1000, &[]));
        assert!(!peer_allowed(1001, 1000, &[]));
        assert!(!peer_allowed(0, 1000, &[]), "root is not let in implicitly");
        assert!(peer_allowed(1001, 1000, &[1001, 1002]));
        assert!(!peer_allowed(1003, 1000, &[1001, 1002]));
    }

    #[tokio::test]
    async fn the_handshake_names_both_nodes_and_a_wrong_provider_is_refused() {
        let gateway = NodeIdentity::generate();
        let provider = NodeIdentity::generate();
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (client, server) = tokio::join!(
            client_handshake(&mut a, &gateway, provider.node_id()),
            server_handshake(&mut b, &provider)
        );
        client.unwrap();
        assert_eq!(server.unwrap(), (gateway.node_id(), Mode::Grpc));

        // A connection for short-circuit reads says so in its greeting.
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (client, server) = tokio::join!(
            client_handshake_for(&mut a, &gateway, provider.node_id(), Mode::ShortCircuit),
            server_handshake(&mut b, &provider)
        );
        client.unwrap();
        assert_eq!(server.unwrap(), (gateway.node_id(), Mode::ShortCircuit));

        // Another node on the socket: the gateway refuses it, naming both ids.
        let impostor = NodeIdentity::generate();
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (client, _) = tokio::join!(
            client_handshake(&mut a, &gateway, provider.node_id()),
            server_handshake(&mut b, &impostor)
        );
        let err = client.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            err.to_string().contains(&provider.node_id().to_string())
                && err.to_string().contains(&impostor.node_id().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_replayed_or_forged_proof_does_not_verify() {
        // A peer that shows the provider's real public key without its private key: it can
        // only replay an old signature, which covers other nonces.
        let gateway = NodeIdentity::generate();
        let provider = NodeIdentity::generate();
        let (mut a, mut b) = tokio::io::duplex(1024);
        let shown = *provider.public_key();
        let forger = async move {
            let mut hello = [0u8; 8 + NONCE];
            b.read_exact(&mut hello).await.unwrap();
            let mut mine = HELLO_SERVER.to_vec();
            mine.extend_from_slice(&[7u8; NONCE]);
            b.write_all(&mine).await.unwrap();
            let mut theirs = [0u8; PROOF];
            b.read_exact(&mut theirs).await.unwrap();
            let mut proof = shown.to_vec();
            proof.extend_from_slice(&[9u8; 64]);
            b.write_all(&proof).await.unwrap();
            b
        };
        let (client, _b) = tokio::join!(
            client_handshake(&mut a, &gateway, provider.node_id()),
            forger
        );
        let err = client.unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");

        // Something else on the socket (here, a TLS client hello's first bytes).
        let (mut a, mut b) = tokio::io::duplex(1024);
        let other = async move {
            // 40 bytes, as many as a greeting.
            let mut tls = vec![0x16, 3, 1, 0, 0xc8, 1];
            tls.resize(8 + NONCE, 0);
            b.write_all(&tls).await.unwrap();
            b
        };
        let (server, _b) = tokio::join!(server_handshake(&mut a, &provider), other);
        assert!(
            server.unwrap_err().to_string().contains("does not speak"),
            "a non-sublet peer is refused"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let first = bind(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = bind(&path, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("another process listens"),
            "{err:#}"
        );
        // Left behind as if its provider died: the file stays, nothing listens.
        let leftover = std::os::unix::net::UnixListener::bind(dir.path().join("q.sock")).unwrap();
        drop(leftover);
        let stale = dir.path().join("q.sock");
        assert!(stale.exists());
        let second = bind(&stale, true).unwrap();
        assert_eq!(std::fs::metadata(&stale).unwrap().mode() & 0o777, 0o660);
        drop(second);
        assert!(
            !stale.exists(),
            "a provider removes its socket when it stops"
        );

        let file = dir.path().join("data");
        std::fs::write(&file, b"keep me").unwrap();
        let err = bind(&file, false).unwrap_err();
        assert!(format!("{err:#}").contains("is not a socket"), "{err:#}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind(&open.path().join("p.sock"), false).unwrap_err();
        assert!(
            format!("{err:#}").contains("writable by other users"),
            "{err:#}"
        );
        drop(first);
    }
}
