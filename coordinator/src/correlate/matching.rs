//! Matching: which captured copies are the same test packet, which packet
//! answers it, and which ICMP errors quote it ([`correlate`]). What counts
//! as "the same packet" is written down on [`MatchKey`]'s variants, with
//! why each rule survives NAT. Pure code over the types of [`super`].

use std::collections::HashMap;

use probemesh_packet::decode::{
    self, DecodedPacket, Flow, IcmpMessage, IpPacket, QuotedTransport, TcpSegment, Transport,
};
use probemesh_packet::frame::{TcpFlags, TcpSeq};
use probemesh_packet::icmp::{EchoId, EchoSeq};
use probemesh_packet::ipv4::IpId;

use super::{
    Answer, AnswerKind, CorrelateConfig, Correlation, IcmpErrorSighting, Observation, PacketFate,
    PacketKey, Sighting, TcpConnection, Transform, Undecoded,
};

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
    let observed = observations
        .iter()
        .map(|o| (o.probe.clone(), o.interface.clone()))
        .collect();
    Correlation {
        fates,
        undecoded,
        observed,
    }
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
