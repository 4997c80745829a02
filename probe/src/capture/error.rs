//! Why a capture fails ([`CaptureError`]).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::spec::SpecError;

/// Why a capture failed. No file is left behind for any of them.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The spec breaks a hard limit or carries a bad program.
    #[error("invalid capture: {0}")]
    Spec(#[from] SpecError),
    /// No such interface in the namespace.
    #[error("no interface '{interface}' in this network namespace (it has: {})", available.join(", "))]
    UnknownInterface {
        /// The name asked for.
        interface: String,
        /// The namespace's interfaces.
        available: Vec<String>,
    },
    /// An interface whose link layer the capture does not handle.
    #[error(
        "cannot capture on {interface}: link type ARPHRD {arphrd} is neither Ethernet nor raw IP"
    )]
    UnsupportedLink {
        /// The interface.
        interface: String,
        /// Its `ARPHRD_*` type.
        arphrd: u16,
    },
    /// A raw-IP interface, and the spec carries no raw-IP program.
    #[error(
        "cannot capture on {interface}: it carries raw IP and the request has no raw-IP filter program"
    )]
    MissingProgram {
        /// The interface.
        interface: String,
    },
    /// A capture socket could not be set up (no `CAP_NET_RAW`, no memory
    /// for the ring, a program the kernel refuses).
    #[error("capturing on {interface}: {op}: {source}{}", permission_hint(source))]
    Open {
        /// The interface.
        interface: String,
        /// What failed ("opening the ring", "binding").
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// An interface went down or was deleted during the capture (a pod
    /// going away); the partial capture is discarded.
    #[error(
        "interface {interface} {what} during the capture ({source}); capture discarded after {packets} packets"
    )]
    InterfaceGone {
        /// The interface.
        interface: String,
        /// "went down" or "was deleted".
        what: &'static str,
        /// The socket's error (usually `ENETDOWN`).
        source: io::Error,
        /// Packets written before it happened.
        packets: u64,
    },
    /// Writing the file failed (disk full, directory missing).
    #[error("writing {}: {source}", path.display())]
    Output {
        /// The final path asked for.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The capture loop's own syscalls failed (poll, clock, statistics).
    #[error("capture: {op}: {source}")]
    System {
        /// What failed.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The caller cancelled; the file was deleted.
    #[error("capture cancelled; {packets} packets discarded")]
    Cancelled {
        /// Packets written before the cancel.
        packets: u64,
    },
    /// Set up to be told its instant ([`super::Arming::WhenTold`]), and
    /// none came in time; the file was deleted.
    #[error(
        "capture set up but never told its arming instant within {0:?} (the coordinator gave up on it or lost the stream)"
    )]
    NeverArmed(Duration),
    /// The capture thread could not be started.
    #[error("starting the capture thread: {0}")]
    Thread(io::Error),
    /// The capture thread ended without a result (it panicked).
    #[error("the capture thread ended without a result")]
    Lost,
}

impl CaptureError {
    /// True when the request was wrong (bad spec, unknown interface), as
    /// opposed to this host failing; retrying the same request cannot help.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            CaptureError::Spec(_)
                | CaptureError::UnknownInterface { .. }
                | CaptureError::UnsupportedLink { .. }
                | CaptureError::MissingProgram { .. }
        )
    }
}

fn permission_hint(error: &io::Error) -> &'static str {
    if error.kind() == io::ErrorKind::PermissionDenied {
        " (capturing requires CAP_NET_RAW)"
    } else {
        ""
    }
}
