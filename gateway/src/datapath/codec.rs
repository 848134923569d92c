//! The per-segment data path: AES-256-GCM sealing under a per-object data key
//! (wrapped by the gateway master key) and Reed–Solomon striping into shards.

use std::fmt;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::datapath::layout::Scheme;

/// Bytes of authentication tag AES-256-GCM appends to every sealed segment.
pub const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// A nonce is this prefix (random per object) followed by the 8-byte segment index.
pub const NONCE_PREFIX_LEN: usize = NONCE_LEN - 8;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("segment {segment} failed authentication: wrong key or corrupted ciphertext")]
    Authentication { segment: u64 },
    #[error("the data key could not be unwrapped: wrong master key or corrupted metadata")]
    Unwrap,
    #[error(
        "segment needs {needed} intact shards but only {available} are available; the object cannot be read"
    )]
    NotEnoughShards { needed: usize, available: usize },
    #[error("erasure coding failed: {0}")]
    Erasure(String),
    #[error("master key file {path}: {reason}")]
    MasterKey { path: String, reason: String },
    #[error("random number generator failed")]
    Random,
    #[error("sealed record: {0}")]
    Record(&'static str),
    #[error(
        "the object is encrypted with a customer-provided key (SSE-C); the key must be given to read it"
    )]
    CustomerKeyRequired,
    #[error("the customer-provided key is not the one the object was encrypted with")]
    WrongCustomerKey,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CodecError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CodecError::Random)?;
    Ok(out)
}

/// Bytes of the installation tag (hex-encoded in shard ids).
const INSTALLATION_TAG_BYTES: usize = 6;

/// The one secret a gateway must never lose: it wraps every object's data key.
pub struct MasterKey {
    key: LessSafeKey,
    /// Names the installation in its shard ids; see [`MasterKey::installation`].
    installation: String,
    /// See [`MasterKey::node_seed`].
    node_seed: [u8; 32],
    /// Mixed with a customer's key (SSE-C) into the key wrapping that object's data key,
    /// so opening it takes both the customer's key and this installation's master key.
    customer_wrap_seed: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        // A 32-byte key is always valid for AES-256.
        let key = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        let derived = blake3::derive_key("sublet installation tag v1", bytes);
        Self {
            key: LessSafeKey::new(key),
            installation: hex::encode(&derived[..INSTALLATION_TAG_BYTES]),
            node_seed: blake3::derive_key("sublet gateway node key v1", bytes),
            customer_wrap_seed: blake3::derive_key("sublet sse-c wrapping v1", bytes),
        }
    }

    /// Reads the hex-encoded key at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, CodecError> {
        let err = |reason: String| CodecError::MasterKey {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|e| err(format!("not hex: {e}; restore the file from your backup")))?;
                let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
                    err(format!("holds {} bytes, expected {KEY_LEN}", b.len()))
                })?;
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_bytes::<KEY_LEN>()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
                file.write_all(hex::encode(bytes).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// A short name of this installation, derived from (and revealing nothing of) the master
    /// key, so the same for every replica sharing it and different for any other
    /// installation: new shard ids start with it and `_`, which is how background garbage
    /// collection tells this installation's shards from others' on a shared provider.
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// The seed of the gateway's node key when its data directory holds none: every replica
    /// and rebuild Job sharing this master key then signs (to providers and on the market) as
    /// the same node, so they share its contracts and its namespace on rented providers, and
    /// a pod that starts on an empty volume is still the same demander.
    pub fn node_seed(&self) -> [u8; 32] {
        self.node_seed
    }

    /// Makes a fresh data key and returns it with its wrapped form for metadata.
    pub fn new_data_key(&self) -> Result<(DataKey, Vec<u8>), CodecError> {
        let raw = random_bytes::<KEY_LEN>()?;
        let nonce = random_bytes::<NONCE_LEN>()?;
        let mut wrapped = raw.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"sublet data key"),
                &mut wrapped,
            )
            .map_err(|_| CodecError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&wrapped);
        Ok((DataKey::from_bytes(&raw), out))
    }

    /// Recovers a data key from its wrapped form.
    pub fn unwrap_data_key(&self, wrapped: &[u8]) -> Result<DataKey, CodecError> {
        if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(CodecError::Unwrap);
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CodecError::Unwrap)?;
        let mut buf = sealed.to_vec();
        let raw = self
            .key
            .open_in_place(nonce, Aad::from(b"sublet data key"), &mut buf)
            .map_err(|_| CodecError::Unwrap)?;
        let raw: [u8; KEY_LEN] = raw.try_into().map_err(|_| CodecError::Unwrap)?;
        Ok(DataKey::from_bytes(&raw))
    }
}

/// Associated data of a data key wrapped for a customer's key (SSE-C).
const CUSTOMER_WRAP_AAD: &[u8] = b"sublet sse-c data key v1";

impl MasterKey {
    /// The key wrapping data keys of objects encrypted with `customer`'s key: derived from
    /// both that key and the master key, and never stored.
    fn customer_wrapping_key(&self, customer: &CustomerKey) -> LessSafeKey {
        let derived = blake3::keyed_hash(&self.customer_wrap_seed, &customer.raw);
        let key =
            UnboundKey::new(&AES_256_GCM, derived.as_bytes()).unwrap_or_else(|_| unreachable!());
        LessSafeKey::new(key)
    }

    /// A fresh data key wrapped for `customer` (SSE-C): only a request carrying that key can
    /// unwrap it again ([`MasterKey::unwrap_customer_data_key`]).
    pub fn new_customer_data_key(
        &self,
        customer: &CustomerKey,
    ) -> Result<(DataKey, Vec<u8>), CodecError> {
        let raw = random_bytes::<KEY_LEN>()?;
        let nonce = random_bytes::<NONCE_LEN>()?;
        let mut wrapped = raw.to_vec();
        self.customer_wrapping_key(customer)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(CUSTOMER_WRAP_AAD),
                &mut wrapped,
            )
            .map_err(|_| CodecError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&wrapped);
        Ok((DataKey::from_bytes(&raw), out))
    }

    /// Recovers a data key [`MasterKey::new_customer_data_key`] wrapped for `customer`.
    pub fn unwrap_customer_data_key(
        &self,
        wrapped: &[u8],
        customer: &CustomerKey,
    ) -> Result<DataKey, CodecError> {
        if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(CodecError::Unwrap);
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CodecError::Unwrap)?;
        let mut buf = sealed.to_vec();
        let raw = self
            .customer_wrapping_key(customer)
            .open_in_place(nonce, Aad::from(CUSTOMER_WRAP_AAD), &mut buf)
            .map_err(|_| CodecError::WrongCustomerKey)?;
        let raw: [u8; KEY_LEN] = raw.try_into().map_err(|_| CodecError::Unwrap)?;
        Ok(DataKey::from_bytes(&raw))
    }
}

/// Why the customer-key headers of a request (SSE-C) are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CustomerKeyError {
    #[error(
        "the customer-provided encryption algorithm must be AES256, not {0:?} (x-amz-server-side-encryption-customer-algorithm)"
    )]
    Algorithm(String),
    #[error(
        "the customer-provided encryption key must be 32 bytes in base64 (x-amz-server-side-encryption-customer-key)"
    )]
    Key,
    #[error(
        "the calculated MD5 hash of the key did not match the hash that was provided (x-amz-server-side-encryption-customer-key-MD5)"
    )]
    KeyMd5,
}

/// A customer's encryption key (SSE-C), as a request gives it: used for that request and
/// never stored.
#[derive(Clone)]
pub struct CustomerKey {
    raw: [u8; KEY_LEN],
    /// The base64 MD5 of the key, as answers echo it.
    md5: String,
}

impl fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomerKey(md5 {})", self.md5)
    }
}

impl CustomerKey {
    /// The key of the three SSE-C headers: the algorithm (`AES256`), the key (base64 of 32
    /// bytes) and its MD5 (base64, checked).
    pub fn parse(
        algorithm: &str,
        key_base64: &str,
        key_md5_base64: &str,
    ) -> Result<Self, CustomerKeyError> {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        use md5::Digest;
        if algorithm != "AES256" {
            return Err(CustomerKeyError::Algorithm(algorithm.to_owned()));
        }
        let bytes = STANDARD
            .decode(key_base64.trim())
            .map_err(|_| CustomerKeyError::Key)?;
        let raw: [u8; KEY_LEN] = bytes.try_into().map_err(|_| CustomerKeyError::Key)?;
        let md5 = STANDARD.encode(md5::Md5::digest(raw));
        if key_md5_base64.trim() != md5 {
            return Err(CustomerKeyError::KeyMd5);
        }
        Ok(Self { raw, md5 })
    }

    /// The base64 MD5 of the key (`x-amz-server-side-encryption-customer-key-MD5`).
    pub fn md5(&self) -> &str {
        &self.md5
    }

    /// A fresh seal recognising this key: a random salt and the key's HMAC under it.
    pub fn new_seal(&self) -> Result<CustomerSeal, CodecError> {
        let salt = random_bytes::<16>()?.to_vec();
        let key_hmac = Self::hmac(&salt, &self.raw);
        Ok(CustomerSeal { salt, key_hmac })
    }

    /// Whether this is the key `seal` was made from (compared in constant time).
    pub fn matches(&self, seal: &CustomerSeal) -> bool {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seal.salt);
        ring::hmac::verify(&key, &self.raw, &seal.key_hmac).is_ok()
    }

    /// An ETag for content of MD5 `md5_hex` written with this key: HMAC-SHA256 under the
    /// key of a fixed label and the MD5, its first 16 bytes in hex. Without the key, it
    /// tells nothing of the content.
    pub fn keyed_etag(&self, md5_hex: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.raw);
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(b"sublet sse-c etag\0");
        ctx.update(md5_hex.as_bytes());
        hex::encode(&ctx.sign().as_ref()[..16])
    }

    fn hmac(salt: &[u8], raw: &[u8]) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt);
        ring::hmac::sign(&key, raw).as_ref().to_vec()
    }
}

pub use crate::datapath::layout::CustomerSeal;

/// First bytes of a record sealed by [`MasterKey::seal_record`], format version 1.
const RECORD_MAGIC: &[u8; 4] = b"SRC1";

impl MasterKey {
    /// Seals `body` as the record named `id` of this installation (a snapshot manifest):
    /// encrypted and authenticated with the master key, the id and the installation tag
    /// bound in as associated data, so no provider can forge one, pass one off under
    /// another id, or plant another installation's.
    pub fn seal_record(&self, id: &str, body: &[u8]) -> Result<Vec<u8>, CodecError> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let mut sealed = body.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.record_aad(id)),
                &mut sealed,
            )
            .map_err(|_| CodecError::Random)?;
        let mut out = Vec::with_capacity(RECORD_MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(RECORD_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a record [`MasterKey::seal_record`] sealed under `id`; fails (never panics) on
    /// anything else: another format, another id, another installation, a changed byte.
    pub fn open_record(&self, id: &str, blob: &[u8]) -> Result<Vec<u8>, CodecError> {
        let rest = blob
            .strip_prefix(RECORD_MAGIC.as_slice())
            .ok_or(CodecError::Record("not a sealed record (bad magic)"))?;
        let (nonce, sealed) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(CodecError::Record("truncated"))?;
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CodecError::Record("truncated"))?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(self.record_aad(id)), &mut buf)
            .map_err(|_| {
                CodecError::Record(
                    "failed authentication: not sealed by this installation's master key under this id",
                )
            })?;
        Ok(plain.to_vec())
    }

    fn record_aad(&self, id: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + id.len());
        aad.extend_from_slice(b"sublet record v1\0");
        aad.extend_from_slice(self.installation.as_bytes());
        aad.push(0);
        aad.extend_from_slice(id.as_bytes());
        aad
    }
}

/// A per-object key sealing every segment of one object version.
pub struct DataKey(LessSafeKey);

impl DataKey {
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        Self(LessSafeKey::new(key))
    }

    /// A random nonce prefix for a new object version.
    pub fn new_nonce_prefix() -> Result<[u8; NONCE_PREFIX_LEN], CodecError> {
        random_bytes()
    }

    fn nonce(prefix: &[u8], segment: u64) -> Result<Nonce, CodecError> {
        let mut nonce = [0u8; NONCE_LEN];
        if prefix.len() != NONCE_PREFIX_LEN {
            return Err(CodecError::Authentication { segment });
        }
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
        nonce[NONCE_PREFIX_LEN..].copy_from_slice(&segment.to_be_bytes());
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Encrypts `buf` in place and appends the tag. The segment index is both in
    /// the nonce and the associated data, so shards can't be swapped between segments.
    pub fn seal(&self, prefix: &[u8], segment: u64, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        self.0
            .seal_in_place_append_tag(
                Self::nonce(prefix, segment)?,
                Aad::from(segment.to_be_bytes()),
                buf,
            )
            .map_err(|_| CodecError::Authentication { segment })
    }

    /// Decrypts a sealed segment in place, leaving only the plaintext in `buf`.
    pub fn open(&self, prefix: &[u8], segment: u64, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        let plain_len = self
            .0
            .open_in_place(
                Self::nonce(prefix, segment)?,
                Aad::from(segment.to_be_bytes()),
                buf,
            )
            .map_err(|_| CodecError::Authentication { segment })?
            .len();
        buf.truncate(plain_len);
        Ok(())
    }
}

/// Bytes per shard for a sealed segment of `len` bytes striped over `data` shards.
/// Reed–Solomon (reed-solomon-simd) needs an even, non-zero shard size.
pub fn shard_size(scheme: Scheme, len: usize) -> usize {
    match scheme {
        Scheme::Replicas { .. } => len,
        Scheme::Erasure { data, .. } => {
            let per = len.div_ceil(usize::from(data).max(1)).max(2);
            per + per % 2
        }
    }
}

/// Cuts a sealed segment into the stripe's shards, data shards first.
pub fn encode_stripe(scheme: Scheme, sealed: &[u8]) -> Result<Vec<Vec<u8>>, CodecError> {
    match scheme {
        Scheme::Replicas { copies } => Ok(vec![sealed.to_vec(); usize::from(copies)]),
        Scheme::Erasure { data, parity } => {
            let size = shard_size(scheme, sealed.len());
            let mut shards: Vec<Vec<u8>> = (0..usize::from(data))
                .map(|i| {
                    let start = (i * size).min(sealed.len());
                    let end = ((i + 1) * size).min(sealed.len());
                    let mut shard = Vec::with_capacity(size);
                    shard.extend_from_slice(&sealed[start..end]);
                    shard.resize(size, 0);
                    shard
                })
                .collect();
            let recovery = parity_shards(usize::from(data), usize::from(parity), &shards)?;
            shards.extend(recovery);
            Ok(shards)
        }
    }
}

/// [`encode_stripe`] without copying the data: the data shards are slices of `sealed`
/// (padded in place; reserve [`stripe_capacity`] to avoid a reallocation) and replicas share
/// one buffer. Only the parity shards are new memory.
pub fn encode_stripe_owned(scheme: Scheme, mut sealed: Vec<u8>) -> Result<Vec<Bytes>, CodecError> {
    match scheme {
        Scheme::Replicas { copies } => {
            let whole = Bytes::from(sealed);
            Ok(vec![whole; usize::from(copies)])
        }
        Scheme::Erasure { data, parity } => {
            let (data, parity) = (usize::from(data), usize::from(parity));
            let size = shard_size(scheme, sealed.len());
            sealed.resize(data * size, 0);
            let whole = Bytes::from(sealed);
            let mut shards: Vec<Bytes> = (0..data)
                .map(|i| whole.slice(i * size..(i + 1) * size))
                .collect();
            let recovery = parity_shards(data, parity, &shards)?;
            shards.extend(recovery.into_iter().map(Bytes::from));
            Ok(shards)
        }
    }
}

/// Bytes of each shard one Reed–Solomon pass encodes: the encoder's work buffer holds
/// `data` (rounded up to a multiple of the parity count's power of two) columns this wide,
/// so it stays small and in cache instead of a copy of the whole segment.
const PARITY_COLUMN: usize = 64 << 10;

/// The parity shards of equal-sized data shards, computed [`PARITY_COLUMN`] bytes of every
/// shard at a time. Reed–Solomon is column-wise (byte `j` of each parity shard depends only
/// on byte `j` of the data shards, in 64-byte blocks), so this gives the same shards as
/// encoding whole shards at once, while the encoder's work buffer stays at a few hundred
/// KiB per encode rather than the size of the data (16 MiB for a 16 MiB segment in 4+2),
/// and no memory beyond the parity shards themselves outlives the call.
fn parity_shards<S: AsRef<[u8]>>(
    data: usize,
    parity: usize,
    shards: &[S],
) -> Result<Vec<Vec<u8>>, CodecError> {
    let erasure = |e: reed_solomon_simd::Error| CodecError::Erasure(e.to_string());
    let size = shards.first().map_or(0, |s| s.as_ref().len());
    if shards.len() != data || shards.iter().any(|s| s.as_ref().len() != size) {
        return Err(CodecError::Erasure(format!(
            "{data} data shards of one size are needed to compute parity, got {} of sizes {:?}",
            shards.len(),
            shards.iter().map(|s| s.as_ref().len()).collect::<Vec<_>>()
        )));
    }
    let mut out: Vec<Vec<u8>> = (0..parity).map(|_| Vec::with_capacity(size)).collect();
    let mut encoder: Option<reed_solomon_simd::ReedSolomonEncoder> = None;
    let mut at = 0;
    while at < size {
        let width = PARITY_COLUMN.min(size - at);
        let encoder = match encoder.as_mut() {
            Some(e) => {
                e.reset(data, parity, width).map_err(erasure)?;
                e
            }
            None => encoder.insert(
                reed_solomon_simd::ReedSolomonEncoder::new(data, parity, width).map_err(erasure)?,
            ),
        };
        for shard in shards {
            encoder
                .add_original_shard(&shard.as_ref()[at..at + width])
                .map_err(erasure)?;
        }
        let result = encoder.encode().map_err(erasure)?;
        for (column, shard) in result.recovery_iter().zip(out.iter_mut()) {
            shard.extend_from_slice(column);
        }
        at += width;
    }
    Ok(out)
}

/// The missing data shards of a stripe (`None` = lost), rebuilt [`PARITY_COLUMN`] bytes of
/// every shard at a time as [`parity_shards`] computes parity: the decoder's work buffer
/// (twice the data shards' width, rounded to a power of two: 32 MiB for a 16 MiB segment in
/// 4+2 at once) stays a few hundred KiB.
fn restore_originals<S: AsRef<[u8]>>(
    data: usize,
    parity: usize,
    shards: &[Option<S>],
) -> Result<std::collections::HashMap<usize, Vec<u8>>, CodecError> {
    let erasure = |e: reed_solomon_simd::Error| CodecError::Erasure(e.to_string());
    let present: Vec<(usize, &[u8])> = shards
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.as_ref())))
        .collect();
    let size = present.first().map_or(0, |(_, s)| s.len());
    if present.iter().any(|(_, s)| s.len() != size) {
        return Err(CodecError::Erasure(format!(
            "the shards of one stripe differ in size: {:?}",
            present
                .iter()
                .map(|(i, s)| (*i, s.len()))
                .collect::<Vec<_>>()
        )));
    }
    let missing: Vec<usize> = (0..data)
        .filter(|&i| shards.get(i).is_none_or(Option::is_none))
        .collect();
    let mut restored: Vec<Vec<u8>> = missing.iter().map(|_| Vec::with_capacity(size)).collect();
    let mut decoder: Option<reed_solomon_simd::ReedSolomonDecoder> = None;
    let mut at = 0;
    while at < size {
        let width = PARITY_COLUMN.min(size - at);
        let decoder = match decoder.as_mut() {
            Some(d) => {
                d.reset(data, parity, width).map_err(erasure)?;
                d
            }
            None => decoder.insert(
                reed_solomon_simd::ReedSolomonDecoder::new(data, parity, width).map_err(erasure)?,
            ),
        };
        for &(i, shard) in &present {
            let column = &shard[at..at + width];
            if i < data {
                decoder.add_original_shard(i, column).map_err(erasure)?;
            } else {
                decoder
                    .add_recovery_shard(i - data, column)
                    .map_err(erasure)?;
            }
        }
        let result = decoder.decode().map_err(erasure)?;
        for (&i, out) in missing.iter().zip(restored.iter_mut()) {
            let column = result.restored_original(i).ok_or_else(|| {
                CodecError::Erasure(format!("data shard {i} could not be restored"))
            })?;
            out.extend_from_slice(column);
        }
        at += width;
    }
    Ok(missing.into_iter().zip(restored).collect())
}

/// Bytes a buffer holding `plain_len` bytes of plaintext needs so that sealing it and
/// [`encode_stripe_owned`] never reallocate: the tag, then the padding of the last shard.
pub fn stripe_capacity(scheme: Scheme, plain_len: usize) -> usize {
    let sealed = plain_len + TAG_LEN;
    match scheme {
        Scheme::Replicas { .. } => sealed,
        Scheme::Erasure { data, .. } => sealed.max(usize::from(data) * shard_size(scheme, sealed)),
    }
}

/// Bytes a segment of `plain_len` bytes holds in memory from being sealed until its
/// shards are stored: every shard of the stripe, parity included (the data shards are the
/// sealed buffer itself, padded; replicas share one buffer). [`parity_shards`] adds only
/// a bounded work buffer to this.
pub fn stripe_bytes(scheme: Scheme, plain_len: usize) -> usize {
    let sealed = plain_len + TAG_LEN;
    match scheme {
        Scheme::Replicas { .. } => sealed,
        Scheme::Erasure { .. } => scheme.width() * shard_size(scheme, sealed),
    }
}

/// Rebuilds the sealed segment (`sealed_len` bytes) from whichever shards are
/// present (`None` = lost or corrupt). Needs `scheme.needed()` of them.
pub fn decode_stripe<S: AsRef<[u8]>>(
    scheme: Scheme,
    shards: &[Option<S>],
    sealed_len: usize,
) -> Result<Vec<u8>, CodecError> {
    let available = shards.iter().filter(|s| s.is_some()).count();
    let not_enough = || CodecError::NotEnoughShards {
        needed: scheme.needed(),
        available,
    };
    match scheme {
        Scheme::Replicas { .. } => {
            let copy = shards.iter().flatten().next().ok_or_else(not_enough)?;
            Ok(copy.as_ref().to_vec())
        }
        Scheme::Erasure { data, parity } => {
            let (data, parity) = (usize::from(data), usize::from(parity));
            if available < data {
                return Err(not_enough());
            }
            let mut out = Vec::with_capacity(sealed_len + shard_size(scheme, sealed_len));
            let originals = shards.iter().take(data);
            if originals.clone().all(Option::is_some) {
                for shard in originals.flatten() {
                    out.extend_from_slice(shard.as_ref());
                }
            } else {
                let mut restored = restore_originals(data, parity, shards)?;
                for (i, shard) in shards.iter().take(data).enumerate() {
                    match shard {
                        Some(s) => out.extend_from_slice(s.as_ref()),
                        None => out.extend_from_slice(&restored.remove(&i).ok_or_else(not_enough)?),
                    }
                }
            }
            if out.len() < sealed_len {
                return Err(CodecError::Erasure(format!(
                    "shards hold {} bytes, segment needs {sealed_len}",
                    out.len()
                )));
            }
            out.truncate(sealed_len);
            Ok(out)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EC42: Scheme = Scheme::Erasure { data: 4, parity: 2 };

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let master = MasterKey::from_bytes(&[7; 32]);
        let (key, wrapped) = master.new_data_key().unwrap();
        let prefix = DataKey::new_nonce_prefix().unwrap();
        let plain = sample(10_000);
        let mut buf = plain.clone();
        key.seal(&prefix, 3, &mut buf).unwrap();
        assert_eq!(buf.len(), plain.len() + TAG_LEN);
        assert_ne!(&buf[..100], &plain[..100]);

        let again = master.unwrap_data_key(&wrapped).unwrap();
        let mut opened = buf.clone();
        again.open(&prefix, 3, &mut opened).unwrap();
        assert_eq!(opened, plain);

        // Same bytes presented as another segment: rejected.
        let mut swapped = buf.clone();
        assert!(matches!(
            again.open(&prefix, 4, &mut swapped),
            Err(CodecError::Authentication { segment: 4 })
        ));
        // One flipped bit: rejected.
        let mut flipped = buf.clone();
        flipped[17] ^= 1;
        assert!(again.open(&prefix, 3, &mut flipped).is_err());
    }

    #[test]
    fn wrong_master_key_cannot_unwrap() {
        let (_, wrapped) = MasterKey::from_bytes(&[1; 32]).new_data_key().unwrap();
        let other = MasterKey::from_bytes(&[2; 32]);
        assert!(matches!(
            other.unwrap_data_key(&wrapped),
            Err(CodecError::Unwrap)
        ));
        assert!(matches!(
            other.unwrap_data_key(&wrapped[1..]),
            Err(CodecError::Unwrap)
        ));
    }

    fn customer_key(byte: u8) -> CustomerKey {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        use md5::Digest;
        let raw = [byte; 32];
        let md5 = STANDARD.encode(md5::Md5::digest(raw));
        CustomerKey::parse("AES256", &STANDARD.encode(raw), &md5).unwrap()
    }

    #[test]
    fn a_customer_wrapped_data_key_opens_only_with_that_key_and_that_master_key() {
        let master = MasterKey::from_bytes(&[7; 32]);
        let (key, wrapped) = master.new_customer_data_key(&customer_key(1)).unwrap();
        let prefix = DataKey::new_nonce_prefix().unwrap();
        let mut buf = sample(1000);
        key.seal(&prefix, 0, &mut buf).unwrap();

        let again = master
            .unwrap_customer_data_key(&wrapped, &customer_key(1))
            .unwrap();
        again.open(&prefix, 0, &mut buf).unwrap();
        assert_eq!(buf, sample(1000));
        // Another customer key, the master key alone, another installation with the
        // right customer key: none of them unwraps it.
        assert!(matches!(
            master.unwrap_customer_data_key(&wrapped, &customer_key(2)),
            Err(CodecError::WrongCustomerKey)
        ));
        assert!(matches!(
            master.unwrap_data_key(&wrapped),
            Err(CodecError::Unwrap)
        ));
        assert!(
            MasterKey::from_bytes(&[8; 32])
                .unwrap_customer_data_key(&wrapped, &customer_key(1))
                .is_err()
        );
    }

    #[test]
    fn a_customer_key_seal_recognises_its_key_only_and_differs_per_salt() {
        let seal = customer_key(1).new_seal().unwrap();
        assert!(customer_key(1).matches(&seal));
        assert!(!customer_key(2).matches(&seal));
        let other = customer_key(1).new_seal().unwrap();
        assert_ne!(seal.salt, other.salt);
        assert_ne!(
            seal.key_hmac, other.key_hmac,
            "salted: equal keys do not show"
        );
        // The seal holds nothing of the key itself.
        assert!(!seal.key_hmac.windows(32).any(|w| w == [1; 32]));
    }

    #[test]
    fn customer_key_headers_are_checked() {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        use md5::Digest;
        let key = STANDARD.encode([1u8; 32]);
        let md5 = STANDARD.encode(md5::Md5::digest([1u8; 32]));
        let wrong_md5 = STANDARD.encode([0u8; 16]);
        assert_eq!(
            CustomerKey::parse("AES256", &key, &wrong_md5).unwrap_err(),
            CustomerKeyError::KeyMd5
        );
        assert_eq!(
            CustomerKey::parse("aws:kms", &key, &md5).unwrap_err(),
            CustomerKeyError::Algorithm("aws:kms".into())
        );
        assert_eq!(
            CustomerKey::parse("AES256", &STANDARD.encode([1u8; 16]), &md5).unwrap_err(),
            CustomerKeyError::Key
        );
        assert_eq!(
            CustomerKey::parse("AES256", "not base64!", &md5).unwrap_err(),
            CustomerKeyError::Key
        );
        let parsed = CustomerKey::parse("AES256", &key, &md5).unwrap();
        assert_eq!(parsed.md5(), customer_key(1).md5());
        assert!(!format!("{parsed:?}").contains(&key), "Debug shows no key");
    }

    #[test]
    fn a_customer_keyed_etag_is_stable_per_key_and_tells_nothing_of_the_md5() {
        let md5 = "5d41402abc4b2a76b9719d911017c592";
        let etag = customer_key(1).keyed_etag(md5);
        assert_eq!(etag.len(), 32);
        assert!(etag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(etag, md5);
        assert_eq!(etag, customer_key(1).keyed_etag(md5), "stable");
        assert_ne!(etag, customer_key(2).keyed_etag(md5), "keyed");
        assert_ne!(
            etag,
            customer_key(1).keyed_etag("7d793037a0760186574b0282f2f435e7")
        );
    }

    #[test]
    fn master_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let first = MasterKey::load_or_create(&path).unwrap();
        let (_, wrapped) = first.new_data_key().unwrap();
        let second = MasterKey::load_or_create(&path).unwrap();
        assert!(second.unwrap_data_key(&wrapped).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex").unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("master.key") && err.contains("not hex"),
            "{err}"
        );
    }

    #[test]
    fn shard_sizes_are_even_and_cover_the_segment() {
        for len in [0, 1, 2, 3, 7, 8, 9, 1000, 16 * 1024 * 1024 + 16] {
            let size = shard_size(EC42, len);
            assert_eq!(size % 2, 0, "len {len}");
            assert!(size * 4 >= len, "len {len}");
            assert!(size >= 2);
        }
    }

    #[test]
    fn parity_by_columns_is_the_parity_of_whole_shards() {
        // Around the 64-byte blocks and the column width, where a column-wise pass could
        // disagree with one over whole shards.
        let sizes = [
            2usize,
            62,
            64,
            66,
            130,
            PARITY_COLUMN - 2,
            PARITY_COLUMN,
            PARITY_COLUMN + 2,
        ];
        let sizes = sizes.into_iter().chain([3 * PARITY_COLUMN + 126, 1 << 20]);
        for (data, parity) in [(4usize, 2usize), (10, 4), (3, 1), (2, 3)] {
            for size in sizes.clone() {
                let shards: Vec<Vec<u8>> = (0..data)
                    .map(|i| sample(size * (i + 1))[size * i..].to_vec())
                    .collect();
                let whole = reed_solomon_simd::encode(data, parity, &shards).unwrap();
                let by_columns = parity_shards(data, parity, &shards).unwrap();
                assert_eq!(by_columns, whole, "{data}+{parity}, shards of {size} bytes");
            }
        }
        let uneven = [vec![0u8; 64], vec![0u8; 66]];
        assert!(parity_shards(2, 1, &uneven).is_err());
    }

    #[test]
    fn restoring_by_columns_rebuilds_every_lost_data_shard() {
        for size in [2usize, 66, PARITY_COLUMN + 2, 3 * PARITY_COLUMN + 126] {
            let originals: Vec<Vec<u8>> = (0..4)
                .map(|i| sample(size * (i + 1))[size * i..].to_vec())
                .collect();
            let parity = parity_shards(4, 2, &originals).unwrap();
            let all: Vec<Vec<u8>> = originals.iter().chain(&parity).cloned().collect();
            for lost in [[0usize, 1], [2, 5], [3, 4]] {
                let shards: Vec<Option<&Vec<u8>>> = all
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (!lost.contains(&i)).then_some(s))
                    .collect();
                let restored = restore_originals(4, 2, &shards).unwrap();
                for i in lost.into_iter().filter(|&i| i < 4) {
                    assert_eq!(restored[&i], originals[i], "size {size}, lost {lost:?}");
                }
            }
        }
        let uneven = [Some(vec![0u8; 64]), None, Some(vec![0u8; 66])];
        assert!(restore_originals(2, 1, &uneven).is_err());
    }

    #[test]
    fn owned_striping_matches_and_needs_no_reallocation() {
        for scheme in [
            EC42,
            Scheme::Erasure {
                data: 10,
                parity: 4,
            },
            Scheme::Replicas { copies: 3 },
        ] {
            for len in [0usize, 1, 5, 17, 4096, 100_003] {
                let plain = sample(len);
                let mut buf = Vec::with_capacity(stripe_capacity(scheme, len));
                buf.extend_from_slice(&plain);
                let at = buf.as_ptr();
                buf.extend_from_slice(&[7; TAG_LEN]); // as sealing appends its tag
                let copied = encode_stripe(scheme, &buf).unwrap();
                let owned = encode_stripe_owned(scheme, buf).unwrap();
                assert_eq!(owned.len(), copied.len());
                let held = match scheme {
                    Scheme::Replicas { .. } => owned[0].len(),
                    Scheme::Erasure { .. } => owned.iter().map(Bytes::len).sum(),
                };
                assert_eq!(held, stripe_bytes(scheme, len), "{scheme:?} {len}");
                for (o, c) in owned.iter().zip(&copied) {
                    assert_eq!(&o[..], &c[..], "{scheme:?} {len}");
                }
                assert_eq!(
                    owned[0].as_ptr(),
                    at,
                    "{scheme:?} {len}: the buffer was copied"
                );
            }
        }
    }

    #[test]
    fn any_four_of_six_shards_rebuild_the_segment() {
        let sealed = sample(100_003);
        let shards = encode_stripe(EC42, &sealed).unwrap();
        assert_eq!(shards.len(), 6);
        for lost_a in 0..6 {
            for lost_b in lost_a..6 {
                let partial: Vec<Option<Vec<u8>>> = shards
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i != lost_a && i != lost_b).then(|| s.clone()))
                    .collect();
                let back = decode_stripe(EC42, &partial, sealed.len()).unwrap();
                assert_eq!(back, sealed, "lost {lost_a} and {lost_b}");
            }
        }
    }

    #[test]
    fn three_lost_shards_name_the_shortfall() {
        let sealed = sample(4096);
        let shards = encode_stripe(EC42, &sealed).unwrap();
        let partial: Vec<Option<Vec<u8>>> = shards
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i >= 3).then_some(s))
            .collect();
        let err = decode_stripe(EC42, &partial, sealed.len()).unwrap_err();
        assert!(matches!(
            err,
            CodecError::NotEnoughShards {
                needed: 4,
                available: 3
            }
        ));
    }

    #[test]
    fn replicas_need_one_copy() {
        let scheme = Scheme::Replicas { copies: 3 };
        let sealed = sample(999);
        let shards = encode_stripe(scheme, &sealed).unwrap();
        assert_eq!(shards.len(), 3);
        let partial = vec![None, None, Some(shards[2].clone())];
        assert_eq!(decode_stripe(scheme, &partial, 999).unwrap(), sealed);
        assert!(decode_stripe::<Vec<u8>>(scheme, &[None, None, None], 999).is_err());
    }

    #[test]
    fn tiny_segments_survive_striping() {
        for len in [0usize, 1, 5, 17] {
            let sealed = sample(len);
            let shards = encode_stripe(
                Scheme::Erasure {
                    data: 10,
                    parity: 4,
                },
                &sealed,
            )
            .unwrap();
            let mut partial: Vec<Option<Vec<u8>>> = shards.into_iter().map(Some).collect();
            for lost in partial.iter_mut().take(4) {
                *lost = None;
            }
            let back = decode_stripe(
                Scheme::Erasure {
                    data: 10,
                    parity: 4,
                },
                &partial,
                len,
            )
            .unwrap();
            assert_eq!(back, sealed);
        }
    }
}
