//! The tcping engine, as `paping`: `count` fresh TCP connects to one address,
//! started `interval` apart, each given up after `timeout`. An attempt is
//! connected (latency = handshake time), refused (RST), timed out,
//! unreachable (no route to host or network) or failed otherwise. The
//! connection is closed at once; no byte is sent.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::Progress;
use super::error::{Error, Result};
use super::stats::{RttAccumulator, RttStats};
use super::types::TcpingSpec;

/// How one connect attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// The handshake completed.
    Connected,
    /// The peer answered with RST (`ECONNREFUSED`): nothing listens, or a
    /// rule rejects.
    Refused,
    /// No answer within the timeout (or the kernel gave up, `ETIMEDOUT`).
    Timeout,
    /// No route (`EHOSTUNREACH`, `ENETUNREACH`), often an ICMP error.
    Unreachable(String),
    /// Anything else, with the OS error.
    Error(String),
}

/// One connect attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpingAttempt {
    /// 1 for the first attempt.
    pub seq: u32,
    /// How it ended.
    pub outcome: ConnectOutcome,
    /// From the connect call to its outcome (the handshake time when connected).
    pub latency: Duration,
    /// The address connected to.
    pub address: SocketAddr,
}

/// The end result of a tcping task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpingSummary {
    /// The address connected to.
    pub address: SocketAddr,
    /// Attempts made.
    pub attempted: u32,
    /// Attempts connected.
    pub connected: u32,
    /// Attempts refused.
    pub refused: u32,
    /// Attempts timed out.
    pub timed_out: u32,
    /// Attempts unreachable or failed otherwise.
    pub failed: u32,
    /// Handshake-time statistics over the connected attempts.
    pub latency: Option<RttStats>,
    /// From the first attempt to the end of the task (tokio clock).
    pub elapsed: Duration,
}

/// Sorts a connect error into an outcome.
pub fn classify_connect_error(error: &io::Error) -> ConnectOutcome {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => ConnectOutcome::Refused,
        io::ErrorKind::TimedOut => ConnectOutcome::Timeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            ConnectOutcome::Unreachable(error.to_string())
        }
        _ => ConnectOutcome::Error(error.to_string()),
    }
}

/// Runs a tcping of `address`, reporting each attempt to `progress`.
/// Returns [`Error::Cancelled`] if `cancel` fires first.
pub async fn run(
    spec: &TcpingSpec,
    address: SocketAddr,
    progress: &Progress<TcpingAttempt>,
    cancel: &CancellationToken,
) -> Result<TcpingSummary> {
    let start = Instant::now();
    let total = u32::from(spec.count.get());
    let mut summary = TcpingSummary {
        address,
        attempted: 0,
        connected: 0,
        refused: 0,
        timed_out: 0,
        failed: 0,
        latency: None,
        elapsed: Duration::ZERO,
    };
    let mut latency = RttAccumulator::default();
    let mut next_start = start;
    for seq in 1..=total {
        let cancelled = Error::Cancelled {
            done: summary.attempted,
            total,
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(cancelled),
            () = tokio::time::sleep_until(next_start) => {}
        }
        next_start += spec.interval;
        let began = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(cancelled),
            connect = tokio::time::timeout(spec.timeout, TcpStream::connect(address)) => match connect {
                Ok(Ok(_stream)) => ConnectOutcome::Connected,
                Ok(Err(error)) => classify_connect_error(&error),
                Err(_elapsed) => ConnectOutcome::Timeout,
            },
        };
        let took = began.elapsed();
        summary.attempted += 1;
        match outcome {
            ConnectOutcome::Connected => {
                summary.connected += 1;
                latency.add(took);
            }
            ConnectOutcome::Refused => summary.refused += 1,
            ConnectOutcome::Timeout => summary.timed_out += 1,
            ConnectOutcome::Unreachable(_) | ConnectOutcome::Error(_) => summary.failed += 1,
        }
        let attempt = TcpingAttempt {
            seq,
            outcome,
            latency: took,
            address,
        };
        progress.send(attempt, cancel).await;
    }
    summary.latency = latency.stats();
    summary.elapsed = start.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_sorted_like_paping() {
        let e = |errno| io::Error::from_raw_os_error(errno);
        assert_eq!(
            classify_connect_error(&e(libc::ECONNREFUSED)),
            ConnectOutcome::Refused
        );
        assert_eq!(
            classify_connect_error(&e(libc::ETIMEDOUT)),
            ConnectOutcome::Timeout
        );
        assert!(matches!(
            classify_connect_error(&e(libc::EHOSTUNREACH)),
            ConnectOutcome::Unreachable(_)
        ));
        assert!(matches!(
            classify_connect_error(&e(libc::ENETUNREACH)),
            ConnectOutcome::Unreachable(_)
        ));
        assert!(
            matches!(classify_connect_error(&e(libc::EACCES)), ConnectOutcome::Error(d) if d.contains("ermission"))
        );
    }
}
