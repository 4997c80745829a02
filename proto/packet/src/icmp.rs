//! ICMPv4: a bounds-checked view over a message, the echo request probemesh
//! sends, and what a raw ICMP socket hands back read as an answer to one of
//! our echoes ([`classify_echo`]). Built on `pnet_packet::icmp`; every view
//! is checked to hold the 8-byte header before pnet reads it, so no input,
//! however truncated or malformed, makes this module panic. It opens no
//! socket and reads no clock.

use std::fmt;
use std::net::Ipv4Addr;

use pnet_packet::icmp::destination_unreachable::DestinationUnreachablePacket;
use pnet_packet::icmp::echo_request::{EchoRequestPacket, MutableEchoRequestPacket};
use pnet_packet::icmp::{IcmpPacket, IcmpType};

use crate::checksum::internet_checksum;
use crate::ipv4::{IpProtocol, Ipv4View};
use crate::{DecodeError, truncated};

/// Length of the ICMP header (type, code, checksum, rest-of-header), bytes.
pub const ICMP_HEADER_LEN: usize = 8;

/// ICMP type: echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// ICMP type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// ICMP type: source quench (deprecated, still an error message).
pub const TYPE_SOURCE_QUENCH: u8 = 4;
/// ICMP type: redirect.
pub const TYPE_REDIRECT: u8 = 5;
/// ICMP type: echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// ICMP type: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// ICMP type: parameter problem.
pub const TYPE_PARAMETER_PROBLEM: u8 = 12;
/// Destination-unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Destination-unreachable code: fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;

/// ICMP echo identifier: tells one sender's echoes (and the errors quoting
/// them) apart from every other ICMP a host sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EchoId(pub u16);

/// ICMP echo sequence number (`icmp_seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EchoSeq(pub u16);

impl fmt::Display for EchoSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The next-hop MTU a fragmentation-needed error carries, bytes (RFC 1191).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHopMtu(pub u16);

impl fmt::Display for NextHopMtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An ICMP message (header and body), over borrowed bytes.
#[derive(Debug)]
pub struct IcmpView<'a> {
    buf: &'a [u8],
    packet: IcmpPacket<'a>,
    /// The same bytes read as an echo (identifier and sequence number live
    /// in the rest-of-header of every type).
    echo: EchoRequestPacket<'a>,
}

impl<'a> IcmpView<'a> {
    /// Checks that `buf` holds at least the 8-byte ICMP header.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let header = || truncated("ICMP header", ICMP_HEADER_LEN, buf.len());
        if buf.len() < ICMP_HEADER_LEN {
            return Err(header());
        }
        Ok(Self {
            buf,
            packet: IcmpPacket::new(buf).ok_or_else(header)?,
            echo: EchoRequestPacket::new(buf).ok_or_else(header)?,
        })
    }

    /// ICMP type.
    pub fn icmp_type(&self) -> u8 {
        self.packet.get_icmp_type().0
    }

    /// ICMP code.
    pub fn code(&self) -> u8 {
        self.packet.get_icmp_code().0
    }

    /// Echo identifier (bytes 4..6; meaningful for echo request/reply).
    pub fn echo_id(&self) -> EchoId {
        EchoId(self.echo.get_identifier())
    }

    /// Echo sequence number (bytes 6..8; meaningful for echo request/reply).
    pub fn echo_seq(&self) -> EchoSeq {
        EchoSeq(self.echo.get_sequence_number())
    }

    /// Next-hop MTU of a fragmentation-needed error (bytes 6..8, RFC 1191);
    /// `None` for other messages or when the router left it 0.
    pub fn next_hop_mtu(&self) -> Option<NextHopMtu> {
        if self.icmp_type() != TYPE_DEST_UNREACHABLE || self.code() != CODE_FRAG_NEEDED {
            return None;
        }
        match DestinationUnreachablePacket::new(self.buf)?.get_next_hop_mtu() {
            0 => None,
            mtu => Some(NextHopMtu(mtu)),
        }
    }

    /// Whether this is an error message quoting the offending datagram.
    pub fn is_error(&self) -> bool {
        matches!(
            self.icmp_type(),
            TYPE_DEST_UNREACHABLE
                | TYPE_SOURCE_QUENCH
                | TYPE_REDIRECT
                | TYPE_TIME_EXCEEDED
                | TYPE_PARAMETER_PROBLEM
        )
    }

    /// True when the checksum over the whole message is correct.
    pub fn checksum_ok(&self) -> bool {
        internet_checksum(self.buf) == 0
    }

    /// Message length in bytes, header included (what ping prints as "bytes").
    pub fn message_len(&self) -> usize {
        self.buf.len()
    }

    /// The body after the 8-byte header (the echo payload, or the quoted
    /// original datagram of an error).
    pub fn body(&self) -> &'a [u8] {
        self.buf.get(ICMP_HEADER_LEN..).unwrap_or_default()
    }
}

/// Builds an ICMPv4 echo request: 8-byte header with `id` and `seq`, then
/// `payload_len` bytes counting up from 0 and wrapping at 256 (ping's
/// pattern, easy to spot in a capture), checksum filled in.
pub fn build_echo_request(id: EchoId, seq: EchoSeq, payload_len: u16) -> Vec<u8> {
    let mut packet = vec![0u8; ICMP_HEADER_LEN + usize::from(payload_len)];
    for (i, byte) in packet[ICMP_HEADER_LEN..].iter_mut().enumerate() {
        // Wrapping on purpose: the pattern repeats every 256 bytes.
        *byte = i as u8;
    }
    if let Some(mut echo) = MutableEchoRequestPacket::new(&mut packet) {
        echo.set_icmp_type(IcmpType(TYPE_ECHO_REQUEST));
        echo.set_identifier(id.0);
        echo.set_sequence_number(seq.0);
    }
    let sum = internet_checksum(&packet);
    if let Some(mut echo) = MutableEchoRequestPacket::new(&mut packet) {
        echo.set_checksum(sum);
    }
    packet
}

/// An ICMP error that came back instead of an echo reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoError {
    /// ICMP type (3 destination unreachable, 11 time exceeded).
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Next-hop MTU of a fragmentation-needed error.
    pub mtu: Option<NextHopMtu>,
}

impl EchoError {
    /// What `ping` prints for this error ("Destination Host Unreachable",
    /// "Frag needed and DF set (mtu = 1440)", "Time to live exceeded").
    pub fn describe(&self) -> String {
        match (self.icmp_type, self.code) {
            (TYPE_DEST_UNREACHABLE, CODE_FRAG_NEEDED) => match self.mtu {
                Some(mtu) => format!("Frag needed and DF set (mtu = {mtu})"),
                None => "Frag needed and DF set".to_owned(),
            },
            (TYPE_DEST_UNREACHABLE, code) => match code {
                0 => "Destination Net Unreachable",
                1 => "Destination Host Unreachable",
                2 => "Destination Protocol Unreachable",
                3 => "Destination Port Unreachable",
                5 => "Source Route Failed",
                6 => "Destination Net Unknown",
                7 => "Destination Host Unknown",
                8 => "Source Host Isolated",
                9 => "Destination Net Prohibited",
                10 => "Destination Host Prohibited",
                11 => "Destination Net Unreachable for Type of Service",
                12 => "Destination Host Unreachable for Type of Service",
                13 => "Packet filtered",
                14 => "Precedence Violation",
                15 => "Precedence Cutoff",
                _ => return format!("Dest Unreachable, Bad Code: {code}"),
            }
            .to_owned(),
            (TYPE_TIME_EXCEEDED, 0) => "Time to live exceeded".to_owned(),
            (TYPE_TIME_EXCEEDED, 1) => "Frag reassembly time exceeded".to_owned(),
            (icmp_type, code) => format!("ICMP type {icmp_type} code {code}"),
        }
    }
}

/// What a received datagram means for the sender whose echoes carry a given
/// [`EchoId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoResponse {
    /// An echo reply to one of our echoes.
    EchoReply {
        /// Sequence number it answers.
        seq: EchoSeq,
        /// Who sent it.
        from: Ipv4Addr,
        /// TTL left on arrival, hops.
        ttl: u8,
        /// ICMP bytes (header + payload).
        bytes: usize,
        /// False when the ICMP checksum is wrong (ping's "BAD CHECKSUM").
        checksum_ok: bool,
    },
    /// An ICMP error quoting one of our echoes.
    Error {
        /// Sequence number of the quoted echo.
        seq: EchoSeq,
        /// The router or host that sent the error.
        from: Ipv4Addr,
        /// TTL left on arrival, hops.
        ttl: u8,
        /// ICMP bytes (header + quoted datagram).
        bytes: usize,
        /// The error.
        error: EchoError,
    },
}

/// Reads an IPv4 datagram received on a raw ICMP socket. Returns `None` for
/// anything that is not a reply to, or an error about, an echo carrying `id`
/// (other processes' pings, our own requests seen on loopback, garbage).
/// Errors are matched through the quoted original IPv4 header and the first
/// 8 bytes of the echo it carried.
pub fn classify_echo(datagram: &[u8], id: EchoId) -> Option<EchoResponse> {
    let ip = Ipv4View::new(datagram).ok()?;
    if ip.protocol() != IpProtocol::ICMP {
        return None;
    }
    let icmp = IcmpView::new(ip.payload()).ok()?;
    match icmp.icmp_type() {
        TYPE_ECHO_REPLY if icmp.echo_id() == id => Some(EchoResponse::EchoReply {
            seq: icmp.echo_seq(),
            from: ip.source(),
            ttl: ip.ttl().0,
            bytes: icmp.message_len(),
            checksum_ok: icmp.checksum_ok(),
        }),
        TYPE_DEST_UNREACHABLE | TYPE_TIME_EXCEEDED => {
            let quoted = Ipv4View::new(icmp.body()).ok()?;
            if quoted.protocol() != IpProtocol::ICMP {
                return None;
            }
            // The quote holds the original header plus at least 8 bytes of
            // what followed, which is exactly our echo header.
            let original = IcmpView::new(icmp.body().get(quoted.header_len()..)?).ok()?;
            if original.icmp_type() != TYPE_ECHO_REQUEST || original.echo_id() != id {
                return None;
            }
            Some(EchoResponse::Error {
                seq: original.echo_seq(),
                from: ip.source(),
                ttl: ip.ttl().0,
                bytes: icmp.message_len(),
                error: EchoError {
                    icmp_type: icmp.icmp_type(),
                    code: icmp.code(),
                    mtu: icmp.next_hop_mtu(),
                },
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::Ipv4View;
    use crate::testing::{echo_reply_to, icmp_error, ipv4};
    use proptest::prelude::*;

    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
    const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const ID: EchoId = EchoId(0xbeef);

    /// The largest ICMP payload an IPv4 datagram carries (65535 minus the
    /// IPv4 and ICMP headers).
    const MAX_PAYLOAD: u16 = 65_507;

    #[test]
    fn echo_request_has_header_pattern_and_valid_internet_checksum() {
        let p = build_echo_request(ID, EchoSeq(7), 56);
        assert_eq!(p.len(), 64);
        assert_eq!(&p[..2], &[8, 0]);
        assert_eq!(&p[4..8], &[0xbe, 0xef, 0, 7]);
        assert_eq!(p[8], 0);
        assert_eq!(p[8 + 55], 55);
        assert_eq!(
            internet_checksum(&p),
            0,
            "checksum field makes the sum zero"
        );
        let big = build_echo_request(ID, EchoSeq(1), MAX_PAYLOAD);
        assert_eq!(big.len(), 65515);
        assert_eq!(big[8 + 256], 0, "pattern wraps at 256");
        assert_eq!(internet_checksum(&big), 0);
    }

    #[test]
    fn echo_reply_hand_built_bytes() {
        // 127.0.0.1 -> 127.0.0.1, TTL 64, echo reply id 0xbeef seq 3, 4 payload bytes.
        let datagram: [u8; 32] = [
            0x45, 0x00, 0x00, 0x20, 0x12, 0x34, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 127, 0, 0, 1,
            127, 0, 0, 1, // IPv4
            0x00, 0x00, 0x00, 0x00, 0xbe, 0xef, 0x00, 0x03, 0, 1, 2, 3, // ICMP
        ];
        let mut datagram = datagram;
        let sum = internet_checksum(&datagram[20..]);
        datagram[22..24].copy_from_slice(&sum.to_be_bytes());
        let got = classify_echo(&datagram, ID).unwrap();
        assert_eq!(
            got,
            EchoResponse::EchoReply {
                seq: EchoSeq(3),
                from: Ipv4Addr::LOCALHOST,
                ttl: 64,
                bytes: 12,
                checksum_ok: true
            }
        );
        datagram[31] ^= 0xff;
        assert!(matches!(
            classify_echo(&datagram, ID),
            Some(EchoResponse::EchoReply {
                checksum_ok: false,
                ..
            })
        ));
        assert_eq!(
            classify_echo(&datagram, EchoId(1)),
            None,
            "another task's reply"
        );
    }

    #[test]
    fn our_own_request_on_loopback_is_ignored() {
        let request = build_echo_request(ID, EchoSeq(1), 8);
        assert_eq!(classify_echo(&ipv4(ME, ME, 64, &request), ID), None);
    }

    #[test]
    fn frag_needed_carries_mtu_1440_and_matches_the_quoted_echo() {
        let request = build_echo_request(ID, EchoSeq(9), 1472);
        let original = ipv4(ME, TARGET, 63, &request);
        let error = icmp_error(3, 4, [0, 0, 0x05, 0xa0], &original);
        let got = classify_echo(&ipv4(ROUTER, ME, 64, &error), ID).unwrap();
        let expected_error = EchoError {
            icmp_type: 3,
            code: 4,
            mtu: Some(NextHopMtu(1440)),
        };
        assert_eq!(
            got,
            EchoResponse::Error {
                seq: EchoSeq(9),
                from: ROUTER,
                ttl: 64,
                bytes: 36,
                error: expected_error
            }
        );
        assert_eq!(
            expected_error.describe(),
            "Frag needed and DF set (mtu = 1440)"
        );
        assert_eq!(
            classify_echo(&ipv4(ROUTER, ME, 64, &error), EchoId(2)),
            None
        );
    }

    #[test]
    fn time_exceeded_matches_the_quoted_echo() {
        let request = build_echo_request(ID, EchoSeq(2), 56);
        let error = icmp_error(11, 0, [0; 4], &ipv4(ME, TARGET, 1, &request));
        let got = classify_echo(&ipv4(ROUTER, ME, 255, &error), ID).unwrap();
        let EchoResponse::Error {
            seq, from, error, ..
        } = got
        else {
            panic!("{got:?}")
        };
        assert_eq!((seq, from), (EchoSeq(2), ROUTER));
        assert_eq!(
            error,
            EchoError {
                icmp_type: 11,
                code: 0,
                mtu: None
            }
        );
        assert_eq!(error.describe(), "Time to live exceeded");
    }

    #[test]
    fn host_unreachable_is_described_like_ping() {
        let request = build_echo_request(ID, EchoSeq(1), 56);
        let error = icmp_error(3, 1, [0; 4], &ipv4(ME, TARGET, 64, &request));
        let Some(EchoResponse::Error { error, .. }) =
            classify_echo(&ipv4(ROUTER, ME, 64, &error), ID)
        else {
            panic!("not matched")
        };
        assert_eq!(error.mtu, None);
        assert_eq!(error.describe(), "Destination Host Unreachable");
    }

    #[test]
    fn error_quoting_a_udp_datagram_is_not_ours() {
        let mut original = ipv4(ME, TARGET, 64, &build_echo_request(ID, EchoSeq(1), 8));
        original[9] = 17;
        let error = icmp_error(3, 3, [0; 4], &original);
        assert_eq!(classify_echo(&ipv4(ROUTER, ME, 64, &error), ID), None);
    }

    #[test]
    fn truncated_input_is_rejected_at_every_length() {
        let request = build_echo_request(ID, EchoSeq(9), 1472);
        let error = icmp_error(3, 4, [0, 0, 0x05, 0xa0], &ipv4(ME, TARGET, 63, &request));
        let full = ipv4(ROUTER, ME, 64, &error);
        for len in 0..full.len() {
            assert_eq!(classify_echo(&full[..len], ID), None, "length {len}");
        }
        assert!(classify_echo(&full, ID).is_some());
        // The IPv4 header's own refusals are ipv4.rs's tests.
        assert!(IcmpView::new(&[0; 7]).is_err());
    }

    #[test]
    fn total_length_shorter_or_longer_than_the_buffer_is_bounded() {
        let mut d = ipv4(
            TARGET,
            ME,
            64,
            &echo_reply_to(&build_echo_request(ID, EchoSeq(1), 8)),
        );
        d[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(Ipv4View::new(&d).unwrap().payload().len(), 4);
        assert_eq!(classify_echo(&d, ID), None, "cut below an ICMP header");
        d[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Ipv4View::new(&d).unwrap().payload().len(), 16);
        d[2..4].copy_from_slice(&0u16.to_be_bytes());
        assert!(Ipv4View::new(&d).unwrap().payload().is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), id in any::<u16>()) {
            let _ = classify_echo(&bytes, EchoId(id));
            if let Ok(ip) = Ipv4View::new(&bytes) {
                let _ = (ip.source(), ip.destination(), ip.ttl(), ip.total_len(), ip.payload());
            }
            if let Ok(icmp) = IcmpView::new(&bytes) {
                let _ = (icmp.next_hop_mtu(), icmp.checksum_ok(), icmp.body(), icmp.echo_seq());
            }
        }

        #[test]
        fn random_bytes_behind_a_valid_header_never_panic(
            ihl in 0u8..16,
            tail in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut d = vec![0x40 | ihl, 0, 0, 0, 0, 0, 0, 0, 64, 1];
            d.extend_from_slice(&tail);
            let _ = classify_echo(&d, EchoId(0));
        }

        #[test]
        fn echo_replies_round_trip(id in any::<u16>(), seq in any::<u16>(), n in 0u16..2000) {
            let request = build_echo_request(EchoId(id), EchoSeq(seq), n);
            let d = ipv4(TARGET, ME, 60, &echo_reply_to(&request));
            let got = classify_echo(&d, EchoId(id));
            prop_assert_eq!(got, Some(EchoResponse::EchoReply {
                seq: EchoSeq(seq), from: TARGET, ttl: 60, bytes: 8 + usize::from(n), checksum_ok: true,
            }));
        }
    }
}
