//! Name resolution and echo identifiers for the engines: a task's target
//! (an IP literal or a name) becomes an address on this host, within
//! [`RESOLVE_TIMEOUT`]. Resolution happens where the task runs (in its
//! network namespace), never on the coordinator.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::{Error, Result};
use crate::types::EchoId;

/// How long a hostname may take to resolve on the probe.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which addresses a task can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// IPv4 only (the ICMP engines).
    Ipv4,
    /// Any family.
    Any,
}

/// An IP literal, IPv6 optionally in brackets.
pub fn parse_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Resolves `host` (an IP literal or a name) on this host, within
/// [`RESOLVE_TIMEOUT`]; the first address of the wanted family wins.
pub(super) async fn resolve(
    host: &str,
    family: Family,
    total: u32,
    cancel: &CancellationToken,
) -> Result<IpAddr> {
    if let Some(ip) = parse_ip(host) {
        return Ok(ip);
    }
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0)));
    let answer = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(Error::Cancelled { done: 0, total }),
        answer = lookup => answer,
    };
    let addresses = match answer {
        Err(_elapsed) => {
            return Err(Error::ResolveTimeout {
                host: host.to_owned(),
                timeout: RESOLVE_TIMEOUT,
            });
        }
        Ok(Err(source)) => {
            return Err(Error::Resolve {
                host: host.to_owned(),
                source,
            });
        }
        Ok(Ok(addresses)) => addresses,
    };
    let wanted = |ip: &IpAddr| family == Family::Any || ip.is_ipv4();
    addresses
        .map(|a| a.ip())
        .find(wanted)
        .ok_or_else(|| Error::NoAddress {
            host: host.to_owned(),
            family: match family {
                Family::Ipv4 => "IPv4",
                Family::Any => "IP",
            },
        })
}

/// Resolves `host` like [`resolve`] and insists on IPv4 (the ICMP engines):
/// an IPv6 literal or name is [`Error::NoAddress`].
pub(super) async fn resolve_ipv4(
    host: &str,
    total: u32,
    cancel: &CancellationToken,
) -> Result<Ipv4Addr> {
    match resolve(host, Family::Ipv4, total, cancel).await? {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err(Error::NoAddress {
            host: host.to_owned(),
            family: "IPv4",
        }),
    }
}

/// A fresh echo identifier: a random per-process base plus a counter, so
/// concurrent tasks of this probe never share one (each has its own raw
/// socket and filters on its identifier).
pub(super) fn next_echo_id() -> EchoId {
    static BASE: LazyLock<u16> = LazyLock::new(rand::random);
    static NEXT: AtomicU16 = AtomicU16::new(0);
    EchoId(BASE.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)))
}
