//! A journal segment: its id, its format (entries sealed with a data key wrapped by the
//! master key) and the segments an installation has on its providers.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use sublet_provider::client::ProviderClient;

use super::{Entry, JOURNAL_PREFIX, Journal};
use crate::datapath::codec::{DataKey, MasterKey, NONCE_PREFIX_LEN};
use crate::datapath::fleet::Fleet;

/// First bytes of a segment: format version 1.
const MAGIC: &[u8; 4] = b"SJL1";

/// What a segment holds once opened: its own id (so a provider cannot pass one segment off
/// as another) and its entries.
#[derive(Deserialize)]
struct SegmentBody {
    id: String,
    entries: Vec<Entry>,
}

/// `<run start ms>-<seq>`, zero-padded so positions sort in write order.
pub(super) fn position(epoch: i64, seq: u64) -> String {
    format!("{epoch:015}-{seq:010}")
}

/// The id prefix of an installation's journal segments.
pub fn segment_prefix(installation: &str) -> String {
    format!("{JOURNAL_PREFIX}{installation}-")
}

impl Journal {
    /// Seals entries (JSON each) into a segment named `id`.
    pub(super) fn seal(&self, id: &str, entries: &[Vec<u8>]) -> std::result::Result<Bytes, String> {
        seal_segment(&self.master, id, entries)
    }
}

/// Seals entries (JSON each) into a segment named `id`, as [`open_segment`] reads it. (Also
/// the `journal_segment` fuzz target's entry, which seals what it opens.)
pub fn seal_segment(
    master: &MasterKey,
    id: &str,
    entries: &[Vec<u8>],
) -> std::result::Result<Bytes, String> {
    let mut body = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum::<usize>() + 64);
    body.extend_from_slice(b"{\"id\":");
    body.extend_from_slice(&serde_json::to_vec(id).map_err(|e| e.to_string())?);
    body.extend_from_slice(b",\"entries\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e);
    }
    body.extend_from_slice(b"]}");
    let (key, wrapped) = master.new_data_key().map_err(|e| e.to_string())?;
    let nonce_prefix = DataKey::new_nonce_prefix().map_err(|e| e.to_string())?;
    key.seal(&nonce_prefix, 0, &mut body)
        .map_err(|e| e.to_string())?;
    let wrapped_len = u16::try_from(wrapped.len()).map_err(|e| e.to_string())?;
    let mut out =
        Vec::with_capacity(MAGIC.len() + 2 + wrapped.len() + NONCE_PREFIX_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&wrapped_len.to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&nonce_prefix);
    out.extend_from_slice(&body);
    Ok(Bytes::from(out))
}

/// Opens a segment read back from a provider: checks its format, decrypts it with the
/// master key and checks it names itself `id`.
pub fn open_segment(
    master: &MasterKey,
    id: &str,
    blob: &[u8],
) -> std::result::Result<Vec<Entry>, String> {
    let rest = blob
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a journal segment (bad magic)")?;
    let (len, rest) = rest.split_at_checked(2).ok_or("truncated")?;
    let wrapped_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (wrapped, rest) = rest.split_at_checked(wrapped_len).ok_or("truncated")?;
    let (nonce_prefix, sealed) = rest.split_at_checked(NONCE_PREFIX_LEN).ok_or("truncated")?;
    let key = master.unwrap_data_key(wrapped).map_err(|e| e.to_string())?;
    let mut body = sealed.to_vec();
    key.open(nonce_prefix, 0, &mut body)
        .map_err(|e| e.to_string())?;
    let body: SegmentBody =
        serde_json::from_slice(&body).map_err(|e| format!("unreadable entries: {e}"))?;
    if body.id != id {
        return Err(format!("it holds segment {} instead", body.id));
    }
    Ok(body.entries)
}

/// The journal segments of `installation` the providers list: id → providers holding it,
/// in write order; and the providers that could not be listed.
pub async fn list_segments(
    installation: &str,
    clients: &[(String, ProviderClient)],
) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let prefix = segment_prefix(installation);
    let mut segments: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unlisted = Vec::new();
    for (node, client) in clients {
        let (shards, listed) = client.list_all(&prefix).await;
        for s in shards {
            segments.entry(s.shard_id).or_default().push(node.clone());
        }
        if let Err(e) = listed {
            tracing::warn!(provider = %node, error = %e, "listing the metadata journal failed");
            unlisted.push(node.clone());
        }
    }
    (segments, unlisted)
}

/// Deletes the segments at or before position `upto` (which every kept snapshot contains).
pub async fn trim(fleet: &Fleet, clients: &[(String, ProviderClient)], upto: &str) -> u64 {
    let (segments, _) = list_segments(fleet.installation(), clients).await;
    let prefix = segment_prefix(fleet.installation());
    let mut deleted = 0;
    for (id, nodes) in segments {
        if id.strip_prefix(&prefix).is_none_or(|pos| pos > upto) {
            continue;
        }
        for node in nodes {
            if let Some(b) = fleet.backend(&node)
                && b.delete(&id).await.is_ok()
            {
                deleted += 1;
            }
        }
    }
    deleted
}
