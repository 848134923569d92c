//! TLS between gateways and providers: no CA, peers are pinned by node id.
//!
//! Servers accept any well-formed self-signed ed25519 client certificate (and
//! authorise its node id later); clients accept only the server whose key
//! derives the node id they expect.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use crate::identity::{NodeId, NodeIdentity, ed25519_key_of_certificate};

/// The only crypto provider sublet uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad_certificate(reason: &str) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        std::io::Error::other(reason.to_string()),
    ))))
}

/// Client side: accepts only a certificate whose ed25519 key derives `expected`.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    expected: NodeId,
    provider: Arc<CryptoProvider>,
}

impl PinnedServerVerifier {
    pub fn new(expected: NodeId) -> Self {
        PinnedServerVerifier {
            expected,
            provider: crypto_provider(),
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let key =
            ed25519_key_of_certificate(end_entity).map_err(|e| bad_certificate(&e.to_string()))?;
        let presented = NodeId::from_public_key(&key);
        if presented != self.expected {
            return Err(bad_certificate(&format!(
                "provider presented node id {presented}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server side: accepts any well-formed ed25519 client certificate; which node
/// ids may call is decided per request from the certificate's node id.
#[derive(Debug)]
pub struct SelfSignedClientVerifier {
    provider: Arc<CryptoProvider>,
}

impl Default for SelfSignedClientVerifier {
    fn default() -> Self {
        SelfSignedClientVerifier {
            provider: crypto_provider(),
        }
    }
}

impl ClientCertVerifier for SelfSignedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        ed25519_key_of_certificate(end_entity).map_err(|e| bad_certificate(&e.to_string()))?;
        Ok(ClientCertVerified::assertion())
    }

    // Token holders may connect without a certificate.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The provider's TLS configuration: its own certificate, optional client certificates, h2.
pub fn server_config(identity: &NodeIdentity) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(SelfSignedClientVerifier::default()))
        .with_single_cert(vec![identity.certificate()], identity.private_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client TLS configuration that pins `expected` and presents `identity`.
pub fn client_config(
    identity: &NodeIdentity,
    expected: NodeId,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(expected)))
        .with_client_auth_cert(vec![identity.certificate()], identity.private_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
