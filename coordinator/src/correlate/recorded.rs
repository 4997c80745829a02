//! The correlator on captures recorded in the lab with `meshctl capture`
//! (`fixtures/README.md` says how). Every lab probe shares one kernel clock,
//! so each observer's file is read with offset 0 and error bound 0.

use super::*;

fn observations(files: &[(&str, &[u8])]) -> Vec<Observation> {
    files
        .iter()
        .flat_map(|(probe, pcapng)| {
            let probe = ProbeName::new(probe).expect("probe name");
            from_pcapng(&probe, 0, 0, pcapng).expect("a readable fixture")
        })
        .collect()
}

fn sock(s: &str) -> SocketAddrV4 {
    s.parse().expect("socket address")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("address")
}

fn hops(fate: &PacketFate) -> Vec<String> {
    path_of(fate)
        .iter()
        .map(|h| format!("{}/{}", h.probe, h.interface))
        .collect()
}

fn transforms(fate: &PacketFate) -> Vec<Transform> {
    fate.sightings
        .iter()
        .flat_map(|s| s.transformed.iter().copied())
        .collect()
}

/// Payload bytes and flags of a TCP test packet, `None` for other keys.
fn tcp(fate: &PacketFate) -> Option<(u32, TcpFlags)> {
    match fate.key {
        PacketKey::Tcp {
            payload_len, flags, ..
        } => Some((payload_len, flags)),
        _ => None,
    }
}

const VNI_1: TunnelKind = TunnelKind::Vxlan {
    vni: probemesh_packet::frame::Vni(1),
};

/// cloudvm-1 → node-1's NodePort 30080: node-1 DNATs to web-0
/// (198.19.2.10:8080) on node-2, masquerades, and sends it over VXLAN.
#[test]
fn nodeport_connection_is_followed_through_dnat_and_vxlan() {
    let obs = observations(&[
        (
            "cloudvm-1",
            include_bytes!("fixtures/nodeport/cloudvm-1.pcapng"),
        ),
        ("node-1", include_bytes!("fixtures/nodeport/node-1.pcapng")),
        ("node-2", include_bytes!("fixtures/nodeport/node-2.pcapng")),
    ]);
    let c = correlate(&obs, &CorrelateConfig::default());
    assert!(c.undecoded.is_empty(), "{:?}", c.undecoded);
    assert!(!c.fates.is_empty());
    assert!(c.fates.iter().all(PacketFate::answered), "{:#?}", c.fates);

    let syn = c
        .fates
        .iter()
        .find(|f| tcp(f).is_some_and(|(_, flags)| flags.0 == TcpFlags::SYN))
        .expect("the SYN");
    let PacketKey::Tcp { connection, .. } = syn.key else {
        unreachable!("tcp() matched");
    };
    assert_eq!(connection.server, sock("198.18.0.11:30080"));
    assert_eq!(
        hops(syn),
        ["cloudvm-1/eth0", "node-1/eth0", "node-2/flannel.1"],
        "in causal order on the common clock"
    );
    let t = transforms(syn);
    assert!(
        t.contains(&Transform::Dnat {
            from: sock("198.18.0.11:30080"),
            to: sock("198.19.2.10:8080"),
        }),
        "{t:?}"
    );
    assert!(
        t.contains(&Transform::Encapsulated {
            kind: VNI_1,
            outer_src: ip("198.18.0.11"),
            outer_dst: ip("198.18.0.12"),
        }),
        "{t:?}"
    );
    assert!(
        t.iter()
            .any(|t| matches!(t, Transform::Snat { from, .. } if *from == connection.client)),
        "masquerade: {t:?}"
    );
    assert_eq!(syn.answer.as_ref().map(|a| a.kind), Some(AnswerKind::Ack));
    assert_eq!(lost_after(syn), None);

    // The SYN-ACK comes back the same way, un-NATed on node-1.
    let syn_ack = c
        .fates
        .iter()
        .find(|f| tcp(f).is_some_and(|(_, flags)| flags.0 == TcpFlags::SYN | TcpFlags::ACK))
        .expect("the SYN-ACK");
    assert_eq!(
        hops(syn_ack),
        ["node-2/flannel.1", "node-1/eth0", "cloudvm-1/eth0"]
    );
}

/// Reference incident 1: node-3's VXLAN leaves from its second address
/// 198.18.0.23 instead of its registered 198.18.0.13; node-2 receives the
/// packets and never answers.
#[test]
fn dual_ip_shows_the_wrong_outer_source_and_where_packets_die() {
    let obs = observations(&[
        ("node-3", include_bytes!("fixtures/dual-ip/node-3.pcapng")),
        ("node-2", include_bytes!("fixtures/dual-ip/node-2.pcapng")),
    ]);
    let c = correlate(&obs, &CorrelateConfig::default());
    assert!(c.undecoded.is_empty(), "{:?}", c.undecoded);
    assert_eq!(c.fates.len(), 2, "two echo requests: {:#?}", c.fates);
    for fate in &c.fates {
        assert!(matches!(fate.key, PacketKey::IcmpEcho { .. }), "{fate:?}");
        assert_eq!(hops(fate), ["node-3/eth0", "node-2/eth0"]);
        for s in &fate.sightings {
            assert_eq!(s.outer, Some((ip("198.18.0.23"), ip("198.18.0.12"))));
            assert_eq!(s.inner.dst.ip(), &ip("198.19.2.10"));
        }
        assert!(!fate.answered());
        let (probe, interface) = lost_after(fate).expect("unanswered");
        assert_eq!((probe.as_ref(), interface), ("node-2", "eth0"));
    }

    let sources = encapsulation_sources(&obs);
    let node_3: Vec<_> = sources
        .iter()
        .filter(|e| e.probe.as_ref() == "node-3")
        .collect();
    assert_eq!(node_3.len(), 1, "{sources:?}");
    assert_eq!(
        (
            node_3[0].kind,
            node_3[0].outer_src,
            node_3[0].outer_dst,
            node_3[0].packets
        ),
        (VNI_1, ip("198.18.0.23"), ip("198.18.0.12"), 2)
    );
    assert!(
        sources.iter().all(|e| e.outer_src != ip("198.18.0.13")),
        "the registered address never carries the tunnel: {sources:?}"
    );
}

/// Reference incident 2 (as the lab builds it): the handshake crosses,
/// segments over node-2's MTU 1440 leave cloudvm-1 and never reach node-2,
/// and are retransmitted; the smaller tail segment arrives.
#[test]
fn mtu_blackhole_loses_large_segments_after_the_sender() {
    const NODE_2_MTU: u32 = 1440;
    const ETHERNET: u32 = 14;
    let obs = observations(&[
        (
            "cloudvm-1",
            include_bytes!("fixtures/mtu-blackhole/cloudvm-1.pcapng"),
        ),
        (
            "node-2",
            include_bytes!("fixtures/mtu-blackhole/node-2.pcapng"),
        ),
    ]);
    let c = correlate(&obs, &CorrelateConfig::default());
    assert!(c.undecoded.is_empty(), "{:?}", c.undecoded);

    let syn = c
        .fates
        .iter()
        .find(|f| tcp(f).is_some_and(|(_, flags)| flags.0 == TcpFlags::SYN))
        .expect("the SYN");
    assert_eq!(hops(syn), ["cloudvm-1/eth0", "node-2/eth0"]);
    assert!(syn.answered());

    let data: Vec<&PacketFate> = c
        .fates
        .iter()
        .filter(|f| tcp(f).is_some_and(|(len, _)| len > 0))
        .collect();
    let (large, small): (Vec<&PacketFate>, Vec<&PacketFate>) = data
        .iter()
        .partition(|f| f.sightings[0].orig_len.saturating_sub(ETHERNET) > NODE_2_MTU);
    assert!(!large.is_empty() && !small.is_empty(), "{data:#?}");
    for fate in &large {
        assert_eq!(hops(fate), ["cloudvm-1/eth0"], "{fate:#?}");
        assert!(!fate.answered());
        let (probe, interface) = lost_after(fate).expect("unanswered");
        assert_eq!((probe.as_ref(), interface), ("cloudvm-1", "eth0"));
    }
    assert!(
        large.iter().any(|f| f.retransmissions > 0),
        "the sender retransmits: {large:#?}"
    );
    for fate in &small {
        assert_eq!(hops(fate), ["cloudvm-1/eth0", "node-2/eth0"], "{fate:#?}");
    }
}
