//! Privileged, OS-specific operations behind small traits, so the task
//! engines above run against a mock in unit tests and against the kernel in
//! the probe. The Linux implementations live in [`linux`] (ICMP and TCP
//! probes, routes, MTUs), [`af_packet`] (capture rings), [`netns`] and
//! [`tcp_info`], the only modules of the crate allowed `unsafe`. This layer
//! sits right above the leaf [`crate::types`]; it imports nothing else of the
//! crate, and reports its failures as its own [`Error`].

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::types::{EchoId, Mtu, Ttl};

pub mod af_packet;
mod error;
pub mod linux;
pub mod netns;
pub mod tcp_info;

pub use error::{Error, Result};

/// A wall-clock instant: nanoseconds since the Unix epoch on `CLOCK_REALTIME`,
/// the clock of the kernel's socket timestamps (`SO_TIMESTAMPNS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `ns` nanoseconds after the Unix epoch.
    pub const fn from_nanos(ns: i64) -> Self {
        Self(ns)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Time from `earlier` to `self`; zero if the clock stepped backwards.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        let ns = self.0.saturating_sub(earlier.0);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
    }
}

/// Settings of an ICMP socket, fixed for its lifetime (one socket per task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpSocketOptions {
    /// Echo identifier of this task: the socket may drop, in the kernel,
    /// echo replies carrying another identifier.
    pub echo_id: EchoId,
    /// TTL of outgoing packets; `None` keeps the system default.
    pub ttl: Option<Ttl>,
    /// Set DF and refuse to fragment locally (`IP_PMTUDISC_DO`, `ping -M do`);
    /// otherwise never set DF and let the kernel fragment (`IP_PMTUDISC_DONT`).
    pub dont_fragment: bool,
}

/// One datagram received on an ICMP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes written to the caller's buffer (the IPv4 datagram, header included).
    pub len: usize,
    /// When the kernel received it (its timestamp, or the time read right
    /// after `recvmsg` when the kernel gave none).
    pub at: Timestamp,
}

/// Why an ICMP message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    /// DF is set and the datagram exceeds the route's MTU (`EMSGSIZE`).
    #[error("local error: message too long{}", mtu.map(|m| format!(", mtu={m}")).unwrap_or_default())]
    MessageTooLong {
        /// MTU of the route to the destination, when it could be read.
        mtu: Option<Mtu>,
    },
    /// Any other error from the send call (no route, no buffer space, ...).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A raw ICMPv4 socket: sends ICMP messages (the kernel adds the IPv4 header)
/// and receives every ICMP datagram the host gets, IPv4 header included.
pub trait IcmpSocket: Send + Sync {
    /// Sends `message` (an ICMP header and body) to `to`. Returns the
    /// wall-clock time read just before the send call, the start of the
    /// round trip.
    fn send_to(
        &self,
        message: &[u8],
        to: Ipv4Addr,
    ) -> impl Future<Output = Result<Timestamp, SendFailure>> + Send;

    /// Waits for the next datagram and copies it into `buf` (truncated to
    /// `buf`'s length). Cancel-safe: dropping the future loses nothing.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<Received>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_between_timestamps_saturate_at_zero() {
        let a = Timestamp::from_nanos(1_000);
        let b = Timestamp::from_nanos(4_500);
        assert_eq!(b.saturating_duration_since(a), Duration::from_nanos(3_500));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(b.as_nanos(), 4_500);
    }

    #[test]
    fn message_too_long_reads_like_ping() {
        let e = SendFailure::MessageTooLong {
            mtu: Some(Mtu(1500)),
        };
        assert_eq!(e.to_string(), "local error: message too long, mtu=1500");
        let e = SendFailure::MessageTooLong { mtu: None };
        assert_eq!(e.to_string(), "local error: message too long");
    }
}
