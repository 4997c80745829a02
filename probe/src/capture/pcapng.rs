//! The capture file: pcapng with nanosecond timestamps, one interface block
//! per captured interface named `PROBE/IFACE`, a section comment naming the
//! run, the probe, its clock and the filter, and interface statistics
//! blocks with the kernel's counters at the end.
//!
//! The file is written under a temporary name beside its final one and
//! renamed only by [`PcapngFile::finish`]; dropping an unfinished file
//! deletes it, so no partial capture is ever left under the final name.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
use pcap_file::{DataLink, PcapError};
use probemesh_packet::bpf::LinkLayer;
use probemesh_packet::pcapng;
use sha2::{Digest, Sha256};

use super::block::RingPacket;
use crate::platform::Timestamp;
use crate::platform::af_packet::KernelStats;

/// Bytes of an Enhanced Packet Block around its data: the fixed fields
/// (28), the trailing length (4) and the `epb_flags` option with the end
/// of options (12).
const EPB_OVERHEAD: u64 = 44;

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
    /// SHA-256 of its content.
    pub sha256: [u8; 32],
}

/// A capture file being written; see the module doc.
pub struct PcapngFile {
    writer: Option<PcapNgWriter<BufWriter<HashingFile>>>,
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
        let mut this = Self {
            writer: None,
            temp,
            path: path.to_path_buf(),
            written: 0,
        };
        let header = pcapng::section_header(vec![
            SectionHeaderOption::Comment(Cow::Owned(section.comment())),
            SectionHeaderOption::OS(Cow::Borrowed("Linux")),
            SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "mesh-probe {}",
                env!("CARGO_PKG_VERSION")
            ))),
        ]);
        let sink = BufWriter::with_capacity(256 * 1024, HashingFile::new(file));
        let mut writer = PcapNgWriter::with_section_header(sink, header).map_err(into_io)?;
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
            writer.write_pcapng_block(block).map_err(into_io)?;
        }
        this.written = writer.get_ref().get_ref().bytes + writer.get_ref().buffer().len() as u64;
        this.writer = Some(writer);
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

    /// Appends `packet`, seen on interface number `interface`.
    pub fn write_packet(&mut self, interface: u32, packet: &RingPacket<'_>) -> io::Result<()> {
        let writer = self.writer_mut()?;
        let block = EnhancedPacketBlock {
            interface_id: interface,
            timestamp: Duration::from_nanos(
                u64::try_from(packet.timestamp.as_nanos()).unwrap_or(0),
            ),
            original_len: packet.orig_len,
            data: Cow::Borrowed(packet.data),
            options: vec![EnhancedPacketOption::Flags(packet.packet_type.epb_flags())],
        };
        let len = writer.write_pcapng_block(block).map_err(into_io)?;
        self.written += len as u64;
        Ok(())
    }

    /// Writes one statistics block per interface (in interface order),
    /// flushes, syncs and renames the file to its final name.
    pub fn finish(mut self, totals: &[InterfaceTotals]) -> io::Result<Artifact> {
        let mut writer = self.writer.take().ok_or_else(closed)?;
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
            writer.write_pcapng_block(block).map_err(into_io)?;
        }
        let hashing = writer
            .into_inner()
            .into_inner()
            .map_err(|e| e.into_error())?;
        hashing.file.sync_all()?;
        fs::rename(&self.temp, &self.path)?;
        Ok(Artifact {
            path: self.path.clone(),
            bytes: hashing.bytes,
            sha256: hashing.hasher.finalize().into(),
        })
    }

    fn writer_mut(&mut self) -> io::Result<&mut PcapNgWriter<BufWriter<HashingFile>>> {
        self.writer.as_mut().ok_or_else(closed)
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

/// A file that counts and hashes what is written to it.
#[derive(Debug)]
struct HashingFile {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl HashingFile {
    fn new(file: File) -> Self {
        Self {
            file,
            hasher: Sha256::new(),
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
    use pcap_file::pcapng::{Block, PcapNgReader};

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
        assert_eq!(artifact.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
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
