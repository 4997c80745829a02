//! ICMP errors about the UDP and TCP probes of a path trace, sans-IO: a
//! raw ICMP socket hands back an IPv4 datagram; when it is a
//! time-exceeded or destination-unreachable quoting a UDP or TCP packet we
//! sent to the target, this reads who sent it and the quoted ports (the
//! first 8 bytes of the quoted transport header, all RFC 792 guarantees),
//! decoded by `probemesh_packet::decode`. No input makes it panic.

use std::net::Ipv4Addr;

use probemesh_packet::decode::{IcmpMessage, QuotedTransport, Transport, decode};
use probemesh_packet::frame::LinkKind;
use probemesh_packet::icmp::{CODE_PORT_UNREACHABLE, TYPE_DEST_UNREACHABLE, TYPE_TIME_EXCEEDED};
use probemesh_packet::ipv4::IpProtocol;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = IpProtocol::TCP.0;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = IpProtocol::UDP.0;

/// An ICMP error quoting one of our transport probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportError {
    /// Who sent the error.
    pub from: Ipv4Addr,
    /// ICMP type (3 or 11).
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Source port of the quoted probe (ours).
    pub source_port: u16,
    /// Destination port of the quoted probe.
    pub destination_port: u16,
}

impl TransportError {
    /// True when the destination itself says the port is closed (a UDP
    /// probe that arrived).
    pub fn is_port_unreachable(&self) -> bool {
        self.icmp_type == TYPE_DEST_UNREACHABLE && self.code == CODE_PORT_UNREACHABLE
    }
}

/// Reads `datagram` as an ICMP error about a `protocol` (UDP or TCP) packet
/// we sent to `target`; `None` for anything else.
pub fn classify(datagram: &[u8], protocol: u8, target: Ipv4Addr) -> Option<TransportError> {
    let packet = decode(LinkKind::RawIp, datagram).ok()?;
    let Transport::Icmp(IcmpMessage::Error(error)) = packet.inner.transport else {
        return None;
    };
    if !packet.tunnels.is_empty()
        || !matches!(error.icmp_type, TYPE_DEST_UNREACHABLE | TYPE_TIME_EXCEEDED)
    {
        return None;
    }
    let quoted = error.quoted?;
    if quoted.ip.protocol != IpProtocol(protocol) || quoted.ip.dst != target {
        return None;
    }
    let (source_port, destination_port) = match quoted.transport {
        QuotedTransport::Tcp {
            src_port, dst_port, ..
        }
        | QuotedTransport::Udp {
            src_port, dst_port, ..
        } => (src_port, dst_port),
        QuotedTransport::Echo { .. } | QuotedTransport::Other => return None,
    };
    Some(TransportError {
        from: packet.inner.ip.src,
        icmp_type: error.icmp_type,
        code: error.code,
        source_port,
        destination_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use probemesh_packet::testing::{icmp_error, ipv4};
    use proptest::prelude::*;

    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const TARGET: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

    fn probe(protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut transport = Vec::new();
        transport.extend_from_slice(&sport.to_be_bytes());
        transport.extend_from_slice(&dport.to_be_bytes());
        transport.extend_from_slice(&[0; 16]);
        let mut d = ipv4(ME, TARGET, 1, &transport);
        d[9] = protocol;
        d
    }

    #[test]
    fn time_exceeded_about_udp_is_read() {
        let quote = probe(IPPROTO_UDP, 40_000, 33_435);
        let err = ipv4(
            ROUTER,
            ME,
            64,
            &icmp_error(TYPE_TIME_EXCEEDED, 0, [0; 4], &quote),
        );
        let e = classify(&err, IPPROTO_UDP, TARGET).unwrap();
        assert_eq!(
            (e.from, e.source_port, e.destination_port),
            (ROUTER, 40_000, 33_435)
        );
        assert!(!e.is_port_unreachable());
        assert_eq!(classify(&err, IPPROTO_TCP, TARGET), None, "wrong protocol");
        assert_eq!(classify(&err, IPPROTO_UDP, ROUTER), None, "wrong target");
    }

    #[test]
    fn port_unreachable_from_the_destination() {
        let quote = probe(IPPROTO_UDP, 40_000, 33_434);
        let err = ipv4(
            TARGET,
            ME,
            64,
            &icmp_error(TYPE_DEST_UNREACHABLE, 3, [0; 4], &quote),
        );
        assert!(
            classify(&err, IPPROTO_UDP, TARGET)
                .unwrap()
                .is_port_unreachable()
        );
    }

    #[test]
    fn tcp_quote_carries_the_source_port() {
        let quote = probe(IPPROTO_TCP, 51_000, 80);
        let err = ipv4(
            ROUTER,
            ME,
            64,
            &icmp_error(TYPE_TIME_EXCEEDED, 0, [0; 4], &quote),
        );
        assert_eq!(
            classify(&err, IPPROTO_TCP, TARGET).unwrap().source_port,
            51_000
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = classify(&bytes, IPPROTO_UDP, TARGET);
            let _ = classify(&bytes, IPPROTO_TCP, TARGET);
        }
    }
}
