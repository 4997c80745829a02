//! Captured frames, decoded into owned values: the link header, IPv4, and
//! the TCP, UDP or ICMP header behind it, through VXLAN (UDP 8472 or 4789)
//! and IPIP (protocol 4) tunnels down to the innermost packet.
//!
//! Captures keep headers only (snap length 128 by default), so lengths come
//! from the headers, never from the captured byte count: a TCP payload
//! length is the IPv4 Total Length minus the IP and TCP header lengths. No
//! input, however truncated or malformed, makes [`decode`] panic. It reads
//! no file and no clock; IPv6 is not decoded.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::DecodeError;
use crate::frame::{
    LinkKind, TCP_MIN_HEADER_LEN, TcpFlags, TcpSeq, TcpView, UdpView, VXLAN_PORT_IANA,
    VXLAN_PORT_LINUX, Vni, VxlanView,
};
use crate::icmp::{EchoId, EchoSeq, IcmpView, NextHopMtu, TYPE_ECHO_REPLY, TYPE_ECHO_REQUEST};
use crate::ipv4::{IpProtocol, Ipv4Header, Ipv4View};

/// Most tunnels [`decode`] looks through; deeper nesting stops at this depth.
pub const MAX_TUNNEL_DEPTH: usize = 4;

/// A TCP segment's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: TcpSeq,
    /// Acknowledgement number (meaningful with ACK).
    pub ack: TcpSeq,
    /// Control flags.
    pub flags: TcpFlags,
    /// Payload bytes as sent: IPv4 Total Length minus the IP and TCP header
    /// lengths (not the captured bytes, which the snap length cuts).
    pub payload_len: u32,
}

impl TcpSegment {
    /// Sequence space the segment occupies: payload bytes, plus one each
    /// for SYN and FIN.
    pub fn seq_span(&self) -> u32 {
        self.payload_len
            .saturating_add(u32::from(self.flags.has(TcpFlags::SYN)))
            .saturating_add(u32::from(self.flags.has(TcpFlags::FIN)))
    }

    /// Whether this segment acknowledges all of `sent` (its ACK number is
    /// at or past the end of `sent`'s sequence space, modulo 2^32, and less
    /// than 2^31 ahead of its start).
    pub fn acknowledges(&self, sent: &TcpSegment) -> bool {
        if !self.flags.has(TcpFlags::ACK) {
            return false;
        }
        let end = sent.seq.0.wrapping_add(sent.seq_span());
        let past_end = self.ack.0.wrapping_sub(end);
        let past_start = self.ack.0.wrapping_sub(sent.seq.0);
        past_end < 1 << 31 && past_start > 0 && past_start < 1 << 31
    }
}

/// A UDP datagram's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length field: header plus payload as sent, bytes.
    pub length: u16,
    /// The first 8 payload bytes, when captured (a tag a test sender can
    /// put there to tell its datagrams apart).
    pub tag: Option<[u8; 8]>,
}

/// The transport header of a datagram quoted in an ICMP error (only its
/// first 8 bytes are guaranteed to be quoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotedTransport {
    /// TCP ports and sequence number.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Sequence number.
        seq: TcpSeq,
    },
    /// UDP ports and length.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Length field.
        length: u16,
    },
    /// An ICMP echo request.
    Echo {
        /// Identifier.
        id: EchoId,
        /// Sequence number.
        seq: EchoSeq,
    },
    /// Anything else, or fewer than 8 bytes quoted.
    Other,
}

/// The offending datagram quoted in an ICMP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// Its IPv4 header.
    pub ip: Ipv4Header,
    /// Its transport header's first 8 bytes.
    pub transport: QuotedTransport,
}

impl Quoted {
    /// The quoted datagram's flow (ports 0 for ICMP and unknown protocols).
    pub fn flow(&self) -> Flow {
        let (src_port, dst_port) = match self.transport {
            QuotedTransport::Tcp {
                src_port, dst_port, ..
            }
            | QuotedTransport::Udp {
                src_port, dst_port, ..
            } => (src_port, dst_port),
            QuotedTransport::Echo { .. } | QuotedTransport::Other => (0, 0),
        };
        Flow {
            protocol: self.ip.protocol,
            src: SocketAddrV4::new(self.ip.src, src_port),
            dst: SocketAddrV4::new(self.ip.dst, dst_port),
        }
    }
}

/// An ICMP error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// ICMP type (3, 4, 5, 11 or 12).
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Next-hop MTU, for destination-unreachable / fragmentation-needed.
    pub next_hop_mtu: Option<NextHopMtu>,
    /// The offending datagram, when its IPv4 header was captured.
    pub quoted: Option<Quoted>,
}

/// An ICMP message's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpMessage {
    /// Echo request (ping).
    EchoRequest {
        /// Identifier.
        id: EchoId,
        /// Sequence number.
        seq: EchoSeq,
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        id: EchoId,
        /// Sequence number.
        seq: EchoSeq,
    },
    /// An error quoting a datagram.
    Error(IcmpError),
    /// Any other type.
    Other {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
    },
}

/// What follows an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp(TcpSegment),
    /// UDP (not a recognised tunnel, or one whose inner frame was cut off).
    Udp(UdpDatagram),
    /// ICMP.
    Icmp(IcmpMessage),
    /// A fragment other than the first: no transport header.
    Fragment,
    /// The transport header was cut off by the snap length.
    Truncated,
    /// A protocol this module does not decode.
    Other,
}

/// One IPv4 datagram: header and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPacket {
    /// The IPv4 header.
    pub ip: Ipv4Header,
    /// The transport header.
    pub transport: Transport,
}

impl IpPacket {
    /// The datagram's flow (ports 0 for ICMP and unknown protocols).
    pub fn flow(&self) -> Flow {
        let (src_port, dst_port) = match self.transport {
            Transport::Tcp(t) => (t.src_port, t.dst_port),
            Transport::Udp(u) => (u.src_port, u.dst_port),
            _ => (0, 0),
        };
        Flow {
            protocol: self.ip.protocol,
            src: SocketAddrV4::new(self.ip.src, src_port),
            dst: SocketAddrV4::new(self.ip.dst, dst_port),
        }
    }
}

/// A flow: protocol and both endpoints (ports 0 where the protocol has
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    /// IP protocol.
    pub protocol: IpProtocol,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
}

impl Flow {
    /// The same flow in the other direction.
    pub fn reversed(&self) -> Self {
        Self {
            protocol: self.protocol,
            src: self.dst,
            dst: self.src,
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.protocol, self.src, self.dst)
    }
}

/// Which encapsulation a tunnel used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    /// VXLAN over UDP 8472 or 4789.
    Vxlan {
        /// The network identifier.
        vni: Vni,
    },
    /// IPv4 in IPv4 (protocol 4).
    Ipip,
}

impl TunnelKind {
    /// `vxlan` or `ipip`.
    pub fn short_name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan { .. } => "vxlan",
            TunnelKind::Ipip => "ipip",
        }
    }
}

/// One tunnel layer around the inner packet: its kind and outer addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// Encapsulation.
    pub kind: TunnelKind,
    /// The outer header.
    pub outer: Ipv4Header,
}

/// A decoded frame: tunnel layers, outermost first, around the innermost
/// IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPacket {
    /// Tunnel layers, outermost first (empty when not encapsulated).
    pub tunnels: Vec<Tunnel>,
    /// The innermost IPv4 packet.
    pub inner: IpPacket,
}

impl DecodedPacket {
    /// The outermost IPv4 source and destination (the inner packet's when
    /// not encapsulated).
    pub fn outer_addresses(&self) -> (Ipv4Addr, Ipv4Addr) {
        self.tunnels
            .first()
            .map_or((self.inner.ip.src, self.inner.ip.dst), |t| {
                (t.outer.src, t.outer.dst)
            })
    }

    /// The innermost flow.
    pub fn flow(&self) -> Flow {
        self.inner.flow()
    }
}

// ----------------------------------------------------------------- decode

/// Decodes one captured frame of an interface of kind `link`.
///
/// Errors only when no IPv4 header can be read; a transport header cut
/// off by the snap length gives [`Transport::Truncated`], and a tunnel whose
/// inner packet cannot be read decodes as its outer datagram.
pub fn decode(link: LinkKind, frame: &[u8]) -> Result<DecodedPacket, DecodeError> {
    decode_ipv4(link.ipv4_payload(frame)?, 0)
}

fn decode_ipv4(bytes: &[u8], depth: usize) -> Result<DecodedPacket, DecodeError> {
    let view = Ipv4View::new(bytes)?;
    let header = view.header();
    let payload = view.payload();
    let plain = |transport| DecodedPacket {
        tunnels: Vec::new(),
        inner: IpPacket {
            ip: header,
            transport,
        },
    };
    if header.fragment_offset != 0 {
        return Ok(plain(Transport::Fragment));
    }
    let transport = match header.protocol {
        IpProtocol::TCP => match TcpView::new(payload) {
            Ok(tcp) => Transport::Tcp(TcpSegment {
                src_port: tcp.source_port(),
                dst_port: tcp.destination_port(),
                seq: tcp.seq(),
                ack: tcp.ack(),
                flags: tcp.flags(),
                payload_len: u32::from(header.total_len)
                    .saturating_sub(u32::try_from(header.header_len).unwrap_or(u32::MAX))
                    .saturating_sub(u32::try_from(tcp.header_len()).unwrap_or(u32::MAX)),
            }),
            Err(_) => Transport::Truncated,
        },
        IpProtocol::UDP => match UdpView::new(payload) {
            Ok(udp) => {
                if depth < MAX_TUNNEL_DEPTH
                    && let Some(decoded) = vxlan_inner(&udp, header, depth)
                {
                    return Ok(decoded);
                }
                Transport::Udp(UdpDatagram {
                    src_port: udp.source_port(),
                    dst_port: udp.destination_port(),
                    length: udp.length(),
                    tag: udp.payload().first_chunk::<8>().copied(),
                })
            }
            Err(_) => Transport::Truncated,
        },
        IpProtocol::ICMP => match IcmpView::new(payload) {
            Ok(icmp) => Transport::Icmp(icmp_message(&icmp)),
            Err(_) => Transport::Truncated,
        },
        IpProtocol::IPIP => {
            if depth < MAX_TUNNEL_DEPTH
                && let Ok(mut inner) = decode_ipv4(payload, depth + 1)
            {
                inner.tunnels.insert(
                    0,
                    Tunnel {
                        kind: TunnelKind::Ipip,
                        outer: header,
                    },
                );
                return Ok(inner);
            }
            Transport::Other
        }
        _ => Transport::Other,
    };
    Ok(plain(transport))
}

/// The packet inside a VXLAN datagram, when `udp` is one (port 8472 or
/// 4789, I flag set) and its inner frame holds an IPv4 header.
fn vxlan_inner(udp: &UdpView<'_>, outer: Ipv4Header, depth: usize) -> Option<DecodedPacket> {
    let port = udp.destination_port();
    if port != VXLAN_PORT_LINUX && port != VXLAN_PORT_IANA {
        return None;
    }
    let vxlan = VxlanView::new(udp.payload()).ok()?;
    if !vxlan.vni_valid() {
        return None;
    }
    let ip = LinkKind::Ethernet.ipv4_payload(vxlan.payload()).ok()?;
    let mut inner = decode_ipv4(ip, depth + 1).ok()?;
    inner.tunnels.insert(
        0,
        Tunnel {
            kind: TunnelKind::Vxlan { vni: vxlan.vni() },
            outer,
        },
    );
    Some(inner)
}

fn icmp_message(icmp: &IcmpView<'_>) -> IcmpMessage {
    let (icmp_type, code) = (icmp.icmp_type(), icmp.code());
    match icmp_type {
        TYPE_ECHO_REQUEST => IcmpMessage::EchoRequest {
            id: icmp.echo_id(),
            seq: icmp.echo_seq(),
        },
        TYPE_ECHO_REPLY => IcmpMessage::EchoReply {
            id: icmp.echo_id(),
            seq: icmp.echo_seq(),
        },
        _ if icmp.is_error() => IcmpMessage::Error(IcmpError {
            icmp_type,
            code,
            next_hop_mtu: icmp.next_hop_mtu(),
            quoted: quoted(icmp.body()),
        }),
        _ => IcmpMessage::Other { icmp_type, code },
    }
}

/// The datagram an ICMP error quotes: its IPv4 header and the first 8
/// bytes after it. Its Total Length is the original's, so the quoted
/// payload is not cut at it.
fn quoted(body: &[u8]) -> Option<Quoted> {
    let view = Ipv4View::new(body).ok()?;
    let ip = view.header();
    let rest = body.get(view.header_len()..)?;
    let transport = match rest.first_chunk::<QUOTED_TRANSPORT_LEN>() {
        Some(head) if ip.fragment_offset == 0 => quoted_transport(ip.protocol, head),
        _ => QuotedTransport::Other,
    };
    Some(Quoted { ip, transport })
}

/// Bytes of the transport header an ICMP error is sure to quote (RFC 792).
const QUOTED_TRANSPORT_LEN: usize = 8;

/// The first 8 bytes of a quoted transport header. The TCP view needs its
/// whole 20-byte header, so the quote is padded with zeros (past byte 8
/// nothing is read).
fn quoted_transport(protocol: IpProtocol, head: &[u8; QUOTED_TRANSPORT_LEN]) -> QuotedTransport {
    let mut padded = [0u8; TCP_MIN_HEADER_LEN];
    padded[..QUOTED_TRANSPORT_LEN].copy_from_slice(head);
    match protocol {
        IpProtocol::TCP => match TcpView::new(&padded) {
            Ok(tcp) => QuotedTransport::Tcp {
                src_port: tcp.source_port(),
                dst_port: tcp.destination_port(),
                seq: tcp.seq(),
            },
            Err(_) => QuotedTransport::Other,
        },
        IpProtocol::UDP => match UdpView::new(head) {
            Ok(udp) => QuotedTransport::Udp {
                src_port: udp.source_port(),
                dst_port: udp.destination_port(),
                length: udp.length(),
            },
            Err(_) => QuotedTransport::Other,
        },
        IpProtocol::ICMP => match IcmpView::new(head) {
            Ok(echo) if echo.icmp_type() == TYPE_ECHO_REQUEST => QuotedTransport::Echo {
                id: echo.echo_id(),
                seq: echo.echo_seq(),
            },
            _ => QuotedTransport::Other,
        },
        _ => QuotedTransport::Other,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Vni;
    use crate::ipv4::{IpId, Ttl};
    use crate::testing::FrameBuilder;
    use proptest::prelude::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ethernet_ipv4_tcp_fields() {
        let frame = FrameBuilder::tcp("10.0.0.1:40000", "10.0.0.2:80", 1000, 0, TcpFlags::SYN, 0)
            .ip_id(77)
            .ttl(63)
            .ethernet();
        let d = decode(LinkKind::Ethernet, &frame).unwrap();
        assert!(d.tunnels.is_empty());
        assert_eq!(d.inner.ip.src, a("10.0.0.1"));
        assert_eq!(d.inner.ip.dst, a("10.0.0.2"));
        assert_eq!(d.inner.ip.id, IpId(77));
        assert_eq!(d.inner.ip.ttl, Ttl(63));
        assert!(d.inner.ip.dont_fragment);
        assert!(!d.inner.ip.more_fragments);
        assert_eq!(d.inner.ip.protocol, IpProtocol::TCP);
        let Transport::Tcp(t) = d.inner.transport else {
            panic!("{d:?}")
        };
        assert_eq!((t.src_port, t.dst_port), (40000, 80));
        assert_eq!(t.seq, TcpSeq(1000));
        assert!(t.flags.has(TcpFlags::SYN));
        assert_eq!(t.payload_len, 0);
        assert_eq!(t.seq_span(), 1);
        assert_eq!(d.outer_addresses(), (a("10.0.0.1"), a("10.0.0.2")));
        assert_eq!(d.flow().to_string(), "tcp 10.0.0.1:40000 -> 10.0.0.2:80");
    }

    #[test]
    fn vlan_tags_are_skipped_and_raw_ip_and_cooked_decode() {
        let b = FrameBuilder::udp("10.0.0.1:5000", "10.0.0.2:53", 40);
        let mut tagged = b.clone().ethernet();
        // Insert an 802.1Q tag after the MAC addresses.
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
        let d = decode(LinkKind::Ethernet, &tagged).unwrap();
        assert_eq!(d.flow().dst, "10.0.0.2:53".parse().unwrap());
        let raw = decode(LinkKind::RawIp, &b.clone().ip()).unwrap();
        assert_eq!(raw, d);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&b.clone().ip());
        assert_eq!(decode(LinkKind::LinuxSll, &sll).unwrap(), d);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&b.ip());
        assert_eq!(decode(LinkKind::LinuxSll2, &sll2).unwrap(), d);
        let Transport::Udp(u) = d.inner.transport else {
            panic!("{d:?}")
        };
        assert_eq!(u.length, 48);
        assert_eq!(u.tag, Some([0; 8]));
    }

    #[test]
    fn non_ipv4_frames_are_refused_with_the_reason() {
        let mut arp = FrameBuilder::udp("10.0.0.1:1", "10.0.0.2:2", 0).ethernet();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            decode(LinkKind::Ethernet, &arp),
            Err(DecodeError::NotIpv4EtherType(0x0806))
        );
        assert_eq!(
            decode(LinkKind::RawIp, &[0x60, 0, 0, 0]),
            Err(DecodeError::NotIpv4(6))
        );
        assert_eq!(
            decode(LinkKind::RawIp, &[0x44; 20]),
            Err(DecodeError::BadHeaderLength(16))
        );
        assert!(matches!(
            decode(LinkKind::Ethernet, &[0; 10]),
            Err(DecodeError::Truncated {
                need: 14,
                got: 10,
                ..
            })
        ));
    }

    #[test]
    fn snaplen_64_keeps_headers_and_lengths_come_from_the_ip_header() {
        let frame = FrameBuilder::tcp(
            "10.0.0.1:40000",
            "10.0.0.2:80",
            5,
            9,
            TcpFlags::ACK | TcpFlags::PSH,
            1460,
        )
        .ethernet();
        assert_eq!(frame.len(), 1514);
        let d = decode(LinkKind::Ethernet, &frame[..64]).unwrap();
        let Transport::Tcp(t) = d.inner.transport else {
            panic!("{d:?}")
        };
        assert_eq!(t.payload_len, 1460);
        assert_eq!(d.inner.ip.total_len, 1500);
        // Cut inside the TCP header: IP still decodes.
        let d = decode(LinkKind::Ethernet, &frame[..40]).unwrap();
        assert_eq!(d.inner.transport, Transport::Truncated);
    }

    #[test]
    fn vxlan_is_looked_through_to_the_inner_tcp() {
        let inner = FrameBuilder::tcp(
            "198.19.1.0:40000",
            "198.19.2.10:8080",
            1000,
            0,
            TcpFlags::ACK,
            1000,
        );
        let frame = inner
            .vxlan("198.18.0.11", "198.18.0.12", 8472, 1)
            .ethernet();
        let d = decode(LinkKind::Ethernet, &frame).unwrap();
        assert_eq!(d.tunnels.len(), 1);
        assert_eq!(d.tunnels[0].kind, TunnelKind::Vxlan { vni: Vni(1) });
        assert_eq!(d.outer_addresses(), (a("198.18.0.11"), a("198.18.0.12")));
        assert_eq!(
            d.flow().to_string(),
            "tcp 198.19.1.0:40000 -> 198.19.2.10:8080"
        );
        // Headers only: 128 bytes still reach the inner TCP header.
        let cut = decode(LinkKind::Ethernet, &frame[..128]).unwrap();
        assert_eq!(cut, d);
        // Cut inside the inner IP header: the outer UDP datagram remains.
        let cut = decode(LinkKind::Ethernet, &frame[..64]).unwrap();
        assert!(cut.tunnels.is_empty());
        assert!(matches!(cut.inner.transport, Transport::Udp(u) if u.dst_port == 8472));
    }

    #[test]
    fn ipip_is_looked_through() {
        let frame = FrameBuilder::icmp_echo("10.244.1.2", "10.244.2.3", true, 9, 4)
            .ipip("198.18.0.11", "198.18.0.12")
            .ethernet();
        let d = decode(LinkKind::Ethernet, &frame).unwrap();
        assert_eq!(d.tunnels[0].kind, TunnelKind::Ipip);
        assert_eq!(d.outer_addresses(), (a("198.18.0.11"), a("198.18.0.12")));
        assert_eq!(
            d.inner.transport,
            Transport::Icmp(IcmpMessage::EchoRequest {
                id: EchoId(9),
                seq: EchoSeq(4)
            })
        );
    }

    #[test]
    fn icmp_frag_needed_quotes_the_offending_segment() {
        let big = FrameBuilder::tcp("10.0.0.1:40000", "10.0.0.2:80", 777, 1, TcpFlags::ACK, 1460)
            .ip_id(3);
        let error =
            FrameBuilder::icmp_error("10.0.0.254", "10.0.0.1", 3, 4, 1450, &big.ip()).ethernet();
        let d = decode(LinkKind::Ethernet, &error[..128]).unwrap();
        let Transport::Icmp(IcmpMessage::Error(e)) = d.inner.transport else {
            panic!("{d:?}")
        };
        assert_eq!(e.next_hop_mtu, Some(NextHopMtu(1450)));
        let q = e.quoted.unwrap();
        assert_eq!(q.ip.id, IpId(3));
        assert_eq!(q.ip.total_len, 1500);
        assert_eq!(
            q.transport,
            QuotedTransport::Tcp {
                src_port: 40000,
                dst_port: 80,
                seq: TcpSeq(777)
            }
        );
        assert_eq!(q.flow().to_string(), "tcp 10.0.0.1:40000 -> 10.0.0.2:80");
    }

    #[test]
    fn acknowledgement_covers_sequence_space_modulo_2_32() {
        let seg = |seq: u32, ack: u32, flags: u8, len: u32| TcpSegment {
            src_port: 1,
            dst_port: 2,
            seq: TcpSeq(seq),
            ack: TcpSeq(ack),
            flags: TcpFlags(flags),
            payload_len: len,
        };
        let syn = seg(u32::MAX, 0, TcpFlags::SYN, 0);
        assert!(seg(9, 0, TcpFlags::SYN | TcpFlags::ACK, 0).acknowledges(&syn));
        assert!(!seg(9, u32::MAX, TcpFlags::ACK, 0).acknowledges(&syn));
        let data = seg(u32::MAX - 10, 0, TcpFlags::ACK, 100);
        assert!(seg(0, 89, TcpFlags::ACK, 0).acknowledges(&data));
        assert!(seg(0, 500, TcpFlags::ACK, 0).acknowledges(&data));
        assert!(!seg(0, 88, TcpFlags::ACK, 0).acknowledges(&data));
        assert!(!seg(0, 89, TcpFlags::RST, 0).acknowledges(&data));
        assert_eq!(
            TcpFlags(TcpFlags::SYN | TcpFlags::ACK).to_string(),
            "SYN|ACK"
        );
    }

    fn link_kind() -> impl Strategy<Value = LinkKind> {
        prop_oneof![
            Just(LinkKind::Ethernet),
            Just(LinkKind::RawIp),
            Just(LinkKind::LinuxSll),
            Just(LinkKind::LinuxSll2),
        ]
    }

    fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
        (any::<u32>(), 0u32..1500, any::<u16>(), any::<bool>()).prop_map(
            |(seq, len, id, tunnel)| {
                let tcp =
                    FrameBuilder::tcp("10.0.0.1:1000", "10.0.0.2:80", seq, 0, TcpFlags::ACK, len)
                        .ip_id(id);
                let error =
                    FrameBuilder::icmp_error("10.0.0.9", "10.0.0.1", 3, 4, 1400, &tcp.clone().ip());
                let b = if tunnel {
                    error
                        .vxlan("1.1.1.1", "2.2.2.2", 4789, 7)
                        .ipip("3.3.3.3", "4.4.4.4")
                } else {
                    tcp
                };
                b.ethernet()
            },
        )
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(link in link_kind(), bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(link, &bytes);
        }

        #[test]
        fn ipv4_shaped_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 20..200), ihl in 5u8..16, proto in prop_oneof![Just(1u8), Just(4), Just(6), Just(17)]) {
            bytes[0] = 0x40 | ihl;
            bytes[6] &= 0xe0;
            bytes[9] = proto;
            let _ = decode(LinkKind::RawIp, &bytes);
        }

        #[test]
        fn cut_and_flipped_valid_frames_never_panic(frame in valid_frame(), cut in 0usize..200, flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6)) {
            let mut frame = frame;
            frame.truncate(cut);
            for (at, byte) in flips {
                if let Some(b) = frame.get_mut(at) {
                    *b ^= byte;
                }
            }
            let _ = decode(LinkKind::Ethernet, &frame);
        }

        #[test]
        fn a_frame_cut_by_the_snap_length_reads_as_the_whole_one(
            seq in any::<u32>(),
            len in 0u32..1460,
            cut in 0usize..1600,
        ) {
            let frame = FrameBuilder::tcp("10.0.0.1:1000", "10.0.0.2:80", seq, 0, TcpFlags::ACK, len)
                .ethernet();
            let whole = decode(LinkKind::Ethernet, &frame).unwrap();
            let cut = cut.min(frame.len());
            match decode(LinkKind::Ethernet, &frame[..cut]) {
                // Ethernet (14) and IPv4 (20) headers whole: the IP header
                // reads the same; with the TCP header (20) too, everything.
                Ok(d) if cut >= 54 => prop_assert_eq!(d, whole),
                Ok(d) => {
                    prop_assert!(cut >= 34);
                    prop_assert_eq!(d.inner.ip, whole.inner.ip);
                    prop_assert_eq!(d.inner.transport, Transport::Truncated);
                }
                Err(e) => {
                    prop_assert!(cut < 34, "{e}");
                    let is_truncated = matches!(e, DecodeError::Truncated { .. });
                    prop_assert!(is_truncated);
                }
            }
        }
    }
}
