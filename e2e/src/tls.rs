//! A private certificate authority for tests that serve HTTPS on 127.0.0.1.

use std::path::{Path, PathBuf};

/// PEM files in a directory: a CA certificate and a server certificate it signed for
/// `127.0.0.1` and `localhost`, with its key.
pub struct PrivateCa {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl PrivateCa {
    /// Writes `ca.pem`, `server.pem` and `server.key` into `dir`.
    pub fn create(dir: &Path) -> PrivateCa {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sublet test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("CA key"),
        )
        .expect("CA certificate");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params")
                .signed_by(&key, &ca)
                .expect("server certificate");
        std::fs::create_dir_all(dir).expect("CA dir");
        let out = PrivateCa {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
        };
        std::fs::write(&out.ca_file, ca.pem()).expect("write CA");
        std::fs::write(&out.cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&out.key_file, key.serialize_pem()).expect("write key");
        out
    }
}
