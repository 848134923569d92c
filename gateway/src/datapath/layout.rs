//! Where an object version's bytes live: its redundancy scheme, encryption and
//! the providers holding each shard of each segment. Stored by the metadata store.

use serde::{Deserialize, Serialize};

/// How a plan makes data redundant, frozen into each version at write time so a
/// later change of the plan never makes old objects unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Scheme {
    /// Reed–Solomon: `data` shards carry the segment, `parity` shards repair it.
    Erasure { data: u16, parity: u16 },
    /// Whole copies of every segment.
    Replicas { copies: u16 },
}

impl Scheme {
    /// Shards per segment.
    pub fn width(&self) -> usize {
        match *self {
            Scheme::Erasure { data, parity } => usize::from(data) + usize::from(parity),
            Scheme::Replicas { copies } => usize::from(copies),
        }
    }

    /// Shards needed to read a segment back.
    pub fn needed(&self) -> usize {
        match *self {
            Scheme::Erasure { data, .. } => usize::from(data),
            Scheme::Replicas { .. } => 1,
        }
    }
}

/// Encryption of an object version's segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Encryption {
    None,
    /// AES-256-GCM; the per-object data key is wrapped by the gateway master key.
    /// Segment nonces derive from `nonce_prefix` and the segment index.
    Aes256Gcm {
        #[serde(with = "hex_bytes")]
        wrapped_key: Vec<u8>,
        #[serde(with = "hex_bytes")]
        nonce_prefix: Vec<u8>,
        /// Set when the data key is wrapped for a customer's key (SSE-C) rather than by
        /// the master key alone: what recognises that key. The key itself is never stored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        customer: Option<CustomerSeal>,
    },
}

/// What recognises a customer's key (SSE-C) without storing it: `HMAC-SHA256(salt, key)`
/// under a random salt. A request giving another key is refused before any read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSeal {
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub key_hmac: Vec<u8>,
}

/// One shard of one segment on one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardLocation {
    /// Node id of the provider holding it; empty when the write failed (missing, to repair).
    pub provider: String,
    /// Opaque id the provider stores it under.
    pub shard_id: String,
    /// BLAKE3 of the bytes written (hex), computed by the gateway from what it sent and
    /// acknowledged by the provider ([`crate::datapath::stripes::put_shard`]).
    pub hash: String,
    pub length: u64,
}

impl ShardLocation {
    pub fn is_missing(&self) -> bool {
        self.provider.is_empty()
    }
}

/// One segment: `segmentSize` bytes of plaintext (the last may be shorter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Plaintext bytes in this segment.
    pub plain_length: u64,
    /// Bytes of ciphertext (plaintext + tag) before erasure coding.
    pub sealed_length: u64,
    /// Shard `i` of the stripe, in stripe order (index = shard number).
    pub shards: Vec<ShardLocation>,
}

/// Everything needed to read a version back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    pub scheme: Scheme,
    pub encryption: Encryption,
    /// Plaintext bytes per segment (all but the last segment are exactly this long).
    pub segment_size: u64,
    pub segments: Vec<Segment>,
    /// Small objects live in metadata instead of on providers (sealed bytes, base64).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_base64_bytes"
    )]
    pub inline: Option<Vec<u8>>,
    /// A version assembled by a multipart upload: its parts' layouts in order,
    /// each with its own scheme, key and segments (one level deep; parts have
    /// no parts). The version's bytes are the parts' bytes one after another,
    /// and `segments` is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Layout>,
}

impl Layout {
    /// Plaintext length of the whole version.
    pub fn plain_length(&self) -> u64 {
        self.pieces()
            .flat_map(|p| p.segments.iter())
            .map(|s| s.plain_length)
            .sum()
    }

    /// Every shard location, for deletion and garbage collection.
    pub fn shards(&self) -> impl Iterator<Item = &ShardLocation> {
        self.pieces()
            .flat_map(|p| p.segments.iter())
            .flat_map(|s| s.shards.iter())
    }

    /// The seal of the customer's key (SSE-C) the version's data keys are wrapped for, when
    /// they are (every piece of a multipart version carries the same one).
    pub fn customer_seal(&self) -> Option<&CustomerSeal> {
        self.pieces().find_map(|p| match &p.encryption {
            Encryption::Aes256Gcm { customer, .. } => customer.as_ref(),
            Encryption::None => None,
        })
    }

    /// The layouts holding the bytes, in order: the parts of a multipart
    /// version, or the version itself.
    pub fn pieces(&self) -> impl Iterator<Item = &Layout> {
        let own = self.parts.is_empty().then_some(self);
        own.into_iter().chain(self.parts.iter())
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

mod opt_base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
