//! What the synchronized captures say, reduced to what the rules ask: for
//! each test packet its first flow, size, where it was seen, whether it was
//! answered and where it was last seen; and who sent tunnel traffic with
//! which outer source. The one place the correlator's types become rule
//! evidence.

use std::net::{Ipv4Addr, SocketAddrV4};

use probemesh_packet::frame::TcpFlags;
use probemesh_packet::icmp::EchoError;

use super::model::ObserverInterface;
use crate::correlate::{
    self, AnswerKind, Correlation, EncapsulationSource, PacketFate, PacketKey, Transform,
};

/// A packet's protocol, as rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    /// ICMP echo request.
    #[default]
    Icmp,
    /// TCP segment.
    Tcp,
    /// UDP datagram.
    Udp,
}

/// One test packet's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fate {
    /// Protocol.
    pub proto: Proto,
    /// Source at the first sighting.
    pub src: Ipv4Addr,
    /// Destination at the first sighting (before any DNAT).
    pub dst: Ipv4Addr,
    /// Destination port at the first sighting (0 for ICMP).
    pub dst_port: u16,
    /// A TCP SYN.
    pub syn: bool,
    /// Largest size on the wire, bytes.
    pub wire_bytes: u32,
    /// Every sighting, first first.
    pub seen_at: Vec<ObserverInterface>,
    /// What came back, when something did.
    pub answer: Option<Answer>,
    /// Where it was last seen, when unanswered.
    pub lost_after: Option<ObserverInterface>,
    /// TCP retransmissions seen.
    pub retransmissions: u32,
    /// Where it was first seen rewritten or tunnelled, in path order.
    pub rewrites: Vec<Rewrite>,
    /// ICMP errors that quoted it.
    pub errors: Vec<IcmpError>,
}

/// A change to a test packet, and the observer that first saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Where it was first seen changed.
    pub at: ObserverInterface,
    /// What changed.
    pub change: Change,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Destination rewritten (NodePort, ClusterIP).
    Dnat {
        /// The new destination.
        to: SocketAddrV4,
    },
    /// Source rewritten (masquerade).
    Snat {
        /// The new source.
        to: SocketAddrV4,
    },
    /// Inside a tunnel.
    Encapsulated {
        /// `vxlan` or `ipip`.
        kind: &'static str,
        /// Outer source.
        outer_src: Ipv4Addr,
        /// Outer destination.
        outer_dst: Ipv4Addr,
    },
}

/// An ICMP error quoting a test packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpError {
    /// Where it was seen.
    pub at: ObserverInterface,
    /// Who sent it.
    pub from: Ipv4Addr,
    /// Its type, code and next-hop MTU.
    pub error: EchoError,
}

impl Fate {
    /// Whether anything answered it.
    pub fn answered(&self) -> bool {
        self.answer.is_some()
    }

    /// A short description: `tcp 198.18.100.10 > 198.18.0.12:30080 [S] 74 bytes`.
    pub fn describe(&self) -> String {
        match self.proto {
            Proto::Icmp => format!(
                "icmp echo {} > {} {} bytes",
                self.src, self.dst, self.wire_bytes
            ),
            Proto::Tcp => format!(
                "tcp {} > {}:{}{} {} bytes",
                self.src,
                self.dst,
                self.dst_port,
                if self.syn { " [S]" } else { "" },
                self.wire_bytes
            ),
            Proto::Udp => format!(
                "udp {} > {}:{} {} bytes",
                self.src, self.dst, self.dst_port, self.wire_bytes
            ),
        }
    }
}

/// What answered a test packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// A TCP reset rather than a reply or an acknowledgement.
    pub reset: bool,
    /// Where the answer was first seen.
    pub at: ObserverInterface,
}

/// Tunnel traffic one observer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// Where it was seen.
    pub observer: ObserverInterface,
    /// `vxlan` or `ipip`.
    pub kind: String,
    /// Outer source.
    pub outer_src: Ipv4Addr,
    /// Outer destination.
    pub outer_dst: Ipv4Addr,
    /// Packets.
    pub packets: u64,
}

/// The capture evidence of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packets {
    /// Every followed test packet.
    pub fates: Vec<Fate>,
    /// Tunnel senders.
    pub tunnels: Vec<Tunnel>,
    /// Every interface whose capture came back: where a packet not seen
    /// was really not there.
    pub captured: Vec<ObserverInterface>,
}

impl Packets {
    /// From the correlator's output.
    pub fn from_correlation(
        correlation: &Correlation,
        encapsulation: &[EncapsulationSource],
        captured: Vec<ObserverInterface>,
    ) -> Self {
        Self {
            captured,
            fates: correlation.fates.iter().filter_map(fate).collect(),
            tunnels: encapsulation
                .iter()
                .map(|e| Tunnel {
                    observer: ObserverInterface {
                        probe: e.probe.clone(),
                        interface: e.interface.clone(),
                    },
                    kind: e.kind.short_name().to_owned(),
                    outer_src: e.outer_src,
                    outer_dst: e.outer_dst,
                    packets: e.packets,
                })
                .collect(),
        }
    }
}

fn fate(f: &PacketFate) -> Option<Fate> {
    let first = f.sightings.first()?;
    let (proto, syn) = match &f.key {
        PacketKey::IcmpEcho { .. } => (Proto::Icmp, false),
        PacketKey::Tcp { flags, .. } => (Proto::Tcp, flags.0 & TcpFlags::SYN != 0),
        PacketKey::Udp { .. } => (Proto::Udp, false),
    };
    Some(Fate {
        proto,
        src: *first.inner.src.ip(),
        dst: *first.inner.dst.ip(),
        dst_port: first.inner.dst.port(),
        syn,
        wire_bytes: f.sightings.iter().map(|s| s.orig_len).max().unwrap_or(0),
        seen_at: correlate::path_of(f)
            .iter()
            .map(|h| ObserverInterface {
                probe: h.probe.clone(),
                interface: h.interface.clone(),
            })
            .collect(),
        answer: f.answer.as_ref().map(|a| Answer {
            reset: a.kind == AnswerKind::Reset,
            at: ObserverInterface {
                probe: a.probe.clone(),
                interface: a.interface.clone(),
            },
        }),
        lost_after: correlate::lost_after(f).map(|(p, i)| ObserverInterface {
            probe: p.clone(),
            interface: i.to_owned(),
        }),
        retransmissions: f.retransmissions,
        rewrites: rewrites(f),
        errors: f
            .icmp_errors
            .iter()
            .map(|e| IcmpError {
                at: ObserverInterface {
                    probe: e.probe.clone(),
                    interface: e.interface.clone(),
                },
                from: e.from,
                error: EchoError {
                    icmp_type: e.icmp_type,
                    code: e.code,
                    mtu: e.next_hop_mtu,
                },
            })
            .collect(),
    })
}

/// Each change once, at the first observer that saw it, in time order.
fn rewrites(f: &PacketFate) -> Vec<Rewrite> {
    let mut sightings: Vec<_> = f.sightings.iter().collect();
    sightings.sort_by_key(|s| s.at_ns);
    let mut out: Vec<Rewrite> = Vec::new();
    for s in sightings {
        for t in &s.transformed {
            let change = match *t {
                Transform::Dnat { to, .. } => Change::Dnat { to },
                Transform::Snat { to, .. } => Change::Snat { to },
                Transform::Encapsulated {
                    kind,
                    outer_src,
                    outer_dst,
                } => Change::Encapsulated {
                    kind: kind.short_name(),
                    outer_src,
                    outer_dst,
                },
            };
            if !out.iter().any(|r| r.change == change) {
                out.push(Rewrite {
                    at: ObserverInterface {
                        probe: s.probe.clone(),
                        interface: s.interface.clone(),
                    },
                    change,
                });
            }
        }
    }
    out
}
