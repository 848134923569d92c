//! The client a gateway uses to talk to providers: TLS pinned to the
//! provider's node id, its own identity certificate, an optional cluster token; or, for a
//! provider on the same machine (`unix:/path`), a Unix socket whose handshake pins the same
//! node id.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rustls::pki_types::ServerName;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

use crate::identity::{NodeId, NodeIdentity};
use crate::proto;
use crate::proto::shard_store_client::ShardStoreClient;
use crate::store::MAX_SHARD_LEN;
use crate::{CHUNK_SIZE, TOKEN_METADATA};

/// Largest message either side of a call may send: a chunk and room for its fields.
const MAX_MESSAGE: usize = CHUNK_SIZE + 256 * 1024;
/// `ShardStore.PutShard`'s path, as the generated client calls it.
const PUT_SHARD_PATH: &str = "/sublet.provider.v1.ShardStore/PutShard";

/// How the client identifies itself to providers.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub identity: Arc<NodeIdentity>,
    /// Cluster token sent as `x-sublet-token` on every call.
    pub token: Option<String>,
}

pub use crate::client_error::{ClientError, ErrorKind};

/// Result of a stored shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    pub hash: [u8; 32],
    pub length: u64,
}

/// A stored shard as the provider reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStat {
    pub shard_id: String,
    pub length: u64,
    pub hash: [u8; 32],
    /// Seconds since the Unix epoch.
    pub stored_at: i64,
}

fn hash32(bytes: &[u8], what: &str) -> Result<[u8; 32], ClientError> {
    bytes.try_into().map_err(|_| {
        ClientError::new(
            ErrorKind::Other,
            format!(
                "provider sent a {what} of {} bytes, expected 32",
                bytes.len()
            ),
        )
    })
}

impl TryFrom<proto::ShardStat> for ShardStat {
    type Error = ClientError;
    fn try_from(s: proto::ShardStat) -> Result<Self, ClientError> {
        Ok(ShardStat {
            hash: hash32(&s.hash, "hash")?,
            shard_id: s.shard_id,
            length: s.length,
            stored_at: s.stored_at,
        })
    }
}

/// A connection to one provider; lazily connects, cheap to clone.
#[derive(Clone, Debug)]
pub struct ProviderClient {
    inner: ShardStoreClient<Channel>,
    /// The same connection, for the `PutShard` bodies framed by hand ([`crate::put_body`]).
    channel: Channel,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    expected: NodeId,
    /// For a provider on a Unix socket: its short-circuit reads, once turned on
    /// ([`with_short_circuit_reads`](Self::with_short_circuit_reads)).
    short_circuit: Option<Arc<crate::shortcircuit::Client>>,
    short_circuit_on: bool,
}

impl ProviderClient {
    /// A client for the provider at `address` ("host:port", "https://host:port", or
    /// "unix:/path" for a provider on this machine) whose node id must be `expected`.
    /// Nothing is dialled until the first call; must be called inside a Tokio runtime.
    pub fn new(address: &str, expected: NodeId, cfg: &ClientConfig) -> Result<Self, ClientError> {
        let invalid = |m: String| ClientError::new(ErrorKind::InvalidArgument, m);
        if crate::unix::is_unix_address(address) {
            let path = crate::unix::parse_address(address)
                .map_err(|e| invalid(format!("invalid provider address: {e}")))?;
            let short_circuit = Arc::new(crate::shortcircuit::Client::new(
                path.clone(),
                Arc::clone(&cfg.identity),
                expected,
                cfg.token.as_deref(),
            ));
            let connector = UnixConnector {
                path: Arc::new(path),
                identity: Arc::clone(&cfg.identity),
                expected,
            };
            // The connector dials the socket; the URI only fills in the HTTP/2 authority.
            let endpoint = Endpoint::from_static("http://localhost")
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .connect_timeout(crate::HANDSHAKE_TIMEOUT)
                .http2_keep_alive_interval(std::time::Duration::from_secs(30))
                .keep_alive_while_idle(true);
            let mut client = Self::over(
                endpoint.connect_with_connector_lazy(connector),
                expected,
                cfg,
            )?;
            client.short_circuit = Some(short_circuit);
            return Ok(client);
        }
        let authority = address
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(invalid(format!(
                "invalid provider address {address:?}: use host:port or https://host:port"
            )));
        }
        let tls = crate::tls::client_config(&cfg.identity, expected)
            .map_err(|e| ClientError::new(ErrorKind::Other, format!("TLS setup: {e}")))?;
        let connector = TlsConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        };
        // TLS is done by the connector, so tonic sees a plain http URI.
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| invalid(format!("invalid provider address {address:?}: {e}")))?
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .tcp_nodelay(true)
            .connect_timeout(crate::HANDSHAKE_TIMEOUT)
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Self::over(
            endpoint.connect_with_connector_lazy(connector),
            expected,
            cfg,
        )
    }

    fn over(channel: Channel, expected: NodeId, cfg: &ClientConfig) -> Result<Self, ClientError> {
        let invalid = |m: String| ClientError::new(ErrorKind::InvalidArgument, m);
        let token = match &cfg.token {
            Some(t) => Some(
                t.parse()
                    .map_err(|_| invalid("the cluster token must be printable ASCII".into()))?,
            ),
            None => None,
        };
        let inner = ShardStoreClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(ProviderClient {
            inner,
            channel,
            token,
            expected,
            short_circuit: None,
            short_circuit_on: false,
        })
    }

    /// Reads whole shards the caller authenticates itself
    /// ([`get_shard_authenticated_exact`](Self::get_shard_authenticated_exact)) from the
    /// shard's file, which a provider on a Unix socket hands over, instead of over gRPC
    /// (short-circuit reads, see [`crate::shortcircuit`]). Other providers, and one that
    /// does not offer it, are read over gRPC as before.
    pub fn with_short_circuit_reads(mut self, on: bool) -> Self {
        self.short_circuit_on = on;
        self
    }

    /// Whether reads may short-circuit: turned on, and the provider is on a Unix socket.
    pub fn short_circuits(&self) -> bool {
        self.short_circuit_on && self.short_circuit.is_some()
    }

    /// The node id this client pins.
    pub fn node_id(&self) -> NodeId {
        self.expected
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert(TOKEN_METADATA, token.clone());
        }
        request
    }

    /// Store a shard held in memory, in messages of at most 1 MiB.
    pub async fn put_shard(&self, shard_id: &str, data: Bytes) -> Result<PutOutcome, ClientError> {
        self.put_shard_in_memory(shard_id, data, None).await
    }

    /// Store a shard held in memory whose BLAKE3 is `expected`: the provider refuses it (and
    /// stores nothing) when the bytes it received hash to anything else. The answer's hash
    /// is still the provider's word: callers compare it with `expected`.
    pub async fn put_shard_expecting(
        &self,
        shard_id: &str,
        data: Bytes,
        expected: [u8; 32],
    ) -> Result<PutOutcome, ClientError> {
        self.put_shard_in_memory(shard_id, data, Some(expected))
            .await
    }

    async fn put_shard_in_memory(
        &self,
        shard_id: &str,
        data: Bytes,
        expected: Option<[u8; 32]>,
    ) -> Result<PutOutcome, ClientError> {
        let length = data.len() as u64;
        let chunks = (0..data.len())
            .step_by(CHUNK_SIZE)
            .map(move |at| data.slice(at..(at + CHUNK_SIZE).min(data.len())))
            .collect::<Vec<_>>();
        self.put_shard_stream(shard_id, length, expected, futures::stream::iter(chunks))
            .await
    }

    /// Store a shard of exactly `length` bytes from a stream of chunks (a chunk over 1 MiB
    /// goes in several messages); memory stays bounded by the stream. The chunks are sent
    /// as they are, not copied ([`crate::put_body`]).
    pub async fn put_shard_stream(
        &self,
        shard_id: &str,
        length: u64,
        expected_hash: Option<[u8; 32]>,
        chunks: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<PutOutcome, ClientError> {
        let header = crate::put_body::header_frame(proto::PutShardHeader {
            shard_id: shard_id.to_string(),
            length,
            expected_hash: expected_hash
                .map(|h| Bytes::copy_from_slice(&h))
                .unwrap_or_default(),
        })
        .map_err(|e| ClientError::new(ErrorKind::InvalidArgument, e))?;
        let frames = futures::stream::once(async move { header }).chain(
            chunks.flat_map(|chunk| futures::stream::iter(crate::put_body::data_frames(chunk))),
        );
        let response = self.call_put_shard(frames).await?;
        Ok(PutOutcome {
            hash: hash32(&response.hash, "hash")?,
            length: response.length,
        })
    }

    /// One `PutShard` call with a body of ready gRPC frames, its answer decoded as tonic's
    /// generated client does (a status in the headers, the one message, the trailers).
    async fn call_put_shard(
        &self,
        frames: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<proto::PutShardResponse, Status> {
        use http_body_util::StreamBody;
        use tonic::codec::{Codec, Streaming};
        use tower::ServiceExt;

        let body =
            StreamBody::new(frames.map(|frame| Ok::<_, Status>(http_body::Frame::data(frame))));
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(PUT_SHARD_PATH)
            .version(http::Version::HTTP_2)
            .header(http::header::TE, "trailers")
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(tonic::body::Body::new(body))
            .map_err(|e| Status::internal(format!("building the PutShard request: {e}")))?;
        if let Some(token) = &self.token {
            let value = http::HeaderValue::from_bytes(token.as_encoded_bytes())
                .map_err(|e| Status::internal(format!("the cluster token header: {e}")))?;
            request.headers_mut().insert(TOKEN_METADATA, value);
        }
        let response = self
            .channel
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        // A status in the headers is a trailers-only answer: an error, or no message.
        if let Some(status) = Status::from_header_map(response.headers()) {
            if status.code() != Code::Ok {
                return Err(status);
            }
            return Err(Status::internal("PutShard answered without a message"));
        }
        let status_code = response.status();
        let mut codec =
            tonic_prost::ProstCodec::<proto::PutShardRequest, proto::PutShardResponse>::default();
        let mut answer = Streaming::new_response(
            codec.decoder(),
            response.into_body(),
            status_code,
            None,
            Some(MAX_MESSAGE),
        );
        let message = answer
            .message()
            .await?
            .ok_or_else(|| Status::internal("PutShard answered without a message"))?;
        answer.trailers().await?;
        Ok(message)
    }

    /// Stream a shard or a range `(offset, len)` of it; every byte was verified by the provider.
    /// Inside [`METERED_AT`]`.scope(t, ..)` the read is metered under `t`.
    pub async fn get_shard_stream(
        &self,
        shard_id: &str,
        range: Option<(u64, u64)>,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static, ClientError> {
        let chunks = self.chunks(shard_id, range, false).await?;
        Ok(chunks.map(|r| r.map(|c| c.data)))
    }

    /// `skip_hash_check`: the caller authenticates a whole shard itself (see
    /// [`get_shard_authenticated_within`](Self::get_shard_authenticated_within)).
    async fn chunks(
        &self,
        shard_id: &str,
        range: Option<(u64, u64)>,
        skip_hash_check: bool,
    ) -> Result<
        impl Stream<Item = Result<proto::ShardChunk, ClientError>> + Send + 'static,
        ClientError,
    > {
        let (offset, length) = range.unwrap_or((0, 0));
        if range.is_some() && length == 0 {
            return Ok(futures::stream::empty().left_stream());
        }
        let stream = self
            .inner
            .clone()
            .get_shard(self.request(proto::GetShardRequest {
                shard_id: shard_id.to_string(),
                offset,
                length,
                metered_at: metered_at(),
                skip_hash_check,
            }))
            .await?
            .into_inner();
        Ok(stream.map(|r| r.map_err(ClientError::from)).right_stream())
    }

    /// Read a shard or a range `(offset, len)` of it into memory: at most the range's
    /// length, and never more than a shard can hold ([`MAX_SHARD_LEN`]).
    pub async fn get_shard(
        &self,
        shard_id: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, ClientError> {
        self.get_shard_within(shard_id, range, MAX_SHARD_LEN).await
    }

    /// [`get_shard`](Self::get_shard) when the caller knows how long the shard is: a
    /// provider streaming more than `max_len` bytes (or more than the range asked for) is
    /// cut off with `DataLoss` once it does, so a hostile provider cannot make the caller
    /// buffer without bound.
    pub async fn get_shard_within(
        &self,
        shard_id: &str,
        range: Option<(u64, u64)>,
        max_len: u64,
    ) -> Result<Bytes, ClientError> {
        self.read_within(shard_id, range, max_len, false).await
    }

    /// A whole shard whose bytes the caller authenticates itself (the data shards of an
    /// AES-GCM segment: the tag covers them), bounded as in
    /// [`get_shard_within`](Self::get_shard_within). The provider is asked not to check them
    /// against its hash, so rot comes back as it is stored rather than as `DataLoss`: the
    /// caller must check what it gets. Older providers check anyway.
    pub async fn get_shard_authenticated_within(
        &self,
        shard_id: &str,
        max_len: u64,
    ) -> Result<Bytes, ClientError> {
        self.read_within(shard_id, None, max_len, true).await
    }

    /// [`get_shard_authenticated_within`](Self::get_shard_authenticated_within) of a shard
    /// the caller knows to be `length` bytes: read from the shard's file when short-circuit
    /// reads are on and the provider offers them (a file that does not hold exactly
    /// `length` bytes is `DataLoss`), over gRPC otherwise.
    pub async fn get_shard_authenticated_exact(
        &self,
        shard_id: &str,
        length: u64,
    ) -> Result<Bytes, ClientError> {
        if self.short_circuit_on
            && let Some(local) = &self.short_circuit
        {
            match local.read(shard_id, length).await {
                Ok(bytes) => return Ok(bytes),
                Err(crate::shortcircuit::Miss::Failed(e)) => return Err(e),
                Err(crate::shortcircuit::Miss::Off) => {}
                Err(crate::shortcircuit::Miss::Unavailable(why)) => {
                    tracing::debug!(shard_id, why, "short-circuit read unavailable; over gRPC");
                }
            }
        }
        self.get_shard_authenticated_within(shard_id, length).await
    }

    async fn read_within(
        &self,
        shard_id: &str,
        range: Option<(u64, u64)>,
        max_len: u64,
        skip_hash_check: bool,
    ) -> Result<Bytes, ClientError> {
        let limit = range
            .map_or(max_len, |(_, len)| len.min(max_len))
            .min(MAX_SHARD_LEN);
        let chunks = self.chunks(shard_id, range, skip_hash_check).await?;
        let mut stream = std::pin::pin!(chunks);
        let mut out = bytes::BytesMut::new();
        let mut received: u64 = 0;
        let too_much = || {
            ClientError::new(
                ErrorKind::DataLoss,
                format!(
                    "shard {shard_id}: the provider sent more than the {limit} bytes asked for"
                ),
            )
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            received = received.saturating_add(chunk.data.len() as u64);
            if received > limit {
                return Err(too_much());
            }
            if out.is_empty() {
                // A single chunk needs no copy.
                match stream.next().await {
                    None => return Ok(chunk.data),
                    Some(next) => {
                        let next = next?;
                        // The second message counts against the limit too.
                        received = received.saturating_add(next.data.len() as u64);
                        if received > limit {
                            return Err(too_much());
                        }
                        // Room for the whole answer at once, as far as the provider's word
                        // is believable.
                        let total = usize::try_from(chunk.total).unwrap_or(0).min(MAX_RESERVE);
                        out.reserve(total);
                        out.extend_from_slice(&chunk.data);
                        out.extend_from_slice(&next.data);
                    }
                }
            } else {
                out.extend_from_slice(&chunk.data);
            }
        }
        Ok(out.freeze())
    }

    /// Remove a shard; answers whether it existed.
    pub async fn delete_shard(&self, shard_id: &str) -> Result<bool, ClientError> {
        let response = self
            .inner
            .clone()
            .delete_shard(self.request(proto::DeleteShardRequest {
                shard_id: shard_id.to_string(),
            }))
            .await?;
        Ok(response.into_inner().existed)
    }

    pub async fn stat_shard(&self, shard_id: &str) -> Result<ShardStat, ClientError> {
        let response = self
            .inner
            .clone()
            .stat_shard(self.request(proto::StatShardRequest {
                shard_id: shard_id.to_string(),
            }))
            .await?;
        response.into_inner().try_into()
    }

    /// One page of shards with `prefix` after `start_after`, and where the next page starts.
    pub async fn list_shards(
        &self,
        prefix: &str,
        start_after: &str,
        limit: u32,
    ) -> Result<(Vec<ShardStat>, Option<String>), ClientError> {
        let response = self
            .inner
            .clone()
            .list_shards(self.request(proto::ListShardsRequest {
                start_after: start_after.to_string(),
                limit,
                prefix: prefix.to_string(),
            }))
            .await?
            .into_inner();
        let shards = response
            .shards
            .into_iter()
            .map(ShardStat::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next = Some(response.next_start_after).filter(|s| !s.is_empty());
        Ok((shards, next))
    }

    /// Every shard with `prefix`, page after page; with the error that cut the listing
    /// short, if one did (the pages before it are kept).
    pub async fn list_all(&self, prefix: &str) -> (Vec<ShardStat>, Result<(), ClientError>) {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            match self.list_shards(prefix, &after, 1000).await {
                Ok((page, next)) => {
                    out.extend(page);
                    match next {
                        Some(n) => after = n,
                        None => return (out, Ok(())),
                    }
                }
                Err(e) => return (out, Err(e)),
            }
        }
    }

    pub async fn info(&self) -> Result<proto::InfoResponse, ClientError> {
        Ok(self
            .inner
            .clone()
            .info(self.request(proto::InfoRequest {}))
            .await?
            .into_inner())
    }

    /// Ask for `[offset, offset + len)` of a shard with its proof and verify it
    /// against the hash recorded at write time; answers the verified bytes.
    pub async fn audit(
        &self,
        shard_id: &str,
        offset: u64,
        len: u64,
        expected_hash: &[u8; 32],
    ) -> Result<Bytes, ClientError> {
        let response = self
            .inner
            .clone()
            .audit(self.request(proto::AuditRequest {
                shard_id: shard_id.to_string(),
                offset,
                length: len,
                metered_at: metered_at(),
                accepts: vec![proto::ProofFormat::Groups.into()],
            }))
            .await?
            .into_inner();
        let format = response.proof_format();
        verify_audit(&response.slice, format, offset, len, expected_hash).map_err(|e| {
            ClientError::new(
                ErrorKind::AuditFailed,
                format!("audit of shard {shard_id} on {} failed: {e}", self.expected),
            )
        })
    }
}

tokio::task_local! {
    /// The unix second a market demander's gateway counts the reads and audits it makes
    /// inside this scope under; sent along so the provider counts them in the same receipt
    /// period.
    pub static METERED_AT: i64;
}

fn metered_at() -> i64 {
    METERED_AT.try_with(|t| *t).unwrap_or(0)
}

/// At most this much room is made up front for a shard a provider says is this large; a
/// larger one grows as it arrives.
const MAX_RESERVE: usize = 64 << 20;

/// Check a proof of `[offset, offset + len)` against a shard's BLAKE3 hash; answers the
/// proven bytes.
pub fn verify_audit(
    proof: &[u8],
    format: proto::ProofFormat,
    offset: u64,
    len: u64,
    expected_hash: &[u8; 32],
) -> std::io::Result<Bytes> {
    use std::io::Read;
    match format {
        proto::ProofFormat::Groups => {
            let (bytes, _) = crate::tree::verify(proof, *expected_hash, offset, len)?;
            Ok(Bytes::from(bytes))
        }
        proto::ProofFormat::Bao => {
            let hash = blake3::Hash::from(*expected_hash);
            let mut decoder = bao::decode::SliceDecoder::new(proof, &hash, offset, len);
            let mut out = Vec::new();
            decoder.read_to_end(&mut out)?;
            Ok(Bytes::from(out))
        }
    }
}

/// Connects tonic to a provider: TCP, then TLS with the pinned verifier.
#[derive(Clone)]
struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or("localhost").to_string();
            let port = uri.port_u16().unwrap_or(7480);
            let host_for_dial = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let tcp = TcpStream::connect((host_for_dial.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // The verifier ignores the name; SNI just needs something valid.
            let name = ServerName::try_from(host_for_dial)
                .unwrap_or(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()));
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Connects tonic to a provider on this machine: its Unix socket, then the handshake that
/// proves the provider holds the key of the pinned node id. Bounded by
/// [`crate::HANDSHAKE_TIMEOUT`].
#[derive(Clone)]
struct UnixConnector {
    path: Arc<std::path::PathBuf>,
    identity: Arc<NodeIdentity>,
    expected: NodeId,
}

impl tower::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let dial = async {
                let mut stream = tokio::net::UnixStream::connect(this.path.as_path()).await?;
                crate::unix::client_handshake(&mut stream, &this.identity, this.expected).await?;
                Ok::<_, std::io::Error>(stream)
            };
            match tokio::time::timeout(crate::HANDSHAKE_TIMEOUT, dial).await {
                Ok(Ok(stream)) => Ok(TokioIo::new(stream)),
                Ok(Err(e)) => Err(std::io::Error::new(
                    e.kind(),
                    format!("provider socket {}: {e}", this.path.display()),
                )),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "provider socket {}: no handshake within {:?}",
                        this.path.display(),
                        crate::HANDSHAKE_TIMEOUT
                    ),
                )),
            }
        })
    }
}
