//! Metadata survival: the gateway stores encrypted snapshots of its metadata store through
//! the data path (default plan: erasure-coded, encrypted with the master key) and a small
//! manifest on every provider; `sublet recover` finds the newest manifest on the providers
//! and rebuilds the metadata file from it. Losing the gateway's disk then loses at most
//! the changes since the last snapshot — the master key must be backed up separately.

use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode, S3Result};
use serde::{Deserialize, Serialize};

use super::{Gateway, internal, now_ms};
use crate::layout::Layout;
use crate::meta::ObjectVersion;

/// Shard ids of manifests: this prefix and the snapshot's creation time (ms, zero-padded so
/// ids sort by age).
pub const MANIFEST_PREFIX: &str = "sublet-meta-manifest-";

/// Snapshots kept; older ones are deleted after a new one is stored.
pub const KEEP_SNAPSHOTS: usize = 3;

/// What a manifest records: where the snapshot's bytes are and how to check them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Unix ms when the snapshot was taken.
    pub created: i64,
    /// Bytes of the SQLite file.
    pub size: u64,
    /// BLAKE3 of the SQLite file (hex).
    pub blake3: String,
    /// The plan its shards were written under.
    pub plan: String,
    /// Encrypted, erasure-coded like any object (its data key wrapped by the master key).
    pub layout: Layout,
    /// The metadata journal's position when the copy was taken: it contains every change
    /// journaled at or before it, and recovery replays the segments after it. `None` for
    /// a gateway keeping no journal (and for snapshots older than the journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_cut: Option<String>,
}

impl Manifest {
    pub fn shard_id(&self) -> String {
        manifest_id(self.created)
    }
}

pub fn manifest_id(created: i64) -> String {
    format!("{MANIFEST_PREFIX}{created:015}")
}

fn unavailable(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::ServiceUnavailable, message)
}

impl Gateway {
    /// Stores the file at `path` (a consistent copy of the metadata store) under the
    /// default plan and its manifest on every provider that takes it (at least one).
    /// `journal_cut` is the journal position read before the copy was taken.
    pub async fn store_snapshot(
        &self,
        path: &Path,
        journal_cut: Option<String>,
    ) -> S3Result<Manifest> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| internal(format!("reading the snapshot {}: {e}", path.display())))?;
        let blake3 = blake3::hash(&bytes).to_hex().to_string();
        let size = bytes.len() as u64;
        let plan = self
            .plan(&self.default_plan)
            .ok_or_else(|| internal("the default plan is not configured"))?;
        let created = now_ms();
        let body = futures::stream::iter(
            bytes
                .chunks(1 << 20)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        // Never inline: the snapshot is the copy of the metadata itself.
        let written = self
            .store_striped(
                &plan,
                &manifest_id(created),
                Some(StreamingBlob::wrap(body)),
            )
            .await?;
        let manifest = Manifest {
            created,
            size,
            blake3,
            plan: plan.name.clone(),
            layout: written.layout,
            journal_cut,
        };
        let json = Bytes::from(
            serde_json::to_vec(&manifest).map_err(|e| internal(format!("manifest: {e}")))?,
        );
        let id = manifest.shard_id();
        let providers = self.providers();
        let puts = providers.values().map(|b| {
            let json = json.clone();
            let id = id.clone();
            async move { b.put(&id, json).await }
        });
        let stored = futures::future::join_all(puts)
            .await
            .into_iter()
            .filter(Result::is_ok)
            .count();
        if stored == 0 {
            self.free(Some(&manifest.layout)).await;
            return Err(unavailable(
                "no provider took the metadata snapshot's manifest".into(),
            ));
        }
        tracing::info!(bytes = size, providers = stored, "metadata snapshot stored");
        Ok(manifest)
    }

    /// Deletes the manifests `older` name, and their snapshots' shards.
    pub async fn drop_snapshots(&self, older: &[Manifest]) {
        for m in older {
            self.free(Some(&m.layout)).await;
            let id = m.shard_id();
            for b in self.providers().values() {
                let _ = b.delete(&id).await;
            }
        }
    }

    /// Parses a manifest read from a provider.
    pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable manifest: {e}"))
    }

    /// The manifest named `id` from the first provider that has a readable copy.
    pub async fn fetch_manifest(&self, id: &str) -> Option<Manifest> {
        for b in self.providers().values() {
            if let Ok(bytes) = b.get(id).await
                && let Ok(m) = Self::parse_manifest(&bytes)
                && m.shard_id() == id
            {
                return Some(m);
            }
        }
        None
    }

    /// Reads a snapshot back, checking its size and BLAKE3 hash.
    pub async fn read_snapshot(&self, manifest: &Manifest) -> S3Result<Vec<u8>> {
        let v = ObjectVersion {
            bucket: "(metadata snapshot)".into(),
            key: manifest.shard_id(),
            version_id: String::new(),
            delete_marker: false,
            size: manifest.size,
            etag: String::new(),
            content_type: None,
            user_metadata: Default::default(),
            last_modified: manifest.created,
            plan: manifest.plan.clone(),
            layout: Some(manifest.layout.clone()),
        };
        let mut stream = self.read_range(&v, 0..manifest.size).await?;
        let mut out = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| internal(e.to_string()))?);
        }
        let hash = blake3::hash(&out).to_hex().to_string();
        if hash != manifest.blake3 {
            return Err(internal(format!(
                "snapshot {}: BLAKE3 {hash} differs from the manifest's {}",
                manifest.shard_id(),
                manifest.blake3
            )));
        }
        Ok(out)
    }
}
