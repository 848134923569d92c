//! HTTPS for the market's API: rustls with ring, the certificate and key read from PEM files
//! and read again when either file changes, so a renewed certificate is served without a
//! restart. A renewal that does not load (half written, key and certificate apart) keeps
//! the one being served and is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate files are looked at for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The certificate being served, swapped when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' modification times when they were read.
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("--tls-cert: reading {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "--tls-cert: {} holds no PEM certificate",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("--tls-key: reading {}", key_path.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!(
            "--tls-cert {} and --tls-key {} do not fit together",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(Arc::new(certified))
}

impl ReloadingCert {
    /// Reads the certificate chain and key; fails when either is missing or they differ.
    pub fn open(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<Self>> {
        let stamp = (modified(cert_path), modified(key_path));
        let key = load(cert_path, key_path)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Loaded { key, stamp }),
        }))
    }

    /// Reads the files again if either changed since they were last read. Answers whether
    /// a new certificate is now served; an error leaves the old one in place.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let stamp = (modified(&self.cert_path), modified(&self.key_path));
        let unchanged = self
            .current
            .read()
            .map(|c| c.stamp == stamp)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        let key = load(&self.cert_path, &self.key_path);
        let mut current = self
            .current
            .write()
            .map_err(|_| anyhow::anyhow!("the certificate lock is poisoned"))?;
        // Not read again until the files change again, whether this load worked or not.
        current.stamp = stamp;
        current.key = key?;
        Ok(true)
    }

    /// Reloads every `interval` until the process ends.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let me = Arc::clone(&me);
                match tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                    Ok(Ok(true)) => tracing::info!("tls certificate reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(
                        error = %format!("{e:#}"),
                        "the changed tls certificate does not load; still serving the previous one"
                    ),
                    Err(e) => tracing::warn!(error = %e, "tls certificate reload failed"),
                }
            }
        })
    }

    /// A TLS acceptor serving whatever certificate is current.
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c.key))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn served(cert: &ReloadingCert) -> Vec<u8> {
        cert.current.read().unwrap().key.cert[0].to_vec()
    }

    #[test]
    fn a_changed_certificate_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_cert(dir.path(), "one.example");
        let cert = ReloadingCert::open(&c, &k).unwrap();
        let first = served(&cert);
        assert!(!cert.reload_if_changed().unwrap(), "nothing changed yet");

        // Renewed: the new certificate is served.
        std::thread::sleep(Duration::from_millis(20));
        write_cert(dir.path(), "two.example");
        let stamp = (modified(&c), modified(&k));
        // Filesystems with coarse timestamps: make sure the change is seen.
        cert.current.write().unwrap().stamp = (None, None);
        assert!(cert.reload_if_changed().unwrap());
        let second = served(&cert);
        assert_ne!(first, second);
        assert_eq!(cert.current.read().unwrap().stamp, stamp);

        // A certificate whose key is another's is refused; the renewed one stays.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&k, other.serialize_pem()).unwrap();
        cert.current.write().unwrap().stamp = (None, None);
        let err = cert.reload_if_changed().unwrap_err();
        assert!(
            format!("{err:#}").contains("do not fit together"),
            "{err:#}"
        );
        assert_eq!(served(&cert), second);
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReloadingCert::open(&dir.path().join("nope.pem"), &dir.path().join("k.pem"))
            .unwrap_err();
        assert!(format!("{err:#}").contains("--tls-cert"), "{err:#}");
    }
}
