//! The gRPC `ShardStore` service: put, get, delete, stat, list, info and audit of shards,
//! each authorized, scoped to the caller and counted in the metrics.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info};

use super::auth::{self, Caller};
use crate::config::{Faults, OVERSTATED_FREE};
use crate::identity::NodeId;
use crate::metrics::Metrics;
use crate::proto::shard_store_server::ShardStore;
use crate::proto::{self, put_shard_request::Part};
use crate::store::{ShardMeta, Store};
use crate::{CHUNK_SIZE, Error, VERSION};

pub(super) struct ShardService {
    pub(super) store: Arc<Store>,
    pub(super) metrics: Metrics,
    pub(super) node_id: NodeId,
    pub(super) allowed: HashSet<NodeId>,
    /// Gateways of demanders with an active market contract, kept by the market task.
    pub(super) contracted: crate::market::ContractedClients,
    pub(super) token_hash: Option<blake3::Hash>,
    pub(super) zone: String,
    pub(super) started: Instant,
    /// Fault injection: audit answers are forged while this is set.
    pub(super) forge_audits: Arc<AtomicBool>,
    /// Fault injection: the other lies (see [`Faults`]).
    pub(super) faults: Faults,
}

fn stat_of(id: String, meta: &ShardMeta) -> proto::ShardStat {
    proto::ShardStat {
        shard_id: id,
        length: meta.length,
        hash: Bytes::copy_from_slice(&meta.hash),
        stored_at: meta.stored_at,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("storage task failed: {e}"))),
    }
}

impl ShardService {
    fn authorize<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        auth::authorize(request, &self.allowed, self.token_hash, &self.contracted)
    }

    /// Count a finished request and, for corruption, the corruption.
    fn record(&self, method: &str, started: Instant, code: Code) {
        self.metrics
            .requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
        if code == Code::DataLoss {
            self.metrics.corruptions.inc();
        }
    }

    fn finish<T>(
        &self,
        method: &str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        self.record(method, started, code);
        if let Err(status) = &result
            && !matches!(status.code(), Code::NotFound | Code::Unauthenticated)
        {
            debug!(method, code = ?status.code(), message = status.message(), "request failed");
        }
        result
    }

    async fn put(
        &self,
        caller: &Caller,
        mut stream: Streaming<proto::PutShardRequest>,
    ) -> Result<proto::PutShardResponse, Status> {
        let header = match stream.message().await? {
            Some(proto::PutShardRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first PutShard message must carry the header",
                ));
            }
        };
        let expected = match header.expected_hash.len() {
            0 => None,
            32 => {
                let mut h = [0u8; 32];
                h.copy_from_slice(&header.expected_hash);
                Some(h)
            }
            n => {
                return Err(Status::invalid_argument(format!(
                    "expected_hash must be 32 bytes (BLAKE3), got {n}"
                )));
            }
        };
        // Fault injection: junk is stored and its hash acknowledged.
        let junk = self.faults.store_junk;
        let expected = if junk { None } else { expected };
        let store = Arc::clone(&self.store);
        let id = caller.scope(&header.shard_id)?;
        let scoped = id.clone();
        let length = header.length;
        let quota = match caller {
            Caller::Owner => None,
            Caller::Tenant { tenancy, .. } => Some(tenancy.quota),
        };
        // One blocking task per shard creates the temp file, writes each message as it
        // arrives and commits once the stream has ended well: one hand-off to a blocking
        // thread per shard, not one to begin, one to write and one to commit (their wakeups
        // showed in the PUT profile of issue 26). A small queue bounds memory.
        let (tx, mut rx) = mpsc::channel::<ToWriter>(4);
        let write_task = tokio::task::spawn_blocking(move || {
            let mut writer = store.begin_put_within(&id, length, expected, quota)?;
            while let Some(message) = rx.blocking_recv() {
                match message {
                    ToWriter::Data(data) => writer.write(&data)?,
                    ToWriter::Commit => return writer.commit().map(Some),
                }
            }
            // The stream failed: dropping the writer removes the temp file.
            Ok::<_, Error>(None)
        });
        let mut stream_error = None;
        let mut received = 0u64;
        loop {
            let message = tokio::select! {
                biased;
                // The writer failed (no space, over quota, ...): answer now, not once the
                // client sends its next message.
                () = tx.closed() => break,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(proto::PutShardRequest {
                    part: Some(Part::Data(data)),
                })) => {
                    received = received.saturating_add(data.len() as u64);
                    let data = if junk {
                        Bytes::from(vec![0x5a; data.len()])
                    } else {
                        data
                    };
                    if tx.send(ToWriter::Data(data)).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Ok(Some(_)) => {
                    stream_error = Some(Status::invalid_argument(
                        "only data may follow the PutShard header",
                    ));
                    break;
                }
                Ok(None) => {
                    // A failed send means the writer failed: its error is reported below.
                    let _ = tx.send(ToWriter::Commit).await;
                    break;
                }
                Err(status) => {
                    stream_error = Some(status);
                    break;
                }
            }
        }
        drop(tx);
        let committed = match write_task.await {
            Ok(Ok(committed)) => committed,
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(Status::internal(format!("storage task failed: {e}"))),
        };
        self.metrics
            .bytes
            .with_label_values(&["PutShard"])
            .inc_by(received);
        let meta = match (committed, stream_error) {
            (Some(meta), None) => meta,
            (_, Some(status)) => return Err(status),
            (None, None) => return Err(Status::internal("the shard was not committed")),
        };
        if self.faults.drop_writes {
            // Fault injection: acknowledged as stored, and gone.
            let store = Arc::clone(&self.store);
            blocking(move || store.delete(&scoped)).await?;
        }
        info!(shard = %header.shard_id, length = meta.length, "shard stored");
        Ok(proto::PutShardResponse {
            hash: Bytes::copy_from_slice(&meta.hash),
            length: meta.length,
        })
    }
}

/// What the receiving side of a `PutShard` hands its blocking writer.
enum ToWriter {
    Data(Bytes),
    /// The stream ended well: commit the shard.
    Commit,
}

type ChunkStream = ReceiverStream<Result<proto::ShardChunk, Status>>;

#[tonic::async_trait]
impl ShardStore for ShardService {
    async fn put_shard(
        &self,
        request: Request<Streaming<proto::PutShardRequest>>,
    ) -> Result<Response<proto::PutShardResponse>, Status> {
        let started = Instant::now();
        let result = match self.authorize(&request) {
            Ok(caller) => self.put(&caller, request.into_inner()).await,
            Err(e) => Err(e),
        };
        self.finish("PutShard", started, result).map(Response::new)
    }

    type GetShardStream = ChunkStream;

    async fn get_shard(
        &self,
        request: Request<proto::GetShardRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let started = Instant::now();
        let caller = match self.authorize(&request) {
            Ok(c) => c,
            Err(e) => return self.finish("GetShard", started, Err(e)),
        };
        let req = request.into_inner();
        let at = crate::market::metered_second(req.metered_at);
        let id = match caller.scope(&req.shard_id) {
            Ok(id) => id,
            Err(e) => return self.finish("GetShard", started, Err(e)),
        };
        // Fault injection: the bytes of the next shard held (of the same caller) instead.
        let id = if self.faults.swap_shards {
            self.other_shard(&caller, &id).unwrap_or(id)
        } else {
            id
        };
        let slow = self.faults.slow_reads;
        let store = Arc::clone(&self.store);
        // A whole shard the caller authenticates itself is read without the hash check
        // (a range is always checked: the caller cannot tell its rot from the shard's).
        let unchecked = req.skip_hash_check && req.offset == 0 && req.length == 0;
        if unchecked {
            self.metrics.unchecked_reads.inc();
        }
        // Open and verify the first chunk before answering, so a missing or
        // corrupt shard is a status rather than a broken stream.
        let opened = blocking(move || {
            let mut reader = if unchecked {
                store.read_unchecked(&id)?
            } else {
                store.read_range(&id, req.offset, req.length)?
            };
            let first = reader.next_chunk(chunk_len(reader.remaining()))?;
            Ok((reader, first))
        })
        .await;
        let (mut reader, first) = match opened {
            Ok(v) => v,
            Err(e) => return self.finish("GetShard", started, Err(e)),
        };
        let mut total = first.len() as u64 + reader.remaining();
        let (tx, rx) = mpsc::channel(2);
        let metrics = self.metrics.clone();
        let recorder = self.clone_for_recording();
        // A tenant's egress is metered for its receipts: what was handed to the connection.
        let meter = caller
            .contract()
            .map(|c| (self.contracted.clone(), c.to_owned(), at));
        tokio::task::spawn_blocking(move || {
            let bytes = metrics.bytes.with_label_values(&["GetShard"]);
            let mut egress = EgressOnDrop { meter, sent: 0 };
            let mut chunk = first;
            loop {
                if chunk.is_empty() {
                    break;
                }
                if slow && chunk.len() > 1 {
                    // Fault injection: one byte a second, for as long as the caller waits.
                    let rest = chunk.split_off(1);
                    let message = proto::ShardChunk {
                        data: chunk,
                        total: std::mem::take(&mut total),
                    };
                    if tx.blocking_send(Ok(message)).is_err() {
                        recorder.record("GetShard", started, Code::Cancelled);
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    chunk = rest;
                    continue;
                }
                bytes.inc_by(chunk.len() as u64);
                egress.sent += chunk.len() as u64;
                let message = proto::ShardChunk {
                    data: chunk,
                    total: std::mem::take(&mut total),
                };
                if tx.blocking_send(Ok(message)).is_err() {
                    recorder.record("GetShard", started, Code::Cancelled);
                    return;
                }
                if reader.remaining() == 0 {
                    break;
                }
                chunk = match reader.next_chunk(chunk_len(reader.remaining())) {
                    Ok(c) => c,
                    Err(e) => {
                        let status = Status::from(e);
                        recorder.record("GetShard", started, status.code());
                        let _ = tx.blocking_send(Err(status));
                        return;
                    }
                };
            }
            recorder.record("GetShard", started, Code::Ok);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delete_shard(
        &self,
        request: Request<proto::DeleteShardRequest>,
    ) -> Result<Response<proto::DeleteShardResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let caller = self.authorize(&request)?;
            let id = caller.scope(&request.into_inner().shard_id)?;
            let store = Arc::clone(&self.store);
            let existed = blocking(move || store.delete(&id)).await?;
            Ok(proto::DeleteShardResponse { existed })
        }
        .await;
        self.finish("DeleteShard", started, result)
            .map(Response::new)
    }

    async fn stat_shard(
        &self,
        request: Request<proto::StatShardRequest>,
    ) -> Result<Response<proto::ShardStat>, Status> {
        let started = Instant::now();
        let result = self.authorize(&request).and_then(|caller| {
            let id = request.into_inner().shard_id;
            let meta = self.store.stat(&caller.scope(&id)?)?;
            Ok(stat_of(id, &meta))
        });
        self.finish("StatShard", started, result).map(Response::new)
    }

    async fn list_shards(
        &self,
        request: Request<proto::ListShardsRequest>,
    ) -> Result<Response<proto::ListShardsResponse>, Status> {
        let started = Instant::now();
        let result = self.authorize(&request).map(|caller| {
            let req = request.into_inner();
            let limit = match req.limit {
                0 => 1000,
                n => n.min(10_000),
            } as usize;
            // A tenant lists inside its namespace; its own ids can't escape it.
            let (prefix, start_after) = match &caller {
                Caller::Owner => (req.prefix, req.start_after),
                Caller::Tenant { namespace, .. } => (
                    format!("{namespace}{}", req.prefix),
                    if req.start_after.is_empty() {
                        String::new()
                    } else {
                        format!("{namespace}{}", req.start_after)
                    },
                ),
            };
            let (page, next) = self.store.list(&prefix, &start_after, limit);
            proto::ListShardsResponse {
                shards: page
                    .into_iter()
                    .map(|(id, meta)| stat_of(caller.unscope(id), &meta))
                    .collect(),
                next_start_after: next.map(|n| caller.unscope(n)).unwrap_or_default(),
            }
        });
        self.finish("ListShards", started, result)
            .map(Response::new)
    }

    async fn info(
        &self,
        request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        let started = Instant::now();
        let result = self.authorize(&request).map(|caller| {
            let mut usage = self.store.usage();
            self.metrics.set_usage(usage);
            // A tenant sees its reservation as the capacity, and its own shards.
            if let Caller::Tenant { namespace, tenancy } = &caller {
                let mine = self.store.tenant_usage(namespace);
                usage = crate::store::Usage {
                    capacity: tenancy.quota,
                    used: mine.file_bytes,
                    free: tenancy
                        .quota
                        .saturating_sub(mine.file_bytes.saturating_add(mine.reserved))
                        .min(usage.free),
                    shards: mine.shards,
                };
            }
            if self.faults.overstate_free {
                usage.free = OVERSTATED_FREE;
                usage.capacity = usage.used.saturating_add(OVERSTATED_FREE);
            }
            proto::InfoResponse {
                node_id: self.node_id.to_string(),
                capacity_bytes: usage.capacity,
                used_bytes: usage.used,
                free_bytes: usage.free,
                version: VERSION.to_string(),
                uptime_seconds: self.started.elapsed().as_secs(),
                shard_count: usage.shards,
                zone: self.zone.clone(),
            }
        });
        self.finish("Info", started, result).map(Response::new)
    }

    async fn audit(
        &self,
        request: Request<proto::AuditRequest>,
    ) -> Result<Response<proto::AuditResponse>, Status> {
        let started = Instant::now();
        let mut contract = None;
        let result: Result<proto::AuditResponse, Status> = async {
            let caller = self.authorize(&request)?;
            let req = request.into_inner();
            contract = caller
                .contract()
                .map(|c| (c.to_owned(), crate::market::metered_second(req.metered_at)));
            let id = caller.scope(&req.shard_id)?;
            let store = Arc::clone(&self.store);
            let takes_tree = req.accepts().any(|f| f == proto::ProofFormat::Groups);
            let mut answer =
                blocking(move || store.audit(&id, req.offset, req.length, takes_tree)).await?;
            // A cheat that does not read the shard: the proof's content bytes are made up.
            if self.forge_audits.load(Ordering::Relaxed)
                && let Some(last) = answer.proof.last_mut()
            {
                *last ^= 0x5a;
            }
            self.metrics
                .bytes
                .with_label_values(&["Audit"])
                .inc_by(answer.proof.len() as u64);
            let format = if answer.bao {
                proto::ProofFormat::Bao
            } else {
                proto::ProofFormat::Groups
            };
            Ok(proto::AuditResponse {
                slice: Bytes::from(answer.proof),
                shard_length: answer.shard_length,
                proof_format: format.into(),
            })
        }
        .await;
        let outcome = match &result {
            Ok(_) => "answered",
            Err(s) if s.code() == Code::NotFound => "not_found",
            Err(s) if s.code() == Code::DataLoss => "corrupt",
            Err(_) => "error",
        };
        // A tenant's receipts count its audits as this provider saw them: answered is
        // passed (the provider checked the slice), a missing or corrupt shard is failed.
        if let Some((contract, at)) = &contract {
            match outcome {
                "answered" => self.contracted.audit(contract, *at, true),
                "not_found" | "corrupt" => self.contracted.audit(contract, *at, false),
                _ => {}
            }
        }
        self.metrics.audits.with_label_values(&[outcome]).inc();
        self.finish("Audit", started, result).map(Response::new)
    }
}

impl ShardService {
    /// Another shard the caller may read than `id` (the next one held, or the first),
    /// for [`Faults::swap_shards`].
    fn other_shard(&self, caller: &Caller, id: &str) -> Option<String> {
        let prefix = match caller {
            Caller::Owner => String::new(),
            Caller::Tenant { namespace, .. } => namespace.clone(),
        };
        let (after, _) = self.store.list(&prefix, id, 1);
        let (first, _) = self.store.list(&prefix, "", 2);
        after
            .into_iter()
            .chain(first)
            .map(|(other, _)| other)
            .find(|other| other != id)
    }

    fn clone_for_recording(&self) -> Recorder {
        Recorder {
            metrics: self.metrics.clone(),
        }
    }
}

/// Adds a tenant's streamed bytes to its meter when the stream ends, however it ends.
struct EgressOnDrop {
    /// The tenant's contract and the second the read is metered under.
    meter: Option<(crate::market::ContractedClients, String, i64)>,
    sent: u64,
}

impl Drop for EgressOnDrop {
    fn drop(&mut self) {
        if let Some((clients, contract, at)) = &self.meter
            && self.sent > 0
        {
            clients.egress(contract, *at, self.sent);
        }
    }
}

/// The part of the service a background stream task needs to record metrics.
struct Recorder {
    metrics: Metrics,
}

impl Recorder {
    fn record(&self, method: &str, started: Instant, code: Code) {
        self.metrics
            .requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
        if code == Code::DataLoss {
            self.metrics.corruptions.inc();
        }
    }
}

/// Bytes a shard read may send past [`CHUNK_SIZE`] in its last message rather than in one
/// more: a 4 MiB segment's shards are 1 MiB and a few bytes (the tag, the padding), and a
/// tail of a few bytes in a message of its own makes the gateway copy the whole shard to
/// join the two. Well within the message limit (`CHUNK_SIZE` + 256 KiB).
const CHUNK_SLACK: usize = 64 * 1024;

/// How much of a shard the next message of a read carries, `remaining` bytes being left:
/// all of them when they fit in [`CHUNK_SIZE`] plus [`CHUNK_SLACK`], else [`CHUNK_SIZE`].
fn chunk_len(remaining: u64) -> usize {
    match usize::try_from(remaining) {
        Ok(n) if n <= CHUNK_SIZE + CHUNK_SLACK => n,
        _ => CHUNK_SIZE,
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::{CHUNK_SIZE, chunk_len};

    #[test]
    fn a_shard_just_over_a_chunk_goes_in_one_message() {
        // The shard of a 4 MiB segment striped 4+2: (4 MiB + 16) / 4, made even.
        assert_eq!(chunk_len((1 << 20) + 4), (1 << 20) + 4);
        assert_eq!(chunk_len(10), 10);
        assert_eq!(chunk_len(0), 0);
        // Longer shards go in chunks, none above the limit.
        assert_eq!(chunk_len(4 << 20), CHUNK_SIZE);
        assert_eq!(chunk_len(u64::MAX), CHUNK_SIZE);
        let limit = CHUNK_SIZE + 256 * 1024;
        assert!(
            (0..3 << 20)
                .step_by(4099)
                .all(|n| chunk_len(n) < limit - 1024)
        );
    }
}
