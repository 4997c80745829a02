//! Domain types of the probe's tasks: validated task specs and a newtype for
//! every protocol quantity. Nothing here knows the wire (`pb`) or a socket;
//! [`super::grpc`] converts at the boundary.

use std::fmt;
use std::time::Duration;

/// ICMP payload size in bytes, as `ping -s`: 0..=65507 (65535 minus the
/// 20-byte IPv4 header and the 8-byte ICMP header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PayloadSize(u16);

impl PayloadSize {
    /// The largest ICMP payload an IPv4 datagram can carry, in bytes.
    pub const MAX: u16 = 65507;

    /// A payload size in bytes; `None` above [`PayloadSize::MAX`].
    pub const fn new(bytes: u16) -> Option<Self> {
        if bytes <= Self::MAX {
            Some(Self(bytes))
        } else {
            None
        }
    }

    /// The size in bytes.
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// IPv4 time-to-live of the packets we send, 1..=255 hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u8);

impl Ttl {
    /// A TTL in hops; `None` for 0 (which the wire uses for "system default").
    pub const fn new(hops: u8) -> Option<Self> {
        if hops == 0 { None } else { Some(Self(hops)) }
    }

    /// The TTL in hops.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// ICMP echo sequence number (`icmp_seq`); a task's first probe is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u16);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// ICMP echo identifier: tells this task's echoes (and the errors quoting
/// them) apart from every other ICMP the host's raw sockets see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EchoId(pub u16);

/// A link or path MTU in bytes (IPv4 datagram size, headers included).
/// `u32` because loopback's is 65536.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtu(pub u32);

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many probes (echoes or connects) a task sends: 1..=10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeCount(u16);

impl ProbeCount {
    /// The most probes one task may send.
    pub const MAX: u16 = 10_000;

    /// A probe count; `None` for 0 or above [`ProbeCount::MAX`].
    pub const fn new(count: u16) -> Option<Self> {
        if count == 0 || count > Self::MAX {
            None
        } else {
            Some(Self(count))
        }
    }

    /// The count.
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// A validated ping task (ICMPv4 echo, as `ping`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingSpec {
    /// IPv4 address or hostname, as given; resolved on the probe.
    pub target: String,
    /// ICMP payload size (`ping -s`).
    pub size: PayloadSize,
    /// Set DF and forbid local fragmentation (`ping -M do`); otherwise
    /// `ping -M dont` (no DF, the kernel fragments).
    pub dont_fragment: bool,
    /// Echoes to send (`ping -c`).
    pub count: ProbeCount,
    /// Time between two echoes (`ping -i`), 1 ms..=60 s.
    pub interval: Duration,
    /// How long each echo waits for its reply (`ping -W`), 1 ms..=60 s.
    pub timeout: Duration,
    /// TTL of the echoes; `None` keeps the system default.
    pub ttl: Option<Ttl>,
}

/// A validated tcping task (repeated TCP connects, as `paping`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpingSpec {
    /// IP address or hostname, as given; resolved on the probe.
    pub host: String,
    /// TCP port, 1..=65535.
    pub port: u16,
    /// Connects to attempt (`paping -c`).
    pub count: ProbeCount,
    /// How long one connect may take (`paping -t`), 1 ms..=60 s.
    pub timeout: Duration,
    /// Time between the starts of two attempts, 1 ms..=60 s.
    pub interval: Duration,
}

/// A validated task of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSpec {
    /// ICMP echo.
    Ping(PingSpec),
    /// TCP connect.
    Tcping(TcpingSpec),
    /// TCP transfer (push bytes, watch them acknowledged).
    TcpTransfer(super::transfer::TcpTransferSpec),
    /// UDP echo against a responder.
    UdpEcho(super::udp_echo::UdpEchoSpec),
    /// The responder (TCP sink, UDP echo).
    Responder(super::responder::ResponderSpec),
    /// DNS resolution against resolv.conf's and explicit servers.
    Dns(super::dns::DnsSpec),
    /// Listening sockets.
    Listener(super::listener::ListenerSpec),
    /// Node facts (interfaces, routes, NAT paths, counters).
    NodeFacts(super::facts::NodeFactsSpec),
    /// Path MTU search.
    Pmtu(super::pmtu::PmtuSpec),
    /// Path trace (mtr).
    Trace(super::trace::TraceSpec),
    /// Packet capture, streamed back as a pcapng file.
    Capture(super::capture::CaptureTaskSpec),
}
