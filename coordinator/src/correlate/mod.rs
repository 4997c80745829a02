//! Correlation: the same packet, followed across every observer of a
//! synchronized capture, through DNAT/SNAT (NodePort, ClusterIP,
//! masquerade) and through VXLAN and IPIP tunnels.
//!
//! Input is one [`Observation`] per capture interface (packets with their
//! timestamps already on the coordinator's clock; [`from_pcapng`] reads one
//! observer's file into them). [`correlate`] gives one [`PacketFate`] per
//! test packet: where it was seen and when, how it had been rewritten at
//! each sighting, whether an answer came back, how often it was
//! retransmitted, and which ICMP errors quoted it. [`path_of`],
//! [`lost_after`] and [`encapsulation_sources`] summarize that for the
//! diagnosis, which cites them as evidence.
//!
//! Map: this file holds the types; `read` turns pcapng files into
//! observations, `matching` pairs copies into fates, `evidence` reads fates
//! for the diagnosis and [`summary`] for display. Each imports only the
//! types here (and `summary` the evidence); packet bytes are
//! `probemesh_packet`'s.
//!
//! Pure code over bytes: no socket, no clock, no file system. What counts
//! as "the same packet" is written down on `matching::MatchKey`'s
//! variants, with why each rule survives NAT.

mod evidence;
mod matching;
mod read;
#[cfg(test)]
mod recorded;
pub mod summary;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddrV4};

use pcap_file::PcapError;
use probemesh_packet::DecodeError;
use probemesh_packet::decode::{Flow, TunnelKind};
use probemesh_packet::frame::{LinkKind, TcpFlags, TcpSeq};
use probemesh_packet::icmp::{EchoId, EchoSeq, NextHopMtu};
use probemesh_packet::ipv4::{IpId, Ttl};
use probemesh_proto::identity::ProbeName;

pub use evidence::{encapsulation_sources, lost_after, path_of};
pub use matching::correlate;
pub use read::from_pcapng;

/// Default [`CorrelateConfig::match_window_ns`]: one second.
pub const DEFAULT_MATCH_WINDOW_NS: i64 = 1_000_000_000;
/// Default [`CorrelateConfig::answer_window_ns`]: ten seconds.
pub const DEFAULT_ANSWER_WINDOW_NS: i64 = 10_000_000_000;

/// Why captures could not be read for correlation.
#[derive(Debug, thiserror::Error)]
pub enum CorrelateError {
    /// The file is not pcapng, or is cut short or corrupt.
    #[error("capture from {probe}: not a readable pcapng file: {source}")]
    Pcapng {
        /// Whose file.
        probe: ProbeName,
        /// What pcap-file found.
        #[source]
        source: PcapError,
    },
    /// A packet names an interface no interface block of its section
    /// describes.
    #[error(
        "capture from {probe}: a packet names interface {interface}, which no interface block describes"
    )]
    UnknownInterface {
        /// Whose file.
        probe: ProbeName,
        /// The interface id in the packet block.
        interface: u32,
    },
    /// An interface's link type is one [`decode::decode`] cannot read.
    #[error(
        "capture from {probe}, interface {interface}: link type {link} is not decoded (Ethernet, raw IP and Linux cooked are)"
    )]
    UnsupportedLinkType {
        /// Whose file.
        probe: ProbeName,
        /// The interface's name.
        interface: String,
        /// The LINKTYPE_ number.
        link: u32,
    },
}

/// Result alias of this module.
pub type Result<T, E = CorrelateError> = std::result::Result<T, E>;

/// One packet as captured on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedPacket {
    /// When it was captured, nanoseconds since the Unix epoch on the
    /// coordinator's clock (see `probemesh_model::timeline::to_coordinator_ns`).
    pub at_ns: i64,
    /// The captured bytes (cut at the snap length).
    pub bytes: Vec<u8>,
    /// The packet's length on the wire, bytes (link header included).
    pub orig_len: u32,
}

/// Everything one capture interface saw, on the common clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The probe that captured.
    pub probe: ProbeName,
    /// The interface on that probe (`eth0`, `flannel.1`, ...).
    pub interface: String,
    /// The link header in front of every packet.
    pub link: LinkKind,
    /// The packets, in capture order.
    pub packets: Vec<CapturedPacket>,
}

/// Tunables of [`correlate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelateConfig {
    /// Longest gap between a packet's latest sighting and its next one at
    /// another observer (or after a rewrite), nanoseconds on the common
    /// clock. Well above any one-way delay plus clock error; far below the
    /// time for a 32-bit TCP sequence number to come round.
    pub match_window_ns: i64,
    /// How long after a packet's latest sighting an answer still counts,
    /// nanoseconds (delayed ACKs, slow servers).
    pub answer_window_ns: i64,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        Self {
            match_window_ns: DEFAULT_MATCH_WINDOW_NS,
            answer_window_ns: DEFAULT_ANSWER_WINDOW_NS,
        }
    }
}

/// A TCP connection as its opening SYN named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpConnection {
    /// The SYN's sender, as first seen (before any SNAT). When the
    /// handshake was not captured: the sender of the connection's first
    /// captured segment.
    pub client: SocketAddrV4,
    /// The SYN's destination, as first seen (before any DNAT: the NodePort
    /// or ClusterIP).
    pub server: SocketAddrV4,
    /// The client's initial sequence number, when the SYN was captured.
    pub isn: Option<TcpSeq>,
}

/// What identifies one test packet across observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKey {
    /// An ICMP echo request.
    IcmpEcho {
        /// Identifier.
        id: EchoId,
        /// Sequence number.
        seq: EchoSeq,
    },
    /// A TCP segment that occupies sequence space (SYN, FIN or data) of a
    /// connection; pure ACKs and RSTs are answers, not test packets.
    Tcp {
        /// The connection.
        connection: TcpConnection,
        /// Sequence number.
        seq: TcpSeq,
        /// Payload bytes.
        payload_len: u32,
        /// Control flags.
        flags: TcpFlags,
    },
    /// A UDP datagram (ports as first seen).
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// IP ID.
        ip_id: IpId,
        /// UDP length field, bytes.
        length: u16,
    },
}

/// How a packet had been rewritten when an observer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Its destination was rewritten since the previous sighting (NodePort,
    /// ClusterIP, hostPort).
    Dnat {
        /// Destination at the previous sighting.
        from: SocketAddrV4,
        /// Destination at this one.
        to: SocketAddrV4,
    },
    /// Its source was rewritten since the previous sighting (masquerade).
    Snat {
        /// Source at the previous sighting.
        from: SocketAddrV4,
        /// Source at this one.
        to: SocketAddrV4,
    },
    /// It travels inside a tunnel at this sighting (one per layer,
    /// outermost first).
    Encapsulated {
        /// VXLAN (with its VNI) or IPIP.
        kind: TunnelKind,
        /// Outer source address.
        outer_src: Ipv4Addr,
        /// Outer destination address.
        outer_dst: Ipv4Addr,
    },
}

/// One observer's copy of a test packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The probe that saw it.
    pub probe: ProbeName,
    /// Its interface.
    pub interface: String,
    /// When, nanoseconds since the epoch on the coordinator's clock.
    pub at_ns: i64,
    /// Nanoseconds since the packet's first sighting (one-way delay from
    /// the first observer; accurate within the probes' clock error bounds).
    pub one_way_from_first_ns: i64,
    /// Outermost source and destination addresses, when encapsulated.
    pub outer: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The innermost flow as this observer saw it.
    pub inner: Flow,
    /// The inner packet's TTL here.
    pub ttl: Ttl,
    /// Length on the wire here, bytes (link and tunnel headers included).
    pub orig_len: u32,
    /// Rewrites since the previous sighting, and the tunnel it is in.
    pub transformed: Vec<Transform>,
}

/// What kind of answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// An ICMP echo reply with the request's id and sequence number.
    EchoReply,
    /// A TCP segment acknowledging the whole segment (a SYN-ACK for a SYN).
    Ack,
    /// A TCP reset from the other end.
    Reset,
    /// A UDP datagram back along the reversed flow.
    UdpReply,
}

/// The first answer seen to a test packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Where it was seen.
    pub probe: ProbeName,
    /// Its interface.
    pub interface: String,
    /// When, nanoseconds on the coordinator's clock.
    pub at_ns: i64,
    /// What it was.
    pub kind: AnswerKind,
}

/// An ICMP error quoting a test packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpErrorSighting {
    /// Where the error was seen.
    pub probe: ProbeName,
    /// Its interface.
    pub interface: String,
    /// When, nanoseconds on the coordinator's clock.
    pub at_ns: i64,
    /// Who sent the error (the router or host that refused the packet).
    pub from: Ipv4Addr,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Next-hop MTU, for fragmentation needed.
    pub next_hop_mtu: Option<NextHopMtu>,
}

/// One test packet's fate across all observers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketFate {
    /// What identifies it.
    pub key: PacketKey,
    /// Every copy seen, in common-clock order (retransmitted copies at an
    /// observer that already saw the packet are counted, not listed).
    pub sightings: Vec<Sighting>,
    /// The first answer, if one was seen at an observer that saw the packet.
    pub answer: Option<Answer>,
    /// TCP only: how many times the most-repeating observer saw the
    /// segment again (same sequence number, length and flow).
    pub retransmissions: u32,
    /// ICMP errors quoting the packet.
    pub icmp_errors: Vec<IcmpErrorSighting>,
}

impl PacketFate {
    /// Whether an answer was seen.
    pub fn answered(&self) -> bool {
        self.answer.is_some()
    }
}

/// Packets of one observer that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecoded {
    /// The probe.
    pub probe: ProbeName,
    /// Its interface.
    pub interface: String,
    /// How many packets.
    pub packets: u64,
    /// Why the first of them failed.
    pub first_error: DecodeError,
}

/// Everything [`correlate`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correlation {
    /// One fate per test packet, ordered by first sighting.
    pub fates: Vec<PacketFate>,
    /// Observers with packets that are not IPv4 or too short to read.
    pub undecoded: Vec<Undecoded>,
    /// Every interface whose capture was read, packets or none: where a
    /// packet was not seen, it was not there.
    pub observed: Vec<(ProbeName, String)>,
}

/// One place a packet passed, for [`path_of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The probe.
    pub probe: ProbeName,
    /// Its interface.
    pub interface: String,
    /// When the packet was first seen there, nanoseconds on the
    /// coordinator's clock.
    pub at_ns: i64,
}

/// Tunnel traffic one observer saw between one pair of outer addresses,
/// for [`encapsulation_sources`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncapsulationSource {
    /// The probe.
    pub probe: ProbeName,
    /// Its interface.
    pub interface: String,
    /// VXLAN (with VNI) or IPIP.
    pub kind: TunnelKind,
    /// Outer source address.
    pub outer_src: Ipv4Addr,
    /// Outer destination address.
    pub outer_dst: Ipv4Addr,
    /// Packets seen.
    pub packets: u64,
}
