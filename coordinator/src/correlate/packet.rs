//! Captured frames, decoded sans-IO: the link header (Ethernet II with
//! 802.1Q/802.1ad tags skipped, Linux cooked v1/v2, or raw IP), IPv4, and
//! the TCP, UDP or ICMP header behind it, through VXLAN (UDP 8472 or 4789)
//! and IPIP (protocol 4) tunnels down to the innermost packet.
//!
//! Bytes stay behind view types ([`EthernetView`], [`Ipv4View`],
//! [`TcpView`], [`UdpView`], [`IcmpView`], [`VxlanView`]) whose constructors
//! check the length once, so their accessors never index out of bounds. The
//! [`decode`] function turns a frame into an owned [`DecodedPacket`].
//!
//! Captures keep headers only (snap length 128 by default), so lengths come
//! from the headers, never from the captured byte count: a TCP payload
//! length is the IPv4 Total Length minus the IP and TCP header lengths. No
//! input, however truncated or malformed, makes this module panic. It
//! reads no file and no clock; IPv6 is not decoded.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Ethernet II header length, bytes.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// IPv4 header length without options, bytes.
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// TCP header length without options, bytes.
pub const TCP_MIN_HEADER_LEN: usize = 20;
/// UDP header length, bytes.
pub const UDP_HEADER_LEN: usize = 8;
/// ICMP header length (type, code, checksum, rest-of-header), bytes.
pub const ICMP_HEADER_LEN: usize = 8;
/// VXLAN header length, bytes.
pub const VXLAN_HEADER_LEN: usize = 8;
/// UDP port of VXLAN as flannel and the Linux default use it.
pub const VXLAN_PORT_LINUX: u16 = 8472;
/// UDP port of VXLAN assigned by IANA (RFC 7348).
pub const VXLAN_PORT_IANA: u16 = 4789;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Most tunnels [`decode`] looks through; deeper nesting stops at this depth.
pub const MAX_TUNNEL_DEPTH: usize = 4;
/// Most VLAN tags skipped in one Ethernet header.
const MAX_VLAN_TAGS: usize = 2;
/// Linux cooked capture v1 header length, bytes.
const SLL_HEADER_LEN: usize = 16;
/// Linux cooked capture v2 header length, bytes.
const SLL2_HEADER_LEN: usize = 20;

/// Why a frame could not be decoded down to an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header needs.
    #[error("{what}: need {need} bytes, got {got}")]
    Truncated {
        /// Which header.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The link header carries something other than IPv4 (IPv6, ARP, ...).
    #[error("EtherType {0:#06x} is not IPv4")]
    NotIpv4EtherType(u16),
    /// The IP version nibble is not 4.
    #[error("not an IPv4 header (version {0})")]
    NotIpv4(u8),
    /// The IHL field gives a header shorter than 20 bytes.
    #[error("IPv4 header length {0} bytes is below 20")]
    BadHeaderLength(usize),
}

/// The link-layer header in front of every frame of one capture interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// Ethernet II (LINKTYPE_ETHERNET), 802.1Q/802.1ad tags allowed.
    Ethernet,
    /// No link header: the frame starts with the IP header (LINKTYPE_RAW,
    /// LINKTYPE_IPV4; IPIP and WireGuard devices).
    RawIp,
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL, capture on `any`).
    LinuxSll,
    /// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2).
    LinuxSll2,
}

/// IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// ICMP.
    pub const ICMP: Self = Self(1);
    /// IPv4 in IPv4 (IPIP).
    pub const IPIP: Self = Self(4);
    /// TCP.
    pub const TCP: Self = Self(6);
    /// UDP.
    pub const UDP: Self = Self(17);
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ICMP => f.write_str("icmp"),
            Self::IPIP => f.write_str("ipip"),
            Self::TCP => f.write_str("tcp"),
            Self::UDP => f.write_str("udp"),
            Self(n) => write!(f, "proto-{n}"),
        }
    }
}

/// IPv4 Identification field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpId(pub u16);

/// IPv4 time-to-live, hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ttl(pub u8);

/// A TCP sequence or acknowledgement number (modulo 2^32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpSeq(pub u32);

/// ICMP echo identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EchoId(pub u16);

/// ICMP echo sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EchoSeq(pub u16);

/// VXLAN network identifier (24 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(pub u32);

/// A link MTU, bytes (the next-hop MTU of a fragmentation-needed error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mtu(pub u16);

/// TCP control flags (the low 8 bits of the flags field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN: no more data from the sender.
    pub const FIN: u8 = 0x01;
    /// SYN: synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// RST: reset the connection.
    pub const RST: u8 = 0x04;
    /// PSH: push.
    pub const PSH: u8 = 0x08;
    /// ACK: the acknowledgement field is significant.
    pub const ACK: u8 = 0x10;

    /// Whether every bit of `mask` is set.
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::SYN, "SYN"),
            (Self::FIN, "FIN"),
            (Self::RST, "RST"),
            (Self::PSH, "PSH"),
            (Self::ACK, "ACK"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, name)| *name)
            .collect();
        if set.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&set.join("|"))
        }
    }
}

fn truncated(what: &'static str, need: usize, got: usize) -> DecodeError {
    DecodeError::Truncated { what, need, got }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

// ------------------------------------------------------------------ views

/// An Ethernet II header (VLAN tags included) and its payload.
#[derive(Debug, Clone, Copy)]
pub struct EthernetView<'a> {
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> EthernetView<'a> {
    /// Checks that `buf` holds the MAC addresses, up to two VLAN tags and
    /// the EtherType after them.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut header_len = ETHERNET_HEADER_LEN;
        for _ in 0..=MAX_VLAN_TAGS {
            if buf.len() < header_len {
                return Err(truncated("Ethernet header", header_len, buf.len()));
            }
            let ethertype = be16(buf, header_len - 2);
            if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
                return Ok(Self { buf, header_len });
            }
            header_len += 4;
        }
        // Too many tags: report the last EtherType, which is a tag.
        Err(DecodeError::NotIpv4EtherType(ETHERTYPE_VLAN))
    }

    /// Destination MAC address.
    pub fn destination(&self) -> [u8; 6] {
        [
            self.buf[0],
            self.buf[1],
            self.buf[2],
            self.buf[3],
            self.buf[4],
            self.buf[5],
        ]
    }

    /// Source MAC address.
    pub fn source(&self) -> [u8; 6] {
        [
            self.buf[6],
            self.buf[7],
            self.buf[8],
            self.buf[9],
            self.buf[10],
            self.buf[11],
        ]
    }

    /// The EtherType after any VLAN tags.
    pub fn ethertype(&self) -> u16 {
        be16(self.buf, self.header_len - 2)
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }
}

/// An IPv4 header and what follows it.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4View<'a> {
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4View<'a> {
    /// Checks that `buf` starts with a whole IPv4 header (options included).
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let first = *buf
            .first()
            .ok_or(truncated("IPv4 header", IPV4_MIN_HEADER_LEN, 0))?;
        let version = first >> 4;
        if version != 4 {
            return Err(DecodeError::NotIpv4(version));
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER_LEN {
            return Err(DecodeError::BadHeaderLength(header_len));
        }
        if buf.len() < header_len {
            return Err(truncated("IPv4 header", header_len, buf.len()));
        }
        Ok(Self { buf, header_len })
    }

    /// Header length in bytes, options included (20..=60).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Total Length: the datagram as sent, bytes (often more than was
    /// captured).
    pub fn total_len(&self) -> u16 {
        be16(self.buf, 2)
    }

    /// Identification.
    pub fn id(&self) -> IpId {
        IpId(be16(self.buf, 4))
    }

    /// Don't Fragment.
    pub fn dont_fragment(&self) -> bool {
        self.buf[6] & 0x40 != 0
    }

    /// More Fragments.
    pub fn more_fragments(&self) -> bool {
        self.buf[6] & 0x20 != 0
    }

    /// Fragment offset, bytes.
    pub fn fragment_offset(&self) -> u32 {
        u32::from(be16(self.buf, 6) & 0x1fff) * 8
    }

    /// Time-to-live.
    pub fn ttl(&self) -> Ttl {
        Ttl(self.buf[8])
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buf[9])
    }

    /// Source address.
    pub fn source(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[12], self.buf[13], self.buf[14], self.buf[15])
    }

    /// Destination address.
    pub fn destination(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[16], self.buf[17], self.buf[18], self.buf[19])
    }

    /// The captured bytes after the header, cut at Total Length when that is
    /// shorter (Ethernet padding), never extended past the buffer.
    pub fn payload(&self) -> &'a [u8] {
        let end = usize::from(self.total_len()).clamp(self.header_len, self.buf.len());
        &self.buf[self.header_len..end]
    }

    /// The header's fields, owned.
    pub fn header(&self) -> Ipv4Header {
        Ipv4Header {
            src: self.source(),
            dst: self.destination(),
            id: self.id(),
            ttl: self.ttl(),
            total_len: self.total_len(),
            header_len: self.header_len,
            dont_fragment: self.dont_fragment(),
            more_fragments: self.more_fragments(),
            fragment_offset: self.fragment_offset(),
            protocol: self.protocol(),
        }
    }
}

/// A TCP header (the fixed 20 bytes; options may be cut off by the snap
/// length and are not read).
#[derive(Debug, Clone, Copy)]
pub struct TcpView<'a> {
    buf: &'a [u8],
}

impl<'a> TcpView<'a> {
    /// Checks that `buf` holds the fixed 20-byte TCP header.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < TCP_MIN_HEADER_LEN {
            return Err(truncated("TCP header", TCP_MIN_HEADER_LEN, buf.len()));
        }
        Ok(Self { buf })
    }

    /// Source port.
    pub fn source_port(&self) -> u16 {
        be16(self.buf, 0)
    }

    /// Destination port.
    pub fn destination_port(&self) -> u16 {
        be16(self.buf, 2)
    }

    /// Sequence number.
    pub fn seq(&self) -> TcpSeq {
        TcpSeq(be32(self.buf, 4))
    }

    /// Acknowledgement number (meaningful with ACK).
    pub fn ack(&self) -> TcpSeq {
        TcpSeq(be32(self.buf, 8))
    }

    /// Header length from the Data Offset field, bytes (options included).
    pub fn header_len(&self) -> usize {
        usize::from(self.buf[12] >> 4) * 4
    }

    /// Control flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buf[13])
    }
}

/// A UDP header and its payload.
#[derive(Debug, Clone, Copy)]
pub struct UdpView<'a> {
    buf: &'a [u8],
}

impl<'a> UdpView<'a> {
    /// Checks that `buf` holds the 8-byte UDP header.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < UDP_HEADER_LEN {
            return Err(truncated("UDP header", UDP_HEADER_LEN, buf.len()));
        }
        Ok(Self { buf })
    }

    /// Source port.
    pub fn source_port(&self) -> u16 {
        be16(self.buf, 0)
    }

    /// Destination port.
    pub fn destination_port(&self) -> u16 {
        be16(self.buf, 2)
    }

    /// Length field: header plus payload as sent, bytes.
    pub fn length(&self) -> u16 {
        be16(self.buf, 4)
    }

    /// The captured bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[UDP_HEADER_LEN..]
    }
}

/// An ICMP message.
#[derive(Debug, Clone, Copy)]
pub struct IcmpView<'a> {
    buf: &'a [u8],
}

impl<'a> IcmpView<'a> {
    /// ICMP type: echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// ICMP type: destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// ICMP type: source quench (deprecated, still an error message).
    pub const SOURCE_QUENCH: u8 = 4;
    /// ICMP type: redirect.
    pub const REDIRECT: u8 = 5;
    /// ICMP type: echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// ICMP type: time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// ICMP type: parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Destination-unreachable code: fragmentation needed and DF set.
    pub const CODE_FRAG_NEEDED: u8 = 4;

    /// Checks that `buf` holds the 8-byte ICMP header.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < ICMP_HEADER_LEN {
            return Err(truncated("ICMP header", ICMP_HEADER_LEN, buf.len()));
        }
        Ok(Self { buf })
    }

    /// Type.
    pub fn icmp_type(&self) -> u8 {
        self.buf[0]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.buf[1]
    }

    /// Echo identifier (bytes 4..6).
    pub fn echo_id(&self) -> EchoId {
        EchoId(be16(self.buf, 4))
    }

    /// Echo sequence number (bytes 6..8).
    pub fn echo_seq(&self) -> EchoSeq {
        EchoSeq(be16(self.buf, 6))
    }

    /// Next-hop MTU (bytes 6..8, RFC 1191), for fragmentation-needed errors.
    pub fn next_hop_mtu(&self) -> Mtu {
        Mtu(be16(self.buf, 6))
    }

    /// Whether this is an error message quoting the offending datagram.
    pub fn is_error(&self) -> bool {
        matches!(
            self.icmp_type(),
            Self::DEST_UNREACHABLE
                | Self::SOURCE_QUENCH
                | Self::REDIRECT
                | Self::TIME_EXCEEDED
                | Self::PARAMETER_PROBLEM
        )
    }

    /// The bytes after the 8-byte header (the quote, for errors).
    pub fn body(&self) -> &'a [u8] {
        &self.buf[ICMP_HEADER_LEN..]
    }
}

/// A VXLAN header (RFC 7348) and the Ethernet frame it carries.
#[derive(Debug, Clone, Copy)]
pub struct VxlanView<'a> {
    buf: &'a [u8],
}

impl<'a> VxlanView<'a> {
    /// Checks that `buf` holds the 8-byte VXLAN header.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < VXLAN_HEADER_LEN {
            return Err(truncated("VXLAN header", VXLAN_HEADER_LEN, buf.len()));
        }
        Ok(Self { buf })
    }

    /// The I flag: the VNI field is valid.
    pub fn vni_valid(&self) -> bool {
        self.buf[0] & 0x08 != 0
    }

    /// VXLAN network identifier.
    pub fn vni(&self) -> Vni {
        Vni(be32(self.buf, 4) >> 8)
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[VXLAN_HEADER_LEN..]
    }
}

// ------------------------------------------------------------ owned form

/// An IPv4 header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Identification.
    pub id: IpId,
    /// Time-to-live.
    pub ttl: Ttl,
    /// Total Length as sent, bytes.
    pub total_len: u16,
    /// Header length, bytes (20..=60).
    pub header_len: usize,
    /// Don't Fragment.
    pub dont_fragment: bool,
    /// More Fragments.
    pub more_fragments: bool,
    /// Fragment offset, bytes.
    pub fragment_offset: u32,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
}

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
    pub next_hop_mtu: Option<Mtu>,
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
    let ip = match link {
        LinkKind::RawIp => frame,
        LinkKind::Ethernet => ethernet_ipv4(frame)?,
        LinkKind::LinuxSll => cooked(
            frame,
            SLL_HEADER_LEN,
            SLL_HEADER_LEN - 2,
            "Linux cooked header",
        )?,
        LinkKind::LinuxSll2 => cooked(frame, SLL2_HEADER_LEN, 0, "Linux cooked v2 header")?,
    };
    decode_ipv4(ip, 0)
}

fn ethernet_ipv4(frame: &[u8]) -> Result<&[u8], DecodeError> {
    let eth = EthernetView::new(frame)?;
    match eth.ethertype() {
        ETHERTYPE_IPV4 => Ok(eth.payload()),
        other => Err(DecodeError::NotIpv4EtherType(other)),
    }
}

fn cooked<'a>(
    frame: &'a [u8],
    header_len: usize,
    protocol_at: usize,
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    if frame.len() < header_len {
        return Err(truncated(what, header_len, frame.len()));
    }
    match be16(frame, protocol_at) {
        ETHERTYPE_IPV4 => Ok(&frame[header_len..]),
        other => Err(DecodeError::NotIpv4EtherType(other)),
    }
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
    let ip = ethernet_ipv4(vxlan.payload()).ok()?;
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
        IcmpView::ECHO_REQUEST => IcmpMessage::EchoRequest {
            id: icmp.echo_id(),
            seq: icmp.echo_seq(),
        },
        IcmpView::ECHO_REPLY => IcmpMessage::EchoReply {
            id: icmp.echo_id(),
            seq: icmp.echo_seq(),
        },
        _ if icmp.is_error() => IcmpMessage::Error(IcmpError {
            icmp_type,
            code,
            next_hop_mtu: (icmp_type == IcmpView::DEST_UNREACHABLE
                && code == IcmpView::CODE_FRAG_NEEDED)
                .then(|| icmp.next_hop_mtu()),
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
    let transport = match rest.first_chunk::<8>() {
        Some(head) if ip.fragment_offset == 0 => match ip.protocol {
            IpProtocol::TCP => QuotedTransport::Tcp {
                src_port: be16(head, 0),
                dst_port: be16(head, 2),
                seq: TcpSeq(be32(head, 4)),
            },
            IpProtocol::UDP => QuotedTransport::Udp {
                src_port: be16(head, 0),
                dst_port: be16(head, 2),
                length: be16(head, 4),
            },
            IpProtocol::ICMP if head[0] == IcmpView::ECHO_REQUEST => QuotedTransport::Echo {
                id: EchoId(be16(head, 4)),
                seq: EchoSeq(be16(head, 6)),
            },
            _ => QuotedTransport::Other,
        },
        _ => QuotedTransport::Other,
    };
    Some(Quoted { ip, transport })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::testing::FrameBuilder;
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
        assert_eq!(e.next_hop_mtu, Some(Mtu(1450)));
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
    }
}
