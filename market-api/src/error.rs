//! The market's one error type, shared by the service and its clients, and the one place
//! each kind becomes an HTTP status and a stable code (the `error.code` of an answer).

use http::StatusCode;

/// Everything that can go wrong in the market, phrased for the party who caused it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a field is out of range; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// The signature, key, timestamp or party of a request could not be verified.
    #[error("{0}")]
    Unauthorized(String),
    /// The nonce of a signed request was used before.
    #[error("replayed request: nonce {nonce} was already used by party {party}")]
    Replayed { party: String, nonce: String },
    /// The caller is authenticated but may not do this (acting for another party, wrong role).
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found")]
    NotFound { what: String },
    /// The request conflicts with the current state (contract not active, offer full, ...).
    #[error("{0}")]
    Conflict(String),
    #[error("operation id {op_id} was already used for a different operation; pick a fresh id")]
    OperationIdReused { op_id: String },
    #[error(
        "period starting at {period_start} of contract {contract} is already settled by operation {op_id}"
    )]
    AlreadySettled {
        contract: String,
        period_start: i64,
        op_id: String,
    },
    #[error(
        "insufficient funds in account {account}: it holds {balance} micro-credits, the operation needs {needed}"
    )]
    InsufficientFunds {
        account: String,
        balance: i64,
        needed: i64,
    },
    #[error(
        "no payment rail is configured on this market; start it with --treasurer-key (or --manual-deposits on loopback, for tests)"
    )]
    NoPaymentRail,
    /// The market holds as much of this unauthenticated state as it keeps; try later.
    #[error("{0}")]
    TooMany(String),
    /// The database is too busy to take the request in time (every pooled connection, or
    /// the market's lock, stayed taken as long as a request may wait); try again.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed (SQLite or PostgreSQL); the message is the database's.
    #[error("database: {0}")]
    Database(String),
    /// A bug: the market refused to write something that would break an invariant.
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// The one place an error becomes an HTTP status and a stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Replayed { .. } => (StatusCode::UNAUTHORIZED, "replayed_request"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::OperationIdReused { .. } => (StatusCode::CONFLICT, "operation_id_reused"),
            Error::AlreadySettled { .. } => (StatusCode::CONFLICT, "already_settled"),
            Error::InsufficientFunds { .. } => (StatusCode::CONFLICT, "insufficient_funds"),
            Error::NoPaymentRail => (StatusCode::NOT_IMPLEMENTED, "no_payment_rail"),
            Error::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Database(_) | Error::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}
