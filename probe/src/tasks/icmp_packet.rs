//! ICMPv4 echo on the wire, sans-IO: build an echo request, and read what a
//! raw ICMP socket hands back (an IPv4 datagram, header included) as an echo
//! reply or as an ICMP error quoting one of our echoes.
//!
//! Bytes stay behind the [`Ipv4View`] and [`IcmpView`] view types, whose
//! accessors are bounds-checked at construction: no input, however truncated
//! or malformed, makes them panic. This module opens no socket and reads no
//! clock.

use std::net::Ipv4Addr;

use super::types::{EchoId, Mtu, PayloadSize, Seq};

/// Length of the ICMP header (type, code, checksum, rest-of-header), bytes.
pub const ICMP_HEADER_LEN: usize = 8;
/// Length of an IPv4 header without options, bytes.
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;

/// ICMP type: echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// ICMP type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// ICMP type: echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// ICMP type: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Destination-unreachable code: fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;

/// Why bytes could not be read as the expected header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
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
    /// The IP version nibble is not 4.
    #[error("not an IPv4 header (version {0})")]
    NotIpv4(u8),
    /// The IHL field gives a header shorter than 20 bytes.
    #[error("IPv4 header length {0} bytes is below 20")]
    BadHeaderLength(usize),
}

/// The Internet checksum (RFC 1071) of `data`: one's complement of the one's
/// complement sum of its 16-bit big-endian words, an odd last byte padded
/// with zero. A buffer whose checksum field is correct sums to 0.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above folded `sum` into 16 bits.
    !(sum as u16)
}

/// Builds an ICMPv4 echo request: 8-byte header with `id` and `seq`, then
/// `size` payload bytes counting up from 0 and wrapping at 256 (ping's
/// pattern, easy to spot in a capture), checksum filled in.
pub fn build_echo_request(id: EchoId, seq: Seq, size: PayloadSize) -> Vec<u8> {
    let mut packet = vec![0u8; ICMP_HEADER_LEN + usize::from(size.get())];
    packet[0] = TYPE_ECHO_REQUEST;
    packet[4..6].copy_from_slice(&id.0.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.0.to_be_bytes());
    for (i, byte) in packet[ICMP_HEADER_LEN..].iter_mut().enumerate() {
        // Wrapping on purpose: the pattern repeats every 256 bytes.
        *byte = i as u8;
    }
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// An IPv4 header and what follows it, over borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4View<'a> {
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4View<'a> {
    /// Checks that `buf` starts with a whole IPv4 header (options included).
    pub fn new(buf: &'a [u8]) -> Result<Self, ParseError> {
        let first = *buf.first().ok_or(ParseError::Truncated {
            what: "IPv4 header",
            need: IPV4_MIN_HEADER_LEN,
            got: 0,
        })?;
        let version = first >> 4;
        if version != 4 {
            return Err(ParseError::NotIpv4(version));
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER_LEN {
            return Err(ParseError::BadHeaderLength(header_len));
        }
        if buf.len() < header_len {
            return Err(ParseError::Truncated {
                what: "IPv4 header",
                need: header_len,
                got: buf.len(),
            });
        }
        Ok(Self { buf, header_len })
    }

    /// Header length in bytes, options included (20..=60).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The Total Length field in bytes (may exceed the bytes at hand when the
    /// datagram is quoted in an ICMP error).
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }

    /// Time-to-live left when the datagram arrived, in hops.
    pub fn ttl(&self) -> u8 {
        self.buf[8]
    }

    /// IP protocol number of the payload.
    pub fn protocol(&self) -> u8 {
        self.buf[9]
    }

    /// Source address.
    pub fn source(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[12], self.buf[13], self.buf[14], self.buf[15])
    }

    /// Destination address.
    pub fn destination(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[16], self.buf[17], self.buf[18], self.buf[19])
    }

    /// The bytes after the header, cut at Total Length when it is shorter
    /// than the buffer (and never extended past the buffer).
    pub fn payload(&self) -> &'a [u8] {
        let end = usize::from(self.total_len()).clamp(self.header_len, self.buf.len());
        &self.buf[self.header_len..end]
    }
}

/// An ICMP message (header and body), over borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct IcmpView<'a> {
    buf: &'a [u8],
}

impl<'a> IcmpView<'a> {
    /// Checks that `buf` holds at least the 8-byte ICMP header.
    pub fn new(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < ICMP_HEADER_LEN {
            return Err(ParseError::Truncated {
                what: "ICMP header",
                need: ICMP_HEADER_LEN,
                got: buf.len(),
            });
        }
        Ok(Self { buf })
    }

    /// ICMP type.
    pub fn icmp_type(&self) -> u8 {
        self.buf[0]
    }

    /// ICMP code.
    pub fn code(&self) -> u8 {
        self.buf[1]
    }

    /// Echo identifier (bytes 4..6; meaningful for echo request/reply).
    pub fn identifier(&self) -> EchoId {
        EchoId(u16::from_be_bytes([self.buf[4], self.buf[5]]))
    }

    /// Echo sequence number (bytes 6..8; meaningful for echo request/reply).
    pub fn sequence(&self) -> Seq {
        Seq(u16::from_be_bytes([self.buf[6], self.buf[7]]))
    }

    /// Next-hop MTU of a fragmentation-needed error (bytes 6..8, RFC 1191);
    /// `None` for other messages or when the router left it 0.
    pub fn next_hop_mtu(&self) -> Option<Mtu> {
        if self.icmp_type() != TYPE_DEST_UNREACHABLE || self.code() != CODE_FRAG_NEEDED {
            return None;
        }
        match u16::from_be_bytes([self.buf[6], self.buf[7]]) {
            0 => None,
            mtu => Some(Mtu(u32::from(mtu))),
        }
    }

    /// True when the checksum over the whole message is correct.
    pub fn checksum_ok(&self) -> bool {
        checksum(self.buf) == 0
    }

    /// Message length in bytes, header included (what ping prints as "bytes").
    pub fn message_len(&self) -> usize {
        self.buf.len()
    }

    /// The body after the 8-byte header (the echo payload, or the quoted
    /// original datagram of an error).
    pub fn body(&self) -> &'a [u8] {
        &self.buf[ICMP_HEADER_LEN..]
    }
}

/// An ICMP error that came back instead of an echo reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// ICMP type (3 destination unreachable, 11 time exceeded).
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Next-hop MTU of a fragmentation-needed error.
    pub mtu: Option<Mtu>,
}

impl IcmpError {
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

/// What a received datagram means for the ping whose echoes carry a given
/// [`EchoId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// An echo reply to one of our echoes.
    EchoReply {
        /// Sequence number it answers.
        seq: Seq,
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
        seq: Seq,
        /// The router or host that sent the error.
        from: Ipv4Addr,
        /// TTL left on arrival, hops.
        ttl: u8,
        /// ICMP bytes (header + quoted datagram).
        bytes: usize,
        /// The error.
        error: IcmpError,
    },
}

/// Reads an IPv4 datagram received on a raw ICMP socket. Returns `None` for
/// anything that is not a reply to, or an error about, an echo carrying `id`
/// (other processes' pings, our own requests seen on loopback, garbage).
/// Errors are matched through the quoted original IPv4 header and the first
/// 8 bytes of the echo it carried.
pub fn classify(datagram: &[u8], id: EchoId) -> Option<Response> {
    let ip = Ipv4View::new(datagram).ok()?;
    if ip.protocol() != IPPROTO_ICMP {
        return None;
    }
    let icmp = IcmpView::new(ip.payload()).ok()?;
    match icmp.icmp_type() {
        TYPE_ECHO_REPLY if icmp.identifier() == id => Some(Response::EchoReply {
            seq: icmp.sequence(),
            from: ip.source(),
            ttl: ip.ttl(),
            bytes: icmp.message_len(),
            checksum_ok: icmp.checksum_ok(),
        }),
        TYPE_DEST_UNREACHABLE | TYPE_TIME_EXCEEDED => {
            let quoted = Ipv4View::new(icmp.body()).ok()?;
            if quoted.protocol() != IPPROTO_ICMP {
                return None;
            }
            // The quote holds the original header plus at least 8 bytes of
            // what followed, which is exactly our echo header.
            let original = IcmpView::new(&icmp.body()[quoted.header_len()..]).ok()?;
            if original.icmp_type() != TYPE_ECHO_REQUEST || original.identifier() != id {
                return None;
            }
            Some(Response::Error {
                seq: original.sequence(),
                from: ip.source(),
                ttl: ip.ttl(),
                bytes: icmp.message_len(),
                error: IcmpError {
                    icmp_type: icmp.icmp_type(),
                    code: icmp.code(),
                    mtu: icmp.next_hop_mtu(),
                },
            })
        }
        _ => None,
    }
}

/// Hand-built datagrams for tests, as a raw socket delivers them.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// An IPv4 datagram (20-byte header, checksum filled) around `payload`.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let total = u16::try_from(IPV4_MIN_HEADER_LEN + payload.len()).unwrap();
        let mut d = vec![0u8; IPV4_MIN_HEADER_LEN];
        d[0] = 0x45;
        d[2..4].copy_from_slice(&total.to_be_bytes());
        d[6] = 0x40; // DF
        d[8] = ttl;
        d[9] = IPPROTO_ICMP;
        d[12..16].copy_from_slice(&src.octets());
        d[16..20].copy_from_slice(&dst.octets());
        let sum = checksum(&d);
        d[10..12].copy_from_slice(&sum.to_be_bytes());
        d.extend_from_slice(payload);
        d
    }

    /// The echo reply a host sends back for `request` (an ICMP echo request).
    pub fn echo_reply_to(request: &[u8]) -> Vec<u8> {
        let mut reply = request.to_vec();
        reply[0] = TYPE_ECHO_REPLY;
        reply[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&reply);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        reply
    }

    /// An ICMP error of `icmp_type`/`code` quoting the IPv4 datagram
    /// `original` (its header and first 8 bytes of payload), with `rest` as
    /// bytes 4..8 of the header (the next-hop MTU lives in 6..8).
    pub fn icmp_error(icmp_type: u8, code: u8, rest: [u8; 4], original: &[u8]) -> Vec<u8> {
        let quote_len = original.len().min(IPV4_MIN_HEADER_LEN + 8);
        let mut msg = vec![icmp_type, code, 0, 0];
        msg.extend_from_slice(&rest);
        msg.extend_from_slice(&original[..quote_len]);
        let sum = checksum(&msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
    const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const ID: EchoId = EchoId(0xbeef);

    fn size(n: u16) -> PayloadSize {
        PayloadSize::new(n).unwrap()
    }

    #[test]
    fn echo_request_has_header_pattern_and_valid_checksum() {
        let p = build_echo_request(ID, Seq(7), size(56));
        assert_eq!(p.len(), 64);
        assert_eq!(&p[..2], &[8, 0]);
        assert_eq!(&p[4..8], &[0xbe, 0xef, 0, 7]);
        assert_eq!(p[8], 0);
        assert_eq!(p[8 + 55], 55);
        assert_eq!(checksum(&p), 0, "checksum field makes the sum zero");
        let big = build_echo_request(ID, Seq(1), size(PayloadSize::MAX));
        assert_eq!(big.len(), 65515);
        assert_eq!(big[8 + 256], 0, "pattern wraps at 256");
        assert_eq!(checksum(&big), 0);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example: sum 0xddf2, checksum its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        assert_eq!(checksum(&[0xff]), !0xff00, "odd length pads with zero");
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
        let sum = checksum(&datagram[20..]);
        datagram[22..24].copy_from_slice(&sum.to_be_bytes());
        let got = classify(&datagram, ID).unwrap();
        assert_eq!(
            got,
            Response::EchoReply {
                seq: Seq(3),
                from: Ipv4Addr::LOCALHOST,
                ttl: 64,
                bytes: 12,
                checksum_ok: true
            }
        );
        datagram[31] ^= 0xff;
        assert!(matches!(
            classify(&datagram, ID),
            Some(Response::EchoReply {
                checksum_ok: false,
                ..
            })
        ));
        assert_eq!(classify(&datagram, EchoId(1)), None, "another task's reply");
    }

    #[test]
    fn our_own_request_on_loopback_is_ignored() {
        let request = build_echo_request(ID, Seq(1), size(8));
        assert_eq!(classify(&ipv4(ME, ME, 64, &request), ID), None);
    }

    #[test]
    fn frag_needed_carries_mtu_1440_and_matches_the_quoted_echo() {
        let request = build_echo_request(ID, Seq(9), size(1472));
        let original = ipv4(ME, TARGET, 63, &request);
        let error = icmp_error(3, 4, [0, 0, 0x05, 0xa0], &original);
        let got = classify(&ipv4(ROUTER, ME, 64, &error), ID).unwrap();
        let expected_error = IcmpError {
            icmp_type: 3,
            code: 4,
            mtu: Some(Mtu(1440)),
        };
        assert_eq!(
            got,
            Response::Error {
                seq: Seq(9),
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
        assert_eq!(classify(&ipv4(ROUTER, ME, 64, &error), EchoId(2)), None);
    }

    #[test]
    fn time_exceeded_matches_the_quoted_echo() {
        let request = build_echo_request(ID, Seq(2), size(56));
        let error = icmp_error(11, 0, [0; 4], &ipv4(ME, TARGET, 1, &request));
        let got = classify(&ipv4(ROUTER, ME, 255, &error), ID).unwrap();
        let Response::Error {
            seq, from, error, ..
        } = got
        else {
            panic!("{got:?}")
        };
        assert_eq!((seq, from), (Seq(2), ROUTER));
        assert_eq!(
            error,
            IcmpError {
                icmp_type: 11,
                code: 0,
                mtu: None
            }
        );
        assert_eq!(error.describe(), "Time to live exceeded");
    }

    #[test]
    fn host_unreachable_is_described_like_ping() {
        let request = build_echo_request(ID, Seq(1), size(56));
        let error = icmp_error(3, 1, [0; 4], &ipv4(ME, TARGET, 64, &request));
        let Some(Response::Error { error, .. }) = classify(&ipv4(ROUTER, ME, 64, &error), ID)
        else {
            panic!("not matched")
        };
        assert_eq!(error.mtu, None);
        assert_eq!(error.describe(), "Destination Host Unreachable");
    }

    #[test]
    fn error_quoting_a_udp_datagram_is_not_ours() {
        let mut original = ipv4(ME, TARGET, 64, &build_echo_request(ID, Seq(1), size(8)));
        original[9] = 17;
        let error = icmp_error(3, 3, [0; 4], &original);
        assert_eq!(classify(&ipv4(ROUTER, ME, 64, &error), ID), None);
    }

    #[test]
    fn truncated_input_is_rejected_at_every_length() {
        let request = build_echo_request(ID, Seq(9), size(1472));
        let error = icmp_error(3, 4, [0, 0, 0x05, 0xa0], &ipv4(ME, TARGET, 63, &request));
        let full = ipv4(ROUTER, ME, 64, &error);
        for len in 0..full.len() {
            assert_eq!(classify(&full[..len], ID), None, "length {len}");
        }
        assert!(classify(&full, ID).is_some());
        assert_eq!(
            Ipv4View::new(&full[..10]).unwrap_err(),
            ParseError::Truncated {
                what: "IPv4 header",
                need: 20,
                got: 10
            }
        );
        assert_eq!(
            Ipv4View::new(&[0x60; 40]).unwrap_err(),
            ParseError::NotIpv4(6)
        );
        assert_eq!(
            Ipv4View::new(&[0x44; 40]).unwrap_err(),
            ParseError::BadHeaderLength(16)
        );
        assert!(IcmpView::new(&[0; 7]).is_err());
    }

    #[test]
    fn total_length_shorter_or_longer_than_the_buffer_is_bounded() {
        let mut d = ipv4(
            TARGET,
            ME,
            64,
            &echo_reply_to(&build_echo_request(ID, Seq(1), size(8))),
        );
        d[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(Ipv4View::new(&d).unwrap().payload().len(), 4);
        assert_eq!(classify(&d, ID), None, "cut below an ICMP header");
        d[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Ipv4View::new(&d).unwrap().payload().len(), 16);
        d[2..4].copy_from_slice(&0u16.to_be_bytes());
        assert!(Ipv4View::new(&d).unwrap().payload().is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), id in any::<u16>()) {
            let _ = classify(&bytes, EchoId(id));
            if let Ok(ip) = Ipv4View::new(&bytes) {
                let _ = (ip.source(), ip.destination(), ip.ttl(), ip.total_len(), ip.payload());
            }
            if let Ok(icmp) = IcmpView::new(&bytes) {
                let _ = (icmp.next_hop_mtu(), icmp.checksum_ok(), icmp.body(), icmp.sequence());
            }
        }

        #[test]
        fn random_bytes_behind_a_valid_header_never_panic(
            ihl in 0u8..16,
            tail in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut d = vec![0x40 | ihl, 0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_ICMP];
            d.extend_from_slice(&tail);
            let _ = classify(&d, EchoId(0));
        }

        #[test]
        fn echo_replies_round_trip(id in any::<u16>(), seq in any::<u16>(), n in 0u16..2000) {
            let request = build_echo_request(EchoId(id), Seq(seq), size(n));
            let d = ipv4(TARGET, ME, 60, &echo_reply_to(&request));
            let got = classify(&d, EchoId(id));
            prop_assert_eq!(got, Some(Response::EchoReply {
                seq: Seq(seq), from: TARGET, ttl: 60, bytes: 8 + usize::from(n), checksum_ok: true,
            }));
        }
    }
}
