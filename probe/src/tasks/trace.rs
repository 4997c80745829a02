//! Path trace, as `mtr -r`: rounds of probes with TTL 1, 2, … towards the
//! target; each router on the way answers its TTL's probe with an ICMP
//! time-exceeded, the destination answers with what its mode provokes;
//! per hop Loss%, Snt, Last, Avg, Best, Wrst and StDev, and the field's
//! reading rules applied to the report.
//!
//! Modes: ICMP (echo requests; the destination sends an echo reply), UDP
//! (datagrams to port `port + ttl − 1`; the destination sends port
//! unreachable), TCP (a SYN to `port` from a non-blocking connect with the
//! TTL set; the destination answers SYN-ACK or RST, i.e. the connect
//! completes or is refused). Answers from routers are read on a raw ICMP
//! socket (requires `CAP_NET_RAW`) in every mode.
//!
//! Map: [`session`] is the sans-IO round bookkeeping; [`stats`] mtr's
//! arithmetic; [`reading`] the reading rules; [`packet`] reads ICMP errors
//! about UDP/TCP probes; the task conversion (`convert`) handles its wire form; [`run`] is
//! the driver. Rounds are pipelined as mtr's are: one starts every
//! `interval` while the previous ones' stragglers still wait. Bounds:
//! `count` ≤ 100 rounds of ≤ 64 probes, each probe waiting at most
//! `timeout` (≤ 5 s) after its send, rounds `interval` (≤ 10 s) apart.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::Progress;
use super::error::{Error, RecvErrors, Result};
use super::resolve::{next_echo_id, resolve_ipv4};
use crate::platform::linux::{self, RawIcmpSocket, TcpProbe};
use crate::platform::{IcmpSocket, IcmpSocketOptions, Received, Timestamp};
use crate::types::{EchoId, PayloadSize, Seq, Ttl};
use probemesh_packet::icmp::{EchoResponse, build_echo_request, classify_echo};
use reading::Reading;
use session::{ProbeKey, RoundReport, TraceSession};

pub mod packet;
pub mod reading;
pub mod session;
pub mod stats;

/// Payload of ICMP and UDP probes, bytes: 64-byte packets, mtr's default.
const PROBE_PAYLOAD: u16 = 36;
/// [`PROBE_PAYLOAD`] as an ICMP payload size (checked at compile time).
const PROBE_SIZE: PayloadSize = match PayloadSize::new(PROBE_PAYLOAD) {
    Some(size) => size,
    None => panic!("a 36-byte payload fits an IPv4 datagram"),
};
/// Receive buffer: the largest IPv4 datagram.
const RECV_BUF_BYTES: usize = 65_536;

/// What the probes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    /// ICMP echo requests (`mtr`'s default).
    Icmp,
    /// UDP datagrams to high ports (`mtr --udp`).
    Udp,
    /// TCP SYNs to one port (`mtr --tcp`).
    Tcp,
}

impl TraceMode {
    /// The wire name: `icmp`, `udp`, `tcp`.
    pub fn name(self) -> &'static str {
        match self {
            TraceMode::Icmp => "icmp",
            TraceMode::Udp => "udp",
            TraceMode::Tcp => "tcp",
        }
    }
}

/// Rounds of a trace (`mtr -c`): 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rounds(u8);

impl Rounds {
    /// The most rounds one trace may run.
    pub const MAX: u8 = 100;

    /// A round count; `None` for 0 or above [`Rounds::MAX`].
    pub const fn new(n: u8) -> Option<Self> {
        if n == 0 || n > Self::MAX {
            None
        } else {
            Some(Self(n))
        }
    }

    /// The count.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// A validated trace task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSpec {
    /// IPv4 address or hostname, as given; resolved on the probe.
    pub target: String,
    /// What the probes are.
    pub mode: TraceMode,
    /// UDP: first destination port (the probe at TTL t goes to
    /// `port + t − 1`); TCP: the destination port. Unused for ICMP.
    pub port: u16,
    /// Rounds.
    pub count: Rounds,
    /// Highest TTL probed, 1..=64 hops.
    pub max_hops: Ttl,
    /// From the start of one round to the start of the next, 1 ms..=10 s.
    pub interval: Duration,
    /// How long a round waits for answers after its last send, 1 ms..=5 s.
    pub timeout: Duration,
}

/// The end result of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceReport {
    /// The address traced.
    pub address: Ipv4Addr,
    /// The displayed hops.
    pub hops: Vec<reading::Hop>,
    /// True when the destination answered.
    pub reached: bool,
    /// The reading rules applied to `hops`.
    pub reading: Reading,
}

/// Runs a trace task in the calling thread's network namespace: resolves
/// the target (IPv4 only), opens the raw ICMP socket and the mode's
/// sockets, and runs the rounds.
pub(crate) async fn task(
    spec: &TraceSpec,
    progress: &Progress<RoundReport>,
    cancel: &CancellationToken,
) -> Result<TraceReport> {
    let total = u32::from(spec.count.get());
    let address = resolve_ipv4(&spec.target, total, cancel).await?;
    run(spec, address, progress, cancel).await
}

/// The sockets of one trace.
struct Probers {
    icmp: RawIcmpSocket,
    id: EchoId,
    /// UDP mode: one socket per round still waiting, by round. Its source
    /// port tells the round of an ICMP error quoting a probe, since every
    /// round sends to the same destination ports.
    udp: HashMap<u32, (UdpSocket, u16)>,
}

/// Runs `spec.count` rounds towards `address`, one every `spec.interval`
/// whether or not the previous round's stragglers have answered (as mtr
/// does), reporting each round's report to `progress` once it is done, in
/// order. Returns [`Error::Cancelled`] when `cancel` fires.
pub async fn run(
    spec: &TraceSpec,
    address: Ipv4Addr,
    progress: &Progress<RoundReport>,
    cancel: &CancellationToken,
) -> Result<TraceReport> {
    let id = next_echo_id();
    let icmp = RawIcmpSocket::open(&IcmpSocketOptions {
        echo_id: id,
        ttl: None,
        dont_fragment: false,
    })?;
    let mut probers = Probers {
        icmp,
        id,
        udp: HashMap::new(),
    };
    let mut session = TraceSession::new(spec.max_hops);
    let mut seq = 0u16;
    let mut buf = vec![0u8; RECV_BUF_BYTES];
    let mut connects = FuturesUnordered::new();
    let total = u32::from(spec.count.get());
    let mut next_round = Instant::now();
    let mut reported = 0u32;
    let mut recv_errors = RecvErrors::default();
    let cancelled = |done| Error::Cancelled { done, total };
    loop {
        if cancel.is_cancelled() {
            return Err(cancelled(reported));
        }
        let now = Instant::now();
        session.expire(now);
        if session.rounds_in_flight() + reported < total && next_round <= now {
            send_round(
                spec,
                address,
                &mut probers,
                &mut session,
                &mut seq,
                &mut connects,
            )
            .await?;
            next_round += spec.interval;
        }
        for report in session.take_done() {
            probers.udp.remove(&report.round);
            reported = report.round;
            progress.send(report, cancel).await;
        }
        if reported >= total {
            break;
        }
        let more_rounds = session.rounds_in_flight() + reported < total;
        let Some(wake) = [more_rounds.then_some(next_round), session.next_deadline()]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        let woke = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(cancelled(reported)),
            Some(done) = connects.next(), if !connects.is_empty() => Wake::Connect(done),
            received = probers.icmp.recv(&mut buf) => Wake::Datagram(received),
            () = tokio::time::sleep_until(wake) => Wake::Timer,
        };
        match woke {
            Wake::Timer => {}
            Wake::Connect((port, outcome, at)) => {
                on_connect_done(&mut session, address, port, outcome, at);
            }
            Wake::Datagram(Ok(received)) => {
                recv_errors.reset();
                let datagram = buf.get(..received.len).unwrap_or(&buf);
                on_icmp(
                    spec.mode,
                    &mut session,
                    &probers,
                    address,
                    datagram,
                    received.at,
                );
            }
            Wake::Datagram(Err(source)) => {
                let source = recv_errors.note(address.into(), source)?;
                tracing::debug!(%address, error = %source, "recvmsg on the ICMP socket failed");
            }
        }
    }
    Ok(TraceReport {
        address,
        hops: session.hops(),
        reached: session.reached(),
        reading: session.reading(),
    })
}

/// What woke the trace up.
enum Wake {
    /// The next round is due, or a probe's deadline passed.
    Timer,
    /// A TCP probe's connect ended (or its deadline passed).
    Connect(TcpDone),
    /// The raw ICMP socket received a datagram (or failed to).
    Datagram(io::Result<Received>),
}

/// A TCP probe's connect finishing, by its source port: the destination
/// answered (connected or refused), or something else ended it (the ICMP
/// socket tells the rest).
type TcpDone = (u16, io::Result<bool>, Option<Timestamp>);

/// The connects of the TCP probes still waiting.
type Connects = FuturesUnordered<Pin<Box<dyn Future<Output = TcpDone> + Send>>>;

/// Sends one round's probes, each waiting until `timeout` after its send.
async fn send_round(
    spec: &TraceSpec,
    address: Ipv4Addr,
    probers: &mut Probers,
    session: &mut TraceSession,
    seq: &mut u16,
    connects: &mut Connects,
) -> Result<()> {
    let (round, ttls) = session.start_round();
    let udp = match spec.mode {
        TraceMode::Udp => Some(round_udp_socket(probers, round).await?),
        TraceMode::Icmp | TraceMode::Tcp => None,
    };
    for ttl in ttls {
        let deadline = Instant::now() + spec.timeout;
        match spec.mode {
            TraceMode::Icmp => {
                probers.icmp.set_ttl(ttl)?;
                *seq = seq.wrapping_add(1);
                let key = ProbeKey(u32::from(*seq));
                let packet = build_echo_request(probers.id, Seq(*seq), PROBE_SIZE.get());
                session.on_sent(round, ttl, key, now()?, deadline);
                if let Err(e) = probers.icmp.send_to(&packet, address).await {
                    tracing::debug!(%address, ttl = ttl.get(), error = %e, "trace probe not sent");
                    session.on_send_failed(key);
                }
            }
            TraceMode::Udp => {
                let Some((socket, source_port)) = udp.and_then(|r| probers.udp.get(&r)) else {
                    continue;
                };
                socket
                    .set_ttl(u32::from(ttl.get()))
                    .map_err(|source| Error::Socket {
                        op: "setsockopt(IP_TTL) on the UDP probe socket",
                        source,
                    })?;
                let port = udp_port(spec.port, ttl);
                let key = udp_key(*source_port, port);
                session.on_sent(round, ttl, key, now()?, deadline);
                let payload = [0u8; PROBE_PAYLOAD as usize];
                if let Err(e) = socket.send_to(&payload, (address, port)).await {
                    tracing::debug!(%address, ttl = ttl.get(), error = %e, "trace probe not sent");
                    session.on_send_failed(key);
                }
            }
            TraceMode::Tcp => {
                let sent_at = now()?;
                match TcpProbe::start(SocketAddrV4::new(address, spec.port), ttl) {
                    Ok(probe) => {
                        let port = probe.local_port();
                        session.on_sent(round, ttl, ProbeKey(u32::from(port)), sent_at, deadline);
                        connects.push(Box::pin(finish_connect(probe, deadline)));
                    }
                    Err(e) => {
                        tracing::debug!(%address, ttl = ttl.get(), error = %e, "trace probe not sent");
                        // Counted as sent, never answered (as mtr counts it).
                        let key = ProbeKey(u32::MAX - u32::from(ttl.get()));
                        session.on_sent(round, ttl, key, sent_at, deadline);
                        session.on_send_failed(key);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Binds round `round`'s UDP socket; returns the round it is kept under.
async fn round_udp_socket(probers: &mut Probers, round: u32) -> Result<u32> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|source| Error::Socket {
            op: "bind a UDP socket for the probes",
            source,
        })?;
    let port = socket
        .local_addr()
        .map_err(|source| Error::Socket {
            op: "getsockname on the UDP probe socket",
            source,
        })?
        .port();
    probers.udp.insert(round, (socket, port));
    Ok(round)
}

/// The key of a UDP probe: its source port (its round's socket) and its
/// destination port (its TTL).
fn udp_key(source_port: u16, destination_port: u16) -> ProbeKey {
    ProbeKey(u32::from(source_port) << 16 | u32::from(destination_port))
}

/// Destination port of the UDP probe at `ttl`: `base + ttl − 1`, wrapping
/// inside the unprivileged range when `base` is near the top.
pub fn udp_port(base: u16, ttl: Ttl) -> u16 {
    let port = u32::from(base) + u32::from(ttl.get()) - 1;
    u16::try_from(port).unwrap_or_else(|_| u16::try_from(port - 65_536 + 1024).unwrap_or(1024))
}

/// The wall clock, as a task error when it cannot be read.
fn now() -> Result<Timestamp> {
    linux::now().map_err(|source| Error::Socket {
        op: "clock_gettime(CLOCK_REALTIME)",
        source,
    })
}

/// Reads one datagram from the raw ICMP socket as an answer to a waiting
/// probe of any round, if it is one. Its time is the kernel's receive
/// timestamp (`SO_TIMESTAMPNS`) in every mode.
fn on_icmp(
    mode: TraceMode,
    session: &mut TraceSession,
    probers: &Probers,
    address: Ipv4Addr,
    datagram: &[u8],
    at: Timestamp,
) {
    match mode {
        TraceMode::Icmp => match classify_echo(datagram, probers.id) {
            Some(EchoResponse::EchoReply { seq, from, .. }) => {
                session.on_answer(ProbeKey(u32::from(seq.0)), from, at, true);
            }
            Some(EchoResponse::Error { seq, from, .. }) => {
                session.on_answer(ProbeKey(u32::from(seq.0)), from, at, from == address);
            }
            None => {}
        },
        TraceMode::Udp => {
            let Some(error) = packet::classify(datagram, packet::IPPROTO_UDP, address) else {
                return;
            };
            let ours = probers
                .udp
                .values()
                .any(|(_, port)| *port == error.source_port);
            if ours {
                let reached = error.from == address && error.is_port_unreachable();
                let key = udp_key(error.source_port, error.destination_port);
                session.on_answer(key, error.from, at, reached);
            }
        }
        TraceMode::Tcp => {
            let Some(error) = packet::classify(datagram, packet::IPPROTO_TCP, address) else {
                return;
            };
            // Only a waiting probe's port is a key: other sockets' errors
            // change nothing.
            let key = ProbeKey(u32::from(error.source_port));
            session.on_answer(key, error.from, at, error.from == address);
        }
    }
}

/// A TCP probe's connect ended: connected or refused means the destination
/// answered; other errors come from ICMP, which the raw socket reports.
fn on_connect_done(
    session: &mut TraceSession,
    address: Ipv4Addr,
    port: u16,
    outcome: io::Result<bool>,
    at: Option<Timestamp>,
) {
    match (outcome, at) {
        (Ok(_answered), Some(at)) => {
            session.on_answer(ProbeKey(u32::from(port)), address, at, true);
        }
        (Ok(_), None) => {}
        (Err(e), _) => {
            tracing::debug!(%address, port, error = %e, "trace TCP probe ended without an answer");
        }
    }
}

/// Waits for a TCP probe's connect to end, at most until `deadline` (then
/// the socket closes). The time is read in user space when the wait ends:
/// a connect completing is no datagram this socket receives, so no kernel
/// receive timestamp applies (the SYN-ACK or RST is consumed by the TCP
/// stack); the answers of routers on the way are kernel-stamped on the raw
/// ICMP socket.
async fn finish_connect(probe: TcpProbe, deadline: Instant) -> TcpDone {
    let port = probe.local_port();
    match tokio::time::timeout_at(deadline, probe.finish()).await {
        Ok(outcome) => {
            let at = outcome.is_ok().then(|| linux::now().ok()).flatten();
            (port, outcome, at)
        }
        Err(_elapsed) => (port, Ok(false), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_ports_count_up_from_the_base_and_wrap() {
        let ttl = |n| Ttl::new(n).unwrap();
        assert_eq!(udp_port(33_434, ttl(1)), 33_434);
        assert_eq!(udp_port(33_434, ttl(30)), 33_463);
        assert_eq!(udp_port(65_535, ttl(2)), 1024);
    }

    #[test]
    fn rounds_bounds() {
        assert_eq!(Rounds::new(0), None);
        assert_eq!(Rounds::new(101), None);
        assert_eq!(Rounds::new(100).map(Rounds::get), Some(100));
        assert_eq!(TraceMode::Tcp.name(), "tcp");
    }
}
