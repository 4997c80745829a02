//! The capture file: pcapng with nanosecond timestamps, one interface block
//! per captured interface named `PROBE/IFACE`, a section comment naming the
//! run, the probe, its clock and the filter, and interface statistics
//! blocks with the kernel's counters at the end.
//!
//! The file is written under a temporary name beside its final one and
//! renamed only by [`PcapngFile::finish`]; dropping an unfinished file
//! deletes it, so no partial capture is ever left under the final name.
//!
//! Cost: the header and statistics blocks go through `pcap-file`, once per
//! file; packets, the hot path, are encoded here straight into a buffer of
//! [`FLUSH_AT`] bytes (no allocation, no second pass to measure a block)
//! that reaches the file in one `write` when full, about once per ring
//! block. The file's check is a CRC-32 (hardware-assisted, a few percent of
//! the capture's CPU where SHA-256 took a third): it only has to show that
//! the file streamed is the file written; the SHA-256 that readers verify is
//! computed as the capture task streams the file.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
use pcap_file::{DataLink, PcapError};
use probemesh_packet::bpf::LinkLayer;
use probemesh_packet::pcapng;

use super::block::RingPacket;
use crate::platform::Timestamp;
use crate::platform::af_packet::KernelStats;

/// Bytes of an Enhanced Packet Block around its data: the fixed fields
/// (28), the trailing length (4) and the `epb_flags` option with the end
/// of options (12).
const EPB_OVERHEAD: u64 = 44;
/// pcapng block type of an Enhanced Packet Block.
const EPB_TYPE: u32 = 6;
/// Option code of `epb_flags`.
const EPB_FLAGS: u16 = 2;
/// Buffered bytes that trigger a write to the file (one ring block's worth).
pub const FLUSH_AT: usize = 1 << 20;

/// What the section header says about the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    /// The probe that captured (`--name`).
    pub probe: String,
    /// The run this capture belongs to (e.g. a run id), as the caller names it.
    pub run: String,
    /// The probe's clock against the coordinator's, as the caller states it
    /// (e.g. `offset +12.3 µs ± 40 µs`); empty when unknown.
    pub clock: String,
    /// The filter expression (empty: every packet).
    pub filter: String,
    /// Snap length, bytes.
    pub snaplen: u32,
}

impl SectionInfo {
    /// The section comment, one `key: value` per line.
    pub fn comment(&self) -> String {
        let or_none = |s: &str| {
            if s.is_empty() {
                "(none)".to_string()
            } else {
                s.to_string()
            }
        };
        format!(
            "probemesh capture\nrun: {}\nprobe: {}\nclock: {}\nfilter: {}\nsnaplen: {}",
            or_none(&self.run),
            self.probe,
            or_none(&self.clock),
            or_none(&self.filter),
            self.snaplen,
        )
    }
}

/// One interface of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// The name shown by readers: `PROBE/IFACE`.
    pub name: String,
    /// What its packets start with.
    pub link: LinkLayer,
    /// Snap length, bytes.
    pub snaplen: u32,
}

/// The counters written in an interface's statistics block at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceTotals {
    /// When the interface's ring went live.
    pub start: Timestamp,
    /// When the capture ended.
    pub end: Timestamp,
    /// The kernel's counters.
    pub kernel: KernelStats,
    /// Packets written to the file.
    pub written: u64,
}

/// A finished capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it is.
    pub path: PathBuf,
    /// Its size, bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of its content.
    pub crc32: u32,
}

/// A capture file being written; see the module doc.
pub struct PcapngFile {
    /// Encodes the header and statistics blocks into the buffer it holds,
    /// which packets are appended to directly.
    blocks: PcapNgWriter<Vec<u8>>,
    /// The file, until [`PcapngFile::finish`].
    file: Option<HashingFile>,
    temp: PathBuf,
    path: PathBuf,
    written: u64,
}

impl PcapngFile {
    /// Creates the temporary file beside `path` and writes the section
    /// header and one interface block per entry of `interfaces` (interface
    /// ids follow their order).
    pub fn create(
        path: &Path,
        section: &SectionInfo,
        interfaces: &[InterfaceInfo],
    ) -> io::Result<Self> {
        let file_name = path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the output path names no file")
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".partial-{}", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let file = File::options().write(true).create_new(true).open(&temp)?;
        let header = pcapng::section_header(vec![
            SectionHeaderOption::Comment(Cow::Owned(section.comment())),
            SectionHeaderOption::OS(Cow::Borrowed("Linux")),
            SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "mesh-probe {}",
                env!("CARGO_PKG_VERSION")
            ))),
        ]);
        let mut this = Self {
            blocks: PcapNgWriter::with_section_header(Vec::with_capacity(2 * FLUSH_AT), header)
                .map_err(into_io)?,
            file: Some(HashingFile::new(file)),
            temp,
            path: path.to_path_buf(),
            written: 0,
        };
        for interface in interfaces {
            let mut filter = vec![0u8];
            filter.extend_from_slice(section.filter.as_bytes());
            let link = match interface.link {
                LinkLayer::Ethernet => DataLink::ETHERNET,
                LinkLayer::RawIp => DataLink::RAW,
            };
            let block = pcapng::interface_block(
                link,
                interface.snaplen,
                interface.name.clone(),
                [
                    InterfaceDescriptionOption::IfFilter(Cow::Owned(filter)),
                    InterfaceDescriptionOption::IfOs(Cow::Borrowed("Linux")),
                ],
            );
            this.blocks.write_pcapng_block(block).map_err(into_io)?;
        }
        this.written = this.blocks.get_ref().len() as u64;
        Ok(this)
    }

    /// Bytes a packet of `captured` bytes adds to the file.
    pub fn packet_size(captured: usize) -> u64 {
        EPB_OVERHEAD + (captured as u64).next_multiple_of(4)
    }

    /// Bytes in the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Appends `packet`, seen on interface number `interface` (a number
    /// [`PcapngFile::create`] was given an interface for), as an Enhanced
    /// Packet Block in the section's little-endian order; writes the buffer
    /// out once it holds [`FLUSH_AT`] bytes.
    pub fn write_packet(&mut self, interface: u32, packet: &RingPacket<'_>) -> io::Result<()> {
        let size = Self::packet_size(packet.data.len());
        let block_len = u32::try_from(size).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "packet too large for pcapng")
        })?;
        let nanos = u64::try_from(packet.timestamp.as_nanos()).unwrap_or(0);
        let buf = self.blocks.get_mut();
        for word in [
            EPB_TYPE,
            block_len,
            interface,
            (nanos >> 32) as u32,
            nanos as u32,
            packet.data.len() as u32,
            packet.orig_len,
        ] {
            buf.extend_from_slice(&word.to_le_bytes());
        }
        buf.extend_from_slice(packet.data);
        buf.resize(
            buf.len() + packet.data.len().next_multiple_of(4) - packet.data.len(),
            0,
        );
        buf.extend_from_slice(&EPB_FLAGS.to_le_bytes());
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&packet.packet_type.epb_flags().to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&block_len.to_le_bytes());
        self.written += size;
        if buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes out what is buffered.
    fn flush(&mut self) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(closed)?;
        let buf = self.blocks.get_mut();
        file.write_all(buf)?;
        buf.clear();
        Ok(())
    }

    /// Writes one statistics block per interface (in interface order),
    /// flushes, syncs and renames the file to its final name.
    pub fn finish(mut self, totals: &[InterfaceTotals]) -> io::Result<Artifact> {
        for (id, t) in (0u32..).zip(totals) {
            let block = InterfaceStatisticsBlock {
                interface_id: id,
                timestamp: pcapng_time(t.end),
                options: vec![
                    InterfaceStatisticsOption::IsbStartTime(pcapng_time(t.start)),
                    InterfaceStatisticsOption::IsbEndTime(pcapng_time(t.end)),
                    InterfaceStatisticsOption::IsbIfRecv(t.kernel.received),
                    InterfaceStatisticsOption::IsbIfDrop(t.kernel.drops),
                    InterfaceStatisticsOption::IsbUsrDeliv(t.written),
                ],
            };
            self.blocks.write_pcapng_block(block).map_err(into_io)?;
        }
        self.flush()?;
        let hashing = self.file.take().ok_or_else(closed)?;
        hashing.file.sync_all()?;
        fs::rename(&self.temp, &self.path)?;
        Ok(Artifact {
            path: self.path.clone(),
            bytes: hashing.bytes,
            crc32: hashing.hasher.finalize(),
        })
    }
}

impl std::fmt::Debug for PcapngFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapngFile")
            .field("temp", &self.temp)
            .field("path", &self.path)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Drop for PcapngFile {
    fn drop(&mut self) {
        // Unfinished (or `finish` failed before the rename): leave nothing.
        if self.temp.exists() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A pcapng timestamp (nanoseconds, see `if_tsresol`) in the form pcap-file
/// writes it. pcapng stores the high 32 bits first, but pcap-file 2.0
/// writes statistics times as one little-endian `u64` (low word first), so
/// the halves are swapped here to land in the right order.
fn pcapng_time(t: Timestamp) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(0).rotate_left(32)
}

fn into_io(error: PcapError) -> io::Error {
    match error {
        PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn closed() -> io::Error {
    io::Error::other("capture file already closed")
}

/// A file that counts and checksums what is written to it.
#[derive(Debug)]
struct HashingFile {
    file: File,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl HashingFile {
    fn new(file: File) -> Self {
        Self {
            file,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::block::PacketType;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::time::Duration;

    fn section() -> SectionInfo {
        SectionInfo {
            probe: "node-1".into(),
            run: "run-42".into(),
            clock: "offset +12.000 µs ± 40 µs".into(),
            filter: "icmp".into(),
            snaplen: 128,
        }
    }

    fn interfaces() -> Vec<InterfaceInfo> {
        vec![
            InterfaceInfo {
                name: "node-1/eth0".into(),
                link: LinkLayer::Ethernet,
                snaplen: 128,
            },
            InterfaceInfo {
                name: "node-1/tunl0".into(),
                link: LinkLayer::RawIp,
                snaplen: 128,
            },
        ]
    }

    #[test]
    fn a_written_file_reads_back_with_names_times_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node-1.pcapng");
        let mut file = PcapngFile::create(&path, &section(), &interfaces()).expect("create");
        assert!(!path.exists(), "nothing under the final name before finish");
        let data = [0x45u8; 98];
        let packets = [
            (
                0,
                RingPacket {
                    timestamp: Timestamp::from_nanos(1_800_000_000_123_456_789),
                    orig_len: 98,
                    data: &data[..98],
                    packet_type: PacketType::Host,
                    vlan_tci: None,
                },
            ),
            (
                1,
                RingPacket {
                    timestamp: Timestamp::from_nanos(1_800_000_000_200_000_001),
                    orig_len: 1500,
                    data: &data[..65],
                    packet_type: PacketType::Outgoing,
                    vlan_tci: None,
                },
            ),
        ];
        let mut expected = file.bytes_written();
        for (id, p) in &packets {
            file.write_packet(*id, p).expect("write");
            expected += PcapngFile::packet_size(p.data.len());
            assert_eq!(file.bytes_written(), expected);
        }
        let totals = InterfaceTotals {
            start: Timestamp::from_nanos(1_800_000_000_000_000_000),
            end: Timestamp::from_nanos(1_800_000_001_000_000_000),
            kernel: KernelStats {
                received: 3,
                drops: 1,
                freezes: 0,
            },
            written: 1,
        };
        let artifact = file.finish(&[totals, totals]).expect("finish");
        let bytes = fs::read(&path).expect("read");
        assert_eq!(artifact.bytes, bytes.len() as u64);
        assert_eq!(artifact.crc32, crc32fast::hash(&bytes));
        assert_eq!(
            fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "temp file renamed away"
        );

        let mut reader = PcapNgReader::new(&bytes[..]).expect("pcapng");
        let comment = reader.section().options.iter().find_map(|o| match o {
            SectionHeaderOption::Comment(c) => Some(c.to_string()),
            _ => None,
        });
        assert_eq!(comment.as_deref(), Some(section().comment().as_str()));
        assert!(
            section()
                .comment()
                .contains("run: run-42\nprobe: node-1\nclock: offset")
        );
        let mut seen = Vec::new();
        let mut stats = 0;
        while let Some(block) = reader.next_block() {
            match block.expect("block") {
                Block::EnhancedPacket(p) => seen.push((
                    p.interface_id,
                    p.timestamp,
                    p.original_len,
                    p.data.len(),
                    p.options
                        .into_iter()
                        .map(|o| o.into_owned())
                        .collect::<Vec<EnhancedPacketOption<'static>>>(),
                )),
                Block::InterfaceStatistics(s) => {
                    stats += 1;
                    assert_eq!(s.timestamp.rotate_left(32), 1_800_000_001_000_000_000);
                }
                _ => {}
            }
        }
        let names: Vec<_> = reader
            .interfaces()
            .iter()
            .map(|i| (i.linktype, i.snaplen, i.options.clone()))
            .collect();
        assert_eq!(names[0].0, DataLink::ETHERNET);
        assert_eq!(names[1].0, DataLink::RAW);
        assert!(
            names[0]
                .2
                .contains(&InterfaceDescriptionOption::IfName("node-1/eth0".into()))
        );
        assert!(
            names[0]
                .2
                .contains(&InterfaceDescriptionOption::IfTsResol(9))
        );
        assert_eq!(names[1].1, 128);
        assert_eq!(stats, 2);
        assert_eq!(
            seen,
            vec![
                (
                    0,
                    Duration::from_nanos(1_800_000_000_123_456_789),
                    98,
                    98,
                    vec![EnhancedPacketOption::Flags(0b101)]
                ),
                (
                    1,
                    Duration::from_nanos(1_800_000_000_200_000_001),
                    1500,
                    65,
                    vec![EnhancedPacketOption::Flags(0b10)]
                ),
            ]
        );
    }

    /// Packets of every padding (60..=66 bytes), both interfaces, both
    /// directions, enough for several buffer flushes.
    fn many_packets(data: &[u8]) -> Vec<(u32, RingPacket<'_>)> {
        (0..30_000u32)
            .map(|i| {
                let len = 60 + (i % 7) as usize;
                (
                    i % 2,
                    RingPacket {
                        timestamp: Timestamp::from_nanos(
                            1_800_000_000_000_000_000 + i64::from(i) * 1_001,
                        ),
                        orig_len: 1000 + i,
                        data: &data[i as usize % 8..i as usize % 8 + len],
                        packet_type: if i % 3 == 0 {
                            PacketType::Outgoing
                        } else {
                            PacketType::Host
                        },
                        vlan_tci: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn packets_written_across_buffer_flushes_read_back_field_for_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node-1.pcapng");
        let data: Vec<u8> = (0..=255u8).collect();
        let packets = many_packets(&data);
        let mut file = PcapngFile::create(&path, &section(), &interfaces()).expect("create");
        for (id, p) in &packets {
            file.write_packet(*id, p).expect("write");
        }
        let size = file.bytes_written();
        assert!(size > 2 * FLUSH_AT as u64, "several flushes: {size} bytes");
        let totals = InterfaceTotals {
            start: Timestamp::from_nanos(1_800_000_000_000_000_000),
            end: Timestamp::from_nanos(1_800_000_001_000_000_000),
            kernel: KernelStats::default(),
            written: 15_000,
        };
        let artifact = file.finish(&[totals, totals]).expect("finish");
        let bytes = fs::read(&path).expect("read");
        assert_eq!(artifact.crc32, crc32fast::hash(&bytes));

        // pcap-file's reader, an independent decoder of the same format.
        let mut reader = PcapNgReader::new(&bytes[..]).expect("pcapng");
        let mut read = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(p) = block.expect("block") {
                read.push((
                    p.interface_id,
                    p.timestamp,
                    p.original_len,
                    p.data.into_owned(),
                    p.options
                        .into_iter()
                        .map(|o| o.into_owned())
                        .collect::<Vec<_>>(),
                ));
            }
        }
        let expected: Vec<_> = packets
            .iter()
            .map(|(id, p)| {
                (
                    *id,
                    Duration::from_nanos(p.timestamp.as_nanos() as u64),
                    p.orig_len,
                    p.data.to_vec(),
                    vec![EnhancedPacketOption::Flags(p.packet_type.epb_flags())],
                )
            })
            .collect();
        assert!(read == expected, "packets differ from what was written");

        // tshark, what users open the files with.
        let out = std::process::Command::new("tshark")
            .args([
                "-r",
                path.to_str().expect("utf-8"),
                "-T",
                "fields",
                "-e",
                "frame.interface_id",
            ])
            .args([
                "-e",
                "frame.time_epoch",
                "-e",
                "frame.len",
                "-e",
                "frame.cap_len",
                "-e",
            ])
            .arg("frame.packet_flags_direction")
            .output()
            .expect("tshark runs (install tshark)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect();
        assert_eq!(lines.len(), packets.len());
        for (line, (id, p)) in lines.iter().zip(&packets) {
            let nanos = p.timestamp.as_nanos();
            let direction = if p.packet_type == PacketType::Outgoing {
                "0x00000002"
            } else {
                "0x00000001"
            };
            assert_eq!(
                line,
                &[
                    id.to_string(),
                    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000),
                    p.orig_len.to_string(),
                    p.data.len().to_string(),
                    direction.to_owned(),
                ]
            );
        }
    }

    #[test]
    fn an_unfinished_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pcapng");
        let file = PcapngFile::create(&path, &section(), &interfaces()).expect("create");
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
        drop(file);
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn an_empty_run_and_clock_read_as_none() {
        let info = SectionInfo {
            run: String::new(),
            clock: String::new(),
            filter: String::new(),
            ..section()
        };
        assert_eq!(
            info.comment(),
            "probemesh capture\nrun: (none)\nprobe: node-1\nclock: (none)\nfilter: (none)\nsnaplen: 128"
        );
    }
}
