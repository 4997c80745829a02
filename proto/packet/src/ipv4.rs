//! IPv4 headers: a bounds-checked view over captured or received bytes, and
//! the owned form of its fields. Built on `pnet_packet::ipv4`; the guards in
//! [`Ipv4View::new`] (version, IHL, bytes at hand) run before pnet sees the
//! bytes, because pnet reads an IHL below 5 as 5 and does not check the
//! version. No IPv6, no options, no reassembly.

use std::fmt;
use std::net::Ipv4Addr;

use pnet_packet::Packet as _;
use pnet_packet::ipv4::{Ipv4Flags, Ipv4Packet};

use crate::{DecodeError, truncated};

/// IPv4 header length without options, bytes.
pub const IPV4_MIN_HEADER_LEN: usize = 20;

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

/// An IPv4 header and what follows it, over borrowed bytes.
#[derive(Debug)]
pub struct Ipv4View<'a> {
    buf: &'a [u8],
    header_len: usize,
    packet: Ipv4Packet<'a>,
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
        let packet = Ipv4Packet::new(buf)
            .filter(|_| buf.len() >= header_len)
            .ok_or(truncated("IPv4 header", header_len, buf.len()))?;
        Ok(Self {
            buf,
            header_len,
            packet,
        })
    }

    /// Header length in bytes, options included (20..=60).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Total Length: the datagram as sent, bytes (often more than was
    /// captured, or than an ICMP error quotes).
    pub fn total_len(&self) -> u16 {
        self.packet.get_total_length()
    }

    /// Identification.
    pub fn id(&self) -> IpId {
        IpId(self.packet.get_identification())
    }

    /// Don't Fragment.
    pub fn dont_fragment(&self) -> bool {
        self.packet.get_flags() & Ipv4Flags::DontFragment != 0
    }

    /// More Fragments.
    pub fn more_fragments(&self) -> bool {
        self.packet.get_flags() & Ipv4Flags::MoreFragments != 0
    }

    /// Fragment offset, bytes.
    pub fn fragment_offset(&self) -> u32 {
        u32::from(self.packet.get_fragment_offset()) * 8
    }

    /// Time-to-live left when the datagram was seen.
    pub fn ttl(&self) -> Ttl {
        Ttl(self.packet.get_ttl())
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.packet.get_next_level_protocol().0)
    }

    /// Source address.
    pub fn source(&self) -> Ipv4Addr {
        self.packet.get_source()
    }

    /// Destination address.
    pub fn destination(&self) -> Ipv4Addr {
        self.packet.get_destination()
    }

    /// The bytes after the header, cut at Total Length when that is shorter
    /// than the buffer (Ethernet padding), never extended past the buffer.
    pub fn payload(&self) -> &'a [u8] {
        // pnet's payload borrows the view; the same bounds over `buf` keep
        // the buffer's lifetime.
        let len = self.packet.payload().len();
        self.buf
            .get(self.header_len..self.header_len + len)
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ipv4;
    use proptest::prelude::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);

    #[test]
    fn guards_refuse_what_is_not_a_whole_ipv4_header() {
        let d = ipv4(A, B, 64, &[0; 8]);
        assert_eq!(
            Ipv4View::new(&d[..10]).unwrap_err(),
            DecodeError::Truncated {
                what: "IPv4 header",
                need: 20,
                got: 10
            }
        );
        assert_eq!(
            Ipv4View::new(&[0x60; 40]).unwrap_err(),
            DecodeError::NotIpv4(6)
        );
        assert_eq!(
            Ipv4View::new(&[0x44; 40]).unwrap_err(),
            DecodeError::BadHeaderLength(16)
        );
        let mut options = d.clone();
        options[0] = 0x46;
        assert_eq!(
            Ipv4View::new(&options[..22]).unwrap_err(),
            DecodeError::Truncated {
                what: "IPv4 header",
                need: 24,
                got: 22
            }
        );
        assert_eq!(Ipv4View::new(&options).unwrap().payload().len(), 4);
    }

    #[test]
    fn fields_read_back() {
        let d = ipv4(A, B, 63, &[1, 2, 3, 4]);
        let v = Ipv4View::new(&d).unwrap();
        let h = v.header();
        assert_eq!((h.src, h.dst, h.ttl, h.total_len), (A, B, Ttl(63), 24));
        assert!(h.dont_fragment && !h.more_fragments);
        assert_eq!((h.fragment_offset, h.protocol), (0, IpProtocol::ICMP));
        assert_eq!(v.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn total_length_shorter_or_longer_than_the_buffer_is_bounded() {
        let mut d = ipv4(A, B, 64, &[0; 16]);
        d[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(Ipv4View::new(&d).unwrap().payload().len(), 4);
        d[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Ipv4View::new(&d).unwrap().payload().len(), 16);
        d[2..4].copy_from_slice(&0u16.to_be_bytes());
        assert!(Ipv4View::new(&d).unwrap().payload().is_empty());
    }

    proptest! {
        #[test]
        fn random_and_cut_headers_never_panic(
            ihl in 0u8..16,
            total in any::<u16>(),
            tail in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut d = vec![0x40 | ihl, 0];
            d.extend_from_slice(&total.to_be_bytes());
            d.extend_from_slice(&tail);
            for cut in 0..=d.len() {
                if let Ok(v) = Ipv4View::new(&d[..cut]) {
                    prop_assert!(v.header_len() >= 20 && v.header_len() <= cut);
                    let _ = v.header();
                    prop_assert!(v.payload().len() <= cut - v.header_len());
                }
            }
        }
    }
}
