//! Fuzz-style property tests of everything here that reads outside bytes:
//! capture filter expressions (size check, and libpcap's compiler with the
//! `libpcap` feature), pcapng files, captured frames through every link
//! layer and tunnel, and raw ICMP datagrams. Each runs for
//! `MESH_FUZZ_SECONDS` (probemesh-budget). Inputs are both arbitrary bytes
//! and real structures (hand-built frames, files written by `pcap-file`)
//! cut and flipped; properties: never a panic, errors are values, and what
//! was written whole reads back whole.

use std::borrow::Cow;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use probemesh_budget::run_for;
use proptest::prelude::*;

use crate::bpf::{self, FilterError, MAX_FILTER_BYTES};
use crate::decode::decode;
use crate::frame::LinkKind;
use crate::icmp::{EchoId, EchoSeq, build_echo_request, classify_echo};
use crate::pcapng::{ReadError, Reader, Record, section_header};
use crate::testing::{FrameBuilder, echo_reply_to, icmp_error, ipv4};

/// Words of tcpdump's filter language, near misses and operators.
fn filter_word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("icmp"), Just("tcp"), Just("udp"), Just("ip"), Just("ip6"), Just("arp"),
            Just("host"), Just("net"), Just("port"), Just("portrange"), Just("src"), Just("dst"),
            Just("and"), Just("or"), Just("not"), Just("&&"), Just("||"), Just("!"),
            Just("("), Just(")"), Just("vlan"), Just("len"), Just("greater"), Just("less"),
            Just("tcp[tcpflags]"), Just("tcp-syn"), Just("&"), Just("!="), Just("="),
            Just("ether"), Just("broadcast"), Just("proto"), Just("gateway"),
        ].prop_map(str::to_owned),
        2 => any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        1 => any::<u32>().prop_map(|n| n.to_string()),
        1 => (any::<std::net::Ipv4Addr>(), 0u8..40).prop_map(|(a, m)| format!("{a}/{m}")),
        1 => "[a-z0-9:./\\[\\]-]{1,12}",
        1 => "\\PC{1,4}",
    ]
}

fn filter_expr() -> impl Strategy<Value = String> {
    proptest::collection::vec(filter_word(), 0..24).prop_map(|words| words.join(" "))
}

#[test]
fn filter_size_check_never_panics_and_bounds_what_it_passes() {
    let expr = prop_oneof![
        3 => filter_expr(),
        1 => any::<String>(),
        1 => "[()a-z &|]{0,1200}",
        1 => (1usize..2000, filter_word()).prop_map(|(n, w)| format!("{w} or ").repeat(n)),
    ];
    run_for("BPF filter size check", expr, |expr| {
        match bpf::check_size(&expr) {
            Ok(()) => prop_assert!(expr.len() <= MAX_FILTER_BYTES),
            Err(FilterError::TooLarge { reason }) => prop_assert!(!reason.is_empty()),
            Err(other) => prop_assert!(false, "{other}"),
        }
        Ok(())
    });
}

#[cfg(feature = "libpcap")]
#[test]
fn filters_within_the_bounds_compile_to_valid_programs_or_are_refused() {
    const SNAPLEN: u32 = 256;
    run_for("BPF filter compile", filter_expr(), |expr| {
        prop_assume!(bpf::check_size(&expr).is_ok());
        match bpf::compile_filter(&expr, SNAPLEN) {
            Ok(filter) => {
                for program in [&filter.ethernet, &filter.raw_ip] {
                    prop_assert!(bpf::validate(&expr, program).is_ok());
                    prop_assert!(
                        program
                            .iter()
                            .all(|i| i.code != bpf::RET_K || i.k <= SNAPLEN)
                    );
                }
            }
            Err(FilterError::Invalid { message, .. }) => prop_assert!(!message.is_empty()),
            Err(other) => prop_assert!(false, "{expr:?}: {other}"),
        }
        Ok(())
    });
}

const LINKS: [LinkKind; 4] = [
    LinkKind::Ethernet,
    LinkKind::RawIp,
    LinkKind::LinuxSll,
    LinkKind::LinuxSll2,
];

/// An IPv4 datagram of any kind the decoder reads, tunnels included.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let inner = prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u8>(), 0u32..200).prop_map(|(seq, ack, flags, len)| {
            FrameBuilder::tcp("198.18.0.1:40000", "198.18.0.2:80", seq, ack, flags, len)
        }),
        (0u16..300).prop_map(|len| FrameBuilder::udp("198.18.0.1:5353", "198.18.0.2:53", len)),
        (any::<bool>(), any::<u16>(), any::<u16>()).prop_map(|(request, id, seq)| {
            FrameBuilder::icmp_echo("198.18.0.1", "198.18.0.2", request, id, seq)
        }),
        (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(t, code, mtu)| {
            let quoted = FrameBuilder::udp("198.18.0.2:1", "198.18.0.3:2", 8).ip();
            FrameBuilder::icmp_error("198.18.0.9", "198.18.0.2", t, code, mtu, &quoted)
        }),
    ];
    (inner, 0u8..4, any::<u32>()).prop_map(|(b, wrap, vni)| match wrap {
        0 => b.ip(),
        1 => b.ipip("198.18.1.1", "198.18.1.2").ip(),
        2 => b.vxlan("198.18.1.1", "198.18.1.2", 8472, vni).ip(),
        _ => b
            .vxlan("198.18.1.1", "198.18.1.2", 4789, vni)
            .ipip("198.18.2.1", "198.18.2.2")
            .ip(),
    })
}

/// `datagram` behind the link header of `link`; Ethernet with up to two
/// VLAN tags.
fn framed(link: LinkKind, datagram: &[u8], tags: usize) -> Vec<u8> {
    let mut frame = match link {
        LinkKind::RawIp => Vec::new(),
        LinkKind::Ethernet => {
            let mut h = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
            for _ in 0..tags {
                h.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            }
            h.extend_from_slice(&[0x08, 0x00]);
            h
        }
        LinkKind::LinuxSll => {
            let mut h = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
            h.extend_from_slice(&[0x08, 0x00]);
            h
        }
        LinkKind::LinuxSll2 => vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
        ],
    };
    frame.extend_from_slice(datagram);
    frame
}

/// Cuts `bytes` at `cut` (when shorter) and XORs the flips in.
fn damage(mut bytes: Vec<u8>, cut: usize, flips: &[(usize, u8)]) -> Vec<u8> {
    bytes.truncate(cut);
    for &(at, byte) in flips {
        if let Some(len) = std::num::NonZeroUsize::new(bytes.len()) {
            bytes[at % len] ^= byte;
        }
    }
    bytes
}

#[test]
fn frames_of_every_link_layer_decode_or_err_when_cut_and_flipped() {
    let case = (
        0usize..4,
        datagram(),
        0usize..3,
        any::<usize>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        proptest::collection::vec(any::<u8>(), 0..120),
    );
    run_for(
        "frame decode",
        case,
        |(link, datagram, tags, cut, flips, noise)| {
            let link = LINKS[link];
            let frame = framed(link, &datagram, tags);
            let whole = decode(link, &frame);
            prop_assert!(whole.is_ok(), "{link:?} {whole:?}");
            let damaged = damage(frame.clone(), cut % (frame.len() + 1), &flips);
            if let Ok(packet) = decode(link, &damaged) {
                let _ = (packet.flow().to_string(), packet.outer_addresses());
            }
            let _ = decode(link, &noise);
            Ok(())
        },
    );
}

#[test]
fn icmp_replies_and_errors_classify_or_are_ignored_when_damaged() {
    let case = (
        any::<u16>(),
        any::<u16>(),
        0u16..200,
        any::<bool>(),
        any::<usize>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    );
    run_for(
        "ICMP echo classification",
        case,
        |(id, seq, len, as_error, cut, flips)| {
            let request = build_echo_request(EchoId(id), EchoSeq(seq), len);
            let from = std::net::Ipv4Addr::new(198, 18, 0, 2);
            let icmp = if as_error {
                let sent = ipv4(std::net::Ipv4Addr::new(198, 18, 0, 1), from, 1, &request);
                icmp_error(11, 0, [0; 4], &sent)
            } else {
                echo_reply_to(&request)
            };
            let received = ipv4(from, std::net::Ipv4Addr::new(198, 18, 0, 1), 60, &icmp);
            prop_assert!(classify_echo(&received, EchoId(id)).is_some());
            let damaged = damage(received.clone(), cut % (received.len() + 1), &flips);
            let _ = classify_echo(&damaged, EchoId(id));
            Ok(())
        },
    );
}

/// What one generated pcapng file holds: interfaces (link type, tsresol)
/// and packets (interface id, raw timestamp, frame).
#[derive(Debug, Clone)]
struct CaptureFile {
    interfaces: Vec<(u32, Option<u8>)>,
    packets: Vec<(u32, u64, Vec<u8>)>,
}

fn capture_file() -> impl Strategy<Value = CaptureFile> {
    let link = prop_oneof![
        Just(1u32),
        Just(101),
        Just(113),
        Just(276),
        Just(228),
        any::<u32>()
    ];
    let interface = (link, proptest::option::of(any::<u8>()));
    let frame = prop_oneof![
        (0usize..4, datagram()).prop_map(|(l, d)| framed(LINKS[l], &d, 0)),
        proptest::collection::vec(any::<u8>(), 0..80),
    ];
    let packet = (0u32..4, any::<u64>(), frame);
    (
        proptest::collection::vec(interface, 0..4),
        proptest::collection::vec(packet, 0..6),
    )
        .prop_map(|(interfaces, packets)| CaptureFile {
            interfaces,
            packets,
        })
}

fn packet_block(interface_id: u32, raw: u64, data: &[u8]) -> EnhancedPacketBlock<'_> {
    EnhancedPacketBlock {
        interface_id,
        timestamp: Duration::from_nanos(raw),
        original_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
        data: Cow::Borrowed(data),
        options: vec![],
    }
}

/// The bytes of one packet block naming interface `interface_id` (0..4),
/// which `pcap-file`'s writer refuses to write into a section that does not
/// describe it.
fn foreign_packet(interface_id: u32, raw: u64, data: &[u8]) -> Vec<u8> {
    let mut scratch = Vec::new();
    let mut writer = PcapNgWriter::with_section_header(&mut scratch, section_header(vec![]))
        .expect("a section header");
    for _ in 0..4 {
        writer
            .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
            .expect("an interface block");
    }
    let len = writer
        .write_pcapng_block(packet_block(interface_id, raw, data))
        .expect("a packet block");
    drop(writer);
    scratch.split_off(scratch.len() - len)
}

fn write(file: &CaptureFile) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer = PcapNgWriter::with_section_header(&mut bytes, section_header(vec![]))
        .expect("a section header");
    for &(link, tsresol) in &file.interfaces {
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::from(link),
                snaplen: 262_144,
                options: tsresol
                    .map(InterfaceDescriptionOption::IfTsResol)
                    .into_iter()
                    .collect(),
            })
            .expect("an interface block");
    }
    let mut foreign = Vec::new();
    for (interface_id, raw, data) in &file.packets {
        if foreign.is_empty() && (*interface_id as usize) < file.interfaces.len() {
            writer
                .write_pcapng_block(packet_block(*interface_id, *raw, data))
                .expect("a packet block");
        } else {
            foreign.extend(foreign_packet(*interface_id, *raw, data));
        }
    }
    drop(writer);
    bytes.extend(foreign);
    bytes
}

/// Reads every record of `bytes`, decoding each packet with its
/// interface's link layer; returns the frames read and the error that
/// stopped the reading, if any.
fn read_all(bytes: &[u8]) -> (Vec<Vec<u8>>, Option<ReadError>) {
    let reader = match Reader::new(bytes) {
        Ok(reader) => reader,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut links = Vec::new();
    let mut frames = Vec::new();
    for record in reader {
        match record {
            Ok(Record::Interface(interface)) => {
                let _ = interface.name();
                links.push(LinkKind::from_datalink(interface.link()));
            }
            Ok(Record::Packet(packet)) => {
                if let Some(Some(link)) = links.get(packet.interface) {
                    let _ = decode(*link, packet.data());
                }
                frames.push(packet.data().to_vec());
            }
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

#[test]
fn pcapng_files_read_back_whole_and_damaged_ones_err() {
    let case = (
        capture_file(),
        any::<usize>(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    run_for("pcapng read", case, |(file, cut, flips, noise)| {
        let bytes = write(&file);
        let known = file.interfaces.len();
        let readable = file
            .packets
            .iter()
            .take_while(|(id, _, _)| (*id as usize) < known)
            .count();
        let (frames, error) = read_all(&bytes);
        let expected: Vec<Vec<u8>> = file.packets[..readable]
            .iter()
            .map(|(_, _, data)| data.clone())
            .collect();
        prop_assert_eq!(frames, expected);
        match error {
            None => prop_assert_eq!(readable, file.packets.len()),
            Some(ReadError::UnknownInterface { interface }) => {
                prop_assert_eq!(interface, file.packets[readable].0)
            }
            Some(other) => prop_assert!(false, "{other}"),
        }
        let _ = read_all(&damage(bytes.clone(), cut % (bytes.len() + 1), &flips));
        let _ = read_all(&noise);
        let mut headed = bytes[..28.min(bytes.len())].to_vec();
        headed.extend_from_slice(&noise);
        let _ = read_all(&headed);
        Ok(())
    });
}
