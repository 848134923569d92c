//! PutObject: stream the body into segments, write them, commit the version.

use std::sync::Arc;

use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::{Gateway, Plan, etag, internal, meta_err, now_ms};
use crate::dataplane::{self, ObjectWriter, ShardBackend, WriteSpec};
use crate::meta::{NULL_VERSION, ObjectVersion};

/// The first `width` providers ordered by a hash of (key, version uid, node id).
pub fn place(
    providers: &[Arc<dyn ShardBackend>],
    key: &str,
    uid: &str,
    width: usize,
) -> Result<Vec<Arc<dyn ShardBackend>>, String> {
    if providers.len() < width {
        return Err(format!(
            "the plan needs {width} providers (one per shard) but only {} are configured",
            providers.len()
        ));
    }
    let mut ranked: Vec<([u8; 32], &Arc<dyn ShardBackend>)> = providers
        .iter()
        .map(|p| {
            let mut h = blake3::Hasher::new();
            h.update(key.as_bytes());
            h.update(&[0]);
            h.update(uid.as_bytes());
            h.update(&[0]);
            h.update(p.node_id().as_bytes());
            (*h.finalize().as_bytes(), p)
        })
        .collect();
    ranked.sort_by_key(|a| a.0);
    Ok(ranked
        .into_iter()
        .take(width)
        .map(|(_, p)| Arc::clone(p))
        .collect())
}

fn random_uid() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    hex::encode(b)
}

struct Written {
    layout: crate::layout::Layout,
    size: u64,
    md5: String,
}

/// Reads the body and writes it segment by segment; aborts the writer on any error.
async fn write_body(
    mut writer: ObjectWriter,
    body: Option<StreamingBlob>,
    segment_size: usize,
) -> S3Result<Written> {
    let mut md5 = Md5::new();
    let mut size = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    writer.abort().await;
                    return Err(S3Error::with_message(
                        S3ErrorCode::IncompleteBody,
                        format!("reading the request body failed: {e}"),
                    ));
                }
            };
            md5.update(&chunk);
            size += chunk.len() as u64;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                if buf.capacity() == 0 {
                    buf.reserve_exact(segment_size);
                }
                let take = (segment_size - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == segment_size {
                    let segment = std::mem::take(&mut buf);
                    if let Err(e) = writer.write_segment(segment).await {
                        writer.abort().await;
                        return Err(internal(format!("storing the object failed: {e}")));
                    }
                }
            }
        }
    }
    if !buf.is_empty()
        && let Err(e) = writer.write_segment(buf).await
    {
        writer.abort().await;
        return Err(internal(format!("storing the object failed: {e}")));
    }
    Ok(Written {
        layout: writer.finish(),
        size,
        md5: hex::encode(md5.finalize()),
    })
}

impl Gateway {
    pub(super) async fn do_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket)?;
        let plan_name = match &input.storage_class {
            Some(sc) => sc.as_str().to_string(),
            None => bucket
                .default_plan
                .clone()
                .unwrap_or_else(|| self.default_plan.clone()),
        };
        // Clients that always send STANDARD get the default plan.
        let plan: Plan = match self.plan(&plan_name) {
            Some(p) => p.clone(),
            None if plan_name == "STANDARD" => self
                .plan(&self.default_plan)
                .cloned()
                .ok_or_else(|| internal("no default plan"))?,
            None => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidStorageClass,
                    format!("no storage plan named {plan_name:?}"),
                ));
            }
        };
        let segment_size = usize::try_from(plan.segment_size)
            .map_err(|_| internal(format!("plan {}: segment size too large", plan.name)))?;
        let uid = random_uid();
        let placement =
            place(&self.providers, &input.key, &uid, plan.scheme.width()).map_err(|m| {
                S3Error::with_message(
                    S3ErrorCode::ServiceUnavailable,
                    format!("cannot store under plan {}: {m}", plan.name),
                )
            })?;
        let writer = ObjectWriter::new(
            &self.master,
            WriteSpec {
                scheme: plan.scheme,
                encrypt: plan.encrypt,
                segment_size: plan.segment_size,
                write_quorum: plan.write_quorum,
                placement,
                shard_prefix: uid,
            },
        )
        .map_err(|e| internal(format!("cannot start the write: {e}")))?;

        // A spawned task runs to completion (or aborts cleanly) even if the
        // client goes away and this handler future is dropped.
        let written = tokio::spawn(write_body(writer, input.body, segment_size))
            .await
            .map_err(|e| internal(format!("the write task failed: {e}")))??;

        let version = ObjectVersion {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            version_id: NULL_VERSION.to_string(),
            delete_marker: false,
            size: written.size,
            etag: written.md5.clone(),
            content_type: input.content_type.clone(),
            user_metadata: input.metadata.unwrap_or_default().into_iter().collect(),
            last_modified: now_ms(),
            plan: plan.name.clone(),
            layout: Some(written.layout.clone()),
        };
        let outcome = match self.meta.put_version(&version) {
            Ok(o) => o,
            Err(e) => {
                dataplane::delete_shards(&written.layout, self.backend_for()).await;
                return Err(meta_err(e));
            }
        };
        for old in outcome.replaced {
            if let Some(layout) = old.layout {
                dataplane::delete_shards(&layout, self.backend_for()).await;
            }
        }
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&written.md5)),
            size: Some(i64::try_from(written.size).unwrap_or(i64::MAX)),
            ..Default::default()
        }))
    }
}
