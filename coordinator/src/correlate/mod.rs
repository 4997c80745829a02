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
//! Pure code over bytes: no socket, no clock, no file system. What counts
//! as "the same packet" is written down on [`MatchKey`]'s variants, with
//! why each rule survives NAT.

#[cfg(test)]
mod recorded;
pub mod summary;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

use pcap_file::PcapError;
use probemesh_model::timeline;
use probemesh_packet::DecodeError;
use probemesh_packet::decode::{
    self, DecodedPacket, Flow, IcmpMessage, IpPacket, QuotedTransport, TcpSegment, Transport,
    TunnelKind,
};
use probemesh_packet::frame::{LinkKind, TcpFlags, TcpSeq};
use probemesh_packet::icmp::{EchoId, EchoSeq, NextHopMtu};
use probemesh_packet::ipv4::{IpId, Ttl};
use probemesh_packet::pcapng;
use probemesh_proto::identity::ProbeName;

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
    /// coordinator's clock (see [`timeline::to_coordinator_ns`]).
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

/// Reads one observer's pcapng file: one [`Observation`] per interface
/// block, its timestamps (in the block's `if_tsresol`/`if_tsoffset` units)
/// put on the coordinator's clock with the probe's offset and error bound
/// (nanoseconds) by [`timeline::to_coordinator_ns`]. Interface names
/// `PROBE/IFACE` are shortened to `IFACE`; unnamed interfaces are `ifN`.
pub fn from_pcapng(
    probe: &ProbeName,
    offset_ns: i64,
    error_ns: i64,
    bytes: &[u8],
) -> Result<Vec<Observation>> {
    let failed = |error| match error {
        pcapng::ReadError::Parse(source) => CorrelateError::Pcapng {
            probe: probe.clone(),
            source,
        },
        pcapng::ReadError::UnknownInterface { interface } => CorrelateError::UnknownInterface {
            probe: probe.clone(),
            interface,
        },
    };
    let mut observations: Vec<Observation> = Vec::new();
    for record in pcapng::Reader::new(bytes).map_err(failed)? {
        match record.map_err(failed)? {
            pcapng::Record::Interface(i) => {
                let interface = i.name().map_or_else(
                    || format!("if{}", i.id_in_section),
                    |n| short_interface(probe, n).to_owned(),
                );
                let link = LinkKind::from_datalink(i.link()).ok_or_else(|| {
                    CorrelateError::UnsupportedLinkType {
                        probe: probe.clone(),
                        interface: interface.clone(),
                        link: u32::from(i.link()),
                    }
                })?;
                observations.push(Observation {
                    probe: probe.clone(),
                    interface,
                    link,
                    packets: Vec::new(),
                });
            }
            pcapng::Record::Packet(p) => {
                let probe_ns = i64::try_from(p.timestamp_ns).unwrap_or(i64::MAX);
                if let Some(observation) = observations.get_mut(p.interface) {
                    observation.packets.push(CapturedPacket {
                        at_ns: timeline::to_coordinator_ns(probe_ns, offset_ns, error_ns),
                        orig_len: p.original_len(),
                        bytes: p.block.data.into_owned(),
                    });
                }
            }
        }
    }
    Ok(observations)
}

/// `eth0` from `node-1/eth0`.
fn short_interface<'a>(probe: &ProbeName, interface: &'a str) -> &'a str {
    interface
        .strip_prefix(probe.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(interface)
}

// ---------------------------------------------------------------- output

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

// ------------------------------------------------------------- summaries

/// The observers a packet passed, each once (its first sighting there), in
/// common-clock order.
pub fn path_of(fate: &PacketFate) -> Vec<Hop> {
    let mut hops: Vec<Hop> = Vec::new();
    for s in &fate.sightings {
        if !hops
            .iter()
            .any(|h| h.probe == s.probe && h.interface == s.interface)
        {
            hops.push(Hop {
                probe: s.probe.clone(),
                interface: s.interface.clone(),
                at_ns: s.at_ns,
            });
        }
    }
    hops.sort_by_key(|h| h.at_ns);
    hops
}

/// Where an unanswered packet was last seen: the packet was lost after
/// this observer (or the answer was lost on its way back). `None` when it
/// was answered or never seen.
pub fn lost_after(fate: &PacketFate) -> Option<(&ProbeName, &str)> {
    if fate.answered() {
        return None;
    }
    fate.sightings
        .iter()
        .max_by_key(|s| s.at_ns)
        .map(|s| (&s.probe, s.interface.as_str()))
}

/// Per observer, the outer address pairs of its tunnel packets (outermost
/// tunnel), with counts: "VXLAN packets from node-3 leave with outer source
/// X". Ordered by observer as given, then by addresses.
pub fn encapsulation_sources(observations: &[Observation]) -> Vec<EncapsulationSource> {
    let mut out = Vec::new();
    for o in observations {
        let mut counts: BTreeMap<(Ipv4Addr, Ipv4Addr, TunnelKind), u64> = BTreeMap::new();
        for p in &o.packets {
            if let Ok(d) = decode::decode(o.link, &p.bytes)
                && let Some(t) = d.tunnels.first()
            {
                *counts
                    .entry((t.outer.src, t.outer.dst, t.kind))
                    .or_default() += 1;
            }
        }
        out.extend(
            counts.into_iter().map(
                |((outer_src, outer_dst, kind), packets)| EncapsulationSource {
                    probe: o.probe.clone(),
                    interface: o.interface.clone(),
                    kind,
                    outer_src,
                    outer_dst,
                    packets,
                },
            ),
        );
    }
    out
}

// ---------------------------------------------------------- correlation

/// What must be equal for two captured copies to be the same packet.
/// Addresses and ports are deliberately absent: NAT rewrites them (with
/// `--random-fully` masquerade and NodePort DNAT together, every one of
/// them), tunnels hide them. Besides equal keys, [`correlate`] requires the
/// copies to be within [`CorrelateConfig::match_window_ns`] of each other,
/// and never pairs copies whose flows point opposite ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MatchKey {
    /// ICMP echo request: identifier and sequence number. Linux NAT keeps
    /// both (the identifier plays the port's part in conntrack and is only
    /// remapped on a clash, and there are no NodePorts for ICMP), and a
    /// tunnel carries them untouched.
    Echo(EchoId, EchoSeq),
    /// TCP segment: sequence number, payload length and the SYN/ACK/FIN
    /// flags. Linux NAT rewrites addresses and ports but never sequence
    /// numbers (no SYN proxy, no sequence adjustment outside FTP-style
    /// helpers), and initial sequence numbers are random 32-bit values, so
    /// within a window two connections collide with negligible chance.
    /// The payload length comes from the IP header, so the snap length
    /// does not change it.
    Tcp(TcpSeq, u32, u8),
    /// UDP datagram: IP ID and UDP length. NAT and decapsulation keep the
    /// inner IP ID, and the sender varies it between datagrams (except for
    /// DF datagrams from unconnected sockets, whose ID Linux leaves 0: then
    /// the first 8 payload bytes, when both copies have them, must agree
    /// too, so a test sender should put a tag there).
    Udp(IpId, u16),
}

impl MatchKey {
    fn of(p: &IpPacket) -> Option<Self> {
        match p.transport {
            Transport::Icmp(IcmpMessage::EchoRequest { id, seq }) => Some(Self::Echo(id, seq)),
            Transport::Tcp(t)
                if !t.flags.has(TcpFlags::RST)
                    && (t.payload_len > 0
                        || t.flags.has(TcpFlags::SYN)
                        || t.flags.has(TcpFlags::FIN)) =>
            {
                let flags = t.flags.0 & (TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN);
                Some(Self::Tcp(t.seq, t.payload_len, flags))
            }
            Transport::Udp(u) => Some(Self::Udp(p.ip.id, u.length)),
            _ => None,
        }
    }
}

/// One decoded packet of one observer.
#[derive(Debug)]
struct Seen {
    observer: usize,
    at_ns: i64,
    orig_len: u32,
    packet: DecodedPacket,
}

impl Seen {
    fn flow(&self) -> Flow {
        self.packet.flow()
    }

    fn udp_tag(&self) -> Option<[u8; 8]> {
        match self.packet.inner.transport {
            Transport::Udp(u) => u.tag,
            _ => None,
        }
    }
}

/// A fate being assembled: the copies that are the same packet.
#[derive(Debug)]
struct Group {
    key: MatchKey,
    udp_tag: Option<[u8; 8]>,
    /// Indexes into the `Seen` list, in time order.
    members: Vec<usize>,
    /// Copies per (observer, flow); above 1 means retransmitted.
    copies: HashMap<(usize, Flow), u32>,
    /// Latest copy, nanoseconds.
    last_at: i64,
}

/// Follows every test packet across `observations` (see [`MatchKey`] for
/// what makes two copies the same packet):
///
/// - a copy at an observer that already saw the same packet with the same
///   flow is a TCP retransmission (counted, not a new sighting; ICMP and
///   UDP do not retransmit identical copies, so there it starts a new
///   packet);
/// - a copy with an equal key within the match window of the latest copy
///   is a new sighting, unless its flow runs opposite to one already seen
///   (NAT rewrites source and destination separately; it never swaps
///   them); when several packets qualify, the oldest is taken, so streams
///   of look-alike packets pair first-in first-out;
/// - a UDP datagram along the reversed flow of one its observer saw
///   earlier is a reply, not a test packet (in each conversation the side
///   that spoke first is the tester);
/// - an answer is a packet along the reversed flow at an observer that saw
///   the packet, after it and within the answer window: an echo reply with
///   its id and sequence number, a TCP ACK covering the segment or an RST,
///   or any UDP datagram.
pub fn correlate(observations: &[Observation], config: &CorrelateConfig) -> Correlation {
    let (seen, undecoded) = decode_all(observations);
    let groups = group(&seen, config);

    // Every packet by (observer, flow), in time order, to find answers.
    let mut by_flow: HashMap<(usize, Flow), Vec<usize>> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        by_flow.entry((s.observer, s.flow())).or_default().push(i);
    }

    let errors = icmp_errors_by_group(&groups, &seen, config);
    let mut connections: HashMap<Flow, TcpConnection> = HashMap::new();
    let fates = groups
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let first = seen.get(*g.members.first()?)?;
            Some(PacketFate {
                key: packet_key(g, &seen, first, &mut connections),
                sightings: sightings(g, &seen, observations),
                answer: answer(g, &seen, &by_flow, observations, config),
                retransmissions: g.copies.values().max().map_or(0, |n| n.saturating_sub(1)),
                icmp_errors: errors
                    .get(&i)
                    .into_iter()
                    .flatten()
                    .filter_map(|&e| icmp_error_sighting(seen.get(e)?, observations))
                    .collect(),
            })
        })
        .collect();
    Correlation { fates, undecoded }
}

fn decode_all(observations: &[Observation]) -> (Vec<Seen>, Vec<Undecoded>) {
    let mut seen = Vec::new();
    let mut undecoded = Vec::new();
    for (observer, o) in observations.iter().enumerate() {
        let mut failed: Option<Undecoded> = None;
        for p in &o.packets {
            match decode::decode(o.link, &p.bytes) {
                Ok(packet) => seen.push(Seen {
                    observer,
                    at_ns: p.at_ns,
                    orig_len: p.orig_len,
                    packet,
                }),
                Err(e) => {
                    failed
                        .get_or_insert_with(|| Undecoded {
                            probe: o.probe.clone(),
                            interface: o.interface.clone(),
                            packets: 0,
                            first_error: e,
                        })
                        .packets += 1;
                }
            }
        }
        undecoded.extend(failed);
    }
    // Stable: equal instants keep observer and capture order.
    seen.sort_by_key(|s| s.at_ns);
    (seen, undecoded)
}

fn group(seen: &[Seen], config: &CorrelateConfig) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut by_key: HashMap<MatchKey, Vec<usize>> = HashMap::new();
    // Per observer and UDP conversation (either direction), the flow
    // that spoke first.
    let mut udp_first: HashMap<(usize, Flow), Flow> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        let Some(key) = MatchKey::of(&s.packet.inner) else {
            continue;
        };
        let flow = s.flow();
        if let MatchKey::Udp(..) = key {
            let conversation = flow.min(flow.reversed());
            if *udp_first.entry((s.observer, conversation)).or_insert(flow) != flow {
                continue;
            }
        }
        let tag = s.udp_tag();
        let candidates = by_key.entry(key).or_default();
        if !matches!(key, MatchKey::Tcp(..)) {
            // Only TCP needs old groups (retransmissions after a long RTO).
            candidates.retain(|&g| {
                groups
                    .get(g)
                    .is_some_and(|g| s.at_ns.saturating_sub(g.last_at) <= config.match_window_ns)
            });
        }
        let retransmitted = matches!(key, MatchKey::Tcp(..))
            .then(|| {
                candidates.iter().rev().copied().find(|&g| {
                    groups
                        .get(g)
                        .is_some_and(|g| g.copies.contains_key(&(s.observer, flow)))
                })
            })
            .flatten();
        let joined = retransmitted.or_else(|| {
            candidates.iter().copied().find(|&g| {
                groups.get(g).is_some_and(|g| {
                    s.at_ns.saturating_sub(g.last_at) <= config.match_window_ns
                        && !g.copies.contains_key(&(s.observer, flow))
                        && g.udp_tag.zip(tag).is_none_or(|(a, b)| a == b)
                        && !g
                            .copies
                            .keys()
                            .any(|(_, f)| f.src == flow.dst || f.dst == flow.src)
                })
            })
        });
        match joined.and_then(|g| groups.get_mut(g)) {
            Some(g) => {
                let copies = g.copies.entry((s.observer, flow)).or_default();
                if *copies == 0 {
                    g.members.push(i);
                }
                *copies += 1;
                g.last_at = g.last_at.max(s.at_ns);
                g.udp_tag = g.udp_tag.or(tag);
            }
            None => {
                candidates.push(groups.len());
                groups.push(Group {
                    key,
                    udp_tag: tag,
                    members: vec![i],
                    copies: HashMap::from([((s.observer, flow), 1)]),
                    last_at: s.at_ns,
                });
            }
        }
    }
    groups
}

/// The packet's key; TCP segments get their connection from the SYN whose
/// flows (at any observer, either direction) they share. Groups come in
/// order of first sighting, so a SYN is keyed before the rest of its
/// connection.
fn packet_key(
    g: &Group,
    seen: &[Seen],
    first: &Seen,
    connections: &mut HashMap<Flow, TcpConnection>,
) -> PacketKey {
    let flow = first.flow();
    match (g.key, first.packet.inner.transport) {
        (MatchKey::Tcp(..), Transport::Tcp(t)) => {
            let is_syn = t.flags.has(TcpFlags::SYN) && !t.flags.has(TcpFlags::ACK);
            let known = g
                .members
                .iter()
                .filter_map(|&m| seen.get(m))
                .find_map(|m| connections.get(&m.flow()).copied());
            let connection = match known {
                Some(c) if !is_syn => c,
                _ => TcpConnection {
                    client: flow.src,
                    server: flow.dst,
                    isn: is_syn.then_some(t.seq),
                },
            };
            for m in g.members.iter().filter_map(|&m| seen.get(m)) {
                connections.insert(m.flow(), connection);
                connections.insert(m.flow().reversed(), connection);
            }
            PacketKey::Tcp {
                connection,
                seq: t.seq,
                payload_len: t.payload_len,
                flags: t.flags,
            }
        }
        (_, Transport::Udp(u)) => PacketKey::Udp {
            src_port: u.src_port,
            dst_port: u.dst_port,
            ip_id: first.packet.inner.ip.id,
            length: u.length,
        },
        (MatchKey::Echo(id, seq), _) => PacketKey::IcmpEcho { id, seq },
        // MatchKey::of only builds Tcp keys from TCP and Udp keys from UDP.
        (MatchKey::Tcp(seq, payload_len, flags), _) => PacketKey::Tcp {
            connection: TcpConnection {
                client: flow.src,
                server: flow.dst,
                isn: None,
            },
            seq,
            payload_len,
            flags: TcpFlags(flags),
        },
        (MatchKey::Udp(ip_id, length), _) => PacketKey::Udp {
            src_port: flow.src.port(),
            dst_port: flow.dst.port(),
            ip_id,
            length,
        },
    }
}

fn sightings(g: &Group, seen: &[Seen], observations: &[Observation]) -> Vec<Sighting> {
    let members: Vec<&Seen> = g.members.iter().filter_map(|&m| seen.get(m)).collect();
    let first_at = members.first().map_or(0, |m| m.at_ns);
    let mut previous: Option<Flow> = None;
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let Some(o) = observations.get(m.observer) else {
            continue;
        };
        let flow = m.flow();
        let mut transformed = Vec::new();
        if let Some(prev) = previous {
            if prev.dst != flow.dst {
                transformed.push(Transform::Dnat {
                    from: prev.dst,
                    to: flow.dst,
                });
            }
            if prev.src != flow.src {
                transformed.push(Transform::Snat {
                    from: prev.src,
                    to: flow.src,
                });
            }
        }
        transformed.extend(m.packet.tunnels.iter().map(|t| Transform::Encapsulated {
            kind: t.kind,
            outer_src: t.outer.src,
            outer_dst: t.outer.dst,
        }));
        previous = Some(flow);
        out.push(Sighting {
            probe: o.probe.clone(),
            interface: o.interface.clone(),
            at_ns: m.at_ns,
            one_way_from_first_ns: m.at_ns.saturating_sub(first_at),
            outer: m.packet.tunnels.first().map(|t| (t.outer.src, t.outer.dst)),
            inner: flow,
            ttl: m.packet.inner.ip.ttl,
            orig_len: m.orig_len,
            transformed,
        });
    }
    out
}

/// Whether `reply` answers `sent` (both as one observer saw them, `reply`
/// along the reversed flow).
fn answers(sent: &Transport, reply: &Transport) -> Option<AnswerKind> {
    match (sent, reply) {
        (
            Transport::Icmp(IcmpMessage::EchoRequest { id, seq }),
            Transport::Icmp(IcmpMessage::EchoReply { id: rid, seq: rseq }),
        ) => (id == rid && seq == rseq).then_some(AnswerKind::EchoReply),
        (Transport::Tcp(s), Transport::Tcp(r)) => answers_tcp(s, r),
        (Transport::Udp(_), Transport::Udp(_)) => Some(AnswerKind::UdpReply),
        _ => None,
    }
}

fn answers_tcp(sent: &TcpSegment, reply: &TcpSegment) -> Option<AnswerKind> {
    if reply.flags.has(TcpFlags::RST) {
        Some(AnswerKind::Reset)
    } else {
        reply.acknowledges(sent).then_some(AnswerKind::Ack)
    }
}

fn answer(
    g: &Group,
    seen: &[Seen],
    by_flow: &HashMap<(usize, Flow), Vec<usize>>,
    observations: &[Observation],
    config: &CorrelateConfig,
) -> Option<Answer> {
    let deadline = g.last_at.saturating_add(config.answer_window_ns);
    let mut best: Option<(&Seen, AnswerKind)> = None;
    for sent in g.members.iter().filter_map(|&m| seen.get(m)) {
        let Some(replies) = by_flow.get(&(sent.observer, sent.flow().reversed())) else {
            continue;
        };
        let start = replies.partition_point(|&r| seen.get(r).is_some_and(|r| r.at_ns < sent.at_ns));
        let found = replies
            .iter()
            .skip(start)
            .filter_map(|&r| seen.get(r))
            .take_while(|r| r.at_ns <= deadline)
            .find_map(|r| {
                answers(&sent.packet.inner.transport, &r.packet.inner.transport).map(|k| (r, k))
            });
        if let Some((r, kind)) = found
            && best.is_none_or(|(b, _)| r.at_ns < b.at_ns)
        {
            best = Some((r, kind));
        }
    }
    let (r, kind) = best?;
    let o = observations.get(r.observer)?;
    Some(Answer {
        probe: o.probe.clone(),
        interface: o.interface.clone(),
        at_ns: r.at_ns,
        kind,
    })
}

/// Which group each ICMP error quotes (indexes into `seen`): the newest
/// group seen with the quoted flow (routers quote what they received;
/// conntrack rewrites the quote back on the way to the sender, so the quote
/// matches some sighting on one side of the NAT or the other) whose stable
/// fields (TCP sequence number, echo id and sequence number, IP ID) agree,
/// and that was first seen no later than a match window after the error.
fn icmp_errors_by_group(
    groups: &[Group],
    seen: &[Seen],
    config: &CorrelateConfig,
) -> HashMap<usize, Vec<usize>> {
    let mut by_flow: HashMap<Flow, Vec<usize>> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for (_, flow) in group.copies.keys() {
            let here = by_flow.entry(*flow).or_default();
            if here.last() != Some(&g) {
                here.push(g);
            }
        }
    }
    let mut out: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, s) in seen.iter().enumerate() {
        let Transport::Icmp(IcmpMessage::Error(e)) = s.packet.inner.transport else {
            continue;
        };
        let Some(q) = e.quoted else { continue };
        let Some(candidates) = by_flow.get(&q.flow()) else {
            continue;
        };
        let quoted_matches = |key: MatchKey| match (key, q.transport) {
            (MatchKey::Tcp(seq, ..), QuotedTransport::Tcp { seq: qseq, .. }) => seq == qseq,
            (MatchKey::Echo(id, seq), QuotedTransport::Echo { id: qid, seq: qseq }) => {
                id == qid && seq == qseq
            }
            (MatchKey::Udp(id, _), QuotedTransport::Udp { .. }) => id == q.ip.id,
            _ => false,
        };
        let target = candidates.iter().rev().copied().find(|&g| {
            groups.get(g).is_some_and(|g| {
                quoted_matches(g.key)
                    && g.members
                        .first()
                        .and_then(|&m| seen.get(m))
                        .is_some_and(|m| m.at_ns <= s.at_ns.saturating_add(config.match_window_ns))
            })
        });
        if let Some(g) = target {
            out.entry(g).or_default().push(i);
        }
    }
    out
}

fn icmp_error_sighting(s: &Seen, observations: &[Observation]) -> Option<IcmpErrorSighting> {
    let Transport::Icmp(IcmpMessage::Error(e)) = s.packet.inner.transport else {
        return None;
    };
    let o = observations.get(s.observer)?;
    Some(IcmpErrorSighting {
        probe: o.probe.clone(),
        interface: o.interface.clone(),
        at_ns: s.at_ns,
        from: s.packet.inner.ip.src,
        icmp_type: e.icmp_type,
        code: e.code,
        next_hop_mtu: e.next_hop_mtu,
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use pcap_file::DataLink;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use proptest::prelude::*;

    use super::*;
    use probemesh_packet::frame::Vni;
    use probemesh_packet::ipv4::IpProtocol;
    use probemesh_packet::testing::FrameBuilder;

    const SNAPLEN: usize = 128;
    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const SYN_ACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
    const PSH_ACK: u8 = TcpFlags::PSH | TcpFlags::ACK;

    fn name(s: &str) -> ProbeName {
        ProbeName::new(s).unwrap()
    }

    fn sock(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A packet as a headers-only capture keeps it.
    fn cap(at_ns: i64, frame: Vec<u8>) -> CapturedPacket {
        CapturedPacket {
            at_ns,
            orig_len: u32::try_from(frame.len()).unwrap(),
            bytes: frame[..frame.len().min(SNAPLEN)].to_vec(),
        }
    }

    fn obs(probe: &str, interface: &str, mut packets: Vec<CapturedPacket>) -> Observation {
        packets.sort_by_key(|p| p.at_ns);
        Observation {
            probe: name(probe),
            interface: interface.into(),
            link: LinkKind::Ethernet,
            packets,
        }
    }

    fn tcp(src: &str, dst: &str, seq: u32, ack: u32, flags: u8, len: u32) -> FrameBuilder {
        FrameBuilder::tcp(src, dst, seq, ack, flags, len)
    }

    fn find(c: &Correlation, pred: impl Fn(&PacketKey) -> bool) -> &PacketFate {
        let found: Vec<&PacketFate> = c.fates.iter().filter(|f| pred(&f.key)).collect();
        assert_eq!(found.len(), 1, "{:#?}", c.fates);
        found[0]
    }

    fn tcp_fate(c: &Correlation, seq: u32, flags: u8) -> &PacketFate {
        find(
            c,
            |k| matches!(k, PacketKey::Tcp { seq: s, flags: f, .. } if s.0 == seq && f.0 == flags),
        )
    }

    fn where_(s: &Sighting) -> String {
        format!("{}/{}", s.probe, s.interface)
    }

    fn where_a(a: &Answer) -> String {
        format!("{}/{}", a.probe, a.interface)
    }

    const CLIENT: &str = "198.18.0.100:40000";
    const NODEPORT: &str = "198.18.0.11:30080";
    const SNATTED: &str = "198.19.1.0:40000";
    const POD: &str = "198.19.2.10:8080";

    /// cloudvm-1 opens a connection to node-1's NodePort; node-1 DNATs it
    /// to a pod on node-2, masquerades it to its flannel.1 address and
    /// sends it through VXLAN.
    fn nodeport_capture() -> Vec<Observation> {
        let vxlan = |b: FrameBuilder| b.vxlan("198.18.0.11", "198.18.0.12", 8472, 1).ethernet();
        vec![
            // Listed out of path order on purpose.
            obs(
                "node-2",
                "flannel.1",
                vec![
                    cap(1_400, tcp(SNATTED, POD, 1000, 0, SYN, 0).ttl(62).ethernet()),
                    cap(1_600, tcp(POD, SNATTED, 5000, 1001, SYN_ACK, 0).ethernet()),
                ],
            ),
            obs(
                "cloudvm-1",
                "eth0",
                vec![
                    cap(1_000, tcp(CLIENT, NODEPORT, 1000, 0, SYN, 0).ethernet()),
                    cap(
                        5_000,
                        tcp(NODEPORT, CLIENT, 5000, 1001, SYN_ACK, 0).ethernet(),
                    ),
                    cap(5_100, tcp(CLIENT, NODEPORT, 1001, 5001, ACK, 0).ethernet()),
                    cap(
                        5_200,
                        tcp(CLIENT, NODEPORT, 1001, 5001, PSH_ACK, 100).ethernet(),
                    ),
                    cap(9_000, tcp(NODEPORT, CLIENT, 5001, 1101, ACK, 0).ethernet()),
                ],
            ),
            obs(
                "node-2",
                "eth0",
                vec![
                    cap(1_300, vxlan(tcp(SNATTED, POD, 1000, 0, SYN, 0).ttl(63))),
                    cap(5_400, vxlan(tcp(SNATTED, POD, 1001, 5001, PSH_ACK, 100))),
                ],
            ),
            obs(
                "node-1",
                "eth0",
                vec![cap(
                    1_100,
                    tcp(CLIENT, NODEPORT, 1000, 0, SYN, 0).ethernet(),
                )],
            ),
        ]
    }

    #[test]
    fn nodeport_syn_is_followed_through_dnat_snat_and_vxlan() {
        let c = correlate(&nodeport_capture(), &CorrelateConfig::default());
        assert!(c.undecoded.is_empty());
        let syn = tcp_fate(&c, 1000, SYN);
        let connection = TcpConnection {
            client: sock(CLIENT),
            server: sock(NODEPORT),
            isn: Some(TcpSeq(1000)),
        };
        assert!(
            matches!(syn.key, PacketKey::Tcp { connection: k, payload_len: 0, .. } if k == connection)
        );
        let places: Vec<String> = syn.sightings.iter().map(where_).collect();
        assert_eq!(
            places,
            [
                "cloudvm-1/eth0",
                "node-1/eth0",
                "node-2/eth0",
                "node-2/flannel.1"
            ]
        );
        let delays: Vec<i64> = syn
            .sightings
            .iter()
            .map(|s| s.one_way_from_first_ns)
            .collect();
        assert_eq!(delays, [0, 100, 300, 400]);
        assert!(syn.sightings[0].transformed.is_empty());
        assert!(syn.sightings[1].transformed.is_empty());
        assert_eq!(
            syn.sightings[2].transformed,
            [
                Transform::Dnat {
                    from: sock(NODEPORT),
                    to: sock(POD)
                },
                Transform::Snat {
                    from: sock(CLIENT),
                    to: sock(SNATTED)
                },
                Transform::Encapsulated {
                    kind: TunnelKind::Vxlan { vni: Vni(1) },
                    outer_src: ip("198.18.0.11"),
                    outer_dst: ip("198.18.0.12")
                },
            ]
        );
        assert_eq!(
            syn.sightings[2].outer,
            Some((ip("198.18.0.11"), ip("198.18.0.12")))
        );
        assert_eq!(syn.sightings[2].inner.src, sock(SNATTED));
        assert_eq!(syn.sightings[2].inner.protocol, IpProtocol::TCP);
        assert_eq!(syn.sightings[2].ttl, Ttl(63));
        // Decapsulated on flannel.1: no outer header, nothing rewritten.
        assert_eq!(syn.sightings[3].outer, None);
        assert!(syn.sightings[3].transformed.is_empty());
        assert_eq!(syn.retransmissions, 0);
        // The SYN-ACK on flannel.1 is the first answer.
        assert_eq!(
            syn.answer,
            Some(Answer {
                probe: name("node-2"),
                interface: "flannel.1".into(),
                at_ns: 1_600,
                kind: AnswerKind::Ack
            })
        );
        assert_eq!(lost_after(syn), None);
        let path: Vec<(String, i64)> = path_of(syn)
            .into_iter()
            .map(|h| (format!("{}/{}", h.probe, h.interface), h.at_ns))
            .collect();
        assert_eq!(path[0], ("cloudvm-1/eth0".to_owned(), 1_000));
        assert_eq!(path[3], ("node-2/flannel.1".to_owned(), 1_400));

        // The data segment and the SYN-ACK belong to the same connection.
        let data = tcp_fate(&c, 1001, PSH_ACK);
        assert!(
            matches!(data.key, PacketKey::Tcp { connection: k, payload_len: 100, .. } if k == connection)
        );
        assert_eq!(data.sightings.len(), 2);
        assert_eq!(data.answer.as_ref().map(|a| a.at_ns), Some(9_000));
        let syn_ack = tcp_fate(&c, 5000, SYN_ACK);
        assert!(matches!(syn_ack.key, PacketKey::Tcp { connection: k, .. } if k == connection));
        // Answered by the client's ACK.
        assert_eq!(
            syn_ack.answer.as_ref().map(|a| a.kind),
            Some(AnswerKind::Ack)
        );
        // The pure ACK is not a test packet.
        assert_eq!(c.fates.len(), 3, "{:#?}", c.fates);
    }

    #[test]
    fn an_unanswered_syn_is_lost_after_its_last_sighting() {
        let mut capture = nodeport_capture();
        // Without the pod's SYN-ACK, nothing answers the SYN.
        capture[0].packets.truncate(1);
        capture[1].packets.truncate(1);
        let c = correlate(&capture, &CorrelateConfig::default());
        let syn = tcp_fate(&c, 1000, SYN);
        assert!(!syn.answered());
        assert_eq!(lost_after(syn), Some((&name("node-2"), "flannel.1")));
    }

    #[test]
    fn dual_ip_vxlan_leaves_with_the_wrong_outer_source_and_is_not_answered() {
        const S: i64 = 1_000_000_000;
        let from_node3 = |at: i64| {
            cap(
                at,
                tcp("198.19.3.0:41000", POD, 7777, 0, SYN, 0)
                    .vxlan("198.18.0.23", "198.18.0.12", 8472, 1)
                    .ethernet(),
            )
        };
        let from_node1 = |at: i64| {
            cap(
                at,
                tcp(SNATTED, POD, 1000, 0, SYN, 0)
                    .vxlan("198.18.0.11", "198.18.0.12", 8472, 1)
                    .ethernet(),
            )
        };
        let capture = vec![
            obs(
                "node-3",
                "eth0",
                vec![
                    from_node3(1_000),
                    from_node3(S + 1_000),
                    from_node3(3 * S + 1_000),
                ],
            ),
            obs(
                "node-2",
                "eth0",
                vec![
                    from_node3(1_200),
                    from_node1(2_000),
                    from_node3(S + 1_200),
                    from_node3(3 * S + 1_200),
                ],
            ),
            obs(
                "node-2",
                "flannel.1",
                vec![
                    cap(2_100, tcp(SNATTED, POD, 1000, 0, SYN, 0).ethernet()),
                    cap(2_300, tcp(POD, SNATTED, 5000, 1001, SYN_ACK, 0).ethernet()),
                ],
            ),
        ];
        let sources = encapsulation_sources(&capture);
        let summary: Vec<(String, Ipv4Addr, u64)> = sources
            .iter()
            .map(|s| {
                (
                    format!("{}/{}", s.probe, s.interface),
                    s.outer_src,
                    s.packets,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("node-3/eth0".to_owned(), ip("198.18.0.23"), 3),
                ("node-2/eth0".to_owned(), ip("198.18.0.11"), 1),
                ("node-2/eth0".to_owned(), ip("198.18.0.23"), 3),
            ]
        );
        assert!(sources.iter().all(
            |s| s.kind == TunnelKind::Vxlan { vni: Vni(1) } && s.outer_dst == ip("198.18.0.12")
        ));

        let c = correlate(&capture, &CorrelateConfig::default());
        let lost = tcp_fate(&c, 7777, SYN);
        let places: Vec<String> = lost.sightings.iter().map(where_).collect();
        assert_eq!(places, ["node-3/eth0", "node-2/eth0"]);
        assert_eq!(
            lost.sightings[1].outer,
            Some((ip("198.18.0.23"), ip("198.18.0.12")))
        );
        assert_eq!(lost.retransmissions, 2);
        assert!(!lost.answered());
        assert_eq!(lost_after(lost), Some((&name("node-2"), "eth0")));
        // node-1's tunnel works: its SYN is answered on flannel.1.
        assert!(tcp_fate(&c, 1000, SYN).answered());
    }

    #[test]
    fn mtu_black_hole_large_segment_retransmitted_never_arrives() {
        const SENDER: &str = "10.0.1.5:43210";
        const RECEIVER: &str = "10.0.2.7:9000";
        let both =
            |at: i64, b: FrameBuilder| (cap(at, b.clone().ethernet()), cap(at + 50, b.ethernet()));
        let mut sender = Vec::new();
        let mut receiver = Vec::new();
        let mut add = |(s, r): (CapturedPacket, CapturedPacket), reverse: bool| {
            if reverse {
                // Receiver's packets are captured there first.
                sender.push(CapturedPacket {
                    at_ns: s.at_ns + 100,
                    ..s
                });
                receiver.push(CapturedPacket {
                    at_ns: r.at_ns - 100,
                    ..r
                });
            } else {
                sender.push(s);
                receiver.push(r);
            }
        };
        add(both(1_000, tcp(SENDER, RECEIVER, 100, 0, SYN, 0)), false);
        add(
            both(2_000, tcp(RECEIVER, SENDER, 900, 101, SYN_ACK, 0)),
            true,
        );
        add(
            both(3_000, tcp(SENDER, RECEIVER, 101, 901, PSH_ACK, 200)),
            false,
        );
        add(both(4_000, tcp(RECEIVER, SENDER, 901, 301, ACK, 0)), true);
        let mut sender_packets = sender;
        let receiver_packets = receiver;
        // The large segment: 1500 bytes of IP (1514 on the wire), cut to
        // 128 by the snap length; sent, then retransmitted three times.
        let big = tcp(SENDER, RECEIVER, 301, 901, PSH_ACK, 1460);
        for at in [10_000, 210_000_000, 610_000_000, 1_410_000_000] {
            sender_packets.push(cap(at, big.clone().ethernet()));
        }
        let capture = vec![
            obs("cloudvm-1", "eth0", sender_packets),
            obs("node-2", "eth0", receiver_packets),
        ];
        let c = correlate(&capture, &CorrelateConfig::default());
        let lost = tcp_fate(&c, 301, PSH_ACK);
        assert_eq!(lost.retransmissions, 3);
        assert_eq!(lost.sightings.len(), 1);
        assert_eq!(lost.sightings[0].orig_len, 1514);
        assert!(matches!(
            lost.key,
            PacketKey::Tcp {
                payload_len: 1460,
                ..
            }
        ));
        assert!(!lost.answered());
        assert_eq!(lost_after(lost), Some((&name("cloudvm-1"), "eth0")));
        assert!(lost.icmp_errors.is_empty());

        let small = tcp_fate(&c, 101, PSH_ACK);
        assert_eq!(small.retransmissions, 0);
        let places: Vec<String> = small.sightings.iter().map(where_).collect();
        assert_eq!(places, ["cloudvm-1/eth0", "node-2/eth0"]);
        assert_eq!(small.sightings[1].one_way_from_first_ns, 50);
        // The receiver's ACK, seen there before it reaches the sender.
        assert_eq!(
            small.answer.as_ref().map(|a| (where_a(a), a.at_ns)),
            Some(("node-2/eth0".to_owned(), 3_950))
        );
    }

    #[test]
    fn frag_needed_errors_are_attached_to_the_segment_they_quote() {
        const SENDER: &str = "10.0.1.5:43210";
        let big = tcp(SENDER, "10.0.2.7:9000", 301, 901, PSH_ACK, 1460).ip_id(42);
        let error = FrameBuilder::icmp_error("10.0.1.1", "10.0.1.5", 3, 4, 1450, &big.clone().ip());
        let capture = vec![obs(
            "cloudvm-1",
            "eth0",
            vec![cap(1_000, big.ethernet()), cap(1_500, error.ethernet())],
        )];
        let c = correlate(&capture, &CorrelateConfig::default());
        assert_eq!(c.fates.len(), 1);
        assert_eq!(
            c.fates[0].icmp_errors,
            [IcmpErrorSighting {
                probe: name("cloudvm-1"),
                interface: "eth0".into(),
                at_ns: 1_500,
                from: ip("10.0.1.1"),
                icmp_type: 3,
                code: 4,
                next_hop_mtu: Some(NextHopMtu(1450)),
            }]
        );
        // An error is evidence, not an answer.
        assert!(!c.fates[0].answered());
    }

    #[test]
    fn icmp_echo_requests_are_matched_by_id_and_seq() {
        const A: &str = "10.0.0.1";
        const B: &str = "10.0.0.2";
        let echo =
            |src, dst, request, seq| FrameBuilder::icmp_echo(src, dst, request, 7, seq).ethernet();
        let capture = vec![
            obs(
                "a",
                "eth0",
                vec![
                    cap(1_000, echo(A, B, true, 1)),
                    cap(1_300, echo(B, A, false, 1)),
                    cap(2_000, echo(A, B, true, 2)),
                    cap(2_300, echo(B, A, false, 2)),
                    cap(3_000, echo(A, B, true, 3)),
                    // B pings A with the same id and seq at the same time:
                    // a different packet (its flow runs the other way).
                    cap(1_150, echo(B, A, true, 1)),
                ],
            ),
            obs(
                "b",
                "eth0",
                vec![
                    cap(1_100, echo(A, B, true, 1)),
                    cap(1_200, echo(B, A, false, 1)),
                    cap(2_100, echo(A, B, true, 2)),
                    cap(2_200, echo(B, A, false, 2)),
                    cap(1_050, echo(B, A, true, 1)),
                ],
            ),
        ];
        let c = correlate(&capture, &CorrelateConfig::default());
        let from_a = |seq: u16| {
            c.fates
                .iter()
                .find(|f| {
                    f.key
                        == PacketKey::IcmpEcho {
                            id: EchoId(7),
                            seq: EchoSeq(seq),
                        }
                        && f.sightings[0].inner.src.ip() == &ip(A)
                })
                .unwrap()
        };
        let first = from_a(1);
        let places: Vec<String> = first.sightings.iter().map(where_).collect();
        assert_eq!(places, ["a/eth0", "b/eth0"]);
        assert_eq!(first.sightings[1].one_way_from_first_ns, 100);
        assert_eq!(
            first.answer.as_ref().map(|a| (a.at_ns, a.kind)),
            Some((1_200, AnswerKind::EchoReply))
        );
        assert!(from_a(2).answered());
        let third = from_a(3);
        assert!(!third.answered());
        assert_eq!(lost_after(third), Some((&name("a"), "eth0")));
        // B's own ping is its own fate, unanswered.
        assert_eq!(c.fates.len(), 4);
        let from_b = c
            .fates
            .iter()
            .find(|f| f.sightings[0].inner.src.ip() == &ip(B))
            .unwrap();
        let places: Vec<String> = from_b.sightings.iter().map(where_).collect();
        assert_eq!(places, ["b/eth0", "a/eth0"]);
        assert!(!from_b.answered());
    }

    #[test]
    fn udp_is_matched_by_ip_id_and_length_through_dnat() {
        let query = |dst: &str, id: u16, tag: u8| {
            let mut payload = [0u8; 40];
            payload[..8].copy_from_slice(&[tag; 8]);
            FrameBuilder::udp_with("198.18.0.100:5353", dst, &payload)
                .ip_id(id)
                .ethernet()
        };
        let capture = vec![
            obs(
                "cloudvm-1",
                "eth0",
                vec![
                    cap(1_000, query("198.18.0.11:30053", 9, 1)),
                    cap(
                        1_500,
                        FrameBuilder::udp("198.18.0.11:30053", "198.18.0.100:5353", 60).ethernet(),
                    ),
                    // IP ID 0 (DF, unconnected socket): told apart by tag.
                    cap(2_000, query("198.18.0.11:30053", 0, 2)),
                    cap(2_010, query("198.18.0.11:30053", 0, 3)),
                ],
            ),
            obs(
                "node-1",
                "cni0",
                vec![
                    cap(1_200, query("10.244.1.3:53", 9, 1)),
                    cap(2_230, query("10.244.1.3:53", 0, 3)),
                    cap(2_200, query("10.244.1.3:53", 0, 2)),
                ],
            ),
        ];
        let c = correlate(&capture, &CorrelateConfig::default());
        // The reply is an answer, not a test packet.
        assert_eq!(c.fates.len(), 3, "{:#?}", c.fates);
        let first = &c.fates[0];
        assert_eq!(
            first.key,
            PacketKey::Udp {
                src_port: 5353,
                dst_port: 30053,
                ip_id: IpId(9),
                length: 48
            }
        );
        assert_eq!(
            first.sightings[1].transformed,
            [Transform::Dnat {
                from: sock("198.18.0.11:30053"),
                to: sock("10.244.1.3:53")
            }]
        );
        assert_eq!(
            first.answer.as_ref().map(|a| a.kind),
            Some(AnswerKind::UdpReply)
        );
        let delays: Vec<i64> = c.fates[1..]
            .iter()
            .map(|f| f.sightings[1].one_way_from_first_ns)
            .collect();
        assert_eq!(delays, [200, 220]);
    }

    #[test]
    fn undecodable_packets_are_counted_per_observer() {
        let mut arp = FrameBuilder::udp("10.0.0.1:1", "10.0.0.2:2", 0).ethernet();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let capture = vec![obs("a", "eth0", vec![cap(1, arp.clone()), cap(2, arp)])];
        let c = correlate(&capture, &CorrelateConfig::default());
        assert!(c.fates.is_empty());
        assert_eq!(
            c.undecoded,
            [Undecoded {
                probe: name("a"),
                interface: "eth0".into(),
                packets: 2,
                first_error: DecodeError::NotIpv4EtherType(0x0806),
            }]
        );
    }

    #[test]
    fn pcapng_files_become_observations_on_the_common_clock() {
        let mut file = Vec::new();
        let mut writer = PcapNgWriter::new(&mut file).unwrap();
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 128,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Borrowed("node-1/eth0")),
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            })
            .unwrap();
        // No name, no resolution: microseconds.
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::RAW,
                snaplen: 128,
                options: vec![],
            })
            .unwrap();
        let frame = tcp(CLIENT, NODEPORT, 1000, 0, SYN, 0).ethernet();
        let raw = tcp(CLIENT, NODEPORT, 1000, 0, SYN, 0).ip();
        for (interface, raw_ts, data) in [(0, 5_000_123_456u64, &frame), (1, 5_000_124, &raw)] {
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: interface,
                    timestamp: Duration::from_nanos(raw_ts),
                    original_len: u32::try_from(data.len()).unwrap() + 1000,
                    data: Cow::Borrowed(data),
                    options: vec![],
                })
                .unwrap();
        }
        drop(writer);
        let probe = name("node-1");
        // Offset 2 ms, error bound 1 µs: applied.
        let observations = from_pcapng(&probe, 2_000_000, 1_000, &file).unwrap();
        assert_eq!(observations.len(), 2);
        assert_eq!(observations[0].interface, "eth0");
        assert_eq!(observations[0].link, LinkKind::Ethernet);
        assert_eq!(observations[0].packets[0].at_ns, 4_998_123_456);
        assert_eq!(observations[0].packets[0].orig_len, 1054);
        assert_eq!(observations[1].interface, "if1");
        assert_eq!(observations[1].link, LinkKind::RawIp);
        assert_eq!(observations[1].packets[0].at_ns, 4_998_124_000);
        // Offset within its error bound: not applied.
        let observations = from_pcapng(&probe, 500, 1_000, &file).unwrap();
        assert_eq!(observations[0].packets[0].at_ns, 5_000_123_456);
        // Both interfaces decode to the same SYN.
        let c = correlate(&observations, &CorrelateConfig::default());
        assert_eq!(c.fates.len(), 1);
        let places: Vec<String> = c.fates[0].sightings.iter().map(where_).collect();
        assert_eq!(places, ["node-1/eth0", "node-1/if1"]);
    }

    #[test]
    fn broken_pcapng_is_an_error_naming_the_probe() {
        let err = from_pcapng(&name("node-1"), 0, 0, b"not a pcapng file").unwrap_err();
        assert!(err.to_string().starts_with("capture from node-1:"), "{err}");
    }

    proptest! {
        #[test]
        fn correlation_never_panics_on_garbage(
            packets in proptest::collection::vec((0i64..5_000, proptest::collection::vec(any::<u8>(), 0..120)), 0..40),
            split in 0usize..40,
        ) {
            let mut captured: Vec<CapturedPacket> = packets
                .into_iter()
                .map(|(at_ns, bytes)| CapturedPacket { at_ns, orig_len: 1500, bytes })
                .collect();
            let other = captured.split_off(split.min(captured.len()));
            let capture = vec![obs("a", "eth0", captured), obs("b", "eth0", other)];
            let c = correlate(&capture, &CorrelateConfig::default());
            for fate in &c.fates {
                let _ = path_of(fate);
                let _ = lost_after(fate);
            }
            let _ = encapsulation_sources(&capture);
        }
    }
}
