//! Views over the headers of captured frames, each checked for length once
//! at construction so its accessors never index out of bounds: the link
//! header (Ethernet II with 802.1Q/802.1ad tags, Linux cooked v1/v2, or
//! none), TCP, UDP and VXLAN. IPv4 and ICMP views live in [`crate::ipv4`]
//! and [`crate::icmp`]. Built on `pnet_packet`; the decoder walks a
//! frame through them. No I/O.

use std::fmt;

use pcap_file::DataLink;
use pnet_packet::ethernet::{EtherType, EthernetPacket};
use pnet_packet::sll::SLLPacket;
use pnet_packet::sll2::SLL2Packet;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;
use pnet_packet::vlan::VlanPacket;
use pnet_packet::vxlan::VxlanPacket;

use crate::{DecodeError, truncated};

/// Ethernet II header length, bytes.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// TCP header length without options, bytes.
pub const TCP_MIN_HEADER_LEN: usize = 20;
/// UDP header length, bytes.
pub const UDP_HEADER_LEN: usize = 8;
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
/// Most VLAN tags skipped in one Ethernet header.
const MAX_VLAN_TAGS: usize = 2;
/// Bytes of one VLAN tag (TCI and the EtherType after it).
const VLAN_TAG_LEN: usize = 4;
/// Linux cooked capture v1 header length, bytes.
const SLL_HEADER_LEN: usize = 16;
/// Linux cooked capture v2 header length, bytes.
const SLL2_HEADER_LEN: usize = 20;

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

impl LinkKind {
    /// The kind of a pcapng interface's link type; `None` for link types
    /// the decoder does not read.
    pub fn from_datalink(link: DataLink) -> Option<Self> {
        match link {
            DataLink::ETHERNET => Some(Self::Ethernet),
            DataLink::RAW | DataLink::IPV4 => Some(Self::RawIp),
            DataLink::LINUX_SLL => Some(Self::LinuxSll),
            DataLink::LINUX_SLL2 => Some(Self::LinuxSll2),
            _ => None,
        }
    }

    /// The IPv4 datagram inside `frame`: after the link header, when the
    /// link header says IPv4 follows.
    pub fn ipv4_payload(self, frame: &[u8]) -> Result<&[u8], DecodeError> {
        match self {
            Self::RawIp => Ok(frame),
            Self::Ethernet => {
                let eth = EthernetView::new(frame)?;
                match eth.ethertype() {
                    ETHERTYPE_IPV4 => Ok(eth.payload()),
                    other => Err(DecodeError::NotIpv4EtherType(other)),
                }
            }
            // pnet_packet 0.35 under-counts the cooked headers' minimum
            // size (its 8-byte address field is not counted), so `new`
            // accepts a short frame and the protocol accessor then indexes
            // past its end (found by `random_bytes_never_panic`). The
            // length guard in front of `new` makes that impossible.
            Self::LinuxSll => {
                let sll = Some(frame)
                    .filter(|f| f.len() >= SLL_HEADER_LEN)
                    .and_then(SLLPacket::new)
                    .ok_or(truncated(
                        "Linux cooked header",
                        SLL_HEADER_LEN,
                        frame.len(),
                    ))?;
                cooked_ipv4(frame, SLL_HEADER_LEN, sll.get_protocol())
            }
            Self::LinuxSll2 => {
                let sll2 = Some(frame)
                    .filter(|f| f.len() >= SLL2_HEADER_LEN)
                    .and_then(SLL2Packet::new)
                    .ok_or(truncated(
                        "Linux cooked v2 header",
                        SLL2_HEADER_LEN,
                        frame.len(),
                    ))?;
                cooked_ipv4(frame, SLL2_HEADER_LEN, sll2.get_protocol_type())
            }
        }
    }
}

fn cooked_ipv4(frame: &[u8], header_len: usize, protocol: EtherType) -> Result<&[u8], DecodeError> {
    match protocol.0 {
        ETHERTYPE_IPV4 => Ok(frame.get(header_len..).unwrap_or_default()),
        other => Err(DecodeError::NotIpv4EtherType(other)),
    }
}

/// An Ethernet II header (VLAN tags included) and its payload.
#[derive(Debug)]
pub struct EthernetView<'a> {
    buf: &'a [u8],
    packet: EthernetPacket<'a>,
    header_len: usize,
    ethertype: u16,
}

impl<'a> EthernetView<'a> {
    /// Checks that `buf` holds the MAC addresses, up to two VLAN tags and
    /// the EtherType after them.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let packet = EthernetPacket::new(buf).ok_or(truncated(
            "Ethernet header",
            ETHERNET_HEADER_LEN,
            buf.len(),
        ))?;
        let mut header_len = ETHERNET_HEADER_LEN;
        let mut ethertype = packet.get_ethertype().0;
        for _ in 0..MAX_VLAN_TAGS {
            if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
                return Ok(Self {
                    buf,
                    packet,
                    header_len,
                    ethertype,
                });
            }
            let tag = buf
                .get(header_len..)
                .and_then(VlanPacket::new)
                .ok_or(truncated(
                    "Ethernet header",
                    header_len + VLAN_TAG_LEN,
                    buf.len(),
                ))?;
            ethertype = tag.get_ethertype().0;
            header_len += VLAN_TAG_LEN;
        }
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            // Too many tags: report the last EtherType, which is a tag.
            return Err(DecodeError::NotIpv4EtherType(ETHERTYPE_VLAN));
        }
        Ok(Self {
            buf,
            packet,
            header_len,
            ethertype,
        })
    }

    /// Destination MAC address.
    pub fn destination(&self) -> [u8; 6] {
        self.packet.get_destination().octets()
    }

    /// Source MAC address.
    pub fn source(&self) -> [u8; 6] {
        self.packet.get_source().octets()
    }

    /// The EtherType after any VLAN tags.
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.header_len..).unwrap_or_default()
    }
}

/// A TCP sequence or acknowledgement number (modulo 2^32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpSeq(pub u32);

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

/// A TCP header (the fixed 20 bytes; options may be cut off by the snap
/// length and are not read).
#[derive(Debug)]
pub struct TcpView<'a> {
    packet: TcpPacket<'a>,
}

impl<'a> TcpView<'a> {
    /// Checks that `buf` holds the fixed 20-byte TCP header.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let packet =
            TcpPacket::new(buf).ok_or(truncated("TCP header", TCP_MIN_HEADER_LEN, buf.len()))?;
        Ok(Self { packet })
    }

    /// Source port.
    pub fn source_port(&self) -> u16 {
        self.packet.get_source()
    }

    /// Destination port.
    pub fn destination_port(&self) -> u16 {
        self.packet.get_destination()
    }

    /// Sequence number.
    pub fn seq(&self) -> TcpSeq {
        TcpSeq(self.packet.get_sequence())
    }

    /// Acknowledgement number (meaningful with ACK).
    pub fn ack(&self) -> TcpSeq {
        TcpSeq(self.packet.get_acknowledgement())
    }

    /// Header length from the Data Offset field, bytes (options included;
    /// read as stated, even below 20 or past the captured bytes).
    pub fn header_len(&self) -> usize {
        usize::from(self.packet.get_data_offset()) * 4
    }

    /// Control flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.packet.get_flags())
    }
}

/// A UDP header and its payload.
#[derive(Debug)]
pub struct UdpView<'a> {
    buf: &'a [u8],
    packet: UdpPacket<'a>,
}

impl<'a> UdpView<'a> {
    /// Checks that `buf` holds the 8-byte UDP header.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let packet =
            UdpPacket::new(buf).ok_or(truncated("UDP header", UDP_HEADER_LEN, buf.len()))?;
        Ok(Self { buf, packet })
    }

    /// Source port.
    pub fn source_port(&self) -> u16 {
        self.packet.get_source()
    }

    /// Destination port.
    pub fn destination_port(&self) -> u16 {
        self.packet.get_destination()
    }

    /// Length field: header plus payload as sent, bytes.
    pub fn length(&self) -> u16 {
        self.packet.get_length()
    }

    /// The captured bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(UDP_HEADER_LEN..).unwrap_or_default()
    }
}

/// VXLAN network identifier (24 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(pub u32);

/// A VXLAN header (RFC 7348) and the Ethernet frame it carries.
#[derive(Debug)]
pub struct VxlanView<'a> {
    buf: &'a [u8],
    packet: VxlanPacket<'a>,
}

impl<'a> VxlanView<'a> {
    /// Checks that `buf` holds the 8-byte VXLAN header.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let packet =
            VxlanPacket::new(buf).ok_or(truncated("VXLAN header", VXLAN_HEADER_LEN, buf.len()))?;
        Ok(Self { buf, packet })
    }

    /// The I flag: the VNI field is valid.
    pub fn vni_valid(&self) -> bool {
        self.packet.get_flags() & 0x08 != 0
    }

    /// VXLAN network identifier.
    pub fn vni(&self) -> Vni {
        Vni(self.packet.get_vni())
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(VXLAN_HEADER_LEN..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cooked_headers_are_refused_before_pnet_reads_them() {
        // pnet 0.35 would accept these and index past their end.
        for len in 0..SLL_HEADER_LEN {
            assert_eq!(
                LinkKind::LinuxSll.ipv4_payload(&vec![0x08; len]),
                Err(truncated("Linux cooked header", SLL_HEADER_LEN, len))
            );
        }
        for len in 0..SLL2_HEADER_LEN {
            assert_eq!(
                LinkKind::LinuxSll2.ipv4_payload(&vec![0x08; len]),
                Err(truncated("Linux cooked v2 header", SLL2_HEADER_LEN, len))
            );
        }
        let mut sll = vec![0u8; SLL_HEADER_LEN + 1];
        sll[14..16].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(LinkKind::LinuxSll.ipv4_payload(&sll), Ok(&[0u8][..]));
    }

    #[test]
    fn two_vlan_tags_are_skipped_and_a_third_is_refused() {
        let mut frame = vec![0u8; 12];
        for _ in 0..2 {
            frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            frame.extend_from_slice(&[0, 0x64]);
        }
        frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        frame.push(0x45);
        let eth = EthernetView::new(&frame).unwrap();
        assert_eq!(
            (eth.ethertype(), eth.payload()),
            (ETHERTYPE_IPV4, &[0x45][..])
        );
        assert_eq!(
            EthernetView::new(&frame[..20]).unwrap_err(),
            truncated("Ethernet header", 22, 20)
        );
        frame.splice(20..20, [0x81, 0x00, 0, 0x64]);
        assert_eq!(
            EthernetView::new(&frame).unwrap_err(),
            DecodeError::NotIpv4EtherType(ETHERTYPE_VLAN)
        );
    }
}
