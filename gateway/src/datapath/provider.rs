//! [`ShardBackend`] over a provider's gRPC client.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sublet_provider::client::ProviderClient;

use crate::datapath::stripes::{BackendError, ShardBackend};

tokio::task_local! {
    /// Set (by a scrub) around a shard read to have the provider check the shard's outboard
    /// (the BLAKE3 tree audits prove slices with) as well as its bytes, group by group.
    /// Plain reads check the bytes alone, in one pass.
    pub static CHECK_OUTBOARD: bool;
}

/// A provider seen through its pinned TLS client.
pub struct ProviderBackend {
    client: ProviderClient,
    node_id: String,
}

impl ProviderBackend {
    pub fn new(client: ProviderClient) -> Self {
        let node_id = client.node_id().to_string();
        Self { client, node_id }
    }

    pub fn client(&self) -> &ProviderClient {
        &self.client
    }
}

/// Longest a shard transfer may take before the provider counts as failed.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a delete may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

async fn timed<T, E: std::fmt::Display>(
    node: &str,
    what: &str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| err(node, what, e)),
        Err(_) => Err(err(node, what, format!("timed out after {limit:?}"))),
    }
}

fn err(node: &str, what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError(format!("provider {node}: {what}: {e}"))
}

#[async_trait]
impl ShardBackend for ProviderBackend {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn put(
        &self,
        shard_id: &str,
        data: Bytes,
        hash: &[u8; 32],
    ) -> Result<[u8; 32], BackendError> {
        // The provider checks the bytes it received against `hash` and stores nothing
        // otherwise; its answer is still only its word (`put_shard` compares it).
        let call = self.client.put_shard_expecting(shard_id, data, *hash);
        let out = timed(&self.node_id, "put", TRANSFER_TIMEOUT, call).await?;
        Ok(out.hash)
    }

    async fn get(&self, shard_id: &str) -> Result<Bytes, BackendError> {
        use crate::datapath::stripes::{AUTHENTICATED_READ, EXPECTED_LEN};
        // A whole shard by explicit range: the provider then checks its outboard too.
        let check_outboard = CHECK_OUTBOARD.try_with(|check| *check).unwrap_or(false);
        // At most the recorded length when the caller knows it, a shard's maximum otherwise.
        let max_len = EXPECTED_LEN.try_with(|len| *len).unwrap_or(u64::MAX);
        // Bytes the reader authenticates itself need no hash check on the provider's side.
        let authenticated = AUTHENTICATED_READ.try_with(|a| *a).unwrap_or(false);
        if authenticated && !check_outboard {
            // Of a known length, it may be read from the shard's file when the provider is
            // on this machine (short-circuit reads); the length is then checked exactly.
            if max_len != u64::MAX {
                let call = self.client.get_shard_authenticated_exact(shard_id, max_len);
                return timed(&self.node_id, "get", TRANSFER_TIMEOUT, call).await;
            }
            let call = self
                .client
                .get_shard_authenticated_within(shard_id, max_len);
            return timed(&self.node_id, "get", TRANSFER_TIMEOUT, call).await;
        }
        let range = check_outboard.then_some((0, u64::MAX));
        let call = self.client.get_shard_within(shard_id, range, max_len);
        timed(&self.node_id, "get", TRANSFER_TIMEOUT, call).await
    }

    async fn delete(&self, shard_id: &str) -> Result<(), BackendError> {
        let call = self.client.delete_shard(shard_id);
        timed(&self.node_id, "delete", DELETE_TIMEOUT, call)
            .await
            .map(|_| ())
    }

    async fn audit(
        &self,
        shard_id: &str,
        offset: u64,
        len: u64,
        hash: &[u8; 32],
    ) -> Result<(), BackendError> {
        let call = self.client.audit(shard_id, offset, len, hash);
        timed(&self.node_id, "audit", DELETE_TIMEOUT, call)
            .await
            .map(|_| ())
    }

    async fn list(&self) -> Result<Option<Vec<(String, i64)>>, BackendError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let call = self.client.list_shards("", &after, 1000);
            let (page, next) = timed(&self.node_id, "list", DELETE_TIMEOUT, call).await?;
            out.extend(page.into_iter().map(|s| (s.shard_id, s.stored_at)));
            match next {
                Some(n) => after = n,
                None => return Ok(Some(out)),
            }
        }
    }
}
