//! The task engine's error type. These errors end a task; they reach the
//! coordinator as a `TaskError` (converted once, by the `convert` module).
//! Per-probe trouble (a timeout, an ICMP error, a send refused with
//! `EMSGSIZE`) is not an error: it is a result, reported in the progress
//! events and counted in the summary.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// Why a task could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name does not resolve (NXDOMAIN, bad syntax). Not retryable.
    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        /// The name as given.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The name resolves, but to no address this task can use. Not retryable.
    #[error("cannot resolve {host:?}: no {family} address")]
    NoAddress {
        /// The name as given.
        host: String,
        /// "IPv4", or "IP" when any family would do.
        family: &'static str,
    },
    /// The resolver did not answer in time. Retryable.
    #[error("cannot resolve {host:?}: no answer within {timeout:?}")]
    ResolveTimeout {
        /// The name as given.
        host: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Setting up the raw socket failed; `op` names the call. Opening one
    /// requires `CAP_NET_RAW`. Not retryable without a configuration change.
    #[error("{op}: {source}")]
    Socket {
        /// The call that failed, e.g. "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)".
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A send failed for a reason other than the ones reported per probe.
    /// Used as the detail of a send-error reply.
    #[error("sending to {addr}: {source}")]
    Send {
        /// Destination.
        addr: IpAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Receiving kept failing (more than a few times in a row). Retryable.
    #[error("receiving ICMP for {addr}: {source}")]
    Recv {
        /// The target we were waiting on.
        addr: IpAddr,
        /// The last OS error.
        source: io::Error,
    },
    /// A kernel table under `/proc` (or `/sys`) could not be read. Not
    /// retryable.
    #[error("reading {}: {source}", path.display())]
    ReadProc {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A privileged call of the platform layer failed (a raw socket needs
    /// `CAP_NET_RAW`, a kernel table could not be read). Not retryable.
    #[error(transparent)]
    Platform(#[from] crate::platform::Error),
    /// A capture failed; see [`crate::capture::CaptureError`] for which
    /// causes are the request's fault.
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    /// A capture's directory or finished file could not be used. Not
    /// retryable without a configuration change.
    #[error("{op} {}: {source}", path.display())]
    Artifact {
        /// What failed, e.g. "creating the capture directory".
        op: &'static str,
        /// The directory or file.
        path: std::path::PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The task was cancelled; `done` of `total` probes had been sent.
    #[error("cancelled after {done} of {total} probes")]
    Cancelled {
        /// Probes sent (echoes) or attempted (connects) before cancellation.
        done: u32,
        /// Probes asked for.
        total: u32,
    },
}

impl Error {
    /// True when the same task may succeed if simply run again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::ResolveTimeout { .. } | Error::Recv { .. } | Error::Send { .. }
        )
    }
}

/// Receive errors in a row on one probe socket. A socket reports a pending
/// ICMP error once on a receive (`sk_err`), which is the network's answer,
/// not a broken socket; more than [`RecvErrors::MAX`] in a row with nothing
/// received (or sent) in between is, and ends the task.
#[derive(Debug, Default)]
pub struct RecvErrors(u32);

impl RecvErrors {
    /// Failed receives in a row a task tolerates.
    pub const MAX: u32 = 16;

    /// Something was received (or sent): the run of errors is over.
    pub fn reset(&mut self) {
        self.0 = 0;
    }

    /// Notes a failed receive while waiting on `addr`: `source` back while
    /// it is tolerated, the task's error once too many came in a row.
    pub fn note(&mut self, addr: IpAddr, source: io::Error) -> Result<io::Error> {
        self.0 += 1;
        if self.0 > Self::MAX {
            return Err(Error::Recv { addr, source });
        }
        Ok(source)
    }
}

/// Result alias of the task engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_receive_errors_ends_the_task_only_past_the_bound_and_a_receive_resets_it() {
        let addr = IpAddr::from([198, 18, 0, 12]);
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let mut errors = RecvErrors::default();
        for _ in 0..RecvErrors::MAX {
            assert!(errors.note(addr, refused()).is_ok());
        }
        errors.reset();
        for _ in 0..RecvErrors::MAX {
            assert!(errors.note(addr, refused()).is_ok());
        }
        assert!(matches!(
            errors.note(addr, refused()),
            Err(Error::Recv { addr: a, .. }) if a == addr
        ));
    }
}
