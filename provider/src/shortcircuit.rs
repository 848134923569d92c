//! Short-circuit reads: a gateway on the provider's machine asks, over the provider's Unix
//! socket, for a whole shard's file descriptor instead of its bytes, and reads the shard
//! itself (as HDFS's short-circuit local reads do).
//!
//! Only for whole shards whose bytes the gateway authenticates itself (the data shards of
//! an encrypted segment: AES-GCM's tag covers them); every other read stays on the checked
//! gRPC path. The connection is opened like a gRPC one (`SO_PEERCRED` uid rule, node-key
//! handshake) but greets with [`Mode::ShortCircuit`]; each request then names the shard and
//! carries the cluster token, and the provider answers with the fd (`SCM_RIGHTS`), the
//! offset and the length of the shard's bytes in the file. The fd is opened read-only and
//! grants the read of that one shard file; no path is sent. The provider holds a slot of
//! [`MAX_OPEN`] from opening the file until the gateway says it closed it.
//!
//! Wire format, after the handshake: requests are frames of a 4-byte big-endian length
//! (at most [`MAX_REQUEST`]) and a body: `R`, the token (u16 length, bytes), the shard id
//! (u16 length, bytes); or `D` (done: the fd of the last answer is closed). An answer is a
//! status byte, the offset and length (u64 each, big-endian), a message (u16 length, at most
//! [`MAX_MESSAGE`] bytes), with the fd attached to it when the status is [`Status::Ok`].

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::HANDSHAKE_TIMEOUT;
use crate::client_error::{ClientError, ErrorKind};
use crate::config::Faults;
use crate::identity::{NodeId, NodeIdentity};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::unix::Mode;

/// Largest request body a provider reads: a token and a shard id with room to spare.
pub const MAX_REQUEST: usize = 2048;
/// Longest message an answer carries.
pub const MAX_MESSAGE: usize = 512;
/// Shard files a provider has handed out and not yet heard closed, over all connections;
/// a request beyond it is answered [`Status::Busy`] (the gateway reads over gRPC).
pub const MAX_OPEN: usize = 256;
/// Idle connections a gateway keeps per provider.
const MAX_IDLE: usize = 32;
/// Dials (connect and handshake) a gateway has under way per provider; a read finding
/// them all busy goes over gRPC. Dials outlive the reads that asked for them (up to
/// [`HANDSHAKE_TIMEOUT`]), so without a bound a stalling provider would collect one per read.
const MAX_DIALS: usize = 8;
/// How long a gateway reads over gRPC only after a provider refused the mode.
const REFUSED_FOR: Duration = Duration::from_secs(60);
const ANSWER_HEAD: usize = 1 + 8 + 8 + 2;

/// What an answer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The fd is attached.
    Ok = 0,
    NotFound = 1,
    /// The shard is corrupt or incomplete: never handed out.
    DataLoss = 2,
    /// Not an allowed node and no valid token (market tenants read over gRPC).
    Unauthenticated = 3,
    InvalidArgument = 4,
    /// Too many files out: read over gRPC.
    Busy = 5,
    Other = 6,
    /// Short-circuit reads are off on this provider (`--short-circuit-reads false`).
    Off = 7,
}

impl Status {
    fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::DataLoss,
            3 => Status::Unauthenticated,
            4 => Status::InvalidArgument,
            5 => Status::Busy,
            6 => Status::Other,
            7 => Status::Off,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Status::Ok => "Ok",
            Status::NotFound => "NotFound",
            Status::DataLoss => "DataLoss",
            Status::Unauthenticated => "Unauthenticated",
            Status::InvalidArgument => "InvalidArgument",
            Status::Busy => "ResourceExhausted",
            Status::Other => "Internal",
            Status::Off => "Unimplemented",
        }
    }
}

/// An answer's fields (the fd travels beside them).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    status: Status,
    offset: u64,
    length: u64,
    message: String,
}

impl Answer {
    fn refusal(status: Status, message: impl Into<String>) -> Answer {
        Answer {
            status,
            offset: 0,
            length: 0,
            message: message.into(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut message = self.message.as_bytes();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !self.message.is_char_boundary(end) {
                end -= 1;
            }
            message = &message[..end];
        }
        let mut out = Vec::with_capacity(ANSWER_HEAD + message.len());
        out.push(self.status as u8);
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&(message.len() as u16).to_be_bytes());
        out.extend_from_slice(message);
        out
    }
}

/// A request: `R` with a token and a shard id, or `D`.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Read { token: Vec<u8>, shard_id: String },
    Done,
}

fn encode_read(token: &[u8], shard_id: &str) -> Vec<u8> {
    let mut body = vec![b'R'];
    body.extend_from_slice(&(token.len() as u16).to_be_bytes());
    body.extend_from_slice(token);
    body.extend_from_slice(&(shard_id.len() as u16).to_be_bytes());
    body.extend_from_slice(shard_id.as_bytes());
    frame(&body)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn decode_request(body: &[u8]) -> Result<Request, String> {
    let (kind, mut rest) = body.split_first().ok_or("an empty request")?;
    let mut field = |what: &str| -> Result<Vec<u8>, String> {
        let (len, after) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| format!("the request ends before its {what}"))?;
        let len = u16::from_be_bytes(*len) as usize;
        if after.len() < len {
            return Err(format!("the request ends inside its {what}"));
        }
        let (value, after) = after.split_at(len);
        rest = after;
        Ok(value.to_vec())
    };
    match kind {
        b'R' => {
            let token = field("token")?;
            let id = field("shard id")?;
            if !rest.is_empty() {
                return Err("the request has bytes after its shard id".into());
            }
            let shard_id =
                String::from_utf8(id).map_err(|_| "the shard id is not UTF-8".to_string())?;
            Ok(Request::Read { token, shard_id })
        }
        b'D' if rest.is_empty() => Ok(Request::Done),
        _ => Err(format!("unknown request kind {kind:#04x}")),
    }
}

/// Reads one request frame; `None` at a clean end of the connection.
async fn read_request(stream: &mut UnixStream) -> io::Result<Option<Request>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a request of {len} bytes; at most {MAX_REQUEST}"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    decode_request(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends `bytes` with `fd` attached to the first of them.
async fn send_with_fd(stream: &mut UnixStream, bytes: &[u8], fd: Option<&File>) -> io::Result<()> {
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            let fds;
            if let Some(file) = fd {
                fds = [std::os::fd::AsFd::as_fd(file)];
                if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                    return Err(io::Error::other("no room for the file descriptor"));
                }
            }
            rustix::net::sendmsg(
                &*stream,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        })
        .await?;
    // The fd went with the first byte; the rest (if the kernel took less) follows plainly.
    stream.write_all(&bytes[sent..]).await
}

/// Receives an answer and the fds attached to it.
async fn receive_answer(stream: &mut UnixStream) -> io::Result<(Answer, Vec<OwnedFd>)> {
    let mut head = [0u8; ANSWER_HEAD];
    let mut fds = Vec::new();
    let got = stream
        .async_io(Interest::READABLE, || {
            // Room for a few fds: a provider that sends more gets them all closed.
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = rustix::net::recvmsg(
                &*stream,
                &mut [IoSliceMut::new(&mut head)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            Ok(msg.bytes)
        })
        .await?;
    if got == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the provider closed the connection",
        ));
    }
    stream.read_exact(&mut head[got..]).await?;
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let status = Status::from_byte(head[0])
        .ok_or_else(|| invalid(format!("an answer of unknown status {}", head[0])))?;
    let offset = u64::from_be_bytes(head[1..9].try_into().unwrap_or_default());
    let length = u64::from_be_bytes(head[9..17].try_into().unwrap_or_default());
    let message_len = u16::from_be_bytes([head[17], head[18]]) as usize;
    if message_len > MAX_MESSAGE {
        return Err(invalid(format!(
            "an answer message of {message_len} bytes; at most {MAX_MESSAGE}"
        )));
    }
    let mut message = vec![0u8; message_len];
    stream.read_exact(&mut message).await?;
    Ok((
        Answer {
            status,
            offset,
            length,
            message: String::from_utf8_lossy(&message).into_owned(),
        },
        fds,
    ))
}

/// The provider's side: who may ask, and the store the files come from.
pub struct Server {
    pub store: Arc<Store>,
    pub metrics: Metrics,
    /// Node ids allowed to call (as over gRPC).
    pub allowed: HashSet<NodeId>,
    /// BLAKE3 of the cluster token, when one is configured.
    pub token_hash: Option<blake3::Hash>,
    pub faults: Faults,
    /// A connection with no request for this long is closed (and its slot freed).
    pub idle_timeout: Duration,
    /// Files handed out and not yet reported closed ([`MAX_OPEN`]).
    pub open: Arc<Semaphore>,
}

impl Server {
    pub fn new(
        store: Arc<Store>,
        metrics: Metrics,
        allowed: HashSet<NodeId>,
        token_hash: Option<blake3::Hash>,
        faults: Faults,
        idle_timeout: Duration,
    ) -> Server {
        Server {
            store,
            metrics,
            allowed,
            token_hash,
            faults,
            idle_timeout,
            open: Arc::new(Semaphore::new(MAX_OPEN)),
        }
    }

    /// Serves a connection whose handshake named node `peer`, request after request, until
    /// the gateway closes it, idles past the timeout, or breaks the protocol.
    pub async fn serve(self: Arc<Self>, mut stream: UnixStream, peer: NodeId) {
        loop {
            let request =
                match tokio::time::timeout(self.idle_timeout, read_request(&mut stream)).await {
                    Ok(Ok(Some(r))) => r,
                    Ok(Ok(None)) | Err(_) => return,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "short-circuit request refused; closing");
                        return;
                    }
                };
            let Request::Read { token, shard_id } = request else {
                debug!(%peer, "a short-circuit `done` without a file out; closing");
                return;
            };
            let started = Instant::now();
            let (answer, file, permit) = self.answer(peer, &token, &shard_id).await;
            self.record(answer.status, started);
            if self.faults.slow_reads {
                // Fault injection: a provider that stalls; the gateway's wait must end it.
                tokio::time::sleep(self.idle_timeout).await;
                return;
            }
            if let Err(e) = send_with_fd(&mut stream, &answer.encode(), file.as_ref()).await {
                debug!(%peer, error = %e, "sending a short-circuit answer failed; closing");
                return;
            }
            // Our copy closes now; the gateway's stays open until it says `D`.
            drop(file);
            if let Some(permit) = permit {
                match tokio::time::timeout(self.idle_timeout, read_request(&mut stream)).await {
                    Ok(Ok(Some(Request::Done))) => drop(permit),
                    _ => return,
                }
            }
        }
    }

    /// The answer to a read of `shard_id` by node `peer` with `token`: the file, opened
    /// read-only, and the slot it holds, when allowed and the shard is whole.
    async fn answer(
        &self,
        peer: NodeId,
        token: &[u8],
        shard_id: &str,
    ) -> (
        Answer,
        Option<File>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let owner = self.allowed.contains(&peer)
            || self
                .token_hash
                .is_some_and(|expected| !token.is_empty() && blake3::hash(token) == expected);
        if !owner {
            return (
                Answer::refusal(
                    Status::Unauthenticated,
                    format!(
                        "client {peer} is not an allowed client and presented no valid token; short-circuit reads are for the provider's own gateways"
                    ),
                ),
                None,
                None,
            );
        }
        if let Err(e) = crate::store::validate_shard_id(shard_id) {
            return (
                Answer::refusal(Status::InvalidArgument, e.to_string()),
                None,
                None,
            );
        }
        let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() else {
            return (
                Answer::refusal(
                    Status::Busy,
                    format!("{MAX_OPEN} shard files are out; read over gRPC"),
                ),
                None,
                None,
            );
        };
        let store = Arc::clone(&self.store);
        let mut id = shard_id.to_string();
        if self.faults.swap_shards {
            // Fault injection: the file of the next shard held instead.
            let (after, _) = store.list("", &id, 1);
            let (first, _) = store.list("", "", 2);
            if let Some((other, _)) = after.into_iter().chain(first).find(|(o, _)| *o != id) {
                id = other;
            }
        }
        let opened = tokio::task::spawn_blocking(move || store.open_whole(&id)).await;
        match opened {
            Ok(Ok((file, offset, length))) => {
                self.metrics.short_circuit_reads.inc();
                self.metrics
                    .bytes
                    .with_label_values(&[METHOD])
                    .inc_by(length);
                let answer = Answer {
                    status: Status::Ok,
                    offset,
                    length,
                    message: String::new(),
                };
                (answer, Some(file), Some(permit))
            }
            Ok(Err(e)) => {
                let status = match &e {
                    crate::Error::NotFound(_) => Status::NotFound,
                    crate::Error::DataLoss { .. } => Status::DataLoss,
                    crate::Error::InvalidShardId(_) | crate::Error::InvalidArgument(_) => {
                        Status::InvalidArgument
                    }
                    _ => Status::Other,
                };
                (Answer::refusal(status, e.to_string()), None, None)
            }
            Err(e) => (
                Answer::refusal(Status::Other, format!("opening the shard: {e}")),
                None,
                None,
            ),
        }
    }

    fn record(&self, status: Status, started: Instant) {
        self.metrics
            .requests
            .with_label_values(&[METHOD, status.label()])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[METHOD])
            .observe(started.elapsed().as_secs_f64());
        if status == Status::DataLoss {
            self.metrics.corruptions.inc();
        }
    }
}

/// Answers the first request on a connection of a provider whose short-circuit reads are
/// off, so the gateway knows to read over gRPC, and closes it.
pub async fn refuse(mut stream: UnixStream) {
    if let Ok(Ok(Some(_))) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, read_request(&mut stream)).await
    {
        let off = Answer::refusal(Status::Off, "short-circuit reads are off on this provider");
        let _ = stream.write_all(&off.encode()).await;
    }
}

/// The method name short-circuit reads are counted under in the provider's metrics.
pub const METHOD: &str = "ShortCircuitRead";

/// The gateway's side, for one provider: pooled connections in [`Mode::ShortCircuit`].
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    identity: Arc<NodeIdentity>,
    expected: NodeId,
    token: Vec<u8>,
    /// Connections past their handshake, waiting for a read; shared with dials still
    /// running for a read that went away ([`Client::connection`]).
    idle: Arc<Mutex<Vec<UnixStream>>>,
    /// [`MAX_DIALS`] permits, one held by each dial under way.
    dials: Arc<Semaphore>,
    /// Until when the provider counts as not offering the mode (it refused it).
    refused_until: Mutex<Option<Instant>>,
}

/// Why a short-circuit read gave no bytes.
#[derive(Debug)]
pub enum Miss {
    /// The provider does not offer it now (an older provider, turned off, busy, or a caller
    /// it does not know): read over gRPC.
    Unavailable(String),
    /// The read failed as a read over gRPC would have (the shard is gone, corrupt, or the
    /// provider lied about it): no gRPC retry.
    Failed(ClientError),
    /// The provider has them turned off: read over gRPC, and do not ask again soon.
    Off,
}

impl Client {
    pub fn new(
        path: PathBuf,
        identity: Arc<NodeIdentity>,
        expected: NodeId,
        token: Option<&str>,
    ) -> Client {
        Client {
            path,
            identity,
            expected,
            token: token.map(|t| t.as_bytes().to_vec()).unwrap_or_default(),
            idle: Arc::default(),
            dials: Arc::new(Semaphore::new(MAX_DIALS)),
            refused_until: Mutex::new(None),
        }
    }

    fn refused(&self) -> bool {
        let mut until = self.refused_until.lock().unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn mark_refused(&self) {
        *self.refused_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + REFUSED_FOR);
    }

    async fn connection(&self) -> Result<UnixStream, Miss> {
        loop {
            let kept = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match kept {
                Some(stream) if still_open(&stream) => return Ok(stream),
                // The provider closed it (its idle timeout, a restart): a read on it would
                // fail, and a failed read counts the provider down.
                Some(_) => continue,
                None => break,
            }
        }
        // The dial runs in its own task: a read that goes away while it runs (its hedge
        // answered first, its request was dropped) leaves the connection to the next read
        // instead of wasting the handshake — a restarted provider's first handshakes can
        // outlast the hedge under load, and every read after would dial again.
        let (path, identity, expected) =
            (self.path.clone(), Arc::clone(&self.identity), self.expected);
        let idle = Arc::clone(&self.idle);
        let Ok(permit) = Arc::clone(&self.dials).try_acquire_owned() else {
            return Err(Miss::Unavailable(format!(
                "{MAX_DIALS} short-circuit dials to this provider are under way"
            )));
        };
        let (answer, dialed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _permit = permit;
            let dial = async {
                let mut stream = UnixStream::connect(&path).await?;
                crate::unix::client_handshake_for(
                    &mut stream,
                    &identity,
                    expected,
                    Mode::ShortCircuit,
                )
                .await?;
                Ok::<_, io::Error>(stream)
            };
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, dial).await;
            if let Err(Ok(Ok(stream))) = answer.send(result) {
                keep_in(&idle, stream);
            }
        });
        match dialed.await {
            Ok(Ok(Ok(stream))) => Ok(stream),
            Ok(Ok(Err(e))) => {
                // An older provider closes on our greeting; one with the mode off too.
                if e.kind() != io::ErrorKind::PermissionDenied {
                    self.mark_refused();
                }
                Err(Miss::Unavailable(format!(
                    "no short-circuit connection: {e}"
                )))
            }
            Ok(Err(_)) => Err(Miss::Failed(ClientError::new(
                ErrorKind::Unavailable,
                format!(
                    "the provider's Unix socket did not finish the handshake in {HANDSHAKE_TIMEOUT:?}"
                ),
            ))),
            Err(_) => Err(Miss::Unavailable(
                "the short-circuit dial's task ended without an answer".into(),
            )),
        }
    }

    /// Whole shard `shard_id`, recorded as `expected_len` bytes, read from the file the
    /// provider hands over: its bytes as stored, unchecked (the caller authenticates them).
    /// A file that does not hold exactly `expected_len` bytes where the provider says is
    /// `DataLoss`, like rot found over gRPC.
    pub async fn read(&self, shard_id: &str, expected_len: u64) -> Result<Bytes, Miss> {
        if self.refused() {
            return Err(Miss::Unavailable(
                "the provider refused short-circuit reads lately".into(),
            ));
        }
        let mut stream = self.connection().await?;
        let (result, reusable) = read_on(&mut stream, &self.token, shard_id, expected_len).await;
        if let Err(Miss::Off) = result {
            self.mark_refused();
            return Err(Miss::Unavailable(
                "short-circuit reads are off on this provider".into(),
            ));
        }
        if reusable {
            self.keep(stream);
        }
        result
    }

    fn keep(&self, stream: UnixStream) {
        keep_in(&self.idle, stream);
    }
}

/// Keeps `stream` for a later read, unless [`MAX_IDLE`] are kept already.
fn keep_in(idle: &Mutex<Vec<UnixStream>>, stream: UnixStream) {
    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE {
        idle.push(stream);
    }
}

/// Whether a kept connection can carry another read: nothing is waiting to be read on it
/// (between reads the provider sends nothing; an end of file or bytes mean it closed the
/// connection or broke the protocol).
fn still_open(stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// One read on a connection past its handshake: the shard's bytes, and whether the
/// connection may serve another read (nothing is left half-said on it).
async fn read_on(
    stream: &mut UnixStream,
    token: &[u8],
    shard_id: &str,
    expected_len: u64,
) -> (Result<Bytes, Miss>, bool) {
    let failed = |kind, m: String| Miss::Failed(ClientError::new(kind, m));
    let exchange = async {
        stream.write_all(&encode_read(token, shard_id)).await?;
        receive_answer(stream).await
    };
    let (answer, mut fds) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
        Ok(Ok(got)) => got,
        Ok(Err(e)) => {
            let m = format!("short-circuit read of {shard_id}: {e}");
            return (Err(failed(ErrorKind::Unavailable, m)), false);
        }
        Err(_) => {
            let m = format!("short-circuit read of {shard_id}: no answer in {HANDSHAKE_TIMEOUT:?}");
            return (Err(failed(ErrorKind::Unavailable, m)), false);
        }
    };
    if answer.status != Status::Ok {
        // Nothing is out: the connection stays usable (unless fds came along anyway).
        let miss = match answer.status {
            Status::NotFound => failed(ErrorKind::NotFound, answer.message),
            Status::DataLoss => failed(ErrorKind::DataLoss, answer.message),
            Status::Off => Miss::Off,
            _ => Miss::Unavailable(answer.message),
        };
        return (Err(miss), fds.is_empty());
    }
    if fds.len() != 1 {
        let m = format!(
            "short-circuit read of {shard_id}: the provider attached {} file descriptors to its answer, not one",
            fds.len()
        );
        return (Err(failed(ErrorKind::DataLoss, m)), false);
    }
    let file = File::from(fds.remove(0));
    if answer.length != expected_len {
        let m = format!(
            "short-circuit read of {shard_id}: the provider says it holds {} bytes; the shard has {expected_len}",
            answer.length
        );
        return (Err(failed(ErrorKind::DataLoss, m)), false);
    }
    let (offset, length) = (answer.offset, answer.length);
    let id = shard_id.to_string();
    let read =
        match tokio::task::spawn_blocking(move || read_file(&file, offset, length, &id)).await {
            Ok(read) => read,
            Err(e) => {
                let m = format!("reading shard {shard_id}: {e}");
                return (Err(failed(ErrorKind::Other, m)), false);
            }
        };
    // The fd closed with the blocking task: say so, and the connection is ready again.
    let reusable = stream.write_all(&frame(b"D")).await.is_ok();
    (read.map_err(|m| failed(ErrorKind::DataLoss, m)), reusable)
}

/// `length` bytes at `offset` of `file`, read straight into the answer's buffer; an error
/// naming the problem when the file is not a regular file holding them.
fn read_file(file: &File, offset: u64, length: u64, id: &str) -> Result<Bytes, String> {
    let meta = file
        .metadata()
        .map_err(|e| format!("shard {id}: the handed file cannot be looked at: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "shard {id}: the provider handed something other than a regular file"
        ));
    }
    let end = offset.checked_add(length).ok_or_else(|| {
        format!("shard {id}: the provider's offset {offset} and length {length} overflow")
    })?;
    if meta.len() < end {
        return Err(format!(
            "shard {id}: the handed file is {} bytes, too short for {length} bytes at {offset}",
            meta.len()
        ));
    }
    let length = usize::try_from(length).map_err(|_| format!("shard {id} is too large"))?;
    let mut data: Vec<u8> = Vec::with_capacity(length);
    while data.len() < length {
        let at = offset + data.len() as u64;
        // `pread` writes into the spare capacity, uninitialised, and extends the vector.
        let n = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut data), at)
            .map_err(|e| format!("shard {id}: reading the handed file: {e}"))?;
        if n == 0 {
            return Err(format!(
                "shard {id}: the handed file ended {} bytes short",
                length - data.len()
            ));
        }
    }
    // The allocator may have given more room than asked, and the file goes on (the outboard).
    data.truncate(length);
    Ok(Bytes::from(data))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use super::*;

    const TOKEN: &str = "0123456789abcdef-cluster";

    struct Setup {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        server: Arc<Server>,
        gateway: NodeId,
    }

    fn setup(faults: Faults) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1 << 30, 0).unwrap());
        let gateway = NodeIdentity::generate().node_id();
        let server = Arc::new(Server::new(
            Arc::clone(&store),
            Metrics::new().unwrap(),
            [gateway].into_iter().collect(),
            Some(blake3::hash(TOKEN.as_bytes())),
            faults,
            Duration::from_secs(5),
        ));
        Setup {
            _dir: dir,
            store,
            server,
            gateway,
        }
    }

    fn put(store: &Arc<Store>, id: &str, data: &[u8]) {
        let mut w = store.begin_put(id, data.len() as u64, None).unwrap();
        w.write(data).unwrap();
        w.commit().unwrap();
    }

    fn shard(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// A connection past its handshake, served by `server` as node `peer`.
    fn connect(server: &Arc<Server>, peer: NodeId) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        tokio::spawn(Arc::clone(server).serve(theirs, peer));
        ours
    }

    #[tokio::test]
    async fn a_shard_comes_back_through_its_file_read_only_and_the_read_is_counted() {
        let s = setup(Faults::default());
        let bytes = shard(300_000, 1);
        put(&s.store, "seg-0-shard-1", &bytes);
        let mut conn = connect(&s.server, s.gateway);
        let (got, reusable) = read_on(&mut conn, b"", "seg-0-shard-1", bytes.len() as u64).await;
        assert_eq!(&got.unwrap()[..], &bytes[..]);
        assert!(reusable);
        // The same connection serves the next read; a token admits a caller as well.
        let other = shard(5000, 2);
        put(&s.store, "seg-0-shard-2", &other);
        let (got, _) = read_on(&mut conn, TOKEN.as_bytes(), "seg-0-shard-2", 5000).await;
        assert_eq!(&got.unwrap()[..], &other[..]);
        assert_eq!(s.server.metrics.short_circuit_reads.get(), 2);
        assert!(
            s.server
                .metrics
                .render()
                .contains("sublet_provider_short_circuit_reads_total 2")
        );

        // What was handed over: a read-only descriptor, at the shard's bytes.
        let mut conn = connect(&s.server, s.gateway);
        conn.write_all(&encode_read(b"", "seg-0-shard-1"))
            .await
            .unwrap();
        let (answer, fds) = receive_answer(&mut conn).await.unwrap();
        assert_eq!(answer.status, Status::Ok);
        assert_eq!(answer.length, bytes.len() as u64);
        assert_eq!(fds.len(), 1);
        let flags = rustix::fs::fcntl_getfl(&fds[0]).unwrap();
        assert_eq!(
            flags & rustix::fs::OFlags::RWMODE,
            rustix::fs::OFlags::RDONLY
        );
        let file = File::from(fds.into_iter().next().unwrap());
        assert!((&file).write_all(b"x").is_err(), "the fd is not writable");
        // Until the gateway says the file is closed, the slot stays taken.
        assert_eq!(s.server.open.available_permits(), MAX_OPEN - 1);
        drop(file);
        conn.write_all(&frame(b"D")).await.unwrap();
        let (got, _) = read_on(&mut conn, b"", "seg-0-shard-2", 5000).await;
        assert!(got.is_ok());
        assert_eq!(s.server.open.available_permits(), MAX_OPEN - 1);
    }

    #[tokio::test]
    async fn a_caller_neither_allowed_nor_holding_the_token_gets_no_fd() {
        let s = setup(Faults::default());
        put(&s.store, "secret", &shard(1000, 3));
        let stranger = NodeIdentity::generate().node_id();
        let mut conn = connect(&s.server, stranger);
        conn.write_all(&encode_read(b"not-the-token-at-all", "secret"))
            .await
            .unwrap();
        let (answer, fds) = receive_answer(&mut conn).await.unwrap();
        assert_eq!(answer.status, Status::Unauthenticated);
        assert!(fds.is_empty());
        assert!(
            answer.message.contains("not an allowed client"),
            "{answer:?}"
        );
        let (got, _) = read_on(&mut conn, b"", "secret", 1000).await;
        assert!(matches!(got, Err(Miss::Unavailable(_))), "{got:?}");
        assert_eq!(s.server.metrics.short_circuit_reads.get(), 0);
    }

    #[tokio::test]
    async fn a_missing_or_incomplete_shard_is_refused_and_bad_requests_close() {
        let s = setup(Faults::default());
        let mut conn = connect(&s.server, s.gateway);
        let (got, reusable) = read_on(&mut conn, b"", "nothing-here", 10).await;
        match got {
            Err(Miss::Failed(e)) => assert_eq!(e.kind(), ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
        assert!(reusable);
        // A shard file cut short on disk is never handed out.
        let bytes = shard(100_000, 4);
        put(&s.store, "cut", &bytes);
        let path = s._dir.path().join("shards").join("cut.shard");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let (got, _) = read_on(&mut conn, b"", "cut", 100_000).await;
        match got {
            Err(Miss::Failed(e)) => assert_eq!(e.kind(), ErrorKind::DataLoss, "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.server.metrics.short_circuit_reads.get(), 0);
        // A path for an id: refused before the store is asked.
        let (got, _) = read_on(&mut conn, b"", "../identity.key", 10).await;
        assert!(matches!(got, Err(Miss::Unavailable(_))), "{got:?}");
        // An oversized frame closes the connection.
        let mut big = (u32::MAX).to_be_bytes().to_vec();
        big.push(b'R');
        conn.write_all(&big).await.unwrap();
        let mut rest = Vec::new();
        // Closed: an end, or a reset for the bytes it left unread; never an answer.
        match conn.read_to_end(&mut rest).await {
            Ok(0) => {}
            Ok(n) => panic!("an answer of {n} bytes to an oversized frame"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
    }

    /// A provider that reads the request and hangs up.
    async fn hang_up() -> Result<Bytes, Miss> {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let reply = async move {
            read_request(&mut theirs).await.unwrap();
        };
        let ((got, reusable), ()) = tokio::join!(read_on(&mut ours, b"", "s", 1000), reply);
        assert!(!reusable);
        got
    }

    /// A provider that answers `answer` with `fds` attached.
    async fn answer_with(answer: Answer, fds: Vec<File>) -> Result<Bytes, Miss> {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let reply = async move {
            read_request(&mut theirs).await.unwrap();
            let encoded = answer.encode();
            let sent = theirs
                .async_io(Interest::WRITABLE, || {
                    let mut space =
                        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
                    let mut control = SendAncillaryBuffer::new(&mut space);
                    let borrowed: Vec<_> = fds.iter().map(std::os::fd::AsFd::as_fd).collect();
                    if !borrowed.is_empty() {
                        assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
                    }
                    rustix::net::sendmsg(
                        &theirs,
                        &[IoSlice::new(&encoded)],
                        &mut control,
                        SendFlags::NOSIGNAL,
                    )
                    .map_err(io::Error::from)
                })
                .await
                .unwrap();
            assert_eq!(sent, encoded.len());
            theirs
        };
        let ((got, _), _theirs) = tokio::join!(read_on(&mut ours, b"", "s", 1000), reply);
        got
    }

    fn ok(offset: u64, length: u64) -> Answer {
        Answer {
            status: Status::Ok,
            offset,
            length,
            message: String::new(),
        }
    }

    fn file_of(len: usize) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; len]).unwrap();
        f
    }

    fn data_loss(got: Result<Bytes, Miss>, says: &str) {
        match got {
            Err(Miss::Failed(e)) => {
                assert_eq!(e.kind(), ErrorKind::DataLoss, "{e}");
                assert!(e.message().contains(says), "{e}");
            }
            other => panic!("expected DataLoss ({says}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn forged_short_long_and_strange_answers_are_refused() {
        // The honest shape, for contrast.
        let got = answer_with(ok(100, 1000), vec![file_of(2000)]).await;
        assert_eq!(got.unwrap().len(), 1000);
        // A length other than the recorded one, longer or shorter.
        data_loss(
            answer_with(ok(0, 1001), vec![file_of(2000)]).await,
            "says it holds 1001 bytes",
        );
        data_loss(
            answer_with(ok(0, 999), vec![file_of(2000)]).await,
            "says it holds 999 bytes",
        );
        // A file too short for what the answer claims.
        data_loss(
            answer_with(ok(500, 1000), vec![file_of(1200)]).await,
            "too short",
        );
        data_loss(
            answer_with(ok(u64::MAX - 10, 1000), vec![file_of(1200)]).await,
            "overflow",
        );
        // No fd, or several.
        data_loss(answer_with(ok(0, 1000), vec![]).await, "0 file descriptors");
        data_loss(
            answer_with(ok(0, 1000), vec![file_of(1000), file_of(1000)]).await,
            "2 file descriptors",
        );
        // Something other than a regular file: a pipe would block the reader forever.
        let (pipe_read, _pipe_write) = std::io::pipe().unwrap();
        data_loss(
            answer_with(ok(0, 1000), vec![File::from(OwnedFd::from(pipe_read))]).await,
            "other than a regular file",
        );
        // A provider that hangs up, or answers nothing, fails the read (hedging reads around).
        let got = hang_up().await;
        match got {
            Err(Miss::Failed(e)) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn request_frames_decode_and_junk_is_named() {
        let framed = encode_read(b"tok", "shard-1");
        assert_eq!(
            decode_request(&framed[4..]).unwrap(),
            Request::Read {
                token: b"tok".to_vec(),
                shard_id: "shard-1".into()
            }
        );
        assert_eq!(decode_request(b"D").unwrap(), Request::Done);
        for (junk, says) in [
            (&b""[..], "empty"),
            (b"R\x00", "before its token"),
            (b"R\x00\x05ab", "inside its token"),
            (b"R\x00\x00\x00\x01ab", "bytes after"),
            (b"X", "unknown request kind"),
            (b"Dx", "unknown request kind"),
        ] {
            let err = decode_request(junk).unwrap_err();
            assert!(err.contains(says), "{junk:?}: {err}");
        }
    }

    #[tokio::test]
    async fn a_dial_outlasting_its_read_is_kept_for_the_next_read() {
        let s = setup(Faults::default());
        let bytes = shard(70_000, 3);
        put(&s.store, "seg-0-shard-2", &bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provider.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let provider = Arc::new(NodeIdentity::generate());
        let gateway = Arc::new(NodeIdentity::generate());
        // Serves this test's gateway, which has its own key.
        let served = Arc::new(Server::new(
            Arc::clone(&s.store),
            Metrics::new().unwrap(),
            [gateway.node_id()].into_iter().collect(),
            None,
            Faults::default(),
            Duration::from_secs(5),
        ));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let provider_id = provider.node_id();
        // A provider slow to answer the first handshake (a restart under load).
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let first = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                let (provider, served) = (Arc::clone(&provider), Arc::clone(&served));
                tokio::spawn(async move {
                    if first {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                    let (peer, mode) = crate::unix::server_handshake(&mut stream, &provider)
                        .await
                        .unwrap();
                    assert_eq!(mode, Mode::ShortCircuit);
                    served.serve(stream, peer).await;
                });
            }
        });
        let client = Client::new(path, gateway, provider_id, None);
        // The read goes away (its hedge answered) while the handshake is still running.
        let gone = tokio::time::timeout(
            Duration::from_millis(100),
            client.read("seg-0-shard-2", 70_000),
        )
        .await;
        assert!(gone.is_err(), "the read was to outlast its caller");
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.idle.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the finished dial was not kept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The next read uses it: no second connection is made.
        let got = client.read("seg-0-shard-2", 70_000).await.unwrap();
        assert_eq!(&got[..], &bytes[..]);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dials_to_a_stalling_provider_are_bounded_and_further_reads_go_over_grpc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provider.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // Accepts every connection and never answers its handshake.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = Client::new(
            path,
            Arc::new(NodeIdentity::generate()),
            NodeIdentity::generate().node_id(),
            None,
        );
        for _ in 0..MAX_DIALS {
            // Each read goes away (its hedge answered); its dial stays under way.
            let gone =
                tokio::time::timeout(Duration::from_millis(50), client.read("seg-0-shard-0", 10))
                    .await;
            assert!(gone.is_err());
        }
        let started = Instant::now();
        match client.read("seg-0-shard-0", 10).await {
            Err(Miss::Unavailable(why)) => assert!(why.contains("dials"), "{why}"),
            other => panic!("expected a read over gRPC, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
