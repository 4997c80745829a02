//! UDP echo against a probe responder, as a `ping` over UDP: `count`
//! datagrams of `size` bytes sent `interval` apart, each waiting `timeout`
//! for its echo, with DF when asked (`IP_PMTUDISC_DO`: an oversized send
//! fails locally with `EMSGSIZE` and is reported as a send error carrying
//! the local MTU).
//!
//! Each datagram starts with a tag (a per-task nonce, the sequence number
//! and the send time), truncated when the datagram is smaller. The
//! [`EchoTracker`] is the sans-IO core (which echo answers which datagram,
//! which ones expired); [`run`] drives it with a connected UDP socket.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::Progress;
use super::error::{Error, RecvErrors, Result};
use super::stats::{RttAccumulator, RttStats};
use crate::platform::linux::set_mtu_discover;
use crate::types::{PayloadSize, ProbeCount};

/// Bytes of the tag at the start of each datagram: nonce (4), seq (4),
/// send time in nanoseconds since the task started (8), all big-endian.
pub const TAG_LEN: usize = 16;

/// A validated UDP echo task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpEchoSpec {
    /// IPv4 address or hostname, as given; resolved on the probe.
    pub host: String,
    /// UDP port of the responder, 1..=65535.
    pub port: u16,
    /// UDP payload bytes, 0..=65507.
    pub size: PayloadSize,
    /// Set DF and never fragment locally (`ping -M do`).
    pub dont_fragment: bool,
    /// Datagrams to send.
    pub count: ProbeCount,
    /// Time between two sends, 1 ms..=60 s.
    pub interval: Duration,
    /// How long each datagram waits for its echo, 1 ms..=60 s.
    pub timeout: Duration,
}

/// What became of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EchoEventKind {
    /// Its echo came back.
    Reply {
        /// Round trip (tokio clock, user space at both ends).
        rtt: Duration,
        /// UDP payload bytes received.
        bytes: usize,
    },
    /// No echo within the timeout.
    Timeout,
    /// The local stack refused to send it.
    SendError {
        /// Why, e.g. "local error: message too long, mtu=1400".
        detail: String,
    },
    /// An ICMP error came back for it (port unreachable, frag needed), as
    /// the kernel reported it on the socket.
    IcmpError {
        /// The error, e.g. "connection refused (ICMP port unreachable)".
        detail: String,
    },
}

/// One datagram's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoEvent {
    /// Sequence number, 1 for the first datagram.
    pub seq: u32,
    /// What happened.
    pub kind: EchoEventKind,
}

/// The end result of a UDP echo task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpEchoSummary {
    /// The address echoed against.
    pub address: SocketAddr,
    /// Datagrams sent or attempted.
    pub transmitted: u32,
    /// Echoes received.
    pub received: u32,
    /// Send errors and ICMP errors.
    pub errors: u32,
    /// Round-trip statistics over the echoes.
    pub rtt: Option<RttStats>,
}

/// Encodes the tag of datagram `seq` sent `sent_ns` after the task start.
pub fn tag(nonce: u32, seq: u32, sent_ns: u64) -> [u8; TAG_LEN] {
    let mut tag = [0u8; TAG_LEN];
    tag[..4].copy_from_slice(&nonce.to_be_bytes());
    tag[4..8].copy_from_slice(&seq.to_be_bytes());
    tag[8..].copy_from_slice(&sent_ns.to_be_bytes());
    tag
}

/// A datagram of `size` bytes: the tag (truncated if `size` is smaller),
/// then filler.
pub fn datagram(size: PayloadSize, nonce: u32, seq: u32, sent_ns: u64) -> Vec<u8> {
    let mut bytes = vec![b'u'; usize::from(size.get())];
    let tag = tag(nonce, seq, sent_ns);
    let n = bytes.len().min(TAG_LEN);
    bytes[..n].copy_from_slice(&tag[..n]);
    bytes
}

/// Sans-IO bookkeeping of the datagrams waiting for their echo.
#[derive(Debug, Clone)]
pub struct EchoTracker {
    nonce: u32,
    timeout: Duration,
    /// seq → send instant.
    outstanding: BTreeMap<u32, Instant>,
}

impl EchoTracker {
    /// A tracker for datagrams tagged with `nonce`, each waiting `timeout`.
    pub fn new(nonce: u32, timeout: Duration) -> Self {
        Self {
            nonce,
            timeout,
            outstanding: BTreeMap::new(),
        }
    }

    /// Records that datagram `seq` left at `at`.
    pub fn sent(&mut self, seq: u32, at: Instant) {
        self.outstanding.insert(seq, at);
    }

    /// Matches a received datagram to the one it echoes. Datagrams with a
    /// full tag match by nonce and seq; shorter ones (tiny sizes) answer the
    /// oldest outstanding datagram. Strays and duplicates give `None`.
    pub fn received(&mut self, data: &[u8], at: Instant) -> Option<EchoEvent> {
        let seq = if data.len() >= 8 {
            let nonce = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            if nonce != self.nonce {
                return None;
            }
            u32::from_be_bytes([data[4], data[5], data[6], data[7]])
        } else {
            *self.outstanding.keys().next()?
        };
        let sent = self.outstanding.remove(&seq)?;
        Some(EchoEvent {
            seq,
            kind: EchoEventKind::Reply {
                rtt: at.saturating_duration_since(sent),
                bytes: data.len(),
            },
        })
    }

    /// The oldest outstanding datagram, taken out (an ICMP error the
    /// kernel reports on the socket answers it).
    pub fn take_oldest(&mut self) -> Option<u32> {
        self.outstanding.pop_first().map(|(seq, _)| seq)
    }

    /// Takes out every datagram whose timeout has passed at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<EchoEvent> {
        let timeout = self.timeout;
        let expired: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, sent)| **sent + timeout <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &expired {
            self.outstanding.remove(seq);
        }
        expired
            .into_iter()
            .map(|seq| EchoEvent {
                seq,
                kind: EchoEventKind::Timeout,
            })
            .collect()
    }

    /// When the next datagram expires, if any is outstanding.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.outstanding
            .values()
            .min()
            .map(|sent| *sent + self.timeout)
    }

    /// No datagram waits for its echo.
    pub fn is_idle(&self) -> bool {
        self.outstanding.is_empty()
    }
}

/// Opens the UDP socket: bound to an ephemeral port, DF as asked, connected
/// to `address` (so only its datagrams and ICMP errors arrive). No privilege
/// needed; needs a tokio runtime.
fn open(address: SocketAddr, dont_fragment: bool) -> Result<UdpSocket> {
    let failed = |op: &'static str| move |source: io::Error| Error::Socket { op, source };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(failed("socket(AF_INET, SOCK_DGRAM)"))?;
    let mode = if dont_fragment {
        libc::IP_PMTUDISC_DO
    } else {
        libc::IP_PMTUDISC_DONT
    };
    set_mtu_discover(&socket, mode).map_err(failed("setsockopt(IP_MTU_DISCOVER)"))?;
    socket
        .set_nonblocking(true)
        .map_err(failed("set O_NONBLOCK"))?;
    socket
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())
        .map_err(failed("bind(0.0.0.0:0)"))?;
    socket
        .connect(&address.into())
        .map_err(failed("connect(UDP)"))?;
    UdpSocket::from_std(socket.into()).map_err(failed("register with the tokio reactor"))
}

/// Describes a send failure; `EMSGSIZE` carries the socket's path MTU.
fn send_failure(socket: &UdpSocket, e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::EMSGSIZE) {
        match nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::IpMtu) {
            Ok(mtu) => format!("local error: message too long, mtu={mtu}"),
            Err(_) => "local error: message too long".to_owned(),
        }
    } else {
        e.to_string()
    }
}

/// Describes an error the kernel reported on the socket (from an ICMP error).
fn icmp_failure(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "connection refused (ICMP port unreachable)".to_owned(),
        Some(libc::EMSGSIZE) => "frag needed (ICMP): message too long for the path".to_owned(),
        Some(libc::EHOSTUNREACH) => "host unreachable (ICMP)".to_owned(),
        Some(libc::ENETUNREACH) => "network unreachable (ICMP)".to_owned(),
        _ => e.to_string(),
    }
}

/// Runs a UDP echo against `address`, reporting each datagram's fate to
/// `progress`. Returns [`Error::Cancelled`] if `cancel` fires first. Takes at
/// most `count × interval + timeout`.
pub async fn run(
    spec: &UdpEchoSpec,
    address: SocketAddr,
    progress: &Progress<EchoEvent>,
    cancel: &CancellationToken,
) -> Result<UdpEchoSummary> {
    let socket = open(address, spec.dont_fragment)?;
    let total = u32::from(spec.count.get());
    let start = Instant::now();
    let mut tracker = EchoTracker::new(rand::random(), spec.timeout);
    let mut summary = UdpEchoSummary {
        address,
        transmitted: 0,
        received: 0,
        errors: 0,
        rtt: None,
    };
    let mut rtt = RttAccumulator::default();
    let mut next_send = start;
    let mut buf = vec![0u8; 65_536];
    let mut recv_errors = RecvErrors::default();
    loop {
        let sending = summary.transmitted < total;
        if !sending && tracker.is_idle() {
            break;
        }
        let expiry = tracker.next_deadline();
        let mut events = Vec::new();
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                return Err(Error::Cancelled { done: summary.transmitted, total });
            }
            received = socket.recv(&mut buf) => match received {
                Ok(n) => {
                    recv_errors.reset();
                    events.extend(tracker.received(&buf[..n], Instant::now()));
                }
                Err(e) => {
                    let e = recv_errors.note(address.ip(), e)?;
                    if let Some(seq) = tracker.take_oldest() {
                        events.push(EchoEvent {
                            seq,
                            kind: EchoEventKind::IcmpError { detail: icmp_failure(&e) },
                        });
                    }
                }
            },
            () = tokio::time::sleep_until(next_send), if sending => {
                summary.transmitted += 1;
                recv_errors.reset();
                let seq = summary.transmitted;
                let now = Instant::now();
                let sent_ns = u64::try_from(now.duration_since(start).as_nanos()).unwrap_or(u64::MAX);
                let data = datagram(spec.size, tracker.nonce, seq, sent_ns);
                match socket.try_send(&data) {
                    Ok(_) => tracker.sent(seq, now),
                    Err(e) => events.push(EchoEvent {
                        seq,
                        kind: EchoEventKind::SendError { detail: send_failure(&socket, &e) },
                    }),
                }
                next_send += spec.interval;
            }
            () = sleep_until_some(expiry) => {
                events.extend(tracker.expire(Instant::now()));
            }
        }
        for event in events {
            match &event.kind {
                EchoEventKind::Reply { rtt: took, .. } => {
                    summary.received += 1;
                    rtt.add(*took);
                }
                EchoEventKind::Timeout => {}
                EchoEventKind::SendError { .. } | EchoEventKind::IcmpError { .. } => {
                    summary.errors += 1;
                }
            }
            progress.send(event, cancel).await;
        }
    }
    summary.rtt = rtt.stats();
    Ok(summary)
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(n: u16) -> PayloadSize {
        PayloadSize::new(n).unwrap()
    }

    #[test]
    fn datagrams_carry_a_truncated_tag() {
        let d = datagram(size(100), 0xdead_beef, 7, 1_000);
        assert_eq!(d.len(), 100);
        assert_eq!(&d[..TAG_LEN], &tag(0xdead_beef, 7, 1_000));
        assert!(d[TAG_LEN..].iter().all(|&b| b == b'u'));
        assert_eq!(datagram(size(6), 1, 2, 3), &tag(1, 2, 3)[..6]);
        assert!(datagram(size(0), 1, 2, 3).is_empty());
    }

    #[test]
    fn echoes_match_by_nonce_and_seq() {
        let t0 = Instant::now();
        let mut tracker = EchoTracker::new(9, Duration::from_secs(1));
        tracker.sent(1, t0);
        tracker.sent(2, t0 + Duration::from_millis(10));
        let echo = datagram(size(64), 9, 2, 0);
        let event = tracker
            .received(&echo, t0 + Duration::from_millis(13))
            .unwrap();
        assert_eq!(
            event,
            EchoEvent {
                seq: 2,
                kind: EchoEventKind::Reply {
                    rtt: Duration::from_millis(3),
                    bytes: 64
                }
            }
        );
        assert_eq!(tracker.received(&echo, t0), None, "duplicate");
        assert_eq!(
            tracker.received(&datagram(size(64), 8, 1, 0), t0),
            None,
            "other nonce"
        );
        assert_eq!(tracker.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(tracker.expire(t0 + Duration::from_millis(999)).is_empty());
        let expired = tracker.expire(t0 + Duration::from_secs(1));
        assert_eq!(
            expired,
            vec![EchoEvent {
                seq: 1,
                kind: EchoEventKind::Timeout
            }]
        );
        assert!(tracker.is_idle());
        assert_eq!(tracker.next_deadline(), None);
    }

    #[test]
    fn tiny_echoes_answer_the_oldest() {
        let t0 = Instant::now();
        let mut tracker = EchoTracker::new(1, Duration::from_secs(1));
        tracker.sent(3, t0);
        tracker.sent(4, t0);
        let event = tracker.received(&[], t0).unwrap();
        assert_eq!(event.seq, 3);
        assert_eq!(tracker.take_oldest(), Some(4));
        assert_eq!(tracker.take_oldest(), None);
        assert_eq!(tracker.received(&[1, 2], t0), None);
    }

    #[test]
    fn socket_errors_read_like_the_tools() {
        let e = |errno| io::Error::from_raw_os_error(errno);
        assert_eq!(
            icmp_failure(&e(libc::ECONNREFUSED)),
            "connection refused (ICMP port unreachable)"
        );
        assert!(icmp_failure(&e(libc::EMSGSIZE)).starts_with("frag needed"));
    }
}
