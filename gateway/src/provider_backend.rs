//! [`ShardBackend`] over a provider's gRPC client.

use async_trait::async_trait;
use bytes::Bytes;
use sublet_provider::client::ProviderClient;

use crate::dataplane::{BackendError, ShardBackend};

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

fn err(node: &str, what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError(format!("provider {node}: {what}: {e}"))
}

#[async_trait]
impl ShardBackend for ProviderBackend {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn put(&self, shard_id: &str, data: Bytes) -> Result<[u8; 32], BackendError> {
        let out = self
            .client
            .put_shard(shard_id, data)
            .await
            .map_err(|e| err(&self.node_id, "put", e))?;
        Ok(out.hash)
    }

    async fn get(&self, shard_id: &str) -> Result<Bytes, BackendError> {
        self.client
            .get_shard(shard_id, None)
            .await
            .map_err(|e| err(&self.node_id, "get", e))
    }

    async fn delete(&self, shard_id: &str) -> Result<(), BackendError> {
        self.client
            .delete_shard(shard_id)
            .await
            .map(|_| ())
            .map_err(|e| err(&self.node_id, "delete", e))
    }
}
