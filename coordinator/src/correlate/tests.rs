//! The correlator's tests on hand-built frames (the recorded lab captures
//! are in `recorded.rs`).

use std::borrow::Cow;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use proptest::prelude::*;

use super::*;
use probemesh_packet::decode::TunnelKind;
use probemesh_packet::frame::TcpFlags;
use probemesh_packet::frame::Vni;
use probemesh_packet::icmp::{EchoId, EchoSeq, NextHopMtu};
use probemesh_packet::ipv4::IpProtocol;
use probemesh_packet::ipv4::{IpId, Ttl};
use probemesh_packet::testing::FrameBuilder;
use std::net::{Ipv4Addr, SocketAddrV4};

const SNAPLEN: usize = 128;
const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const SYN_ACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
const PSH_ACK: u8 = TcpFlags::PSH | TcpFlags::ACK;

fn name(s: &str) -> ProbeName {
    ProbeName::new(s).unwrap()
}

fn sock(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A packet as a headers-only capture keeps it.
fn cap(at_ns: i64, frame: Vec<u8>) -> CapturedPacket {
    CapturedPacket {
        at_ns,
        orig_len: u32::try_from(frame.len()).unwrap(),
        bytes: frame[..frame.len().min(SNAPLEN)].to_vec(),
    }
}

fn obs(probe: &str, interface: &str, mut packets: Vec<CapturedPacket>) -> Observation {
    packets.sort_by_key(|p| p.at_ns);
    Observation {
        probe: name(probe),
        interface: interface.into(),
        link: LinkKind::Ethernet,
        packets,
    }
}

fn tcp(src: &str, dst: &str, seq: u32, ack: u32, flags: u8, len: u32) -> FrameBuilder {
    FrameBuilder::tcp(src, dst, seq, ack, flags, len)
}

fn find(c: &Correlation, pred: impl Fn(&PacketKey) -> bool) -> &PacketFate {
    let found: Vec<&PacketFate> = c.fates.iter().filter(|f| pred(&f.key)).collect();
    assert_eq!(found.len(), 1, "{:#?}", c.fates);
    found[0]
}

fn tcp_fate(c: &Correlation, seq: u32, flags: u8) -> &PacketFate {
    find(
        c,
        |k| matches!(k, PacketKey::Tcp { seq: s, flags: f, .. } if s.0 == seq && f.0 == flags),
    )
}

fn where_(s: &Sighting) -> String {
    format!("{}/{}", s.probe, s.interface)
}

fn where_a(a: &Answer) -> String {
    format!("{}/{}", a.probe, a.interface)
}

const CLIENT: &str = "198.18.0.100:40000";
const NODEPORT: &str = "198.18.0.11:30080";
const SNATTED: &str = "198.19.1.0:40000";
const POD: &str = "198.19.2.10:8080";

/// cloudvm-1 opens a connection to node-1's NodePort; node-1 DNATs it
/// to a pod on node-2, masquerades it to its flannel.1 address and
/// sends it through VXLAN.
fn nodeport_capture() -> Vec<Observation> {
    let vxlan = |b: FrameBuilder| b.vxlan("198.18.0.11", "198.18.0.12", 8472, 1).ethernet();
    vec![
        // Listed out of path order on purpose.
        obs(
            "node-2",
            "flannel.1",
            vec![
                cap(1_400, tcp(SNATTED, POD, 1000, 0, SYN, 0).ttl(62).ethernet()),
                cap(1_600, tcp(POD, SNATTED, 5000, 1001, SYN_ACK, 0).ethernet()),
            ],
        ),
        obs(
            "cloudvm-1",
            "eth0",
            vec![
                cap(1_000, tcp(CLIENT, NODEPORT, 1000, 0, SYN, 0).ethernet()),
                cap(
                    5_000,
                    tcp(NODEPORT, CLIENT, 5000, 1001, SYN_ACK, 0).ethernet(),
                ),
                cap(5_100, tcp(CLIENT, NODEPORT, 1001, 5001, ACK, 0).ethernet()),
                cap(
                    5_200,
                    tcp(CLIENT, NODEPORT, 1001, 5001, PSH_ACK, 100).ethernet(),
                ),
                cap(9_000, tcp(NODEPORT, CLIENT, 5001, 1101, ACK, 0).ethernet()),
            ],
        ),
        obs(
            "node-2",
            "eth0",
            vec![
                cap(1_300, vxlan(tcp(SNATTED, POD, 1000, 0, SYN, 0).ttl(63))),
                cap(5_400, vxlan(tcp(SNATTED, POD, 1001, 5001, PSH_ACK, 100))),
            ],
        ),
        obs(
            "node-1",
            "eth0",
            vec![cap(
                1_100,
                tcp(CLIENT, NODEPORT, 1000, 0, SYN, 0).ethernet(),
            )],
        ),
    ]
}

#[test]
fn nodeport_syn_is_followed_through_dnat_snat_and_vxlan() {
    let c = correlate(&nodeport_capture(), &CorrelateConfig::default());
    assert!(c.undecoded.is_empty());
    let syn = tcp_fate(&c, 1000, SYN);
    let connection = TcpConnection {
        client: sock(CLIENT),
        server: sock(NODEPORT),
        isn: Some(TcpSeq(1000)),
    };
    assert!(
        matches!(syn.key, PacketKey::Tcp { connection: k, payload_len: 0, .. } if k == connection)
    );
    let places: Vec<String> = syn.sightings.iter().map(where_).collect();
    assert_eq!(
        places,
        [
            "cloudvm-1/eth0",
            "node-1/eth0",
            "node-2/eth0",
            "node-2/flannel.1"
        ]
    );
    let delays: Vec<i64> = syn
        .sightings
        .iter()
        .map(|s| s.one_way_from_first_ns)
        .collect();
    assert_eq!(delays, [0, 100, 300, 400]);
    assert!(syn.sightings[0].transformed.is_empty());
    assert!(syn.sightings[1].transformed.is_empty());
    assert_eq!(
        syn.sightings[2].transformed,
        [
            Transform::Dnat {
                from: sock(NODEPORT),
                to: sock(POD)
            },
            Transform::Snat {
                from: sock(CLIENT),
                to: sock(SNATTED)
            },
            Transform::Encapsulated {
                kind: TunnelKind::Vxlan { vni: Vni(1) },
                outer_src: ip("198.18.0.11"),
                outer_dst: ip("198.18.0.12")
            },
        ]
    );
    assert_eq!(
        syn.sightings[2].outer,
        Some((ip("198.18.0.11"), ip("198.18.0.12")))
    );
    assert_eq!(syn.sightings[2].inner.src, sock(SNATTED));
    assert_eq!(syn.sightings[2].inner.protocol, IpProtocol::TCP);
    assert_eq!(syn.sightings[2].ttl, Ttl(63));
    // Decapsulated on flannel.1: no outer header, nothing rewritten.
    assert_eq!(syn.sightings[3].outer, None);
    assert!(syn.sightings[3].transformed.is_empty());
    assert_eq!(syn.retransmissions, 0);
    // The SYN-ACK on flannel.1 is the first answer.
    assert_eq!(
        syn.answer,
        Some(Answer {
            probe: name("node-2"),
            interface: "flannel.1".into(),
            at_ns: 1_600,
            kind: AnswerKind::Ack
        })
    );
    assert_eq!(lost_after(syn), None);
    let path: Vec<(String, i64)> = path_of(syn)
        .into_iter()
        .map(|h| (format!("{}/{}", h.probe, h.interface), h.at_ns))
        .collect();
    assert_eq!(path[0], ("cloudvm-1/eth0".to_owned(), 1_000));
    assert_eq!(path[3], ("node-2/flannel.1".to_owned(), 1_400));

    // The data segment and the SYN-ACK belong to the same connection.
    let data = tcp_fate(&c, 1001, PSH_ACK);
    assert!(
        matches!(data.key, PacketKey::Tcp { connection: k, payload_len: 100, .. } if k == connection)
    );
    assert_eq!(data.sightings.len(), 2);
    assert_eq!(data.answer.as_ref().map(|a| a.at_ns), Some(9_000));
    let syn_ack = tcp_fate(&c, 5000, SYN_ACK);
    assert!(matches!(syn_ack.key, PacketKey::Tcp { connection: k, .. } if k == connection));
    // Answered by the client's ACK.
    assert_eq!(
        syn_ack.answer.as_ref().map(|a| a.kind),
        Some(AnswerKind::Ack)
    );
    // The pure ACK is not a test packet.
    assert_eq!(c.fates.len(), 3, "{:#?}", c.fates);
    // The record says what the answer was and when (the report's ladder
    // draws it from there).
    let record = summary::summarize(&c, &[]);
    let syn = record
        .fates
        .iter()
        .find(|f| f.packet.contains("[SYN]"))
        .expect("the SYN in the record");
    assert_eq!(
        (
            syn.answer_kind(),
            syn.answered_at_unix_ns,
            syn.answered_at.as_str()
        ),
        (
            probemesh_proto::pb::AnswerKind::Ack,
            1_600,
            "node-2/flannel.1"
        )
    );
}

#[test]
fn an_unanswered_syn_is_lost_after_its_last_sighting() {
    let mut capture = nodeport_capture();
    // Without the pod's SYN-ACK, nothing answers the SYN.
    capture[0].packets.truncate(1);
    capture[1].packets.truncate(1);
    let c = correlate(&capture, &CorrelateConfig::default());
    let syn = tcp_fate(&c, 1000, SYN);
    assert!(!syn.answered());
    assert_eq!(lost_after(syn), Some((&name("node-2"), "flannel.1")));
}

#[test]
fn dual_ip_vxlan_leaves_with_the_wrong_outer_source_and_is_not_answered() {
    const S: i64 = 1_000_000_000;
    let from_node3 = |at: i64| {
        cap(
            at,
            tcp("198.19.3.0:41000", POD, 7777, 0, SYN, 0)
                .vxlan("198.18.0.23", "198.18.0.12", 8472, 1)
                .ethernet(),
        )
    };
    let from_node1 = |at: i64| {
        cap(
            at,
            tcp(SNATTED, POD, 1000, 0, SYN, 0)
                .vxlan("198.18.0.11", "198.18.0.12", 8472, 1)
                .ethernet(),
        )
    };
    let capture = vec![
        obs(
            "node-3",
            "eth0",
            vec![
                from_node3(1_000),
                from_node3(S + 1_000),
                from_node3(3 * S + 1_000),
            ],
        ),
        obs(
            "node-2",
            "eth0",
            vec![
                from_node3(1_200),
                from_node1(2_000),
                from_node3(S + 1_200),
                from_node3(3 * S + 1_200),
            ],
        ),
        obs(
            "node-2",
            "flannel.1",
            vec![
                cap(2_100, tcp(SNATTED, POD, 1000, 0, SYN, 0).ethernet()),
                cap(2_300, tcp(POD, SNATTED, 5000, 1001, SYN_ACK, 0).ethernet()),
            ],
        ),
    ];
    let sources = encapsulation_sources(&capture);
    let summary: Vec<(String, Ipv4Addr, u64)> = sources
        .iter()
        .map(|s| {
            (
                format!("{}/{}", s.probe, s.interface),
                s.outer_src,
                s.packets,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("node-3/eth0".to_owned(), ip("198.18.0.23"), 3),
            ("node-2/eth0".to_owned(), ip("198.18.0.11"), 1),
            ("node-2/eth0".to_owned(), ip("198.18.0.23"), 3),
        ]
    );
    assert!(
        sources.iter().all(
            |s| s.kind == TunnelKind::Vxlan { vni: Vni(1) } && s.outer_dst == ip("198.18.0.12")
        )
    );

    let c = correlate(&capture, &CorrelateConfig::default());
    let lost = tcp_fate(&c, 7777, SYN);
    let places: Vec<String> = lost.sightings.iter().map(where_).collect();
    assert_eq!(places, ["node-3/eth0", "node-2/eth0"]);
    assert_eq!(
        lost.sightings[1].outer,
        Some((ip("198.18.0.23"), ip("198.18.0.12")))
    );
    assert_eq!(lost.retransmissions, 2);
    assert!(!lost.answered());
    assert_eq!(lost_after(lost), Some((&name("node-2"), "eth0")));
    // node-1's tunnel works: its SYN is answered on flannel.1.
    assert!(tcp_fate(&c, 1000, SYN).answered());
}

#[test]
fn mtu_black_hole_large_segment_retransmitted_never_arrives() {
    const SENDER: &str = "10.0.1.5:43210";
    const RECEIVER: &str = "10.0.2.7:9000";
    let both =
        |at: i64, b: FrameBuilder| (cap(at, b.clone().ethernet()), cap(at + 50, b.ethernet()));
    let mut sender = Vec::new();
    let mut receiver = Vec::new();
    let mut add = |(s, r): (CapturedPacket, CapturedPacket), reverse: bool| {
        if reverse {
            // Receiver's packets are captured there first.
            sender.push(CapturedPacket {
                at_ns: s.at_ns + 100,
                ..s
            });
            receiver.push(CapturedPacket {
                at_ns: r.at_ns - 100,
                ..r
            });
        } else {
            sender.push(s);
            receiver.push(r);
        }
    };
    add(both(1_000, tcp(SENDER, RECEIVER, 100, 0, SYN, 0)), false);
    add(
        both(2_000, tcp(RECEIVER, SENDER, 900, 101, SYN_ACK, 0)),
        true,
    );
    add(
        both(3_000, tcp(SENDER, RECEIVER, 101, 901, PSH_ACK, 200)),
        false,
    );
    add(both(4_000, tcp(RECEIVER, SENDER, 901, 301, ACK, 0)), true);
    let mut sender_packets = sender;
    let receiver_packets = receiver;
    // The large segment: 1500 bytes of IP (1514 on the wire), cut to
    // 128 by the snap length; sent, then retransmitted three times.
    let big = tcp(SENDER, RECEIVER, 301, 901, PSH_ACK, 1460);
    for at in [10_000, 210_000_000, 610_000_000, 1_410_000_000] {
        sender_packets.push(cap(at, big.clone().ethernet()));
    }
    let capture = vec![
        obs("cloudvm-1", "eth0", sender_packets),
        obs("node-2", "eth0", receiver_packets),
    ];
    let c = correlate(&capture, &CorrelateConfig::default());
    let lost = tcp_fate(&c, 301, PSH_ACK);
    assert_eq!(lost.retransmissions, 3);
    assert_eq!(lost.sightings.len(), 1);
    assert_eq!(lost.sightings[0].orig_len, 1514);
    assert!(matches!(
        lost.key,
        PacketKey::Tcp {
            payload_len: 1460,
            ..
        }
    ));
    assert!(!lost.answered());
    assert_eq!(lost_after(lost), Some((&name("cloudvm-1"), "eth0")));
    assert!(lost.icmp_errors.is_empty());

    let small = tcp_fate(&c, 101, PSH_ACK);
    assert_eq!(small.retransmissions, 0);
    let places: Vec<String> = small.sightings.iter().map(where_).collect();
    assert_eq!(places, ["cloudvm-1/eth0", "node-2/eth0"]);
    assert_eq!(small.sightings[1].one_way_from_first_ns, 50);
    // The receiver's ACK, seen there before it reaches the sender.
    assert_eq!(
        small.answer.as_ref().map(|a| (where_a(a), a.at_ns)),
        Some(("node-2/eth0".to_owned(), 3_950))
    );
}

#[test]
fn frag_needed_errors_are_attached_to_the_segment_they_quote() {
    const SENDER: &str = "10.0.1.5:43210";
    let big = tcp(SENDER, "10.0.2.7:9000", 301, 901, PSH_ACK, 1460).ip_id(42);
    let error = FrameBuilder::icmp_error("10.0.1.1", "10.0.1.5", 3, 4, 1450, &big.clone().ip());
    let capture = vec![obs(
        "cloudvm-1",
        "eth0",
        vec![cap(1_000, big.ethernet()), cap(1_500, error.ethernet())],
    )];
    let c = correlate(&capture, &CorrelateConfig::default());
    assert_eq!(c.fates.len(), 1);
    assert_eq!(
        c.fates[0].icmp_errors,
        [IcmpErrorSighting {
            probe: name("cloudvm-1"),
            interface: "eth0".into(),
            at_ns: 1_500,
            from: ip("10.0.1.1"),
            icmp_type: 3,
            code: 4,
            next_hop_mtu: Some(NextHopMtu(1450)),
        }]
    );
    // An error is evidence, not an answer.
    assert!(!c.fates[0].answered());
    let record = summary::summarize(&c, &[]);
    assert_eq!(
        record.fates[0].icmp_errors,
        [probemesh_proto::pb::IcmpErrorSummary {
            observer: "cloudvm-1/eth0".into(),
            at_unix_ns: 1_500,
            from: "10.0.1.1".into(),
            icmp_type: 3,
            code: 4,
            next_hop_mtu: 1450,
        }]
    );
    assert_eq!(
        record.fates[0].answer_kind(),
        probemesh_proto::pb::AnswerKind::Unspecified
    );
}

#[test]
fn icmp_echo_requests_are_matched_by_id_and_seq() {
    const A: &str = "10.0.0.1";
    const B: &str = "10.0.0.2";
    let echo =
        |src, dst, request, seq| FrameBuilder::icmp_echo(src, dst, request, 7, seq).ethernet();
    let capture = vec![
        obs(
            "a",
            "eth0",
            vec![
                cap(1_000, echo(A, B, true, 1)),
                cap(1_300, echo(B, A, false, 1)),
                cap(2_000, echo(A, B, true, 2)),
                cap(2_300, echo(B, A, false, 2)),
                cap(3_000, echo(A, B, true, 3)),
                // B pings A with the same id and seq at the same time:
                // a different packet (its flow runs the other way).
                cap(1_150, echo(B, A, true, 1)),
            ],
        ),
        obs(
            "b",
            "eth0",
            vec![
                cap(1_100, echo(A, B, true, 1)),
                cap(1_200, echo(B, A, false, 1)),
                cap(2_100, echo(A, B, true, 2)),
                cap(2_200, echo(B, A, false, 2)),
                cap(1_050, echo(B, A, true, 1)),
            ],
        ),
    ];
    let c = correlate(&capture, &CorrelateConfig::default());
    let from_a = |seq: u16| {
        c.fates
            .iter()
            .find(|f| {
                f.key
                    == PacketKey::IcmpEcho {
                        id: EchoId(7),
                        seq: EchoSeq(seq),
                    }
                    && f.sightings[0].inner.src.ip() == &ip(A)
            })
            .unwrap()
    };
    let first = from_a(1);
    let places: Vec<String> = first.sightings.iter().map(where_).collect();
    assert_eq!(places, ["a/eth0", "b/eth0"]);
    assert_eq!(first.sightings[1].one_way_from_first_ns, 100);
    assert_eq!(
        first.answer.as_ref().map(|a| (a.at_ns, a.kind)),
        Some((1_200, AnswerKind::EchoReply))
    );
    assert!(from_a(2).answered());
    let third = from_a(3);
    assert!(!third.answered());
    assert_eq!(lost_after(third), Some((&name("a"), "eth0")));
    // B's own ping is its own fate, unanswered.
    assert_eq!(c.fates.len(), 4);
    let from_b = c
        .fates
        .iter()
        .find(|f| f.sightings[0].inner.src.ip() == &ip(B))
        .unwrap();
    let places: Vec<String> = from_b.sightings.iter().map(where_).collect();
    assert_eq!(places, ["b/eth0", "a/eth0"]);
    assert!(!from_b.answered());
}

#[test]
fn udp_is_matched_by_ip_id_and_length_through_dnat() {
    let query = |dst: &str, id: u16, tag: u8| {
        let mut payload = [0u8; 40];
        payload[..8].copy_from_slice(&[tag; 8]);
        FrameBuilder::udp_with("198.18.0.100:5353", dst, &payload)
            .ip_id(id)
            .ethernet()
    };
    let capture = vec![
        obs(
            "cloudvm-1",
            "eth0",
            vec![
                cap(1_000, query("198.18.0.11:30053", 9, 1)),
                cap(
                    1_500,
                    FrameBuilder::udp("198.18.0.11:30053", "198.18.0.100:5353", 60).ethernet(),
                ),
                // IP ID 0 (DF, unconnected socket): told apart by tag.
                cap(2_000, query("198.18.0.11:30053", 0, 2)),
                cap(2_010, query("198.18.0.11:30053", 0, 3)),
            ],
        ),
        obs(
            "node-1",
            "cni0",
            vec![
                cap(1_200, query("10.244.1.3:53", 9, 1)),
                cap(2_230, query("10.244.1.3:53", 0, 3)),
                cap(2_200, query("10.244.1.3:53", 0, 2)),
            ],
        ),
    ];
    let c = correlate(&capture, &CorrelateConfig::default());
    // The reply is an answer, not a test packet.
    assert_eq!(c.fates.len(), 3, "{:#?}", c.fates);
    let first = &c.fates[0];
    assert_eq!(
        first.key,
        PacketKey::Udp {
            src_port: 5353,
            dst_port: 30053,
            ip_id: IpId(9),
            length: 48
        }
    );
    assert_eq!(
        first.sightings[1].transformed,
        [Transform::Dnat {
            from: sock("198.18.0.11:30053"),
            to: sock("10.244.1.3:53")
        }]
    );
    assert_eq!(
        first.answer.as_ref().map(|a| a.kind),
        Some(AnswerKind::UdpReply)
    );
    let delays: Vec<i64> = c.fates[1..]
        .iter()
        .map(|f| f.sightings[1].one_way_from_first_ns)
        .collect();
    assert_eq!(delays, [200, 220]);
}

#[test]
fn undecodable_packets_are_counted_per_observer() {
    let mut arp = FrameBuilder::udp("10.0.0.1:1", "10.0.0.2:2", 0).ethernet();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let capture = vec![obs("a", "eth0", vec![cap(1, arp.clone()), cap(2, arp)])];
    let c = correlate(&capture, &CorrelateConfig::default());
    assert!(c.fates.is_empty());
    assert_eq!(
        c.undecoded,
        [Undecoded {
            probe: name("a"),
            interface: "eth0".into(),
            packets: 2,
            first_error: DecodeError::NotIpv4EtherType(0x0806),
        }]
    );
}

#[test]
fn pcapng_files_become_observations_on_the_common_clock() {
    let mut file = Vec::new();
    let mut writer = PcapNgWriter::new(&mut file).unwrap();
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 128,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed("node-1/eth0")),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })
        .unwrap();
    // No name, no resolution: microseconds.
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 128,
            options: vec![],
        })
        .unwrap();
    let frame = tcp(CLIENT, NODEPORT, 1000, 0, SYN, 0).ethernet();
    let raw = tcp(CLIENT, NODEPORT, 1000, 0, SYN, 0).ip();
    for (interface, raw_ts, data) in [(0, 5_000_123_456u64, &frame), (1, 5_000_124, &raw)] {
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: interface,
                timestamp: Duration::from_nanos(raw_ts),
                original_len: u32::try_from(data.len()).unwrap() + 1000,
                data: Cow::Borrowed(data),
                options: vec![],
            })
            .unwrap();
    }
    drop(writer);
    let probe = name("node-1");
    // Offset 2 ms, error bound 1 µs: applied.
    let observations = from_pcapng(&probe, 2_000_000, 1_000, &file).unwrap();
    assert_eq!(observations.len(), 2);
    assert_eq!(observations[0].interface, "eth0");
    assert_eq!(observations[0].link, LinkKind::Ethernet);
    assert_eq!(observations[0].packets[0].at_ns, 4_998_123_456);
    assert_eq!(observations[0].packets[0].orig_len, 1054);
    assert_eq!(observations[1].interface, "if1");
    assert_eq!(observations[1].link, LinkKind::RawIp);
    assert_eq!(observations[1].packets[0].at_ns, 4_998_124_000);
    // Offset within its error bound: not applied.
    let observations = from_pcapng(&probe, 500, 1_000, &file).unwrap();
    assert_eq!(observations[0].packets[0].at_ns, 5_000_123_456);
    // Both interfaces decode to the same SYN.
    let c = correlate(&observations, &CorrelateConfig::default());
    assert_eq!(c.fates.len(), 1);
    let places: Vec<String> = c.fates[0].sightings.iter().map(where_).collect();
    assert_eq!(places, ["node-1/eth0", "node-1/if1"]);
}

#[test]
fn broken_pcapng_is_an_error_naming_the_probe() {
    let err = from_pcapng(&name("node-1"), 0, 0, b"not a pcapng file").unwrap_err();
    assert!(err.to_string().starts_with("capture from node-1:"), "{err}");
}

proptest! {
    #[test]
    fn correlation_never_panics_on_garbage(
        packets in proptest::collection::vec((0i64..5_000, proptest::collection::vec(any::<u8>(), 0..120)), 0..40),
        split in 0usize..40,
    ) {
        let mut captured: Vec<CapturedPacket> = packets
            .into_iter()
            .map(|(at_ns, bytes)| CapturedPacket { at_ns, orig_len: 1500, bytes })
            .collect();
        let other = captured.split_off(split.min(captured.len()));
        let capture = vec![obs("a", "eth0", captured), obs("b", "eth0", other)];
        let c = correlate(&capture, &CorrelateConfig::default());
        for fate in &c.fates {
            let _ = path_of(fate);
            let _ = lost_after(fate);
        }
        let _ = encapsulation_sources(&capture);
    }
}
