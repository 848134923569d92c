//! The crate's error type: values that do not parse.

/// Why a value from a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A size such as `16Mi` did not parse.
    #[error(
        "\"{input}\" is not a size; use a number with an optional unit Ki, Mi, Gi, Ti (e.g. 16Mi)"
    )]
    InvalidSize {
        /// The text as written.
        input: String,
    },
    /// A size parsed but does not fit in 64 bits.
    #[error("\"{input}\" is too large; a size must be below 16Ei (e.g. 500Gi)")]
    SizeTooLarge {
        /// The text as written.
        input: String,
    },
    /// A duration such as `15m` did not parse.
    #[error(
        "\"{input}\" is not a duration; use numbers with a unit s, m, h or d (e.g. 90s, 15m, 6h, 1h30m, 30d)"
    )]
    InvalidDuration {
        /// The text as written.
        input: String,
    },
    /// A duration parsed but is too long to represent.
    #[error("\"{input}\" is too long a duration; use at most a few thousand years (e.g. 3650d)")]
    DurationTooLong {
        /// The text as written.
        input: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
