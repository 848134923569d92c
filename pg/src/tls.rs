//! TLS to PostgreSQL over rustls with the ring provider the rest of sublet uses. The
//! connection URL asks for it the libpq way: `sslmode=require` (or `verify-ca`,
//! `verify-full`) and, for a private CA, `sslrootcert=/path/ca.pem`. Whatever the mode, a
//! TLS connection is only made to a server whose certificate chains to `sslrootcert` (or to
//! the system's roots without it) and names the host connected to: libpq's `verify-full`.
//! Without `sslmode`, or with `disable` or `prefer`, the connection is plain, as before.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::Socket;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a URL asks to protect the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`, `prefer` or nothing: plain TCP.
    Plain,
    /// `require`, `verify-ca` or `verify-full`: TLS to a verified server, or no connection.
    Verified { root_cert: Option<PathBuf> },
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or `key=value` form),
/// which the `postgres` crate reads only in part; the rest is handed to it unchanged.
pub fn split_tls(url: &str) -> Result<(String, SslMode), String> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => {
                mode = Some(value);
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, percent_decode(v)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if take(k.trim(), v.trim_matches('\'').to_owned())? => {}
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    let mode = match mode.as_deref() {
        None | Some("disable" | "prefer" | "allow") => SslMode::Plain,
        Some("require" | "verify-ca" | "verify-full") => SslMode::Verified { root_cert },
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not known; use disable, require, verify-ca or verify-full"
            ));
        }
    };
    Ok((rest, mode))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// Makes verified TLS connections for the `postgres` crate.
#[derive(Clone)]
pub struct RustlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl RustlsConnector {
    /// Trusts the CA certificates in `root_cert` (PEM), or the system's roots without it.
    pub fn new(root_cert: Option<&std::path::Path>) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match root_cert {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect())
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!(
                        "sslrootcert {}: no PEM certificate in it",
                        path.display()
                    ));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // One unusable system certificate must not cost the others.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(
                        "sslmode asks for TLS but the system has no CA certificates; name the \
                         server's CA with sslrootcert=/path/ca.pem in the URL"
                            .into(),
                    );
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(RustlsConnector {
            config: Arc::new(config),
        })
    }
}

impl std::fmt::Debug for RustlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RustlsConnector")
    }
}

impl MakeTlsConnect<Socket> for RustlsConnector {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(Arc::clone(&self.config)),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// One TLS handshake to the server `name`.
pub struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            self.connector
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
        })
    }
}

/// A TLS connection to the server.
pub struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for RustlsStream {
    /// `tls-server-end-point` (RFC 5929) for SCRAM-SHA-256-PLUS: the server certificate's
    /// hash, by the hash of its signature algorithm (SHA-256 for MD5 and SHA-1).
    fn channel_binding(&self) -> ChannelBinding {
        use x509_parser::prelude::FromDer;
        let Some(cert) = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
        else {
            return ChannelBinding::none();
        };
        let Ok((_, parsed)) = x509_parser::certificate::X509Certificate::from_der(cert) else {
            return ChannelBinding::none();
        };
        let oid = parsed.signature_algorithm.algorithm.to_id_string();
        let algorithm = match oid.as_str() {
            // sha384WithRSAEncryption, ecdsa-with-SHA384
            "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &ring::digest::SHA384,
            // sha512WithRSAEncryption, ecdsa-with-SHA512
            "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &ring::digest::SHA512,
            _ => &ring::digest::SHA256,
        };
        ChannelBinding::tls_server_end_point(
            ring::digest::digest(algorithm, cert).as_ref().to_vec(),
        )
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_out_of_the_url_and_the_rest_stays() {
        assert_eq!(
            split_tls("postgres://u:p@db:5432/meta").unwrap(),
            ("postgres://u:p@db:5432/meta".into(), SslMode::Plain)
        );
        assert_eq!(
            split_tls("postgres://u@db/meta?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3")
                .unwrap(),
            (
                "postgres://u@db/meta?connect_timeout=3".into(),
                SslMode::Verified {
                    root_cert: Some("/etc/ca.pem".into())
                }
            )
        );
        assert_eq!(
            split_tls("host=db user=u sslmode=require").unwrap(),
            (
                "host=db user=u".into(),
                SslMode::Verified { root_cert: None }
            )
        );
        assert_eq!(
            split_tls("postgres://db/m?sslmode=prefer").unwrap(),
            ("postgres://db/m".into(), SslMode::Plain)
        );
        assert_eq!(
            split_tls("postgres://db/m?sslmode=sometimes").unwrap_err(),
            "sslmode=sometimes is not known; use disable, require, verify-ca or verify-full"
        );
    }
}
