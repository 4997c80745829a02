//! The platform layer's error type: which privileged call failed, on what.
//! It is not the task engine's error, which wraps this one whole.

use std::io;
use std::path::PathBuf;

/// Why a privileged operation of this layer failed. None is retryable
/// without a change on the host (a capability, a sysctl, a kernel table).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Setting up a socket failed; `op` names the call, e.g.
    /// "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) (requires CAP_NET_RAW)".
    #[error("{op}: {source}")]
    Socket {
        /// The call that failed.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A kernel table under `/proc` could not be read.
    #[error("reading {}: {source}", path.display())]
    ReadProc {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Result alias of the platform layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
