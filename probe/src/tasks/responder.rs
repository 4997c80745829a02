//! The probe's responder: the far end other probes test against. A TCP
//! sink (accepts, reads and discards, counts bytes) and a UDP echo (sends
//! each datagram back to its sender), both on ephemeral ports of 0.0.0.0,
//! announced once bound and kept for the task's lifetime. Off unless a task
//! asks for it; bounded in time ([`ResponderSpec::lifetime`], at most
//! [`MAX_LIFETIME`]), connections ([`MAX_CONNECTIONS`] at once) and volume
//! ([`MAX_TCP_BYTES`], [`MAX_UDP_DATAGRAMS`]).
//!
//! Cancelling the task is the normal way to stop it early: the responder
//! then returns its summary like at the end of its lifetime.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::Progress;
use super::error::{Error, Result};

/// Lifetime when the task says 0.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30);
/// Longest lifetime a task may ask for.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// TCP connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;
/// TCP bytes a responder reads in its life; then it closes its connections.
pub const MAX_TCP_BYTES: u64 = 1 << 30;
/// UDP datagrams a responder echoes in its life; later ones are dropped.
pub const MAX_UDP_DATAGRAMS: u64 = 100_000;

/// A validated responder task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponderSpec {
    /// How long to serve, 1 ms..=[`MAX_LIFETIME`].
    pub lifetime: Duration,
}

/// Where the responder listens, announced once both sockets are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderReady {
    /// Port of the TCP sink (on 0.0.0.0).
    pub tcp_port: u16,
    /// Port of the UDP echo (on 0.0.0.0).
    pub udp_port: u16,
    /// The primary IPv4 address of the namespace the responder runs in
    /// (first address of the first up, non-loopback interface; 127.0.0.1
    /// when there is none).
    pub address: Ipv4Addr,
}

/// What the responder served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponderSummary {
    /// TCP connections accepted (including those closed for being over the limit).
    pub tcp_connections: u64,
    /// TCP bytes read and discarded.
    pub tcp_bytes: u64,
    /// UDP datagrams received (echoed while under [`MAX_UDP_DATAGRAMS`]).
    pub udp_datagrams: u64,
}

/// The primary IPv4 address of the current network namespace.
pub fn primary_ipv4() -> Ipv4Addr {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Ipv4Addr::LOCALHOST;
    };
    addrs
        .filter(|ifa| {
            ifa.flags.contains(InterfaceFlags::IFF_UP)
                && !ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .find_map(|ifa| ifa.address?.as_sockaddr_in().map(|a| a.ip()))
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

/// Runs the responder: binds, reports [`ResponderReady`] to `progress`, and
/// serves until its lifetime ends or `cancel` fires, then returns what it
/// served. Fails only when a socket cannot be bound.
pub async fn run(
    spec: &ResponderSpec,
    progress: &Progress<ResponderReady>,
    cancel: &CancellationToken,
) -> Result<ResponderSummary> {
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let tcp = TcpListener::bind(any)
        .await
        .map_err(|source| Error::Socket {
            op: "bind TCP 0.0.0.0:0",
            source,
        })?;
    let udp = UdpSocket::bind(any).await.map_err(|source| Error::Socket {
        op: "bind UDP 0.0.0.0:0",
        source,
    })?;
    let port = |addr: std::io::Result<SocketAddr>, op| {
        addr.map(|a| a.port())
            .map_err(|source| Error::Socket { op, source })
    };
    let ready = ResponderReady {
        tcp_port: port(tcp.local_addr(), "getsockname(TCP)")?,
        udp_port: port(udp.local_addr(), "getsockname(UDP)")?,
        address: primary_ipv4(),
    };
    tracing::info!(
        tcp_port = ready.tcp_port,
        udp_port = ready.udp_port,
        address = %ready.address,
        "responder ready"
    );
    progress.send(ready, cancel).await;

    let deadline = Instant::now() + spec.lifetime;
    let stop = cancel.child_token();
    let tcp_bytes = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut sinks = JoinSet::new();
    let mut summary = ResponderSummary::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => break,
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    summary.tcp_connections += 1;
                    match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => {
                            sinks.spawn(sink(stream, slot, Arc::clone(&tcp_bytes), stop.clone()));
                        }
                        Err(_) => tracing::debug!(%peer, "responder full, closing connection"),
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "responder accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            received = udp.recv_from(&mut buf) => match received {
                Ok((n, peer)) => {
                    summary.udp_datagrams += 1;
                    if summary.udp_datagrams <= MAX_UDP_DATAGRAMS
                        && let Err(error) = udp.send_to(&buf[..n], peer).await
                    {
                        tracing::debug!(%peer, %error, "responder echo failed");
                    }
                }
                Err(error) => tracing::debug!(%error, "responder recv failed"),
            },
            Some(_) = sinks.join_next(), if !sinks.is_empty() => {}
        }
    }
    stop.cancel();
    while sinks.join_next().await.is_some() {}
    summary.tcp_bytes = tcp_bytes.load(Ordering::Relaxed);
    Ok(summary)
}

/// Reads and discards one connection until EOF, an error, `stop`, or the
/// responder's byte budget is spent.
async fn sink(
    mut stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    total: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let n = u64::try_from(n).unwrap_or(u64::MAX);
                    if total.fetch_add(n, Ordering::Relaxed).saturating_add(n) >= MAX_TCP_BYTES {
                        break;
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_address_is_never_unspecified() {
        assert!(!primary_ipv4().is_unspecified());
    }
}
