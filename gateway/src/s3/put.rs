//! PutObject: stream the body into segments, write them, commit the version.

use std::sync::Arc;

use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::{Gateway, Plan, etag, internal, now_ms};
use crate::dataplane::{self, ObjectWriter, ShardBackend, WriteSpec};
use crate::meta::{NULL_VERSION, ObjectVersion};

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

/// Cuts the body into segments and hands them over; returns the size and MD5.
async fn cut_body(
    body: Option<StreamingBlob>,
    segment_size: usize,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> S3Result<(u64, String)> {
    let mut md5 = Md5::new();
    let mut size = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    let stopped = || internal("storing the object failed");
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                S3Error::with_message(
                    S3ErrorCode::IncompleteBody,
                    format!("reading the request body failed: {e}"),
                )
            })?;
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
                    tx.send(std::mem::take(&mut buf))
                        .await
                        .map_err(|_| stopped())?;
                }
            }
        }
    }
    if !buf.is_empty() {
        tx.send(buf).await.map_err(|_| stopped())?;
    }
    Ok((size, hex::encode(md5.finalize())))
}

/// Reads the body and writes it segment by segment, reading the next segment
/// while the previous one is stored (at most three segments in memory);
/// aborts the writer on any error so no shards remain.
async fn write_body(
    mut writer: ObjectWriter,
    body: Option<StreamingBlob>,
    segment_size: usize,
) -> S3Result<Written> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let store = async {
        while let Some(segment) = rx.recv().await {
            if let Err(e) = writer.write_segment(segment).await {
                rx.close();
                return Err(e);
            }
        }
        Ok(())
    };
    let (cut, stored) = tokio::join!(cut_body(body, segment_size, tx), store);
    match (cut, stored) {
        (Ok((size, md5)), Ok(())) => Ok(Written {
            layout: writer.finish(),
            size,
            md5,
        }),
        (_, Err(e)) => {
            writer.abort().await;
            Err(internal(format!("storing the object failed: {e}")))
        }
        (Err(e), Ok(())) => {
            writer.abort().await;
            Err(e)
        }
    }
}

impl Gateway {
    pub(super) async fn do_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let bucket = self.require_bucket(&input.bucket).await?;
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
        let placement = self.place(&plan, &input.key, &uid)?;
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

        if let Some(expected) = &input.content_md5 {
            use base64::Engine;
            let sent = base64::engine::general_purpose::STANDARD
                .decode(expected.trim())
                .ok()
                .map(hex::encode);
            if sent.as_deref() != Some(written.md5.as_str()) {
                dataplane::delete_shards(&written.layout, self.backend_for()).await;
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    "the Content-MD5 you specified did not match what was received",
                ));
            }
        }
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
        let outcome = match self.meta(move |m| m.put_version(&version)).await {
            Ok(o) => o,
            Err(e) => {
                dataplane::delete_shards(&written.layout, self.backend_for()).await;
                return Err(e);
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

impl Gateway {
    /// The providers for shards 0..width of a new object under `plan`; 503 naming the
    /// unmet rule when the plan cannot be placed on today's healthy providers.
    pub(super) fn place(
        &self,
        plan: &Plan,
        key: &str,
        uid: &str,
    ) -> S3Result<Vec<Arc<dyn ShardBackend>>> {
        let rule = self.topology.rule(&plan.name);
        let candidates = self.topology.candidates(&self.health);
        // A provider must at least hold its shard of one segment.
        let need = plan.segment_size.div_ceil(plan.scheme.needed() as u64);
        let width = plan.scheme.width();
        let chosen =
            crate::placement::choose(&plan.name, &rule, width, &candidates, need, key, uid)
                .map_err(|e| {
                    let mut err = S3Error::with_message(S3ErrorCode::ServiceUnavailable, e.0);
                    err.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
                    err
                })?;
        chosen
            .into_iter()
            .map(|i| {
                let node = &candidates[i].site.node_id;
                self.by_node
                    .get(node)
                    .cloned()
                    .ok_or_else(|| internal(format!("provider {node} has no client")))
            })
            .collect()
    }
}
