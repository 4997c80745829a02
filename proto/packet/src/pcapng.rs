//! pcapng, read and written the one way probemesh does it, over
//! `pcap-file`'s blocks.
//!
//! Reading: [`Reader`] walks a file's blocks and hands back its interfaces
//! and packets only, numbered across the whole file (interface ids restart
//! with every section; the reader keeps track), each packet's timestamp
//! already in nanoseconds since the epoch from its interface's
//! `if_tsresol`/`if_tsoffset` ([`timestamp_ns`]). Statistics, name
//! resolution and other blocks are skipped.
//!
//! Writing: probemesh writes little-endian sections ([`section_header`])
//! whose interfaces count nanoseconds ([`interface_block`],
//! [`Interface::into_nanosecond_block`], [`Packet::into_block_at`]); a
//! reader that finds no `if_tsresol` would assume microseconds.
//!
//! What this module is not: it opens no file and reads no clock. Where a
//! file is written to (the probe's capture file, meshctl's merged file) and
//! which clock a timestamp is put on (`probemesh_model::timeline`) belong
//! to the callers.

use std::borrow::Cow;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, Endianness, PcapError};

/// `if_tsresol` = 9: timestamps count nanoseconds (what probemesh writes).
pub const TSRESOL_NANOSECONDS: u8 = 9;
/// `if_tsresol` when an interface block does not say: microseconds.
pub const TSRESOL_DEFAULT: u8 = 6;

/// Why a pcapng file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not pcapng, or are cut short or corrupt.
    #[error("{0}")]
    Parse(#[from] PcapError),
    /// A packet names an interface no interface block of its section
    /// describes.
    #[error("a packet names interface {interface}, which no interface block describes")]
    UnknownInterface {
        /// The interface id in the packet block.
        interface: u32,
    },
}

/// An interface description block, as [`Reader`] found it.
#[derive(Debug, Clone)]
pub struct Interface<'a> {
    /// Its number across the whole file (0, 1, ... in file order); packets
    /// name it by this in [`Packet::interface`].
    pub index: usize,
    /// Its id within its section (what the file's packet blocks say).
    pub id_in_section: usize,
    /// `if_tsresol` (the default, microseconds, when absent).
    pub tsresol: u8,
    /// `if_tsoffset`, seconds (0 when absent).
    pub tsoffset_s: u64,
    /// The block itself, every option included.
    pub block: InterfaceDescriptionBlock<'a>,
}

impl Interface<'_> {
    /// `if_name` (probemesh writes `PROBE/IFACE`), when the block has one.
    pub fn name(&self) -> Option<&str> {
        self.block.options.iter().find_map(|o| match o {
            InterfaceDescriptionOption::IfName(n) => Some(n.as_ref()),
            _ => None,
        })
    }

    /// The link type of its packets.
    pub fn link(&self) -> DataLink {
        self.block.linktype
    }

    /// The block re-stated with nanosecond timestamps and no offset (for a
    /// file that re-stamps this interface's packets with
    /// [`Packet::into_block_at`]), every other option kept in order. An
    /// interface without a name gets `unnamed()` as its first option.
    pub fn into_nanosecond_block(
        self,
        unnamed: impl FnOnce() -> String,
    ) -> InterfaceDescriptionBlock<'static> {
        let mut named = false;
        let mut options = Vec::with_capacity(self.block.options.len() + 2);
        for option in self.block.options {
            match option {
                InterfaceDescriptionOption::IfTsResol(_)
                | InterfaceDescriptionOption::IfTsOffset(_) => {}
                InterfaceDescriptionOption::IfName(n) => {
                    named = true;
                    options.push(InterfaceDescriptionOption::IfName(Cow::Owned(
                        n.into_owned(),
                    )));
                }
                other => options.push(other.into_owned()),
            }
        }
        if !named {
            options.insert(0, InterfaceDescriptionOption::IfName(Cow::Owned(unnamed())));
        }
        options.push(InterfaceDescriptionOption::IfTsResol(TSRESOL_NANOSECONDS));
        InterfaceDescriptionBlock {
            linktype: self.block.linktype,
            snaplen: self.block.snaplen,
            options,
        }
    }
}

/// An enhanced packet block, as [`Reader`] found it.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    /// The interface it was captured on: [`Interface::index`].
    pub interface: usize,
    /// When, nanoseconds since the Unix epoch on the capturing host's clock
    /// (the block's raw timestamp in its interface's units, see
    /// [`timestamp_ns`]).
    pub timestamp_ns: i128,
    /// The block itself: captured bytes, original length, options. Its
    /// `timestamp` is raw: it counts the interface's unit, not
    /// nanoseconds, whatever its type says.
    pub block: EnhancedPacketBlock<'a>,
}

impl<'a> Packet<'a> {
    /// The captured bytes (cut at the snap length).
    pub fn data(&self) -> &[u8] {
        &self.block.data
    }

    /// The packet's length on the wire, bytes (link header included).
    pub fn original_len(&self) -> u32 {
        self.block.original_len
    }

    /// The block re-stamped for a file whose interface `interface_id`
    /// counts nanoseconds: timestamp `at_ns` (clamped at the epoch),
    /// data and options kept.
    pub fn into_block_at(self, interface_id: u32, at_ns: i128) -> EnhancedPacketBlock<'a> {
        let nanos = u64::try_from(at_ns.max(0)).unwrap_or(u64::MAX);
        EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(nanos),
            ..self.block
        }
    }
}

/// What [`Reader`] hands back, in file order.
#[derive(Debug, Clone)]
pub enum Record<'a> {
    /// An interface description block.
    Interface(Interface<'a>),
    /// An enhanced packet block.
    Packet(Packet<'a>),
}

/// How one interface of the current section reads its timestamps.
#[derive(Debug, Clone, Copy)]
struct Clock {
    index: usize,
    tsresol: u8,
    tsoffset_s: u64,
}

/// Walks the blocks of a pcapng file (every section), see the module doc.
/// After an error it yields nothing more.
pub struct Reader<'a> {
    rest: &'a [u8],
    parser: PcapNgParser,
    /// The current section's interfaces, by id within the section.
    section: Vec<Clock>,
    /// Interfaces seen in the whole file.
    interfaces: usize,
}

impl<'a> Reader<'a> {
    /// Reads the first section header of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Result<Self, ReadError> {
        let (rest, parser) = PcapNgParser::new(bytes)?;
        Ok(Self {
            rest,
            parser,
            section: Vec::new(),
            interfaces: 0,
        })
    }

    fn next_record(&mut self) -> Result<Option<Record<'a>>, ReadError> {
        while !self.rest.is_empty() {
            let (rest, block) = self.parser.next_block(self.rest)?;
            self.rest = rest;
            match block {
                Block::SectionHeader(_) => self.section.clear(),
                Block::InterfaceDescription(block) => {
                    let (mut tsresol, mut tsoffset_s) = (TSRESOL_DEFAULT, 0);
                    for option in &block.options {
                        match option {
                            InterfaceDescriptionOption::IfTsResol(r) => tsresol = *r,
                            InterfaceDescriptionOption::IfTsOffset(s) => tsoffset_s = *s,
                            _ => {}
                        }
                    }
                    let interface = Interface {
                        index: self.interfaces,
                        id_in_section: self.section.len(),
                        tsresol,
                        tsoffset_s,
                        block,
                    };
                    self.section.push(Clock {
                        index: self.interfaces,
                        tsresol,
                        tsoffset_s,
                    });
                    self.interfaces += 1;
                    return Ok(Some(Record::Interface(interface)));
                }
                Block::EnhancedPacket(block) => {
                    let clock = usize::try_from(block.interface_id)
                        .ok()
                        .and_then(|id| self.section.get(id))
                        .ok_or(ReadError::UnknownInterface {
                            interface: block.interface_id,
                        })?;
                    // pcap-file hands the raw timestamp over as if it
                    // counted nanoseconds; it counts the interface's unit.
                    let raw = u64::try_from(block.timestamp.as_nanos()).unwrap_or(u64::MAX);
                    return Ok(Some(Record::Packet(Packet {
                        interface: clock.index,
                        timestamp_ns: timestamp_ns(raw, clock.tsresol, clock.tsoffset_s),
                        block,
                    })));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("rest", &self.rest.len())
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.next_record();
        if next.is_err() {
            self.rest = &[];
        }
        next.transpose()
    }
}

/// A raw pcapng timestamp in `if_tsresol` units plus `if_tsoffset`
/// seconds, as nanoseconds since the epoch. `tsresol`'s high bit picks
/// powers of two instead of ten; units finer than a nanosecond round down.
pub fn timestamp_ns(raw: u64, tsresol: u8, tsoffset_s: u64) -> i128 {
    let exponent = u32::from(tsresol & 0x7f);
    let base: i128 = if tsresol & 0x80 == 0 {
        // 10^-exponent seconds.
        if exponent <= 9 {
            i128::from(raw) * 10i128.pow(9 - exponent)
        } else {
            10i128
                .checked_pow(exponent - 9)
                .map_or(0, |div| i128::from(raw) / div)
        }
    } else {
        // 2^-exponent seconds.
        let ns = (u128::from(raw) * 1_000_000_000)
            .checked_shr(exponent)
            .unwrap_or(0);
        i128::try_from(ns).unwrap_or(i128::MAX)
    };
    base + i128::from(tsoffset_s) * 1_000_000_000
}

/// A little-endian pcapng 1.0 section header of unknown length with
/// `options` (a comment, the writing application, ...).
pub fn section_header(options: Vec<SectionHeaderOption<'_>>) -> SectionHeaderBlock<'_> {
    SectionHeaderBlock {
        endianness: Endianness::Little,
        major_version: 1,
        minor_version: 0,
        section_length: -1,
        options,
    }
}

/// An interface block for packets stamped in nanoseconds: `if_name`
/// (`PROBE/IFACE`), `if_tsresol` = 9, then `options`.
pub fn interface_block<'a>(
    link: DataLink,
    snaplen: u32,
    name: String,
    options: impl IntoIterator<Item = InterfaceDescriptionOption<'a>>,
) -> InterfaceDescriptionBlock<'a> {
    let mut all = vec![
        InterfaceDescriptionOption::IfName(Cow::Owned(name)),
        InterfaceDescriptionOption::IfTsResol(TSRESOL_NANOSECONDS),
    ];
    all.extend(options);
    InterfaceDescriptionBlock {
        linktype: link,
        snaplen,
        options: all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::PcapNgWriter;
    use proptest::prelude::*;

    fn packet(interface_id: u32, raw: u64, data: &[u8]) -> EnhancedPacketBlock<'_> {
        EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(raw),
            original_len: u32::try_from(data.len()).unwrap_or(0) + 1000,
            data: Cow::Borrowed(data),
            options: vec![],
        }
    }

    /// Two sections: a nanosecond `node-1/eth0` and an unnamed microsecond
    /// raw-IP interface, then a second section whose interface 0 is a new
    /// one with a 10 s offset.
    fn two_sections() -> Vec<u8> {
        let mut file = Vec::new();
        let mut writer =
            PcapNgWriter::with_section_header(&mut file, section_header(vec![])).unwrap();
        writer
            .write_pcapng_block(interface_block(
                DataLink::ETHERNET,
                128,
                "node-1/eth0".into(),
                [],
            ))
            .unwrap();
        writer
            .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 128))
            .unwrap();
        writer
            .write_pcapng_block(packet(0, 5_000_123_456, &[1, 2, 3]))
            .unwrap();
        writer
            .write_pcapng_block(packet(1, 5_000_124, &[4]))
            .unwrap();
        writer.write_pcapng_block(section_header(vec![])).unwrap();
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::LINUX_SLL,
                snaplen: 64,
                options: vec![InterfaceDescriptionOption::IfTsOffset(10)],
            })
            .unwrap();
        writer.write_pcapng_block(packet(0, 7, &[5])).unwrap();
        drop(writer);
        file
    }

    #[test]
    fn interfaces_are_numbered_across_sections_and_packets_stamped_in_ns() {
        let file = two_sections();
        let records: Vec<Record<'_>> = Reader::new(&file)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut interfaces = Vec::new();
        let mut packets = Vec::new();
        for r in records {
            match r {
                Record::Interface(i) => interfaces.push((
                    i.index,
                    i.id_in_section,
                    i.name().map(str::to_owned),
                    i.link(),
                    i.tsresol,
                )),
                Record::Packet(p) => {
                    packets.push((
                        p.interface,
                        p.timestamp_ns,
                        p.data().to_vec(),
                        p.original_len(),
                    ));
                }
            }
        }
        assert_eq!(
            interfaces,
            [
                (0, 0, Some("node-1/eth0".to_owned()), DataLink::ETHERNET, 9),
                (1, 1, None, DataLink::RAW, 6),
                (2, 0, None, DataLink::LINUX_SLL, 6),
            ]
        );
        assert_eq!(
            packets,
            [
                (0, 5_000_123_456, vec![1, 2, 3], 1003),
                (1, 5_000_124_000, vec![4], 1001),
                (2, 10_000_007_000, vec![5], 1001),
            ]
        );
    }

    #[test]
    fn a_packet_on_an_undescribed_interface_is_an_error_and_ends_the_walk() {
        let mut file = Vec::new();
        let mut writer =
            PcapNgWriter::with_section_header(&mut file, section_header(vec![])).unwrap();
        writer
            .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 128))
            .unwrap();
        writer.write_pcapng_block(packet(0, 1, &[0])).unwrap();
        writer.write_pcapng_block(packet(0, 1, &[0])).unwrap();
        drop(writer);
        // pcap-file refuses to write the bad id: patch the first packet's
        // interface id (8 bytes into its block) to 3.
        let epb = file.len() - 2 * 36;
        file[epb + 8..epb + 12].copy_from_slice(&3u32.to_le_bytes());
        let mut reader = Reader::new(&file).unwrap();
        assert!(matches!(reader.next(), Some(Ok(Record::Interface(_)))));
        let err = reader.next().unwrap().unwrap_err();
        assert!(matches!(err, ReadError::UnknownInterface { interface: 3 }));
        assert_eq!(
            err.to_string(),
            "a packet names interface 3, which no interface block describes"
        );
        assert!(reader.next().is_none());
    }

    #[test]
    fn not_pcapng_is_a_parse_error() {
        assert!(matches!(
            Reader::new(b"not a pcapng file"),
            Err(ReadError::Parse(_))
        ));
    }

    #[test]
    fn re_stating_an_interface_in_nanoseconds_keeps_its_other_options() {
        let file = two_sections();
        let interfaces: Vec<Interface<'_>> = Reader::new(&file)
            .unwrap()
            .filter_map(|r| match r.unwrap() {
                Record::Interface(i) => Some(i),
                Record::Packet(_) => None,
            })
            .collect();
        let named = interfaces[0]
            .clone()
            .into_nanosecond_block(|| unreachable!());
        assert_eq!(
            named.options,
            [
                InterfaceDescriptionOption::IfName("node-1/eth0".into()),
                InterfaceDescriptionOption::IfTsResol(9),
            ]
        );
        let offset = interfaces[2]
            .clone()
            .into_nanosecond_block(|| "node-1/if0".into());
        assert_eq!(offset.linktype, DataLink::LINUX_SLL);
        assert_eq!(offset.snaplen, 64);
        assert_eq!(
            offset.options,
            [
                InterfaceDescriptionOption::IfName("node-1/if0".into()),
                InterfaceDescriptionOption::IfTsResol(9),
            ]
        );
    }

    #[test]
    fn a_re_stamped_packet_reads_back_at_its_new_time() {
        let file = two_sections();
        let p = Reader::new(&file)
            .unwrap()
            .find_map(|r| match r.unwrap() {
                Record::Packet(p) => Some(p),
                Record::Interface(_) => None,
            })
            .unwrap();
        let block = p.clone().into_block_at(4, 42);
        assert_eq!(
            (block.interface_id, block.timestamp),
            (4, Duration::from_nanos(42))
        );
        assert_eq!(block.data, p.block.data);
        assert_eq!(p.into_block_at(0, -5).timestamp, Duration::ZERO);
    }

    #[test]
    fn timestamp_resolutions() {
        assert_eq!(timestamp_ns(1_500_000, 6, 0), 1_500_000_000);
        assert_eq!(timestamp_ns(7, 9, 2), 2_000_000_007);
        assert_eq!(timestamp_ns(3, 0x80 | 1, 0), 1_500_000_000);
        assert_eq!(timestamp_ns(5_000, 12, 0), 5);
        assert_eq!(timestamp_ns(u64::MAX, 0xff, 0), 0);
    }

    proptest! {
        #[test]
        fn cut_or_flipped_files_never_panic(cut in 0usize..400, flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..6)) {
            let mut file = two_sections();
            file.truncate(cut);
            for (at, byte) in flips {
                if let Some(b) = file.get_mut(at) {
                    *b ^= byte;
                }
            }
            if let Ok(reader) = Reader::new(&file) {
                for record in reader.take(64) {
                    let _ = record;
                }
            }
        }
    }
}
