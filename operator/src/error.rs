//! The operator's error type: every failure names the resource it concerns.

/// Why a reconcile or a render failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{action} {kind}/{name}: {source}")]
    Kube {
        /// What was attempted, e.g. `apply`.
        action: &'static str,
        /// The kind of the object, e.g. `DaemonSet`.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// What the API server or the client said.
        #[source]
        source: kube::Error,
    },
    /// An object came without a field the operator needs (e.g. a uid or a namespace).
    #[error("{kind}/{name} has no {field}; it was not read from the API server")]
    MissingField {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The missing field, e.g. `metadata.uid`.
        field: &'static str,
    },
    /// A rendered object could not be serialized.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// What was being serialized, e.g. `config of StorageGateway/s3`.
        what: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The gateway config could not be rendered.
    #[error("cannot render the config of StorageGateway/{gateway}: {message}")]
    Config {
        /// The gateway's name.
        gateway: String,
        /// What is wrong, from the standalone loader.
        message: String,
    },
    /// The gateway admin API failed.
    #[error("gateway admin API {url}: {message}")]
    Admin {
        /// The URL called.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Wraps a kube error with what was being done to which object.
    pub fn kube(
        action: &'static str,
        kind: &'static str,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.into();
        move |source| Error::Kube {
            action,
            kind,
            name,
            source,
        }
    }

    /// A short label for metrics: `kube`, `missing_field`, `serialize`, `config`, `admin`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::MissingField { .. } => "missing_field",
            Error::Serialize { .. } => "serialize",
            Error::Config { .. } => "config",
            Error::Admin { .. } => "admin",
        }
    }
}

/// `Result` with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
