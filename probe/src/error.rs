//! The probe crate's error type.

use std::path::PathBuf;

/// What can go wrong in the probe daemon (link and enrollment). Task
/// failures are not errors here: they travel to the coordinator as results.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificates or TLS set-up (local configuration: not retried).
    #[error(transparent)]
    Tls(#[from] probemesh_proto::tls::Error),
    /// Key or CSR generation.
    #[error(transparent)]
    Pki(#[from] probemesh_proto::pki::Error),
    /// The coordinator refused the stream (e.g. the name is held by another certificate).
    #[error("coordinator refused the probe link: {0}")]
    Refused(String),
    /// The stream broke.
    #[error("probe link: {0}")]
    Stream(String),
    /// The join token could not be read.
    #[error("{0}")]
    Token(#[from] probemesh_proto::token::TokenError),
    /// The coordinator refused the join.
    #[error("join refused by the coordinator: {0}")]
    JoinRefused(String),
    /// A file could not be written.
    #[error("{op} {}: {source}", path.display())]
    File {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// True when retrying cannot help (bad local configuration or input).
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Tls(e) => !e.is_retryable(),
            _ => matches!(
                self,
                Error::Pki(_) | Error::Token(_) | Error::JoinRefused(_) | Error::File { .. }
            ),
        }
    }
}

/// Result alias for the probe crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
