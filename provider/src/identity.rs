//! A node's ed25519 identity: the key kept in the data dir, the node id derived
//! from it and the self-signed TLS certificate made with it.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File name of the identity key (PKCS#8 DER) inside the data dir.
pub const KEY_FILE: &str = "identity.key";

/// A node id: the first 16 bytes of BLAKE3 of the raw ed25519 public key,
/// written as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 16]);

impl NodeId {
    /// The node id of an ed25519 public key.
    pub fn from_public_key(raw: &[u8; 32]) -> Self {
        let hash = blake3::hash(raw);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.as_bytes()[..16]);
        NodeId(id)
    }

    /// The node id of a DER certificate whose key is ed25519.
    pub fn from_certificate(der: &[u8]) -> anyhow::Result<Self> {
        Ok(Self::from_public_key(&ed25519_key_of_certificate(der)?))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        if s.len() != 32 {
            bail!("invalid node id {s:?}: expected 32 hex characters");
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id)
            .map_err(|e| anyhow!("invalid node id {s:?}: {e}; expected 32 hex characters"))?;
        Ok(NodeId(id))
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The raw 32-byte ed25519 public key of a DER certificate, or an error when
/// the certificate does not parse or its key is not ed25519.
pub fn ed25519_key_of_certificate(der: &[u8]) -> anyhow::Result<[u8; 32]> {
    const ED25519_OID: &str = "1.3.101.112";
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("certificate does not parse: {e}"))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        bail!("certificate key is not ed25519");
    }
    let key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| anyhow!("ed25519 public key is not 32 bytes"))?;
    Ok(key)
}

/// An ed25519 key pair with its node id and self-signed certificate.
pub struct NodeIdentity {
    pkcs8: Vec<u8>,
    public_key: [u8; 32],
    node_id: NodeId,
    certificate: CertificateDer<'static>,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Load the identity kept in `dir`, or make one and keep it there (mode 0600).
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        Self::load_or_derive(dir, None)
    }

    /// Load the identity kept in `dir`; when there is none, make it from `seed` (the same
    /// seed always gives the same node), or at random without one, and keep it there.
    pub fn load_or_derive(dir: &Path, seed: Option<[u8; 32]>) -> anyhow::Result<Self> {
        let path = dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(pkcs8) => Self::from_pkcs8(pkcs8)
                .with_context(|| format!("identity key {} is unusable", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)
                    .with_context(|| format!("creating data dir {}", dir.display()))?;
                let identity = match seed {
                    Some(seed) => Self::from_seed(seed)?,
                    None => Self::generate(),
                };
                let tmp = dir.join(format!(".tmp-{KEY_FILE}"));
                let mut options = fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options
                    .open(&tmp)
                    .with_context(|| format!("creating identity key {}", tmp.display()))?;
                file.write_all(&identity.pkcs8)?;
                file.sync_all()?;
                fs::rename(&tmp, &path)?;
                fs::File::open(dir)?.sync_all()?;
                Ok(identity)
            }
            Err(e) => Err(e).with_context(|| format!("reading identity key {}", path.display())),
        }
    }

    /// The identity whose ed25519 private key is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| anyhow!("not an ed25519 seed: {e}"))?;
        // PKCS#8 v2 (RFC 8410) with the public key, as ring generates it.
        let mut pkcs8 = vec![
            0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        pkcs8.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
        pkcs8.extend_from_slice(pair.public_key().as_ref());
        Self::from_pkcs8(pkcs8)
    }

    /// A fresh identity kept only in memory.
    pub fn generate() -> Self {
        let rng = ring::rand::SystemRandom::new();
        // Generating an ed25519 key only fails when the OS has no randomness.
        #[allow(clippy::expect_used)]
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("system randomness is available");
        #[allow(clippy::expect_used)]
        Self::from_pkcs8(pkcs8.as_ref().to_vec()).expect("a freshly generated key is valid")
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|e| anyhow!("not an ed25519 PKCS#8 key: {e}"))?;
        let public_key: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| anyhow!("ed25519 public key is not 32 bytes"))?;
        let node_id = NodeId::from_public_key(&public_key);
        let der = PrivatePkcs8KeyDer::from(pkcs8.clone());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
            .map_err(|e| anyhow!("rcgen rejects the key: {e}"))?;
        let name = format!("{node_id}.sublet");
        let mut params = rcgen::CertificateParams::new(vec![name.clone()])
            .map_err(|e| anyhow!("certificate parameters: {e}"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(4000, 1, 1);
        let cert = params
            .self_signed(&key)
            .map_err(|e| anyhow!("self-signing the certificate: {e}"))?;
        Ok(NodeIdentity {
            pkcs8,
            public_key,
            node_id,
            certificate: cert.der().clone(),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// The self-signed certificate presented in TLS handshakes.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.certificate.clone()
    }

    /// The private key as PKCS#8 DER, for signing as this node elsewhere (the market).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The private key for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_seed_makes_the_same_node_every_time_and_a_kept_key_wins() {
        let seed = [7u8; 32];
        let a = NodeIdentity::from_seed(seed).unwrap();
        let b = NodeIdentity::from_seed(seed).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert_ne!(
            a.node_id(),
            NodeIdentity::from_seed([8u8; 32]).unwrap().node_id()
        );
        // Its PKCS#8 form is what ring itself reads (and so the market signer).
        ring::signature::Ed25519KeyPair::from_pkcs8(a.pkcs8_der()).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let made = NodeIdentity::load_or_derive(dir.path(), Some(seed)).unwrap();
        assert_eq!(made.node_id(), a.node_id());
        // Once kept, the file wins over any seed.
        let kept = NodeIdentity::load_or_derive(dir.path(), Some([9u8; 32])).unwrap();
        assert_eq!(kept.node_id(), a.node_id());
    }

    #[test]
    fn node_id_is_derived_from_the_key_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeIdentity::load_or_create(dir.path()).unwrap();
        let b = NodeIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        let hash = blake3::hash(a.public_key());
        let expected = &hash.as_bytes()[..16];
        assert_eq!(a.node_id().to_string(), hex::encode(expected));
        assert_eq!(
            NodeId::from_certificate(&a.certificate()).unwrap(),
            a.node_id()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_ne!(NodeIdentity::generate().node_id(), a.node_id());
    }

    #[test]
    fn node_id_parses_and_rejects_garbage() {
        let id = NodeIdentity::generate().node_id();
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert!("abc".parse::<NodeId>().is_err());
        assert!("zz".repeat(16).parse::<NodeId>().is_err());
    }
}
