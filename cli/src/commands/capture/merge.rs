//! The pcapng merge: a pure function from the observers' pcapng bytes to one
//! pcapng stream on the coordinator's clock. It reads no files and knows
//! nothing of runs beyond the header it is given; reading and the blocks it
//! writes come from `probemesh_packet::pcapng`, the clock rule from
//! `probemesh_model::timeline`.

use std::borrow::Cow;
use std::io::Write;

use pcap_file::PcapError;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
use probemesh_model::timeline;
use probemesh_packet::pcapng::{self, ReadError, Reader, Record};

use crate::commands::ns_to_us;

/// One observer's capture file, as input to [`merge_captures`].
#[derive(Debug, Clone, Copy)]
pub struct MergeInput<'a> {
    /// The probe that wrote the file.
    pub probe: &'a str,
    /// Probe clock minus coordinator clock, nanoseconds.
    pub clock_offset_ns: i64,
    /// Error bound of `clock_offset_ns`, nanoseconds.
    pub clock_error_ns: i64,
    /// The whole pcapng file.
    pub pcapng: &'a [u8],
}

/// What the merged file's section comment names besides the observers.
#[derive(Debug, Clone, Copy)]
pub struct MergeHeader<'a> {
    /// The run id.
    pub run_id: &'a str,
    /// The filter expression as typed ("" = every packet).
    pub filter: &'a str,
}

/// Counts of what [`merge_captures`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeSummary {
    /// Interface description blocks (one per observer and interface).
    pub interfaces: usize,
    /// Packets.
    pub packets: usize,
}

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// An input file is not pcapng.
    #[error("{probe}'s capture is not valid pcapng: {source}")]
    Parse {
        /// The observer whose file it is.
        probe: String,
        /// What the reader said.
        source: ReadError,
    },
    /// A packet names an interface its file never described.
    #[error(
        "{probe}'s capture has a packet on interface {interface}, which the file never described"
    )]
    UnknownInterface {
        /// The observer whose file it is.
        probe: String,
        /// The packet's interface id.
        interface: u32,
    },
    /// The output could not be written.
    #[error("cannot write the merged capture: {0}")]
    Write(PcapError),
}

/// A packet to write, at its time on the coordinator's clock.
struct MergedPacket<'a> {
    at_ns: i128,
    block: EnhancedPacketBlock<'a>,
}

/// Merges the observers' pcapng files into one pcapng stream on the
/// coordinator's clock and writes it to `out`.
///
/// Each packet's timestamp (in the unit its interface declares) becomes
/// nanoseconds minus its observer's `clock_offset_ns` when that offset
/// exceeds its error bound (see `probemesh_model::timeline`); packets are sorted
/// by that time, stably (ties keep input order). Each input interface gets
/// one interface block, in input order, keeping its name, link type, snap
/// length and other options, with `if_tsresol` = 9. Interface statistics
/// and other blocks are left out (they stay in the per-observer files).
pub fn merge_captures<W: Write>(
    inputs: &[MergeInput<'_>],
    header: MergeHeader<'_>,
    out: W,
) -> Result<MergeSummary, MergeError> {
    let mut interfaces: Vec<InterfaceDescriptionBlock<'static>> = Vec::new();
    let mut packets: Vec<MergedPacket<'_>> = Vec::new();
    for input in inputs {
        read_input(input, &mut interfaces, &mut packets)?;
    }
    packets.sort_by_key(|p| p.at_ns);

    let section = pcapng::section_header(vec![
        SectionHeaderOption::Comment(Cow::Owned(merged_comment(inputs, header))),
        SectionHeaderOption::UserApplication(Cow::Owned(format!(
            "meshctl {}",
            env!("CARGO_PKG_VERSION")
        ))),
    ]);
    let mut writer = PcapNgWriter::with_section_header(out, section).map_err(MergeError::Write)?;
    let summary = MergeSummary {
        interfaces: interfaces.len(),
        packets: packets.len(),
    };
    for idb in interfaces {
        writer.write_pcapng_block(idb).map_err(MergeError::Write)?;
    }
    for packet in packets {
        writer
            .write_pcapng_block(packet.block)
            .map_err(MergeError::Write)?;
    }
    writer
        .get_mut()
        .flush()
        .map_err(|e| MergeError::Write(PcapError::IoError(e)))?;
    Ok(summary)
}

/// Appends one observer's interfaces (numbered after those already there)
/// and its packets, re-stamped on the coordinator's clock.
fn read_input<'a>(
    input: &MergeInput<'a>,
    interfaces: &mut Vec<InterfaceDescriptionBlock<'static>>,
    packets: &mut Vec<MergedPacket<'a>>,
) -> Result<(), MergeError> {
    let parse = |source| MergeError::Parse {
        probe: input.probe.to_owned(),
        source,
    };
    let correction = i128::from(timeline::correction_ns(
        input.clock_offset_ns,
        input.clock_error_ns,
    ));
    let first = interfaces.len();
    for record in Reader::new(input.pcapng).map_err(parse)? {
        match record {
            Err(ReadError::UnknownInterface { interface }) => {
                return Err(MergeError::UnknownInterface {
                    probe: input.probe.to_owned(),
                    interface,
                });
            }
            Err(e) => return Err(parse(e)),
            Ok(Record::Interface(interface)) => {
                let id = interface.id_in_section;
                interfaces
                    .push(interface.into_nanosecond_block(|| format!("{}/if{id}", input.probe)));
            }
            Ok(Record::Packet(packet)) => {
                let merged_id = u32::try_from(first + packet.interface).map_err(|_| {
                    parse(ReadError::Parse(PcapError::InvalidField(
                        "too many interfaces",
                    )))
                })?;
                let at_ns = packet.timestamp_ns - correction;
                packets.push(MergedPacket {
                    at_ns,
                    block: packet.into_block_at(merged_id, at_ns),
                });
            }
        }
    }
    Ok(())
}

fn merged_comment(inputs: &[MergeInput<'_>], header: MergeHeader<'_>) -> String {
    let mut lines = vec![
        "probemesh merged capture".to_owned(),
        format!("run: {}", header.run_id),
        format!(
            "filter: {}",
            if header.filter.is_empty() {
                "(none)"
            } else {
                header.filter
            }
        ),
        "clock: coordinator (each packet's probe timestamp minus that probe's clock offset, where the offset exceeds its error bound)"
            .to_owned(),
    ];
    for input in inputs {
        lines.push(format!(
            "observer {}: offset {:+.3} us ± {:.3} us",
            input.probe,
            ns_to_us(input.clock_offset_ns),
            ns_to_us(input.clock_error_ns)
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use pcap_file::{DataLink, Endianness};
    use std::time::Duration;
    use test_case::test_case;

    /// 2023-11-14T22:13:20Z, in nanoseconds.
    const BASE_NS: u64 = 1_700_000_000_000_000_000;

    /// A pcapng file as a probe writes it: one IDB per `(name, link,
    /// snaplen)`, nanosecond timestamps, then `(interface, probe-clock ns
    /// past BASE_NS, tag)` packets whose one-byte data is the tag.
    fn capture_file(interfaces: &[(&str, DataLink, u32)], packets: &[(u32, u64, u8)]) -> Vec<u8> {
        let mut writer =
            PcapNgWriter::with_endianness(Vec::new(), Endianness::Little).expect("writer");
        for (name, link, snaplen) in interfaces {
            writer
                .write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: *link,
                    snaplen: *snaplen,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned((*name).to_owned())),
                        InterfaceDescriptionOption::IfTsResol(pcapng::TSRESOL_NANOSECONDS),
                    ],
                })
                .expect("idb");
        }
        for &(interface, at, tag) in packets {
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: interface,
                    timestamp: Duration::from_nanos(BASE_NS + at),
                    original_len: 60,
                    data: Cow::Owned(vec![tag]),
                    options: vec![],
                })
                .expect("epb");
        }
        writer.into_inner()
    }

    struct Merged {
        comment: String,
        interfaces: Vec<InterfaceDescriptionBlock<'static>>,
        /// (interface name, ns past BASE_NS, tag)
        packets: Vec<(String, u64, u8)>,
    }

    fn read_merged(bytes: &[u8]) -> Merged {
        let mut reader = PcapNgReader::new(bytes).expect("merged pcapng");
        let comment = reader
            .section()
            .options
            .iter()
            .find_map(|o| match o {
                SectionHeaderOption::Comment(c) => Some(c.to_string()),
                _ => None,
            })
            .expect("section comment");
        let mut packets = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(p) = block.expect("block") {
                packets.push((
                    p.interface_id,
                    u64::try_from(p.timestamp.as_nanos()).expect("ns") - BASE_NS,
                    p.data[0],
                ));
            }
        }
        let interfaces = reader.interfaces().to_vec();
        let name = |id: u32| {
            interfaces[id as usize]
                .options
                .iter()
                .find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                })
                .expect("if_name")
        };
        let packets = packets
            .into_iter()
            .map(|(id, at, tag)| (name(id), at, tag))
            .collect();
        Merged {
            comment,
            interfaces,
            packets,
        }
    }

    #[test]
    fn merge_puts_every_observer_on_the_coordinator_clock() {
        // node-1 runs 1000 ns ahead of the coordinator, node-2 500 ns behind.
        let node1 = capture_file(
            &[("node-1/eth0", DataLink::ETHERNET, 128)],
            &[(0, 10_000, 1), (0, 12_000, 3), (0, 14_000, 6)],
        );
        let node2 = capture_file(
            &[
                ("node-2/flannel.1", DataLink::ETHERNET, 128),
                ("node-2/tunl0", DataLink::RAW, 96),
            ],
            &[(0, 9_000, 2), (1, 10_600, 4), (0, 12_000, 5)],
        );
        let inputs = [
            MergeInput {
                probe: "node-1",
                clock_offset_ns: 1_000,
                clock_error_ns: 400,
                pcapng: &node1,
            },
            MergeInput {
                probe: "node-2",
                clock_offset_ns: -500,
                clock_error_ns: 355,
                pcapng: &node2,
            },
        ];
        let header = MergeHeader {
            run_id: "run-42",
            filter: "tcp port 30080",
        };
        let mut out = Vec::new();
        let summary = merge_captures(&inputs, header, &mut out).expect("merge");
        assert_eq!(
            summary,
            MergeSummary {
                interfaces: 3,
                packets: 6
            }
        );

        let merged = read_merged(&out);
        assert_eq!(
            merged.packets,
            vec![
                ("node-1/eth0".into(), 9_000, 1),
                ("node-2/flannel.1".into(), 9_500, 2),
                ("node-1/eth0".into(), 11_000, 3),
                ("node-2/tunl0".into(), 11_100, 4),
                ("node-2/flannel.1".into(), 12_500, 5),
                ("node-1/eth0".into(), 13_000, 6),
            ]
        );
        let links: Vec<(DataLink, u32)> = merged
            .interfaces
            .iter()
            .map(|i| (i.linktype, i.snaplen))
            .collect();
        assert_eq!(
            links,
            vec![
                (DataLink::ETHERNET, 128),
                (DataLink::ETHERNET, 128),
                (DataLink::RAW, 96)
            ]
        );
        for idb in &merged.interfaces {
            let resolutions: Vec<&InterfaceDescriptionOption<'_>> = idb
                .options
                .iter()
                .filter(|o| matches!(o, InterfaceDescriptionOption::IfTsResol(_)))
                .collect();
            assert_eq!(resolutions, vec![&InterfaceDescriptionOption::IfTsResol(9)]);
        }
        for needle in [
            "run: run-42",
            "filter: tcp port 30080",
            "observer node-1: offset +1.000 us ± 0.400 us",
            "observer node-2: offset -0.500 us ± 0.355 us",
        ] {
            assert!(
                merged.comment.contains(needle),
                "{needle:?} not in {:?}",
                merged.comment
            );
        }
    }

    #[test]
    fn merge_keeps_input_order_for_equal_times() {
        let a = capture_file(&[("a/eth0", DataLink::ETHERNET, 128)], &[(0, 5_000, 1)]);
        let b = capture_file(&[("b/eth0", DataLink::ETHERNET, 128)], &[(0, 5_000, 2)]);
        let inputs = [
            MergeInput {
                probe: "a",
                clock_offset_ns: 0,
                clock_error_ns: 0,
                pcapng: &a,
            },
            MergeInput {
                probe: "b",
                clock_offset_ns: 0,
                clock_error_ns: 0,
                pcapng: &b,
            },
        ];
        let header = MergeHeader {
            run_id: "r",
            filter: "",
        };
        let mut out = Vec::new();
        merge_captures(&inputs, header, &mut out).expect("merge");
        let tags: Vec<u8> = read_merged(&out).packets.iter().map(|p| p.2).collect();
        assert_eq!(tags, vec![1, 2]);
    }

    #[test]
    fn merge_rejects_garbage_naming_the_observer() {
        let inputs = [MergeInput {
            probe: "node-3",
            clock_offset_ns: 0,
            clock_error_ns: 0,
            pcapng: b"not a pcapng file at all",
        }];
        let header = MergeHeader {
            run_id: "r",
            filter: "",
        };
        let err = merge_captures(&inputs, header, Vec::new()).expect_err("garbage");
        assert!(err.to_string().starts_with("node-3's capture"), "{err}");
    }

    #[test_case(5, 6, 0 => 5_000 ; "microseconds by default")]
    #[test_case(5, 9, 0 => 5 ; "nanoseconds")]
    #[test_case(5, 3, 2 => 2_005_000_000 ; "milliseconds with an offset")]
    #[test_case(1_000_000, 12, 0 => 1_000 ; "picoseconds")]
    #[test_case(1 << 20, 0x80 | 20, 0 => 1_000_000_000 ; "binary fractions")]
    fn timestamps_become_nanoseconds(raw: u64, tsresol: u8, tsoffset_s: u64) -> i128 {
        pcapng::timestamp_ns(raw, tsresol, tsoffset_s)
    }
}
